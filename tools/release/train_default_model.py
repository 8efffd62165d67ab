"""Reproduce the default model shipped in ``spikeinterface_neuronid/default_model/``, or the benchmark's ablations.

    python -m tools.release.train_default_model              # the shipped model, with its model card
    python -m tools.release.train_default_model --ablations  # the benchmark's ablation models (benchmarks/models/)
    python -m tools.release.train_default_model --card-only  # rewrite MODEL_CARD.md from the shipped files
    python -m tools.release.train_default_model --grow-from MODEL --steps 1000  # only a single-unit tower onto MODEL

(from the repository root). The animal splits are those of :mod:`tools.release.common`.

1. Simulates the pretraining corpus: :data:`PRETRAIN_ANIMALS` animals of every simulator preset (``easy``,
   ``hard``, ``varied``), one 600 s session each, with population sizes cycling through
   :data:`NUM_NEURONS` and the peak-channel waveforms a ``templates`` extension would give. The animal ids are
   disjoint from the benchmark's (0-7), the demo / evaluation animals (1000-1003), the head-training animals
   (200-207) and the validation animals (2900-2901).
2. Pretrains the span-context NuCLR ``cpu()`` config self-supervised (no label is read): two non-overlapping
   spans per view pair, views of up to 160 units (50-100 % unit dropout of 60-270 active units),
   10 % of pairs with only 2-10 units, half of the views without waveforms.
3. Every ``--checkpoint-every`` steps, scores the model on the validation animals (a linear probe trained on
   one validation animal and tested on the other, both ways, cell type and region, averaged over presets) and
   keeps the best checkpoint (NuCLR's model selection; no benchmark or evaluation animal is used). The latest
   weights are also written to ``--checkpoint`` so that a crashed run can be continued (``--resume``).
4. Measures inductive zero-shot scores on the evaluation animals 1000-1003 (probe on three, test on the
   fourth), fits the ``firing_type`` head (:func:`tools.release.fit_default_head.add_firing_type_head`) and
   writes ``neuronid-default.safetensors``, ``default_model_scores.json``, ``MODEL_CARD.md``
   (:func:`tools.release.cards.write_card`) and
   ``benchmarks/results/calibration.json`` (atomically).

With ``--grow-from MODEL`` (a model without the single-unit path) step 2 keeps MODEL's weights fixed and trains
only the single-unit tower of ``NuCLRConfig.cpu()`` (``pretrain(..., freeze_init=True)``); the card records MODEL
and, from the ``default_model_scores.json`` next to it, how MODEL was trained.

With ``--ablations`` it instead trains, on the same corpus with the same seed and ``--ablation-steps`` steps
each, the full design and the ablations :data:`ABLATIONS` (no relational channel; no spatial blocks at all;
no fine-timescale channel), and writes them to ``benchmarks/models/ablation-<name>.safetensors`` with a JSON
summary: the rows the benchmark compares at equal training budget.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from tools.release.cards import write_card
from tools.release.common import (
    BENCHMARK_ANIMALS,
    EVAL_ANIMALS,
    HEAD_ANIMALS,
    MODEL_DIR,
    PRETRAIN_ANIMALS,
    RESULTS_DIR,
    ROOT,
    VALIDATION_ANIMALS,
    script_command,
)
from tools.release.fit_default_head import add_firing_type_head, write_calibration, write_calibration_markdown

ABLATION_DIR = ROOT / "benchmarks" / "models"
PRESETS = ("easy", "hard", "varied")
NUM_NEURONS = (100, 160, 250, 320)
DURATION_S = 600.0
VALIDATION_DURATION_S = 240.0
#: Config overrides of the ablation models (``"full"`` is the shipped design at the ablation budget).
ABLATIONS = {
    "full": {},
    "no-relational": dict(relational=False),
    "no-spatial": dict(relational=False, relational_layers=0),
    "no-fine": dict(fine_channel=False, waveform_channel=False),
}


def simulate_corpus(presets=PRESETS, animals=PRETRAIN_ANIMALS, progress_bar: bool = True):
    """The pretraining sessions (one per preset and animal) and their provenance."""
    from spikeinterface_neuronid.simulation import simulate_dataset

    sessions = []
    for preset in presets:
        by_animal = {}
        for size in NUM_NEURONS:  # animals of one size are simulated together (the same output, faster)
            group = [a for k, a in enumerate(animals) if NUM_NEURONS[k % len(NUM_NEURONS)] == size]
            if group:
                simulated = simulate_dataset(
                    preset, animals=group, num_neurons=size, duration_s=DURATION_S, progress_bar=progress_bar
                )
                by_animal.update(zip(group, simulated))
        sessions += [by_animal[a] for a in animals]
    excluded = set(BENCHMARK_ANIMALS) | set(EVAL_ANIMALS) | set(HEAD_ANIMALS) | set(VALIDATION_ANIMALS)
    assert not set(animals) & excluded
    provenance = dict(
        data="simulated Izhikevich populations (spikeinterface_neuronid.simulation), with simulate_templates waveforms",
        presets={p: list(animals) for p in presets},
        animals=list(animals),
        sessions_per_animal=1,
        num_neurons=list(NUM_NEURONS),
        duration_s=DURATION_S,
        num_sessions=len(sessions),
        num_units=int(sum(s.num_units for s in sessions)),
    )
    return [s.to_spike_train_set(covariates=False, waveforms=True) for s in sessions], provenance


class ValidationScore:
    """Checkpoint score: cell-type and region macro-F1 between the two validation animals of each preset."""

    def __init__(self, presets=PRESETS):
        from spikeinterface_neuronid.simulation import simulate_dataset

        self.data = []
        for preset in presets:
            sessions = simulate_dataset(
                preset, animals=list(VALIDATION_ANIMALS), duration_s=VALIDATION_DURATION_S, progress_bar=False
            )
            self.data.append((preset, sessions))
        self.history: list[dict] = []

    def __call__(self, bundle) -> float:
        from spikeinterface_neuronid.evaluation import linear_probe
        from spikeinterface_neuronid.inference import embed_populations

        scores = {}
        for preset, sessions in self.data:
            x = [embed_populations(bundle, [s.to_spike_train_set(covariates=False)]).embedding for s in sessions]
            for task in ("cell_type", "brain_region"):
                y = [np.asarray(getattr(s, task), dtype=str) for s in sessions]
                f1 = []
                for train, test in ((0, 1), (1, 0)):
                    ok_tr, ok_te = np.isfinite(x[train]).all(1), np.isfinite(x[test]).all(1)
                    f1.append(linear_probe(x[train][ok_tr], y[train][ok_tr], x[test][ok_te], y[test][ok_te]).macro_f1)
                scores[f"{preset}/{task}"] = float(np.mean(f1))
        score = float(np.mean(list(scores.values())))
        self.history.append(dict(score=score, **scores))
        print("validation", {k: round(v, 3) for k, v in scores.items()}, f"mean {score:.3f}", flush=True)
        return score


def evaluate(bundle, presets=PRESETS) -> dict:
    """Inductive zero-shot scores on the evaluation animals (probe on all but the last, tested on the last)."""
    from spikeinterface_neuronid.evaluation import linear_probe
    from spikeinterface_neuronid.inference import embed_populations
    from spikeinterface_neuronid.simulation import simulate_dataset

    scores = {}
    for preset in presets:
        sessions = simulate_dataset(preset, animals=EVAL_ANIMALS, sessions_per_animal=1, progress_bar=False)
        x = [embed_populations(bundle, [s.to_spike_train_set(covariates=False)]).embedding for s in sessions]
        scores[preset] = {}
        for task in ("cell_type", "brain_region"):
            y = [np.asarray(getattr(s, task), dtype=str) for s in sessions]
            train_x, train_y = np.concatenate(x[:-1]), np.concatenate(y[:-1])
            ok, ok_test = np.isfinite(train_x).all(1), np.isfinite(x[-1]).all(1)
            result = linear_probe(train_x[ok], train_y[ok], x[-1][ok_test], y[-1][ok_test])
            scores[preset][task] = dict(
                macro_f1=round(result.macro_f1, 4),
                balanced_accuracy=round(result.balanced_accuracy, 4),
                num_test_units=int(ok_test.sum()),
            )
        print(preset, scores[preset], flush=True)
    return scores


def train(corpus, provenance, config, steps, args, name, checkpoint, score, grow_from=None):
    """Pretrain (``--resume``: from ``checkpoint``; ``grow_from``: a loaded model to grow, weights frozen)."""
    from spikeinterface_neuronid.bundle import ModelBundle
    from spikeinterface_neuronid.training import pretrain

    init, grow = None, False
    if args.resume and Path(checkpoint).is_file():
        init = ModelBundle.load(checkpoint)
        print(f"resuming from {checkpoint} ({init.sha256[:12]}…)", flush=True)
    elif grow_from is not None:
        init, grow = grow_from, True
        print(f"training the single-unit tower onto the frozen {init.name} ({init.sha256[:12]}…)", flush=True)
    return pretrain(
        corpus,
        config=config if init is None or grow else None,
        init=init,
        freeze_init=grow,
        steps=steps,
        batch_size=args.batch_size,
        max_units=args.max_units,
        lr=args.lr,
        warmup_steps=min(200, steps // 10),
        seed=args.seed,
        num_threads=args.threads,
        name=name,
        provenance=provenance,
        checkpoint_every=args.checkpoint_every,
        checkpoint_score=score,
        checkpoint_path=checkpoint,
        log_every=25,
    )


def _continued_from(bundle, args) -> dict | None:
    """Provenance of a ``--resume`` run: the checkpoint it started from and how far that had been trained."""
    init = bundle.provenance.get("training", {}).get("init")
    if not args.resume or init is None:
        return None
    return dict(
        checkpoint_sha256=init["sha256"],
        steps_before=args.steps_before,
        command=args.resumed_command,
        steps=args.steps,
    )


def _grown_from(init, path: str) -> dict:
    """Provenance of a ``--grow-from`` run: the frozen model and, from its scores file, how it was trained."""
    grown = dict(name=init.name, sha256=init.sha256, steps=None, command=None)
    scores = Path(path).with_name("default_model_scores.json")
    if scores.is_file():
        saved = json.loads(scores.read_text())
        if saved.get("sha256") == init.sha256:
            before = (saved.get("continued_from") or {}).get("steps_before") or 0
            steps = init.provenance.get("training", {}).get("steps")
            grown.update(steps=None if steps is None else before + steps, command=saved.get("command"))
    return grown


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3000, help="training steps of the shipped model")
    parser.add_argument("--batch-size", type=int, default=8, help="view pairs per step")
    parser.add_argument("--lr", type=float, default=1e-3, help="peak AdamW learning rate")
    parser.add_argument("--max-units", type=int, default=160, help="units per training view (after unit dropout)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (1: two runs share 2 cores without OpenMP stalls)"
    )
    parser.add_argument("--checkpoint-every", type=int, default=400, help="steps between validation checkpoints")
    parser.add_argument(
        "--checkpoint",
        default=str(RESULTS_DIR / "default_model_checkpoint.safetensors"),
        help="where the latest checkpoint is written",
    )
    parser.add_argument("--resume", action="store_true", help="start from --checkpoint's weights if it exists")
    parser.add_argument(
        "--steps-before",
        type=int,
        default=None,
        help="with --resume: the steps the checkpoint had been trained for (recorded in the model card)",
    )
    parser.add_argument(
        "--resumed-command",
        default=script_command("train_default_model"),
        help="with --resume: the command that wrote the checkpoint (recorded in the model card)",
    )
    parser.add_argument(
        "--grow-from",
        default=None,
        help="a model without the single-unit path: keep its weights fixed and train only the single-unit tower",
    )
    parser.add_argument("--output-dir", default=str(MODEL_DIR))
    parser.add_argument("--ablations", action="store_true", help="train the benchmark's ablation models instead")
    parser.add_argument("--ablation-steps", type=int, default=800, help="training steps of each ablation model")
    parser.add_argument("--only", nargs="*", choices=sorted(ABLATIONS), help="with --ablations: train only these")
    parser.add_argument("--card-only", action="store_true", help="rewrite MODEL_CARD.md from the shipped files")
    args = parser.parse_args()
    if args.card_only:
        write_card(Path(args.output_dir))
        return

    from spikeinterface_neuronid._io import write_json
    from spikeinterface_neuronid.methods.nuclr import NuCLRConfig

    command = script_command("train_default_model") + " " + " ".join(sys.argv[1:])
    t0 = time.perf_counter()
    corpus, provenance = simulate_corpus()
    provenance["command"] = command
    print(
        f"corpus: {len(corpus)} sessions, {provenance['num_units']} units ({time.perf_counter() - t0:.0f} s)",
        flush=True,
    )
    score = ValidationScore()

    if args.ablations:
        summary_path = ABLATION_DIR / "ablations.json"
        summary = dict(command=command, steps=args.ablation_steps, seed=args.seed, models={})
        if args.only and summary_path.is_file():  # keep the rows of the models not retrained now
            previous = json.loads(summary_path.read_text())
            if previous.get("steps") == args.ablation_steps and previous.get("seed") == args.seed:
                summary["models"] = {k: v for k, v in previous["models"].items() if k not in args.only}
        for key, overrides in ABLATIONS.items():
            if args.only and key not in args.only:
                continue
            t1 = time.perf_counter()
            score.history = []
            checkpoint = ABLATION_DIR / f".ablation-{key}.checkpoint.safetensors"
            bundle, history = train(
                corpus,
                provenance,
                NuCLRConfig.cpu(**overrides),
                args.ablation_steps,
                args,
                f"neuronid-ablation-{key}",
                checkpoint,
                score,
            )
            path = bundle.save(ABLATION_DIR / f"ablation-{key}.safetensors")
            checkpoint.unlink(missing_ok=True)
            summary["models"][key] = dict(
                file=str(path.relative_to(ROOT)),
                sha256=bundle.sha256,
                overrides=overrides,
                num_parameters=bundle.num_parameters(),
                seconds=round(time.perf_counter() - t1, 1),
                checkpoints=score.history,
                selected=bundle.provenance["training"]["selected_checkpoint"],
            )
            write_json(summary_path, summary)
            print(f"wrote {path} in {(time.perf_counter() - t1) / 60:.1f} min", flush=True)
        return

    grow_model, grown_from = None, None
    if args.grow_from:  # read before the run replaces the files it describes
        from spikeinterface_neuronid.bundle import ModelBundle

        grow_model = ModelBundle.load(args.grow_from)
        grown_from = _grown_from(grow_model, args.grow_from)
    bundle, history = train(
        corpus,
        provenance,
        NuCLRConfig.cpu(),
        args.steps,
        args,
        "neuronid-default-v3",
        args.checkpoint,
        score,
        grow_from=grow_model,
    )
    seconds = time.perf_counter() - t0
    scores = evaluate(bundle)
    head_info = add_firing_type_head(bundle, seed=args.seed)
    write_calibration(head_info, bundle.sha256)
    write_calibration_markdown()

    out = Path(args.output_dir)
    bundle.save(out / "neuronid-default.safetensors")
    losses = np.asarray(history["loss"])
    k = max(1, len(losses) // 10)
    selection = dict(
        validation_animals=list(VALIDATION_ANIMALS),
        every=args.checkpoint_every,
        selected=bundle.provenance["training"]["selected_checkpoint"],
        history=score.history,
    )
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
            checkpoint_selection=selection,
            firing_type_head=head_info,
            continued_from=_continued_from(bundle, args),
            grown_from=grown_from,
        ),
    )
    write_card(out)
    size = (out / "neuronid-default.safetensors").stat().st_size
    assert size <= 10 * 1024 * 1024, size
    print(
        f"wrote {out} (sha256 {bundle.sha256[:12]}…, {size / 1e6:.2f} MB) "
        f"in {(time.perf_counter() - t0) / 60:.1f} min"
    )


if __name__ == "__main__":
    main()
