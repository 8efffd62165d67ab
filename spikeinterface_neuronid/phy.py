"""Label the clusters of Kilosort / phy folders, analyzers and NWB files as phy TSV columns (``neuronid label``).

For every task head of the model (the default model has ``firing_type``), :func:`label_sources` writes
``cluster_neuronid_<task>.tsv``: tab-separated, with the columns ``cluster_id``, ``neuronid_<task>`` (a class of the
head, or ``"unknown"`` where the head abstains or the cluster has no embedding) and ``neuronid_<task>_probability``
(the largest calibrated probability; empty for a cluster without an embedding). phy reads every ``cluster_*.tsv``
file of its folder and shows each column next to the clusters, so the TSVs of a phy folder go into that folder; no
other file of it is written or changed.

Three kinds of input are accepted:

Kilosort / phy folder (it has ``spike_times.npy``)
    Read with SpikeInterface's ``read_phy``, which needs ``params.py`` (the sampling rate) and applies phy's
    curation (``spike_clusters.npy``, else ``spike_templates.npy``); every cluster is kept, whatever its group
    (``good``, ``mua``, ``noise``), as in phy's cluster view. ``read_kilosort`` reads the same files and differs
    only in dropping clusters without spikes and, optionally, non-``good`` clusters, so it is not used. When
    ``read_phy`` leaves out clusters of ``spike_clusters.npy`` (it keeps only clusters listed in every
    ``cluster_*.tsv`` file, which a folder curated after its export may not do) or the folder has no ``params.py``,
    the spike trains are read from ``spike_times.npy`` and ``spike_clusters.npy`` directly (without ``params.py``
    the sampling rate must be given). With ``templates.npy``, each cluster's peak-channel waveform (the spike-count
    weighted mean of the templates of its spikes, unwhitened with ``whitening_mat_inv.npy`` when the folder has
    one) goes into an in-memory ``templates`` extension, which models with a waveform channel use; the recording
    itself is never read.
SortingAnalyzer folder (``binary_folder`` or ``.zarr``)
    Loaded read-only; the TSVs go into the output folder. ``save_to_analyzer=True`` instead (or also) saves the
    ``neuron_embedding`` extension and the ``<task>_label`` / ``<task>_probability`` sorting properties into it,
    as :func:`~spikeinterface_neuronid.labeling.neuronid_label_units` does.
NWB file (``.nwb``, ``.nwb.zarr``)
    Its Units table, read as by ``neuronid annotate``; the TSVs go into the output folder, ``cluster_id`` being the
    unit ids.
"""

from __future__ import annotations

import os
import time
import traceback
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

__all__ = [
    "LabelInputError",
    "PhyFolderWarning",
    "LabelResult",
    "tsv_name",
    "input_kind",
    "read_phy_sorting",
    "phy_peak_waveforms",
    "phy_folder_analyzer",
    "cluster_label_tables",
    "write_cluster_tsvs",
    "label_phy_folder",
    "label_sources",
    "label_command",
]

#: File name prefix of the TSVs this module writes; phy reads every ``cluster_*.tsv`` file of its folder.
TSV_PREFIX = "cluster_neuronid_"
#: Column prefix of the label columns (``neuronid_<task>``, ``neuronid_<task>_probability``).
COLUMN_PREFIX = "neuronid_"
#: Label of a cluster the head abstains on, or that has no embedding.
UNKNOWN = "unknown"


class LabelInputError(ValueError):
    """An input cannot be labelled (not a phy folder, analyzer or NWB file; no spikes; no output folder; ...)."""


class PhyFolderWarning(UserWarning):
    """Something about a phy folder that changes how it is read (reported as a note by ``neuronid label``)."""


@dataclass
class LabelResult:
    """Outcome of labelling one input.

    Attributes
    ----------
    source : Path
        The input.
    kind : str | None
        ``"phy"``, ``"analyzer"`` or ``"nwb"`` (None when the input is not one of them).
    output_folder : Path | None
        Where its TSVs go (None: none are written, e.g. an analyzer labelled with ``save_to_analyzer`` only).
    outputs : list of Path
        The TSVs written (one per task head), empty on error.
    num_units : int
        Clusters (units) labelled.
    counts : dict
        ``{task: {label: number of clusters}}``, classes in the head's order, then ``"unknown"``.
    notes : list of str
        What the user should know about how the input was read (waveforms used or not, clusters read directly).
    seconds : float
        Wall time spent on this input.
    error : str | None
        Why the input failed, or None.
    """

    source: Path
    kind: str | None = None
    output_folder: Path | None = None
    outputs: list[Path] = field(default_factory=list)
    num_units: int = 0
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    error: str | None = None

    @property
    def ok(self) -> bool:
        """Whether the input was labelled."""
        return self.error is None


