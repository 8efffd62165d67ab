"""Figures: a 2-D map of unit embeddings coloured by label."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from ._io import atomic_path

__all__ = ["embedding_map_2d", "plot_embedding_map", "save_figure"]


def embedding_map_2d(embedding: np.ndarray, method: str = "pca", seed: int = 0) -> np.ndarray:
    """Project embeddings to 2-D for display.

    Parameters
    ----------
    embedding : np.ndarray
        ``(num_units, dim)`` embeddings without NaN rows.
    method : "pca" | "tsne", default: "pca"
        PCA of the standardised embeddings, or t-SNE (scikit-learn) for a non-linear map.
    seed : int, default: 0
        Random state of t-SNE.
    """
    from sklearn.preprocessing import StandardScaler

    x = StandardScaler().fit_transform(np.asarray(embedding, dtype=np.float64))
    if method == "pca":
        from sklearn.decomposition import PCA

        return PCA(n_components=2, random_state=seed).fit_transform(x)
    if method == "tsne":
        from sklearn.manifold import TSNE

        perplexity = float(min(30.0, max(2.0, (len(x) - 1) / 3)))
        return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(x)
    raise ValueError(f"method must be 'pca' or 'tsne', got {method!r}")


def plot_embedding_map(
    embedding: np.ndarray,
    labels: Sequence[str],
    *,
    method: str = "pca",
    ax=None,
    title: str | None = None,
    seed: int = 0,
):
    """Scatter the 2-D map of the embeddings, one colour per label.

    Returns
    -------
    matplotlib.axes.Axes
    """
    import matplotlib.pyplot as plt

    labels = np.asarray(labels).astype(str)
    xy = embedding_map_2d(embedding, method=method, seed=seed)
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 5))
    for label in sorted(set(labels)):
        sel = labels == label
        ax.scatter(xy[sel, 0], xy[sel, 1], s=8, alpha=0.75, label=f"{label} ({sel.sum()})")
    ax.set_xlabel(f"{method.upper()} 1")
    ax.set_ylabel(f"{method.upper()} 2")
    ax.legend(markerscale=2, fontsize=8, frameon=False)
    if title:
        ax.set_title(title)
    return ax


def save_figure(fig, path: str | Path) -> Path:
    """Save a matplotlib figure atomically (temporary file, then rename); the format follows the suffix."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight", format=path.suffix.lstrip(".") or "png")
    return path
