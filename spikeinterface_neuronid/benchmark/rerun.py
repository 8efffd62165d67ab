"""Re-running some rows of a previous run and merging them into its results, as a full run would have them.

The kept rows' records come from the previous ``results.json`` and ``predictions.json``
(:func:`~spikeinterface_neuronid.benchmark.load_previous_run` checks that they were written with the same
settings); everything computed across rows is recomputed from the merged records.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .adapters import check_model_provenance, method_specs
from .engine import _Dataset, _Run
from .protocol import check_protocol
from .report import FIGURE_METHODS, _figures
from .run import _machine, _models_record, _raise_on_failed_checks, _run_results, _write_outputs
from .settings import FULL, TASKS, BenchmarkSettings

__all__ = ["load_previous_run", "rerun_benchmark"]


def _json_normalised(obj: Any) -> Any:
    """``obj`` as it reads back from JSON (tuples become lists)."""
    return json.loads(json.dumps(obj))


def load_previous_run(output_dir: str | Path, settings: BenchmarkSettings) -> tuple[dict, dict]:
    """The ``results.json`` and ``predictions.json`` of a previous run in ``output_dir``, checked against ``settings``.

    Parameters
    ----------
    output_dir : str | Path
        The previous run's output folder.
    settings : BenchmarkSettings
        The settings of the re-run; they must equal the previous run's.

    Returns
    -------
    tuple of dict
        The previous results and predictions.

    Raises
    ------
    FileNotFoundError
        If either file is missing.
    ValueError
        If a file cannot be read, or the previous run's settings differ from ``settings``.
    """
    out = Path(output_dir)
    loaded = []
    for name in ("results.json", "predictions.json"):
        path = out / name
        if not path.is_file():
            raise FileNotFoundError(
                f"a re-run merges into a previous run, but {path} does not exist: run the full benchmark first"
            )
        try:
            loaded.append(json.loads(path.read_text()))
        except (OSError, ValueError) as err:
            raise ValueError(f"cannot read {path}: {err}") from None
    previous, predictions = loaded
    ours = _json_normalised(asdict(settings))
    theirs = previous.get("settings")
    if not isinstance(theirs, dict) or "methods" not in previous or "summary" not in previous:
        raise ValueError(f"{out / 'results.json'} is no benchmark result of this version: run the full benchmark")
    if theirs != ours:
        differ = sorted(k for k in set(ours) | set(theirs) if ours.get(k) != theirs.get(k))
        raise ValueError(
            f"{out / 'results.json'} was written with other settings (differing: {', '.join(differ)}); a re-run "
            "must use the settings of the run it merges into (e.g. --quick results cannot be merged into a full run)"
        )
    if sorted(predictions) != sorted(settings.presets):
        raise ValueError(
            f"{out / 'predictions.json'} holds presets {sorted(predictions)}, not {list(settings.presets)}"
        )
    return previous, predictions


def _decode_predictions(record: dict, preset: str) -> dict[tuple, np.ndarray]:
    """The ``(preset, task, protocol, probe, method) -> label per unit`` predictions of one preset of a record."""
    out = {}
    for task, entry in record[preset]["tasks"].items():
        classes = np.asarray(entry["classes"] + [""], dtype=object)  # index -1: no prediction
        for key, idx in entry["predictions"].items():
            protocol, probe, method = key.split("|", 2)
            out[(preset, task, protocol, probe, method)] = classes[np.asarray(idx, dtype=np.int64)]
    return out


def _merge_rows(
    previous: Sequence[dict], new: Sequence[dict], rerun: Sequence[str], presets: Sequence[str], methods: Sequence[str]
) -> list[dict]:
    """Records of every (preset, method) in a full run's order: the re-run methods' from ``new``, others' kept."""
    merged = []
    for preset in presets:
        for method in methods:
            source = new if method in rerun else previous
            merged += [r for r in source if r["preset"] == preset and r["method"] == method]
    return merged