def tsv_name(task: str) -> str:
    """File name of the TSV of ``task``: ``cluster_neuronid_<task>.tsv``."""
    return f"{TSV_PREFIX}{task}.tsv"


def input_kind(path: str | Path) -> str:
    """What an input of ``neuronid label`` is.

    Parameters
    ----------
    path : str | Path
        A Kilosort / phy folder, a SortingAnalyzer folder (``binary_folder`` or ``.zarr``) or an NWB file.

    Returns
    -------
    str
        ``"nwb"`` (name ending in ``.nwb`` or ``.nwb.zarr``), ``"phy"`` (a folder with ``spike_times.npy``) or
        ``"analyzer"`` (a folder with SpikeInterface's ``spikeinterface_info.json``, or a ``.zarr`` store).

    Raises
    ------
    LabelInputError
        The path does not exist or is none of these.
    """
    from .nwb.annotate import _is_nwb

    path = Path(path)
    if not path.exists():
        raise LabelInputError(f"{path} does not exist")
    if _is_nwb(path):
        return "nwb"
    if path.is_dir() and (path / "spike_times.npy").is_file():
        return "phy"
    if path.is_dir() and ((path / "spikeinterface_info.json").is_file() or path.name.lower().endswith(".zarr")):
        return "analyzer"
    raise LabelInputError(
        f"{path} is not a Kilosort/phy folder (no spike_times.npy), a SortingAnalyzer folder (no "
        "spikeinterface_info.json, not a .zarr store) or an NWB file (.nwb, .nwb.zarr)"
    )


def _load_vector(path: Path) -> np.ndarray:
    try:
        values = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as err:
        raise LabelInputError(f"cannot read {path.name} in {path.parent} as a NumPy array: {err}") from None
    return np.atleast_1d(np.asarray(values).squeeze())


def _spike_arrays(folder: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, str]:
    """``spike_times`` (int64 samples), the cluster of each spike, its template (or None) and the clusters' file."""
    if not (folder / "spike_times.npy").is_file():
        raise LabelInputError(f"{folder} has no spike_times.npy, so it is not a Kilosort/phy output folder")
    times = _load_vector(folder / "spike_times.npy")
    templates = _load_vector(folder / "spike_templates.npy") if (folder / "spike_templates.npy").is_file() else None
    if (folder / "spike_clusters.npy").is_file():
        clusters, clusters_file = _load_vector(folder / "spike_clusters.npy"), "spike_clusters.npy"
    elif templates is not None:  # an uncurated Kilosort folder: one cluster per template
        clusters, clusters_file = templates, "spike_templates.npy"
    else:
        raise LabelInputError(f"{folder} has neither spike_clusters.npy nor spike_templates.npy (the spikes' clusters)")
    for name, values in (("spike_times.npy", times), (clusters_file, clusters)):
        if values.ndim != 1 or not np.issubdtype(values.dtype, np.number):
            raise LabelInputError(f"{name} in {folder} must hold one number per spike, got shape {values.shape}")
    if clusters.shape != times.shape or (templates is not None and templates.shape != times.shape):
        raise LabelInputError(
            f"{folder} is inconsistent: spike_times.npy has {times.size} spikes, {clusters_file} "
            f"{clusters.size}" + ("" if templates is None else f", spike_templates.npy {templates.size}")
        )
    if times.size == 0:
        raise LabelInputError(f"{folder} has no spikes (spike_times.npy is empty)")
    templates = None if templates is None else templates.astype(np.int64)
    return times.astype(np.int64), clusters.astype(np.int64), templates, clusters_file


