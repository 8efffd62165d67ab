"""The committed benchmark run: NuCLR's three protocols, our models against the baselines, with intervals.

    python benchmarks/run_benchmark.py            # full run (FULL settings, up to 90 min on 2 cores)
    python benchmarks/run_benchmark.py --quick    # the CI smoke run (QUICK settings, under 3 min)
    python benchmarks/run_benchmark.py --readme-only  # re-quote the committed full run in README.md
    python benchmarks/run_benchmark.py --rerun "ours, shipped default model"  # re-run one row, merge it

``--rerun NAME`` (repeatable) re-runs only the named rows with the same settings and merges them into the
previous run's results in the output folder (see :func:`spikeinterface_neuronid.benchmark.rerun_benchmark`):
every other row keeps its records (scores, predictions, ledger, timings) from that run; the tables,
differences, verdicts, figures and the README excerpt are recomputed from the merged records as a full run
computes them, and ``results.json`` (``reruns``) and ``results.md`` say which rows were re-run and when.
The kept rows drawn in the figures are refitted on their first test animal (for the embedding maps), which
checks that the current code still reproduces their stored predictions; ``--verify-kept`` checks every kept
row that way (about one fold's cost per row).

The full run needs the ablation models (``python -m tools.release.train_default_model --ablations``); it
stops at once, naming the missing file, if one is absent. It also replaces the README's quoted tables
(between the ``benchmark-table`` markers) with the ``hard`` and ``varied`` tables, the difference table
and the verdicts of its ``results.json``, so the README never holds a hand-typed number.

The same as ``neuronid benchmark`` (see :mod:`spikeinterface_neuronid.benchmark`), with the output folder
defaulting to ``benchmarks/results/benchmark/`` (full) or ``benchmarks/results/benchmark_quick/`` (quick):
``results.json`` (every score and interval, the ledger of fits, timings), ``predictions.json``,
``results.md`` (the tables the README quotes) and the figures.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("-o", "--output", help="output folder")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--readme-only", action="store_true", help="only re-quote the committed results in README.md")
    parser.add_argument(
        "--rerun",
        action="append",
        metavar="NAME",
        help="re-run only this row (repeatable) and merge it into the previous results in the output folder",
    )
    parser.add_argument(
        "--verify-kept",
        action="store_true",
        help="with --rerun: check every kept row (not only the figures' rows) against the current code",
    )
    args = parser.parse_args()
    if args.rerun and args.readme_only:
        parser.error("--rerun and --readme-only exclude each other")

    from spikeinterface_neuronid.benchmark import rerun_benchmark, run_benchmark, settings_from_args

    output = Path(args.output) if args.output else HERE / "results" / ("benchmark_quick" if args.quick else "benchmark")
    if args.rerun:
        command = shlex.join(
            ["python", "benchmarks/run_benchmark.py", *(["--quick"] if args.quick else [])]
            + [part for name in args.rerun for part in ("--rerun", name)]
            + (["--verify-kept"] if args.verify_kept else [])
        )
        try:
            result = rerun_benchmark(
                output,
                args.rerun,
                settings_from_args(args.quick),
                command=command,
                progress_bar=not args.no_progress,
                verify_kept=args.verify_kept,
            )
        except (RuntimeError, FileNotFoundError, ValueError) as err:
            print(err, file=sys.stderr)
            return 1
        if not args.quick and args.output is None:
            update_readme(result)
        return 0
    if args.readme_only:
        try:
            update_readme(json.loads((output / "results.json").read_text()))
        except ValueError as err:
            print(err, file=sys.stderr)
            return 1
        return 0
    command = "python benchmarks/run_benchmark.py" + (" --quick" if args.quick else "")
    try:
        result = run_benchmark(
            output, settings_from_args(args.quick), command=command, progress_bar=not args.no_progress
        )
    except (RuntimeError, FileNotFoundError) as err:
        print(err, file=sys.stderr)
        return 1
    if not args.quick and args.output is None:
        update_readme(result)
    return 0


def update_readme(result: dict) -> None:
    """Replace the text between the README's benchmark-table markers with the run's excerpt (atomically)."""
    from spikeinterface_neuronid._io import atomic_path
    from spikeinterface_neuronid.benchmark import readme_excerpt

    readme = HERE.parent / "README.md"
    text = readme.read_text()
    start, end = "<!-- benchmark-table:start -->", "<!-- benchmark-table:end -->"
    if start not in text or end not in text:
        raise SystemExit(f"{readme} has no {start} ... {end} markers: add them where the table belongs")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    with atomic_path(readme) as tmp:
        tmp.write_text(head + start + "\n" + readme_excerpt(result) + end + tail)
    print(f"updated {readme}")


if __name__ == "__main__":
    sys.exit(main())
