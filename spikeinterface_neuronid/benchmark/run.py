"""A full benchmark run: every row under every protocol, written to ``results.json`` and its companions.

:func:`~spikeinterface_neuronid.benchmark.run_benchmark` runs it. Besides the scores, a run records how it was
made (command, date, machine and library versions, model files and their sha256, timings);
:mod:`spikeinterface_neuronid.benchmark.rerun` merges re-run rows into it.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .adapters import MethodSpec, check_model_provenance, method_specs
from .engine import _Dataset, _Run
from .protocol import check_protocol, verdicts
from .report import _figures, _markdown
from .settings import FULL, BenchmarkSettings, is_baseline

__all__ = ["run_benchmark"]


def _run_results(
    run: _Run, names: Sequence[str], settings: BenchmarkSettings, summaries: tuple[list, list, list], checks: dict
) -> dict:
    """The entries of the results that a finished run gives, in their order (shared by run and rerun).

    ``summaries`` is ``run.summarise(names)``: the summary, the differences and the ablation rows.
    """
    summary, differences, ablation = summaries
    return dict(
        summary=summary,
        differences=differences,
        ablation=ablation,
        verdict=verdicts(summary, differences, ablation, settings.target_margin, settings.ablation_margin),
        label_efficiency=run.label_efficiency,
        speed_summary=_speed_summary(run.speed, names),
        checks=checks,
        folds=run.folds,
        speed=run.speed,
        ledger=run.ledger,
    )


def _speed_summary(speed: Sequence[dict], methods: Sequence[str]) -> dict:
    """Mean fit and embed time, peak memory and number of fits per method, from the speed records."""
    summary = {}
    for name in methods:
        fits = [r for r in speed if r["method"] == name and r["stage"] == "fit"]
        embeds = [r for r in speed if r["method"] == name and r["stage"] == "embed"]
        if fits:
            summary[name] = dict(
                fit_s_mean=float(np.mean([r["seconds"] for r in fits])),
                embed_s_mean=float(np.mean([r["seconds"] for r in embeds])) if embeds else float("nan"),
                peak_mib_max=float(max(r["peak_mib"] for r in fits + embeds)),
                num_fits=len(fits),
                total_s=float(sum(r["seconds"] for r in fits + embeds)),
            )
    return summary


def _models_record(specs: Sequence[MethodSpec]) -> list[dict]:
    """File, name and sha256 of the model of every row that loads a model file."""
    from ..models import resolve_model

    models = []
    for sp in specs:
        if sp.model_file is not None:
            bundle = resolve_model(sp.model_file)
            models.append(dict(method=sp.name, file=sp.model_file, name=bundle.name, sha256=bundle.sha256))
    return models


def _machine() -> dict:
    """Platform and library versions recorded with a run."""
    import sklearn
    import torch

    return dict(
        platform=platform.platform(),
        cpu_count=os.cpu_count(),
        python=platform.python_version(),
        torch=torch.__version__,
        numpy=np.__version__,
        sklearn=sklearn.__version__,
    )


def _write_outputs(out: Path, run: _Run, result: dict) -> None:
    """Write ``predictions.json``, ``results.json`` and ``results.md`` of a run (each atomically)."""
    from .._io import atomic_path, write_json

    with atomic_path(out / "predictions.json") as tmp:
        tmp.write_text(json.dumps(run.predictions_record(), separators=(",", ":")) + "\n")
    write_json(out / "results.json", result)
    with atomic_path(out / "results.md") as tmp:
        tmp.write_text(_markdown(result))


def _raise_on_failed_checks(checks: dict, out: Path) -> None:
    failed = [k for k, v in checks.items() if not v]
    if failed:
        raise RuntimeError(f"protocol checks failed: {failed}; see {out / 'results.json'} (ledger)")


def run_benchmark(
    output_dir: str | Path,
    settings: BenchmarkSettings = FULL,
    command: str | None = None,
    progress_bar: bool = True,
    log: Callable[[str], None] | None = print,
    specs: Sequence[MethodSpec] | None = None,
) -> dict:
    """Run the benchmark and write ``results.json``, ``results.md``, ``predictions.json`` and the figures.

    Parameters
    ----------
    output_dir : str | Path
        Folder for the outputs (created; files in it are replaced atomically).
    settings : BenchmarkSettings, default: FULL
        Size of the run (:data:`FULL` or :data:`QUICK`, or your own).
    command : str | None, default: None
        The command line recorded in the results (None: ``sys.argv``).
    progress_bar : bool, default: True
        Show a tqdm progress bar over the (preset, method) pairs.
    log : callable | None, default: print
        Receives one line per finished method and stage.
    specs : sequence of MethodSpec | None, default: None
        The rows to run (None: :func:`method_specs` of ``settings``).

    Returns
    -------
    dict
        The content of ``results.json``.

    Raises
    ------
    FileNotFoundError
        Before any work, if a fixed model row's file is missing (the message names the command that makes it).
    RuntimeError
        Before any work, if a fixed model was pretrained on one of the benchmark's animals; after the run, if
        a protocol check fails (the outputs are still written, with the failed check).
    """
    import torch

    log = log or (lambda _msg: None)
    t_start = time.perf_counter()
    specs = list(method_specs(settings) if specs is None else specs)
    overlaps = check_model_provenance(specs, settings)
    if overlaps:
        raise RuntimeError(
            "these models were pretrained on benchmark animals (same preset, animal id and simulation seed), so "
            f"their zero-shot scores would be leaked: {overlaps}; pretrain them on other animal ids"
        )
    models = _models_record(specs)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    run = _Run(settings, log)
    bar = None
    if progress_bar:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(settings.presets) * len(specs), desc="benchmark", unit="method")
    old_threads = torch.get_num_threads()
    torch.set_num_threads(int(settings.num_threads))
    try:
        for preset in settings.presets:
            data = _Dataset.simulated(preset, settings, log)
            run.run_preset(data, specs, bar)
    finally:
        torch.set_num_threads(old_threads)
        if bar is not None:
            bar.close()

    t0 = time.perf_counter()
    summary, differences, ablation = run.summarise([sp.name for sp in specs])
    log(f"bootstrap intervals: {time.perf_counter() - t0:.1f} s")
    checks = check_protocol(run.ledger, run.probes)
    checks["fixed_models_never_saw_benchmark_animals"] = True  # checked before the run (it raises otherwise)
    result = dict(
        command=command if command is not None else " ".join(["neuronid", *sys.argv[1:]]),
        date=time.strftime("%Y-%m-%d"),
        machine=_machine(),
        settings=asdict(settings),
        methods=[
            dict(name=sp.name, kind=sp.kind, description=sp.description, baseline=is_baseline(sp.name)) for sp in specs
        ],
        models=models,
        **_run_results(run, [sp.name for sp in specs], settings, (summary, differences, ablation), checks),
        elapsed_s=0.0,
        figures=[],
    )
    result["figures"] = _figures(run, result, out)
    result["elapsed_s"] = time.perf_counter() - t_start
    _write_outputs(out, run, result)
    log(f"benchmark finished in {result['elapsed_s'] / 60:.1f} min; results in {out}")
    _raise_on_failed_checks(checks, out)
    return result
