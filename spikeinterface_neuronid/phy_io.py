"""Kilosort / phy folders in and out: their spikes and waveforms read into an analyzer, label tables written.

:func:`phy_folder_analyzer` reads a folder's spike trains (:func:`read_phy_sorting`) and, with ``templates.npy``,
each cluster's peak-channel waveform (:func:`phy_peak_waveforms`) into an in-memory analyzer; the recording itself
is never read. :func:`cluster_label_tables` and :func:`write_cluster_tsvs` turn labels into the
``cluster_neuronid_<task>.tsv`` files that phy shows next to its clusters.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

from .corpus import spike_only_analyzer
from .schema import label_property, probability_property

__all__ = [
    "LabelInputError",
    "PhyFolderWarning",
    "tsv_name",
    "read_phy_sorting",
    "phy_peak_waveforms",
    "phy_folder_analyzer",
    "cluster_label_tables",
    "write_cluster_tsvs",
]


#: File name prefix of the TSVs this module writes; phy reads every ``cluster_*.tsv`` file of its folder.
TSV_PREFIX = "cluster_neuronid_"
#: Column prefix of the label columns (``neuronid_<task>``, ``neuronid_<task>_probability``).
COLUMN_PREFIX = "neuronid_"


class LabelInputError(ValueError):
    """An input cannot be labelled (not a phy folder, analyzer or NWB file; no spikes; no output folder; ...)."""


class PhyFolderWarning(UserWarning):
    """Something about a phy folder that changes how it is read (reported as a note by ``neuronid label``)."""


def tsv_name(task: str) -> str:
    """File name of the TSV of ``task``: ``cluster_neuronid_<task>.tsv``."""
    return f"{TSV_PREFIX}{task}.tsv"


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
    folder = Path(folder)
    sorting = read_phy_sorting(folder, sampling_frequency)
    ids = np.asarray(sorting.get_property("original_cluster_id"))
    last = int(sorting.to_spike_vector()["sample_index"].max())
    num_samples = max(_dat_num_samples(folder) or 0, last + 2)
    analyzer = spike_only_analyzer(sorting, num_samples)
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
        tasks = [c[: -len(label_property(""))] for c in labels.columns if c.endswith(label_property(""))]
    ids = np.asarray(cluster_ids)
    order = np.argsort(ids, kind="stable") if ids.dtype.kind in "iuf" else np.arange(len(ids))
    tables = {}
    for task in tasks:
        label = np.asarray(labels[label_property(task)]).astype(str)
        probability = np.asarray(labels[probability_property(task)], dtype=np.float64)
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