def read_phy_sorting(folder: str | Path, sampling_frequency: float | None = None):
    """The sorting of a Kilosort / phy folder, every cluster of phy's cluster view included.

    Parameters
    ----------
    folder : str | Path
        The folder (``spike_times.npy``, ``spike_clusters.npy`` or ``spike_templates.npy``, ``params.py``).
    sampling_frequency : float | None, default: None
        Sampling rate (Hz) of ``spike_times.npy``, needed only when the folder has no ``params.py`` (whose
        ``sample_rate`` is used otherwise).

    Returns
    -------
    BaseSorting
        One segment; the property ``original_cluster_id`` holds phy's cluster id of each unit (the unit ids may
        differ: ``read_phy`` restores SpikeInterface's unit ids from ``cluster_si_unit_ids.tsv``).

    Raises
    ------
    LabelInputError
        Missing or inconsistent spike files, no ``params.py`` and no ``sampling_frequency``, or ``read_phy``
        failed.

    Notes
    -----
    SpikeInterface's ``read_phy`` is used when the folder has ``params.py``. It keeps only the clusters listed in
    every ``cluster_*.tsv`` file of the folder; when that leaves out clusters of ``spike_clusters.npy`` (a folder
    curated in phy after its export, for example), the spike trains are built from ``spike_times.npy`` and
    ``spike_clusters.npy`` directly, with a :class:`PhyFolderWarning`.
    """
    import spikeinterface.core as si

    folder = Path(folder)
    times, clusters, _, clusters_file = _spike_arrays(folder)
    if (folder / "params.py").is_file():
        from spikeinterface.extractors import read_phy

        try:
            sorting = read_phy(folder, load_all_cluster_properties=False)
        except Exception as err:  # noqa: BLE001  (a malformed params.py or TSV: report it, with the reader's words)
            raise LabelInputError(
                f"SpikeInterface's read_phy cannot read {folder}: {type(err).__name__}: {err}"
            ) from err
        ids = sorting.get_property("original_cluster_id")
        ids = np.asarray(sorting.unit_ids if ids is None else ids)
        missing = np.setdiff1d(np.unique(clusters), ids)
        if missing.size == 0:
            if sorting.get_property("original_cluster_id") is None:
                sorting.set_property("original_cluster_id", ids)
            return sorting
        shown = ", ".join(str(c) for c in missing[:8]) + (", ..." if missing.size > 8 else "")
        warnings.warn(
            f"read_phy leaves out {missing.size} cluster(s) of {clusters_file} ({shown}) because a cluster_*.tsv "
            f"file does not list them (e.g. after curation in phy); all clusters were read from spike_times.npy "
            f"and {clusters_file} instead",
            PhyFolderWarning,
            stacklevel=2,
        )
        fs = float(sorting.sampling_frequency)
    else:
        if sampling_frequency is None:
            raise LabelInputError(
                f"{folder} has no params.py, so the sampling rate of spike_times.npy is unknown; give it with "
                "--sampling-frequency HZ (sampling_frequency= in Python)"
            )
        fs = float(sampling_frequency)
        if not np.isfinite(fs) or fs <= 0:
            raise LabelInputError(f"the sampling frequency must be a positive number of Hz, got {sampling_frequency!r}")
    order = np.argsort(times, kind="stable")
    sorting = si.NumpySorting.from_samples_and_labels([times[order]], [clusters[order]], fs)
    sorting.set_property("original_cluster_id", np.asarray(sorting.unit_ids))
    return sorting


def _dat_num_samples(folder: Path) -> int | None:
    """Samples of the recording that ``params.py`` names (``dat_path``), from its file size; None if unknown."""
    from spikeinterface.core import read_python

    try:
        params = read_python(str(folder / "params.py"))
        paths = params.get("dat_path")
        paths = paths if isinstance(paths, (list, tuple)) else [paths]
        itemsize = np.dtype(params.get("dtype", "int16")).itemsize
        channels, offset = int(params["n_channels_dat"]), int(params.get("offset", 0))
        total = 0
        for p in paths:
            p = Path(str(p)).expanduser()
            p = p if p.is_absolute() else folder / p
            if not p.is_file():
                return None
            total += (p.stat().st_size - offset) // (channels * itemsize)
        return int(total) if total > 0 else None
    except Exception:  # noqa: BLE001  (no or odd params.py: the duration then ends at the last spike)
        return None


