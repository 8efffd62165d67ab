"""NWB files as inputs: checking that a file's Units table can be embedded, and reading it into an analyzer.

:func:`nwb_analyzer` builds an in-memory SortingAnalyzer of a file's Units table (spike times read with
SpikeInterface's NWB sorting extractor, on a lazy one-channel placeholder recording that fixes the duration; no
recording data is read), as ``neuronid annotate``, ``neuronid label`` and the streaming training corpus read
NWB files.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np

from ..corpus import spike_only_analyzer
from .io import _nwb_io, is_zarr_path
from .metadata import EMBEDDING_COLUMN, MODEL_RECORD_NAME

__all__ = ["NWBAnnotateError", "root_neurodata_type", "nwb_analyzer"]


#: Sampling frequency (Hz) of the frame grid when a file's Units table has no valid ``resolution``. The model
#: bins spikes at 20 ms, so any grid this fine leaves the embeddings unchanged.
DEFAULT_SAMPLING_FREQUENCY = 30000.0


class NWBAnnotateError(ValueError):
    """An NWB file cannot be annotated (no Units table, no spikes, already annotated, ...)."""


def root_neurodata_type(path: Path) -> str | None:
    """The ``neurodata_type`` attribute of the file's root group (``"NWBFile"`` for NWB), read without pynwb.

    Parameters
    ----------
    path : str | Path
        An HDF5 file, or a Zarr store (see :func:`~spikeinterface_neuronid.nwb.is_zarr_path`).

    Returns
    -------
    str | None
        The attribute, or None when the root has none.

    Raises
    ------
    NWBAnnotateError
        The path is neither an HDF5 file nor a Zarr store.
    """
    if is_zarr_path(path):
        import json

        for meta in (".zattrs", "zarr.json"):
            if (Path(path) / meta).is_file():
                attrs = json.loads((Path(path) / meta).read_text() or "{}")
                attrs = attrs.get("attributes", attrs) if meta == "zarr.json" else attrs
                return attrs.get("neurodata_type")
        if not (Path(path) / ".zgroup").exists():
            raise NWBAnnotateError("not a Zarr store (no .zgroup, .zattrs or zarr.json), so not an NWB file")
        return None
    import h5py

    if not h5py.is_hdf5(path):
        raise NWBAnnotateError(
            "not an HDF5 file, so not an NWB file: pass NWB files (HDF5 *.nwb or Zarr *.nwb.zarr)"
        )
    with h5py.File(path, "r") as f:
        value = f.attrs.get("neurodata_type")
    return value.decode() if isinstance(value, bytes) else (None if value is None else str(value))


def _first_line(err: BaseException, limit: int = 300) -> str:
    text = str(err).strip().splitlines()
    text = text[0] if text else ""
    return f"{type(err).__name__}: {text[:limit]}{'…' if len(text) > limit else ''}"


def _units_summary(path: Path, check_annotated: bool = True) -> dict:
    """Open the file read-only and check that its Units table can be embedded (and, by default, is not annotated)."""
    import pynwb

    if root_neurodata_type(path) != "NWBFile":
        kind = "a Zarr store" if is_zarr_path(path) else "an HDF5 file"
        raise NWBAnnotateError(
            f"{kind} but not an NWB file (its root has no neurodata_type 'NWBFile' attribute): pass NWB files, "
            "or convert this one to NWB first (e.g. with neuroconv)"
        )
    with contextlib.ExitStack() as stack:
        try:
            io = stack.enter_context(_nwb_io(path, "r", load_namespaces=True))
            nwbfile = io.read()
        except Exception as err:
            raise NWBAnnotateError(
                f"pynwb {pynwb.__version__} cannot read the file ({_first_line(err)}); check it with "
                f"`nwbinspector {path}`"
            ) from err
        units = nwbfile.units
        if units is None:
            raise NWBAnnotateError(
                "the file has no Units table (nwbfile.units), so there are no spike-sorted units to annotate"
            )
        if "spike_times" not in units.colnames:
            raise NWBAnnotateError("the Units table has no spike_times column, so there are no spikes to embed")
        if check_annotated and (EMBEDDING_COLUMN in units.colnames or MODEL_RECORD_NAME in nwbfile.lab_meta_data):
            raise NWBAnnotateError(
                f"the file is already annotated (it has a Units column {EMBEDDING_COLUMN!r} or a "
                f"'{MODEL_RECORD_NAME}' record); annotate the original file instead"
            )
        num_units = len(units.id)
        if num_units == 0:
            raise NWBAnnotateError("the Units table has no rows")
        index = units["spike_times"]
        flat = np.asarray(index.target.data[:], dtype=np.float64)
        if flat.size == 0:
            raise NWBAnnotateError(f"none of the {num_units} units in the Units table has a spike")
        if not np.all(np.isfinite(flat)):
            raise NWBAnnotateError("the Units table's spike_times contain NaN or infinite values")
        resolution = getattr(units, "resolution", None)
        t_end = float(flat.max())
        if "obs_intervals" in units.colnames:  # the recorded span, when the file says (e.g. write_analyzer_to_nwb)
            obs = np.asarray(units["obs_intervals"].target.data[:], dtype=np.float64)
            if obs.size and np.all(np.isfinite(obs)):
                t_end = max(t_end, float(obs.max()))
        return dict(
            t_end=t_end,
            num_units=num_units,
            num_spikes=int(flat.size),
            t_min=float(flat.min()),
            t_max=float(flat.max()),
            resolution=None if resolution is None else float(resolution),
        )


def _sampling_frequency(resolution: float | None, given: float | None) -> float:
    from ..corpus import check_spike_time_resolution

    if given is not None:
        if not np.isfinite(given) or given <= 0:
            raise ValueError(f"sampling_frequency must be a positive number, got {given!r}")
        check_spike_time_resolution(given, what="--sampling-frequency (sampling_frequency)")
        return float(given)
    if resolution is not None and np.isfinite(resolution) and 0 < resolution <= 0.01:
        what = f"the spike-time resolution of the Units table (resolution = {resolution:g} s)"
        check_spike_time_resolution(1.0 / resolution, what=what)
        return 1.0 / resolution
    return DEFAULT_SAMPLING_FREQUENCY  # old files often have no (or a placeholder) resolution


def nwb_analyzer(source: Path, sampling_frequency: float | None, check_annotated: bool = True):
    """An in-memory analyzer of the Units table of ``source`` (no recording data is read).

    Parameters
    ----------
    source : str | Path
        NWB file (HDF5, or a Zarr store).
    sampling_frequency : float | None
        Frame rate used to turn spike times into samples. None: ``1 / units.resolution`` when the file sets a
        valid one (at most 10 ms), else ``DEFAULT_SAMPLING_FREQUENCY`` (30 kHz).
    check_annotated : bool, default: True
        Refuse a file that already has our embedding column or model record.

    Returns
    -------
    analyzer : SortingAnalyzer
        Units of the file, on a lazy one-channel placeholder recording that fixes the duration.
    t_start : float
        Time (s) of the first frame: ``min(0, first spike)``.
    duration : float
        Seconds spanned by the analyzer.

    Raises
    ------
    NWBAnnotateError
        The file is not an NWB file or pynwb cannot read it, has no Units table, no spike_times, no units, no
        spikes at all or non-finite spike times, or (with ``check_annotated``) is already annotated.
    ValueError
        A ``sampling_frequency`` (given, or from the file's resolution) that is not positive or is too coarse.
    """
    from spikeinterface.extractors import read_nwb_sorting

    info = _units_summary(source, check_annotated=check_annotated)
    fs = _sampling_frequency(info["resolution"], sampling_frequency)
    # The frame grid starts at min(0, first spike): spike times before 0 (allowed in NWB) stay representable.
    t_start = min(0.0, info["t_min"])
    sorting = read_nwb_sorting(source, sampling_frequency=fs, t_start=t_start, load_unit_properties=False)
    # the analyzer spans the recorded interval (obs_intervals) or, without one, up to the last spike
    num_samples = max(
        int(np.floor((info["t_end"] - t_start) * fs + 1e-6)), int(np.ceil((info["t_max"] - t_start) * fs)) + 2
    )
    analyzer = spike_only_analyzer(sorting, num_samples)
    return analyzer, t_start, num_samples / fs
