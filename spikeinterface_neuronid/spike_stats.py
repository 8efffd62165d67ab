"""Spike-time statistics of a population over spans of a recording (pure numpy; no torch, no SpikeInterface).

Two input channels of the span-context NuCLR model are computed from spike times rather than from the
20 ms counts its temporal blocks see:

* **fine-timescale single-unit statistics** (1 ms resolution): firing rate, ISI coefficient of variation,
  CV2, a log-spaced ISI histogram (1 ms to 10 s) and the autocorrelogram at 1-50 ms (log-spaced lags) —
  what LOLCAT, NEMO and CellExplorer classify with, and what 20 ms bins hide (intra-burst intervals);
* **relational statistics**: for every pair of units, the Pearson correlation of their 20 ms spike counts at
  lags of ``-max_lag_bins .. +max_lag_bins`` bins (±300 ms by default; rate-normalised), and for every unit
  the rate of the *rest* of the population at 2-20 ms before and after its spikes (a spike-triggered
  population rate: monosynaptic excitation or inhibition leaves a short asymmetric bump). Spike pairs of two
  units closer than ``coincidence_s`` (1 ms) are removed from both: on real probes they come from duplicate
  units and sorting artefacts, not from the network.

Everything is built from **sums that are additive over time**. :func:`chunk_statistics` reads a segment
once, chunk by chunk (``chunk_s``, 30 s by default), and stores the sums of each chunk
(:class:`ChunkStatistics`); :meth:`ChunkStatistics.inputs` turns the sums over any run of chunks into model
inputs for any subset of units. A training view of any length is therefore a sum of chunk arrays, and
inference accumulates the statistics of a whole span (minutes) without holding more than one chunk of spikes.

Cost, for ``n`` units of one context group and ``T`` seconds: the pair sums take ``O(n^2 T)`` (one complex
matrix product per frequency of the 94-point Fourier transforms of 64-bin segments, about ``6 n^2`` flops per
20 ms bin) and ``n^2 (2 max_lag_bins + 1)`` floats of memory per chunk; the single-unit and spike-triggered
statistics are ``O(spikes)``. Groups of at most ``max_context_units`` units (the inference engine's unit groups)
bound the pair cost for thousands of units.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from . import _chunk_sums
from ._chunk_sums import bin_index, columns
from .data import SpikeTrainSet

__all__ = [
    "StatsSpec",
    "ChunkStatistics",
    "chunk_statistics",
    "bin_index",
    "num_unit_features",
    "num_edge_features",
    "EDGE_BANDS_HZ",
]

@dataclass(frozen=True)
class StatsSpec:
    """Settings of the spike statistics (JSON-native, stored in the model config).

    Parameters
    ----------
    chunk_s : float, default: 30.0
        Length of the chunks whose sums are stored; training spans are whole numbers of chunks.
    pair_bin_s : float, default: 0.02
        Bin width of the counts whose lagged correlations form the pair statistics.
    max_lag_bins : int, default: 15
        Largest lag of the pair correlations, in bins (15 x 20 ms = ±300 ms).
    coincidence_s : float, default: 0.001
        Spike pairs of two different units at most this far apart are removed from the pair and
        spike-triggered statistics (duplicates, sorting artefacts).
    isi_bins : int, default: 20
        Log-spaced ISI histogram bins from 1 ms to 10 s, plus one for ISIs under 1 ms.
    acg_edges_ms : tuple of float, default: (1, 2, 3, 4, 5, 6, 8, 10, 13, 16, 20, 25, 32, 40, 50)
        Edges of the autocorrelogram lag bins, in ms.
    pop_edges_ms : tuple of float, default: (2, 3, 4, 6, 9, 14, 21)
        Edges of the spike-triggered population-rate lag bins, in ms, used on both sides of the spike
        (1 ms bins: a lag of ``[2, 3)`` ms is two bins after the spike's bin).
    segment_bins : int, default: 64
        Segment length of the pair sums, in bins (must be >= 2 * max_lag_bins); each segment's Fourier
        transform has ``segment_bins + 2 * max_lag_bins`` points.
    """

    chunk_s: float = 30.0
    pair_bin_s: float = 0.02
    max_lag_bins: int = 15
    coincidence_s: float = 0.001
    isi_bins: int = 20
    acg_edges_ms: tuple = (1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 13.0, 16.0, 20.0, 25.0, 32.0, 40.0, 50.0)
    pop_edges_ms: tuple = (2.0, 3.0, 4.0, 6.0, 9.0, 14.0, 21.0)
    segment_bins: int = 64

    def __post_init__(self):
        object.__setattr__(self, "acg_edges_ms", tuple(float(v) for v in self.acg_edges_ms))
        object.__setattr__(self, "pop_edges_ms", tuple(float(v) for v in self.pop_edges_ms))
        chunk_bins = self.chunk_s / self.pair_bin_s
        if not (self.chunk_s > 0 and self.pair_bin_s > 0 and abs(chunk_bins - round(chunk_bins)) < 1e-6):
            raise ValueError(
                f"chunk_s ({self.chunk_s}) must be a positive whole number of pair_bin_s ({self.pair_bin_s})"
            )
        if self.max_lag_bins < 0 or 2 * self.max_lag_bins > self.segment_bins:
            raise ValueError(f"max_lag_bins must be in [0, segment_bins / 2], got {self.max_lag_bins}")
        for name in ("acg_edges_ms", "pop_edges_ms"):
            edges = np.asarray(getattr(self, name))
            if edges.size < 2 or np.any(np.diff(edges) <= 0) or edges[0] < 1:
                raise ValueError(f"{name} must be increasing edges >= 1 ms, got {getattr(self, name)}")

    @property
    def num_lags(self) -> int:
        return 2 * self.max_lag_bins + 1

    def to_dict(self) -> dict:
        out = asdict(self)
        out["acg_edges_ms"] = list(self.acg_edges_ms)
        out["pop_edges_ms"] = list(self.pop_edges_ms)
        return out


#: Frequency bands (Hz) of the phase-invariant spectral edge features (20 ms bins: up to 25 Hz).
EDGE_BANDS_HZ = ((2.0, 3.0), (3.0, 4.5), (4.5, 6.5), (6.5, 9.5), (9.5, 13.0), (13.0, 17.0))


def num_edge_features(spec: StatsSpec) -> int:
    """Width of the per-pair input vector of :meth:`ChunkStatistics.inputs`: lags, bands, max."""
    return spec.num_lags + len(EDGE_BANDS_HZ) + 1


def num_unit_features(spec: StatsSpec, relational: bool = True) -> int:
    """Width of the per-unit input vector of :meth:`ChunkStatistics.inputs`."""
    fine = 3 + (spec.isi_bins + 1) + (len(spec.acg_edges_ms) - 1) + 2  # rate, cv, cv2, isi, acg, span, size
    return fine + (2 * (len(spec.pop_edges_ms) - 1) + 1 if relational else 0)


# ------------------------------------------------------------------------------------------------------------------
# per-chunk sums


@dataclass
class ChunkStatistics:
    """Additive spike statistics of one segment, per chunk.

    Attributes
    ----------
    spec : StatsSpec
        The settings they were computed with.
    starts, stops : np.ndarray
        float64 chunk boundaries in seconds, shape ``(C,)``.
    unit_sums : np.ndarray
        float64, shape ``(C, n, K)``: per chunk and unit, the spike count, ISI count / sum / sum of squares,
        CV2 count / sum, the ISI histogram, the autocorrelogram counts and the spike-triggered counts of the
        rest of the population (pre-spike lags, then post-spike lags). Columns: :attr:`columns`.
    pair_sums : np.ndarray | None
        float32, shape ``(C, n, n, L)``: ``sum_t x_i(t) x_j(t + l)`` over the chunk's 20 ms bins ``t`` for the
        ``L = 2 max_lag_bins + 1`` lags ``l`` (spike pairs closer than ``coincidence_s`` removed), or None.
    count_sums : np.ndarray | None
        float64, shape ``(C, n, 3)``: number of bins, sum and sum of squares of each unit's 20 ms counts.
    population_spikes : np.ndarray
        int64, shape ``(C,)``: spikes of all units of the segment in each chunk (the spike-triggered
        statistics count all of them, not only a view's units).
    cumulative : bool
        False: the sum arrays hold one row per chunk. True (:meth:`to_cumulative`): they hold ``C + 1``
        prefix sums, so that the sums over any run of chunks cost one subtraction.
    """

    spec: StatsSpec
    starts: np.ndarray
    stops: np.ndarray
    unit_sums: np.ndarray
    pair_sums: np.ndarray | None
    count_sums: np.ndarray | None
    population_spikes: np.ndarray
    cumulative: bool = False

    def to_cumulative(self) -> "ChunkStatistics":
        """Replace the per-chunk sums by prefix sums in place (same memory; faster sums over spans)."""
        if not self.cumulative:
            for name in ("unit_sums", "pair_sums", "count_sums", "population_spikes"):
                value = getattr(self, name)
                if value is not None:
                    prefix = np.zeros((value.shape[0] + 1, *value.shape[1:]), dtype=value.dtype)
                    np.cumsum(value, axis=0, out=prefix[1:])
                    setattr(self, name, prefix)
            self.cumulative = True
        return self

    def _sum(self, array: np.ndarray, chunks: slice, index=None) -> np.ndarray:
        """Sum of ``array`` over ``chunks`` (then indexed by ``index`` along the following axes)."""
        index = () if index is None else index
        if self.cumulative:
            start, stop, _ = chunks.indices(self.num_chunks)
            return array[stop][index].astype(np.float64) - array[start][index]
        return array[chunks][(slice(None), *index)].sum(axis=0, dtype=np.float64)

    @property
    def num_chunks(self) -> int:
        return int(self.starts.size)

    @property
    def num_units(self) -> int:
        return int(self.unit_sums.shape[1])

    def spike_counts(self, chunks: slice) -> np.ndarray:
        """Spikes of each unit in the chunks ``chunks``."""
        return self._sum(self.unit_sums, chunks)[:, 0]

    def inputs(
        self, chunks: slice, units: np.ndarray, relational: bool = True, fine: bool = True
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Model inputs of ``units`` over the chunks ``chunks``.

        Parameters
        ----------
        chunks : slice
            A run of consecutive chunks (the span).
        units : np.ndarray
            Indices of the units of the view (rows of the outputs, in this order).
        relational : bool, default: True
            Compute the pair correlations and the spike-triggered population rates.
        fine : bool, default: True
            Fill the fine-timescale single-unit columns (else they are zero, the shape stays the same).

        Returns
        -------
        unit_inputs : np.ndarray
            float32, ``(len(units), num_unit_features(spec, relational))``: log rate, CV, CV2, sqrt of the ISI
            histogram fractions, ``log1p`` of the autocorrelogram relative to the rate, log span length (in
            units of 60 s), log number of units, then (relational) the spike-triggered population rate
            relative to its mean, minus 1, times 10 (clipped to ±5), pre then post lags, and its post - pre
            asymmetry at 2-5 ms.
        edges : np.ndarray | None
            float32, ``(len(units), len(units), num_edge_features(spec))``: 5 x the lagged Pearson
            correlations (clipped to ±5), ``edges[a, b, l] = 5 corr(x_a(t), x_b(t + lag_l))`` for the ``L``
            lags, then their phase-invariant summaries: 5 x the magnitude of the Hann-windowed Fourier
            transform over lags in :data:`EDGE_BANDS_HZ` (a Blackman-Tukey cross-spectrum: shared rhythms
            at any phase offset) and 5 x the largest absolute correlation over lags; zero on the diagonal.
            None unless relational.
        """
        spec = self.spec
        units = np.asarray(units, dtype=np.int64)
        duration = float((self.stops[chunks] - self.starts[chunks]).sum())
        u = self._sum(self.unit_sums, chunks, (units,))
        col = columns(spec)
        n_spk = u[:, col["spikes"]]
        rate = n_spk / max(duration, 1e-9)
        isi_n = np.maximum(u[:, col["isi_n"]], 1.0)
        isi_mean = u[:, col["isi_sum"]] / isi_n
        isi_var = np.maximum(u[:, col["isi_sq"]] / isi_n - isi_mean**2, 0.0)
        cv = np.where(isi_mean > 0, np.sqrt(isi_var) / np.maximum(isi_mean, 1e-12), 0.0)
        cv2 = u[:, col["cv2_sum"]] / np.maximum(u[:, col["cv2_n"]], 1.0)
        isi_hist = np.sqrt(u[:, col["isi_hist"]] / isi_n[:, None])
        widths = np.diff(np.asarray(spec.acg_edges_ms)) / 1000.0
        expected = np.maximum(n_spk * rate, 1e-12)[:, None] * widths[None, :]
        acg = np.log1p(u[:, col["acg"]] / expected)
        size = np.full(len(units), np.log(max(len(units), 1)))
        span = np.full(len(units), np.log(max(duration, 1e-3) / 60.0))
        parts = [np.log(np.maximum(rate, 1e-3))[:, None], cv[:, None], cv2[:, None], isi_hist, acg]
        if not fine:
            parts = [np.zeros_like(p) for p in parts]
        parts += [span[:, None], size[:, None]]
        edges = None
        if relational:
            others = (float(self._sum(self.population_spikes, chunks)) - n_spk) / max(duration, 1e-9)
            pw = np.diff(np.asarray(spec.pop_edges_ms)) / 1000.0
            expected_pop = np.maximum(n_spk * others, 1e-12)[:, None] * np.concatenate([pw[::-1], pw])[None, :]
            pop = np.clip(10.0 * (u[:, col["pop"]] / expected_pop - 1.0), -5.0, 5.0)
            pop[n_spk < 1] = 0.0
            k = len(pw)
            short = np.asarray(spec.pop_edges_ms)[1:] <= 6.0  # lag bins within 2-5 ms
            asym = pop[:, k:][:, short].mean(axis=1) - pop[:, :k][:, short[::-1]].mean(axis=1)
            parts += [pop, asym[:, None]]
            edges = self._edges(chunks, units)
        unit_inputs = np.concatenate(parts, axis=1).astype(np.float32)
        return unit_inputs, edges

    def _edges(self, chunks: slice, units: np.ndarray) -> np.ndarray:
        if self.pair_sums is None or self.count_sums is None:
            raise ValueError("these statistics were computed without pair sums (relational=False)")
        s = self._sum(self.pair_sums, chunks, (units[:, None], units[None, :]))
        c = self._sum(self.count_sums, chunks, (units,))
        n_bins = np.maximum(c[:, 0], 1.0)
        mean = c[:, 1] / n_bins
        var = np.maximum(c[:, 2] / n_bins - mean**2, 0.0)
        sd = np.sqrt(var)
        cov = s / n_bins[:, None, None] - (mean[:, None] * mean[None, :])[:, :, None]
        denom = (sd[:, None] * sd[None, :])[:, :, None]
        corr = np.divide(cov, denom, out=np.zeros_like(cov), where=denom > 0)
        corr = corr.astype(np.float32)
        cos, sin, band_of = _band_projections(corr.shape[2], self.spec.pair_bin_s)
        flat = corr.reshape(-1, corr.shape[2])
        magnitude = np.sqrt(np.square(flat @ cos) + np.square(flat @ sin))  # (pairs, frequencies)
        bands = (magnitude @ band_of).reshape(*corr.shape[:2], band_of.shape[1])
        edges = np.concatenate([corr, bands, np.abs(corr).max(axis=2, keepdims=True)], axis=2)
        edges = np.clip(5.0 * edges, -5.0, 5.0).astype(np.float32)
        idx = np.arange(len(units))
        edges[idx, idx] = 0.0
        return edges


_BAND_CACHE: dict = {}


def _band_projections(num_lags: int, bin_s: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hann-tapered cosine / sine projections of a lag vector at 0.78 Hz steps, and the band averaging matrix."""
    key = (num_lags, bin_s)
    if key not in _BAND_CACHE:
        nfft = 64
        freqs = np.fft.rfftfreq(nfft, bin_s)
        taper = np.hanning(num_lags + 2)[1:-1]
        lags = np.arange(num_lags) - num_lags // 2
        in_band = [(freqs >= lo) & (freqs < hi) for lo, hi in EDGE_BANDS_HZ]
        used = np.flatnonzero(np.any(in_band, axis=0))
        phase = 2 * np.pi * np.outer(lags, freqs[used]) * bin_s
        cos = (taper[:, None] * np.cos(phase)).astype(np.float32)
        sin = (taper[:, None] * np.sin(phase)).astype(np.float32)
        band_of = np.stack([m[used] / max(m[used].sum(), 1) for m in in_band], axis=1).astype(np.float32)
        _BAND_CACHE[key] = (cos, sin, band_of)
    return _BAND_CACHE[key]


def chunk_boundaries(duration: float, chunk_s: float, start_s: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Chunk starts and stops tiling ``[start_s, duration)``; the last chunk may be shorter (>= 1 ms)."""
    edges = np.arange(start_s, duration, chunk_s, dtype=np.float64)
    stops = np.minimum(edges + chunk_s, duration)
    keep = stops - edges >= 1e-3
    return edges[keep], stops[keep]


def chunk_statistics(
    trains: SpikeTrainSet,
    spec: StatsSpec | None = None,
    relational: bool = True,
    starts: np.ndarray | None = None,
    stops: np.ndarray | None = None,
    units: np.ndarray | None = None,
) -> ChunkStatistics:
    """Per-chunk additive statistics of a segment (see the module docstring).

    Parameters
    ----------
    trains : SpikeTrainSet
        The segment.
    spec : StatsSpec | None, default: None
        Settings; None uses the defaults.
    relational : bool, default: True
        Also compute the pair sums (``O(n^2)`` per chunk).
    starts, stops : np.ndarray | None
        Chunk boundaries in seconds; None tiles the segment with ``spec.chunk_s`` chunks. Boundaries should
        be multiples of ``spec.pair_bin_s`` (they are rounded to the bin grid).
    units : np.ndarray | None
        Units whose statistics are computed (rows of the output, in this order); None: all. The
        spike-triggered statistics always count the spikes of every unit of the segment.

    Returns
    -------
    ChunkStatistics
    """
    spec = spec or StatsSpec()
    if starts is None or stops is None:
        starts, stops = chunk_boundaries(trains.duration, spec.chunk_s)
    starts, stops = np.asarray(starts, dtype=np.float64), np.asarray(stops, dtype=np.float64)
    units = np.arange(trains.num_units) if units is None else np.asarray(units, dtype=np.int64)
    col = columns(spec)
    num_chunks = starts.size
    unit_sums = np.zeros((num_chunks, len(units), col["width"]), dtype=np.float64)
    pair_sums = np.zeros((num_chunks, len(units), len(units), spec.num_lags), dtype=np.float32) if relational else None
    count_sums = np.zeros((num_chunks, len(units), 3), dtype=np.float64) if relational else None
    population = np.zeros(num_chunks, dtype=np.int64)
    all_times = [trains.spike_times[u] for u in range(trains.num_units)]
    times = [all_times[u] for u in units]
    isi_edges = np.concatenate([[0.0], np.geomspace(0.001, 10.0, spec.isi_bins + 1)])
    isi_edges[-1] = np.inf
    for c in range(num_chunks):
        t0, t1 = starts[c], stops[c]
        population[c] = sum(int(np.searchsorted(t, t1, "left") - np.searchsorted(t, t0, "left")) for t in all_times)
        _chunk_sums.single_unit_sums(times, t0, t1, spec, isi_edges, unit_sums[c], col)
        _chunk_sums.spike_triggered_sums(all_times, units, t0, t1, spec, unit_sums[c], col)
        if relational:
            _chunk_sums.pair_sums(times, t0, t1, spec, pair_sums[c], count_sums[c])
    return ChunkStatistics(spec, starts, stops, unit_sums, pair_sums, count_sums, population)
