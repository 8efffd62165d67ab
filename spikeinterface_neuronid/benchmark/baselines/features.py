"""Handcrafted unit features: single-unit firing statistics, population coupling, pairwise correlations.

Four feature sets, each a baseline with the interface of :mod:`spikeinterface_neuronid.benchmark.baselines` (and
:class:`ConcatenatedFeatures` to put several side by side):

- :class:`SingleUnitFeatures`: log firing rate, ISI coefficient of variation, local variation (CV2), burst
  fraction, a log-spaced ISI histogram and the autocorrelogram, at a chosen time resolution. At 1 ms they are
  the classic firing-pattern features; at the model's bin size (20 ms) they see exactly the information the
  embedding model sees, which separates "the model found something" from "the bins already show it". The
  autocorrelogram is SpikeInterface's own (:func:`spikeinterface.postprocessing.compute_auto_correlograms`);
  SpikeInterface's ISI histogram extension is linear in time, so the log-spaced one is computed here.
- :class:`PopulationCouplingFeatures`: each unit's Pearson correlation with the summed activity of all
  *other* units of its population, at several time scales. A single number that gives away a zero-lag shared
  drive (and therefore the ``easy`` simulator's brain regions); the ``hard`` preset is built so that it fails.
- :class:`PairwiseCorrelationFeatures`: how strongly, at any lag up to a few hundred ms and in a low-frequency
  band, a unit co-varies with its partners: nine summaries (mean, top-10 and top-30 mean over partner units) of
  the largest lagged cross-correlation, the zero-lag correlation and the coherence, from spike counts over the
  whole recording. Lagged and oscillatory shared structure (the ``hard`` preset's regions) shows up here even
  when the correlation with the summed population is zero.
- :class:`SpikeTriggeredPopulationFeatures`: the firing rate of the other units in the ±20 ms around a unit's
  spikes, at 1 ms resolution, and its post-minus-pre asymmetry (a monosynaptic excitatory / inhibitory
  signature); coincidences within ±1 ms are left out, as on real probes they come from duplicate units and
  sorting artefacts.

Nothing is learned: ``fit`` only checks its input, so these baselines are the same in every protocol.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from sklearn.base import BaseEstimator

from ...data import SpikeTrainSet

__all__ = [
    "SingleUnitFeatures",
    "PopulationCouplingFeatures",
    "PairwiseCorrelationFeatures",
    "SpikeTriggeredPopulationFeatures",
    "ConcatenatedFeatures",
]

_SAMPLING_FREQUENCY = 30000.0


def _check_populations(populations: Sequence[SpikeTrainSet]) -> list[SpikeTrainSet]:
    populations = list(populations)
    if not populations:
        raise ValueError("give at least one population (SpikeTrainSet)")
    for i, pop in enumerate(populations):
        if not isinstance(pop, SpikeTrainSet):
            raise ValueError(f"population {i} is a {type(pop).__name__}, expected a SpikeTrainSet")
    return populations


def _to_sorting(pop: SpikeTrainSet, resolution_s: float):
    """A one-segment NumpySorting of the population, spike times quantised to ``resolution_s``."""
    from spikeinterface.core import NumpySorting

    fs = _SAMPLING_FREQUENCY
    step = max(1, int(round(resolution_s * fs)))
    last = int(np.ceil(pop.duration * fs)) - 1
    trains = {
        i: np.minimum((np.floor(np.asarray(times) * fs / step) * step).astype(np.int64), last)
        for i, times in enumerate(pop.spike_times)
    }
    return NumpySorting.from_unit_dict([trains], fs)


class SingleUnitFeatures(BaseEstimator):
    """Firing-statistics features of each unit on its own, at a chosen time resolution.

    Parameters
    ----------
    resolution_s : float, default: 0.001
        Spike times are quantised to this grid before any statistic is computed (0.001: the classic 1 ms
        features; 0.02: what a 20 ms binned model sees).
    isi_bins : int, default: 20
        Log-spaced ISI histogram bins between ``resolution_s`` and 10 s (plus one bin for ISIs shorter than
        ``resolution_s``, i.e. spikes in the same bin).
    acg_bins : int, default: 25
        Autocorrelogram bins of width ``resolution_s`` on the positive lag side (the ACG spans
        ``acg_bins * resolution_s``; at 1 ms, 0-25 ms; at 20 ms, 0-500 ms).
    burst_isi_s : float, default: 0.01
        ISIs below this count as within a burst (at a resolution coarser than it, the same-bin fraction).

    Attributes
    ----------
    feature_names_ : list of str
        Name of each output column.
    """

    supervised = False
    needs_templates = False

    def __init__(self, resolution_s: float = 0.001, isi_bins: int = 20, acg_bins: int = 25, burst_isi_s: float = 0.01):
        self.resolution_s = resolution_s
        self.isi_bins = isi_bins
        self.acg_bins = acg_bins
        self.burst_isi_s = burst_isi_s

    def _validate(self) -> None:
        if not (np.isfinite(self.resolution_s) and 0 < self.resolution_s <= 1.0):
            raise ValueError(f"resolution_s must be in (0, 1] seconds, got {self.resolution_s!r}")
        for name in ("isi_bins", "acg_bins"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")

    def fit(self, populations: Sequence[SpikeTrainSet], labels=None, templates=None) -> "SingleUnitFeatures":
        """Check the input (nothing is learned)."""
        self._validate()
        _check_populations(populations)
        self.feature_names_ = (
            ["log_rate", "isi_cv", "isi_cv2", "burst_fraction"]
            + [f"log_isi_{k}" for k in range(self.isi_bins + 1)]
            + [f"acg_{k}" for k in range(self.acg_bins)]
        )
        return self

    def transform(self, populations: Sequence[SpikeTrainSet], templates=None) -> list[np.ndarray]:
        """One ``(num_units, num_features)`` array per population (NaN rows for units with < 3 spikes)."""
        from spikeinterface.postprocessing import compute_auto_correlograms

        if not hasattr(self, "feature_names_"):
            raise ValueError("call fit() before transform()")
        out = []
        res = float(self.resolution_s)
        edges = np.concatenate([[0.0], np.geomspace(res, 10.0, self.isi_bins + 1)])
        edges[-1] = np.inf
        for pop in _check_populations(populations):
            sorting = _to_sorting(pop, res)
            bin_ms = res * 1000.0
            acg, _ = compute_auto_correlograms(sorting, window_ms=2 * self.acg_bins * bin_ms, bin_ms=bin_ms)
            half = acg[:, self.acg_bins :].astype(np.float64)  # lags [0, 1) ... [K - 1, K) bins
            rows = np.full((len(pop.spike_times), len(self.feature_names_)), np.nan)
            for i, times in enumerate(pop.spike_times):
                if len(times) < 3:
                    continue
                t = np.floor(np.asarray(times) / res) * res
                isi = np.diff(t)
                mean_isi = isi.mean()
                cv = isi.std() / mean_isi if mean_isi > 0 else 0.0
                pair = isi[1:] + isi[:-1]
                cv2 = float(
                    np.mean(np.divide(2 * np.abs(isi[1:] - isi[:-1]), pair, out=np.zeros_like(pair), where=pair > 0))
                )
                burst = float(np.mean(isi < max(self.burst_isi_s, res * 0.5)))
                hist = np.histogram(isi, bins=edges)[0] / isi.size
                rate = len(times) / pop.duration
                # ACG as a rate in Hz at each lag, relative to the unit's mean rate
                acg_rate = half[i] / (len(times) * res) / max(rate, 1e-9)
                rows[i] = np.concatenate([[np.log(rate), cv, cv2, burst], hist, np.log1p(acg_rate)])
            out.append(rows)
        return out


class PopulationCouplingFeatures(BaseEstimator):
    """Each unit's correlation with the summed activity of the other units of its population.

    Parameters
    ----------
    time_scales_s : sequence of float, default: (0.02, 0.2, 1.0)
        Bin widths at which the spike counts are correlated; one output column per time scale.

    Attributes
    ----------
    feature_names_ : list of str
        Name of each output column.
    """

    supervised = False
    needs_templates = False

    def __init__(self, time_scales_s: Sequence[float] = (0.02, 0.2, 1.0)):
        self.time_scales_s = time_scales_s

    def fit(self, populations: Sequence[SpikeTrainSet], labels=None, templates=None) -> "PopulationCouplingFeatures":
        """Check the input (nothing is learned)."""
        scales = [float(s) for s in self.time_scales_s]
        if not scales or not all(np.isfinite(s) and s > 0 for s in scales):
            raise ValueError(f"time_scales_s must be positive numbers of seconds, got {self.time_scales_s!r}")
        _check_populations(populations)
        self.feature_names_ = [f"coupling_{s * 1000:g}ms" for s in scales]
        return self

    def transform(self, populations: Sequence[SpikeTrainSet], templates=None) -> list[np.ndarray]:
        """One ``(num_units, num_time_scales)`` array per population (NaN for silent units)."""
        if not hasattr(self, "feature_names_"):
            raise ValueError("call fit() before transform()")
        out = []
        for pop in _check_populations(populations):
            cols = []
            for scale in self.time_scales_s:
                n_bins = max(2, int(pop.duration // scale))
                edges = np.arange(n_bins + 1) * scale
                counts = np.stack([np.histogram(t, bins=edges)[0] for t in pop.spike_times]).astype(np.float64)
                others = counts.sum(axis=0, keepdims=True) - counts
                a = counts - counts.mean(axis=1, keepdims=True)
                b = others - others.mean(axis=1, keepdims=True)
                denom = np.sqrt((a**2).sum(axis=1) * (b**2).sum(axis=1))
                with np.errstate(invalid="ignore", divide="ignore"):
                    cols.append(np.where(denom > 0, (a * b).sum(axis=1) / denom, np.nan))
            out.append(np.stack(cols, axis=1))
        return out


def _bin_counts(pop: SpikeTrainSet, bin_s: float, num_bins: int) -> np.ndarray:
    """``(num_units, num_bins)`` spike counts in bins of ``bin_s`` from time 0 (later spikes go to the last bin)."""
    counts = np.zeros((len(pop.spike_times), num_bins), dtype=np.float64)
    for i, times in enumerate(pop.spike_times):
        idx = np.minimum(np.floor(np.asarray(times, dtype=np.float64) / bin_s).astype(np.int64), num_bins - 1)
        counts[i] = np.bincount(idx, minlength=num_bins)
    return counts


def _partner_summaries(values: np.ndarray, valid: np.ndarray, top_k: Sequence[int]) -> np.ndarray:
    """Mean and top-k means over partners of a symmetric ``(n, n)`` pair statistic.

    Partners of unit ``i`` are the other valid units; rows of invalid units, and of units without partners, are NaN.
    ``top_k`` uses ``min(k, number of partners)``.
    """
    n = values.shape[0]
    out = np.full((n, 1 + len(top_k)), np.nan)
    partner = valid[None, :] & valid[:, None] & ~np.eye(n, dtype=bool)
    ordered = -np.sort(-np.where(partner, values, -np.inf), axis=1)  # descending, non-partners (-inf) last
    csum = np.cumsum(np.where(np.isfinite(ordered), ordered, 0.0), axis=1)
    num = partner.sum(axis=1)
    rows = np.flatnonzero(num > 0)
    for c, k in enumerate([None, *top_k]):
        take = num[rows] if k is None else np.minimum(int(k), num[rows])
        out[rows, c] = csum[rows, take - 1] / take
    return out


class PairwiseCorrelationFeatures(BaseEstimator):
    """How strongly a unit co-varies with its partners: lagged correlation, zero-lag correlation, coherence.

    Spike counts in bins of ``bin_s`` over the whole recording give, for every pair of units, (a) the largest
    absolute Pearson cross-correlation over lags within ``±max_lag_s``, (b) the absolute zero-lag correlation
    and (c) the mean magnitude-squared coherence in ``band`` (Welch: Hann window, segments of
    ``segment_bins`` bins, half overlap, constant detrend, as :func:`scipy.signal.coherence`). Each unit gets
    the mean, and the mean of the ``k`` largest values, over its partner units for each of the three: with
    the defaults nine columns. Nothing is learned.

    Cross-correlations of one unit with all others come from one batch of FFTs of the zero-padded,
    z-scored count series (cost ``O(N^2 T log T)`` for ``N`` units and ``T`` bins, memory ``O(N T)``);
    the coherence from per-frequency cross-spectral matrices (``O(N^2 S F)`` for ``S`` segments and ``F``
    band frequencies).

    Parameters
    ----------
    bin_s : float, default: 0.02
        Width of the count bins in seconds.
    max_lag_s : float, default: 0.3
        Largest lag (either sign) of the cross-correlation, in seconds.
    band : tuple of float, default: (2.0, 16.0)
        Frequency band of the coherence in Hz (inclusive); must lie below the Nyquist frequency
        ``1 / (2 bin_s)`` and hold at least one frequency of the ``segment_bins``-bin spectrum.
    top_k : sequence of int, default: (10, 30)
        Besides the mean over all partners, the mean over the ``min(k, partners)`` largest values.
    segment_bins : int, default: 64
        Welch segment length in bins.

    Attributes
    ----------
    feature_names_ : list of str
        Name of each output column.
    """

    supervised = False
    needs_templates = False

    _STATISTICS = ("max_abs_xcorr", "zero_lag_abs_corr", "coherence")

    def __init__(
        self,
        bin_s: float = 0.02,
        max_lag_s: float = 0.3,
        band: tuple[float, float] = (2.0, 16.0),
        top_k: Sequence[int] = (10, 30),
        segment_bins: int = 64,
    ):
        self.bin_s = bin_s
        self.max_lag_s = max_lag_s
        self.band = band
        self.top_k = top_k
        self.segment_bins = segment_bins

    def _validate(self) -> None:
        if not (np.isfinite(self.bin_s) and 0 < self.bin_s <= 1.0):
            raise ValueError(f"bin_s must be in (0, 1] seconds, got {self.bin_s!r}")
        if not (np.isfinite(self.max_lag_s) and self.max_lag_s >= 0):
            raise ValueError(f"max_lag_s must be a non-negative number of seconds, got {self.max_lag_s!r}")
        if int(self.segment_bins) < 4:
            raise ValueError(f"segment_bins must be >= 4, got {self.segment_bins!r}")
        try:
            low, high = (float(f) for f in self.band)
        except (TypeError, ValueError):
            raise ValueError(f"band must be a (low, high) pair of frequencies in Hz, got {self.band!r}") from None
        freqs = np.fft.rfftfreq(int(self.segment_bins), self.bin_s)
        if not (0 <= low <= high < 0.5 / self.bin_s) or not np.any((freqs >= low) & (freqs <= high)):
            raise ValueError(
                f"band must satisfy 0 <= low <= high < the Nyquist frequency {0.5 / self.bin_s:g} Hz and hold a "
                f"frequency of the {int(self.segment_bins)}-bin spectrum (resolution {freqs[1]:g} Hz), "
                f"got {self.band!r}"
            )
        k = list(self.top_k)
        if not all(isinstance(v, (int, np.integer)) and v >= 1 for v in k):
            raise ValueError(f"top_k must be positive integers, got {self.top_k!r}")

    def fit(self, populations: Sequence[SpikeTrainSet], labels=None, templates=None) -> "PairwiseCorrelationFeatures":
        """Check the input (nothing is learned)."""
        self._validate()
        _check_populations(populations)
        low, high = (float(f) for f in self.band)
        aggregates = ["mean"] + [f"top{int(k)}" for k in self.top_k]
        names = {"coherence": f"coherence_{low:g}_{high:g}Hz"}
        self.feature_names_ = [f"{names.get(s, s)}_{a}" for s in self._STATISTICS for a in aggregates]
        return self

    def pair_statistics(self, pop: SpikeTrainSet) -> dict[str, np.ndarray]:
        """The three ``(num_units, num_units)`` pair statistics of one population, and which units are valid.

        Returns
        -------
        dict
            ``max_abs_xcorr``, ``zero_lag_abs_corr``, ``coherence`` (NaN for pairs with a silent unit), ``lag_s``
            (signed lag of the largest absolute cross-correlation: ``j`` follows ``i`` by ``lag_s[i, j]``) and
            ``valid`` (units whose counts vary).
        """
        from scipy.fft import irfft, next_fast_len, rfft

        self._validate()
        num_bins = max(2, int(pop.duration // self.bin_s))
        counts = _bin_counts(pop, float(self.bin_s), num_bins)
        n = counts.shape[0]
        centred = counts - counts.mean(axis=1, keepdims=True)
        std = np.sqrt((centred**2).mean(axis=1))
        valid = std > 0
        z = np.divide(centred, std[:, None], out=np.zeros_like(centred), where=valid[:, None])
        max_lag = min(int(round(self.max_lag_s / self.bin_s)), num_bins - 1)
        nfft = next_fast_len(num_bins + max_lag, real=True)
        spectra = rfft(z, n=nfft, axis=1)
        lag_index = np.r_[np.arange(0, max_lag + 1), np.arange(nfft - max_lag, nfft)] if max_lag else np.array([0])
        lags = np.r_[np.arange(0, max_lag + 1), -np.arange(max_lag, 0, -1)] if max_lag else np.array([0])
        max_abs = np.full((n, n), np.nan)
        best_lag = np.full((n, n), np.nan)
        zero = np.full((n, n), np.nan)
        rows = np.flatnonzero(valid)
        for i in rows:
            j = rows[rows > i]  # each pair once: the statistics are symmetric, the lag antisymmetric
            if j.size == 0:
                continue
            # cc[m, tau] = sum_t z_j[t + tau] z_i[t] / T: unit j[m] lagging unit i by tau bins
            cc = np.abs(irfft(spectra[j] * np.conj(spectra[i]), n=nfft, axis=1)[:, lag_index]) / num_bins
            arg = cc.argmax(axis=1)
            max_abs[i, j] = max_abs[j, i] = cc[np.arange(j.size), arg]
            best_lag[i, j] = lags[arg] * self.bin_s
            best_lag[j, i] = -best_lag[i, j]
            zero[i, j] = zero[j, i] = cc[:, 0]
        coherence = self._coherence(counts, valid)
        bad = ~(valid[:, None] & valid[None, :])
        for m in (max_abs, best_lag, zero, coherence):
            m[bad] = np.nan
        return dict(max_abs_xcorr=max_abs, zero_lag_abs_corr=zero, coherence=coherence, lag_s=best_lag, valid=valid)

    def _coherence(self, counts: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """Mean magnitude-squared coherence in ``band`` of every pair (Welch, as scipy.signal.coherence)."""
        from scipy.signal import get_window

        n, num_bins = counts.shape
        seg = int(self.segment_bins)
        if num_bins < seg:
            return np.full((n, n), np.nan)
        step = seg // 2
        starts = np.arange(0, num_bins - seg + 1, step)
        window = get_window("hann", seg)
        freqs = np.fft.rfftfreq(seg, self.bin_s)
        low, high = (float(f) for f in self.band)
        band = np.flatnonzero((freqs >= low) & (freqs <= high))
        segments = counts[:, starts[:, None] + np.arange(seg)[None, :]]  # (n, S, seg)
        segments = segments - segments.mean(axis=2, keepdims=True)
        spectra = np.fft.rfft(segments * window, axis=2)[:, :, band]  # (n, S, F)
        total = np.zeros((n, n))
        for f in range(band.size):
            x = spectra[:, :, f]
            cross = x @ x.conj().T  # (n, n); the 1 / S scale cancels in the ratio
            power = np.real(np.diag(cross))
            denom = power[:, None] * power[None, :]
            with np.errstate(invalid="ignore", divide="ignore"):
                total += np.where(denom > 0, np.abs(cross) ** 2 / denom, np.nan)
        return total / band.size

    def transform(self, populations: Sequence[SpikeTrainSet], templates=None) -> list[np.ndarray]:
        """One ``(num_units, 3 * (1 + len(top_k)))`` array per population (NaN rows for units without partners)."""
        if not hasattr(self, "feature_names_"):
            raise ValueError("call fit() before transform()")
        out = []
        for pop in _check_populations(populations):
            stats = self.pair_statistics(pop)
            valid = stats["valid"]
            cols = [_partner_summaries(np.nan_to_num(stats[s], nan=0.0), valid, self.top_k) for s in self._STATISTICS]
            out.append(np.concatenate(cols, axis=1))
        return out


class SpikeTriggeredPopulationFeatures(BaseEstimator):
    """Firing rate of the *other* units of the population around each unit's spikes, at 1 ms lags.

    For lags ``-max_lag_ms .. +max_lag_ms`` ms the summed spike count of all other units (a 1 ms histogram of
    the population minus the unit's own spikes) is averaged over the unit's spikes, converted to a rate and
    divided by the others' mean rate, minus 1 (0: no modulation; positive lags: after the unit's spikes).
    Lags with ``|lag| <= exclude_ms`` are left out: on real probes, coincidences within ±1 ms come from
    duplicate units and sorting artefacts. The last column is the post-minus-pre asymmetry, the mean over
    lags ``+asymmetry_ms[0] .. +asymmetry_ms[1]`` minus the mean over ``-asymmetry_ms[1] .. -asymmetry_ms[0]``:
    positive when the others fire more just after the unit than just before it (an excitatory
    monosynaptic signature), negative for inhibition. Nothing is learned.

    Parameters
    ----------
    max_lag_ms : int, default: 20
        Largest lag in ms (1 ms bins).
    exclude_ms : int, default: 1
        Lags with ``|lag| <= exclude_ms`` are not used (0 drops only lag 0; -1 keeps every lag).
    asymmetry_ms : tuple of int, default: (2, 5)
        Lag range in ms (inclusive) of the asymmetry column; must lie within ``(exclude_ms, max_lag_ms]``.

    Attributes
    ----------
    feature_names_ : list of str
        Name of each output column.
    lags_ms_ : np.ndarray
        The lag (ms) of each spike-triggered column.
    """

    supervised = False
    needs_templates = False

    _BIN_S = 0.001

    def __init__(self, max_lag_ms: int = 20, exclude_ms: int = 1, asymmetry_ms: tuple[int, int] = (2, 5)):
        self.max_lag_ms = max_lag_ms
        self.exclude_ms = exclude_ms
        self.asymmetry_ms = asymmetry_ms

    def _validate(self) -> None:
        for name in ("max_lag_ms", "exclude_ms"):
            if not isinstance(getattr(self, name), (int, np.integer)):
                raise ValueError(f"{name} must be an integer number of ms, got {getattr(self, name)!r}")
        if self.max_lag_ms < 1:
            raise ValueError(f"max_lag_ms must be >= 1, got {self.max_lag_ms!r}")
        if not -1 <= self.exclude_ms < self.max_lag_ms:
            raise ValueError(f"exclude_ms must be in [-1, max_lag_ms), got {self.exclude_ms!r}")
        try:
            lo, hi = (int(v) for v in self.asymmetry_ms)
        except (TypeError, ValueError):
            raise ValueError(f"asymmetry_ms must be a (low, high) pair of ms, got {self.asymmetry_ms!r}") from None
        if not self.exclude_ms < lo <= hi <= self.max_lag_ms:
            raise ValueError(
                f"asymmetry_ms must satisfy exclude_ms ({self.exclude_ms}) < low <= high <= max_lag_ms "
                f"({self.max_lag_ms}), got {self.asymmetry_ms!r}"
            )

    def fit(
        self, populations: Sequence[SpikeTrainSet], labels=None, templates=None
    ) -> "SpikeTriggeredPopulationFeatures":
        """Check the input (nothing is learned)."""
        self._validate()
        _check_populations(populations)
        lags = np.arange(-int(self.max_lag_ms), int(self.max_lag_ms) + 1)
        self.lags_ms_ = lags[np.abs(lags) > int(self.exclude_ms)]
        self.feature_names_ = [f"stpr_{lag:+d}ms" for lag in self.lags_ms_] + ["stpr_post_minus_pre"]
        return self

    def transform(self, populations: Sequence[SpikeTrainSet], templates=None) -> list[np.ndarray]:
        """One ``(num_units, num_lags + 1)`` array per population (NaN rows for silent units)."""
        if not hasattr(self, "feature_names_"):
            raise ValueError("call fit() before transform()")
        lags = self.lags_ms_
        lo, hi = (int(v) for v in self.asymmetry_ms)
        post = (lags >= lo) & (lags <= hi)
        pre = (lags <= -lo) & (lags >= -hi)
        out = []
        for pop in _check_populations(populations):
            num_bins = max(1, int(np.ceil(pop.duration / self._BIN_S)))
            bins = [
                np.minimum(np.floor(np.asarray(t, dtype=np.float64) / self._BIN_S).astype(np.int64), num_bins - 1)
                for t in pop.spike_times
            ]
            population = np.bincount(np.concatenate(bins), minlength=num_bins) if bins else np.zeros(num_bins)
            total = int(population.sum())
            rows = np.full((len(bins), len(self.feature_names_)), np.nan)
            for i, b in enumerate(bins):
                others_rate = (total - b.size) / pop.duration
                if b.size == 0 or others_rate <= 0:
                    continue
                idx = b[:, None] + lags[None, :]
                inside = (idx >= 0) & (idx < num_bins)
                clipped = np.clip(idx, 0, num_bins - 1)
                own = np.bincount(b, minlength=num_bins)
                others = np.where(inside, population[clipped] - own[clipped], 0)
                num = inside.sum(axis=0)
                with np.errstate(invalid="ignore", divide="ignore"):
                    rate = others.sum(axis=0) / num / self._BIN_S
                rel = rate / others_rate - 1.0
                rows[i, :-1] = rel
                rows[i, -1] = rel[post].mean() - rel[pre].mean()
            out.append(rows)
        return out


class ConcatenatedFeatures(BaseEstimator):
    """Column-wise concatenation of several unsupervised feature baselines.

    Parameters
    ----------
    parts : sequence of baseline estimators
        Each with ``fit`` / ``transform`` as described in :mod:`spikeinterface_neuronid.benchmark.baselines`.
    """

    supervised = False
    needs_templates = False

    def __init__(self, parts: Sequence):
        self.parts = parts

    def fit(self, populations: Sequence[SpikeTrainSet], labels=None, templates=None) -> "ConcatenatedFeatures":
        """Fit every part."""
        if not self.parts:
            raise ValueError("give at least one part")
        self.parts_ = [part.fit(populations, templates=templates) for part in self.parts]
        return self

    def transform(self, populations: Sequence[SpikeTrainSet], templates=None) -> list[np.ndarray]:
        """The parts' outputs side by side, one array per population."""
        if not hasattr(self, "parts_"):
            raise ValueError("call fit() before transform()")
        outputs = [part.transform(populations, templates=templates) for part in self.parts_]
        return [np.concatenate(cols, axis=1) for cols in zip(*outputs)]
