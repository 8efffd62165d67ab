"""Pretraining step time of the NuCLR encoder on simulated populations.

    python benchmarks/bench_pretrain.py                       # cpu() config, batch 8 x <=64 units (committed)
    python benchmarks/bench_pretrain.py --config paper --device cuda

Writes ``benchmarks/results/pretrain.json``: median / mean seconds per optimiser step (the first steps are
excluded as warm-up), with the data drawing and binning included, as a training run pays them.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="cpu", choices=["cpu", "paper"])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=10, help="steps excluded from the statistics")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-units", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--output", default=str(HERE / "results" / "pretrain.json"))
    args = parser.parse_args()

    import torch

    from spikeinterface_neuronid._io import write_json
    from spikeinterface_neuronid.methods.nuclr import NuCLRConfig
    from spikeinterface_neuronid.simulation import simulate_dataset
    from spikeinterface_neuronid.training import pretrain

    t0 = time.perf_counter()
    sessions = simulate_dataset("easy", animals=[0, 1], num_neurons=200, duration_s=120.0, progress_bar=False)
    simulate_s = time.perf_counter() - t0
    corpus = [s.to_spike_train_set(covariates=False) for s in sessions]
    config = getattr(NuCLRConfig, args.config)()
    bundle, history = pretrain(
        corpus,
        config=config,
        steps=args.steps,
        batch_size=args.batch_size,
        max_units=args.max_units,
        device=args.device,
        progress_bar=False,
    )
    step_times = np.asarray(history["step_time_s"][args.warmup :])
    result = dict(
        command="python benchmarks/bench_pretrain.py " + " ".join(sys.argv[1:]),
        config=args.config,
        parameters=bundle.num_parameters(),
        batch_size=args.batch_size,
        max_units_per_view=args.max_units,
        steps_timed=int(step_times.size),
        median_step_s=float(np.median(step_times)),
        mean_step_s=float(step_times.mean()),
        steps_per_s=float(1.0 / np.median(step_times)),
        simulate_corpus_s=simulate_s,
        device=args.device,
        torch_threads=torch.get_num_threads(),
        machine=dict(cpu_count=os.cpu_count(), platform=platform.platform(), torch=torch.__version__),
    )
    write_json(args.output, result)
    print(result)


if __name__ == "__main__":
    main()
