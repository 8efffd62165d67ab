"""Embedding speed and memory against SpikeInterface's ``correlograms`` and one binning pass, same analyzer.

SpikeInterface's ``correlograms`` uses numba when it is installed (``method="auto"``) and numpy otherwise; install
numba (``pip install -e ".[bench]"``) so the comparison is with the fast path. The method used is recorded.

The binning pass reads the analyzer's spike trains and counts every spike in the model's 20 ms bins: the cost of
touching the data once, the floor for any method.

Each measurement runs in its own subprocess so its peak resident memory (ru_maxrss) is its own; the
baseline subprocess builds the same analyzer and computes nothing, and peaks are reported above it.

    python benchmarks/bench_embedding.py                 # 384 units x 30 min (the committed result)
    python benchmarks/bench_embedding.py --units 64 --minutes 2 --output /tmp/x.json   # a quick check
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

from _machine import machine_info

HERE = Path(__file__).resolve().parent


def _worker(what: str, units: int, minutes: float, seed: int, model: str, n_jobs: int) -> dict:
    import numpy as np
    import spikeinterface.core as si

    import spikeinterface_neuronid  # noqa: F401

    duration = minutes * 60.0
    rng = np.random.default_rng(seed)
    rates = np.exp(rng.uniform(np.log(0.5), np.log(30.0), units))
    sorting = si.generate_sorting(num_units=units, durations=[duration], firing_rates=rates, seed=seed)
    recording = si.generate_recording(num_channels=4, durations=[duration], seed=seed)
    analyzer = si.create_sorting_analyzer(sorting, recording, format="memory", sparse=False)
    num_spikes = int(sorting.to_spike_vector().size)
    if what == "neuron_embedding":
        # load the model outside the timed region, as a warm session would have it
        from spikeinterface_neuronid.models import resolve_model

        resolve_model(model)
    t0 = time.perf_counter()
    if what == "correlograms":  # method="auto": numba when installed
        analyzer.compute("correlograms", n_jobs=n_jobs, progress_bar=False)
    elif what == "correlograms_numpy":
        analyzer.compute("correlograms", method="numpy", n_jobs=n_jobs, progress_bar=False)
    elif what == "neuron_embedding":
        analyzer.compute("neuron_embedding", model=model, n_jobs=n_jobs, progress_bar=False)
    elif what == "binning":  # one pass over the same spikes: read them and count them in the model's 20 ms bins
        from spikeinterface_neuronid.corpus import analyzer_to_spike_train_sets

        trains = analyzer_to_spike_train_sets(analyzer)[0]
        counts = trains.bin(0.0, int(trains.duration / 0.02), 0.02)
        assert int(counts.sum()) <= num_spikes
    seconds = time.perf_counter() - t0
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return dict(what=what, seconds=seconds, peak_rss_mib=peak_kib / 1024.0, num_spikes=num_spikes)


def _measure(what: str, args: argparse.Namespace) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        what,
        "--units",
        str(args.units),
        "--minutes",
        str(args.minutes),
        "--seed",
        str(args.seed),
        "--model",
        args.model,
        "--n-jobs",
        str(args.n_jobs),
    ]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--units", type=int, default=384)
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", default="default")
    parser.add_argument("--n-jobs", type=int, default=1, help="n_jobs given to both computes (default: 1)")
    parser.add_argument("--output", default=str(HERE / "results" / "embedding.json"))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        print(json.dumps(_worker(args.worker, args.units, args.minutes, args.seed, args.model, args.n_jobs)))
        return

    import numpy as np
    import spikeinterface

    from spikeinterface_neuronid._io import write_json

    baseline = _measure("baseline", args)
    names = ("correlograms", "correlograms_numpy", "neuron_embedding", "binning")
    runs = {name: _measure(name, args) for name in names}
    for run in runs.values():
        run["peak_rss_above_baseline_mib"] = run["peak_rss_mib"] - baseline["peak_rss_mib"]
    emb = runs["neuron_embedding"]
    # the target is against SpikeInterface's faster correlograms path on this machine
    ccg = min(runs["correlograms"], runs["correlograms_numpy"], key=lambda run: run["seconds"])
    try:
        import numba

        numba_version = numba.__version__
    except ImportError:
        numba_version = None
        print("numba is not installed: correlograms runs its slower numpy method (pip install numba)", file=sys.stderr)
    result = dict(
        command="python benchmarks/bench_embedding.py " + " ".join(sys.argv[1:]),
        units=args.units,
        minutes=args.minutes,
        num_spikes=baseline["num_spikes"],
        n_jobs=args.n_jobs,
        baseline_peak_rss_mib=baseline["peak_rss_mib"],
        correlograms=runs["correlograms"],
        correlograms_numpy=runs["correlograms_numpy"],
        faster_correlograms="correlograms" if ccg is runs["correlograms"] else "correlograms_numpy",
        neuron_embedding=emb,
        binning=runs["binning"],
        correlograms_auto_method="numba" if numba_version else "numpy",
        time_ratio_embedding_over_correlograms=emb["seconds"] / ccg["seconds"],
        time_ratio_embedding_over_binning=emb["seconds"] / runs["binning"]["seconds"],
        memory_ratio_embedding_over_correlograms=emb["peak_rss_above_baseline_mib"]
        / max(ccg["peak_rss_above_baseline_mib"], 1e-9),
        machine=dict(
            machine_info(),
            numpy=np.__version__,
            spikeinterface=spikeinterface.__version__,
            numba=numba_version,
        ),
    )
    write_json(args.output, result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
