"""Read the embeddings, predictions and model record of an annotated NWB file back.

Reading needs only ``pynwb``: the extension's spec is cached in the file and loaded with
``load_namespaces=True``.
"""

from __future__ import annotations

import datetime as _dt

import numpy as np

from ..schema import confidence_column, label_property, probabilities_column, probability_property
from .io import _import_pynwb, _nwb_io, _str_list, _units_table_ids

__all__ = ["read_embedding_arrays", "read_embeddings_from_nwb"]


def _find_columns(units, embedding_column: str | None):
    emb_cols = [c for c in units.columns if getattr(c, "neurodata_type", None) == "NeuronEmbedding"]
    if embedding_column is not None:
        emb_cols = [c for c in emb_cols if c.name == embedding_column]
        if not emb_cols:
            raise ValueError(f"the Units table has no NeuronEmbedding column {embedding_column!r}")
    if not emb_cols:
        raise ValueError("the Units table has no NeuronEmbedding column (written by write_embeddings_to_nwb)")
    if len(emb_cols) > 1:
        raise ValueError(
            f"the Units table has several NeuronEmbedding columns {[c.name for c in emb_cols]}; "
            "pass embedding_column="
        )
    emb_col = emb_cols[0]
    model = emb_col.model
    tasks = {}
    for col in units.columns:
        if getattr(col, "neurodata_type", None) != "PredictedLabel" or col.model is not model:
            continue
        # the label column links its probabilities (ndx-neuron-embedding >= 0.2); older files: by name
        prob = getattr(col, "probabilities", None)
        if prob is None:
            prob = next(
                (
                    c
                    for c in units.columns
                    if getattr(c, "neurodata_type", None) == "ClassProbabilities"
                    and c.name == probabilities_column(col.name)
                ),
                None,
            )
        conf_name = confidence_column(col.name)
        conf = units[conf_name] if conf_name in units.colnames else None
        tasks[col.name] = (col, prob, conf)
    return emb_col, model, tasks


_MODEL_FIELDS = (
    "name",
    "description",
    "model_name",
    "model_version",
    "model_checksum",
    "checksum_algorithm",
    "method",
    "training_data_description",
    "embedding_dim",
    "model_url",
    "inference_software",
    "inference_date",
)


def read_embedding_arrays(path, *, embedding_column: str | None = None, unit_id_column: str | None = None) -> dict:
    """Read the embeddings, predictions and model record written by :func:`write_embeddings_to_nwb`.

    Works without importing ``ndx_neuron_embedding`` (the spec cached in the file is used).

    Parameters
    ----------
    path : str | Path
        NWB file: HDF5, or a Zarr store (a directory or a name ending in ``.zarr``).
    embedding_column : str | None, default: None
        Name of the ``NeuronEmbedding`` column; None: the only one.
    unit_id_column : str | None, default: None
        Column giving the unit ids; None: ``unit_name`` if present, else the table's ``id``.

    Returns
    -------
    dict
        ``unit_ids`` (list of str, table order), ``embedding`` (float32 units x dim), ``tasks``:
        ``{task: {"labels": <U array, "probabilities": float32 units x classes, "class_labels": list,
        "label_classes": list (the PredictedLabel's class_labels), "confidence": float32 array or None}}``
        (the label columns pointing to the same model), and ``model``: dict of the ``NeuronEmbeddingModel``
        fields (``inference_date`` as an ISO string).
    """
    _import_pynwb()
    with _nwb_io(path, "r", load_namespaces=True) as io:
        nwbfile = io.read()
        units = nwbfile.units
        if units is None:
            raise ValueError(f"{path} has no Units table")
        emb_col, model, tasks = _find_columns(units, embedding_column)
        out = {
            "unit_ids": _units_table_ids(units, unit_id_column),
            "embedding": np.asarray(emb_col.data[:]),
            "tasks": {},
            "model": {},
        }
        for task, (lab, prob, conf) in tasks.items():
            class_labels = _str_list(prob.class_labels[:]) if prob is not None else None
            label_classes = _str_list(lab.class_labels[:]) if lab.class_labels is not None else None
            out["tasks"][task] = {
                "labels": np.asarray(_str_list(lab.data[:]), dtype=str),
                "probabilities": np.asarray(prob.data[:]) if prob is not None else None,
                "class_labels": class_labels,
                "label_classes": label_classes,
                "confidence": np.asarray(conf.data[:]) if conf is not None else None,
            }
        for field in _MODEL_FIELDS:
            value = getattr(model, field, None)
            if isinstance(value, bytes):
                value = value.decode()
            if isinstance(value, (_dt.datetime, _dt.date)):
                value = value.isoformat()
            if isinstance(value, np.generic):
                value = value.item()
            out["model"][field] = value
    return out


def read_embeddings_from_nwb(path, *, embedding_column: str | None = None, unit_id_column: str | None = None):
    """The embeddings and predictions of an NWB file as a DataFrame (see :func:`read_embedding_arrays`).

    Returns
    -------
    pandas.DataFrame
        Index: unit ids as strings (``unit_name`` if the Units table has it, else its ``id``), in table order.
        Columns: ``embedding_0`` … ``embedding_<dim-1>`` (float32, one column per dimension), then per task
        ``<task>_label`` (str) and ``<task>_probability`` (the confidence: largest class probability), as
        :func:`~spikeinterface_neuronid.labeling.neuronid_label_units` returns them.
    """
    import pandas as pd

    arrays = read_embedding_arrays(path, embedding_column=embedding_column, unit_id_column=unit_id_column)
    emb = arrays["embedding"]
    columns = {f"embedding_{j}": emb[:, j] for j in range(emb.shape[1])}
    for task, t in arrays["tasks"].items():
        columns[label_property(task)] = t["labels"]
        if t["confidence"] is not None:
            columns[probability_property(task)] = np.asarray(t["confidence"], dtype=np.float32)
        elif t["probabilities"] is not None:  # a file from another writer, without the confidence column
            p = np.asarray(t["probabilities"], dtype=np.float32)
            columns[probability_property(task)] = np.nanmax(np.where(np.isnan(p), -np.inf, p), axis=1)
    return pd.DataFrame(columns, index=pd.Index(arrays["unit_ids"], name="unit_id"))
