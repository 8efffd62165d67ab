"""Fit the ``firing_type`` head of the default model and measure its calibration on unseen animals.

    python -m tools.release.fit_default_head          # from the repository root; a few minutes on 2 cores

1. Loads the shipped default model (``spikeinterface_neuronid/default_model/neuronid-default.safetensors``);
   its encoder weights are not changed. An existing ``firing_type`` head is replaced.
2. Simulates labelled animals whose seeds are disjoint from pretraining (2000-2007), checkpoint validation
   (2900-2901) and evaluation (1000-1003): ``varied``, ``easy`` and ``hard`` animals 200-207, one session each
   (the splits of :mod:`tools.release.common`).
3. Embeds them and fits a ``firing_type`` head (classes RS/IB/CH/FS/LTS: the simulator's ``cell_type``) with
   :func:`~spikeinterface_neuronid.calibration.fit_head`; its temperature is calibrated on whole held-out animals
   (``groups`` = the simulated animal), and so is the threshold of its out-of-distribution check (a Gaussian
   mixture density of the training embeddings, threshold cross-fitted on whole held-out animals at
   ``OOD_QUANTILE``; ``benchmarks/bench_ood.py`` measures it).
4. Measures the head zero-shot (no refit) on the evaluation animals 1000-1003 of the ``easy``, ``varied`` and
   ``hard`` presets: macro-F1 and balanced accuracy, expected calibration error before (T=1) and after
   temperature scaling, and coverage vs accuracy when abstaining below thresholds 0.0 ... 0.9.
5. Writes ``benchmarks/results/calibration.json``, saves the model with its head back to the same file, adds a
   ``firing_type_head`` section to ``default_model_scores.json`` (with the new ``sha256``) and regenerates
   ``MODEL_CARD.md`` with :func:`tools.release.cards.write_card` (all atomically).

``tools.release.train_default_model`` calls :func:`add_firing_type_head` at its end, so that one command
reproduces the whole shipped file.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import platform
import time
from pathlib import Path

import numpy as np

from tools.release.cards import write_card
from tools.release.common import (
    EVAL_ANIMALS,
    HEAD_ANIMALS,
    MODEL_DIR,
    PRETRAIN_ANIMALS,
    RESULTS_DIR,
    VALIDATION_ANIMALS,
    script_command,
)

RESULTS = RESULTS_DIR / "calibration.json"
TASK = "firing_type"
HEAD_PRESETS = ("varied", "easy", "hard")
EVAL_PRESETS = ("easy", "varied", "hard")
THRESHOLDS = (0.0, 0.3, 0.5, 0.7, 0.9)
HEAD_THRESHOLD = 0.5
OOD_QUANTILE = 0.975
COMMAND = script_command("fit_default_head")


def _embed(bundle, sessions) -> list[np.ndarray]:
    from spikeinterface_neuronid.inference import embed_populations

    return [embed_populations(bundle, [s.to_spike_train_set(covariates=False)]).embedding for s in sessions]


def fit_firing_type_head(
    bundle, *, seed: int = 0, threshold: float = HEAD_THRESHOLD, ood_quantile: float | None = OOD_QUANTILE
):
    """Fit the ``firing_type`` head on the embeddings of the head-training animals (not added to ``bundle``)."""
    from spikeinterface_neuronid.calibration import fit_head
    from spikeinterface_neuronid.simulation import simulate_dataset

    assert not set(HEAD_ANIMALS) & (set(PRETRAIN_ANIMALS) | set(EVAL_ANIMALS) | set(VALIDATION_ANIMALS))
    x, y, groups = [], [], []
    for preset in HEAD_PRESETS:
        sessions = simulate_dataset(preset, animals=HEAD_ANIMALS, sessions_per_animal=1, progress_bar=False)
        for s, e in zip(sessions, _embed(bundle, sessions)):
            x.append(e)
            y.append(np.asarray(s.cell_type, dtype=str))
            groups.append(np.full(len(e), f"{preset}-{s.animal_id}"))
    provenance = dict(
        labels="simulator cell_type (Izhikevich firing classes RS, IB, CH, FS, LTS)",
        data="simulated Izhikevich populations (spikeinterface_neuronid.simulation)",
        presets={p: list(HEAD_ANIMALS) for p in HEAD_PRESETS},
        sessions_per_animal=1,
        calibration="temperature fitted on whole held-out animals (groups = preset-animal)",
        ood=(
            "Gaussian-mixture density of the training embeddings; threshold at the ood_quantile of the scores of "
            "whole held-out animals (cross-fitted over groups)"
        ),
        command=COMMAND,
    )
    return fit_head(
        np.concatenate(x),
        np.concatenate(y),
        TASK,
        seed=seed,
        threshold=threshold,
        groups=np.concatenate(groups),
        provenance=provenance,
        ood_quantile=ood_quantile,
        ood_columns=bundle.config.context_dim,  # the population-context half of a single-unit-path model
    )


def _scores(head, x: np.ndarray, y: np.ndarray) -> dict:
    import dataclasses

    from sklearn.metrics import balanced_accuracy_score, f1_score

    from spikeinterface_neuronid.evaluation import expected_calibration_error

    ok = np.all(np.isfinite(x), axis=1)
    x, y = x[ok], y[ok]
    proba = head.predict_proba(x)
    proba_1 = dataclasses.replace(head, temperature=1.0).predict_proba(x)
    classes = np.asarray(head.classes, dtype=str)
    pred = classes[np.argmax(proba, axis=1)]  # no abstention (temperature does not change the argmax)
    conf = np.max(proba, axis=1)
    correct = pred == y
    coverage = []
    for t in THRESHOLDS:
        kept = conf >= t
        n = int(kept.sum())
        coverage.append(
            dict(
                threshold=t,
                coverage=round(float(kept.mean()), 4),
                accuracy=round(float(correct[kept].mean()), 4) if n else None,
                balanced_accuracy=round(float(balanced_accuracy_score(y[kept], pred[kept])), 4) if n else None,
                num_units=n,
            )
        )
    return dict(
        macro_f1=round(float(f1_score(y, pred, average="macro", labels=head.classes)), 4),
        balanced_accuracy=round(float(balanced_accuracy_score(y, pred)), 4),
        accuracy=round(float(correct.mean()), 4),
        ece_before=round(expected_calibration_error(proba_1, y, head.classes), 4),
        ece_after=round(expected_calibration_error(proba, y, head.classes), 4),
        num_units=int(len(y)),
        coverage_accuracy=coverage,
    )


def measure_head(bundle, head) -> dict:
    """Zero-shot scores of ``head`` on the evaluation animals of every evaluation preset (all units pooled)."""
    from spikeinterface_neuronid.simulation import simulate_dataset

    out = {}
    for preset in EVAL_PRESETS:
        sessions = simulate_dataset(preset, animals=EVAL_ANIMALS, sessions_per_animal=1, progress_bar=False)
        x = np.concatenate(_embed(bundle, sessions))
        y = np.concatenate([np.asarray(s.cell_type, dtype=str) for s in sessions])
        out[preset] = _scores(head, x, y)
        print(preset, {k: v for k, v in out[preset].items() if k != "coverage_accuracy"}, flush=True)
    return out


def _ood_summary(info: dict | None) -> dict | None:
    """The settings of the head's out-of-distribution check (its rates: ``benchmarks/bench_ood.py``)."""
    if not info or "threshold" not in info:
        return None
    keys = ("method", "quantile", "components", "reg_covar", "folds", "split", "threshold")
    return dict(**{k: info[k] for k in keys}, measured_by="python benchmarks/bench_ood.py")