def phy_peak_waveforms(folder: str | Path, cluster_ids: Sequence[int]) -> dict | None:
    """Each cluster's peak-channel waveform from a phy folder's ``templates.npy``.

    A cluster's waveform is the mean of the templates of its spikes (``spike_templates.npy``) weighted by their
    spike counts, which is its template for a cluster that phy did not merge or split; ``template_ind.npy``
    (sparse templates) gives the channels, and ``whitening_mat_inv.npy`` (Kilosort) unwhitens it. The peak channel
    is the one of largest absolute amplitude.

    Parameters
    ----------
    folder : str | Path
        The phy folder.
    cluster_ids : sequence of int
        phy cluster ids, in the order of the rows to return.

    Returns
    -------
    dict | None
        ``waveforms`` (float64, ``(len(cluster_ids), num_samples)``; a NaN row for a cluster without spikes) and
        ``nbefore`` (the sample of the spike time: the median over clusters of the sample of largest absolute
        amplitude, as phy does not record it); None when the folder has no usable ``templates.npy`` (a
        :class:`PhyFolderWarning` says why when there is one).
    """
    folder = Path(folder)
    if not (folder / "templates.npy").is_file():
        return None
    templates = np.load(folder / "templates.npy", allow_pickle=False)
    _, clusters, spike_templates, _ = _spike_arrays(folder)

    def skip(reason: str) -> None:
        warnings.warn(f"templates.npy not used: {reason}", PhyFolderWarning, stacklevel=3)

    if templates.ndim != 3 or templates.shape[1] < 2 or templates.shape[2] < 1:
        skip(f"expected (templates, samples, channels), got shape {templates.shape}")
        return None
    if spike_templates is None:
        skip("the folder has no spike_templates.npy, so the template of each spike is unknown")
        return None
    num_templates, num_samples, num_local = templates.shape
    ind = None
    if (folder / "template_ind.npy").is_file():
        ind = np.asarray(np.load(folder / "template_ind.npy", allow_pickle=False), dtype=np.int64)
        if ind.shape != (num_templates, num_local):
            skip(f"template_ind.npy has shape {ind.shape}, templates.npy {templates.shape}")
            return None
    num_channels = num_local if ind is None else max(int(ind.max()) + 1, 1)
    wmi = None
    if (folder / "whitening_mat_inv.npy").is_file():
        wmi = np.asarray(np.load(folder / "whitening_mat_inv.npy", allow_pickle=False), dtype=np.float64)
        if wmi.shape != (num_channels, num_channels):
            warnings.warn(
                f"whitening_mat_inv.npy has shape {wmi.shape} for {num_channels} template channels; the templates "
                "are used whitened (the model scales each waveform to a trough of -1, their shape still differs)",
                PhyFolderWarning,
                stacklevel=2,
            )
            wmi = None
    pairs, counts = np.unique(np.stack([clusters, spike_templates]), axis=1, return_counts=True)
    row_of = {int(c): i for i, c in enumerate(cluster_ids)}
    out = np.full((len(row_of), num_samples), np.nan)
    for cluster in np.unique(pairs[0]):
        row = row_of.get(int(cluster))
        if row is None:
            continue
        sel = pairs[0] == cluster
        dense = np.zeros((num_samples, num_channels))
        weight = 0
        for template, count in zip(pairs[1, sel], counts[sel]):
            if not 0 <= template < num_templates:
                continue  # a spike of a template that templates.npy lacks
            if ind is None:
                dense += count * templates[template]
            else:
                valid = ind[template] >= 0
                dense[:, ind[template][valid]] += count * templates[template][:, valid]
            weight += count
        if weight == 0:
            continue
        dense /= weight
        if wmi is not None:
            dense = dense @ wmi
        peak = int(np.argmax(np.abs(dense).max(axis=0)))
        out[row] = dense[:, peak]
    finite = np.all(np.isfinite(out), axis=1) & (np.abs(out).max(axis=1, initial=0.0) > 0)
    if not finite.any():
        skip("no cluster has a non-zero template")
        return None
    nbefore = int(np.median(np.argmax(np.abs(out[finite]), axis=1)))
    return dict(waveforms=out, nbefore=nbefore)


def _attach_templates(analyzer, waveforms: np.ndarray, nbefore: int) -> None:
    """Give a one-channel in-memory analyzer a computed ``templates`` extension holding ``waveforms``."""
    from spikeinterface.core.analyzer_extension_core import ComputeTemplates

    fs = float(analyzer.sampling_frequency)
    ext = ComputeTemplates(analyzer)
    ext.params = dict(
        operators=["average"],
        ms_before=nbefore * 1000.0 / fs,
        ms_after=(waveforms.shape[1] - nbefore) * 1000.0 / fs,
    )
    ext.data = {"average": np.asarray(waveforms, dtype=np.float64)[:, :, None]}
    ext.run_info = {"run_completed": True}
    analyzer.extensions["templates"] = ext