def rerun_benchmark(
    output_dir: str | Path,
    methods: Sequence[str],
    settings: BenchmarkSettings = FULL,
    command: str | None = None,
    progress_bar: bool = True,
    log: Callable[[str], None] | None = print,
    verify_kept: bool = False,
) -> dict:
    """Re-run some rows of a previous run and merge them into its results, as a full run would have them.

    The named rows go through every protocol (TD, TZS, IZS, C tuned, label efficiency, timings, ledger) with
    the settings of the previous run in ``output_dir``. Every record of the other rows (folds, predictions,
    ledger, timings, label efficiency, model files) is kept from the previous ``results.json`` and
    ``predictions.json``; everything computed across rows (summary, paired bootstrap differences, verdicts,
    ablation, ``results.md``, figures) is recomputed from the merged records, exactly as :func:`run_benchmark`
    computes it. The embedding maps of kept rows are redrawn from a refit of their first test animal's IZS fit
    (the same corpus and seed as the original run), which doubles as a check that the current code still
    reproduces them: the refit's C=1 predictions of that animal must equal the stored ones (``verify_kept``
    extends the check to every kept row). The provenance goes to ``results["reruns"]`` (command, date,
    machine, wall time, rows and their model files' sha256, the kept rows checked and those that differed);
    ``command``, ``date``, ``machine`` and ``elapsed_s`` stay the original run's.

    Parameters
    ----------
    output_dir : str | Path
        The previous run's output folder; its files are replaced (atomically) by the merged ones.
    methods : sequence of str
        Names of the rows to re-run (rows of the previous run).
    settings : BenchmarkSettings, default: FULL
        Must equal the previous run's settings.
    command : str | None, default: None
        The re-run's command line for the provenance (None: ``sys.argv``).
    progress_bar : bool, default: True
        Show a tqdm progress bar over the re-run (preset, method) pairs.
    log : callable | None, default: print
        Receives one line per finished method and stage.
    verify_kept : bool, default: False
        Check every kept row (not only the figures' rows) by refitting its first test animal's IZS fit.

    Returns
    -------
    dict
        The merged content of ``results.json``.

    Raises
    ------
    FileNotFoundError
        If the previous ``results.json`` or ``predictions.json`` is missing, or a re-run row's model file.
    ValueError
        If the previous run's settings differ, a name is not a row of it, the current method table differs
        from the previous run's, a kept row loads a model file that changed since, or the simulated data
        differ from the previous run's.
    RuntimeError
        If a re-run model was pretrained on benchmark animals, or (after writing the outputs) a protocol check
        fails or a checked kept row is not reproduced by the current code.
    """
    import torch

    from ..models import resolve_model

    log = log or (lambda _msg: None)
    t_start = time.perf_counter()
    out = Path(output_dir)
    previous, previous_predictions = load_previous_run(out, settings)
    names = [m["name"] for m in previous["methods"]]
    rerun = list(dict.fromkeys(methods))
    if not rerun:
        raise ValueError("name at least one method to re-run")
    unknown = [m for m in rerun if m not in names]
    if unknown:
        raise ValueError(f"unknown method(s) to re-run {unknown}; the rows of {out / 'results.json'}: {names}")
    try:
        current_files = {sp.name: sp.model_file for sp in method_specs(settings)}
        current = list(current_files)
    except FileNotFoundError:  # a kept row's model file is absent here: it is not needed
        current, current_files = None, {}
    if current is not None and current != names:
        raise ValueError(
            f"the current method table {current} differs from the rows of {out / 'results.json'} {names}: "
            "run the full benchmark"
        )
    specs = method_specs(replace(settings, methods=tuple(rerun)))
    overlaps = check_model_provenance(specs, settings)
    if overlaps:
        raise RuntimeError(
            "these models were pretrained on benchmark animals (same preset, animal id and simulation seed), so "
            f"their zero-shot scores would be leaked: {overlaps}; pretrain them on other animal ids"
        )
    new_models = _models_record(specs)
    for m in previous.get("models", []):  # a kept row whose model file changed would be stale
        if m["method"] in rerun:
            continue
        file = current_files.get(m["method"]) or m["file"]
        if file != "default" and not Path(file).is_file():
            continue  # absent here: cannot be checked (and is not needed)
        model = resolve_model(file)
        sha = model.sha256
        # a file of an older format keeps the checksum it was recorded with in its (verified) header
        if m["sha256"] not in (sha, model.stored_sha256):
            raise ValueError(
                f"the model file of kept row {m['method']!r} ({m['file']}) changed since the previous run "
                f"(sha256 {m['sha256'][:12]}… → {sha[:12]}…): re-run that row too"
            )
    checked = [m for m in names if m not in rerun and (verify_kept or m in FIGURE_METHODS)]
    check_specs = method_specs(replace(settings, methods=tuple(checked))) if checked else []

    run = _Run(settings, log)
    scratch = _Run(settings, lambda _msg: None)  # the kept rows' check fits: nothing of it is kept
    differ = []
    bar = None
    if progress_bar:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(settings.presets) * len(specs), desc="benchmark re-run", unit="method")
    old_threads = torch.get_num_threads()
    torch.set_num_threads(int(settings.num_threads))
    merged_predictions: dict[tuple, np.ndarray] = {}
    try:
        for preset in settings.presets:
            data = _Dataset.simulated(preset, settings, log)
            stored = previous_predictions[preset]
            same = np.array_equal(np.asarray(stored["animal"]), data.animal_of_unit) and all(
                np.array_equal(
                    np.asarray(stored["tasks"][t]["classes"], dtype=object)[stored["tasks"][t]["y"]], data.y(t)
                )
                for t in TASKS
            )
            if not same:
                raise ValueError(f"{preset}: the simulated data differ from those of {out / 'predictions.json'}")
            run.run_preset(data, specs, bar)
            kept = _decode_predictions(previous_predictions, preset)
            for method in names:  # a full run's order
                source = run.predictions if method in rerun else kept
                merged_predictions.update({k: v for k, v in source.items() if k[0] == preset and k[4] == method})
            first = data.animal_of_unit == settings.tested_animals[0]
            for spec in check_specs:
                t0 = time.perf_counter()
                scratch.izs_example(data, spec)
                for task in TASKS:
                    key = (preset, task, "inductive_zero_shot", "C=1", spec.name)
                    if not np.array_equal(scratch.predictions[key][first].astype(str), kept[key][first].astype(str)):
                        differ.append(f"{preset}, {task}, {spec.name}")
                        log(f"  warning: {preset} {task} {spec.name}: the current code predicts otherwise")
                log(f"  {preset} {spec.name}: kept row checked ({time.perf_counter() - t0:.1f} s)")
            run.examples.update({k: v for k, v in scratch.examples.items() if k[0] == preset})
    finally:
        torch.set_num_threads(old_threads)
        if bar is not None:
            bar.close()
    run.predictions = merged_predictions
    new_probes = run.probes
    for key in ("folds", "ledger", "speed", "label_efficiency"):
        setattr(run, key, _merge_rows(previous[key], getattr(run, key), rerun, settings.presets, names))

    summary, differences, ablation = run.summarise(names)
    checks = check_protocol(run.ledger, new_probes)  # the kept rows' probes: their previous check
    checks["fixed_models_never_saw_benchmark_animals"] = True  # checked before the run (it raises otherwise)
    checks = {k: bool(v and previous["checks"].get(k, True)) for k, v in checks.items()}
    descriptions = {sp.name: sp.description for sp in specs}
    methods_record = [
        dict(m, description=descriptions[m["name"]]) if m["name"] in rerun else m for m in previous["methods"]
    ]
    models = [
        entry
        for name in names
        for entry in (new_models if name in rerun else previous.get("models", []))
        if entry["method"] == name
    ]
    result = dict(
        previous,
        methods=methods_record,
        models=models,
        **_run_results(run, names, settings, (summary, differences, ablation), checks),
        figures=[],
    )
    provenance = dict(
        command=command if command is not None else " ".join(["neuronid", *sys.argv[1:]]),
        date=time.strftime("%Y-%m-%d"),
        methods=rerun,
        models=new_models,
        machine=_machine(),
        kept_rows_checked=checked,
        kept_rows_differ=differ,
        elapsed_s=0.0,
    )
    result["reruns"] = list(previous.get("reruns", [])) + [provenance]
    result["figures"] = _figures(run, result, out)
    provenance["elapsed_s"] = time.perf_counter() - t_start
    _write_outputs(out, run, result)
    log(f"re-run of {rerun} finished in {provenance['elapsed_s'] / 60:.1f} min; merged results in {out}")
    _raise_on_failed_checks(checks, out)
    if differ:
        raise RuntimeError(
            f"the current code no longer reproduces these kept rows (first test animal, IZS): {differ}; the merged "
            f"results in {out} record it (reruns); re-run those rows too, or run the full benchmark"
        )
    return result
