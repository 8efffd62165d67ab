"""Figures: a 2-D map of unit embeddings coloured by label, predicted labels, confusion matrices."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from ._io import atomic_path
from .labeling import extension_model, predict_task
from .schema import EMBEDDING_KEY, EXTENSION_NAME, UNKNOWN

__all__ = [
    "embedding_map_2d",
    "plot_embedding_map",
    "plot_predicted_labels",
    "plot_confusion_matrix",
    "save_figure",
]


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


def plot_predicted_labels(sorting_analyzer, task: str = "firing_type", ax=None, method: str = "pca", seed: int = 0):
    """Scatter the 2-D map of an analyzer's unit embeddings, coloured by the labels a task head predicted.

    Parameters
    ----------
    sorting_analyzer : SortingAnalyzer
        An analyzer with a computed ``neuron_embedding`` extension whose model has a head for ``task``
        (labels from :func:`~spikeinterface_neuronid.labeling.extension_predictions`).
    task : str, default: "firing_type"
        The task whose predicted labels colour the points (``"unknown"`` is a colour of its own).
    ax : matplotlib.axes.Axes | None, default: None
        Axes to draw in; None creates a figure.
    method : "pca" | "tsne", default: "pca"
        Projection of the embeddings (:func:`embedding_map_2d`).
    seed : int, default: 0
        Random state of t-SNE.

    Returns
    -------
    matplotlib.axes.Axes

    Raises
    ------
    ValueError
        If the analyzer has no ``neuron_embedding`` extension, its model has no head for ``task``, or fewer than
        two units have an embedding.
    """
    from . import extension  # noqa: F401  (registers the extension)

    ext = sorting_analyzer.get_extension(EXTENSION_NAME)
    if ext is None:
        raise ValueError(
            "the analyzer has no 'neuron_embedding' extension: compute it first with "
            "sorting_analyzer.compute('neuron_embedding', model=...) using a model with task heads"
        )
    bundle = extension_model(ext)
    if task not in bundle.heads:
        raise ValueError(
            f"no predicted labels for task {task!r}: the model of the 'neuron_embedding' extension "
            f"({bundle.name}) has heads for {list(bundle.heads)}. Fit a head with fit_head, add it with "
            "bundle.add_head and recompute with model=<saved model>"
        )
    embedding = np.asarray(ext.data[EMBEDDING_KEY])
    labels = predict_task(bundle.heads[task], embedding).labels.astype(str)
    ok = np.all(np.isfinite(embedding), axis=1)
    if ok.sum() < 2:
        raise ValueError(f"only {int(ok.sum())} unit(s) have an embedding; a map needs at least 2")
    title = f"Predicted {task} ({int(ok.sum())} units)"
    return plot_embedding_map(embedding[ok], labels[ok], method=method, ax=ax, title=title, seed=seed)


def plot_confusion_matrix(
    true_labels: Sequence[str],
    predicted_labels: Sequence[str],
    classes: Sequence[str] | None = None,
    ax=None,
    normalize: bool = True,
    title: str | None = None,
):
    """Draw the confusion matrix of predicted against true labels.

    Rows are the true classes, columns the predicted ones; predicted labels that are not classes (e.g.
    ``"unknown"``, a head's abstention) get extra columns on the right. Each cell shows its value.

    Parameters
    ----------
    true_labels, predicted_labels : sequence of str
        One label per unit, in the same order.
    classes : sequence of str | None, default: None
        Classes in display order (rows, and the first columns). None takes the sorted classes present in the
        true labels, ``"unknown"`` excepted, so that no empty row is drawn; predicted labels outside them (a
        class absent from the truth, ``"unknown"``) get extra columns. Give ``classes`` to draw rows for
        absent classes too. Units whose true label is not a class are left out.
    ax : matplotlib.axes.Axes | None, default: None
        Axes to draw in; None creates a figure.
    normalize : bool, default: True
        Show each row as fractions of its units (the diagonal is then each class's recall); False shows counts.
    title : str | None, default: None
        Axes title.

    Returns
    -------
    matplotlib.axes.Axes

    Raises
    ------
    ValueError
        If the label sequences differ in length, ``classes`` is empty or has duplicates, or no unit has a true
        label among the classes.
    """
    import matplotlib.pyplot as plt


    true = np.asarray(true_labels).astype(str).ravel()
    pred = np.asarray(predicted_labels).astype(str).ravel()
    if true.shape != pred.shape:
        raise ValueError(
            f"true_labels and predicted_labels must have the same length, got {true.size} and {pred.size}"
        )
    if classes is None:
        classes = sorted(set(true) - {UNKNOWN})
    classes = [str(c) for c in classes]
    if not classes:
        raise ValueError("classes is empty: give at least one class")
    if len(set(classes)) != len(classes):
        raise ValueError(f"classes must be unique, got {classes}")
    keep = np.isin(true, classes)
    if not keep.any():
        raise ValueError(f"no unit has a true label among the classes {classes}")
    true, pred = true[keep], pred[keep]
    extra = sorted(set(pred) - set(classes), key=lambda c: (c == UNKNOWN, c))
    columns = classes + extra
    row_of = {c: i for i, c in enumerate(classes)}
    col_of = {c: i for i, c in enumerate(columns)}
    counts = np.zeros((len(classes), len(columns)), dtype=np.int64)
    np.add.at(counts, ([row_of[t] for t in true], [col_of[p] for p in pred]), 1)
    if normalize:
        totals = counts.sum(axis=1, keepdims=True)
        values = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)
    else:
        values = counts.astype(np.float64)

    if ax is None:
        _, ax = plt.subplots(figsize=(1.0 + 0.7 * len(columns), 0.8 + 0.6 * len(classes)))
    vmax = 1.0 if normalize else max(1.0, float(values.max()))
    image = ax.imshow(values, cmap="Blues", vmin=0.0, vmax=vmax, aspect="auto")
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            text = f"{values[i, j]:.2f}" if normalize else f"{counts[i, j]:d}"
            color = "white" if values[i, j] > 0.6 * vmax else "black"
            ax.text(j, i, text, ha="center", va="center", fontsize=8, color=color)
    ax.set_xticks(np.arange(len(columns)), labels=columns, rotation=45, ha="right")
    ax.set_yticks(np.arange(len(classes)), labels=classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of row" if normalize else "units")
    if title:
        ax.set_title(title)
    return ax


def save_figure(fig, path: str | Path) -> Path:
    """Save a matplotlib figure atomically (temporary file, then rename); the format follows the suffix."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight", format=path.suffix.lstrip(".") or "png")
    return path
