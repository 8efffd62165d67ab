"""Helpers that add validated ndx-neuron-embedding columns to a DynamicTable (normally ``nwbfile.units``)."""
from typing import Optional, Sequence

import numpy as np
from hdmf.common import DynamicTable

__all__ = ["add_neuron_embedding", "add_predicted_labels", "get_class_probabilities"]


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


def _few(rows: np.ndarray, limit: int = 10) -> str:
    rows = [int(r) for r in rows]
    return str(rows[:limit])[:-1] + (f", ... ({len(rows)} in all)]" if len(rows) > limit else "]")


def _embedding_rows_missing(table: DynamicTable, model, embedding) -> Optional[np.ndarray]:
    """Bool mask of the rows without an embedding (any non-finite value), or None when no embedding is known."""
    if embedding is None:
        candidates = [
            c
            for c in table.columns
            if getattr(c, "neurodata_type", None) == "NeuronEmbedding" and getattr(c, "model", None) is model
        ]
        if len(candidates) != 1:
            return None
        embedding = candidates[0]
    values = np.asarray(embedding.data[:] if hasattr(embedding, "data") else embedding, dtype=np.float64)
    if values.ndim != 2 or values.shape[0] != _num_rows(table):
        raise ValueError(
            f"embedding must be 2-D with one row per row of table '{table.name}' ({_num_rows(table)}), "
            f"got shape {values.shape}"
        )
    return ~np.all(np.isfinite(values), axis=1)


