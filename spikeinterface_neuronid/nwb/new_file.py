"""A whole new NWB file from an analyzer: session and subject metadata, the Units table and our columns.

:func:`~spikeinterface_neuronid.nwb.write_analyzer_to_nwb` has neuroconv's SpikeInterface writer write the
Units table and adds the columns of :func:`~spikeinterface_neuronid.nwb.write_embeddings_to_nwb`. It needs
``pynwb`` and ``neuroconv`` (plus ``ndx-neuron-embedding`` for the embeddings and ``hdmf-zarr`` for Zarr).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from .io import _atomic_store, _check_output_path, _import_ndx, _import_pynwb, _nwb_io
from .metadata import _check_metadata
from .write import ExtensionResults, _add_columns, _check_and_order

__all__ = ["write_analyzer_to_nwb"]


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
        results = ExtensionResults(ext)
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
        clash = sorted((set(results.planned_columns()) & set(sorting.get_property_keys())) - set(skip))
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
        order = _check_and_order(nwbfile, sorting_analyzer, results, "unit_name")
        _add_columns(nwbfile, results, order)
    with _atomic_store(path, zarr_out) as tmp, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not end in '.nwb'", category=UserWarning)
        warnings.filterwarnings("ignore", message="missing object_codec for object array", category=FutureWarning)
        with _nwb_io(tmp, "w") as io:
            io.write(nwbfile)
    return path
