"""Train the shipped NeurPIR default model and measure its zero-shot cell-type score.

    python -m tools.release.train_default_neurpir     # from the repository root; about 3-5 minutes on 2 CPU cores

1. Simulates the training corpus: ``varied`` and ``easy`` animals with seeds 0-3 (disjoint from the
   evaluation animals 1000-1003), each session converted with
   :meth:`~spikeinterface_neuronid.simulation.SimulatedSession.to_spike_train_set`, i.e. with the stimulus
   (2 channels at 200 Hz) as covariates.
2. Pretrains NeurPIR (``NeurPIRConfig.cpu(num_covariates=2)``, VICReg, segment-length augmentation); the
   covariates of each training window are binned to the 20 ms bins and fed as 2 extra input channels.
3. Inductive zero-shot evaluation: simulates ``easy`` animals 1000-1003 (never seen in training), embeds
   every unit with :func:`~spikeinterface_neuronid.inference.embed_populations` (with their stimulus
   covariates), fits a linear probe (:func:`~spikeinterface_neuronid.evaluation.linear_probe`) on the cell
   types of animals 1000-1002 and scores it on animal 1003 (macro-F1). A probe on the log firing rate alone
   is the baseline.
4. Writes ``spikeinterface_neuronid/default_model/neuronid-neurpir-default.safetensors``,
   ``neurpir_default_scores.json`` (atomic) and the model card ``neuronid-neurpir-default.md``
   (:func:`tools.release.cards.write_card`).

The animal splits are those of :mod:`tools.release.common`.
"""

from __future__ import annotations

import argparse
import hashlib
import platform
import sys
import time
from pathlib import Path

import numpy as np

from tools.release.cards import CARDS, write_card
from tools.release.common import EVAL_ANIMALS, MODEL_DIR, NEURPIR_TRAIN_ANIMALS, script_command

OUT = MODEL_DIR
MODEL_FILE, SCORES_FILE, CARD_FILE = CARDS["neurpir"]
TRAIN_ANIMALS = NEURPIR_TRAIN_ANIMALS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--neurons", type=int, default=200, help="neurons per simulated animal")
    parser.add_argument("--duration", type=float, default=120.0, help="seconds per session")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-units", type=int, default=48)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--output-dir", default=str(OUT))
    args = parser.parse_args()

    import torch

    from spikeinterface_neuronid._io import write_json
    from spikeinterface_neuronid.evaluation import linear_probe
    from spikeinterface_neuronid.inference import embed_populations
    from spikeinterface_neuronid.methods.neurpir import NeurPIRConfig
    from spikeinterface_neuronid.simulation import simulate_dataset
    from spikeinterface_neuronid.training import pretrain

    out = Path(args.output_dir)
    t0 = time.perf_counter()
    common = dict(num_neurons=args.neurons, duration_s=args.duration, seed=args.seed, progress_bar=False)
    train_sessions = []
    for preset in ("varied", "easy"):
        train_sessions += simulate_dataset(preset, animals=TRAIN_ANIMALS, **common)
    eval_sessions = simulate_dataset("easy", animals=EVAL_ANIMALS, **common)
    simulate_s = time.perf_counter() - t0
    print(
        f"simulated {len(train_sessions)} training and {len(eval_sessions)} evaluation sessions in {simulate_s:.1f} s"
    )

    config = NeurPIRConfig.cpu(num_covariates=2)
    corpus = [s.to_spike_train_set() for s in train_sessions]
    provenance = dict(
        command=script_command("train_default_neurpir") + " " + " ".join(sys.argv[1:]),
        corpus=dict(
            presets=["varied", "easy"],
            animals=list(TRAIN_ANIMALS),
            neurons_per_animal=args.neurons,
            duration_s=args.duration,
            simulation_seed=args.seed,
            covariates="simulator stimulus (2 channels, 200 Hz)",
        ),
    )
    t0 = time.perf_counter()
    bundle, history = pretrain(
        corpus,
        method="neurpir",
        config=config,
        steps=args.steps,
        batch_size=args.batch_size,
        max_units=args.max_units,
        lr=args.lr,
        warmup_steps=min(50, args.steps // 10),
        seed=args.seed,
        num_threads=args.threads,
        progress_bar=False,
        name="neuronid-neurpir-default",
        provenance=provenance,
    )
    train_s = time.perf_counter() - t0
    loss = history["loss"]
    print(f"pretrained {args.steps} steps in {train_s:.1f} s; loss {loss[0]:.2f} -> {loss[-1]:.2f}")

    t0 = time.perf_counter()
    xs, ys, rates = [], [], []
    for s in eval_sessions:
        xs.append(embed_populations(bundle, [s.to_spike_train_set()], num_threads=args.threads).embedding)
        ys.append(np.asarray(s.cell_type).astype(str))
        rates.append(np.log1p(s.firing_rates())[:, None])
    embed_s = time.perf_counter() - t0
    n_train = len(EVAL_ANIMALS) - 1
    probe = linear_probe(np.concatenate(xs[:n_train]), np.concatenate(ys[:n_train]), xs[-1], ys[-1])
    base = linear_probe(np.concatenate(rates[:n_train]), np.concatenate(ys[:n_train]), rates[-1], ys[-1])
    print(probe.table())
    print(f"macro-F1 {probe.macro_f1:.3f} (log-rate baseline {base.macro_f1:.3f})")

    out.mkdir(parents=True, exist_ok=True)
    model_path = bundle.save(out / MODEL_FILE)
    file_sha256 = hashlib.sha256(model_path.read_bytes()).hexdigest()
    scores = dict(
        benchmark="neurpir_default_zero_shot_cell_type",
        command=provenance["command"],
        date=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        model_file=MODEL_FILE,
        model_sha256=bundle.sha256,
        file_sha256=file_sha256,
        method=bundle.method,
        config=config.to_dict(),
        train_presets=["varied", "easy"],
        train_animals=list(TRAIN_ANIMALS),
        eval_preset="easy",
        eval_animals=list(EVAL_ANIMALS),
        probe_train_animals=list(EVAL_ANIMALS[:n_train]),
        probe_test_animals=list(EVAL_ANIMALS[n_train:]),
        neurons_per_animal=args.neurons,
        duration_s=args.duration,
        steps=args.steps,
        batch_size=args.batch_size,
        max_units=args.max_units,
        lr=args.lr,
        seed=args.seed,
        loss_first=float(np.mean(history["loss"][:10])),
        loss_last=float(np.mean(history["loss"][-10:])),
        simulate_seconds=round(simulate_s, 1),
        train_seconds=round(train_s, 1),
        embed_seconds=round(embed_s, 1),
        num_probe_test_units=int(np.isfinite(xs[-1]).all(1).sum()),
        probe=probe.to_dict(),
        baseline_log_rate_probe=base.to_dict(),
        torch=torch.__version__,
        python_version=platform.python_version(),
        platform=platform.platform(),
    )
    write_json(out / SCORES_FILE, scores)
    write_card(out, "neurpir")
    print(f"wrote {model_path}, {out / SCORES_FILE} and {out / CARD_FILE}")


if __name__ == "__main__":
    main()
