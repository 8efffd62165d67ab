"""Decode cell type and brain region from each half of a single-unit-path model's embedding.

    python benchmarks/compare_halves.py PRESET MODEL.safetensors [--reference MODEL]

On the 8 benchmark animals of ``PRESET`` (150 neurons x 240 s), leave-one-animal-out linear probe (C=1),
pooled macro-F1, for: the reference model (default: the shipped default model), MODEL's whole embedding, its
population-context half and its single-unit half. Used for the single-unit-path designs quoted in
docs/architecture.rst (outputs: benchmarks/results/single_unit_path_trial.txt).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # next to bench_small_populations
    sys.path.insert(0, str(HERE))

from bench_small_populations import _loao_predictions  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("preset", choices=["easy", "hard", "varied"])
    parser.add_argument("model", help="a model file with the single-unit path")
    parser.add_argument("--reference", default="default", help="the model to compare with (default: the shipped one)")
    args = parser.parse_args()

    import torch

    from spikeinterface_neuronid.benchmark import pooled_scores
    from spikeinterface_neuronid.inference import embed_populations
    from spikeinterface_neuronid.models import resolve_model
    from spikeinterface_neuronid.simulation import simulate_dataset

    torch.set_num_threads(1)
    new, old = resolve_model(args.model), resolve_model(args.reference)
    if not getattr(new.config, "single_unit_path", False):
        raise SystemExit(f"{args.model} has no single-unit path: its embedding has no halves to compare")
    half = new.config.dim
    sessions = simulate_dataset(
        args.preset, animals=list(range(8)), num_neurons=150, duration_s=240.0, progress_bar=False
    )
    populations = [s.to_spike_train_set(covariates=False) for s in sessions]
    new_x = [embed_populations(new, [p], num_threads=1).embedding for p in populations]
    old_x = [embed_populations(old, [p], num_threads=1).embedding for p in populations]
    rows = {
        "v2": old_x,
        "v3 full": new_x,
        "v3 ctx": [x[:, :half] for x in new_x],
        "v3 single": [x[:, half:] for x in new_x],
    }
    for task in ("cell_type", "brain_region"):
        ys = [np.asarray(getattr(s, task), dtype=str) for s in sessions]
        y = np.concatenate(ys)
        scores = {
            name: round(float(pooled_scores(y, _loao_predictions(xs, ys))["macro_f1"][0]), 3)
            for name, xs in rows.items()
        }
        print(args.preset, task, scores, flush=True)


if __name__ == "__main__":
    main()