def add_predicted_labels(
    table: DynamicTable,
    task: str,
    labels: Optional[Sequence[str]],
    probabilities,
    class_labels: Sequence[str],
    model,
    *,
    unknown_label: Optional[str] = None,
    embedding=None,
    add_confidence: bool = True,
    confidence=None,
    label_description: Optional[str] = None,
    probabilities_description: Optional[str] = None,
    atol: float = 1e-3,
):
    """Add the columns for one label task: ``<task>`` (PredictedLabel), ``<task>_probabilities``
    (ClassProbabilities) and, optionally, ``<task>_confidence`` (plain float32 VectorData).

    The label column's ``probabilities`` attribute is an object reference to the probabilities column (resolve it
    with :func:`get_class_probabilities`, which also handles files written by version 0.1.0).

    Nothing is added unless every check passes.

    Parameters
    ----------
    table : DynamicTable
        Typically ``nwbfile.units``; must already contain all rows.
    task : str
        Column base name, e.g. ``"cell_type"`` or ``"brain_region"`` (snake_case, no ``/`` or ``:``).
    labels : sequence of str or None
        Predicted label per row: one of ``class_labels``, or ``unknown_label`` where the model abstains. Rows
        without a prediction (all-NaN probabilities) must be ``unknown_label``. If None: the argmax of
        ``probabilities``, and ``unknown_label`` for the rows without a prediction.
    probabilities : array-like, shape (num_rows, num_classes)
        ``probabilities[i, j]`` = P(row i is ``class_labels[j]``), cast to float32. Each row is in [0, 1] and sums
        to 1 (within ``atol``), or is all NaN where the model has no prediction for the row (a unit without an
        embedding). Partly NaN rows are rejected.
    class_labels : sequence of str
        Class names in the order of the probability columns (unique).
    model : NeuronEmbeddingModel
    unknown_label : str, optional
        Abstention label (e.g. ``"unknown"``), not one of ``class_labels``. Recorded in the label column's
        ``unknown_label`` attribute and, when some row has it, appended to its ``class_labels``. Required when
        some label is not a class or some probabilities row is NaN.
    embedding : NeuronEmbedding or array-like, optional
        Embedding whose non-finite rows mark the units without an embedding; the NaN rows of ``probabilities``
        must be exactly those rows. Default: the table's NeuronEmbedding column whose ``model`` is ``model``, if
        there is exactly one; otherwise the check is skipped.
    add_confidence : bool
        Add ``<task>_confidence``: ``confidence`` if given, else the largest probability of each row (NaN for
        rows without a prediction).
    confidence : array-like, shape (num_rows,), optional
        Values of ``<task>_confidence`` (cast to float32): in [0, 1], NaN exactly on the NaN rows of
        ``probabilities``.
    label_description, probabilities_description : str, optional
        Column descriptions; defaults mention the model.
    atol : float
        Tolerance for the check that rows sum to 1.

    Returns
    -------
    dict
        ``{"labels": PredictedLabel, "probabilities": ClassProbabilities, "confidence": VectorData or None}``
    """
    from . import ClassProbabilities, PredictedLabel

    n = _num_rows(table)
    class_labels = [str(c) for c in class_labels]
    if len(set(class_labels)) != len(class_labels):
        raise ValueError(f"class_labels must be unique, got {class_labels}")
    if unknown_label is not None:
        if not isinstance(unknown_label, str) or not unknown_label:
            raise ValueError(f"unknown_label must be a non-empty string, got {unknown_label!r}")
        if unknown_label in class_labels:
            raise ValueError(f"unknown_label {unknown_label!r} must not be one of class_labels {class_labels}")
    names = [task, f"{task}_probabilities"] + ([f"{task}_confidence"] if add_confidence else [])
    taken = [c for c in names if c in table.colnames]
    if taken:
        raise ValueError(f"table '{table.name}' already has column(s) {taken}")

    probs = np.asarray(probabilities, dtype=np.float32)
    if probs.ndim != 2 or probs.shape != (n, len(class_labels)):
        raise ValueError(f"probabilities must have shape ({n}, {len(class_labels)}), got {probs.shape}")
    isnan = np.isnan(probs)
    nan_rows = isnan.all(axis=1) if probs.shape[1] else np.zeros(n, dtype=bool)
    partial = np.flatnonzero(isnan.any(axis=1) & ~nan_rows)
    if partial.size:
        raise ValueError(
            f"probabilities rows {_few(partial)} are partly NaN: a row is either all NaN (no prediction, e.g. a unit "
            "without an embedding) or fully finite"
        )
    valid = probs[~nan_rows]
    if not np.all(np.isfinite(valid)) or valid.min(initial=0.0) < 0 or valid.max(initial=0.0) > 1:
        raise ValueError("probabilities must be in [0, 1] (or all NaN for rows without a prediction)")
    sums = valid.sum(axis=1, dtype=np.float64)
    bad = np.flatnonzero(~nan_rows)[~np.isclose(sums, 1.0, rtol=0.0, atol=atol)]
    if bad.size:
        raise ValueError(
            f"probabilities rows {_few(bad)} do not sum to 1 (atol={atol}; sums {probs[bad[:3]].sum(axis=1)}); "
            "each row sums to 1, or is all NaN for a row without a prediction"
        )
    missing = _embedding_rows_missing(table, model, embedding)
    if missing is not None and not np.array_equal(missing, nan_rows):
        raise ValueError(
            "probabilities rows must be all NaN exactly for the rows without an embedding (non-finite embedding "
            f"rows): rows without an embedding {_few(np.flatnonzero(missing))}, all-NaN probabilities rows "
            f"{_few(np.flatnonzero(nan_rows))}"
        )

    if nan_rows.any() and unknown_label is None:
        raise ValueError(
            f"probabilities rows {_few(np.flatnonzero(nan_rows))} are all NaN (no prediction): pass unknown_label= "
            "(e.g. 'unknown') for their label"
        )
    if labels is None:
        if not class_labels and n:
            raise ValueError("labels=None needs at least one class in class_labels")
        best = np.nan_to_num(probs).argmax(axis=1) if n else np.zeros(0, dtype=int)
        labels = [unknown_label if missing_row else class_labels[int(j)] for j, missing_row in zip(best, nan_rows)]
    labels = [str(x) for x in labels]
    if len(labels) != n:
        raise ValueError(f"got {len(labels)} labels for {n} rows")
    allowed = set(class_labels) | ({unknown_label} if unknown_label is not None else set())
    unknown = sorted(set(labels) - allowed)
    if unknown:
        hint = "" if unknown_label is not None else "; pass unknown_label= to declare an abstention label"
        raise ValueError(f"labels {unknown} are not in class_labels {class_labels}{hint}")
    wrong = np.flatnonzero(nan_rows & (np.asarray(labels, dtype=object) != unknown_label))
    if wrong.size:
        raise ValueError(
            f"labels of rows {_few(wrong)} must be unknown_label {unknown_label!r}: their probabilities are all NaN "
            "(no prediction)"
        )

    if confidence is not None:
        if not add_confidence:
            raise ValueError("confidence was given but add_confidence is False")
        conf = np.asarray(confidence, dtype=np.float32)
        if conf.shape != (n,):
            raise ValueError(f"confidence must have shape ({n},), got {conf.shape}")
        if not np.array_equal(np.isnan(conf), nan_rows):
            raise ValueError("confidence must be NaN exactly on the rows whose probabilities are all NaN")
        finite = conf[~nan_rows]
        if not np.all(np.isfinite(finite)) or finite.min(initial=0.0) < 0 or finite.max(initial=0.0) > 1:
            raise ValueError("confidence must be in [0, 1] (NaN for rows without a prediction)")
    elif add_confidence:
        conf = np.full(n, np.nan, dtype=np.float32)
        if valid.shape[1]:
            conf[~nan_rows] = valid.max(axis=1)

    label_classes = class_labels + ([unknown_label] if unknown_label is not None and unknown_label in labels else [])
    desc = f"model '{model.model_name}' version {model.model_version}"
    abstain = f"; '{unknown_label}' where the model abstains or has no prediction" if unknown_label is not None else ""
    extra = {"unknown_label": unknown_label} if unknown_label is not None else {}
    table.add_column(
        name=task,
        description=label_description or f"Predicted {task} per unit from {desc}{abstain}.",
        data=labels,
        col_cls=PredictedLabel,
        model=model,
        class_labels=label_classes,
        **extra,
    )
    nan_note = "; NaN rows where the model has no prediction" if nan_rows.any() else ""
    table.add_column(
        name=f"{task}_probabilities",
        description=probabilities_description
        or f"Predicted {task} class probabilities from {desc}; column j is class_labels[j]{nan_note}.",
        data=probs,
        col_cls=ClassProbabilities,
        model=model,
        class_labels=class_labels,
    )
    table[task].probabilities = table[f"{task}_probabilities"]
    if add_confidence:
        table.add_column(
            name=f"{task}_confidence",
            description=f"Maximum class probability of {task}_probabilities (confidence of the predicted {task}).",
            data=conf,
        )
    return {
        "labels": table[task],
        "probabilities": table[f"{task}_probabilities"],
        "confidence": table[f"{task}_confidence"] if add_confidence else None,
    }


def get_class_probabilities(label_column) -> Optional[object]:
    """The ClassProbabilities column of a PredictedLabel column, or None.

    Uses the column's ``probabilities`` reference (written since version 0.2.0); for files written by 0.1.0,
    falls back to the ClassProbabilities column named ``<label column>_probabilities`` in the same table.
    Works on columns read from a file with or without this package imported.
    """
    linked = getattr(label_column, "probabilities", None)
    if linked is not None:
        return linked
    table = getattr(label_column, "parent", None)
    name = f"{label_column.name}_probabilities"
    if table is None or name not in getattr(table, "colnames", ()):
        return None
    column = table[name]
    return column if getattr(column, "neurodata_type", None) == "ClassProbabilities" else None
