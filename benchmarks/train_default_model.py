"""Reproduce the default model shipped in ``spikeinterface_neuronid/default_model/``, with its model card.

    python benchmarks/train_default_model.py            # the committed model (about 35 min on 2 cores)

1. Simulates the pretraining corpus: several simulated animals of the ``varied`` preset (wide rate range,
   bursting, 8-12 % parameter jitter, slow rate drift, partly merged and missing units) plus ``easy``
   animals, all with seeds disjoint from the evaluation animals.
2. Pretrains the NuCLR ``cpu()`` config self-supervised (no labels are read).
3. Measures the inductive zero-shot cell-type score: embeddings of held-out animals never seen in pretraining,
   a linear probe (StandardScaler + balanced logistic regression) trained on all but the last animal and
   tested on the last, for each simulator preset.
4. Fits the ``firing_type`` head and measures its calibration on the evaluation animals
   (:func:`fit_default_head.add_firing_type_head`, the same code as ``python benchmarks/fit_default_head.py``).
5. Writes ``neuronid-default.safetensors`` (encoder + head), ``default_model_scores.json``, ``MODEL_CARD.md`` and
   ``benchmarks/results/calibration.json`` (atomically).

    python benchmarks/fit_default_head.py               # refit only the head of the shipped model (minutes)
    python benchmarks/train_default_model.py --card-only  # rewrite MODEL_CARD.md from the shipped files
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MODEL_DIR = ROOT / "spikeinterface_neuronid" / "default_model"
EVAL_ANIMALS = (1000, 1001, 1002, 1003)


def _evaluate(bundle, presets) -> dict:
    from spikeinterface_neuronid.data import SpikeTrainSet
    from spikeinterface_neuronid.evaluation import linear_probe
    from spikeinterface_neuronid.inference import embed_populations
    from spikeinterface_neuronid.simulate import simulate_dataset

    scores = {}
    for preset in presets:
        sessions = simulate_dataset(preset, animals=EVAL_ANIMALS, sessions_per_animal=1, progress_bar=False)
        x = [embed_populations(bundle, [SpikeTrainSet(s.spike_times, s.duration)]).embedding for s in sessions]
        scores[preset] = {}
        for task in ("cell_type", "brain_region"):
            y = [getattr(s, task) for s in sessions]
            result = linear_probe(np.concatenate(x[:-1]), np.concatenate(y[:-1]), x[-1], y[-1])
            scores[preset][task] = dict(
                macro_f1=round(result.macro_f1, 4),
                balanced_accuracy=round(result.balanced_accuracy, 4),
                num_test_units=int(len(y[-1])),
            )
        print(preset, scores[preset], flush=True)
    return scores


def _head_section(bundle, head_info: dict | None) -> str:
    """The card's "firing_type head" section (empty when the model has no such head)."""
    head = bundle.heads.get("firing_type")
    if head is None or not head_info:
        return ""
    trained = ", ".join(f"`{p}` animals {a[0]}-{a[-1]}" for p, a in head_info["trained_on"].items())
    zs = head_info["zero_shot"]
    rows = "\n".join(
        f"| {preset} | {s['macro_f1']:.3f} | {s['balanced_accuracy']:.3f} | {s['ece_before']:.3f} "
        f"| {s['ece_after']:.3f} | {s['num_units']} |"
        for preset, s in zs.items()
    )
    thresholds = [c["threshold"] for c in next(iter(zs.values()))["coverage_accuracy"]]
    header = " | ".join(f"t = {t:g}" for t in thresholds)
    cov_rows = "\n".join(
        f"| {preset} | "
        + " | ".join(
            f"{c['coverage']:.2f} / {c['accuracy']:.2f}" if c["accuracy"] is not None else f"{c['coverage']:.2f} / -"
            for c in s["coverage_accuracy"]
        )
        + " |"
        for preset, s in zs.items()
    )
    counts = ", ".join(f"{c} {n}" for c, n in head_info["class_counts"].items())
    return f"""
## firing_type head

The file holds one task head, `firing_type`, so that `neuronid_label_units(analyzer)` and
`compute("neuron_embedding")` label units out of the box: classes {", ".join(head.classes)}, calibrated
temperature {head.temperature:.3f}, abstention threshold {head.threshold:g} (units whose largest calibrated
probability is below it are labelled `unknown`).

- **Trained on:** the simulator's `cell_type` labels of {trained}, one session each
  ({head_info["num_training_units"]} units: {counts}); these seeds are disjoint from pretraining and from the
  evaluation animals. The encoder weights were not changed. Linear head: StandardScaler + class-balanced
  logistic regression (C=1), temperature fitted on whole held-out animals ({head_info["num_calibration_units"]}
  units; their ECE {head_info["calibration_ece_before"]:.3f} at T=1, {head_info["calibration_ece_after"]:.3f}
  after).
- **What the labels mean:** putative *electrophysiological firing classes* of the Izhikevich model (regular
  spiking, intrinsically bursting, chattering, fast spiking, low-threshold spiking), read from spike trains
  only. They are **not** transcriptomic or molecular cell types, and on real recordings they are a hypothesis
  about firing behaviour learned from simulation, to be checked against your own ground truth (or replaced by
  a head fitted on your own labels with `fit_head`).
- **No brain-region head is shipped:** simulated region names (`region0`, ...) mean nothing on real data, and
  the embedding does not encode simulated region (see the table above).
- **Reproduce:** `{head_info["command"]}` (also run at the end of the pretraining command); results in
  `benchmarks/results/calibration.json`.

### Zero-shot scores of the head

The head's own predictions (no probe refit, no abstention) on all units of the evaluation animals
{head_info["eval_animals"]}, which neither pretraining nor the head saw. ECE: expected calibration error of the
top label (10 bins), before (T=1) and after temperature scaling.

| simulator preset | macro-F1 | balanced acc. | ECE, T=1 | ECE, calibrated | units |
|---|---|---|---|---|---|
{rows}

### Coverage / accuracy when abstaining

Fraction of units labelled (calibrated probability >= t) / accuracy on those units.

| simulator preset | {header} |
|---|{"---|" * len(thresholds)}
{cov_rows}
"""


