"""Downstream macro-F1 against the number of pretraining animals, pretrained through the streaming path.

    python benchmarks/bench_animals.py                 # the committed curve: 4-32 animals x 2 seeds (~70 min, 2 cores)
    python benchmarks/bench_animals.py --quick         # a 3-minute smoke run (2, 4 animals, 20 steps), to /tmp
    python benchmarks/bench_animals.py --resume        # continue a killed run: finished points are kept

1. Simulates a pool of ``max(--animals)`` animals of ``--preset`` (ids from 3000, disjoint from every split of
   ``tools/release/common.py``), one session each, and writes every session as an NWB file (spike times and
   ground-truth columns, which pretraining does not read) into ``--workdir``; the files are kept for reruns.
2. For each point N of ``--animals``: pretrains the span-context ``NuCLRConfig.cpu()`` model from scratch on the
   first N files, read lazily (:class:`~spikeinterface_neuronid.streaming.LazyCorpus`, 4 sessions cached,
   session-blocked sampling over blocks of 4), with the same steps, batch and seeds at every point, so that
   only the number of animals changes; each point is trained once per ``--seeds`` seed.
3. Scores each model inductively zero-shot on the evaluation animals 1000-1003 of the same preset: a linear
   probe (:func:`~spikeinterface_neuronid.evaluation.linear_probe`) trained on three animals, tested on the
   fourth, each animal held out once; macro-F1 over the pooled held-out units, with a 95 % bootstrap interval
   (units resampled within animals, 1000 draws) and the paired difference to the smallest point of the same
   seed; the summary gives, per point, the mean over seeds and the spread between seeds. The
   handcrafted baselines (1 ms ACG + ISI for cell type, lagged pairwise correlations for region) are scored
   on the same folds as reference lines.

Results go to ``benchmarks/results/animals.json`` (atomically, after every point). The bootstrap intervals are
those of the test units only; run-to-run variation shows as the spread between seeds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
POOL_START = 3000
TASKS = ("cell_type", "brain_region")
BASELINE_OF_TASK = {"cell_type": "single_unit_1ms", "brain_region": "pairwise_correlations"}
METADATA = {
    "NWBFile": {
        "session_description": "Simulated session (spikeinterface_neuronid.simulation) for bench_animals.py.",
        "session_start_time": "2024-01-01T12:00:00+00:00",
        "session_id": "ses-0",
    },
    "Subject": {"species": "Mus musculus", "sex": "U", "age": "P90D", "description": "Simulated animal."},
}


def write_pool(workdir: Path, preset: str, animals: list[int], num_neurons: int, duration_s: float) -> list[Path]:
    """The NWB file of every pool animal, simulated and written unless already in ``workdir``."""
    from tqdm.auto import tqdm

    from spikeinterface_neuronid.nwb import write_analyzer_to_nwb
    from spikeinterface_neuronid.simulation import simulate_dataset

    folder = workdir / f"{preset}-{num_neurons}x{duration_s:g}s"
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"sub-{a}" / f"sub-{a}_ses-0.nwb" for a in animals]
    missing = [(a, p) for a, p in zip(animals, paths) if not p.is_file()]
    for animal, path in tqdm(missing, desc="write NWB pool", unit="file", disable=not missing):
        (session,) = simulate_dataset(
            preset, animals=[animal], num_neurons=num_neurons, duration_s=duration_s, progress_bar=False
        )
        metadata = json.loads(json.dumps(METADATA))
        metadata["Subject"]["subject_id"] = str(animal)
        path.parent.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            write_analyzer_to_nwb(session.to_sorting(), path, metadata, embeddings=False)
    return paths


def evaluation_sessions(preset: str, num_neurons: int, duration_s: float):
    """The evaluation animals' sessions as spike-train sets, with their labels."""
    from spikeinterface_neuronid.simulation import EVALUATION_ANIMALS, simulate_dataset

    sessions = simulate_dataset(
        preset, animals=list(EVALUATION_ANIMALS), num_neurons=num_neurons, duration_s=duration_s, progress_bar=False
    )
    trains = [s.to_spike_train_set(covariates=False) for s in sessions]
    labels = {task: [np.asarray(getattr(s, task), dtype=str) for s in sessions] for task in TASKS}
    return trains, labels


