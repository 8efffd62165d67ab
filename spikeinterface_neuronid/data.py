"""Spike trains to binned population windows (pure numpy; no SpikeInterface, no torch).

One recording segment of one population is a :class:`SpikeTrainSet`: a list of sorted spike
times in seconds, one array per unit. Windows are binned lazily, one at a time, so memory does not
grow with the recording length.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

__all__ = [
    "WindowSpec",
    "SpikeTrainSet",
    "ViewPair",
    "check_covariates",
    "inference_window_starts",
    "sample_view_pair",
    "waveform_input",
    "WAVEFORM_GRID_MS",
]


@dataclass(frozen=True)
class WindowSpec:
    """Time discretisation shared by every method.

    Parameters
    ----------
    bin_s : float, default: 0.02
        Bin width in seconds (NuCLR: 20 ms).
    token_bins : int, default: 50
        Bins per token (NuCLR: 1 s tokens).
    window_tokens : int, default: 10
        Tokens per window (NuCLR: 10 s windows).
    """

    bin_s: float = 0.02
    token_bins: int = 50
    window_tokens: int = 10

    @property
    def window_bins(self) -> int:
        return self.token_bins * self.window_tokens

    @property
    def window_s(self) -> float:
        return self.window_bins * self.bin_s

    def to_dict(self) -> dict:
        return asdict(self)


class SpikeTrainSet:
    """Spike times of all units of one population during one continuous segment.

    Parameters
    ----------
    spike_times : sequence of np.ndarray
        One 1-D array of spike times in seconds per unit, sorted ascending, within ``[0, duration]``.
    duration : float
        Length of the segment in seconds.
    unit_ids : sequence, optional
        Identifiers of the units, only used in error messages. Default: positions.
    covariates : np.ndarray, optional
        Surrounding information recorded with the population (e.g. a stimulus or behaviour), shape
        ``(n_samples, k)``, sample ``i`` covering ``[i, i + 1) / covariate_rate_hz`` seconds from the segment
        start; it must cover the whole duration (``n_samples >= duration * covariate_rate_hz``). It is kept
        as given and binned per window (:meth:`bin_covariates`). Default: none.
    covariate_rate_hz : float, optional
        Sampling rate of ``covariates`` in Hz; required with ``covariates``.
    waveforms : np.ndarray, optional
        Peak-channel mean waveform of each unit (e.g. from SpikeInterface's ``templates`` extension), shape
        ``(num_units, num_samples)``, the spike time at sample ``waveform_nbefore``; a row of NaN marks a unit
        without one. Models with a waveform channel use them (:func:`waveform_input`). Default: none.
    waveform_sampling_frequency : float, default: 30000.0
        Sampling frequency of ``waveforms`` in Hz.
    waveform_nbefore : int, optional
        Sample of the spike time in ``waveforms``; default: 1 ms worth of samples (SpikeInterface's default
        ``ms_before``).

    Raises
    ------
    ValueError
        If there are no units, the duration is not a positive finite number, a unit has
        non-finite, unsorted or out-of-range spike times, the covariates are not a finite 2-D array
        with a positive rate covering the duration, or the waveforms are not one row per unit.
    """

    def __init__(
        self,
        spike_times: Sequence[np.ndarray],
        duration: float,
        unit_ids: Sequence | None = None,
        covariates: np.ndarray | None = None,
        covariate_rate_hz: float | None = None,
        waveforms: np.ndarray | None = None,
        waveform_sampling_frequency: float = 30000.0,
        waveform_nbefore: int | None = None,
    ):
        duration = float(duration)
        if not np.isfinite(duration) or duration <= 0:
            raise ValueError(f"duration must be a positive finite number of seconds, got {duration!r}")
        if len(spike_times) == 0:
            raise ValueError("the population has no units: give at least one spike train")
        unit_ids = list(range(len(spike_times))) if unit_ids is None else list(unit_ids)
        if len(unit_ids) != len(spike_times):
            raise ValueError(f"{len(unit_ids)} unit ids for {len(spike_times)} spike trains")
        trains = []
        duplicated: dict = {}
        for uid, times in zip(unit_ids, spike_times):
            times = np.asarray(times, dtype=np.float64).ravel()
            if times.size:
                if not np.all(np.isfinite(times)):
                    raise ValueError(f"unit {uid!r} has non-finite spike times (NaN or inf); remove them first")
                if np.any(np.diff(times) < 0):
                    raise ValueError(f"unit {uid!r} has unsorted spike times; sort each spike train ascending")
                if times[0] < 0 or times[-1] > duration:
                    raise ValueError(
                        f"unit {uid!r} has spike times outside [0, {duration:g}] s "
                        f"(first {times[0]:g} s, last {times[-1]:g} s); check the duration and time origin"
                    )
                repeated = np.diff(times) == 0
                if np.any(repeated):
                    duplicated[uid] = int(repeated.sum())
                    times = times[np.concatenate([[True], ~repeated])]
            trains.append(times)
        if duplicated:
            import warnings

            few = dict(list(duplicated.items())[:5])
            warnings.warn(
                f"{sum(duplicated.values())} duplicate spike times (the same time twice in one unit) in "
                f"{len(duplicated)} unit(s), e.g. {few}; each is counted once. Duplicates usually come from the "
                "sorter or a merge: check the sorting (spikeinterface.curation.remove_duplicated_spikes)",
                UserWarning,
                stacklevel=2,
            )
        self.spike_times = trains
        self.duration = duration
        self.unit_ids = unit_ids
        self.covariates: np.ndarray | None = None
        self.covariate_rate_hz: float | None = None
        if covariates is not None or covariate_rate_hz is not None:
            self.covariates, self.covariate_rate_hz = check_covariates(covariates, covariate_rate_hz, duration)
        self.waveforms: np.ndarray | None = None
        self.waveform_sampling_frequency = float(waveform_sampling_frequency)
        self.waveform_nbefore: int | None = None
        if waveforms is not None:
            waveforms = np.asarray(waveforms, dtype=np.float64)
            if waveforms.ndim != 2 or waveforms.shape[0] != len(trains) or waveforms.shape[1] < 2:
                raise ValueError(
                    f"waveforms must have shape (num_units={len(trains)}, num_samples >= 2), got {waveforms.shape}"
                )
            fs = self.waveform_sampling_frequency
            if not (np.isfinite(fs) and fs > 0):
                raise ValueError(f"waveform_sampling_frequency must be a positive number of Hz, got {fs!r}")
            nbefore = int(round(fs / 1000.0)) if waveform_nbefore is None else int(waveform_nbefore)
            if not 0 <= nbefore < waveforms.shape[1]:
                raise ValueError(f"waveform_nbefore must index a sample of the waveforms, got {nbefore}")
            self.waveforms, self.waveform_nbefore = waveforms, nbefore

    @property
    def num_covariates(self) -> int:
        """Number of covariate channels (0 without covariates)."""
        return 0 if self.covariates is None else int(self.covariates.shape[1])

    def bin_covariates(self, start_s: float, num_bins: int, bin_s: float) -> np.ndarray:
        """Covariates averaged in ``num_bins`` bins of ``bin_s`` seconds from ``start_s``.

        Bin ``j`` is the mean of the samples whose start time ``i / covariate_rate_hz`` lies in
        ``[start_s + j * bin_s, start_s + (j + 1) * bin_s)``; a bin holding no sample (bins shorter than the
        sampling period) takes the sample covering its start. Samples past the end are clamped to the last one.

        Returns
        -------
        np.ndarray
            float32 array of shape ``(num_bins, k)``.

        Raises
        ------
        ValueError
            If the segment has no covariates.
        """
        if self.covariates is None:
            raise ValueError("this SpikeTrainSet has no covariates")
        cov, rate = self.covariates, self.covariate_rate_hz
        n = cov.shape[0]
        edges = start_s + np.arange(num_bins + 1, dtype=np.float64) * bin_s
        idx = np.clip(np.ceil(edges * rate - 1e-9).astype(np.int64), 0, n)  # first sample starting at/after each edge
        lo, hi = idx[:-1], idx[1:]
        csum = np.concatenate([np.zeros((1, cov.shape[1])), np.cumsum(cov, axis=0, dtype=np.float64)])
        counts = hi - lo
        out = np.empty((num_bins, cov.shape[1]), dtype=np.float64)
        full = counts > 0
        out[full] = (csum[hi[full]] - csum[lo[full]]) / counts[full, None]
        if not np.all(full):
            cover = np.clip(np.floor(edges[:-1][~full] * rate + 1e-9).astype(np.int64), 0, n - 1)
            out[~full] = cov[cover]
        return out.astype(np.float32)

    @property
    def num_units(self) -> int:
        return len(self.spike_times)

    def spike_counts(self) -> np.ndarray:
        """Number of spikes of each unit, shape ``(num_units,)``."""
        return np.array([t.size for t in self.spike_times], dtype=np.int64)

    def bin(self, start_s: float, num_bins: int, bin_s: float, unit_indices: np.ndarray | None = None) -> np.ndarray:
        """Spike counts in ``num_bins`` bins of ``bin_s`` seconds from ``start_s``.

        Returns
        -------
        np.ndarray
            float32 array of shape ``(len(unit_indices), num_bins)``; bin ``k`` counts spikes with
            ``floor((t - start_s) / bin_s) == k``, where a spike on a bin edge (up to float rounding, 1e-9 of
            a bin) counts in the later bin.
        """
        if unit_indices is None:
            unit_indices = np.arange(self.num_units)
        stop_s = start_s + num_bins * bin_s
        pieces, rows = [], []
        for row, unit in enumerate(unit_indices):
            times = self.spike_times[unit]
            lo, hi = np.searchsorted(times, (start_s, stop_s), side="left")
            if hi > lo:
                pieces.append(times[lo:hi])
                rows.append(np.full(hi - lo, row, dtype=np.int64))
        if not pieces:
            return np.zeros((len(unit_indices), num_bins), dtype=np.float32)
        idx = np.floor((np.concatenate(pieces) - start_s) / bin_s + 1e-9).astype(np.int64)
        np.clip(idx, 0, num_bins - 1, out=idx)
        flat = np.concatenate(rows) * num_bins + idx
        counts = np.bincount(flat, minlength=len(unit_indices) * num_bins)
        return counts.reshape(len(unit_indices), num_bins).astype(np.float32)

    def bin_windows(
        self, starts_s: np.ndarray, num_bins: int, bin_s: float, unit_indices: np.ndarray | None = None
    ) -> np.ndarray:
        """Spike counts of several windows of ``num_bins`` bins, side by side.

        Equal to ``np.concatenate([self.bin(s, num_bins, bin_s, unit_indices) for s in starts_s], axis=1)``
        (each window counts its spikes exactly as :meth:`bin` does), with one pass over each unit's spikes.

        Parameters
        ----------
        starts_s : np.ndarray
            Start of each window, in seconds; windows may overlap or run past the end of the recording.
        num_bins : int
            Bins per window.
        bin_s : float
            Bin width, in seconds.
        unit_indices : np.ndarray or None, default: None
            Units (rows of the result); all units when None.

        Returns
        -------
        np.ndarray
            float32 array of shape ``(len(unit_indices), len(starts_s) * num_bins)``.
        """
        if unit_indices is None:
            unit_indices = np.arange(self.num_units)
        starts = np.asarray(starts_s, dtype=np.float64)
        num_windows = starts.size
        edges = np.stack([starts, starts + num_bins * bin_s], axis=1).reshape(-1)  # start, stop of each window
        width = num_windows * num_bins
        offsets = np.arange(num_windows, dtype=np.int64) * num_bins
        pieces = []
        for row, unit in enumerate(unit_indices):
            times = self.spike_times[unit]
            lo, hi = np.searchsorted(times, edges, side="left").reshape(num_windows, 2).T
            count = np.maximum(hi - lo, 0)
            total = int(count.sum())
            if total == 0:
                continue
            window = np.repeat(np.arange(num_windows), count)
            first = np.cumsum(count) - count
            position = np.arange(total) - first[window] + lo[window]
            idx = np.floor((times[position] - starts[window]) / bin_s + 1e-9).astype(np.int64)
            np.clip(idx, 0, num_bins - 1, out=idx)
            pieces.append(row * width + offsets[window] + idx)
        if not pieces:
            return np.zeros((len(unit_indices), width), dtype=np.float32)
        counts = np.bincount(np.concatenate(pieces), minlength=len(unit_indices) * width)
        return counts.reshape(len(unit_indices), width).astype(np.float32)

    def active_units(self, start_s: float, stop_s: float) -> np.ndarray:
        """Indices of the units with at least one spike in ``[start_s, stop_s)``."""
        active = [
            u
            for u, times in enumerate(self.spike_times)
            if np.searchsorted(times, start_s, "left") < np.searchsorted(times, stop_s, "left")
        ]
        return np.asarray(active, dtype=np.int64)


#: Time grid (ms from the spike) onto which a model's waveform channel resamples each unit's waveform.
WAVEFORM_GRID_MS = np.linspace(-1.0, 2.0, 46)


def waveform_input(trains: SpikeTrainSet, units: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Waveforms of ``units`` resampled to :data:`WAVEFORM_GRID_MS` and scaled to a trough of -1.

    Returns
    -------
    waveforms : np.ndarray
        float32 ``(len(units), len(WAVEFORM_GRID_MS))``; zeros where missing.
    present : np.ndarray
        bool ``(len(units),)``: the unit has a finite, non-flat waveform.
    """
    units = np.asarray(units, dtype=np.int64)
    out = np.zeros((len(units), WAVEFORM_GRID_MS.size), dtype=np.float32)
    present = np.zeros(len(units), dtype=bool)
    if trains.waveforms is None:
        return out, present
    w = trains.waveforms[units]
    t_ms = (np.arange(w.shape[1]) - trains.waveform_nbefore) * 1000.0 / trains.waveform_sampling_frequency
    for row, wave in enumerate(w):
        if not np.all(np.isfinite(wave)):
            continue
        wave = wave - np.median(wave[: max(1, trains.waveform_nbefore // 2)])
        scale = np.max(np.abs(wave))
        if scale <= 0:
            continue
        if np.max(wave) > -np.min(wave):  # positive-going spikes: flip so that the main deflection is a trough
            wave = -wave
        out[row] = np.interp(WAVEFORM_GRID_MS, t_ms, wave / scale, left=0.0, right=0.0)
        present[row] = True
    return out, present


def check_covariates(
    covariates, rate_hz, duration: float | None = None, *, name: str = "covariates"
) -> tuple[np.ndarray, float]:
    """Validate covariates (stimulus, behaviour) sampled at ``rate_hz``: the one check every entry point uses.

    Parameters
    ----------
    covariates : array-like
        ``(n_samples, k)`` real values, sample ``i`` covering ``[i, i + 1) / rate_hz`` s from the segment start.
    rate_hz : float
        Sampling rate of the covariates in Hz.
    duration : float | None, default: None
        Duration of the segment in seconds; the samples must cover it. None: not checked.
    name : str, default: "covariates"
        How the covariates are named in error messages (e.g. ``"covariates[1]"``).

    Returns
    -------
    tuple of np.ndarray and float
        The covariates (``np.asarray``, dtype unchanged) and the rate as a float.

    Raises
    ------
    TypeError
        If the rate is not a number or the values are not real numbers.
    ValueError
        If one of the two is missing, the rate is not positive and finite, the array is not a non-empty 2-D
        array, has NaN or infinite values, or does not cover ``duration``.
    """
    if covariates is None or rate_hz is None:
        raise ValueError(
            f"give {name} and covariate_rate_hz together (covariate_rate_hz is the sampling rate of the covariate "
            "samples in Hz)"
        )
    if isinstance(rate_hz, bool) or not isinstance(rate_hz, (int, float, np.integer, np.floating)):
        raise TypeError(f"covariate_rate_hz must be a number of Hz, got {rate_hz!r}")
    rate = float(rate_hz)
    if not np.isfinite(rate) or rate <= 0:
        raise ValueError(f"covariate_rate_hz must be a positive finite number of Hz, got {rate_hz!r}")
    values = np.asarray(covariates)
    if values.ndim == 1:
        raise ValueError(f"{name} must be 2-D (n_samples, k); for one channel use values[:, None]")
    if values.ndim != 2 or values.shape[0] == 0 or values.shape[1] == 0:
        raise ValueError(f"{name} must be a non-empty 2-D array (n_samples, k), got shape {values.shape}")
    if not np.issubdtype(values.dtype, np.number) or np.issubdtype(values.dtype, np.complexfloating):
        raise TypeError(f"{name} must hold real numbers, got dtype {values.dtype}")
    if not np.all(np.isfinite(values)):
        raise ValueError(f"{name} has NaN or infinite (non-finite) values; fill or interpolate them first")
    if duration is not None:
        needed = int(np.ceil(duration * rate - 1e-6))
        if values.shape[0] < needed:
            raise ValueError(
                f"{name} have {values.shape[0]} samples at {rate:g} Hz ({values.shape[0] / rate:g} s); "
                f"they must cover the duration ({duration:g} s, {needed} samples)"
            )
    return values, rate


def inference_window_starts(duration: float, window_s: float) -> np.ndarray:
    """Start times of the non-overlapping windows that tile ``[0, duration]`` (the last partial one is dropped)."""
    num = int(np.floor(duration / window_s + 1e-9))
    return np.arange(num, dtype=np.float64) * window_s


@dataclass
class ViewPair:
    """Two windows of the same population for self-supervised training.

    ``counts1`` has shape ``(len(units1), window_bins)``; ``units1`` indexes the units of the
    source :class:`SpikeTrainSet` (same for view 2). A unit present in both views is a positive pair.
    ``covariates1`` / ``covariates2`` are the source's covariates binned over each view's window,
    float32 ``(window_bins, k)``, or None when the source has none. Span views
    (:func:`~spikeinterface_neuronid.span_views.sample_span_pair`) also carry each view's per-unit statistics
    ``unit_inputs1`` / ``unit_inputs2`` (float32 ``(len(units), F)``) and, for relational models, its pair
    statistics ``edges1`` / ``edges2`` (float32 ``(len(units), len(units), L)``); their counts hold several
    windows back to back.
    """

    counts1: np.ndarray
    units1: np.ndarray
    counts2: np.ndarray
    units2: np.ndarray
    covariates1: np.ndarray | None = None
    covariates2: np.ndarray | None = None
    unit_inputs1: np.ndarray | None = None
    unit_inputs2: np.ndarray | None = None
    edges1: np.ndarray | None = None
    edges2: np.ndarray | None = None


def _keep_random_subset(rng: np.random.Generator, units: np.ndarray, min_keep: float, max_units: int) -> np.ndarray:
    n = len(units)
    k = int(rng.integers(int(np.floor(min_keep * n)), n + 1)) if n else 0
    k = min(max(k, 1 if n else 0), max_units)
    return np.sort(rng.choice(units, size=k, replace=False)) if k else units[:0]


def sample_view_pair(
    rng: np.random.Generator,
    trains: SpikeTrainSet,
    spec: WindowSpec,
    max_shift_s: float = 30.0,
    min_keep: float = 0.5,
    max_units: int = 64,
    min_shared_units: int = 2,
) -> ViewPair | None:
    """Draw two windows of one population, as NuCLR does.

    View 1 starts uniformly in the segment; view 2 starts within ``max_shift_s`` of it. Each view keeps
    the units active in it, then an independent random ``min_keep``–100 % of them, capped at
    ``max_units``. Returns None when fewer than ``min_shared_units`` units are in both views. The
    covariates of each window, if the population has any, are binned too (same bins as the counts).
    """
    window_s = spec.window_s
    if trains.duration < window_s:
        return None
    start1 = rng.uniform(0.0, trains.duration - window_s)
    lo = max(0.0, start1 - max_shift_s)
    hi = min(trains.duration - window_s, start1 + max_shift_s)
    start2 = rng.uniform(lo, hi)
    units = []
    for start in (start1, start2):
        active = trains.active_units(start, start + window_s)
        units.append(_keep_random_subset(rng, active, min_keep, max_units))
    if np.intersect1d(units[0], units[1]).size < min_shared_units:
        return None
    return ViewPair(
        counts1=trains.bin(start1, spec.window_bins, spec.bin_s, units[0]),
        units1=units[0],
        counts2=trains.bin(start2, spec.window_bins, spec.bin_s, units[1]),
        units2=units[1],
        covariates1=_window_covariates(trains, start1, spec),
        covariates2=_window_covariates(trains, start2, spec),
    )


def _window_covariates(trains: SpikeTrainSet, start_s: float, spec: WindowSpec) -> np.ndarray | None:
    if trains.covariates is None:
        return None
    return trains.bin_covariates(start_s, spec.window_bins, spec.bin_s)
