"""Helpers that add validated ndx-neuron-embedding columns to a DynamicTable (normally ``nwbfile.units``)."""
from typing import Optional, Sequence

import numpy as np
from hdmf.common import DynamicTable

__all__ = ["add_neuron_embedding", "add_predicted_labels"]


def _num_rows(table: DynamicTable) -> int:
    return len(table.id)


def add_neuron_embedding(
    table: DynamicTable,
    embedding,
    model,
    *,
    name: str = "embedding",
    description: Optional[str] = None,
):
    """Add a :class:`NeuronEmbedding` column (cast to float32) to ``table``.

    Parameters
    ----------
    table : DynamicTable
        Typically ``nwbfile.units``; must already contain all rows.
    embedding : array-like, shape (num_rows, embedding_dim)
    model : NeuronEmbeddingModel
        Provenance record; should already be added with ``nwbfile.add_lab_meta_data``.
    name : str
        Column name (default ``"embedding"``). Must not already exist.
    description : str, optional
        Column description; a default mentioning the model name is used if omitted.

    Returns
    -------
    NeuronEmbedding
        The added column.
    """
    from . import NeuronEmbedding

    emb = np.asarray(embedding, dtype=np.float32)
    if emb.ndim != 2:
        raise ValueError(f"embedding must be 2-D (num_rows, embedding_dim), got shape {emb.shape}")
    if emb.shape[0] != _num_rows(table):
        raise ValueError(f"embedding has {emb.shape[0]} rows but table '{table.name}' has {_num_rows(table)} rows")
    if getattr(model, "embedding_dim", None) is not None and int(model.embedding_dim) != emb.shape[1]:
        raise ValueError(f"embedding has dim {emb.shape[1]} but model.embedding_dim is {model.embedding_dim}")
    if description is None:
        description = f"Per-unit embedding computed with model '{model.model_name}' version {model.model_version}."
    table.add_column(name=name, description=description, data=emb, col_cls=NeuronEmbedding, model=model)
    return table[name]


def add_predicted_labels(
    table: DynamicTable,
    task: str,
    labels: Optional[Sequence[str]],
    probabilities,
    class_labels: Sequence[str],
    model,
    *,
    add_confidence: bool = True,
    label_description: Optional[str] = None,
    probabilities_description: Optional[str] = None,
    atol: float = 1e-3,
):
    """Add the columns for one label task: ``<task>`` (PredictedLabel), ``<task>_probabilities``
    (ClassProbabilities) and, optionally, ``<task>_confidence`` (plain VectorData, max probability).

    Parameters
    ----------
    table : DynamicTable
        Typically ``nwbfile.units``.
    task : str
        Column base name, e.g. ``"cell_type"`` or ``"brain_region"`` (snake_case, no ``/`` or ``:``).
    labels : sequence of str or None
        Predicted label per row. If None, the argmax of ``probabilities`` is used.
    probabilities : array-like, shape (num_rows, num_classes)
        ``probabilities[i, j]`` = P(row i is ``class_labels[j]``); cast to float32.
    class_labels : sequence of str
        Class names in the order of the probability columns.
    model : NeuronEmbeddingModel
    add_confidence : bool
        Also add ``<task>_confidence`` = max probability per row.
    atol : float
        Tolerance for the check that rows sum to 1.

    Returns
    -------
    dict
        ``{"labels": PredictedLabel, "probabilities": ClassProbabilities, "confidence": VectorData or None}``
    """
    from . import ClassProbabilities, PredictedLabel

    class_labels = [str(c) for c in class_labels]
    if len(set(class_labels)) != len(class_labels):
        raise ValueError(f"class_labels must be unique, got {class_labels}")
    probs = np.asarray(probabilities, dtype=np.float32)
    n = _num_rows(table)
    if probs.ndim != 2 or probs.shape != (n, len(class_labels)):
        raise ValueError(f"probabilities must have shape ({n}, {len(class_labels)}), got {probs.shape}")
    if not np.all(np.isfinite(probs)) or probs.min(initial=0.0) < 0 or probs.max(initial=0.0) > 1:
        raise ValueError("probabilities must be finite and in [0, 1]")
    if n and not np.allclose(probs.sum(axis=1), 1.0, atol=atol):
        raise ValueError("each row of probabilities must sum to 1")
    if labels is None:
        labels = [class_labels[j] for j in probs.argmax(axis=1)] if n else []
    labels = [str(x) for x in labels]
    if len(labels) != n:
        raise ValueError(f"got {len(labels)} labels for {n} rows")
    unknown = sorted(set(labels) - set(class_labels))
    if unknown:
        raise ValueError(f"labels {unknown} are not in class_labels {class_labels}")

    desc = f"model '{model.model_name}' version {model.model_version}"
    table.add_column(
        name=task,
        description=label_description or f"Predicted {task} per unit from {desc}.",
        data=labels,
        col_cls=PredictedLabel,
        model=model,
        class_labels=class_labels,
    )
    table.add_column(
        name=f"{task}_probabilities",
        description=probabilities_description
        or f"Predicted {task} class probabilities from {desc}; column j is class_labels[j].",
        data=probs,
        col_cls=ClassProbabilities,
        model=model,
        class_labels=class_labels,
    )
    confidence = None
    if add_confidence:
        table.add_column(
            name=f"{task}_confidence",
            description=f"Maximum class probability of {task}_probabilities (confidence of the predicted {task}).",
            data=probs.max(axis=1) if n else np.zeros(0, dtype=np.float32),
        )
        confidence = table[f"{task}_confidence"]
    return {"labels": table[task], "probabilities": table[f"{task}_probabilities"], "confidence": confidence}