def phy_folder_analyzer(folder: str | Path, sampling_frequency: float | None = None, waveforms: bool = True):
    """An in-memory SortingAnalyzer of a Kilosort / phy folder, for ``neuron_embedding``; the folder is only read.

    Parameters
    ----------
    folder : str | Path
        The phy folder.
    sampling_frequency : float | None, default: None
        See :func:`read_phy_sorting` (only for a folder without ``params.py``).
    waveforms : bool, default: True
        Attach each cluster's peak-channel waveform (:func:`phy_peak_waveforms`) as a ``templates`` extension
        when the folder has ``templates.npy``.

    Returns
    -------
    SortingAnalyzer
        On a lazy one-channel placeholder recording (no recording data is read) that lasts as long as the binary
        file ``params.py`` names, when it exists, else up to the last spike. The sorting's property
        ``original_cluster_id`` holds phy's cluster ids.
    """
    import spikeinterface.core as si

    folder = Path(folder)
    sorting = read_phy_sorting(folder, sampling_frequency)
    ids = np.asarray(sorting.get_property("original_cluster_id"))
    fs = float(sorting.sampling_frequency)
    last = int(sorting.to_spike_vector()["sample_index"].max())
    num_samples = max(_dat_num_samples(folder) or 0, last + 2)
    placeholder = si.generate_recording(
        num_channels=1, durations=[num_samples / fs], sampling_frequency=fs, set_probe=True, seed=0
    )
    analyzer = si.create_sorting_analyzer(
        sorting,
        placeholder,
        format="memory",
        sparse=False,
        main_channel_indices=np.zeros(sorting.get_num_units(), dtype=int),
    )
    if analyzer.sorting.get_property("original_cluster_id") is None:
        analyzer.sorting.set_property("original_cluster_id", ids)
    if waveforms:
        peaks = phy_peak_waveforms(folder, ids)
        if peaks is not None:
            _attach_templates(analyzer, peaks["waveforms"], peaks["nbefore"])
    return analyzer


def cluster_label_tables(labels, cluster_ids: Sequence, tasks: Sequence[str] | None = None) -> dict:
    """phy-style tables of the labels :func:`~spikeinterface_neuronid.labeling.neuronid_label_units` returns.

    Parameters
    ----------
    labels : pandas.DataFrame
        One row per unit, with ``<task>_label`` and ``<task>_probability`` columns.
    cluster_ids : sequence
        The cluster id of each row (phy's ids for a phy folder, the unit ids otherwise).
    tasks : sequence of str | None, default: None
        Tasks to tabulate; None: every ``<task>_label`` column.

    Returns
    -------
    dict
        ``{task: DataFrame}`` with the columns ``cluster_id``, ``neuronid_<task>`` and
        ``neuronid_<task>_probability``, sorted by cluster id.
    """
    import pandas as pd

    if len(cluster_ids) != len(labels):
        raise ValueError(f"{len(cluster_ids)} cluster ids for {len(labels)} rows of labels")
    if tasks is None:
        tasks = [c[: -len("_label")] for c in labels.columns if c.endswith("_label")]
    ids = np.asarray(cluster_ids)
    order = np.argsort(ids, kind="stable") if ids.dtype.kind in "iuf" else np.arange(len(ids))
    tables = {}
    for task in tasks:
        label = np.asarray(labels[f"{task}_label"]).astype(str)
        probability = np.asarray(labels[f"{task}_probability"], dtype=np.float64)
        tables[task] = pd.DataFrame(
            {
                "cluster_id": ids[order],
                f"{COLUMN_PREFIX}{task}": label[order],
                f"{COLUMN_PREFIX}{task}_probability": probability[order],
            }
        )
    return tables


def _check_outputs(folder: Path, tasks: Sequence[str], overwrite: bool) -> list[Path]:
    paths = [folder / tsv_name(task) for task in tasks]
    existing = [p for p in paths if p.exists()]
    if existing and not overwrite:
        names = ", ".join(str(p) for p in existing)
        it = "it" if len(existing) == 1 else "them"
        raise FileExistsError(
            f"{names} already {'exists' if len(existing) == 1 else 'exist'} (from an earlier run); pass "
            f"--overwrite (overwrite=True in Python) to replace {it}"
        )
    return paths


def write_cluster_tsvs(tables: dict, folder: str | Path, overwrite: bool = False) -> list[Path]:
    """Write each table as ``<folder>/cluster_neuronid_<task>.tsv``, atomically (temporary file, then rename).

    Parameters
    ----------
    tables : dict
        ``{task: DataFrame}`` from :func:`cluster_label_tables`.
    folder : str | Path
        Destination (created if needed); only these files are written in it.
    overwrite : bool, default: False
        Replace existing TSVs of these tasks.

    Returns
    -------
    list of Path
        The files written, in the order of ``tables``.

    Raises
    ------
    FileExistsError
        A TSV exists and ``overwrite`` is False (nothing is written then).
    """
    from ._io import atomic_path

    folder = Path(folder)
    paths = _check_outputs(folder, list(tables), overwrite)
    for path, table in zip(paths, tables.values()):
        with atomic_path(path) as tmp:
            # probabilities to 4 decimals; an empty cell for a cluster without an embedding (phy skips it)
            table.to_csv(tmp, sep="\t", index=False, float_format="%.4f", na_rep="", lineterminator="\n")
    return paths


def _output_name(source: Path) -> str:
    name = source.name
    for suffix in (".nwb.zarr", ".nwb", ".zarr"):
        if name.lower().endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name