def held_out_predictions(features: list[np.ndarray], labels: list[np.ndarray]):
    """Leave-one-animal-out probe predictions ``(true, predicted, animal)`` of every held-out embedded unit."""
    from spikeinterface_neuronid.evaluation import linear_probe

    true, predicted, animal = [], [], []
    for test in range(len(features)):
        train = [k for k in range(len(features)) if k != test]
        train_x, train_y = np.concatenate([features[k] for k in train]), np.concatenate([labels[k] for k in train])
        ok = np.isfinite(features[test]).all(1)
        result = linear_probe(train_x, train_y, features[test][ok], labels[test][ok])
        true.append(labels[test][ok])
        predicted.append(np.asarray(result.predictions, dtype=str))
        animal.append(np.full(int(ok.sum()), test))
    return np.concatenate(true), np.concatenate(predicted), np.concatenate(animal)


def _macro_f1(true: np.ndarray, predicted: np.ndarray) -> float:
    from sklearn.metrics import f1_score

    return float(f1_score(true, predicted, labels=sorted(set(true)), average="macro", zero_division=0))


def bootstrap_indices(groups: np.ndarray, draws: int, seed: int) -> list[np.ndarray]:
    """Unit indices of ``draws`` bootstrap resamples, units resampled within each group (animal)."""
    rng = np.random.default_rng(seed)
    members = [np.flatnonzero(groups == g) for g in np.unique(groups)]
    return [np.concatenate([rng.choice(m, m.size) for m in members]) for _ in range(draws)]


def score(true, predicted, resamples, reference=None) -> dict:
    """Macro-F1 with its bootstrap interval, and the paired difference to ``reference`` (true, predicted)."""
    values = np.array([_macro_f1(true[i], predicted[i]) for i in resamples])
    row = dict(macro_f1=round(_macro_f1(true, predicted), 4), ci95=np.round(np.percentile(values, [2.5, 97.5]), 4))
    if reference is not None:
        ref_true, ref_predicted = reference
        assert np.array_equal(ref_true, true)
        diffs = values - np.array([_macro_f1(true[i], ref_predicted[i]) for i in resamples])
        row["difference_to_first"] = round(row["macro_f1"] - _macro_f1(true, ref_predicted), 4)
        row["difference_ci95"] = np.round(np.percentile(diffs, [2.5, 97.5]), 4)
    row["ci95"] = row["ci95"].tolist()
    if "difference_ci95" in row:
        row["difference_ci95"] = row["difference_ci95"].tolist()
    return row


def summary(points: list[dict]) -> list[dict]:
    """Per number of animals and task: macro-F1 mean over seeds, and the lowest and highest seed."""
    rows = []
    for n in sorted({p["animals"] for p in points}):
        of_n = [p for p in points if p["animals"] == n]
        row = dict(animals=n, seeds=[p["seed"] for p in of_n])
        for task in TASKS:
            values = [p[task]["macro_f1"] for p in of_n]
            row[task] = dict(mean=round(float(np.mean(values)), 4), seed_range=[min(values), max(values)])
        rows.append(row)
    return rows


def baseline_features(trains) -> dict[str, list[np.ndarray]]:
    """The handcrafted reference features of the evaluation sessions."""
    from spikeinterface_neuronid.benchmark.baselines.features import (
        PairwiseCorrelationFeatures,
        SingleUnitFeatures,
    )

    return {
        "single_unit_1ms": SingleUnitFeatures(resolution_s=0.001).fit(trains).transform(trains),
        "pairwise_correlations": PairwiseCorrelationFeatures().fit(trains).transform(trains),
    }