def add_firing_type_head(bundle, *, seed: int = 0) -> dict:
    """Fit the ``firing_type`` head, add it to ``bundle`` (replacing one) and measure it; returns the summary."""
    t0 = time.perf_counter()
    head = fit_firing_type_head(bundle, seed=seed)
    bundle.add_head(head, overwrite=True)
    fit = head.provenance["fit"]
    print(f"fitted {head!r} on {fit['num_units']} units in {time.perf_counter() - t0:.0f} s", flush=True)
    scores = measure_head(bundle, head)
    return dict(
        command=COMMAND,
        task=TASK,
        classes=list(head.classes),
        threshold=head.threshold,
        temperature=round(head.temperature, 4),
        trained_on={p: list(HEAD_ANIMALS) for p in HEAD_PRESETS},
        sessions_per_animal=1,
        num_training_units=fit["num_units"],
        class_counts=fit["class_counts"],
        num_calibration_units=fit.get("num_calibration_units"),
        calibration_split="whole held-out animals",
        calibration_ece_before=round(fit["calibration_ece_before"], 4),
        calibration_ece_after=round(fit["calibration_ece_after"], 4),
        ood_check=_ood_summary(fit.get("ood")),
        eval_animals=list(EVAL_ANIMALS),
        zero_shot=scores,
        seconds=round(time.perf_counter() - t0, 1),
    )


def write_calibration(summary: dict, model_sha256: str, path: Path = RESULTS) -> None:
    """Write ``benchmarks/results/calibration.json`` (atomically)."""
    from spikeinterface_neuronid._io import write_json

    write_json(
        path,
        dict(
            benchmark="firing_type head calibration (default model)",
            date=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S%z"),
            model_sha256=model_sha256,
            python_version=platform.python_version(),
            platform=platform.platform(),
            **summary,
        ),
    )


