"""Write the ``neuron_embedding`` extension into the Units table of an existing NWB file.

The results are stored with the ``ndx-neuron-embedding`` NWB extension (see ``ndx-neuron-embedding/README.md``):

- ``embedding``: a ``NeuronEmbedding`` column (float32, units x dim);
- per task ``<task>``: ``<task>`` (``PredictedLabel``), ``<task>_probabilities`` (``ClassProbabilities``) and
  ``<task>_confidence`` (plain float32 column, the largest calibrated probability);
- one ``NeuronEmbeddingModel`` record in ``/general/neuron_embedding_model`` that every column points to.

:func:`~spikeinterface_neuronid.nwb.write_embeddings_to_nwb` writes an annotated copy (by hdmf's export, or,
for an HDF5 file that hdmf cannot re-write, as the source's bytes with the columns appended) or appends in
place. Writing needs ``pynwb`` and ``ndx-neuron-embedding`` (plus ``hdmf-zarr`` for Zarr).
"""

from __future__ import annotations

import datetime as _dt
import os
import shutil
import tempfile
import uuid
import warnings
from pathlib import Path

import numpy as np

from .io import (
    _atomic_store,
    _check_output_path,
    _import_ndx,
    _import_pynwb,
    _nwb_io,
    _str_list,
    _units_table_ids,
    is_zarr_path,
)
from ..labeling import extension_model, predict_tasks
from ..schema import (
    EMBEDDING_KEY,
    EXTENSION_NAME,
    PROVENANCE_KEY,
    UNKNOWN,
    confidence_column,
    label_column,
    probabilities_column,
)
from .metadata import EMBEDDING_COLUMN, MODEL_RECORD_NAME, NAMESPACE, _model_record_kwargs

__all__ = ["write_embeddings_to_nwb"]

#: Label of the units a head abstains on or that have no embedding.
UNKNOWN_LABEL = UNKNOWN


def _few(ids, k=5) -> str:
    ids = sorted(ids)
    more = f" … ({len(ids)} in all)" if len(ids) > k else ""
    return ", ".join(repr(i) for i in ids[:k]) + more


class ExtensionResults:
    """What an analyzer's ``neuron_embedding`` extension contributes to the Units table.

    The embedding and, for a model with task heads, each head's predictions, computed from the embedding now
    (labels are not stored in the extension), plus the params the model record is made from.
    """

    def __init__(self, ext):
        self.params = dict(ext.params)
        provenance = ext.data.get(PROVENANCE_KEY) or {}
        if "fine_tuned_sha256" in provenance:  # in the data; analyzers of versions <= 0.1 kept it in the params
            self.params["fine_tuned_sha256"] = provenance["fine_tuned_sha256"]
        self.embedding = np.asarray(ext.data[EMBEDDING_KEY], dtype=np.float32)
        bundle = extension_model(ext)
        self.predictions = predict_tasks(bundle, self.embedding) if bundle.heads else {}

    def planned_columns(self) -> list[str]:
        """The Units columns this writes: the embedding, then per task its label, probabilities and confidence."""
        cols = [EMBEDDING_COLUMN]
        for task in self.predictions:
            cols += [label_column(task), probabilities_column(task), confidence_column(task)]
        return cols


def _extension_results(sorting_analyzer) -> ExtensionResults:
    ext = sorting_analyzer.get_extension(EXTENSION_NAME)
    if ext is None:
        raise ValueError(
            "the analyzer has no 'neuron_embedding' extension: run sorting_analyzer.compute('neuron_embedding') first"
        )
    if EMBEDDING_KEY not in ext.data:
        raise ValueError("the 'neuron_embedding' extension has no data: compute it first")
    return ExtensionResults(ext)


def _check_and_order(nwbfile, sorting_analyzer, results: ExtensionResults, unit_id_column):
    """Validate the target Units table; return the row permutation analyzer-order -> table-order."""
    units = nwbfile.units
    if units is None:
        raise ValueError("the NWB file has no Units table (nwbfile.units is None); nothing to attach embeddings to")
    existing = sorted(set(results.planned_columns()) & set(units.colnames))
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


def _add_columns(nwbfile, results: ExtensionResults, order: np.ndarray) -> None:
    ndx = _import_ndx()
    units = nwbfile.units
    emb = results.embedding[order]
    model = ndx.NeuronEmbeddingModel(**_model_record_kwargs(results.params, emb.shape[1]))
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
    desc = f"model '{model.model_name}' version {model.model_version}"
    for task, prediction in results.predictions.items():
        ndx.add_predicted_labels(
            units,
            task,
            [str(x) for x in prediction.labels[order]],
            prediction.probabilities[order],
            list(prediction.classes),
            model,
            unknown_label=UNKNOWN_LABEL,
            confidence=prediction.confidence[order],
            label_description=f"Predicted {task} per unit from {desc}; '{UNKNOWN_LABEL}' where the head abstains.",
            probabilities_description=f"Predicted {task} class probabilities from {desc}; column j is "
            "class_labels[j]; NaN rows for units without an embedding.",
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

    results = _extension_results(sorting_analyzer)

    source_path = Path(source_path)
    if not source_path.exists():
        raise FileNotFoundError(f"NWB file not found: {source_path}")
    if in_place:
        if output_path is not None and Path(os.path.abspath(output_path)) != Path(os.path.abspath(source_path)):
            raise ValueError("in_place=True writes into source_path; pass output_path=None")
        with _nwb_io(source_path, "a") as io:
            nwbfile = io.read()
            order = _check_and_order(nwbfile, sorting_analyzer, results, unit_id_column)
            _add_columns(nwbfile, results, order)
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
        order = _check_and_order(nwbfile, sorting_analyzer, results, unit_id_column)
        _tolerate_legacy_layouts(src_io, nwbfile)
        _add_columns(nwbfile, results, order)
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
        _write_copy_with_columns(source_path, output_path, results, order)
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


def _write_copy_with_columns(source_path: Path, output_path: Path, results: ExtensionResults, order) -> None:
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
            _add_columns(scratch_file, results, order)  # rows in the source table's order
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
                    units.create_dataset(name, data=src["units"][name][()], dtype=src["units"][name].dtype)
                for name in columns:  # attributes last: a label column references its probabilities column
                    _copy_attributes(src["units"][name], units[name], {f"/general/{MODEL_RECORD_NAME}": model})
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


def _copy_attributes(src, dst, targets: dict) -> None:
    """Copy the attributes of ``src`` (a column of the scratch file) to ``dst`` (its copy in the output).

    Object references are re-pointed into the output file: to ``targets[path]`` for the objects given (the model
    record), else to the object at the same path (another copied column, e.g. a label's probabilities).
    """
    import h5py

    for key, value in src.attrs.items():
        if isinstance(value, h5py.Reference):
            path = src.file[value].name
            value = targets[path].ref if path in targets else dst.file[path].ref
        dst.attrs[key] = value


def _cache_namespace(src, dst, namespace: str) -> None:
    """Copy the cached spec of ``namespace`` from ``src`` into ``dst`` (h5py files), creating ``/specifications``."""
    import h5py

    if "specifications" not in dst:
        dst.create_group("specifications")
        dst.attrs.create(".specloc", dst["specifications"].ref, dtype=h5py.ref_dtype)
    if namespace in dst["specifications"]:
        return
    src.copy(src["specifications"][namespace], dst["specifications"], name=namespace)
