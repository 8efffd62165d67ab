"""Write the ``neuron_embedding`` extension into the Units table of an NWB file, and read it back.

The results are stored with the ``ndx-neuron-embedding`` NWB extension (see ``ndx-neuron-embedding/README.md``):

- ``embedding``: a ``NeuronEmbedding`` column (float32, units x dim);
- per task ``<task>``: ``<task>`` (``PredictedLabel``), ``<task>_probabilities`` (``ClassProbabilities``) and
  ``<task>_confidence`` (plain float32 column, the largest calibrated probability);
- one ``NeuronEmbeddingModel`` record in ``/general/neuron_embedding_model`` that every column points to.

:func:`write_analyzer_to_nwb` writes a whole new NWB file from an analyzer (session and subject metadata, the
Units table via neuroconv's SpikeInterface writer, and the columns above).

Two storage backends: HDF5 (``.nwb`` files, the default, what DANDI expects) and Zarr (``.nwb.zarr`` directory
stores, through ``hdmf_zarr.NWBZarrIO``). A path that is a directory or whose name ends in ``.zarr`` is Zarr.

Writing needs ``pynwb`` and ``ndx-neuron-embedding`` (plus ``neuroconv`` for :func:`write_analyzer_to_nwb` and
``hdmf-zarr`` for Zarr); reading needs only ``pynwb`` (the extension's spec is cached in the file and loaded with
``load_namespaces=True``).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import re
import shutil
import tempfile
import uuid
import warnings
from pathlib import Path
from typing import Iterator

import numpy as np

__all__ = [
    "write_embeddings_to_nwb",
    "write_analyzer_to_nwb",
    "read_embeddings_from_nwb",
    "read_embedding_arrays",
    "is_zarr_path",
]

EMBEDDING_COLUMN = "embedding"
MODEL_RECORD_NAME = "neuron_embedding_model"
NAMESPACE = "ndx-neuron-embedding"
UNKNOWN_LABEL = "unknown"


def _import_pynwb():
    try:
        import pynwb
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "NWB support needs pynwb: pip install 'spikeinterface-neuronid[nwb]' (pynwb, ndx-neuron-embedding)"
        ) from err
    return pynwb


def _import_ndx():
    try:
        import ndx_neuron_embedding
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "writing NWB files needs the ndx-neuron-embedding extension: pip install ndx-neuron-embedding "
            "(or 'spikeinterface-neuronid[nwb]')"
        ) from err
    return ndx_neuron_embedding


def is_zarr_path(path) -> bool:
    """Whether ``path`` names a Zarr NWB store: an existing directory, or a name ending in ``.zarr``."""
    path = Path(path)
    return path.is_dir() or path.name.lower().endswith(".zarr")


def _zarr_io_class():
    try:
        from hdmf_zarr.nwb import NWBZarrIO
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "Zarr NWB stores (.nwb.zarr) need hdmf-zarr: pip install hdmf-zarr (or 'spikeinterface-neuronid[nwb]')"
        ) from err
    return NWBZarrIO


def _nwb_io(path, mode: str, **kwargs):
    """``NWBZarrIO`` for Zarr stores (see :func:`is_zarr_path`), else ``NWBHDF5IO``."""
    if is_zarr_path(path):
        return _zarr_io_class()(str(path), mode, **kwargs)
    return _import_pynwb().NWBHDF5IO(str(path), mode, **kwargs)


@contextlib.contextmanager
def _atomic_store(path: Path, zarr: bool) -> Iterator[Path]:
    """Like :func:`._io.atomic_path`, for an HDF5 file or a Zarr directory store.

    A Zarr store is written into a temporary directory next to ``path`` and renamed into place; an existing
    store at ``path`` is moved aside first and removed only once the new one is in place.
    """
    from ._io import atomic_path

    if not zarr:
        with atomic_path(path) as tmp:
            yield tmp
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    old = None
    try:
        yield tmp
        if path.exists():
            old = path.parent / f".{path.name}.{uuid.uuid4().hex[:8]}.old"
            os.replace(path, old)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and old.exists():
            if path.exists():
                shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink()
            else:  # the rename into place failed: put the previous store back
                os.replace(old, path)


def _few(ids, k=5) -> str:
    ids = sorted(ids)
    more = f" … ({len(ids)} in all)" if len(ids) > k else ""
    return ", ".join(repr(i) for i in ids[:k]) + more


def _units_table_ids(units, unit_id_column: str | None) -> list[str]:
    """Unit ids of the rows of ``units`` as strings, as SpikeInterface's NWB reader returns them."""
    if unit_id_column is None:
        unit_id_column = "unit_name" if "unit_name" in units.colnames else None
    if unit_id_column is None:
        values = units.id[:]
    else:
        if unit_id_column not in units.colnames:
            raise ValueError(
                f"unit_id_column={unit_id_column!r} is not a column of the Units table "
                f"(columns: {list(units.colnames)})"
            )
        values = units[unit_id_column][:]
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