def _output_folder(source: Path, kind: str, output_folder: Path | None, save_to_analyzer: bool) -> Path | None:
    if output_folder is not None:
        return output_folder / _output_name(source)
    if kind == "phy":
        return source
    if kind == "analyzer" and save_to_analyzer:
        return None
    what = "a SortingAnalyzer folder" if kind == "analyzer" else "an NWB file"
    extra = ", or --save-to-analyzer to store the labels in the analyzer only" if kind == "analyzer" else ""
    raise LabelInputError(
        f"the TSVs of {what} need an output folder: give -o/--output OUT (output_folder= in Python){extra}"
    )


def _label_one(
    source: Path,
    kind: str,
    dest: Path | None,
    *,
    model: str,
    bundle,
    overwrite: bool,
    sampling_frequency: float | None,
    save_to_analyzer: bool,
    compute_kwargs: dict,
    result: LabelResult,
) -> None:
    """Label one input into ``result`` (raises on error)."""
    import spikeinterface.core as si

    from .labeling import neuronid_label_units

    tasks = list(bundle.heads)
    if dest is not None:
        _check_outputs(dest, tasks, overwrite)  # fail before the (slow) embedding
    uses_waveforms = bool(getattr(bundle.config, "waveform_channel", False))
    extra: dict = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", PhyFolderWarning)
        if kind == "phy":
            analyzer = phy_folder_analyzer(source, sampling_frequency, waveforms=uses_waveforms)
            cluster_ids = np.asarray(analyzer.sorting.get_property("original_cluster_id"))
            has_templates = (source / "templates.npy").is_file()
            if not has_templates:
                result.notes.append("no templates.npy: labelled from the spike trains alone")
            elif not uses_waveforms:
                result.notes.append(f"templates.npy not used: the model {bundle.name!r} has no waveform channel")
            elif analyzer.has_extension("templates"):
                result.notes.append("peak-channel waveforms from templates.npy given to the model")
        elif kind == "analyzer":
            analyzer = si.load_sorting_analyzer(source, load_extensions=False, read_only=not save_to_analyzer)
            cluster_ids = np.asarray(analyzer.unit_ids)
            if uses_waveforms:
                has = analyzer.has_extension("templates")
                result.notes.append(
                    "waveforms from the analyzer's templates extension given to the model"
                    if has
                    else "no templates extension: labelled from the spike trains alone"
                )
        else:
            from .nwb.annotate import _file_covariates, _nwb_analyzer

            analyzer, t_start, duration = _nwb_analyzer(source, sampling_frequency, check_annotated=False)
            cluster_ids = np.asarray(analyzer.unit_ids)
            cov = _file_covariates(source, model, "auto", t_start=t_start, duration=duration)
            if cov is not None:
                extra = dict(covariates=cov.values, covariate_rate_hz=cov.rate_hz)
    for w in caught:
        if issubclass(w.category, PhyFolderWarning):
            result.notes.append(str(w.message))
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if analyzer.get_num_units() == 0:
        raise LabelInputError(f"{source} has no units")
    labels = neuronid_label_units(
        analyzer, model=model, tasks=tasks, set_properties=save_to_analyzer, **compute_kwargs, **extra
    )
    result.num_units = len(labels)
    for task in tasks:
        values = np.asarray(labels[f"{task}_label"]).astype(str)
        tally = Counter(values)
        classes = [str(c) for c in bundle.heads[task].classes]
        result.counts[task] = {c: tally[c] for c in [*classes, UNKNOWN] if tally[c]}
        for c in sorted(set(tally) - set(classes) - {UNKNOWN}):
            result.counts[task][c] = tally[c]
    if dest is not None:
        result.outputs = write_cluster_tsvs(cluster_label_tables(labels, cluster_ids, tasks), dest, overwrite)


def _compute_kwargs(batch_size: int, device: str, progress_bar: bool, n_jobs: int | None) -> dict:
    """Keyword arguments of ``compute("neuron_embedding")``; ``n_jobs`` only when given (else the global value)."""
    kwargs: dict = dict(batch_size=batch_size, device=device, progress_bar=progress_bar)
    if n_jobs is not None:
        kwargs["n_jobs"] = n_jobs
    return kwargs


def _resolve_labelling_model(model: str | Path):
    from .inference import resolve_model

    bundle = resolve_model(str(model))
    if not bundle.heads:
        raise ValueError(
            f"the model {bundle.name!r} has no task heads, so it cannot label clusters; fit one with "
            "spikeinterface_neuronid.fit_head, add it with bundle.add_head, save the model and pass its path "
            "(--model PATH; model= in Python)"
        )
    return bundle


