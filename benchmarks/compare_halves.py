"""Decode cell type and brain region from each half of a single-unit-path model's embedding.

    python benchmarks/compare_halves.py PRESET MODEL.safetensors

On the 8 benchmark animals of ``PRESET`` (150 neurons x 240 s), leave-one-animal-out linear probe (C=1),
pooled macro-F1, for: the shipped default model, MODEL's whole embedding, its population-context half and
its single-unit half. Used for the single-unit-path trial quoted in docs/architecture.rst (output of that
run: benchmarks/results/single_unit_path_trial.txt; the trial model itself was not kept).
"""
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # next to bench_small_populations
from bench_small_populations import _loao_predictions  # noqa: E402
from spikeinterface_neuronid.inference import resolve_model, embed_populations
from spikeinterface_neuronid.simulate import simulate_dataset
from spikeinterface_neuronid.benchmark import pooled_scores
torch.set_num_threads(1)
new = resolve_model(sys.argv[2])
old = resolve_model("default")
half = new.config.dim
preset = sys.argv[1]
sessions = simulate_dataset(preset, animals=list(range(8)), num_neurons=150, duration_s=240.0, progress_bar=False)
pops = [s.to_spike_train_set(covariates=False) for s in sessions]
xn = [embed_populations(new, [p], num_threads=1).embedding for p in pops]
xo = [embed_populations(old, [p], num_threads=1).embedding for p in pops]
for task in ("cell_type", "brain_region"):
    ys = [np.asarray(getattr(s, task), dtype=str) for s in sessions]; y = np.concatenate(ys)
    res = {}
    for name, xs in [("v2", xo), ("v3 full", xn), ("v3 ctx", [x[:, :half] for x in xn]), ("v3 single", [x[:, half:] for x in xn])]:
        res[name] = round(float(pooled_scores(y, _loao_predictions(xs, ys))["macro_f1"][0]), 3)
    print(preset, task, res, flush=True)
