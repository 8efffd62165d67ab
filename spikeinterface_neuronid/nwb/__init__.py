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

:func:`read_nwb_covariates` turns a file's behavioural time series (``processing["behavior"]``) and trials table
into covariates on a regular time grid, the surrounding information of models trained with covariates (NeurPIR with
``num_covariates > 0``).

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

__all__ = [
    "write_embeddings_to_nwb",
    "write_analyzer_to_nwb",
    "read_embeddings_from_nwb",
    "read_embedding_arrays",
    "read_nwb_covariates",
    "NWBCovariates",
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


#: Names of the temporaries of :func:`_atomic_store` (and :func:`._io.atomic_path`) next to an output ``NAME``:
#: ``.NAME.XXXXXXXX.tmp`` (``tempfile``'s 8 random characters) and ``.NAME.XXXXXXXX.old`` (a Zarr store moved
#: aside while its replacement is renamed into place).
_TEMP_SUFFIX_RE = r"\.[a-z0-9_]{8}\.(tmp|old)"


def _stale_temporaries(path: Path) -> list[Path]:
    """Temporaries of our own naming pattern for the output ``path`` (see ``_TEMP_SUFFIX_RE``), sorted."""
    path = Path(path)
    pattern = re.compile(re.escape(f".{path.name}") + _TEMP_SUFFIX_RE + "$")
    try:
        entries = list(path.parent.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(p for p in entries if pattern.match(p.name))


def _recover_interrupted_writes(path: Path) -> list[str]:
    """Clean up after a write to ``path`` that was killed (SIGKILL, power loss) before it could do so itself.

    A ``.tmp`` temporary is removed. A ``.old`` Zarr store (moved aside for its replacement) is removed when
    ``path`` exists, and moved back to ``path`` when it does not (the previous output, not yet replaced).
    Only entries of our own naming pattern for this output are touched.

    Returns
    -------
    list of str
        What was done, one sentence each (also emitted as warnings).
    """
    notes = []
    for stale in _stale_temporaries(path):
        if stale.name.endswith(".old") and not os.path.lexists(path):
            os.replace(stale, path)
            notes.append(f"restored {path} from {stale.name}, left by an interrupted run")
            continue
        if stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale)
        else:
            stale.unlink()
        notes.append(f"removed {stale}, a temporary left by an interrupted run")
    for note in notes:
        warnings.warn(note, UserWarning, stacklevel=3)
    return notes


@contextlib.contextmanager
def _atomic_store(path: Path, zarr: bool) -> Iterator[Path]:
    """Like :func:`._io.atomic_path`, for an HDF5 file or a Zarr directory store.

    A Zarr store is written into a temporary directory next to ``path`` and renamed into place; an existing
    store at ``path`` is moved aside first and removed only once the new one is in place. Temporaries that an
    earlier, killed write of the same ``path`` left behind are cleaned up first
    (:func:`_recover_interrupted_writes`).
    """
    from .._io import atomic_path

    _recover_interrupted_writes(path)
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
    from .. import __version__

    training = None
    model_url = None
    description = None
    try:
        from ..inference import resolve_model

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
    cov = params.get("covariates")
    if isinstance(cov, dict):
        method += (
            f", with {cov.get('num_covariates')} covariate channel(s) at {params.get('covariate_rate_hz')} Hz "
            f"from {cov.get('source')} (sha256 {cov.get('sha256')})"
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

    Warns
    -----
    UserWarning
        When temporaries that a killed earlier write of ``output_path`` left next to it are removed, and when
        the copy is made by the fallback below.

    Notes
    -----
    The copy is written by hdmf's export, in the schema version of the installed pynwb. Files of older pynwb
    versions and other writers are accepted as they were read: a predefined ragged column stored without
    its index (a Units ``electrodes`` column of one electrode per unit without ``electrodes_index``, as MatNWB
    writes it) is written back in that layout. When hdmf cannot export an HDF5 file all the same, the copy is
    the source's bytes with the columns, the model record and the extension's spec appended (with h5py, from
    a scratch file that pynwb writes), a new identifier and new object ids; the rest of the file, its schema
    version included, is unchanged. Zarr sources and outputs have no such fallback.
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

    export_error = None
    with _nwb_io(source_path, "r") as src_io:
        nwbfile = src_io.read()
        order = _check_and_order(nwbfile, sorting_analyzer, data, unit_id_column)
        _tolerate_legacy_layouts(src_io, nwbfile)
        _add_columns(nwbfile, params, data, order)
        nwbfile.generate_new_id()  # new object ids ...
        nwbfile.fields["identifier"] = str(uuid.uuid4())  # ... and a new file identifier (a new file)
        nwbfile.set_modified()
        try:
            with _atomic_store(output_path, zarr_out) as tmp, warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*does not end in '.nwb'", category=UserWarning)
                warnings.filterwarnings(
                    "ignore", message="missing object_codec for object array", category=FutureWarning
                )
                # across backends (HDF5 <-> Zarr) the data must be copied, not linked to the source
                cross = is_zarr_path(source_path) != zarr_out
                with _nwb_io(tmp, "w") as out_io:
                    out_io.export(
                        src_io=src_io, nwbfile=nwbfile, **({"write_args": {"link_data": False}} if cross else {})
                    )
        except OSError:  # disk full, permissions, ...: a copy would fail the same way
            raise
        except Exception as err:  # hdmf cannot rebuild something of this file
            if zarr_out or is_zarr_path(source_path):
                raise
            export_error = err
    if export_error is not None:
        lines = str(export_error).splitlines() or [""]
        reason = f"{type(export_error).__name__}: {lines[0][:300]}"
        _write_copy_with_columns(source_path, output_path, params, data, order)
        warnings.warn(
            f"hdmf could not re-write {source_path} ({reason}); {output_path} is instead a byte copy of it with "
            "the annotation columns and model record appended (the rest of the file, schema version included, is "
            "unchanged)",
            UserWarning,
            stacklevel=2,
        )
    return output_path


def _tolerate_legacy_layouts(io, nwbfile) -> None:
    """Let the installed hdmf write back what ``io`` read from a file of an older pynwb or of another writer.

    * A predefined ragged column stored without its index (e.g. a Units ``electrodes`` column of one electrode
      per unit and no ``electrodes_index``, as MatNWB and several converters write it; the schema allows both)
      leaves the table without the ``<column>_index`` attribute that hdmf's mapper reads: it is set to None.
    * pynwb's mapper of the Units ``electrodes`` column expects the ragged layout; for a plain column, the
      mapper of this ``io`` only (every IO has its own copy of the type map) gets one that accepts both.

    The columns keep their layout in what is written.
    """
    from hdmf.common import DynamicTable, VectorIndex

    for obj in list(nwbfile.objects.values()):
        if not isinstance(obj, DynamicTable):
            continue
        for spec in getattr(obj, "__columns__", ()):
            depth = spec.get("index", False)
            depth = 1 if depth is True else int(depth or 0)
            name = spec["name"]
            for _ in range(depth):
                name += "_index"
                if not hasattr(obj, name):
                    setattr(obj, name, None)
    units = nwbfile.units
    if units is None or "electrodes" not in units.colnames or isinstance(units.get("electrodes"), VectorIndex):
        return
    mapper = io.manager.type_map.get_map(units)
    overrides = getattr(type(mapper), "obj_attrs", None)
    if not isinstance(overrides, dict) or "electrodes" not in overrides:
        return

    def electrodes_column(_mapper, container, manager):  # as pynwb's UnitsMap, for both layouts
        column = container.get("electrodes")
        region = column.target if isinstance(column, VectorIndex) else column
        if region.table is None:
            region.table = container.get_ancestor("NWBFile").electrodes
        return column

    mapper.obj_attrs = {**overrides, "electrodes": electrodes_column}


def _write_copy_with_columns(source_path: Path, output_path: Path, params: dict, data: dict, order) -> None:
    """The fallback of :func:`write_embeddings_to_nwb` for an HDF5 file that hdmf cannot export.

    The source's bytes are copied to a temporary file next to ``output_path``; the columns and the model record
    are written by pynwb into a scratch file (so that they follow the extension's spec exactly) and copied into
    the temporary one with h5py, with the ``model`` references re-pointed, the Units ``colnames`` extended and
    the extension's spec cached; the identifier and object ids are renewed; then it is renamed into place.
    Nothing else of the file changes (its schema version included), and the source is only read.
    """
    import h5py

    pynwb = _import_pynwb()
    num_rows = len(order)
    with _atomic_store(output_path, False) as tmp:
        fd, scratch_name = tempfile.mkstemp(dir=output_path.parent, prefix=f".{output_path.name}.", suffix=".tmp")
        os.close(fd)
        scratch = Path(scratch_name)
        try:
            scratch_file = pynwb.NWBFile(
                session_description="scratch",
                identifier=str(uuid.uuid4()),
                session_start_time=_dt.datetime.now(_dt.timezone.utc),
            )
            scratch_file.units = pynwb.misc.Units(name="units", description="scratch", id=list(range(num_rows)))
            _add_columns(scratch_file, params, data, order)  # rows in the source table's order
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*does not end in '.nwb'", category=UserWarning)
                with pynwb.NWBHDF5IO(str(scratch), "w") as io:
                    io.write(scratch_file)
            shutil.copyfile(source_path, tmp)
            with h5py.File(scratch, "r") as src, h5py.File(tmp, "r+") as dst:
                _renew_ids(dst)
                columns = _str_list(src["units"].attrs["colnames"])
                model = dst["general"].create_group(MODEL_RECORD_NAME)
                for key, value in src["general"][MODEL_RECORD_NAME].attrs.items():
                    model.attrs[key] = value
                units = dst["units"]
                for name in columns:
                    _copy_column(src["units"][name], units, name, model.ref)
                units.attrs["colnames"] = np.array(
                    _str_list(units.attrs["colnames"]) + columns, dtype=h5py.string_dtype()
                )
                _cache_namespace(src, dst, NAMESPACE)
        finally:
            scratch.unlink(missing_ok=True)


def _renew_ids(f) -> None:
    """A new ``identifier`` and new object ids (the copy is a new file), in an h5py file open for writing."""
    import h5py

    if "identifier" in f:
        attrs = dict(f["identifier"].attrs)
        del f["identifier"]
        ds = f.create_dataset("identifier", data=str(uuid.uuid4()), dtype=h5py.string_dtype())
        for key, value in attrs.items():
            ds.attrs[key] = value
    objects = [f]
    f.visititems(lambda _name, obj: objects.append(obj))
    for obj in objects:
        if "object_id" in obj.attrs:
            obj.attrs["object_id"] = str(uuid.uuid4())


def _copy_column(src, units, name: str, model_ref) -> None:
    """Copy ``src`` (one of our columns, in the scratch file) into ``units``; its ``model`` -> ``model_ref``."""
    values = src[()]
    ds = units.create_dataset(name, data=values, dtype=src.dtype)
    for key, value in src.attrs.items():
        ds.attrs[key] = model_ref if key == "model" else value


def _cache_namespace(src, dst, namespace: str) -> None:
    """Copy the cached spec of ``namespace`` from ``src`` into ``dst`` (h5py files), creating ``/specifications``."""
    import h5py

    if "specifications" not in dst:
        dst.create_group("specifications")
        dst.attrs.create(".specloc", dst["specifications"].ref, dtype=h5py.ref_dtype)
    if namespace in dst["specifications"]:
        return
    src.copy(src["specifications"][namespace], dst["specifications"], name=namespace)


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


# --------------------------------------------------------------------------------------------------------------
# Covariates (surrounding information) from an NWB file's behaviour and trials

#: Name of the trials-indicator covariate channel (1 inside a trial, 0 outside).
TRIALS_SOURCE = "trials"
#: Name of padding channels (zeros) when a file offers fewer covariates than the model takes.
PADDING_CHANNEL = "zeros"


@dataclass
class NWBCovariates:
    """Covariates read from an NWB file, on a regular time grid (see :func:`read_nwb_covariates`).

    Attributes
    ----------
    values : np.ndarray
        float32, ``(n_samples, k)``; sample ``i`` covers ``[t_start + i / rate_hz, t_start + (i + 1) / rate_hz)``
        in the file's time base. Pass it with ``rate_hz`` as ``compute("neuron_embedding", covariates=values,
        covariate_rate_hz=rate_hz)``.
    rate_hz : float
        Sampling rate of the grid.
    t_start : float
        Time (s, NWB session time) of the grid's first sample; the segment start of the analyzer.
    channels : list of str
        Name of each column: ``behavior/<interface>/<series>[j]`` (column ``j`` of a TimeSeries), ``trials``
        (the trials indicator), or ``zeros`` (padding).
    available : list of str
        Every source the file offers, in the order they are chosen (series paths and ``trials``).
    notes : list of str
        What was chosen, dropped or padded (also emitted as warnings).
    """

    values: np.ndarray
    rate_hz: float
    t_start: float
    channels: list[str]
    available: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def num_covariates(self) -> int:
        """Number of channels ``k``."""
        return int(self.values.shape[1])

    @property
    def is_padding_only(self) -> bool:
        """True when no channel comes from the file (all are zeros padding)."""
        return all(c == PADDING_CHANNEL for c in self.channels)


def _behavior_series(nwbfile) -> dict:
    """``{"behavior/<iface>[/<series>]": TimeSeries}`` of the behaviour processing module, sorted by path."""
    from pynwb import TimeSeries
    from pynwb.misc import IntervalSeries

    module = None
    for name, mod in nwbfile.processing.items():
        if name.lower() in ("behavior", "behaviour"):
            module = mod
            break
    found = {}
    if module is None:
        return found
    for iname in sorted(module.data_interfaces):
        iface = module.data_interfaces[iname]
        if isinstance(iface, TimeSeries):
            found[f"behavior/{iname}"] = iface
            continue
        for child in sorted(getattr(iface, "children", []) or [], key=lambda c: c.name):
            if isinstance(child, TimeSeries):
                found[f"behavior/{iname}/{child.name}"] = child
    return {k: v for k, v in found.items() if not isinstance(v, IntervalSeries)}  # on/off events, not a signal


def _series_samples(ts) -> tuple[np.ndarray, np.ndarray] | None:
    """``(times, values (n, c))`` of a TimeSeries in seconds and data units, or None when not a numeric 1-D/2-D."""
    values = np.asarray(ts.data[:])
    if values.ndim not in (1, 2) or values.shape[0] == 0 or not np.issubdtype(values.dtype, np.number):
        return None
    values = values.reshape(values.shape[0], -1).astype(np.float64)
    conversion = getattr(ts, "conversion", 1.0)
    offset = getattr(ts, "offset", 0.0)
    values = values * (1.0 if conversion is None else float(conversion)) + (0.0 if offset is None else float(offset))
    if ts.timestamps is not None:
        times = np.asarray(ts.timestamps[:], dtype=np.float64)
    else:
        times = float(ts.starting_time or 0.0) + np.arange(values.shape[0]) / float(ts.rate)
    if times.shape[0] != values.shape[0]:
        n = min(times.shape[0], values.shape[0])
        times, values = times[:n], values[:n]
    order = np.argsort(times, kind="stable")
    return times[order], values[order]


def _resample(times: np.ndarray, values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Mean of the (finite) samples in each ``[edges[i], edges[i + 1])``; linear interpolation for empty bins.

    Bins before the first or after the last finite sample hold the nearest value (``np.interp``).
    """
    n_bins = edges.shape[0] - 1
    out = np.zeros((n_bins, values.shape[1]), dtype=np.float64)
    idx = np.searchsorted(times, edges - 1e-9, side="left")  # a sample on an edge (up to rounding) starts a bin
    centres = (edges[:-1] + edges[1:]) / 2
    for c in range(values.shape[1]):
        col = values[:, c]
        finite = np.isfinite(col)
        if not finite.any():
            continue  # left at zero
        csum = np.concatenate([[0.0], np.cumsum(np.where(finite, col, 0.0))])
        ccount = np.concatenate([[0], np.cumsum(finite)])
        counts = ccount[idx[1:]] - ccount[idx[:-1]]
        full = counts > 0
        out[full, c] = (csum[idx[1:]][full] - csum[idx[:-1]][full]) / counts[full]
        if not np.all(full):
            out[~full, c] = np.interp(centres[~full], times[finite], col[finite])
    return out


def _trials_indicator(nwbfile, edges: np.ndarray) -> np.ndarray | None:
    """Fraction of each bin covered by a trial (1 inside, 0 outside), or None without a usable trials table."""
    trials = getattr(nwbfile, "trials", None)
    if trials is None or len(trials.id) == 0 or not {"start_time", "stop_time"} <= set(trials.colnames):
        return None
    start = np.asarray(trials["start_time"].data[:], dtype=np.float64)
    stop = np.asarray(trials["stop_time"].data[:], dtype=np.float64)
    ok = np.isfinite(start) & np.isfinite(stop) & (stop > start)
    lo, hi = edges[:-1], edges[1:]
    covered = np.zeros(lo.shape[0], dtype=np.float64)
    for a, b in zip(start[ok], stop[ok]):
        first, last = np.searchsorted(hi, a, side="right"), np.searchsorted(lo, b, side="left")
        if last > first:
            sl = slice(first, last)
            covered[sl] += np.clip(np.minimum(hi[sl], b) - np.maximum(lo[sl], a), 0.0, None)
    return np.clip(covered / (hi - lo), 0.0, 1.0)


def read_nwb_covariates(
    nwb,
    num_covariates: int | None,
    *,
    duration: float,
    t_start: float = 0.0,
    rate_hz: float = 50.0,
    sources: Sequence[str] | None = None,
    standardize: bool = True,
) -> NWBCovariates:
    """Covariates (surrounding information) of an NWB file on a regular grid, for a model trained with them.

    Candidate channels, in this order:

    1. every numeric 1-D or 2-D ``TimeSeries`` (``SpatialSeries`` included) of the processing module
       ``"behavior"``, directly in it or inside a container such as ``Position`` or ``BehavioralTimeSeries``,
       sorted by path ``behavior/<interface>[/<series>]``; a 2-D series gives one channel per column;
    2. ``trials``: a stimulus/task indicator from the trials table's ``start_time`` / ``stop_time`` (the
       fraction of each grid sample inside a trial: 1 during trials, 0 between them).

    Each channel is resampled onto the grid (the mean of the series' samples within each grid sample; linear
    interpolation where a grid sample holds none; the first / last value before / after the series). The grid
    spans ``[t_start, t_start + duration)`` at ``rate_hz``.

    Parameters
    ----------
    nwb : str | Path | pynwb.NWBFile
        An NWB file (HDF5 or Zarr; opened read-only) or an already read ``NWBFile``.
    num_covariates : int | None
        The number of channels the model takes (``bundle.config.num_covariates``). When the file offers more,
        the first ones (in the order above, or of ``sources``) are kept; when it offers fewer, zero channels are
        appended. Both cases warn. None: every available channel, no padding.
    duration : float
        Length of the grid in seconds (the analyzer's segment duration).
    t_start : float, default: 0.0
        NWB session time (s) of the grid's first sample: the time that is 0 for the analyzer's spike trains.
    rate_hz : float, default: 50.0
        Grid rate; 50 Hz is one sample per 20 ms bin of the shipped models.
    sources : sequence of str | None, default: None
        Sources to use, in this order, by path as listed in :attr:`NWBCovariates.available` (e.g.
        ``["behavior/Position/position", "trials"]``). None: all, in the order above.
    standardize : bool, default: True
        Z-score each channel over the grid (a constant channel becomes 0). Behavioural signals come in
        arbitrary units (cm, degrees, pixels); the trials indicator is standardised too.

    Returns
    -------
    NWBCovariates
        ``values`` (float32, ``(ceil(duration * rate_hz), k)``), ``rate_hz``, ``t_start``, channel names,
        the available sources and notes.

    Raises
    ------
    ValueError
        A bad ``duration``, ``rate_hz`` or ``num_covariates``, or a name in ``sources`` that the file does not
        offer (the error lists the available ones).

    Warns
    -----
    UserWarning
        When channels are dropped or zero channels padded (including a file with no behaviour and no trials).
    """
    if not (np.isfinite(duration) and duration > 0):
        raise ValueError(f"duration must be a positive number of seconds, got {duration!r}")
    if not (np.isfinite(rate_hz) and rate_hz > 0):
        raise ValueError(f"rate_hz must be a positive number of Hz, got {rate_hz!r}")
    if num_covariates is not None and (isinstance(num_covariates, bool) or int(num_covariates) < 1):
        raise ValueError(f"num_covariates must be a positive integer or None, got {num_covariates!r}")
    kwargs = dict(duration=duration, t_start=t_start, rate_hz=rate_hz, sources=sources, standardize=standardize)
    if isinstance(nwb, (str, os.PathLike)):
        _import_pynwb()
        with _nwb_io(nwb, "r", load_namespaces=True) as io:
            out = _nwbfile_covariates(io.read(), num_covariates, **kwargs)
        out.notes = [f"{nwb}: {note}" for note in out.notes]
    else:
        out = _nwbfile_covariates(nwb, num_covariates, **kwargs)
    for note in out.notes:
        warnings.warn(note, UserWarning, stacklevel=2)
    return out


def _nwbfile_covariates(nwb, num_covariates, *, duration, t_start, rate_hz, sources, standardize) -> NWBCovariates:
    n = int(np.ceil(duration * rate_hz - 1e-6))
    edges = t_start + np.arange(n + 1, dtype=np.float64) / rate_hz
    series = _behavior_series(nwb)
    trials = _trials_indicator(nwb, edges)
    available = list(series) + ([TRIALS_SOURCE] if trials is not None else [])
    if sources is None:
        chosen = available
    else:
        sources = [sources] if isinstance(sources, str) else list(sources)
        unknown = [s for s in sources if s not in available]
        if unknown:
            raise ValueError(
                f"covariate source(s) {unknown} not in the NWB file; available: {available or 'none'} "
                "(numeric TimeSeries of processing['behavior'] and 'trials')"
            )
        chosen = sources
    columns, names, notes = [], [], []
    for name in chosen:
        if name == TRIALS_SOURCE:
            columns.append(trials[:, None])
            names.append(TRIALS_SOURCE)
            continue
        samples = _series_samples(series[name])
        if samples is None:
            notes.append(f"skipped {name}: not a numeric 1-D or 2-D time series")
            continue
        times, values = samples
        columns.append(_resample(times, values, edges))
        names.extend([f"{name}[{j}]" for j in range(values.shape[1])])
    values = np.concatenate(columns, axis=1) if columns else np.zeros((n, 0))
    if num_covariates is not None:
        k = int(num_covariates)
        if values.shape[1] > k:
            notes.append(
                f"the file offers {values.shape[1]} covariate channels ({', '.join(names)}) but the model takes {k}: "
                f"using {', '.join(names[:k])} and dropping the rest (choose with sources=)"
            )
            values, names = values[:, :k], names[:k]
        elif values.shape[1] < k:
            what = (
                f"only {values.shape[1]} covariate channel(s) ({', '.join(names)})"
                if names
                else "no behavioural time series (processing['behavior']) and no trials table"
            )
            notes.append(
                f"the file offers {what} but the model was trained with {k} covariates: "
                f"{k - values.shape[1]} channel(s) of zeros are appended"
            )
            values = np.concatenate([values, np.zeros((n, k - values.shape[1]))], axis=1)
            names = names + [PADDING_CHANNEL] * (k - len(names))
    if standardize and values.shape[1]:
        real = np.array([c != PADDING_CHANNEL for c in names])
        mean, std = values.mean(axis=0), values.std(axis=0)
        scale = np.where(std > 0, std, 1.0)
        values = np.where(real, (values - mean) / scale, values)
        values[:, real & (std == 0)] = 0.0
    return NWBCovariates(
        values=values.astype(np.float32),
        rate_hz=float(rate_hz),
        t_start=float(t_start),
        channels=names,
        available=available,
        notes=notes,
    )