def _plan(inputs: Sequence[str | Path], output_folder: Path | None, save_to_analyzer: bool):
    """``(source, kind, dest, error)`` per distinct input; ValueError when two inputs would share TSV paths."""
    plan, seen, targets = [], set(), {}
    for item in inputs:
        source = Path(item)
        key = os.path.abspath(source)
        if key in seen:
            continue
        seen.add(key)
        try:
            kind = input_kind(source)
            dest = _output_folder(source, kind, output_folder, save_to_analyzer)
        except LabelInputError as err:
            plan.append((source, None, None, str(err)))
            continue
        if dest is not None:
            dest_key = os.path.abspath(dest)
            if dest_key in targets:
                raise ValueError(
                    f"{targets[dest_key]} and {source} would both write their TSVs into {dest}; label them in "
                    "separate runs or with different -o/--output folders"
                )
            targets[dest_key] = source
        plan.append((source, kind, dest, None))
    return plan


def label_sources(
    inputs: Sequence[str | Path],
    output_folder: str | Path | None = None,
    *,
    model: str | Path = "default",
    overwrite: bool = False,
    sampling_frequency: float | None = None,
    save_to_analyzer: bool = False,
    progress_bar: bool = False,
    n_jobs: int | None = None,
    batch_size: int = 16,
    device: str = "cpu",
    on_result: Callable[[LabelResult], None] | None = None,
) -> list[LabelResult]:
    """Label the clusters of phy folders, analyzers and NWB files; a failing input does not stop the others.

    For every task head of the model, ``cluster_neuronid_<task>.tsv`` is written (see the module docstring):
    into the phy folder itself, or into ``output_folder / <input name>`` when ``output_folder`` is given (its
    name without ``.nwb``, ``.nwb.zarr`` or ``.zarr``).

    Parameters
    ----------
    inputs : sequence of str | Path
        Kilosort / phy folders, SortingAnalyzer folders (``binary_folder``, ``.zarr``) and NWB files.
    output_folder : str | Path | None, default: None
        Where the TSVs go, one subfolder per input. None: into each phy folder; analyzers and NWB files then
        fail (except analyzers with ``save_to_analyzer``).
    model : str | Path, default: "default"
        ``"default"`` or a model file with task heads.
    overwrite : bool, default: False
        Replace TSVs of an earlier run (otherwise such an input fails, before any computation).
    sampling_frequency : float | None, default: None
        Hz: for phy folders without ``params.py``, and NWB files whose Units table has no ``resolution``
        (default 30 kHz there, see :func:`~spikeinterface_neuronid.nwb.annotate.annotate_nwb_file`).
    save_to_analyzer : bool, default: False
        Analyzer inputs: save the ``neuron_embedding`` extension and the ``<task>_label`` /
        ``<task>_probability`` sorting properties into the analyzer (otherwise analyzers are only read).
    progress_bar : bool, default: False
        Progress bar over the windows of each input.
    n_jobs : int | None, default: None
        Torch CPU threads (None: SpikeInterface's global job kwargs).
    batch_size : int, default: 16
        Windows per forward pass.
    device : str, default: "cpu"
        Torch device.
    on_result : callable | None, default: None
        Called with each :class:`LabelResult` as soon as its input is done (``neuronid label`` prints it).

    Returns
    -------
    list of LabelResult
        One per distinct input, in the order given.

    Raises
    ------
    FileNotFoundError, ValueError
        Before any work: the model cannot be loaded or has no task heads, or two inputs would write to the same
        folder.
    """
    bundle = _resolve_labelling_model(model)
    output_folder = None if output_folder is None else Path(output_folder)
    plan = _plan(inputs, output_folder, save_to_analyzer)
    compute_kwargs = _compute_kwargs(batch_size, device, progress_bar, n_jobs)
    results = []
    for source, kind, dest, error in plan:
        result = LabelResult(source, kind, dest, error=error)
        t0 = time.perf_counter()
        if error is None:
            try:
                _label_one(
                    source,
                    kind,
                    dest,
                    model=str(model),
                    bundle=bundle,
                    overwrite=overwrite,
                    sampling_frequency=sampling_frequency,
                    save_to_analyzer=save_to_analyzer,
                    compute_kwargs=compute_kwargs,
                    result=result,
                )
            except (KeyboardInterrupt, SystemExit):
                raise
            except Exception as err:  # noqa: BLE001  (one bad input must not stop the others)
                message = " ".join(str(err).split()) or type(err).__name__
                if not isinstance(err, (LabelInputError, FileExistsError, FileNotFoundError, ValueError, OSError)):
                    message = f"{type(err).__name__}: {message}"
                    last = traceback.extract_tb(err.__traceback__)[-1]
                    message += f" (at {Path(last.filename).name}:{last.lineno})"
                result.error, result.outputs = message, []
        result.seconds = time.perf_counter() - t0
        results.append(result)
        if on_result is not None:
            on_result(result)
    return results


