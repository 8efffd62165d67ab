"""Annotate NWB files: embed the units of each file's Units table and write annotated copies.

``neuronid annotate IN.nwb [DIR ...] -o OUTDIR`` calls :func:`annotate_nwb_files`. For every file, the spike
times of its Units table are read with SpikeInterface's NWB sorting extractor, a SortingAnalyzer is built from the
sorting alone (a lazy one-channel placeholder recording fixes its duration; no recording data is read or
needed; :func:`~spikeinterface_neuronid.nwb.inputs.nwb_analyzer`), ``neuron_embedding`` is computed (with the
labels of every task head of the model) and :func:`~spikeinterface_neuronid.nwb.write_embeddings_to_nwb` writes
an annotated copy into the output folder. The source files are only read. A model trained with covariates
(NeurPIR with ``num_covariates > 0``) gets the file's behavioural time series and trials indicator as covariates
(:func:`~spikeinterface_neuronid.nwb.read_nwb_covariates`).
"""

from __future__ import annotations

import contextlib
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from .covariates import file_covariates
from .inputs import NWBAnnotateError, _first_line, nwb_analyzer
from .io import _check_output_path, _recover_interrupted_writes, is_nwb_path, is_zarr_path
from .metadata import MODEL_RECORD_NAME
from .write import write_embeddings_to_nwb

__all__ = [
    "NWBAnnotateError",
    "AnnotateResult",
    "find_nwb_files",
    "annotate_nwb_file",
    "annotate_nwb_files",
    "annotate_command",
]