def _task_names(data: dict) -> list[str]:
    return sorted(k[: -len("_probabilities")] for k in data if k.endswith("_probabilities"))


def _model_record_kwargs(params: dict, embedding_dim: int) -> dict:
    from . import __version__

    training = None
    model_url = None
    description = None
    try:
        from .inference import resolve_model

        bundle = resolve_model(params["model"])
        prov = dict(bundle.provenance or {})
        for key in ("training_data_description", "training_data", "dataset", "corpus", "data"):
            if prov.get(key):
                value = prov[key]
                training = value if isinstance(value, str) else repr(value)
                break
        if training is None and prov:
            import json

            training = "Training provenance of the model bundle: " + json.dumps(prov, sort_keys=True, default=str)
        if isinstance(prov.get("url"), str) and prov["url"]:
            model_url = prov["url"]
        description = (
            f"{bundle.method} neuron-embedding model '{bundle.name}' from spikeinterface-neuronid"
            + (f" with task head(s) {sorted(bundle.heads)}" if bundle.heads else "")
            + "."
        )
    except Exception:  # the model file may be gone: the stored params are still enough
        pass
    if training is None:
        training = "Not recorded: the model bundle carries no training-data provenance."
    if description is None:
        description = (
            f"{params.get('method')} neuron-embedding model '{params.get('model_name')}' from spikeinterface-neuronid."
        )
    method = f"spikeinterface-neuronid method '{params.get('method')}'"
    if params.get("fine_tuned_sha256"):
        method += (
            f", fine-tuned for {params.get('fine_tune_steps')} steps on this recording "
            f"(fine-tuned model sha256 {params['fine_tuned_sha256']})"
        )
    kwargs = dict(
        name=MODEL_RECORD_NAME,
        description=description,
        model_name=str(params.get("model_name") or "unnamed"),
        model_version=__version__,
        model_checksum=str(params["model_sha256"]),
        checksum_algorithm="sha256",
        method=method,
        training_data_description=training,
        embedding_dim=int(embedding_dim),
        inference_software=f"spikeinterface-neuronid {__version__}",
        inference_date=_dt.datetime.now(_dt.timezone.utc),
    )
    if model_url:
        kwargs["model_url"] = model_url
    return kwargs


def _planned_columns(data: dict) -> list[str]:
    cols = [EMBEDDING_COLUMN]
    for task in _task_names(data):
        cols += [task, f"{task}_probabilities", f"{task}_confidence"]
    return cols


