"""Handcrafted unit features: single-unit firing statistics and population coupling.

Two families, each a baseline with the interface of :mod:`spikeinterface_neuronid.baselines`:

- :class:`SingleUnitFeatures`: log firing rate, ISI coefficient of variation, local variation (CV2), burst
  fraction, a log-spaced ISI histogram and the autocorrelogram, at a chosen time resolution. At 1 ms they are
  the classic firing-pattern features; at the model's bin size (20 ms) they see exactly the information the
  embedding model sees, which separates "the model found something" from "the bins already show it". The
  autocorrelogram is SpikeInterface's own (:func:`spikeinterface.postprocessing.compute_auto_correlograms`);
  SpikeInterface's ISI histogram extension is linear in time, so the log-spaced one is computed here.
- :class:`PopulationCouplingFeatures`: each unit's Pearson correlation with the summed activity of all
  *other* units of its population, at several time scales. A single number that gives away a zero-lag shared
  drive (and therefore the ``easy`` simulator's brain regions); the ``hard`` preset is built so that it fails.

Nothing is learned: ``fit`` only checks its input, so these baselines are the same in every protocol.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..data import SpikeTrainSet

__all__ = ["SingleUnitFeatures", "PopulationCouplingFeatures", "ConcatenatedFeatures"]

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


class SingleUnitFeatures:
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
                cv2 = float(np.mean(np.divide(2 * np.abs(isi[1:] - isi[:-1]), pair, out=np.zeros_like(pair), where=pair > 0)))
                burst = float(np.mean(isi < max(self.burst_isi_s, res * 0.5)))
                hist = np.histogram(isi, bins=edges)[0] / isi.size
                rate = len(times) / pop.duration
                # ACG as a rate in Hz at each lag, relative to the unit's mean rate
                acg_rate = half[i] / (len(times) * res) / max(rate, 1e-9)
                rows[i] = np.concatenate([[np.log(rate), cv, cv2, burst], hist, np.log1p(acg_rate)])
            out.append(rows)
        return out


class PopulationCouplingFeatures:
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


class ConcatenatedFeatures:
    """Column-wise concatenation of several unsupervised feature baselines.

    Parameters
    ----------
    parts : sequence of baseline estimators
        Each with ``fit`` / ``transform`` as described in :mod:`spikeinterface_neuronid.baselines`.
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
