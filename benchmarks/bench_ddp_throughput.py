"""Pretraining throughput on CPU: 1 process with 1 or 2 torch threads against 2 processes (DDP, gloo) of 1 thread.

    python benchmarks/bench_ddp_throughput.py                  # the committed run, about 5 min on 2 cores
    python benchmarks/bench_ddp_throughput.py --steps 8 --warmup 2 --output /tmp/ddp_quick.json   # a smoke run

Three runs of the same global batch of ``--batch-size`` (B) view pairs per step, each in its own subprocess:

* ``1proc_1thread``: one process, ``num_threads=1``, ``batch_size=B``;
* ``1proc_2threads``: one process, ``num_threads=2``, ``batch_size=B``;
* ``2proc_1thread``: ``python -m torch.distributed.run --standalone --nproc_per_node 2``, one thread per rank
  (``OMP_NUM_THREADS=1``), ``batch_size=B/2`` per rank.

All with ``shard_global_batch=True``, so the three draw the same view pairs at every step (checked: the global
matched-pair counts of the steps are compared with the first run's). The corpus is that of
``bench_pretrain.py`` (the ``easy`` preset, animals 0 and 1, 200 neurons x 120 s), the config ``NuCLRConfig.cpu()``
(or ``--config paper``), at most ``--max-units`` units per view. Reported per run: median and mean seconds per
optimiser step (the first ``--warmup`` steps excluded; drawing and binning included, as a training run pays
them, though they overlap the previous step in a thread), view pairs per second of the global batch at the
median step time, and the speedup over ``1proc_1thread``. Results go to ``benchmarks/results/ddp_throughput.json``
(atomically).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _machine import machine_info

HERE = Path(__file__).resolve().parent
RUNS = ("1proc_1thread", "1proc_2threads", "2proc_1thread")
#: launcher variables a torchrun child sets; stripped so that a launch from inside a torchrun job starts afresh
_LAUNCH_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "GROUP_RANK")


def _worker(params: dict) -> None:
    """Train (one process, or one rank under torchrun) and write this rank's timings to ``params['out']``."""
    import numpy as np
    import torch

    from spikeinterface_neuronid.methods.nuclr import NuCLRConfig
    from spikeinterface_neuronid.simulation import simulate_dataset
    from spikeinterface_neuronid.training import pretrain

    sessions = simulate_dataset("easy", animals=[0, 1], num_neurons=200, duration_s=120.0, progress_bar=False)
    corpus = [s.to_spike_train_set(covariates=False) for s in sessions]
    t0 = time.perf_counter()
    bundle, history = pretrain(
        corpus,
        config=getattr(NuCLRConfig, params["config"])(),
        steps=params["steps"],
        batch_size=params["batch_size"],
        max_units=params["max_units"],
        shard_global_batch=True,
        num_threads=params["threads"],
        seed=params["seed"],
        progress_bar=False,
    )
    seconds = time.perf_counter() - t0
    times = np.asarray(history["step_time_s"][params["warmup"] :])
    record = dict(
        rank=history["rank"],
        world_size=history["world_size"],
        threads=torch.get_num_threads() if params["threads"] is None else params["threads"],
        per_rank_batch=params["batch_size"],
        steps_timed=int(times.size),
        median_step_s=float(np.median(times)),
        mean_step_s=float(times.mean()),
        pretrain_s=round(seconds, 2),
        num_pairs=history["num_pairs"],
        loss_last=float(history["loss"][-1]),
        parameters=bundle.num_parameters(),
    )
    Path(f"{params['out']}.rank{history['rank']}.json").write_text(json.dumps(record))