def _check_and_order(nwbfile, sorting_analyzer, data: dict, unit_id_column):
    """Validate the target Units table; return the row permutation analyzer-order -> table-order."""
    units = nwbfile.units
    if units is None:
        raise ValueError("the NWB file has no Units table (nwbfile.units is None); nothing to attach embeddings to")
    existing = sorted(set(_planned_columns(data)) & set(units.colnames))
    if existing:
        raise ValueError(
            f"the Units table already has column(s) {existing}; NWB columns cannot be replaced "
            "(write to a file without them)"
        )
    if MODEL_RECORD_NAME in nwbfile.lab_meta_data:
        raise ValueError(f"the NWB file already has a lab_meta_data record named {MODEL_RECORD_NAME!r}")
    table_ids = _units_table_ids(units, unit_id_column)
    if len(set(table_ids)) != len(table_ids):
        raise ValueError("the Units table's unit ids are not unique; pass unit_id_column= with unique values")
    analyzer_ids = [str(u) for u in sorting_analyzer.unit_ids]
    missing = set(table_ids) - set(analyzer_ids)
    extra = set(analyzer_ids) - set(table_ids)
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"{len(missing)} NWB unit(s) not in the analyzer: {_few(missing)}")
        if extra:
            parts.append(f"{len(extra)} analyzer unit(s) not in the NWB file: {_few(extra)}")
        source = f"column {unit_id_column!r}" if unit_id_column else "ids"
        raise ValueError(
            f"units do not match between the analyzer and the NWB Units table ({source}): " + "; ".join(parts)
        )
    position = {u: i for i, u in enumerate(analyzer_ids)}
    return np.array([position[u] for u in table_ids], dtype=np.int64)


def _add_columns(nwbfile, params: dict, data: dict, order: np.ndarray) -> None:
    ndx = _import_ndx()
    units = nwbfile.units
    emb = np.asarray(data["embedding"], dtype=np.float32)[order]
    model = ndx.NeuronEmbeddingModel(**_model_record_kwargs(params, emb.shape[1]))
    nwbfile.add_lab_meta_data(model)
    ndx.add_neuron_embedding(
        units,
        emb,
        model,
        name=EMBEDDING_COLUMN,
        description=(
            f"Per-unit embedding ({emb.shape[1]} dims) computed by spikeinterface-neuronid with model "
            f"'{model.model_name}' (sha256 {model.model_checksum}); NaN rows for units without an embedding."
        ),
    )
    for task in _task_names(data):
        classes = [str(c) for c in np.asarray(data[f"{task}_classes"])]
        probs = np.asarray(data[f"{task}_probabilities"], dtype=np.float32)[order]
        labels = [str(x) for x in np.asarray(data[f"{task}_label"])[order]]
        conf = data.get(f"{task}_confidence")
        conf = (
            np.asarray(conf, dtype=np.float32)[order]
            if conf is not None
            else np.nanmax(np.where(np.isnan(probs), -np.inf, probs), axis=1).astype(np.float32)
        )
        if np.all(np.isfinite(probs)) and set(labels) <= set(classes):
            ndx.add_predicted_labels(units, task, labels, probs, classes, model, add_confidence=False)
        else:
            # abstentions ("unknown") and units without an embedding (NaN probabilities) are outside what the
            # helper accepts: add the same typed columns directly; the label set then includes "unknown".
            label_classes = classes + sorted(set(labels) - set(classes))
            desc = f"model '{model.model_name}' version {model.model_version}"
            units.add_column(
                name=task,
                description=f"Predicted {task} per unit from {desc}; '{UNKNOWN_LABEL}' where the head abstains.",
                data=labels,
                col_cls=ndx.PredictedLabel,
                model=model,
                class_labels=label_classes,
            )
            units.add_column(
                name=f"{task}_probabilities",
                description=f"Predicted {task} class probabilities from {desc}; column j is class_labels[j]; "
                "NaN rows for units without an embedding.",
                data=probs,
                col_cls=ndx.ClassProbabilities,
                model=model,
                class_labels=classes,
            )
        units.add_column(
            name=f"{task}_confidence",
            description=f"Maximum class probability of {task}_probabilities (confidence of the predicted {task}).",
            data=conf,
        )


