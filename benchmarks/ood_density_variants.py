"""Which embedding columns should the heads' out-of-distribution density see? A measurement for a model with
the single-unit path (``[population-context half, single-unit half]``).

    python benchmarks/ood_density_variants.py MODEL.safetensors [--output FILE]

Embeds, with MODEL, the ``firing_type`` head-training animals (``fit_default_head.HEAD_ANIMALS`` of every
preset), the held-out evaluation animals 1000-1003 and the out-of-distribution populations of
``bench_ood.py`` (seeds 100-105, 60 units; Poisson, gamma, LIF, AdEx). For each variant of the density it
fits, like ``heads._fit_ood``, a Gaussian mixture (full covariances, at most 10 components) to the
standardised training embeddings, sets the threshold at the conformal 0.975 quantile of cross-fitted scores
(4 folds of whole animals), refits on all training units and reports the fraction of units flagged:

* ``all``: every column (what ``fit_head`` does today);
* ``context``: the population-context half only;
* ``single``: the single-unit half only;
* ``pca-K``: the first K principal components of all standardised columns.

Only the check is compared; no head is fitted or written.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from bench_ood import embed, simulate_family  # noqa: E402
from fit_default_head import EVAL_ANIMALS, EVAL_PRESETS, HEAD_ANIMALS, HEAD_PRESETS, OOD_QUANTILE  # noqa: E402

FAMILIES = ("poisson", "gamma", "lif", "adex")
FOLDS = 4


def _mixture_scores(train: np.ndarray, tests: list[np.ndarray], seed: int = 0) -> list[np.ndarray]:
    from sklearn.mixture import GaussianMixture

    from spikeinterface_neuronid.heads import _OOD_UNITS_PER_COMPONENT, OOD_REG_COVAR

    mean, scale = train.mean(0), train.std(0)
    scale = np.where(scale > 0, scale, 1.0)
    k = int(np.clip(len(train) // (_OOD_UNITS_PER_COMPONENT * train.shape[1]), 1, 10))
    gmm = GaussianMixture(n_components=k, covariance_type="full", reg_covar=OOD_REG_COVAR, max_iter=500,
                          random_state=seed).fit((train - mean) / scale)
    return [-gmm.score_samples((t - mean) / scale) for t in tests]


def _columns(variant: str, train: np.ndarray, half: int):
    """A function mapping embeddings to the columns (or projection) the variant's density sees."""
    if variant == "all":
        return lambda x: x
    if variant == "context":
        return lambda x: x[:, :half]
    if variant == "single":
        return lambda x: x[:, half:]
    if variant.startswith("pca-"):
        from sklearn.decomposition import PCA

        mean, scale = train.mean(0), np.where(train.std(0) > 0, train.std(0), 1.0)
        pca = PCA(n_components=int(variant[4:]), random_state=0).fit((train - mean) / scale)
        return lambda x: pca.transform((x - mean) / scale)
    raise ValueError(variant)


def flagged_rates(variant, train, groups, sets, half) -> dict[str, float]:
    """Fraction of each set's units above the cross-fitted threshold of ``variant``."""
    animals = np.unique(groups)
    fold_of = {a: i % FOLDS for i, a in enumerate(np.random.default_rng(1).permutation(animals))}
    fold = np.array([fold_of[g] for g in groups])
    held_out = np.empty(len(train))
    for f in range(FOLDS):
        inside = fold != f
        project = _columns(variant, train[inside], half)
        held_out[~inside] = _mixture_scores(project(train[inside]), [project(train[~inside])])[0]
    n = len(held_out)
    threshold = np.sort(held_out)[min(n, int(np.ceil((n + 1) * OOD_QUANTILE))) - 1]
    project = _columns(variant, train, half)
    scores = _mixture_scores(project(train), [project(x) for x in sets.values()])
    return {name: float(np.mean(s > threshold)) for name, s in zip(sets, scores)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("--variants", nargs="+", default=["all", "context", "single", "pca-16", "pca-32"])
    parser.add_argument("--output", default=None, help="also write the table to this file")
    args = parser.parse_args()

    import torch

    from spikeinterface_neuronid.bundle import ModelBundle
    from spikeinterface_neuronid.simulate import simulate_dataset

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    bundle = ModelBundle.load(args.model)
    if not getattr(bundle.config, "single_unit_path", False):
        raise SystemExit(f"{args.model} has no single-unit path: its embedding has no halves to compare")
    half = bundle.config.dim

    def embed_sessions(preset, animals):
        sims = simulate_dataset(preset, animals=animals, sessions_per_animal=1, progress_bar=False)
        return [(f"{preset}-{s.animal_id}", embed(bundle, s.spike_times, s.duration)) for s in sims]

    train, groups = [], []
    for preset in HEAD_PRESETS:
        for name, e in embed_sessions(preset, HEAD_ANIMALS):
            train.append(e)
            groups += [name] * len(e)
    train, groups = np.concatenate(train), np.asarray(groups)
    ok = np.isfinite(train).all(1)
    train, groups = train[ok], groups[ok]
    sets = {}
    for preset in EVAL_PRESETS:
        e = np.concatenate([x for _, x in embed_sessions(preset, EVAL_ANIMALS)])
        sets[f"in distribution: {preset}"] = e[np.isfinite(e).all(1)]
    for family in FAMILIES:
        pops = simulate_family(family, 60, list(range(100, 106)))
        e = np.concatenate([embed(bundle, p["spike_times"], p["duration"]) for p in pops])
        sets[family] = e[np.isfinite(e).all(1)]
    print(f"embedded in {time.perf_counter() - t0:.0f} s", flush=True)

    lines = [
        f"# python benchmarks/ood_density_variants.py {args.model} (model sha256 {bundle.sha256[:12]}…)",
        "# fraction of units above the cross-fitted 0.975-quantile threshold of each density variant",
        "| variant | " + " | ".join(sets) + " |",
        "|---" * (len(sets) + 1) + "|",
    ]
    for variant in args.variants:
        rates = flagged_rates(variant, train, groups, sets, half)
        lines.append(f"| {variant} | " + " | ".join(f"{100 * rates[k]:.1f} %" for k in sets) + " |")
        print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    if args.output:
        Path(args.output).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
