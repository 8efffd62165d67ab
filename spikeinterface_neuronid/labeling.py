"""Label units with the task heads of a model, following SpikeInterface's ``*_label_units`` convention."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

__all__ = ["neuronid_label_units"]

EXTENSION_NAME = "neuron_embedding"


def _needs_compute(ext, bundle, tasks: Sequence[str], params: dict) -> bool:
    if ext is None:
        return True
    if ext.params.get("model_sha256") != bundle.sha256:
        return True
    if any(ext.params.get(key) != value for key, value in params.items() if key != "model"):
        return True
    return any(f"{task}_label" not in ext.data or f"{task}_confidence" not in ext.data for task in tasks)


def neuronid_label_units(
    sorting_analyzer,
    model: str | Path = "default",
    tasks: str | Sequence[str] | None = None,
    set_properties: bool = True,
    **compute_kwargs,
):
    """Label every unit with the task heads of a model (cell type, brain region, ...), with calibrated probabilities.

    The ``neuron_embedding`` extension holds the labels of every head of its model; it is computed (or
    recomputed) when it is missing, was computed with another model (compared by checksum), lacks one of the
    tasks, or was computed with other parameters than ``compute_kwargs``. Otherwise the stored labels are used.

    Parameters
    ----------
    sorting_analyzer : SortingAnalyzer
        The analyzer.
    model : str | Path, default: "default"
        ``"default"`` or the path of a model file with task heads (see
        :func:`~spikeinterface_neuronid.heads.fit_head` and
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
        Indexed by unit id, with columns ``<task>_label`` (a class, or ``"unknown"`` where the largest calibrated
        probability is below the head's threshold or the unit has no embedding) and ``<task>_probability``
        (the largest calibrated probability; NaN for units without an embedding) for each task.

    Raises
    ------
    ValueError
        If the model has no task heads, or a requested task has no head.
    """
    import pandas as pd
    from spikeinterface.core.job_tools import split_job_kwargs

    from . import extension  # noqa: F401  (registers the extension)
    from .inference import resolve_model

    if not isinstance(model, (str, Path)):
        raise TypeError(
            "model must be 'default' or the path of a model file; save a ModelBundle with bundle.save(path)"
        )
    bundle = resolve_model(str(model))
    if not bundle.heads:
        raise ValueError(
            f"the model {bundle.name!r} has no task heads, so it cannot label units: fit a head on labelled "
            "embeddings with spikeinterface_neuronid.fit_head(embeddings, labels, task), add it with "
            "bundle.add_head(head), save the model with bundle.save(path) and pass model=path"
        )
    if tasks is None:
        tasks = list(bundle.heads)
    elif isinstance(tasks, str):
        tasks = [tasks]
    else:
        tasks = list(tasks)
    unknown = [t for t in tasks if t not in bundle.heads]
    if unknown:
        raise ValueError(
            f"the model {bundle.name!r} has no head for task(s) {unknown}; its tasks are {list(bundle.heads)}"
        )

    params, _ = split_job_kwargs(compute_kwargs)
    ext = sorting_analyzer.get_extension(EXTENSION_NAME)
    if _needs_compute(ext, bundle, tasks, params):
        ext = sorting_analyzer.compute(EXTENSION_NAME, model=str(model), **compute_kwargs)

    columns = {}
    for task in tasks:
        columns[f"{task}_label"] = np.asarray(ext.data[f"{task}_label"])
        columns[f"{task}_probability"] = np.asarray(ext.data[f"{task}_confidence"], dtype=np.float64)
    unit_ids = sorting_analyzer.unit_ids
    if set_properties:
        for key, values in columns.items():
            if hasattr(sorting_analyzer, "set_sorting_property"):
                sorting_analyzer.set_sorting_property(key, values)
            else:  # pragma: no cover  (older SpikeInterface)
                sorting_analyzer.sorting.set_property(key, values)
    return pd.DataFrame(columns, index=unit_ids)