def write_embeddings_to_nwb(
    sorting_analyzer,
    source_path,
    output_path=None,
    *,
    in_place: bool = False,
    unit_id_column: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Write the analyzer's ``neuron_embedding`` results into the Units table of an NWB file (HDF5 or Zarr).

    Adds a ``NeuronEmbedding`` column ``embedding`` and, per task head, ``<task>`` (``PredictedLabel``),
    ``<task>_probabilities`` (``ClassProbabilities``) and ``<task>_confidence``, all pointing to one
    ``NeuronEmbeddingModel`` record ``/general/neuron_embedding_model`` (model name and sha256, method, package
    version, training-data provenance of the model bundle when its file is available, embedding dim, inference
    date).

    Parameters
    ----------
    sorting_analyzer : SortingAnalyzer
        With a computed ``neuron_embedding`` extension.
    source_path : str | Path
        The NWB file whose Units table holds the analyzer's units.
    output_path : str | Path | None, default: None
        The new file to write (required unless ``in_place``). It gets a new ``identifier``; the source is opened
        read-only and left untouched. A name ending in ``.zarr`` (e.g. ``out.nwb.zarr``) writes a Zarr store,
        anything else an HDF5 file, whatever the source's backend (``source_path`` is read as Zarr when it is a
        directory or ends in ``.zarr``).
    in_place : bool, default: False
        Append the columns to ``source_path`` itself instead (``output_path`` must then be None or the source).
        The checks still run before anything is written, but the append is not atomic: an interrupted run can
        leave the file damaged, so work on a copy (DANDI assets are immutable anyway: prefer a new file).
    unit_id_column : str | None, default: None
        Units column holding the unit ids to match against ``sorting_analyzer.unit_ids``. None: ``unit_name``
        if the table has it (as SpikeInterface's NWB reader does), else the table's ``id``. Ids are compared
        as strings; rows are written in the NWB table's order.
    overwrite : bool, default: False
        Replace an existing ``output_path``.

    Returns
    -------
    Path
        The written file.

    Raises
    ------
    ValueError
        Missing extension, output equal to the source (without ``in_place``), output exists (without
        ``overwrite``), no Units table, a column or model record of the same name already present, or units
        that do not match. All checks run before anything is written; the output is written to a temporary
        file in its folder and renamed into place, so a failed run leaves no output file.
    """
    _import_pynwb()
    _import_ndx()  # the extension must be loaded so its spec is cached in the written file

    ext = sorting_analyzer.get_extension("neuron_embedding")
    if ext is None:
        raise ValueError(
            "the analyzer has no 'neuron_embedding' extension: run sorting_analyzer.compute('neuron_embedding') first"
        )
    params, data = dict(ext.params), ext.data
    if "embedding" not in data:
        raise ValueError("the 'neuron_embedding' extension has no data: compute it first")

    source_path = Path(source_path)
    if not source_path.exists():
        raise FileNotFoundError(f"NWB file not found: {source_path}")
    if in_place:
        if output_path is not None and Path(os.path.abspath(output_path)) != Path(os.path.abspath(source_path)):
            raise ValueError("in_place=True writes into source_path; pass output_path=None")
        with _nwb_io(source_path, "a") as io:
            nwbfile = io.read()
            order = _check_and_order(nwbfile, sorting_analyzer, data, unit_id_column)
            _add_columns(nwbfile, params, data, order)
            io.write(nwbfile)
        return source_path

    if output_path is None:
        raise ValueError("pass output_path (a new file), or in_place=True to append to source_path")
    output_path = Path(output_path)
    if output_path.resolve() == source_path.resolve() or (
        output_path.exists() and os.path.samefile(output_path, source_path)
    ):
        raise ValueError(f"output_path is the source file {source_path}; pass another path or in_place=True")
    zarr_out = _check_output_path(output_path, overwrite)

    with _nwb_io(source_path, "r") as src_io:
        nwbfile = src_io.read()
        order = _check_and_order(nwbfile, sorting_analyzer, data, unit_id_column)
        _add_columns(nwbfile, params, data, order)
        nwbfile.generate_new_id()  # new object ids ...
        nwbfile.fields["identifier"] = str(uuid.uuid4())  # ... and a new file identifier (a new file)
        nwbfile.set_modified()
        with _atomic_store(output_path, zarr_out) as tmp, warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*does not end in '.nwb'", category=UserWarning)
            warnings.filterwarnings("ignore", message="missing object_codec for object array", category=FutureWarning)
            # across backends (HDF5 <-> Zarr) the data must be copied, not linked to the source
            cross = is_zarr_path(source_path) != zarr_out
            with _nwb_io(tmp, "w") as out_io:
                out_io.export(src_io=src_io, nwbfile=nwbfile, **({"write_args": {"link_data": False}} if cross else {}))
    return output_path


def _check_output_path(output_path: Path, overwrite: bool) -> bool:
    """Check that ``output_path`` may be written; return whether it is a Zarr store (name ending in ``.zarr``)."""
    zarr_out = output_path.name.lower().endswith(".zarr")
    if zarr_out:
        _zarr_io_class()
    if output_path.exists() and not overwrite:
        raise FileExistsError(f"{output_path} exists; pass overwrite=True to replace it")
    if output_path.is_dir() and not zarr_out:
        raise IsADirectoryError(
            f"output_path {output_path} is a directory; name an .nwb file (HDF5) or an .nwb.zarr store (Zarr)"
        )
    if zarr_out and output_path.exists():
        if not output_path.is_dir() or not any((output_path / m).exists() for m in (".zgroup", "zarr.json")):
            raise ValueError(f"{output_path} exists and is not a Zarr store: not replacing it")
    return zarr_out


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
        prob = next(
            (
                c
                for c in units.columns
                if getattr(c, "neurodata_type", None) == "ClassProbabilities" and c.name == f"{col.name}_probabilities"
            ),
            None,
        )
        conf = units[f"{col.name}_confidence"] if f"{col.name}_confidence" in units.colnames else None
        tasks[col.name] = (col, prob, conf)
    return emb_col, model, tasks


def _str_list(values) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


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
        columns[f"{task}_label"] = t["labels"]
        if t["confidence"] is not None:
            columns[f"{task}_probability"] = np.asarray(t["confidence"], dtype=np.float32)
        elif t["probabilities"] is not None:
            p = np.asarray(t["probabilities"], dtype=np.float32)
            columns[f"{task}_probability"] = np.nanmax(np.where(np.isnan(p), -np.inf, p), axis=1)
    return pd.DataFrame(columns, index=pd.Index(arrays["unit_ids"], name="unit_id"))


# --------------------------------------------------------------------------------------------------------------
# A whole NWB file from an analyzer (neuroconv writes the Units table)

_SEXES = ("M", "F", "U", "O")
_DURATION = r"P(?!$)(\d+Y)?(\d+M)?(\d+W)?(\d+D)?(T(?=\d)(\d+H)?(\d+M)?(\d+(\.\d+)?S)?)?"
_AGE_RE = re.compile(rf"^(?:{_DURATION})?(?:/(?:{_DURATION})?)?$")
_SPECIES_RE = re.compile(r"^([A-Z][a-z]+ [a-z]+.*|https?://\S*NCBITaxon\S*)$")

_METADATA_EXAMPLE = """metadata = {
    "NWBFile": {"session_description": "...", "session_start_time": "2024-01-01T12:00:00+00:00",
                "identifier": "<optional, a new UUID by default>"},
    "Subject": {"subject_id": "m1", "species": "Mus musculus", "sex": "F", "age": "P60D"},
}"""


def _as_datetime(value, field: str, problems: list[str]):
    if isinstance(value, str):
        try:
            value = _dt.datetime.fromisoformat(value)
        except ValueError:
            problems.append(f"{field}={value!r} is not an ISO 8601 date-time (e.g. '2024-01-01T12:00:00+00:00')")
            return None
    if isinstance(value, _dt.date) and not isinstance(value, _dt.datetime):
        value = _dt.datetime(value.year, value.month, value.day)
    if not isinstance(value, _dt.datetime):
        problems.append(f"{field} must be a datetime or an ISO 8601 string, got {type(value).__name__}")
        return None
    if value.tzinfo is None:
        problems.append(
            f"{field}={value.isoformat()!r} has no time zone; give one, e.g. "
            "datetime(2024, 1, 1, 12, tzinfo=timezone.utc) or '2024-01-01T12:00:00+00:00'"
        )
        return None
    return value


def _check_metadata(metadata: dict | None, require_subject: bool) -> dict:
    """Validate neuroconv-style metadata; return a normalised deep copy. Lists every problem in one error."""
    import copy

    metadata = copy.deepcopy(dict(metadata or {}))
    unknown = sorted(set(metadata) - {"NWBFile", "Subject"})
    if unknown:
        raise ValueError(
            f"metadata has unknown section(s) {unknown}; write_analyzer_to_nwb uses only 'NWBFile' and 'Subject':\n"
            + _METADATA_EXAMPLE
        )
    nwb = dict(metadata.get("NWBFile") or {})
    problems: list[str] = []
    if not str(nwb.get("session_description") or "").strip():
        problems.append("NWBFile.session_description is missing (a sentence describing the session)")
    if nwb.get("session_start_time") is None:
        problems.append("NWBFile.session_start_time is missing (a time-zone-aware datetime or ISO 8601 string)")
    else:
        nwb["session_start_time"] = _as_datetime(nwb["session_start_time"], "NWBFile.session_start_time", problems)
    nwb.setdefault("identifier", str(uuid.uuid4()))
    if "/" in str(nwb.get("session_id") or ""):
        problems.append(f"NWBFile.session_id={nwb['session_id']!r} must not contain '/' (DANDI)")
    subject = metadata.get("Subject")
    if subject is None and require_subject:
        problems.append("Subject is missing (DANDI needs subject_id, species, sex and age or date_of_birth)")
    if subject is not None:
        subject = dict(subject)
        sid = str(subject.get("subject_id") or "")
        if not sid.strip():
            problems.append("Subject.subject_id is missing")
        elif "/" in sid:
            problems.append(f"Subject.subject_id={sid!r} must not contain '/' (DANDI)")
        species = subject.get("species")
        if not species and require_subject:
            problems.append("Subject.species is missing (a Latin binomial such as 'Mus musculus', or an NCBITaxon URL)")
        elif species and not _SPECIES_RE.match(str(species)):
            problems.append(
                f"Subject.species={species!r} is not a Latin binomial ('Mus musculus') nor an NCBITaxon URL (DANDI)"
            )
        sex = subject.get("sex")
        if sex is None and require_subject:
            problems.append(f"Subject.sex is missing (one of {', '.join(_SEXES)}; U = unknown)")
        elif sex is not None and sex not in _SEXES:
            problems.append(f"Subject.sex={sex!r} must be one of {', '.join(_SEXES)} (U = unknown, O = other; DANDI)")
        age, dob = subject.get("age"), subject.get("date_of_birth")
        if dob is not None:
            subject["date_of_birth"] = _as_datetime(dob, "Subject.date_of_birth", problems)
        if age is None and dob is None and require_subject:
            problems.append("Subject.age is missing (an ISO 8601 duration such as 'P60D', or give date_of_birth)")
        elif age is not None and not _AGE_RE.match(str(age)):
            problems.append(f"Subject.age={age!r} is not an ISO 8601 duration such as 'P60D' or a range 'P60D/P90D'")
        subject.setdefault("description", f"Subject {sid}.")
        metadata["Subject"] = subject
    if problems:
        raise ValueError(
            "the NWB metadata is incomplete:\n  - "
            + "\n  - ".join(problems)
            + "\nPass metadata like\n"
            + _METADATA_EXAMPLE
            + ("\nor require_subject=False to write a file without a DANDI-ready subject." if require_subject else "")
        )
    metadata["NWBFile"] = nwb
    return metadata


def _property_descriptions(sorting, given: dict | None) -> dict:
    out = {}
    for key in sorting.get_property_keys():
        if key.endswith("_label"):
            out[key] = f"Predicted {key[:-6]} per unit (spikeinterface-neuronid neuronid_label_units)."
        elif key.endswith("_probability"):
            out[key] = f"Largest calibrated class probability of {key[:-12]}_label (spikeinterface-neuronid)."
        else:
            out[key] = f"Unit property '{key}' of the SpikeInterface sorting."
    out.update(given or {})
    return out


def _recorded_duration(source) -> float | None:
    """Duration in s of the (single) segment of an analyzer, or of a sorting with a registered recording."""
    try:
        if hasattr(source, "get_num_samples") and hasattr(source, "sorting"):
            return float(source.get_num_samples(0) / source.sampling_frequency)
        if source.has_recording():
            rec = source._recording
            return float(rec.get_num_samples(0) / rec.get_sampling_frequency())
    except Exception:  # no duration known: the file simply has no obs_intervals
        return None
    return None


def write_analyzer_to_nwb(
    sorting_analyzer,
    path,
    metadata: dict | None = None,
    *,
    embeddings: bool | None = None,
    overwrite: bool = False,
    require_subject: bool = True,
    skip_properties: list[str] | None = None,
    property_descriptions: dict[str, str] | None = None,
    units_description: str | None = None,
) -> Path:
    """Write a new NWB file from a SortingAnalyzer (or a sorting): session, subject, units and our columns.

    The Units table is written by neuroconv's SpikeInterface writer
    (``neuroconv.tools.spikeinterface.add_sorting_to_nwbfile``): spike times in seconds, ``unit_name`` (the
    unit ids as strings, which :func:`write_embeddings_to_nwb` and SpikeInterface's NWB reader match on),
    ``resolution`` = 1 / sampling frequency, one column per sorting property, and (for an analyzer) the recorded
    segment as every unit's ``obs_intervals``. With the
    ``neuron_embedding`` extension, the columns of :func:`write_embeddings_to_nwb` and the
    ``NeuronEmbeddingModel`` record are added too. Recording, electrodes and waveforms are not written.

    Parameters
    ----------
    sorting_analyzer : SortingAnalyzer | BaseSorting
        The analyzer (or only a sorting, then ``embeddings`` must not be True). One segment.
    path : str | Path
        The file to write: ``*.nwb`` (HDF5) or ``*.nwb.zarr`` (a Zarr directory store).
    metadata : dict | None, default: None
        neuroconv-style metadata, ``{"NWBFile": {...}, "Subject": {...}}``. Required: ``NWBFile.session_description``
        and a time-zone-aware ``NWBFile.session_start_time`` (datetime or ISO 8601 string); with
        ``require_subject`` also ``Subject.subject_id``, ``species`` (Latin binomial), ``sex`` (M/F/U/O) and
        ``age`` (ISO 8601 duration, e.g. ``"P60D"``) or ``date_of_birth``, as DANDI requires. Other keyword
        arguments of ``pynwb.NWBFile`` / ``pynwb.file.Subject`` are passed on (``session_id``, ``experimenter``,
        ``institution``, ``lab``, ``keywords``, Subject ``description``, ...). ``identifier`` defaults to a new
        UUID.
    embeddings : bool | None, default: None
        Write the ``neuron_embedding`` results (needs ``ndx-neuron-embedding``). None: when the extension has
        been computed.
    overwrite : bool, default: False
        Replace an existing ``path``.
    require_subject : bool, default: True
        Require the Subject fields DANDI needs (above). False allows a file without a Subject.
    skip_properties : list of str | None, default: None
        Sorting properties not to write as Units columns.
    property_descriptions : dict | None, default: None
        Descriptions of the sorting properties' columns (a generic one otherwise).
    units_description : str | None, default: None
        Description of the Units table.

    Returns
    -------
    Path
        The written file (written to a temporary path next to it and renamed into place).

    Raises
    ------
    ValueError
        Incomplete or malformed metadata (every problem is listed), no units, several segments, or a sorting
        property named like one of the embedding columns (skip or rename it). All checks run before anything is
        written.
    FileExistsError
        ``path`` exists and ``overwrite`` is False.
    """
    _import_pynwb()
    try:
        from neuroconv.tools.nwb_helpers import make_nwbfile_from_metadata
        from neuroconv.tools.spikeinterface import add_sorting_to_nwbfile
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "write_analyzer_to_nwb needs neuroconv: pip install neuroconv (or 'spikeinterface-neuronid[nwb]')"
        ) from err

    is_analyzer = hasattr(sorting_analyzer, "get_extension") and hasattr(sorting_analyzer, "sorting")
    sorting = sorting_analyzer.sorting if is_analyzer else sorting_analyzer
    ext = sorting_analyzer.get_extension("neuron_embedding") if is_analyzer else None
    if embeddings is None:
        embeddings = ext is not None
    if embeddings:
        if ext is None or "embedding" not in ext.data:
            raise ValueError(
                "embeddings=True but there is no computed 'neuron_embedding' extension: run "
                "sorting_analyzer.compute('neuron_embedding') first, or pass embeddings=False"
            )
        _import_ndx()
    metadata = _check_metadata(metadata, require_subject)
    if sorting.get_num_units() == 0:
        raise ValueError("the sorting has no units: there is nothing to write to a Units table")
    if sorting.get_num_segments() != 1:
        raise ValueError(
            f"the sorting has {sorting.get_num_segments()} segments; NWB spike times are on one session clock: "
            "write one file per segment (sorting.select_segments([i]))"
        )
    skip = list(skip_properties or [])
    if embeddings:
        clash = sorted((set(_planned_columns(ext.data)) & set(sorting.get_property_keys())) - set(skip))
        if clash:
            raise ValueError(
                f"sorting propert(y/ies) {clash} would clash with the embedding columns of the same name(s); "
                f"pass skip_properties={clash} or rename them (sorting.set_property(new_name, values))"
            )
    path = Path(path)
    zarr_out = _check_output_path(path, overwrite)

    nwbfile = make_nwbfile_from_metadata(metadata)
    add_sorting_to_nwbfile(
        sorting,
        nwbfile=nwbfile,
        property_descriptions=_property_descriptions(sorting, property_descriptions),
        skip_properties=skip,
        units_description=units_description
        or f"Units of a SpikeInterface sorting ({sorting.get_num_units()} units), written by spikeinterface-neuronid "
        "with neuroconv.",
    )
    duration = _recorded_duration(sorting_analyzer if is_analyzer else sorting)
    if duration is not None and "obs_intervals" not in nwbfile.units.colnames:
        # the session length, which spike times alone do not give (a reader such as `neuronid annotate` then
        # tiles the same time windows as the analyzer did)
        n = len(nwbfile.units.id)
        with warnings.catch_warnings():  # hdmf warns that an explicit index differs from the spec's index=True
            warnings.filterwarnings("ignore", message=".*obs_intervals.*predefined", category=UserWarning)
            nwbfile.units.add_column(
                name="obs_intervals",
                description="Observation interval of each unit: the whole recorded segment, from 0 to its duration "
                "in s.",
                data=np.tile(np.array([[0.0, duration]]), (n, 1)),
                index=list(range(1, n + 1)),  # one interval per unit
            )
    if embeddings:
        order = _check_and_order(nwbfile, sorting_analyzer, ext.data, "unit_name")
        _add_columns(nwbfile, dict(ext.params), ext.data, order)
    with _atomic_store(path, zarr_out) as tmp, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not end in '.nwb'", category=UserWarning)
        warnings.filterwarnings("ignore", message="missing object_codec for object array", category=FutureWarning)
        with _nwb_io(tmp, "w") as io:
            io.write(nwbfile)
    return path
