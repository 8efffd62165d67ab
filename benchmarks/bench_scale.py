"""Embedding time and peak memory against the number of units and the recording duration (issue 13 part 3).

    python benchmarks/bench_scale.py                       # the committed grid, about 8 min on 1 thread
    python benchmarks/bench_scale.py --points 500x10 2000x10 --output /tmp/scale.json

Each point (``UNITSxMINUTES``) runs in its own subprocess, so its peak resident memory (``ru_maxrss``) is its own:
Poisson units with log-uniform rates 0.5-30 Hz, one segment, embedded with the shipped default model by
:func:`~spikeinterface_neuronid.inference.embed_populations` on one torch thread. The memory reported is the
peak above the process's resident memory after the spike trains were made and the model loaded.
Results go to ``benchmarks/results/scale.json`` (atomically), with a least-squares exponent of time against
units (at fixed duration) and against duration (at fixed units): 1 means linear.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from _machine import machine_info

HERE = Path(__file__).resolve().parent
DEFAULT_POINTS = ("500x10", "2000x10", "5000x10", "500x40", "500x120")


def _worker(units: int, minutes: float, seed: int) -> dict:
    import numpy as np
    import torch

    from spikeinterface_neuronid.data import SpikeTrainSet
    from spikeinterface_neuronid.inference import embed_populations
    from spikeinterface_neuronid.models import resolve_model

    torch.set_num_threads(1)
    rng = np.random.default_rng(seed)
    duration = minutes * 60.0
    rates = np.exp(rng.uniform(np.log(0.5), np.log(30.0), units))
    trains = SpikeTrainSet([np.sort(rng.uniform(0.0, duration, rng.poisson(r * duration))) for r in rates], duration)
    model = resolve_model("default")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    result = embed_populations(model, [trains], num_threads=1, progress_bar=False)
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return dict(
        units=units,
        minutes=minutes,
        spikes=int(sum(t.size for t in trains.spike_times)),
        seconds=round(seconds, 2),
        peak_mib_above_start=round(peak - before, 1),
        peak_mib=round(peak, 1),
        embedded_fraction=round(float(np.mean(result.embedded)), 4),
    )


def _exponent(rows: list[dict], vary: str, fixed: str) -> float | None:
    import numpy as np

    groups: dict = {}
    for r in rows:
        groups.setdefault(r[fixed], []).append(r)
    best = max(groups.values(), key=len)
    if len(best) < 2:
        return None
    x = np.log([r[vary] for r in best])
    y = np.log([r["seconds"] for r in best])
    return round(float(np.polyfit(x, y, 1)[0]), 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", nargs="+", default=list(DEFAULT_POINTS), help="UNITSxMINUTES points")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=str(HERE / "results" / "scale.json"))
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        units, minutes, seed = args.worker
        print(json.dumps(_worker(int(units), float(minutes), int(seed))))
        return

    from spikeinterface_neuronid._io import write_json

    rows = []
    for point in args.points:
        units, minutes = point.lower().split("x")
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        out = subprocess.run(
            [sys.executable, __file__, "--worker", units, minutes, str(args.seed)],
            check=True,
            capture_output=True,
            text=True,
            env=env,
        )
        row = json.loads(out.stdout.strip().splitlines()[-1])
        row["load_average_1min"] = round(os.getloadavg()[0], 2)
        rows.append(row)
        print(
            f"{row['units']:>5} units x {row['minutes']:g} min: {row['seconds']:.1f} s, "
            f"+{row['peak_mib_above_start']:.0f} MiB",
            flush=True,
        )
    write_json(
        args.output,
        dict(
            benchmark="neuron_embedding time and memory vs units and duration (default model, 1 thread)",
            command="python benchmarks/bench_scale.py " + " ".join(sys.argv[1:]),
            date=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            rows=rows,
            time_exponent_vs_units=_exponent(rows, "units", "minutes"),
            time_exponent_vs_duration=_exponent(rows, "minutes", "units"),
            **machine_info(),
        ),
    )
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
