"""Few units recorded together: does population context add, and never dilute?

    python benchmarks/bench_small_populations.py        # the committed result (benchmarks/results/small_populations.json)

Real sessions sometimes hold only a handful of units. Each benchmark animal (presets ``hard`` and
``varied``, animals 0-7, 150 neurons x 240 s, as ``neuronid benchmark``) is cut into random groups of ``k``
units (``k`` = 2, 5, 10, and the whole population), and every group is embedded **as its own recording**, so
a unit's context is its ``k - 1`` group mates only. Cell type is then decoded as in the benchmark's inductive
zero-shot protocol (leave one animal out, linear probe with C = 1, pooled macro-F1, paired hierarchical
bootstrap over animals and units for 95 % intervals), for:

- the shipped default model, and its single-unit half alone (with ``single_unit_path`` the embedding is
  ``[population-context vector, single-unit vector]``, and the second half does not depend on the group);
- ``ours, no spatial blocks``: the ablation model without any cross-unit path (its single-unit channels
  alone; it gives the same embedding whatever the group), trained like the ablation-budget full design;
- the ablation-budget full design (the fair comparison to the no-spatial model: same training budget);
- the 1 ms single-unit features (also group-independent).

The claims checked, for every ``k``: the shipped model is not worse than its own single-unit half
(``context_never_dilutes``: the interval of shipped - single-unit half has an upper bound above 0) and not
worse than the 1 ms features (``not_worse_than_1ms_features``, same rule); the ablation-budget full design
minus the no-spatial ablation (trained without the single-unit path) is reported next to them.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SHIPPED = "ours, shipped default model"
SINGLE_HALF = "ours, shipped default model: single-unit half"


def _groups(num_units: int, k: int, rng: np.random.Generator) -> list[np.ndarray]:
    if k >= num_units:
        return [np.arange(num_units)]
    order = rng.permutation(num_units)
    return [np.sort(g) for g in np.array_split(order, int(np.ceil(num_units / k)))]


def _embed_grouped(model, pop, groups) -> np.ndarray:
    from spikeinterface_neuronid.data import SpikeTrainSet
    from spikeinterface_neuronid.inference import embed_populations

    out = None
    for g in groups:
        part = SpikeTrainSet([pop.spike_times[u] for u in g], pop.duration)
        if len(g) < 2:  # embedding needs two units recorded together; a lone unit stays without one (NaN)
            continue
        emb = embed_populations(model, [part], num_threads=1).embedding
        out = np.full((pop.num_units, emb.shape[1]), np.nan) if out is None else out
        out[g] = emb
    return out


def _loao_predictions(xs, ys) -> np.ndarray:
    from spikeinterface_neuronid.evaluation import linear_probe

    preds = []
    for a in range(len(xs)):
        train = [b for b in range(len(xs)) if b != a]
        x, y = np.concatenate([xs[b] for b in train]), np.concatenate([ys[b] for b in train])
        ok, ok_test = np.isfinite(x).all(1), np.isfinite(xs[a]).all(1)
        pred = np.full(len(ys[a]), "", dtype=object)
        pred[ok_test] = linear_probe(x[ok], y[ok], xs[a][ok_test], ys[a][ok_test]).predictions
        preds.append(pred.astype(str))
    return np.concatenate(preds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["hard", "varied"])
    parser.add_argument("--sizes", nargs="+", type=int, default=[2, 5, 10, 0], help="group sizes (0: all units)")
    parser.add_argument("--animals", type=int, default=8)
    parser.add_argument("--resamples", type=int, default=2000)
    parser.add_argument("--output", default=str(HERE / "results" / "small_populations.json"))
    args = parser.parse_args()

    import torch

    from spikeinterface_neuronid._io import write_json
    from spikeinterface_neuronid.benchmark.baselines.features import SingleUnitFeatures
    from spikeinterface_neuronid.benchmark import hierarchical_bootstrap, pooled_scores
    from spikeinterface_neuronid.models import resolve_model
    from spikeinterface_neuronid.simulation import simulate_dataset

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    models = {
        SHIPPED: resolve_model("default"),
        "ours, ablation budget: full design": resolve_model(ROOT / "benchmarks/models/ablation-full.safetensors"),
        "ours, no spatial blocks": resolve_model(ROOT / "benchmarks/models/ablation-no-spatial.safetensors"),
    }
    rows = []
    for preset in args.presets:
        sessions = simulate_dataset(
            preset, animals=list(range(args.animals)), num_neurons=150, duration_s=240.0, progress_bar=False
        )
        pops = [s.to_spike_train_set(covariates=False) for s in sessions]
        ys = [np.asarray(s.cell_type, dtype=str) for s in sessions]
        y = np.concatenate(ys)
        animal = np.concatenate([np.full(len(v), a) for a, v in enumerate(ys)])
        weights = hierarchical_bootstrap(animal, args.resamples, seed=0)
        features = SingleUnitFeatures(0.001).fit(pops).transform(pops)
        fixed_pred = {"single-unit features 1 ms": _loao_predictions(features, ys)}
        for size in args.sizes:
            rng = np.random.default_rng([size, 0])
            groups = [_groups(p.num_units, size or p.num_units, rng) for p in pops]
            preds = dict(fixed_pred)
            for name, model in models.items():
                xs = [_embed_grouped(model, p, g) for p, g in zip(pops, groups)]
                preds[name] = _loao_predictions(xs, ys)
                if name == SHIPPED and getattr(model.config, "single_unit_path", False):
                    half = model.config.dim
                    preds[SINGLE_HALF] = _loao_predictions([x[:, half:] for x in xs], ys)
            scores = {name: pooled_scores(y, p, weights)["macro_f1"] for name, p in preds.items()}
            point = {name: float(pooled_scores(y, p)["macro_f1"][0]) for name, p in preds.items()}
            diff = scores["ours, ablation budget: full design"] - scores["ours, no spatial blocks"]
            shipped = scores[SHIPPED] - scores["single-unit features 1 ms"]
            row = dict(
                preset=preset,
                group_size=size or "all",
                macro_f1={k: round(v, 4) for k, v in point.items()},
                interval={k: [round(float(q), 4) for q in np.nanpercentile(v, [2.5, 97.5])] for k, v in scores.items()},
                full_minus_no_spatial=round(
                    float(point["ours, ablation budget: full design"] - point["ours, no spatial blocks"]), 4
                ),
                full_minus_no_spatial_interval=[round(float(q), 4) for q in np.nanpercentile(diff, [2.5, 97.5])],
                shipped_minus_1ms_features=round(
                    float(point["ours, shipped default model"] - point["single-unit features 1 ms"]), 4
                ),
                shipped_minus_1ms_features_interval=[
                    round(float(q), 4) for q in np.nanpercentile(shipped, [2.5, 97.5])
                ],
            )
            if SINGLE_HALF in scores:
                own = scores[SHIPPED] - scores[SINGLE_HALF]
                row["shipped_minus_single_unit_half"] = round(float(point[SHIPPED] - point[SINGLE_HALF]), 4)
                row["shipped_minus_single_unit_half_interval"] = [
                    round(float(q), 4) for q in np.nanpercentile(own, [2.5, 97.5])
                ]
                row["context_never_dilutes"] = bool(row["shipped_minus_single_unit_half_interval"][1] > 0)
            else:  # a model without the single-unit path: its own single-unit channel is the no-spatial ablation
                row["context_never_dilutes"] = bool(row["full_minus_no_spatial_interval"][1] > 0)
            row["not_worse_than_1ms_features"] = bool(row["shipped_minus_1ms_features_interval"][1] > 0)
            rows.append(row)
            print(row, flush=True)
    write_json(
        args.output,
        dict(
            command="python benchmarks/bench_small_populations.py " + " ".join(sys.argv[1:]),
            task="cell_type",
            protocol="inductive zero-shot, leave one animal out, C=1, pooled macro-F1, 95 % hierarchical bootstrap",
            rows=rows,
            seconds=round(time.perf_counter() - t0, 1),
        ),
    )


if __name__ == "__main__":
    main()
