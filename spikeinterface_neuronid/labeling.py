"""Labels on demand: apply a model's task heads to the stored embeddings (SpikeInterface's ``*_label_units``).

The ``neuron_embedding`` extension stores the embedding only; labels and probabilities are derived from it here,
when asked, so they always come from the heads of the model the embedding was computed with.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .schema import EMBEDDING_KEY, EXTENSION_NAME, label_property, probability_property

__all__ = [
    "TaskPrediction",
    "predict_task",
    "predict_tasks",
    "extension_model",
    "extension_predictions",
    "neuronid_label_units",
]


@dataclass(frozen=True)
class TaskPrediction:
    """What one task head answers for every unit.

    Attributes
    ----------
    task : str
        The task (``"cell_type"``, ``"brain_region"``, ...).
    classes : tuple of str
        Class names, in the column order of ``probabilities``.
    labels : np.ndarray
        Fixed-width unicode ``(n,)``: a class, or ``"unknown"`` where the head abstains (confidence below its
        threshold, out of distribution) or the unit has no embedding.
    probabilities : np.ndarray
        float32 ``(n, n_classes)`` calibrated probabilities; NaN rows for units without an embedding.
    confidence : np.ndarray
        float32 ``(n,)``, the largest calibrated probability of each unit; NaN without an embedding.
    """

    task: str
    classes: tuple[str, ...]
    labels: np.ndarray
    probabilities: np.ndarray
    confidence: np.ndarray


def _confidence(probabilities: np.ndarray) -> np.ndarray:
    finite = np.all(np.isfinite(probabilities), axis=1)
    out = np.full(probabilities.shape[0], np.nan, dtype=np.float32)
    if np.any(finite):
        out[finite] = np.max(probabilities[finite], axis=1)
    return out


def _task_list(bundle, tasks) -> list[str]:
    if not bundle.heads:
        raise ValueError(
            f"the model {bundle.name!r} has no task heads, so it cannot label units: fit a head on labelled "
            "embeddings with spikeinterface_neuronid.fit_head(embeddings, labels, task), add it with "
            "bundle.add_head(head), save the model with bundle.save(path) and pass model=path"
        )
    if tasks is None:
        return list(bundle.heads)
    tasks = [tasks] if isinstance(tasks, str) else list(tasks)
    missing = [t for t in tasks if t not in bundle.heads]
    if missing:
        raise ValueError(
            f"the model {bundle.name!r} has no head for task(s) {missing}; its tasks are {list(bundle.heads)}"
        )
    return tasks


def predict_task(head, embedding: np.ndarray) -> TaskPrediction:
    """Apply one task head to embeddings.

    Parameters
    ----------
    head : LinearHead
        The task head.
    embedding : np.ndarray
        ``(num_units, dim)`` embeddings, NaN rows for units without one.

    Returns
    -------
    TaskPrediction
        Labels are ``"unknown"`` where the float32 confidence is below the head's threshold, where the unit is
        out of distribution (:meth:`~spikeinterface_neuronid.heads.LinearHead.is_ood`; its probabilities are
        still given) and where it has no embedding.
    """
    embedding = np.asarray(embedding)
    # the labels come from the float32 probabilities, so "unknown" is exactly where the confidence < threshold
    proba = head.predict_proba(embedding).astype(np.float32)
    return TaskPrediction(
        task=head.task,
        classes=tuple(str(c) for c in head.classes),
        labels=head.labels_from_proba(proba, ood=head.is_ood(embedding)),
        probabilities=proba,
        confidence=_confidence(proba),
    )


def predict_tasks(bundle, embedding: np.ndarray, tasks: str | Sequence[str] | None = None) -> dict[str, TaskPrediction]:
    """Apply the task heads of ``bundle`` to embeddings.

    Parameters
    ----------
    bundle : ModelBundle
        A model with task heads.
    embedding : np.ndarray
        ``(num_units, dim)`` embeddings, NaN rows for units without one.
    tasks : str | list of str | None, default: None
        Tasks to predict; None: every head of the model.

    Returns
    -------
    dict of str to TaskPrediction
        One prediction per task, in ``tasks`` order.

    Raises
    ------
    ValueError
        If the model has no heads, or a requested task has no head.
    """
    embedding = np.asarray(embedding)
    return {task: predict_task(bundle.heads[task], embedding) for task in _task_list(bundle, tasks)}


def extension_model(extension):
    """The model a ``neuron_embedding`` extension was computed with, checked against its stored checksum.

    Parameters
    ----------
    extension : ComputeNeuronEmbedding
        A computed ``neuron_embedding`` extension.

    Returns
    -------
    ModelBundle

    Raises
    ------
    ValueError
        If the model file changed since the extension was computed (its checksum differs from ``model_sha256``).
    """
    from .models import resolve_model

    params = extension.params
    bundle = resolve_model(str(params["model"]), params.get("method"))
    if bundle.sha256 != params["model_sha256"]:
        raise ValueError(
            f"the model file {params['model']} changed since the embeddings were computed (sha256 "
            f"{bundle.sha256[:12]}… != {params['model_sha256'][:12]}…); recompute the neuron_embedding extension"
        )
    return bundle


def extension_predictions(extension, tasks: str | Sequence[str] | None = None) -> dict[str, TaskPrediction]:
    """Predictions of the heads of the model a ``neuron_embedding`` extension was computed with.

    Parameters
    ----------
    extension : ComputeNeuronEmbedding
        A computed ``neuron_embedding`` extension.
    tasks : str | list of str | None, default: None
        Tasks to predict; None: every head of the model.

    Returns
    -------
    dict of str to TaskPrediction

    Raises
    ------
    ValueError
        If the model file changed since the extension was computed (:func:`extension_model`), the model has no
        heads, or a requested task has no head.
    """
    return predict_tasks(extension_model(extension), np.asarray(extension.data[EMBEDDING_KEY]), tasks)


def _needs_compute(ext, bundle, params: dict) -> bool:
    if ext is None or ext.params.get("model_sha256") != bundle.sha256:
        return True
    return any(ext.params.get(key) != value for key, value in params.items() if key != "model")


def neuronid_label_units(
    sorting_analyzer,
    model: str | Path = "default",
    tasks: str | Sequence[str] | None = None,
    set_properties: bool = True,
    **compute_kwargs,
):
    """Label every unit with the task heads of a model (cell type, brain region, ...), with calibrated probabilities.

    The heads are applied to the embeddings of the ``neuron_embedding`` extension, which is computed (or
    recomputed) when it is missing, was computed with another model (compared by checksum), or with other
    parameters than ``compute_kwargs``. Otherwise the stored embeddings are used.

    Parameters
    ----------
    sorting_analyzer : SortingAnalyzer
        The analyzer.
    model : str | Path, default: "default"
        ``"default"`` or the path of a model file with task heads (see
        :func:`~spikeinterface_neuronid.calibration.fit_head` and
        :meth:`~spikeinterface_neuronid.bundle.ModelBundle.add_head`).
    tasks : str | list of str | None, default: None
        Tasks to report; None reports every head of the model.
    set_properties : bool, default: True
        Also set the sorting properties ``<task>_label`` and ``<task>_probability`` (saved with the analyzer if
        it is on disk), so that they are exported with the sorting (NWB Units table, phy).
    **compute_kwargs
        Passed to ``sorting_analyzer.compute("neuron_embedding", ...)`` when it is (re)computed (e.g.
        ``batch_size``, ``device``, ``n_jobs``).

    Returns
    -------
    pandas.DataFrame
        Indexed by unit id, with columns ``<task>_label`` (a class, or ``"unknown"`` where the head abstains or
        the unit has no embedding) and ``<task>_probability`` (the largest calibrated probability; NaN for units
        without an embedding) for each task.

    Raises
    ------
    ValueError
        If the model has no task heads, or a requested task has no head.
    """
    import pandas as pd
    from spikeinterface.core.job_tools import split_job_kwargs

    from . import extension  # noqa: F401  (registers the extension)
    from .models import resolve_model

    if not isinstance(model, (str, Path)):
        raise TypeError(
            "model must be 'default' or the path of a model file; save a ModelBundle with bundle.save(path)"
        )
    bundle = resolve_model(str(model))
    tasks = _task_list(bundle, tasks)
    params, _ = split_job_kwargs(compute_kwargs)
    ext = sorting_analyzer.get_extension(EXTENSION_NAME)
    if _needs_compute(ext, bundle, params):
        ext = sorting_analyzer.compute(EXTENSION_NAME, model=str(model), **compute_kwargs)

    columns = {}
    for task, prediction in predict_tasks(bundle, np.asarray(ext.data[EMBEDDING_KEY]), tasks).items():
        columns[label_property(task)] = prediction.labels
        columns[probability_property(task)] = prediction.confidence.astype(np.float64)
    if set_properties:
        for key, values in columns.items():
            sorting_analyzer.set_sorting_property(key, values)
    return pd.DataFrame(columns, index=sorting_analyzer.unit_ids)