def pretrain_point(files: list[Path], args, model_path: Path, seed: int):
    """Pretrain on ``files`` through the streaming corpus (or load the model a finished point wrote)."""
    from spikeinterface_neuronid.bundle import ModelBundle
    from spikeinterface_neuronid.methods.nuclr import NuCLRConfig
    from spikeinterface_neuronid.streaming import LazyCorpus
    from spikeinterface_neuronid.training import pretrain

    if model_path.is_file() and args.resume:
        return ModelBundle.load(model_path), None
    corpus = LazyCorpus(files, cache_size=4)
    t0 = time.perf_counter()
    bundle, history = pretrain(
        corpus,
        NuCLRConfig.cpu(),
        steps=args.steps,
        batch_size=args.batch_size,
        max_units=args.max_units,
        warmup_steps=min(100, args.steps // 10),
        seed=seed,
        session_block=min(4, len(files)),
        session_block_steps=50,
        num_threads=args.threads,
        name=f"bench-animals-{len(files)}-seed{seed}",
        provenance=dict(data="bench_animals.py pool", sources=[str(p) for p in files]),
    )
    bundle.save(model_path)
    losses = np.asarray(history["loss"])
    tail = max(1, losses.size // 10)
    training = dict(
        seconds=round(time.perf_counter() - t0, 1),
        source_loads=corpus.num_loads,
        loss_first=round(float(losses[:tail].mean()), 4),
        loss_last=round(float(losses[-tail:].mean()), 4),
    )
    return bundle, training


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--animals", type=int, nargs="+", default=[4, 8, 16, 32], help="pretraining animals per point")
    parser.add_argument("--preset", default="varied", help="simulator preset (default: %(default)s)")
    parser.add_argument("--num-neurons", type=int, default=120, help="neurons per simulated session")
    parser.add_argument("--duration-s", type=float, default=300.0, help="seconds per simulated session")
    parser.add_argument("--steps", type=int, default=800, help="pretraining steps per point (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-units", type=int, default=96, help="units per training view at most")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="pretraining seeds per point")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--workdir", default=str(HERE / ".cache" / "animals"), help="NWB pool and point models")
    parser.add_argument("--output", default=str(HERE / "results" / "animals.json"))
    parser.add_argument("--resume", action="store_true", help="keep the points already in --output")
    parser.add_argument("--quick", action="store_true", help="2 and 4 animals, 20 steps, 60 s sessions, to /tmp")
    args = parser.parse_args()
    if args.quick:
        args.animals, args.steps, args.duration_s, args.num_neurons, args.seeds = [2, 4], 20, 60.0, 60, [0]
        args.workdir, args.output = "/tmp/bench_animals_quick", "/tmp/bench_animals_quick.json"

    import torch

    from spikeinterface_neuronid._io import write_json
    from spikeinterface_neuronid.inference import embed_populations

    workdir = Path(args.workdir)
    pool = list(range(POOL_START, POOL_START + max(args.animals)))
    t0 = time.perf_counter()
    files = write_pool(workdir, args.preset, pool, args.num_neurons, args.duration_s)
    pool_seconds = time.perf_counter() - t0
    trains, labels = evaluation_sessions(args.preset, args.num_neurons, args.duration_s)

    output = Path(args.output)
    previous = json.loads(output.read_text()) if args.resume and output.is_file() else {}
    result = dict(
        command="python benchmarks/bench_animals.py " + " ".join(sys.argv[1:]),
        preset=args.preset,
        pool_animals=[pool[0], pool[-1]],
        num_neurons=args.num_neurons,
        duration_s=args.duration_s,
        steps=args.steps,
        batch_size=args.batch_size,
        max_units=args.max_units,
        seeds=args.seeds,
        evaluation="leave-one-animal-out linear probe over animals 1000-1003, pooled held-out units",
        pool_write_s=round(pool_seconds, 1),
        points=[],
        machine=dict(cpu_count=os.cpu_count(), platform=platform.platform(), torch=torch.__version__),
    )
    kept = {(p["animals"], p.get("seed", 0)): p for p in previous.get("points", [])}
    for seed in args.seeds:
        first = {}  # the smallest point's held-out predictions per task (paired differences)
        for n in sorted(args.animals):
            path = workdir / f"model-{args.preset}-{n}-seed{seed}.safetensors"
            bundle, training = pretrain_point(files[:n], args, path, seed)
            if training is None:  # a finished point's model: keep its training record
                training = kept.get((n, seed), {}).get("training")
            features = [
                embed_populations(bundle, [t], num_threads=args.threads, progress_bar=False).embedding for t in trains
            ]
            point = dict(animals=n, seed=seed, sha256=bundle.sha256, training=training)
            for task in TASKS:
                true, predicted, animal = held_out_predictions(features, labels[task])
                point[task] = score(true, predicted, bootstrap_indices(animal, 1000, 0), first.get(task))
                first.setdefault(task, (true, predicted))
            print(n, "animals, seed", seed, {t: point[t]["macro_f1"] for t in TASKS}, flush=True)
            result["points"].append(point)
            result["summary"] = summary(result["points"])
            write_json(output, result)

    baselines = {}
    for name, features in baseline_features(trains).items():
        baselines[name] = {}
        for task in TASKS:
            true, predicted, animal = held_out_predictions(features, labels[task])
            baselines[name][task] = score(true, predicted, bootstrap_indices(animal, 1000, 0))
    result["baselines"] = baselines
    write_json(output, result)
    print(json.dumps(dict(points=result["points"], baselines=baselines), indent=1))


if __name__ == "__main__":
    main()
