"""Peak memory of pretraining on a folder of NWB files: streamed (LazyCorpus) against loaded whole (eager).

    python benchmarks/bench_streaming.py                   # the committed grid, about 12 min on 2 cores
    python benchmarks/bench_streaming.py --quick --output /tmp/streaming_quick.json   # a 2-minute smoke run
    python benchmarks/bench_streaming.py --files 2 8 --neurons 200 --minutes 5 --output /tmp/streaming.json

First a folder of simulated NWB sessions is written (once: it is kept under ``--workdir``, default
``benchmarks/.cache/streaming/``, and reused by later runs with the same sizes): session ``a`` is animal ``a`` of
the ``easy`` preset of :mod:`spikeinterface_neuronid.simulation`, ``--neurons`` neurons (about 80 % of them
recorded as units) for ``--minutes``, written by :func:`~spikeinterface_neuronid.nwb.write_analyzer_to_nwb`
(the defaults, 300 neurons x 10 min, give about 240 units, 2.5 M spikes and 20 MiB of spike times per file).

Then, for folders of the first N files (``--files``), each point runs in its own subprocess (one torch thread),
so that its peak resident memory (``ru_maxrss``) is its own:

* ``stream``: ``pretrain(LazyCorpus(files, cache_size=2), session_block=2, ...)``, the files read on demand;
* ``eager``: every file read first (:func:`~spikeinterface_neuronid.streaming.load_spike_train_sets`) into a
  list, then the same ``pretrain`` call on the list;

with the ``cpu()`` NuCLR config, ``--steps`` steps of ``--batch-size`` view pairs of at most 64 units, blocks of
``--block-steps`` steps. At the largest folder the stream point is also run with DataLoader workers
(``--workers``, default 0 and 2). Recorded per point: seconds (reading the eager list, pretraining, total),
source reads (counted in every process, the DataLoader workers included), the peak resident memory above the
process's memory after its imports (``ru_maxrss`` of the process; the largest worker's ``ru_maxrss``), and the
peak of the summed proportional set size (PSS, shared pages split) of the process and its workers, sampled
every 0.1 s, above its value at the start. Streaming should stay about flat in the number of files (the cache
holds 2 sources and the span sampler their chunk statistics), eager grow with it (all spike trains, and the
chunk statistics of every session drawn so far). Results go to ``benchmarks/results/streaming.json``
(atomically), with a least-squares slope of peak memory against the number of files per mode.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

from _machine import machine_info

HERE = Path(__file__).resolve().parent
DEFAULT_FILES = (2, 4, 8, 16)
QUICK = dict(files=[2, 4], neurons=150, minutes=3.0, steps=4, block_steps=2)
METADATA = {
    "NWBFile": {
        "session_description": "Simulated session (easy preset) for benchmarks/bench_streaming.py.",
        "session_start_time": "2024-01-01T12:00:00+00:00",
        "session_id": "ses-0",
        "institution": "Simulation",
    },
    "Subject": {"subject_id": "0", "species": "Mus musculus", "sex": "U", "age": "P60D", "description": "Simulated."},
}


# --------------------------------------------------------------------------------------------------------------------
# the folder of NWB files


def _folder(workdir: Path, neurons: int, minutes: float, seed: int) -> Path:
    return workdir / f"easy_{neurons}n_{minutes:g}min_seed{seed}"


def _nwb_path(folder: Path, animal: int) -> Path:
    return folder / f"sub-{animal:02d}" / f"sub-{animal:02d}_ses-0.nwb"


def write_folder(folder: Path, num_files: int, neurons: int, minutes: float, seed: int) -> dict:
    """Write the missing files of the folder (each atomically: a hidden temporary name, then renamed)."""
    from spikeinterface_neuronid.nwb import write_analyzer_to_nwb
    from spikeinterface_neuronid.simulation import simulate_dataset

    missing = [a for a in range(num_files) if not _nwb_path(folder, a).is_file()]
    t0 = time.perf_counter()
    for start in range(0, len(missing), 4):  # a few sessions per simulator call: progress survives interruption
        animals = missing[start : start + 4]
        sessions = simulate_dataset(
            "easy", animals=animals, num_neurons=neurons, duration_s=60.0 * minutes, seed=seed, progress_bar=False
        )
        for animal, session in zip(animals, sessions):
            path = _nwb_path(folder, animal)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.parent / f".{path.stem}.partial.nwb"
            metadata = json.loads(json.dumps(METADATA))
            metadata["Subject"]["subject_id"] = f"{animal:02d}"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                write_analyzer_to_nwb(session.to_sorting(), tmp, metadata, embeddings=False, overwrite=True)
            os.replace(tmp, path)
            print(f"  wrote {path.relative_to(folder)} ({session.num_units} units)", flush=True)
    return dict(files_written=len(missing), write_s=round(time.perf_counter() - t0, 1))


# --------------------------------------------------------------------------------------------------------------------
# one measured point (in its own subprocess)


def _pss_mib(pid: int) -> float:
    """Proportional set size of a process (MiB); its VmRSS where smaps_rollup is unreadable; 0 once it is gone."""
    for name, field in (("smaps_rollup", "Pss:"), ("status", "VmRSS:")):
        try:
            with open(f"/proc/{pid}/{name}") as f:
                for line in f:
                    if line.startswith(field):
                        return int(line.split()[1]) / 1024
        except OSError:
            pass
    return 0.0


def _children(pid: int) -> list[int]:
    kids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    stat = f.read()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                kids.append(int(entry))
    return kids


class _TreeMemory(threading.Thread):
    """Samples the summed PSS of this process and its children (DataLoader workers) every ``interval`` s."""

    def __init__(self, interval: float = 0.1):
        super().__init__(daemon=True)
        self.interval, self.peak, self.max_children, self._done = interval, 0.0, 0, threading.Event()

    def sample(self) -> float:
        pid = os.getpid()
        kids = _children(pid)
        self.max_children = max(self.max_children, len(kids))
        return _pss_mib(pid) + sum(_pss_mib(k) for k in kids)

    def run(self) -> None:
        while not self._done.is_set():
            self.peak = max(self.peak, self.sample())
            self._done.wait(self.interval)

    def stop(self) -> float:
        self._done.set()
        self.join()
        return max(self.peak, self.sample())


def _worker(params: dict) -> dict:
    import numpy as np
    import torch

    from spikeinterface_neuronid import streaming
    from spikeinterface_neuronid.methods.nuclr import NuCLRConfig
    from spikeinterface_neuronid.training import pretrain

    torch.set_num_threads(1)
    files = [Path(p) for p in params["files"]]
    log = Path(params["load_log"])
    original = streaming.load_spike_train_sets

    def counted(path, *args, **kwargs):  # appends one line per source read, in whichever process reads it
        t0 = time.perf_counter()
        sets = original(path, *args, **kwargs)
        with open(log, "a") as f:
            f.write(f"{os.getpid()} {time.perf_counter() - t0:.3f} {Path(path).name}\n")
        return sets

    streaming.load_spike_train_sets = counted  # LazyCorpus reads through the module attribute (forked workers too)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    monitor = _TreeMemory()
    pss_start = monitor.sample()
    monitor.start()
    t0 = time.perf_counter()
    if params["mode"] == "stream":
        corpus = streaming.LazyCorpus(files, cache_size=params["cache_size"])
    else:
        corpus = [s for path in files for s in streaming.load_spike_train_sets(path)]
    load_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    _, history = pretrain(
        corpus,
        config=NuCLRConfig.cpu(),
        steps=params["steps"],
        batch_size=params["batch_size"],
        max_units=params["max_units"],
        warmup_steps=1,
        session_block=params["session_block"],
        session_block_steps=params["block_steps"],
        num_workers=params["num_workers"],
        num_threads=1,
        seed=params["seed"],
        progress_bar=False,
    )
    pretrain_s = time.perf_counter() - t1
    pss_peak = monitor.stop()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    reads = [line.split() for line in log.read_text().splitlines()] if log.is_file() else []
    return dict(
        mode=params["mode"],
        files=len(files),
        num_workers=params["num_workers"],
        seconds=round(load_s + pretrain_s, 2),
        load_list_s=round(load_s, 2),
        pretrain_s=round(pretrain_s, 2),
        median_step_s=round(float(np.median(history["step_time_s"])), 3),
        source_reads=len(reads),
        source_reads_main=getattr(corpus, "num_loads", len(files)),
        read_s_mean=round(float(np.mean([float(r[1]) for r in reads])), 3) if reads else None,
        peak_mib_above_start=round(peak - before, 1),
        peak_mib=round(peak, 1),
        worker_peak_mib=round(children, 1) if params["num_workers"] else None,
        tree_pss_peak_mib_above_start=round(pss_peak - pss_start, 1),
        tree_pss_peak_mib=round(pss_peak, 1),
        processes_seen=1 + monitor.max_children,
    )


# --------------------------------------------------------------------------------------------------------------------


def _slope(rows: list[dict], key: str) -> float | None:
    import numpy as np

    if len(rows) < 2:
        return None
    return round(float(np.polyfit([r["files"] for r in rows], [r[key] for r in rows], 1)[0]), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", nargs="+", type=int, default=list(DEFAULT_FILES), help="folder sizes (files)")
    parser.add_argument("--neurons", type=int, default=300, help="simulated neurons per session (~80%% recorded)")
    parser.add_argument("--minutes", type=float, default=10.0, help="recorded minutes per session")
    parser.add_argument("--steps", type=int, default=6, help="pretraining steps per point")
    parser.add_argument("--block-steps", type=int, default=2, help="session_block_steps (session_block=2)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--cache-size", type=int, default=2, help="LazyCorpus cache_size")
    parser.add_argument("--workers", nargs="+", type=int, default=[0, 2], help="num_workers at the largest folder")
    parser.add_argument("--modes", nargs="+", default=["stream", "eager"], choices=["stream", "eager"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="2-minute smoke run: " + json.dumps(QUICK))
    parser.add_argument("--workdir", default=str(HERE / ".cache" / "streaming"), help="where the NWB folder is kept")
    parser.add_argument("--output", default=None, help="default: benchmarks/results/streaming.json (--quick: tmp)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(_worker(json.loads(args.worker))))
        return
    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, value)
    if args.output is None:
        quick_out = Path(tempfile.gettempdir()) / "streaming_quick.json"
        args.output = str(quick_out if args.quick else HERE / "results" / "streaming.json")
    if min(args.files) < 1 or args.steps < 1 or args.block_steps < 1 or args.cache_size < 2:
        parser.error("--files, --steps and --block-steps must be >= 1 and --cache-size >= 2 (session_block=2)")
    sizes = sorted(set(args.files))
    largest = sizes[-1]

    from spikeinterface_neuronid._io import write_json

    t_start = time.perf_counter()
    folder = _folder(Path(args.workdir), args.neurons, args.minutes, args.seed)
    print(f"NWB folder {folder} ({largest} files)", flush=True)
    written = write_folder(folder, largest, args.neurons, args.minutes, args.seed)
    paths = [_nwb_path(folder, a) for a in range(largest)]
    file_mib = [round(p.stat().st_size / 2**20, 2) for p in paths]

    points = [(mode, n, 0) for n in sizes for mode in args.modes]
    if "stream" in args.modes:
        points += [("stream", largest, w) for w in sorted(set(args.workers)) if w > 0]
    rows = []
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        for i, (mode, n, workers) in enumerate(points):
            params = dict(
                mode=mode,
                files=[str(p) for p in paths[:n]],
                num_workers=workers,
                steps=args.steps,
                block_steps=args.block_steps,
                batch_size=args.batch_size,
                max_units=64,
                session_block=2,
                cache_size=args.cache_size,
                seed=args.seed,
                load_log=str(Path(tmp) / f"reads{i}.log"),
            )
            out = subprocess.run(
                [sys.executable, __file__, "--worker", json.dumps(params)],
                capture_output=True,
                text=True,
                env=env,
            )
            if out.returncode != 0:
                sys.exit(f"point {mode} x {n} files (workers {workers}) failed:\n{out.stderr[-4000:]}")
            row = json.loads(out.stdout.strip().splitlines()[-1])
            row["folder_mib"] = round(sum(file_mib[:n]), 1)
            row["load_average_1min"] = round(os.getloadavg()[0], 2)
            rows.append(row)
            print(
                f"{mode:>6} {n:>3} files, {workers} workers: {row['seconds']:6.1f} s, {row['source_reads']:>3} reads, "
                f"+{row['peak_mib_above_start']:.0f} MiB (process), +{row['tree_pss_peak_mib_above_start']:.0f} MiB "
                f"(PSS, all processes)",
                flush=True,
            )

    by_mode = {m: [r for r in rows if r["mode"] == m and r["num_workers"] == 0] for m in args.modes}
    write_json(
        args.output,
        dict(
            benchmark="pretraining peak memory on a folder of NWB files: LazyCorpus (streamed) vs loaded whole",
            command="python benchmarks/bench_streaming.py " + " ".join(sys.argv[1:]),
            date=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            settings=dict(
                preset="easy",
                neurons_per_session=args.neurons,
                minutes_per_session=args.minutes,
                config="NuCLRConfig.cpu()",
                steps=args.steps,
                batch_size=args.batch_size,
                max_units=64,
                session_block=2,
                session_block_steps=args.block_steps,
                cache_size=args.cache_size,
                torch_threads=1,
                seed=args.seed,
            ),
            folder=dict(path=str(folder), files=largest, file_mib=file_mib, **written),
            rows=rows,
            peak_mib_per_file={m: _slope(r, "peak_mib_above_start") for m, r in by_mode.items()},
            tree_pss_mib_per_file={m: _slope(r, "tree_pss_peak_mib_above_start") for m, r in by_mode.items()},
            total_s=round(time.perf_counter() - t_start, 1),
            **machine_info(),
            memory_gib=round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        ),
    )
    print(f"wrote {args.output} ({time.perf_counter() - t_start:.0f} s)")


if __name__ == "__main__":
    main()