def label_phy_folder(
    folder: str | Path,
    output_folder: str | Path | None = None,
    *,
    model: str | Path = "default",
    overwrite: bool = False,
    sampling_frequency: float | None = None,
    progress_bar: bool = False,
    n_jobs: int | None = None,
    batch_size: int = 16,
    device: str = "cpu",
) -> list[Path]:
    """Write ``cluster_neuronid_<task>.tsv`` for one Kilosort / phy folder; raise on error.

    Parameters
    ----------
    folder : str | Path
        The phy folder (only read; the TSVs are its only new files when ``output_folder`` is None).
    output_folder : str | Path | None, default: None
        None: the TSVs go into ``folder``, where phy shows them as columns. Otherwise into
        ``output_folder / folder.name``.
    model, overwrite, sampling_frequency, progress_bar, n_jobs, batch_size, device
        See :func:`label_sources`.

    Returns
    -------
    list of Path
        The TSVs written, one per task head of the model.

    Raises
    ------
    LabelInputError, FileExistsError, ValueError
        The folder cannot be labelled (the message says why), or TSVs exist and ``overwrite`` is False.
    """
    folder = Path(folder)
    if input_kind(folder) != "phy":
        raise LabelInputError(f"{folder} is not a Kilosort/phy folder (no spike_times.npy)")
    bundle = _resolve_labelling_model(model)
    dest = _output_folder(folder, "phy", None if output_folder is None else Path(output_folder), False)
    compute_kwargs = _compute_kwargs(batch_size, device, progress_bar, n_jobs)
    result = LabelResult(folder, "phy", dest)
    _label_one(
        folder,
        "phy",
        dest,
        model=str(model),
        bundle=bundle,
        overwrite=overwrite,
        sampling_frequency=sampling_frequency,
        save_to_analyzer=False,
        compute_kwargs=compute_kwargs,
        result=result,
    )
    return result.outputs


def _describe(result: LabelResult) -> list[str]:
    kind = {"phy": "phy folder", "analyzer": "SortingAnalyzer", "nwb": "NWB file"}.get(result.kind or "", "input")
    lines = [f"{result.source}: {result.num_units} clusters ({kind}) labelled in {result.seconds:.1f} s"]
    lines += [f"  note: {note}" for note in result.notes]
    written = {p.name[len(TSV_PREFIX) : -len(".tsv")]: p for p in result.outputs}
    for task, counts in result.counts.items():
        tally = ", ".join(f"{label} {n}" for label, n in counts.items())
        where = f"wrote {written[task]}" if task in written else "saved to the analyzer"
        lines.append(f"  {task}: {where} ({tally})")
    return lines


def label_command(
    inputs: Sequence[str | Path],
    output_folder: str | Path | None = None,
    *,
    model: str | Path = "default",
    overwrite: bool = False,
    sampling_frequency: float | None = None,
    save_to_analyzer: bool = False,
    progress_bar: bool = True,
) -> int:
    """``neuronid label``: run :func:`label_sources`, print each input's outcome as it ends and a summary.

    Returns
    -------
    int
        0 when every input was labelled, 1 when at least one failed (``FAILED <input>: <reason>`` on stderr; the
        others are still written), 2 when the run cannot start (model, output folders).
    """
    import sys

    def report(result: LabelResult) -> None:
        if result.ok:
            print("\n".join(_describe(result)), flush=True)
        else:
            print(f"FAILED {result.source}: {result.error}", file=sys.stderr, flush=True)

    t0 = time.perf_counter()
    try:
        results = label_sources(
            inputs,
            output_folder,
            model=model,
            overwrite=overwrite,
            sampling_frequency=sampling_frequency,
            save_to_analyzer=save_to_analyzer,
            progress_bar=progress_bar,
            on_result=report,
        )
    except (FileNotFoundError, ValueError) as err:
        print(f"neuronid label: {err}", file=sys.stderr)
        return 2
    failed = [r for r in results if not r.ok]
    print(
        f"labelled {len(results) - len(failed)} of {len(results)} input(s) in {time.perf_counter() - t0:.1f} s"
        + (f"; {len(failed)} failed (see FAILED above)" if failed else ""),
        flush=True,
    )
    return 1 if failed else 0