def _model_card(bundle, scores: dict, command: str, seconds: float, head_info: dict | None = None) -> str:
    prov = bundle.provenance
    training = prov.get("training", {})
    rows = "\n".join(
        f"| {preset} | {s['cell_type']['macro_f1']:.3f} | {s['cell_type']['balanced_accuracy']:.3f} "
        f"| {s['brain_region']['macro_f1']:.3f} | {s['cell_type']['num_test_units']} |"
        for preset, s in scores.items()
    )
    cfg = bundle.config
    presets = ", ".join(f"`{p}` animals {a[0]}-{a[-1]}" for p, a in prov.get("presets", {}).items() if a)
    return f"""# Model card: {bundle.name}

- **Method:** `{bundle.method}` (NuCLR-style population-context contrastive transformer), config `cpu()`:
  dim {cfg.dim}, {cfg.num_heads} heads, {cfg.temporal_layers} temporal + {cfg.spatiotemporal_layers} spatiotemporal
  blocks, {bundle.num_parameters():,} parameters; {cfg.bin_s * 1000:g} ms bins,
  {cfg.token_bins * cfg.bin_s:g} s tokens, {cfg.window_tokens * cfg.token_bins * cfg.bin_s:g} s windows.
- **File:** `neuronid-default.safetensors`, SHA-256 of the weights `{bundle.sha256}`,
  created {bundle.created} with spikeinterface-neuronid {bundle.package_version}.
- **Training data:** {prov.get("data")}: {presets}; {prov.get("sessions_per_animal")} sessions per animal,
  {prov.get("num_sessions")} sessions, {prov.get("num_units")} units. Self-supervised only: no label was read.
- **Training:** {training.get("steps", "?")} steps, batch {training.get("batch_size", "?")}, seed
  {training.get("seed", "?")}; {seconds / 60:.0f} min on a 2-core CPU (simulation included).
- **Reproduce:** `{command.strip()}`

## Measured zero-shot scores

Inductive zero-shot: the evaluation animals {list(EVAL_ANIMALS)} were never seen in pretraining. A linear
probe (StandardScaler + class-balanced logistic regression, C=1) is trained on the units of animals
{list(EVAL_ANIMALS[:-1])} and tested on animal {EVAL_ANIMALS[-1]}; chance is 0.2 for the five cell types and
0.33 for the three regions. Produced by the command above, not typed by hand.

| simulator preset | cell type macro-F1 | cell type balanced acc. | brain region macro-F1 | test units |
|---|---|---|---|---|
{rows}

## Intended use and limits

- The embedding encodes each unit's firing identity in its population context. The model was trained on
  simulated Izhikevich populations only; on real recordings, fine-tune it self-supervised on your own sortings
  (`neuronid pretrain ANALYZER ... --init default`) and fit probes on your own labels.
- Simulated cell types (RS, IB, CH, FS, LTS) are electrophysiological firing classes, not transcriptomic
  types; simulated region names carry no meaning on real data.
- This small CPU-trained model does **not** yet encode brain region: region probes are at chance level on all
  presets (see the table), although a handcrafted population-coupling feature reads region on `easy`.
{_head_section(bundle, head_info)}"""