@dataclass
class AnnotateResult:
    """Outcome of annotating one file.

    Attributes
    ----------
    source : Path
        The input file.
    output : Path
        The annotated copy (written only when ``error`` is None).
    num_units : int
        Units embedded (0 on error).
    seconds : float
        Wall time spent on this file.
    error : str | None
        What went wrong (one line: the exception's type and message), or None.
    exception : Exception | None
        The exception itself (for its traceback), or None.
    """

    source: Path
    output: Path
    num_units: int = 0
    seconds: float = 0.0
    error: str | None = None
    exception: Exception | None = field(default=None, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        """Whether the file was annotated."""
        return self.error is None


def find_nwb_files(inputs: Sequence[str | Path], exclude: str | Path | None = None) -> list[tuple[Path, Path]]:
    """The NWB files named by ``inputs``, each with the relative path of its annotated copy.

    Parameters
    ----------
    inputs : sequence of str | Path
        Files (``*.nwb``, or ``*.nwb.zarr`` Zarr stores) and folders. A folder that is not itself a Zarr store
        is searched recursively for ``*.nwb`` files and ``*.nwb.zarr`` stores (e.g. a DANDI tree
        ``sub-*/sub-*_ses-*.nwb``); the copy keeps the path relative to that folder.
    exclude : str | Path | None, default: None
        A folder whose contents are skipped (the output folder, when it lies inside an input folder). Compared
        after resolving symbolic links, so a link to the input folder does not bring the output folder back.

    Returns
    -------
    list of (Path, Path)
        ``(source, relative_output)`` in a stable, sorted order, without duplicates.

    Raises
    ------
    FileNotFoundError
        An input does not exist.
    ValueError
        Two inputs would be written to the same output path.
    """
    exclude_abs = Path(os.path.realpath(exclude)) if exclude is not None else None
    found: list[tuple[Path, Path]] = []
    for item in inputs:
        item = Path(item)
        if not item.exists():
            raise FileNotFoundError(f"input not found: {item}")
        if item.is_file() or item.name.lower().endswith(".zarr"):
            found.append((item, Path(item.name)))
            continue
        matches = []
        for root, dirs, files in os.walk(item):
            root_path = Path(root)
            real_root = Path(os.path.realpath(root_path))
            if exclude_abs is not None and (real_root == exclude_abs or exclude_abs in real_root.parents):
                dirs[:] = []
                continue
            for d in list(dirs):
                if d.lower().endswith(".nwb.zarr"):
                    matches.append(root_path / d)
            dirs[:] = sorted(d for d in dirs if not d.lower().endswith(".zarr") and not d.startswith("."))
            matches.extend(root_path / f for f in files if is_nwb_path(Path(f)) and not f.startswith("."))
        found.extend((m, m.relative_to(item)) for m in sorted(matches))
    unique: dict[Path, tuple[Path, Path]] = {}
    targets: dict[Path, Path] = {}
    for source, rel in found:
        key = Path(os.path.abspath(source))
        if key in unique:
            continue
        if rel in targets:
            raise ValueError(
                f"{targets[rel]} and {source} would both be written to {rel} in the output folder; "
                "annotate them in separate runs or pass their parent folder instead"
            )
        unique[key] = (source, rel)
        targets[rel] = source
    return list(unique.values())


def annotate_nwb_file(
    source: str | Path,
    output: str | Path,
    *,
    model: str | Path = "default",
    sampling_frequency: float | None = None,
    overwrite: bool = False,
    n_jobs: int | None = None,
    batch_size: int = 16,
    device: str = "cpu",
    covariates: str | Sequence[str] | None = "auto",
) -> int:
    """Embed the units of one NWB file and write an annotated copy.

    Parameters
    ----------
    source : str | Path
        NWB file (HDF5, or a Zarr store) with a Units table. Only read, never modified.
    output : str | Path
        The annotated copy to write (``.nwb`` for HDF5, ``.nwb.zarr`` for Zarr).
    model : str | Path, default: "default"
        Model to embed with (``"default"`` or a model file); its task heads add label columns.
    sampling_frequency : float | None, default: None
        Frame rate used to turn spike times into samples. None: ``1 / units.resolution`` when the file sets a
        valid one (at most 10 ms), else 30 kHz. The embedding bins spikes at 20 ms, so this only matters for
        files whose spike times are on a coarser grid.
    overwrite : bool, default: False
        Replace an existing ``output``.
    n_jobs : int | None, default: None
        Torch CPU threads (None: SpikeInterface's global job kwargs).
    batch_size : int, default: 16
        Windows per forward pass.
    device : str, default: "cpu"
        Torch device.
    covariates : "auto" | sequence of str | None, default: "auto"
        Surrounding information for a model trained with covariates (``config.num_covariates = k > 0``, e.g.
        NeurPIR's shipped model); ignored by other models. ``"auto"``: the file's behavioural time series
        (``processing["behavior"]``) and trials indicator, resampled onto the model's bins and standardised by
        :func:`~spikeinterface_neuronid.nwb.read_nwb_covariates`, which keeps the first ``k`` channels or pads
        with zeros, with a warning, when the file offers another number. A sequence: those sources, by path
        (e.g. ``["behavior/Position/position", "trials"]``). None: none (the model then gets zeros, with a
        warning). A file with neither behaviour nor trials is embedded with zeros, with that warning.

    Returns
    -------
    int
        The number of units embedded.

    Raises
    ------
    NWBAnnotateError
        The file is not an NWB file or pynwb cannot read it, has no Units table, no spike_times, no units, no
        spikes at all, or is already annotated.
    FileExistsError
        ``output`` exists and ``overwrite`` is False.
    ValueError
        ``output`` is ``source``.

    Warns
    -----
    UserWarning
        When temporaries of an earlier, killed run for ``output`` are removed, or when hdmf cannot re-write the
        file and the copy is made by appending to the source's bytes instead (see
        :func:`~spikeinterface_neuronid.nwb.write_embeddings_to_nwb`).
    """
    from .. import extension  # noqa: F401  (registers the extension)

    source, output = Path(source), Path(output)
    if not source.exists():
        raise FileNotFoundError(f"NWB file not found: {source}")
    if os.path.realpath(output) == os.path.realpath(source):
        raise ValueError(f"output {output} is the source file itself; write the annotated copy to another path")
    _recover_interrupted_writes(output)  # temporaries of a killed earlier run (SIGKILL): removed or restored
    if os.path.lexists(output) and not overwrite:
        raise FileExistsError(f"{output} exists; pass overwrite=True to replace it")
    _check_output_path(output, overwrite)  # fail before the (slow) embedding
    analyzer, t_start, duration = nwb_analyzer(source, sampling_frequency)
    job_kwargs = dict(progress_bar=False)
    if n_jobs is not None:
        job_kwargs["n_jobs"] = n_jobs
    cov = file_covariates(source, model, covariates, t_start=t_start, duration=duration)
    cov_kwargs = {} if cov is None else dict(covariates=cov.values, covariate_rate_hz=cov.rate_hz)
    ext = analyzer.compute(
        "neuron_embedding", model=str(model), batch_size=batch_size, device=device, **cov_kwargs, **job_kwargs
    )
    if cov is not None:  # provenance in the model record: which channels of the file were the covariates
        summary = dict(ext.params["covariates"], source=f"{source.name}: {', '.join(cov.channels)}")
        ext.params = {**ext.params, "covariates": summary}
    write_embeddings_to_nwb(analyzer, source, output, overwrite=overwrite)
    return analyzer.get_num_units()


class _Terminated(SystemExit):
    """SIGTERM while annotating, raised in the main thread so that the write in progress removes its temporary.

    A ``SystemExit`` (exit status 128 + 15 = 143, as for a process killed by SIGTERM): no ``except Exception``
    catches it, and every ``finally`` on the way runs.
    """


@contextlib.contextmanager
def _sigterm_as_exception():
    """While inside, SIGTERM raises :class:`_Terminated` in the main thread; the previous handler is restored.

    Only when called from the main thread and SIGTERM has its default handler (which kills the process at once,
    leaving the temporary of the file being written behind): a handler of the application is left alone.
    """
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) is not (
        signal.SIG_DFL
    ):
        yield
        return

    def handler(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the clean-up is not interrupted by a second one
        raise _Terminated(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _is_annotated_copy(path: Path) -> bool:
    """Whether ``path`` has our model record (cheap: h5py / the Zarr store's folders, not pynwb)."""
    if is_zarr_path(path):
        return (Path(path) / "general" / MODEL_RECORD_NAME).is_dir()
    try:
        import h5py

        with h5py.File(path, "r") as f:
            return "general" in f and MODEL_RECORD_NAME in f["general"]
    except (OSError, ValueError):  # not HDF5: annotate_nwb_file reports it
        return False


def _discover(
    inputs: Sequence[str | Path], output_folder: str | Path, cli: bool = False
) -> tuple[list[tuple[Path, Path]], list[Path]]:
    """The files to annotate and the annotated copies skipped in input folders (earlier runs' outputs).

    Raises
    ------
    FileNotFoundError, ValueError
        From :func:`find_nwb_files`; or the output folder is an input folder, or a copy would replace its source.
    """
    out_term = "-o" if cli else "output_folder"
    out_real = os.path.realpath(output_folder)
    for item in inputs:
        if Path(item).is_dir() and not is_nwb_path(Path(item)) and os.path.realpath(item) == out_real:
            raise ValueError(
                f"{out_term} {output_folder} is the input folder {item}: the annotated copies would replace the "
                f"sources; name another folder, e.g. {out_term} {Path(item) / 'annotated'}"
            )
    files = find_nwb_files(inputs, exclude=output_folder)
    for source, rel in files:
        if os.path.realpath(Path(output_folder) / rel) == os.path.realpath(source):
            raise ValueError(
                f"{out_term} {output_folder} would write the annotated copy of {source} over the file itself; "
                f"name another folder, e.g. {out_term} {Path(output_folder) / 'annotated'}"
            )
    explicit = {os.path.realpath(i) for i in inputs if Path(i).is_file() or is_nwb_path(Path(i))}
    keep, skipped = [], []
    for source, rel in files:
        if os.path.realpath(source) not in explicit and _is_annotated_copy(source):
            skipped.append(source)  # an earlier run's output inside the input tree
        else:
            keep.append((source, rel))
    return keep, skipped


def _skipped_note(skipped: list[Path]) -> str:
    shown = ", ".join(str(p) for p in skipped[:3]) + (f", … ({len(skipped)} in all)" if len(skipped) > 3 else "")
    what = "an annotated copy" if len(skipped) == 1 else f"{len(skipped)} annotated copies"
    return f"skipped {what} found in the input folders (outputs of an earlier run): {shown}"


def annotate_nwb_files(
    inputs: Sequence[str | Path],
    output_folder: str | Path,
    *,
    model: str | Path = "default",
    sampling_frequency: float | None = None,
    overwrite: bool = False,
    progress_bar: bool = True,
    n_jobs: int | None = None,
    batch_size: int = 16,
    device: str = "cpu",
    covariates: str | Sequence[str] | None = "auto",
) -> list[AnnotateResult]:
    """Annotate NWB files (and folders of them) into ``output_folder``; a failing file does not stop the others.

    Each file's annotated copy (embeddings, labels of every task head, model record; see
    :func:`~spikeinterface_neuronid.nwb.write_embeddings_to_nwb`) is written to ``output_folder`` under its name,
    or its path relative to the input folder it was found in (a DANDI tree ``sub-*/sub-*_ses-*.nwb`` is
    mirrored). The copies have new identifiers; the sources are only read.

    Files in input folders that are already annotated copies (the outputs of an earlier run into another folder
    of the tree) are skipped, with a warning; a file named explicitly is annotated (and fails if annotated).
    SIGTERM (from the main thread, when the application has not set a handler of its own) stops the run
    cleanly: the file being written is not left behind as a temporary, and :class:`SystemExit` (status 143) is
    raised.

    Parameters
    ----------
    inputs : sequence of str | Path
        NWB files and folders (searched recursively, see :func:`find_nwb_files`).
    output_folder : str | Path
        Where the annotated copies go (created if needed). It may lie inside an input folder: it is skipped
        when searching. It must not be an input folder itself.
    model : str | Path, default: "default"
        Model to embed with.
    sampling_frequency : float | None, default: None
        See :func:`annotate_nwb_file`.
    overwrite : bool, default: False
        Replace existing copies (otherwise such a file is reported as failed).
    progress_bar : bool, default: True
        A tqdm progress bar over files.
    n_jobs, batch_size, device, covariates
        See :func:`annotate_nwb_file`.

    Returns
    -------
    list of AnnotateResult
        One per file, in processing order; ``result.error`` says why a file failed.

    Raises
    ------
    FileNotFoundError, ValueError
        From :func:`find_nwb_files` (missing input, two inputs with the same output path), or the output folder
        is an input folder (the copies would replace their sources); before any work.
    """
    files, skipped = _discover(inputs, output_folder)
    if skipped:
        warnings.warn(_skipped_note(skipped), UserWarning, stacklevel=2)
    results: list[AnnotateResult] = []
    _annotate_files(
        files,
        Path(output_folder),
        results,
        model=model,
        sampling_frequency=sampling_frequency,
        overwrite=overwrite,
        progress_bar=progress_bar,
        n_jobs=n_jobs,
        batch_size=batch_size,
        device=device,
        covariates=covariates,
    )
    return results


def _annotate_files(files, output_folder: Path, results: list, *, progress_bar: bool, **kwargs) -> None:
    """Annotate ``files`` (from :func:`_discover`), appending an :class:`AnnotateResult` per file to ``results``."""
    from tqdm.auto import tqdm

    from ..models import resolve_model

    resolve_model(str(kwargs["model"]))  # a bad model is one error for the run, not one per file
    bar = tqdm(files, desc="neuronid annotate", unit="file", disable=not progress_bar)
    try:
        with _sigterm_as_exception():
            for source, rel in bar:
                bar.set_postfix_str(str(rel), refresh=False)
                output = output_folder / rel
                t0 = time.perf_counter()
                try:
                    n = annotate_nwb_file(source, output, **kwargs)
                    results.append(AnnotateResult(source, output, n, time.perf_counter() - t0))
                except Exception as err:  # one bad file must not stop the batch (SIGTERM, Ctrl-C do)
                    results.append(
                        AnnotateResult(source, output, 0, time.perf_counter() - t0, _first_line(err, 600), err)
                    )
    finally:
        bar.close()


def _cli_error(result: AnnotateResult) -> str:
    """``result.error`` in the command line's terms."""
    err = result.exception
    if isinstance(err, FileExistsError):
        return f"{result.output} exists; pass --overwrite to replace it"
    if isinstance(err, NWBAnnotateError):
        return str(err).splitlines()[0]
    return result.error or ""


def annotate_command(
    inputs: Sequence[str | Path],
    output_folder: str | Path,
    *,
    model: str | Path = "default",
    sampling_frequency: float | None = None,
    overwrite: bool = False,
    progress_bar: bool = True,
) -> int:
    """``neuronid annotate``: run :func:`annotate_nwb_files`, print a summary, return the exit code.

    Every problem is printed as one line, in the command line's terms (``-o``, ``--overwrite``).

    Returns
    -------
    int
        0 when every file was annotated, 1 when at least one failed (the others are still written), 2 when
        the inputs name no NWB file or cannot be used at all, 143 when stopped by SIGTERM (the file being
        written is removed, the files done are kept).
    """
    import sys

    try:
        files, skipped = _discover(inputs, output_folder, cli=True)
    except (FileNotFoundError, ValueError) as err:
        print(f"neuronid annotate: {err}", file=sys.stderr)
        return 2
    if skipped:
        print(f"neuronid annotate: {_skipped_note(skipped)}", file=sys.stderr, flush=True)
    if not files:
        print(
            f"neuronid annotate: no NWB file (*.nwb, *.nwb.zarr) to annotate in {', '.join(str(i) for i in inputs)}",
            file=sys.stderr,
        )
        return 2
    t0 = time.perf_counter()
    results: list[AnnotateResult] = []
    try:
        _annotate_files(
            files,
            Path(output_folder),
            results,
            model=model,
            sampling_frequency=sampling_frequency,
            overwrite=overwrite,
            progress_bar=progress_bar,
        )
    except (FileNotFoundError, ValueError, ImportError) as err:
        print(f"neuronid annotate: {str(err).splitlines()[0]}", file=sys.stderr)
        return 2
    except _Terminated as stop:
        print(
            f"neuronid annotate: stopped by SIGTERM after {len(results)} of {len(files)} file(s); the copies "
            f"written are kept in {output_folder}, the one being written was removed",
            file=sys.stderr,
        )
        return int(stop.code)
    failed = [r for r in results if not r.ok]
    for r in results:  # in processing order; flushed so that stdout and stderr lines interleave in that order
        if r.ok:
            print(f"{r.source} -> {r.output} ({r.num_units} units, {r.seconds:.1f} s)", flush=True)
        else:
            print(f"FAILED {r.source}: {_cli_error(r)}", file=sys.stderr, flush=True)
    print(
        f"annotated {len(results) - len(failed)} of {len(results)} file(s) into {output_folder} "
        f"in {time.perf_counter() - t0:.1f} s" + (f"; {len(failed)} failed (see above)" if failed else "")
    )
    return 1 if failed else 0
