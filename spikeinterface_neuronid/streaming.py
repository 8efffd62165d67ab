"""A lazy training corpus over NWB files and SortingAnalyzer folders (:class:`LazyCorpus`).

:func:`~spikeinterface_neuronid.training.pretrain` only asks its corpus for an item when it draws a sample from
it, so a corpus that reads sessions on access, and keeps only the last few, trains on hundreds of sessions with
the memory of a few. :class:`LazyCorpus` is that corpus: its length (one item per segment of every source) is
known up front from cheap metadata, and ``corpus[i]`` reads the spike times of item ``i``'s source on demand into
:class:`~spikeinterface_neuronid.data.SpikeTrainSet` objects, keeping at most ``cache_size`` sources in an LRU
cache. The spike times are read exactly as ``neuronid annotate`` (NWB files) and ``neuronid pretrain`` (analyzer
folders) read them, so the items equal those of loading every source eagerly (:func:`load_spike_train_sets`).
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from pathlib import Path

from .data import SpikeTrainSet

__all__ = ["CorpusSourceError", "LazyCorpus", "expand_sources", "source_kind", "load_spike_train_sets"]


class CorpusSourceError(ValueError):
    """A corpus source cannot be read (not an NWB file or analyzer, no spikes, too coarse a time grid, ...).

    The message names the source.
    """


def _is_analyzer_folder(path: Path) -> bool:
    """Whether ``path`` is a saved SortingAnalyzer (binary folder or Zarr store), from its metadata only."""
    info = path / "spikeinterface_info.json"
    if info.is_file():
        try:
            return json.loads(info.read_text()).get("object") == "SortingAnalyzer"
        except (OSError, ValueError):
            return False
    if path.name.lower().endswith(".zarr"):  # a Zarr analyzer keeps the same record in its root attributes
        for meta in (".zattrs", "zarr.json"):
            if (path / meta).is_file():
                try:
                    attrs = json.loads((path / meta).read_text() or "{}")
                except (OSError, ValueError):
                    return False
                attrs = attrs.get("attributes", attrs) if meta == "zarr.json" else attrs
                record = attrs.get("spikeinterface_info", {})
                return isinstance(record, dict) and record.get("object") == "SortingAnalyzer"
    return False


def source_kind(path: str | Path) -> str:
    """What a corpus source is: ``"nwb"`` (``*.nwb`` file or ``*.nwb.zarr`` store) or ``"analyzer"``.

    Parameters
    ----------
    path : str | Path
        The source.

    Returns
    -------
    str
        ``"nwb"`` or ``"analyzer"``.

    Raises
    ------
    FileNotFoundError
        The path does not exist.
    CorpusSourceError
        The path is neither.
    """
    from .nwb.io import is_nwb_path

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"corpus source not found: {path}")
    if is_nwb_path(path):
        return "nwb"
    if path.is_dir() and _is_analyzer_folder(path):
        return "analyzer"
    raise CorpusSourceError(
        f"{path} is neither an NWB file (*.nwb, *.nwb.zarr) nor a saved SortingAnalyzer folder; pass NWB files, "
        "folders that contain them, or SortingAnalyzer folders"
    )


def expand_sources(inputs: Sequence[str | Path]) -> list[Path]:
    """The corpus sources named by ``inputs``, folders of NWB files expanded.

    Parameters
    ----------
    inputs : sequence of str | Path
        NWB files (``*.nwb``, ``*.nwb.zarr``), SortingAnalyzer folders, and other folders, which are searched
        recursively for NWB files as ``neuronid annotate`` searches them
        (:func:`~spikeinterface_neuronid.nwb.annotate.find_nwb_files`: sorted, hidden entries skipped).

    Returns
    -------
    list of Path
        In the order of ``inputs`` (a folder's files sorted), without duplicates.

    Raises
    ------
    FileNotFoundError
        An input does not exist.
    CorpusSourceError
        An input is a file that is not NWB, or a folder without NWB files that is not an analyzer.
    """
    import os

    from .nwb.annotate import find_nwb_files

    found: list[Path] = []
    for item in inputs:
        item = Path(item)
        if not item.exists():
            raise FileNotFoundError(f"corpus source not found: {item}")
        if item.is_dir() and not item.name.lower().endswith(".zarr") and not _is_analyzer_folder(item):
            files = [source for source, _ in find_nwb_files([item])]
            if not files:
                raise CorpusSourceError(
                    f"{item} is not a SortingAnalyzer folder and holds no NWB files (*.nwb, *.nwb.zarr)"
                )
            found.extend(files)
            continue
        source_kind(item)
        found.append(item)
    unique: dict[str, Path] = {}
    for path in found:
        unique.setdefault(os.path.abspath(path), path)
    return list(unique.values())


def _first_line(err: BaseException) -> str:
    from .nwb.inputs import _first_line as first

    return first(err)


def _num_segments(path: Path, kind: str) -> int:
    """Segments of a source, read from metadata (a Units table is one segment)."""
    if kind == "nwb":
        from .nwb.inputs import root_neurodata_type

        try:
            root = root_neurodata_type(path)
        except Exception as err:
            raise CorpusSourceError(f"cannot read {path}: {_first_line(err)}") from err
        if root != "NWBFile":
            raise CorpusSourceError(
                f"cannot read {path}: its root has no neurodata_type 'NWBFile' attribute, so it is not an NWB file"
            )
        return 1
    attributes = path / "recording_info" / "recording_attributes.json"
    if attributes.is_file():  # binary-folder analyzer: no need to open the sorting
        try:
            return len(json.loads(attributes.read_text())["num_samples"])
        except (OSError, ValueError, KeyError, TypeError):
            pass
    analyzer = _load_analyzer(path)
    return int(analyzer.get_num_segments())


def _load_analyzer(path: Path):
    import spikeinterface.core as si

    import spikeinterface_neuronid  # noqa: F401  (registers the extension, so analyzers that hold it load)

    try:
        return si.load_sorting_analyzer(path, load_extensions=False)
    except Exception as err:
        raise CorpusSourceError(f"cannot load the SortingAnalyzer {path}: {_first_line(err)}") from err


def load_spike_train_sets(
    path: str | Path, kind: str | None = None, sampling_frequency: float | None = None
) -> list[SpikeTrainSet]:
    """Read one source into spike-train sets, one per segment.

    Parameters
    ----------
    path : str | Path
        An NWB file (``*.nwb`` or ``*.nwb.zarr``) or a SortingAnalyzer folder.
    kind : str | None, default: None
        ``"nwb"`` or ``"analyzer"``; None: :func:`source_kind`.
    sampling_frequency : float | None, default: None
        NWB only: the frame grid (Hz) of the spike times. None: ``1 / resolution`` of the Units table, or
        30 kHz when it has none, as ``neuronid annotate`` does; the grid must be at least 1 kHz, and a grid below
        10 kHz warns (:func:`~spikeinterface_neuronid.corpus.check_spike_time_resolution`).

    Returns
    -------
    list of SpikeTrainSet
        NWB: one set, spike times in seconds from ``min(0, first spike)``, over the recorded span
        (``obs_intervals``) or up to the last spike. Analyzer: one set per segment, as
        :func:`~spikeinterface_neuronid.corpus.spike_train_corpus` gives them (peak-channel waveforms attached
        when the folder has computed ``templates``).

    Raises
    ------
    CorpusSourceError
        The source cannot be read; the message names it.
    """
    from .corpus import spike_train_corpus

    path = Path(path)
    kind = source_kind(path) if kind is None else kind
    if kind == "nwb":
        from .nwb.inputs import nwb_analyzer

        try:
            analyzer, _, _ = nwb_analyzer(path, sampling_frequency, check_annotated=False)
            return spike_train_corpus([analyzer])
        except Exception as err:
            raise CorpusSourceError(f"cannot read the spike times of {path}: {_first_line(err)}") from err
    if kind != "analyzer":
        raise ValueError(f"kind must be 'nwb', 'analyzer' or None, got {kind!r}")
    analyzer = _load_analyzer(path)
    try:
        return spike_train_corpus([analyzer])
    except Exception as err:
        message = f"cannot read the spike trains of the SortingAnalyzer {path}: {_first_line(err)}"
        raise CorpusSourceError(message) from err


class LazyCorpus(Sequence[SpikeTrainSet]):
    """A training corpus whose sessions are read on access, at most ``cache_size`` of them held at once.

    One item per segment of every source, in source order (an NWB file's Units table is one segment); item
    ``i`` is read the first time it is requested (with the other segments of its source) and kept in an LRU
    cache of sources. Pass it to :func:`~spikeinterface_neuronid.training.pretrain` like a list: the same
    sources in the same order give the same items, so the same weights as training on
    ``[s for p in sources for s in load_spike_train_sets(p)]``.

    Parameters
    ----------
    sources : sequence of str | Path
        NWB files (``*.nwb``, ``*.nwb.zarr``) and saved SortingAnalyzer folders (see :func:`expand_sources` to
        expand folders of NWB files). Only metadata is read up front: each file's root type, each analyzer's
        segment count.
    cache_size : int, default: 4
        Sources kept in memory; peak memory is that of this many sources (plus the one being read), not of the
        corpus. Training draws sessions uniformly, so with ``cache_size`` well below the number of sources most
        draws read a source again, unless it samples in session blocks of at most ``cache_size`` items
        (``pretrain(session_block=...)``, the default of ``neuronid pretrain``), which reads each source about
        once per block. Each DataLoader worker (``pretrain(num_workers=...)``) holds a cache of its own.
    sampling_frequency : float | None, default: None
        NWB frame grid in Hz (see :func:`load_spike_train_sets`); None: from each file's Units table.

    Attributes
    ----------
    sources : list of Path
        The sources.
    kinds : list of str
        ``"nwb"`` or ``"analyzer"`` per source.
    num_loads : int
        Sources read so far (cache misses).

    Raises
    ------
    FileNotFoundError
        A source does not exist.
    CorpusSourceError
        A source is not an NWB file or analyzer, or its metadata cannot be read; the message names it.
    ValueError
        No sources, or ``cache_size < 1``.
    """

    def __init__(
        self, sources: Sequence[str | Path], cache_size: int = 4, sampling_frequency: float | None = None
    ) -> None:
        if isinstance(sources, (str, Path)):
            sources = [sources]
        if int(cache_size) != cache_size or int(cache_size) < 1:
            raise ValueError(f"cache_size must be an integer >= 1, got {cache_size!r}")
        self.sources = [Path(p) for p in sources]
        if not self.sources:
            raise ValueError("no corpus sources: give NWB files or SortingAnalyzer folders")
        self.cache_size = int(cache_size)
        self.sampling_frequency = sampling_frequency
        self.kinds = [source_kind(p) for p in self.sources]
        self._index: list[tuple[int, int]] = []
        for s, (path, kind) in enumerate(zip(self.sources, self.kinds)):
            n = _num_segments(path, kind)
            if n < 1:
                raise CorpusSourceError(f"{path} has no segments")
            self._index.extend((s, segment) for segment in range(n))
        self._cache: OrderedDict[int, list[SpikeTrainSet]] = OrderedDict()
        self._lock = threading.Lock()
        self.num_loads = 0

    def __len__(self) -> int:
        return len(self._index)

    def __getitem__(self, index: int) -> SpikeTrainSet:  # type: ignore[override]
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]  # type: ignore[return-value]
        i = int(index)
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"corpus index {index} out of range for {len(self)} item(s)")
        source, segment = self._index[i]
        return self._load(source)[segment]

    def __iter__(self) -> Iterator[SpikeTrainSet]:
        for i in range(len(self)):
            yield self[i]

    def _load(self, source: int) -> list[SpikeTrainSet]:
        with self._lock:  # pretrain draws in a worker thread; keep loads and evictions consistent
            if source in self._cache:
                self._cache.move_to_end(source)
                return self._cache[source]
            # evict first, so that at most cache_size sources are held even while the next one is read
            while len(self._cache) >= self.cache_size:
                self._cache.popitem(last=False)
            sets = load_spike_train_sets(self.sources[source], self.kinds[source], self.sampling_frequency)
            expected = sum(1 for s, _ in self._index if s == source)
            if len(sets) != expected:
                raise CorpusSourceError(
                    f"{self.sources[source]} has {len(sets)} segment(s) but its metadata said {expected}"
                )
            self.num_loads += 1
            self._cache[source] = sets
            return sets

    def __getstate__(self) -> dict:
        # a copy for a DataLoader worker (spawned) starts with an empty cache and a lock of its own
        state = self.__dict__.copy()
        state["_cache"], state["_lock"] = OrderedDict(), None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    @property
    def cached_sources(self) -> list[Path]:
        """The sources held in memory now, least recently used first."""
        with self._lock:
            return [self.sources[s] for s in self._cache]

    def source_of(self, index: int) -> tuple[Path, int]:
        """``(source, segment_index)`` of item ``index``."""
        source, segment = self._index[index]
        return self.sources[source], segment

    def __repr__(self) -> str:
        return f"LazyCorpus({len(self.sources)} source(s), {len(self)} item(s), cache_size={self.cache_size})"