def calibration_markdown(doc: dict) -> str:
    """The tables of ``benchmarks/results/calibration.md`` (quoted by docs/calibration.rst) from calibration.json."""
    trained = "; ".join(f"`{p}` animals {a[0]}-{a[-1]}" for p, a in doc["trained_on"].items())
    counts = ", ".join(f"{c} {n}" for c, n in doc["class_counts"].items())
    lines = [
        f"Produced by `{doc['command']}` on {doc['date'][:10]} (model sha256 `{doc['model_sha256'][:12]}…`, "
        f"{doc['seconds']:.0f} s).",
        "",
        f"Head: classes {', '.join(doc['classes'])}; trained on {trained}, one session each "
        f"({doc['num_training_units']} units: {counts}).",
        f"Calibration on whole held-out animals ({doc['num_calibration_units']} units): temperature "
        f"{doc['temperature']:.3f}; ECE {doc['calibration_ece_before']:.3f} at T = 1, "
        f"{doc['calibration_ece_after']:.3f} after. Abstention threshold {doc['threshold']:g}.",
        "",
        "Zero-shot on the evaluation animals (argmax, no abstention):",
        "",
        "| preset | macro-F1 | balanced acc. | ECE, T = 1 | ECE, calibrated | units |",
        "|---|---|---|---|---|---|",
    ]
    for preset, z in doc["zero_shot"].items():
        lines.append(
            f"| {preset} | {z['macro_f1']:.3f} | {z['balanced_accuracy']:.3f} | {z['ece_before']:.3f} "
            f"| {z['ece_after']:.3f} | {z['num_units']} |"
        )
    thresholds = [c["threshold"] for c in next(iter(doc["zero_shot"].values()))["coverage_accuracy"]]
    lines += [
        "",
        "Coverage / accuracy when abstaining below a confidence t (the out-of-distribution check not applied):",
        "",
        "| preset | " + " | ".join(f"t = {t:g}" for t in thresholds) + " |",
        "|---|" + "---|" * len(thresholds),
    ]
    for preset, z in doc["zero_shot"].items():
        cells = [
            f"{c['coverage']:.2f} / {c['accuracy']:.2f}" if c["accuracy"] is not None else f"{c['coverage']:.2f} / -"
            for c in z["coverage_accuracy"]
        ]
        lines.append(f"| {preset} | " + " | ".join(cells) + " |")
    check = doc.get("ood_check")
    if check:
        lines += [
            "",
            f"Out-of-distribution check: {check['components']}-component Gaussian mixture, threshold "
            f"{check['threshold']:.3f} (quantile {check['quantile']:g} of whole held-out animals' scores); rates "
            f"in benchmarks/results/ood.md (`{check['measured_by']}`).",
        ]
    return "\n".join(lines) + "\n"


def write_calibration_markdown(path: Path = RESULTS) -> Path:
    """Write ``calibration.md`` next to ``calibration.json`` (atomically)."""
    from spikeinterface_neuronid._io import atomic_path

    out = path.with_suffix(".md")
    with atomic_path(out) as tmp:
        tmp.write_text(calibration_markdown(json.loads(path.read_text())))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0, help="seed of the calibration split")
    parser.add_argument("--model-dir", default=str(MODEL_DIR))
    parser.add_argument(
        "--report-only", action="store_true", help="only rewrite calibration.md from calibration.json"
    )
    args = parser.parse_args()
    if args.report_only:
        print(f"wrote {write_calibration_markdown()}")
        return

    from spikeinterface_neuronid._io import write_json
    from spikeinterface_neuronid.bundle import ModelBundle

    out = Path(args.model_dir)
    model_path = out / "neuronid-default.safetensors"
    bundle = ModelBundle.load(model_path)
    encoder_before = {k: v.clone() for k, v in bundle.state_dict.items()} if hasattr(bundle, "state_dict") else None
    saved = json.loads((out / "default_model_scores.json").read_text())
    if saved["sha256"] != bundle.sha256:
        raise ValueError("default_model_scores.json does not describe this model file; retrain instead")

    summary = add_firing_type_head(bundle, seed=args.seed)
    if encoder_before is not None:
        assert all(bundle.state_dict[k].equal(v) for k, v in encoder_before.items()), "encoder weights changed"
    write_calibration(summary, bundle.sha256)
    write_calibration_markdown()
    bundle.save(model_path)
    saved["sha256"] = bundle.sha256
    saved["firing_type_head"] = summary
    write_json(out / "default_model_scores.json", saved)
    write_card(out)
    size = model_path.stat().st_size
    assert size <= 10 * 1024 * 1024, size
    print(f"wrote {model_path} ({size / 1e6:.2f} MB, sha256 {bundle.sha256[:12]}…), {RESULTS}, scores and card")


if __name__ == "__main__":
    main()
