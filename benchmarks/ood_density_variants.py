"""Which embedding columns should the heads' out-of-distribution density see? A measurement for a model with
the single-unit path (``[population-context half, single-unit half]``).

    python benchmarks/ood_density_variants.py MODEL.safetensors [--output FILE]

Embeds, with MODEL, the ``firing_type`` head-training animals (``tools.release.common.HEAD_ANIMALS`` of every
preset), the held-out evaluation animals 1000-1003 and the out-of-distribution populations of
``bench_ood.py`` (seeds 100-105, 60 units; Poisson, gamma, LIF, AdEx). For each variant it fits the head's
check exactly as ``fit_default_head.py`` does (:func:`~spikeinterface_neuronid.calibration.fit_head` on the
training units, groups = animals, quantile 0.975) on what the variant's density sees, and reports the
fraction of units :meth:`~spikeinterface_neuronid.heads.LinearHead.is_ood` flags:

* ``all``: every column (``ood_columns=None``);
* ``context``: the population-context half (``ood_columns=config.context_dim``);
* ``single``: the single-unit half only;
* ``pca-K``: the first K principal components of all standardised columns.

Only the check is compared; no head is written.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
for _path in (HERE, HERE.parent):  # bench_ood next to this script; tools.release from the repository root
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from bench_ood import embed, simulate_family  # noqa: E402
from tools.release.common import HEAD_ANIMALS  # noqa: E402
from tools.release.fit_default_head import EVAL_PRESETS, HEAD_PRESETS, OOD_QUANTILE, TASK  # noqa: E402

from spikeinterface_neuronid.simulation import EVALUATION_ANIMALS as EVAL_ANIMALS  # noqa: E402

FAMILIES = ("poisson", "gamma", "lif", "adex")


def _projection(variant: str, train: np.ndarray, half: int):
    """``(project, ood_columns)``: what the variant feeds to ``fit_head`` and how many leading columns its
    density reads."""
    if variant == "all":
        return (lambda x: x), None
    if variant == "context":
        return (lambda x: x), half
    if variant == "single":
        return (lambda x: x[:, half:]), None
    if variant.startswith("pca-"):
        from sklearn.decomposition import PCA
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        pca = make_pipeline(StandardScaler(), PCA(n_components=int(variant[4:]), random_state=0)).fit(train)
        return pca.transform, None
    raise ValueError(f"unknown variant {variant!r}: all, context, single or pca-K")


def flagged_rates(variant, train, labels, groups, sets, half) -> dict[str, float]:
    """Fraction of each set's units that the ``firing_type`` head's check, fitted on ``variant``, flags."""
    from spikeinterface_neuronid.calibration import fit_head

    project, columns = _projection(variant, train, half)
    head = fit_head(project(train), labels, TASK, groups=groups, ood_quantile=OOD_QUANTILE, ood_columns=columns)
    return {name: float(np.mean(head.is_ood(project(x)))) for name, x in sets.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("--variants", nargs="+", default=["all", "context", "single", "pca-16", "pca-32"])
    parser.add_argument("--output", default=None, help="also write the table to this file")
    args = parser.parse_args()

    import torch

    from spikeinterface_neuronid.bundle import ModelBundle
    from spikeinterface_neuronid.simulation import simulate_dataset

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    bundle = ModelBundle.load(args.model)
    if not getattr(bundle.config, "single_unit_path", False):
        raise SystemExit(f"{args.model} has no single-unit path: its embedding has no halves to compare")
    half = bundle.config.dim

    def embed_sessions(preset, animals):
        sims = simulate_dataset(preset, animals=animals, sessions_per_animal=1, progress_bar=False)
        return sims, [embed(bundle, s.spike_times, s.duration) for s in sims]

    train, labels, groups = [], [], []
    for preset in HEAD_PRESETS:
        sims, embeddings = embed_sessions(preset, HEAD_ANIMALS)
        for sim, e in zip(sims, embeddings):
            train.append(e)
            labels.append(np.asarray(sim.cell_type, dtype=str))
            groups.append(np.full(len(e), f"{preset}-{sim.animal_id}"))
    train, labels, groups = np.concatenate(train), np.concatenate(labels), np.concatenate(groups)
    embedded = np.isfinite(train).all(1)
    train, labels, groups = train[embedded], labels[embedded], groups[embedded]
    sets = {}
    for preset in EVAL_PRESETS:
        e = np.concatenate(embed_sessions(preset, EVAL_ANIMALS)[1])
        sets[f"in distribution: {preset}"] = e[np.isfinite(e).all(1)]
    for family in FAMILIES:
        pops = simulate_family(family, 60, list(range(100, 106)))
        e = np.concatenate([embed(bundle, p["spike_times"], p["duration"]) for p in pops])
        sets[family] = e[np.isfinite(e).all(1)]
    print(f"embedded in {time.perf_counter() - t0:.0f} s", flush=True)

    lines = [
        f"# python benchmarks/ood_density_variants.py {args.model} (model sha256 {bundle.sha256[:12]}…)",
        "# fraction of units flagged out of distribution by the firing_type head's check fitted on each variant",
        "| variant | " + " | ".join(sets) + " |",
        "|---" * (len(sets) + 1) + "|",
    ]
    for variant in args.variants:
        rates = flagged_rates(variant, train, labels, groups, sets, half)
        lines.append(f"| {variant} | " + " | ".join(f"{100 * rates[k]:.1f} %" for k in sets) + " |")
        print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    if args.output:
        from spikeinterface_neuronid._io import atomic_path

        with atomic_path(Path(args.output)) as tmp:
            tmp.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
