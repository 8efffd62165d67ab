"""Speed of the Izhikevich simulator: one session of 2,000 neurons x 600 s (10 simulated minutes).

    python benchmarks/bench_simulate.py                                  # the committed result
    python benchmarks/bench_simulate.py --neurons 250 --duration 60 --output /tmp/x.json   # a quick check

Writes a JSON file (atomically: a temporary file, then ``os.replace``) with the wall time, the problem size,
the peak resident memory and the machine (numpy version, CPU count).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _write_json_atomic(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2, sort_keys=True)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--neurons", type=int, default=2000, help="neurons simulated (default: 2000)")
    parser.add_argument("--duration", type=float, default=600.0, help="simulated seconds (default: 600)")
    parser.add_argument("--preset", default="easy", help="simulation preset (default: easy)")
    parser.add_argument("--repeats", type=int, default=1, help="timed runs; the fastest is reported (default: 1)")
    parser.add_argument(
        "--output",
        type=Path,
        default=HERE / "results" / "simulate.json",
        help="JSON output path (default: benchmarks/results/simulate.json)",
    )
    parser.add_argument("--progress", action="store_true", help="show a progress bar")
    args = parser.parse_args(argv)
    if args.neurons < 1 or args.duration <= 0 or args.repeats < 1:
        parser.error("--neurons and --repeats must be >= 1 and --duration > 0")

    import numpy as np

    from spikeinterface_neuronid.simulation import simulate_session

    # warm-up: imports and the normal lookup table are not part of the timing
    simulate_session(args.preset, num_neurons=min(args.neurons, 50), duration_s=1.0)
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        sim = simulate_session(
            args.preset, num_neurons=args.neurons, duration_s=args.duration, progress_bar=args.progress
        )
        times.append(time.perf_counter() - t0)
    seconds = min(times)
    steps = sim.params["warmup_s"] * 1000 + args.duration * 1000
    result = dict(
        benchmark="simulate_session",
        preset=args.preset,
        neurons=args.neurons,
        duration_s=args.duration,
        seconds=round(seconds, 3),
        all_seconds=[round(t, 3) for t in times],
        simulated_seconds_per_wall_second=round((steps / 1000.0) / seconds, 3),
        us_per_step=round(seconds / steps * 1e6, 2),
        units_recorded=sim.num_units,
        spikes_recorded=int(sum(len(t) for t in sim.spike_times)),
        mean_rate_hz=round(float(np.mean(sim.firing_rates())), 3),
        numpy_version=np.__version__,
        python_version=platform.python_version(),
        platform=platform.platform(),
        processor=platform.processor() or platform.machine(),
        cpu_count=os.cpu_count(),
        date=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    )
    try:  # Unix only; ru_maxrss is in KiB on Linux
        import resource

        result["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)
    except ImportError:  # pragma: no cover
        pass
    _write_json_atomic(args.output, result)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
