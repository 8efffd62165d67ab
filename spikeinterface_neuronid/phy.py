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

from .phy_io import (  # noqa: F401  (COLUMN_PREFIX: re-exported)
    COLUMN_PREFIX,
    TSV_PREFIX,
    LabelInputError,
    PhyFolderWarning,
    _check_outputs,
    cluster_label_tables,
    phy_folder_analyzer,
    phy_peak_waveforms,
    read_phy_sorting,
    tsv_name,
    write_cluster_tsvs,
)
from .schema import UNKNOWN, label_property

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
    from .nwb.io import is_nwb_path

    path = Path(path)
    if not path.exists():
        raise LabelInputError(f"{path} does not exist")
    if is_nwb_path(path):
        return "nwb"
    if path.is_dir() and (path / "spike_times.npy").is_file():
        return "phy"
    if path.is_dir() and ((path / "spikeinterface_info.json").is_file() or path.name.lower().endswith(".zarr")):
        return "analyzer"
    raise LabelInputError(
        f"{path} is not a Kilosort/phy folder (no spike_times.npy), a SortingAnalyzer folder (no "
        "spikeinterface_info.json, not a .zarr store) or an NWB file (.nwb, .nwb.zarr)"
    )


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
            from .nwb.covariates import file_covariates
            from .nwb.inputs import nwb_analyzer

            analyzer, t_start, duration = nwb_analyzer(source, sampling_frequency, check_annotated=False)
            cluster_ids = np.asarray(analyzer.unit_ids)
            cov = file_covariates(source, model, "auto", t_start=t_start, duration=duration)
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
        values = np.asarray(labels[label_property(task)]).astype(str)
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
    from .models import resolve_model

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