def _run(name: str, args: argparse.Namespace, tmp: Path) -> dict:
    processes = 2 if name.startswith("2proc") else 1
    threads = 2 if name == "1proc_2threads" else 1
    if args.batch_size % processes:
        raise SystemExit(f"--batch-size {args.batch_size} is not divisible by {processes} processes")
    params = dict(
        config=args.config,
        steps=args.steps,
        warmup=args.warmup,
        batch_size=args.batch_size // processes,
        max_units=args.max_units,
        threads=threads,
        seed=args.seed,
        out=str(tmp / name),
    )
    env = {k: v for k, v in os.environ.items() if k not in _LAUNCH_ENV}
    env["OMP_NUM_THREADS"] = str(threads)
    command = [sys.executable]
    if processes > 1:
        command += ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]
    command += [__file__, "--worker", json.dumps(params)]
    t0 = time.perf_counter()
    out = subprocess.run(command, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"run {name} failed:\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}")
    ranks = [json.loads(Path(f"{params['out']}.rank{r}.json").read_text()) for r in range(processes)]
    first = ranks[0]
    # a step ends for all ranks together (DDP's all-reduce), so the slowest rank's median is the step time
    median = max(r["median_step_s"] for r in ranks)
    return dict(
        run=name,
        processes=processes,
        threads_per_process=threads,
        per_rank_batch=first["per_rank_batch"],
        global_batch=first["per_rank_batch"] * processes,
        steps_timed=first["steps_timed"],
        median_step_s=round(median, 4),
        mean_step_s=round(max(r["mean_step_s"] for r in ranks), 4),
        view_pairs_per_s=round(first["per_rank_batch"] * processes / median, 2),
        pretrain_s=max(r["pretrain_s"] for r in ranks),
        wall_s=round(time.perf_counter() - t0, 1),
        loss_last=round(first["loss_last"], 4),
        num_pairs=first["num_pairs"],
        parameters=first["parameters"],
        load_average_1min=round(os.getloadavg()[0], 2),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="cpu", choices=["cpu", "paper"])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=10, help="steps excluded from the statistics")
    parser.add_argument("--batch-size", type=int, default=8, help="global batch (view pairs per step), even")
    parser.add_argument("--max-units", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--runs", nargs="+", default=list(RUNS), choices=RUNS)
    parser.add_argument("--output", default=str(HERE / "results" / "ddp_throughput.json"))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _worker(json.loads(args.worker))
        return
    if args.steps <= args.warmup or args.warmup < 0:
        parser.error("--steps must exceed --warmup (>= 0)")

    import torch

    from spikeinterface_neuronid._io import write_json

    gloo = torch.distributed.is_available() and torch.distributed.is_gloo_available()
    if "2proc_1thread" in args.runs and not gloo:
        parser.error("the 2-process run needs torch.distributed with gloo")
    t_start = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.runs:
            row = _run(name, args, Path(tmp))
            rows.append(row)
            print(
                f"{name:>15}: {row['median_step_s']:.3f} s/step, {row['view_pairs_per_s']:.1f} pairs/s "
                f"(global batch {row['global_batch']}, {row['wall_s']:.0f} s)",
                flush=True,
            )
    base = rows[0] if rows[0]["run"] == "1proc_1thread" else None
    for row in rows:
        speedup = None if base is None else round(base["median_step_s"] / row["median_step_s"], 3)
        row["speedup_vs_1proc_1thread"] = speedup
        row["same_samples_as_first_run"] = row["num_pairs"] == rows[0]["num_pairs"]
    for row in rows:
        del row["num_pairs"]
    write_json(
        args.output,
        dict(
            benchmark="pretraining throughput, 1 process (1 or 2 threads) vs 2 DDP processes (gloo, 1 thread each)",
            command="python benchmarks/bench_ddp_throughput.py " + " ".join(sys.argv[1:]),
            date=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            config=args.config,
            corpus="easy preset, animals 0-1, 200 neurons x 120 s (as bench_pretrain.py)",
            global_batch=args.batch_size,
            max_units_per_view=args.max_units,
            steps=args.steps,
            warmup=args.warmup,
            rows=rows,
            total_s=round(time.perf_counter() - t_start, 1),
            **machine_info(),
        ),
    )
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
