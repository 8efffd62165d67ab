"""The committed benchmark run: NuCLR's three protocols, our models against the baselines.

    python benchmarks/run_benchmark.py            # full run (FULL settings, about an hour on 2 cores)
    python benchmarks/run_benchmark.py --quick    # the CI smoke run (QUICK settings, a few minutes)

The same as ``neuronid benchmark`` (see :mod:`spikeinterface_neuronid.benchmark`), with the output folder
defaulting to ``benchmarks/results/benchmark/`` (full) or ``benchmarks/results/benchmark_quick/`` (quick):
``results.json`` (every score, the ledger of fits, timings), ``results.md`` (the table the README quotes)
and the figures.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("-o", "--output", help="output folder")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args()

    from spikeinterface_neuronid.benchmark import run_benchmark, settings_from_args

    output = args.output or HERE / "results" / ("benchmark_quick" if args.quick else "benchmark")
    command = "python benchmarks/run_benchmark.py" + (" --quick" if args.quick else "")
    try:
        run_benchmark(output, settings_from_args(args.quick), command=command, progress_bar=not args.no_progress)
    except RuntimeError as err:
        print(err, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