def write_card(out: Path) -> None:
    """Rewrite ``MODEL_CARD.md`` from the model file and ``default_model_scores.json`` in ``out``."""
    import json

    from spikeinterface_neuronid._io import atomic_path
    from spikeinterface_neuronid.bundle import ModelBundle

    bundle = ModelBundle.load(out / "neuronid-default.safetensors")
    saved = json.loads((out / "default_model_scores.json").read_text())
    if saved["sha256"] != bundle.sha256:
        raise ValueError("default_model_scores.json does not describe this model file; retrain instead")
    with atomic_path(out / "MODEL_CARD.md") as tmp:
        tmp.write_text(
            _model_card(
                bundle, saved["scores"], saved["command"], saved["train_seconds"], saved.get("firing_type_head")
            )
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--varied-animals", type=int, default=12)
    parser.add_argument("--easy-animals", type=int, default=4)
    parser.add_argument("--sessions", type=int, default=2)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output-dir", default=str(MODEL_DIR))
    parser.add_argument(
        "--card-only", action="store_true", help="rewrite MODEL_CARD.md from the existing model and scores files"
    )
    args = parser.parse_args()
    if args.card_only:
        write_card(Path(args.output_dir))
        return

    from spikeinterface_neuronid._io import atomic_path, write_json
    from spikeinterface_neuronid.data import SpikeTrainSet
    from spikeinterface_neuronid.methods.nuclr import NuCLRConfig
    from spikeinterface_neuronid.simulate import simulate_dataset
    from spikeinterface_neuronid.training import pretrain

    command = "python benchmarks/train_default_model.py " + " ".join(sys.argv[1:])
    t0 = time.perf_counter()
    varied = list(range(args.varied_animals))
    easy = list(range(100, 100 + args.easy_animals))
    sessions = simulate_dataset("varied", animals=varied, sessions_per_animal=args.sessions, progress_bar=True)
    sessions += simulate_dataset("easy", animals=easy, sessions_per_animal=args.sessions, progress_bar=True)
    assert not set(varied + easy) & set(EVAL_ANIMALS)
    corpus = [SpikeTrainSet(s.spike_times, s.duration) for s in sessions]
    provenance = dict(
        data="simulated Izhikevich populations (spikeinterface_neuronid.simulate)",
        presets={"varied": varied, "easy": easy},
        animals=varied + easy,
        sessions_per_animal=args.sessions,
        num_sessions=len(corpus),
        num_units=int(sum(s.num_units for s in corpus)),
        command=command,
    )
    bundle, history = pretrain(
        corpus,
        config=NuCLRConfig.cpu(),
        steps=args.steps,
        batch_size=args.batch_size,
        seed=args.seed,
        name="neuronid-default-v1",
        provenance=provenance,
    )
    seconds = time.perf_counter() - t0
    scores = _evaluate(bundle, ("easy", "varied", "hard"))

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from fit_default_head import add_firing_type_head, write_calibration

    head_info = add_firing_type_head(bundle, seed=args.seed)
    write_calibration(head_info, bundle.sha256)

    out = Path(args.output_dir)
    bundle.save(out / "neuronid-default.safetensors")
    losses = np.asarray(history["loss"])
    k = max(1, len(losses) // 10)
    write_json(
        out / "default_model_scores.json",
        dict(
            command=command,
            sha256=bundle.sha256,
            eval_animals=list(EVAL_ANIMALS),
            scores=scores,
            loss_first_10pct=float(losses[:k].mean()),
            loss_last_10pct=float(losses[-k:].mean()),
            train_seconds=seconds,
            firing_type_head=head_info,
        ),
    )
    with atomic_path(out / "MODEL_CARD.md") as tmp:
        tmp.write_text(_model_card(bundle, scores, command, seconds, head_info))
    print(f"wrote {out} (sha256 {bundle.sha256[:12]}…) in {(time.perf_counter() - t0) / 60:.1f} min")


if __name__ == "__main__":
    main()
