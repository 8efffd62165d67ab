"""NEMO-lite: CLIP between each unit's log 3-D autocorrelogram and its peak-channel waveform (Yu et al., ICLR 2025).

A compact re-implementation of the paper-level recipe (``shared/notes/methods.md`` §3; the reference code,
``Haansololfp/NEMO_ICLR``, was only read for facts):

* **Inputs per unit.** (1) The *log 3-D ACG* (:func:`acg_3d`): the unit's autocorrelogram computed separately
  for the reference spikes of each of 10 deciles of the unit's own instantaneous firing rate, at log-spaced
  lags from 1 ms to 1000 ms (one side, 101 bins, resampled from 1-ms resolution), as a conditional rate in Hz,
  then ``log(1 + rate) / 5`` (:func:`log_acg_3d`). (2) The peak-channel mean waveform (template), each divided
  by its largest absolute value (:func:`normalise_templates`); NEMO uses 90 samples (3 ms at 30 kHz), any
  fixed length works.
* **Encoders.** Waveform MLP ``L -> 600 -> 300``; ACG CNN, two ``conv 3x5 -> BatchNorm -> ReLU -> max-pool
  2x2`` stages (8 and 16 channels) then a linear layer to 200. Each output goes through its own linear
  projection to a shared 512-d space.
* **Objective.** Symmetric CLIP InfoNCE between the two modalities of the same unit (the other units of the
  batch are negatives), on L2-normalised projections with temperature 0.5 (optionally learned). Light
  augmentations: ACG scaling and additive noise, waveform amplitude jitter and additive noise. Adam with a
  cosine learning-rate decay over ``steps`` mini-batches drawn from all units of all populations.
* **Embedding.** As NEMO's probe: the concatenated *encoder* outputs (300 waveform + 200 ACG = 500-d), not
  the projections. :attr:`NEMO.waveform_slice_` and :attr:`NEMO.acg_slice_` index the two parts.

Relation to SpikeInterface: ``compute("acgs_3d")`` (a port of the C4 / npyx feature) also splits the spikes
into ``num_firing_rate_quantiles`` (10) quantiles of a 250-ms smoothed instantaneous rate, but returns
*linear* 1-ms bins over a 50-ms window by default and counts rather than log rates. :func:`acg_3d` is the
NEMO / C4 variant (1-s one-sided window, log-spaced lags), computed in numpy directly from spike times so that
this module stays free of SpikeInterface; with a SpikeInterface analyzer, pass ``templates`` from its
``templates`` extension (peak channel of each unit).

Cost (one thread, a busy 2-core machine): the 3-D ACG is ``O(num_spikes x (spikes within 32 ms + 52))`` per
unit, about 6 s of CPU for 1,000 units x 480 s at 18 Hz (8.8 M spikes), cached per population
(:func:`population_log_acgs`); training at the defaults (300 steps of 128 units) takes 0.05-0.1 s a step.
``fit`` on 5 populations of 200 units x 480 s took 24 s (ACGs included), ``transform`` of one such population
1.5 s (0.05 s with its ACGs cached). ``steps=60`` is enough for a quick run: the linear probe scores barely
change (the ACG encoder keeps most of what a probe finds in the raw log ACG).
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.base import BaseEstimator
from torch import nn

from ...data import SpikeTrainSet
from ...inference import torch_threads

__all__ = ["NEMO", "acg_lag_edges", "acg_3d", "log_acg_3d", "normalise_templates", "population_log_acgs"]

_SHORT_LAG_MS = 32  # lags below this are histogrammed from spike pairs; above, from cumulative counts
_LOG_ACG_SCALE = 5.0  # log(1 + rate in Hz) / 5: about 1 at 150 Hz
_ACG_CACHE: "OrderedDict[str, np.ndarray]" = OrderedDict()  # population_log_acgs results, least recent first
_ACG_CACHE_SIZE = 64


# ----------------------------------------------------------------------------------------------------------
# 3-D autocorrelogram
# ----------------------------------------------------------------------------------------------------------


def acg_lag_edges(num_lags: int = 101, max_lag_ms: float = 1000.0) -> np.ndarray:
    """Edges in ms of the log-spaced lag bins of :func:`acg_3d`.

    ``num_lags + 1`` edges, geometrically spaced from 1 ms to ``max_lag_ms``; edges from 32 ms on are
    rounded to whole milliseconds (their spacing is then at least 2 ms at the defaults, so they stay
    increasing).

    Parameters
    ----------
    num_lags : int, default: 101
        Number of lag bins.
    max_lag_ms : float, default: 1000.0
        Last edge in ms (> 1).

    Returns
    -------
    np.ndarray
        float64 array of ``num_lags + 1`` increasing edges.

    Raises
    ------
    ValueError
        If ``num_lags < 1``, ``max_lag_ms <= 1`` or the rounded edges are not increasing.
    """
    if isinstance(num_lags, bool) or not isinstance(num_lags, (int, np.integer)) or num_lags < 1:
        raise ValueError(f"num_lags must be a positive integer, got {num_lags!r}")
    max_lag_ms = float(max_lag_ms)
    if not np.isfinite(max_lag_ms) or max_lag_ms <= 1.0:
        raise ValueError(f"max_lag_ms must be a number > 1, got {max_lag_ms!r}")
    edges = np.geomspace(1.0, max_lag_ms, int(num_lags) + 1)
    long = edges >= _SHORT_LAG_MS
    edges[long] = np.round(edges[long])
    if np.any(np.diff(edges) <= 0):
        raise ValueError(
            f"{num_lags} log-spaced lag bins up to {max_lag_ms:g} ms are narrower than 1 ms beyond "
            f"{_SHORT_LAG_MS} ms; use fewer bins or a longer window"
        )
    return edges


def acg_3d(
    spike_times: np.ndarray,
    duration: float,
    num_quantiles: int = 10,
    num_lags: int = 101,
    max_lag_ms: float = 1000.0,
    smoothing_ms: float = 250.0,
) -> np.ndarray:
    """One-sided 3-D autocorrelogram of a spike train: conditional firing rate per rate quantile and lag.

    Spike times are binned at 1 ms (lag ``j`` ms between two spikes means their 1-ms bins differ by ``j``).
    Each spike's instantaneous rate is the number of the unit's spikes in a ``smoothing_ms`` boxcar centred on
    it (ties broken by the inverse of its mean adjacent inter-spike interval); spikes are split by rank into
    ``num_quantiles`` equal-count quantiles. For quantile ``q`` and lag bin ``[e_k, e_{k+1})``
    (:func:`acg_lag_edges`), the value is the number of later spikes at that lag, per reference spike of
    the quantile and per second of bin width: the rate in Hz at which the unit fires at that lag after a
    spike fired in that rate state. Bins narrower than 1 ms (below about 14 ms at the defaults) take the
    1-ms value they fall in, interpolated linearly in the cumulative count (the piecewise-constant 1-ms ACG
    integrated over the bin). A perfectly periodic train with period ``P`` ms puts all its mass in the bins
    holding ``P, 2P, ...``.

    Parameters
    ----------
    spike_times : np.ndarray
        Sorted spike times in seconds.
    duration : float
        Recording length in seconds.
    num_quantiles : int, default: 10
        Firing-rate quantiles (deciles).
    num_lags : int, default: 101
        Log-spaced lag bins.
    max_lag_ms : float, default: 1000.0
        Largest lag in ms.
    smoothing_ms : float, default: 250.0
        Width of the boxcar of the instantaneous rate, in ms.

    Returns
    -------
    np.ndarray
        float32 array of shape ``(num_quantiles, num_lags)``, rates in Hz; all zero for fewer than 2
        spikes; a quantile with no spike (fewer spikes than quantiles) is zero.
    """
    edges = acg_lag_edges(num_lags, max_lag_ms)
    return _acg_3d(np.asarray(spike_times, dtype=np.float64), float(duration), int(num_quantiles), edges, smoothing_ms)


def _acg_3d(times: np.ndarray, duration: float, Q: int, edges: np.ndarray, smoothing_ms: float) -> np.ndarray:
    out = np.zeros((Q, edges.size - 1), dtype=np.float64)
    s = np.floor(times * 1000.0).astype(np.int64)
    n = s.size
    if n < 2:
        return out.astype(np.float32)
    # instantaneous rate: spikes in a boxcar centred on each spike, ties broken by the inverse mean ISI
    half = 0.5 * float(smoothing_ms)
    count = np.searchsorted(times, times + half / 1000.0, "right") - np.searchsorted(times, times - half / 1000.0)
    isi = np.diff(times)
    around = np.concatenate([[isi[0]], isi]) + np.concatenate([isi, [isi[-1]]])
    order = np.lexsort((-around, count))  # ascending rate; lexsort is stable, so ties keep time order
    quantile = np.empty(n, dtype=np.int64)
    quantile[order] = (np.arange(n) * Q) // n
    n_q = np.bincount(quantile, minlength=Q).astype(np.float64)

    # short lags (< _SHORT_LAG_MS) from all spike pairs that close: spike i with its k_i successors
    L = _SHORT_LAG_MS
    k = np.searchsorted(s, s + L, "left") - np.arange(1, n + 1)
    total = int(k.sum())
    if total:
        first = np.repeat(np.arange(n), k)
        offset = np.arange(total) - np.repeat(np.cumsum(k) - k, k) + 1
        lag = s[first + offset] - s[first]
        short = np.bincount(quantile[first] * L + lag, minlength=Q * L).reshape(Q, L)
    else:
        short = np.zeros((Q, L), dtype=np.int64)
    short[:, 0] = 0  # same-bin pairs have no lag
    # F[q, x] = pairs of quantile q with lag in [1, x), for integer x in 0..L
    F_short = np.zeros((Q, L + 1), dtype=np.float64)
    F_short[:, 1:] = np.cumsum(short, axis=1)

    # long lags from the cumulative count: pairs with lag in [1, e) = cum[s + e] - cum[s + 1]
    long_edges = edges[edges >= L].astype(np.int64)
    points = np.concatenate([[1], long_edges])
    cum = np.zeros(int(s[-1]) + int(points[-1]) + 2, dtype=np.int32)
    np.cumsum(np.bincount(s, minlength=cum.size - 1).astype(np.int32), out=cum[1:])
    by_q = np.argsort(quantile, kind="stable")
    starts = np.searchsorted(quantile[by_q], np.arange(Q))
    present = n_q > 0
    G = np.zeros((Q, points.size), dtype=np.float64)
    G[present] = np.add.reduceat(cum[s[by_q][:, None] + points[None, :]], starts[present], axis=0, dtype=np.int64)
    F_long = G[:, 1:] - G[:, :1]

    def F_at(x: float) -> np.ndarray:
        if x >= L:
            return F_long[:, int(np.searchsorted(long_edges, int(round(x))))]
        lo = int(math.floor(x))
        return F_short[:, lo] + (x - lo) * (F_short[:, min(lo + 1, L)] - F_short[:, lo])

    values = np.stack([F_at(e) for e in edges], axis=1)
    width_s = np.diff(edges) / 1000.0
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.diff(values, axis=1) / width_s[None, :] / n_q[:, None]
    out[~present] = 0.0
    return out.astype(np.float32)


def log_acg_3d(acg: np.ndarray) -> np.ndarray:
    """The network input of a 3-D ACG: ``log(1 + rate_hz) / 5`` (about 1 at 150 Hz), float32."""
    return (np.log1p(np.maximum(np.asarray(acg, dtype=np.float64), 0.0)) / _LOG_ACG_SCALE).astype(np.float32)


def normalise_templates(templates: np.ndarray) -> np.ndarray:
    """Divide each waveform by its largest absolute value (rows that are all zero or not finite become NaN).

    Parameters
    ----------
    templates : np.ndarray
        ``(num_units, num_samples)`` peak-channel waveforms.

    Returns
    -------
    np.ndarray
        float32 array of the same shape; the extremum of each row is +-1.
    """
    w = np.asarray(templates, dtype=np.float64)
    peak = np.abs(w).max(axis=1, keepdims=True) if w.size else np.ones((w.shape[0], 1))
    bad = ~np.all(np.isfinite(w), axis=1, keepdims=True) | (peak == 0) | ~np.isfinite(peak)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(bad, np.nan, w / np.where(bad, 1.0, peak))
    return out.astype(np.float32)


def population_log_acgs(
    population: SpikeTrainSet,
    num_quantiles: int = 10,
    num_lags: int = 101,
    max_lag_ms: float = 1000.0,
    smoothing_ms: float = 250.0,
) -> np.ndarray:
    """:func:`log_acg_3d` of :func:`acg_3d` for every unit of a population.

    Results are cached in memory (the last 64 populations, keyed by a hash of the spike times and the
    parameters), so fitting and embedding the same populations several times computes each 3-D ACG once.

    Returns
    -------
    np.ndarray
        float32 array of shape ``(num_units, num_quantiles, num_lags)``.
    """
    edges = acg_lag_edges(num_lags, max_lag_ms)
    digest = hashlib.blake2b(digest_size=16)
    digest.update(np.array([population.duration, num_quantiles, num_lags, max_lag_ms, smoothing_ms]).tobytes())
    for t in population.spike_times:
        digest.update(np.int64(t.size).tobytes())
        digest.update(np.ascontiguousarray(t, dtype=np.float64).tobytes())
    key = digest.hexdigest()
    if key in _ACG_CACHE:
        _ACG_CACHE.move_to_end(key)
        return _ACG_CACHE[key].copy()
    acgs = [_acg_3d(t, population.duration, int(num_quantiles), edges, smoothing_ms) for t in population.spike_times]
    out = log_acg_3d(np.stack(acgs))
    _ACG_CACHE[key] = out
    while len(_ACG_CACHE) > _ACG_CACHE_SIZE:
        _ACG_CACHE.popitem(last=False)
    return out.copy()


# ----------------------------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------------------------


class _ACGEncoder(nn.Module):
    """Two ``conv 3x5 -> max-pool 2x2 -> BatchNorm -> ReLU`` stages (8, 16 channels), then linear -> ``dim``."""

    def __init__(self, num_quantiles: int, num_lags: int, dim: int = 200):
        super().__init__()
        # pooling before BatchNorm + ReLU (half the cost of pooling after them on CPU)
        self.convs = nn.Sequential(
            nn.Conv2d(1, 8, (3, 5), padding=(1, 2)),
            nn.MaxPool2d(2, ceil_mode=True),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.Conv2d(8, 16, (3, 5), padding=(1, 2)),
            nn.MaxPool2d(2, ceil_mode=True),
            nn.BatchNorm2d(16),
            nn.ReLU(),
        )
        h, w = num_quantiles, num_lags
        for _ in range(2):
            h, w = -(-h // 2), -(-w // 2)
        self.out = nn.Linear(16 * h * w, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.convs(x.unsqueeze(1)).flatten(1))


class _NEMONet(nn.Module):
    """Waveform MLP and ACG CNN with their linear projections to the shared CLIP space."""

    def __init__(self, num_samples: int, num_quantiles: int, num_lags: int, temperature: float, learn: bool):
        super().__init__()
        self.waveform = nn.Sequential(nn.Linear(num_samples, 600), nn.ReLU(), nn.Linear(600, 300))
        self.acg = _ACGEncoder(num_quantiles, num_lags, 200)
        self.waveform_proj = nn.Linear(300, 512)
        self.acg_proj = nn.Linear(200, 512)
        log_t = torch.tensor(math.log(temperature), dtype=torch.float32)
        self.log_temperature = nn.Parameter(log_t, requires_grad=learn)

    def encode(self, waveform: torch.Tensor, acg: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.waveform(waveform), self.acg(acg)], dim=1)

    def loss(self, waveform: torch.Tensor, acg: torch.Tensor) -> torch.Tensor:
        zw = F.normalize(self.waveform_proj(self.waveform(waveform)), dim=1)
        za = F.normalize(self.acg_proj(self.acg(acg)), dim=1)
        logits = zw @ za.T / self.log_temperature.exp()
        target = torch.arange(len(zw))
        return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


# ----------------------------------------------------------------------------------------------------------
# Estimator
# ----------------------------------------------------------------------------------------------------------


class NEMO(BaseEstimator):
    """Self-supervised NEMO-lite embeddings from each unit's log 3-D ACG and peak-channel waveform.

    See the module docstring for the model. ``fit`` trains on all units of all populations (labels are
    never read); ``transform`` returns the concatenated encoder outputs (300 waveform + 200 ACG features).

    Parameters
    ----------
    steps : int, default: 300
        Optimiser steps (mini-batches). ``--quick`` benchmark runs can use about 60.
    batch_size : int, default: 128
        Units per mini-batch (capped at the number of usable units); the other units of a batch are the
        CLIP negatives.
    lr : float, default: 1e-3
        Adam learning rate, decayed to 0 with a cosine over ``steps``.
    weight_decay : float, default: 1e-5
        Adam weight decay.
    temperature : float, default: 0.5
        CLIP softmax temperature (initial value when ``learn_temperature``).
    learn_temperature : bool, default: False
        Learn the temperature (as CLIP's logit scale) instead of keeping it fixed.
    acg_noise : float, default: 0.02
        Sd of the Gaussian noise added to the scaled log ACG in training.
    acg_scale_jitter : float, default: 0.1
        Sd of the log of a per-unit factor multiplying the scaled log ACG in training.
    waveform_noise : float, default: 0.02
        Sd of the Gaussian noise added to the normalised waveform in training.
    amplitude_jitter : float, default: 0.1
        Training waveforms are multiplied by a per-unit factor uniform in ``[1 - x, 1 + x]``.
    num_quantiles : int, default: 10
        Firing-rate quantiles of the 3-D ACG.
    num_lags : int, default: 101
        Log-spaced lag bins of the 3-D ACG.
    max_lag_ms : float, default: 1000.0
        Longest ACG lag in ms.
    seed : int, default: 0
        Seed of the weight initialisation, batch order and augmentations.
    num_threads : int or None, default: 1
        torch threads during ``fit`` / ``transform`` (restored afterwards); None keeps the current setting.
        The model is small: one thread is the fastest on a busy 2-core machine (2 threads were several times
        slower there) and results then do not depend on the machine's core count.
    progress_bar : bool, default: False
        Show tqdm bars (ACG computation, training steps).

    Attributes
    ----------
    model_ : torch.nn.Module
        The trained encoders and projections (evaluation mode).
    num_samples_ : int
        Waveform length seen in ``fit``; ``transform`` needs the same.
    waveform_slice_, acg_slice_ : slice
        Columns of the embedding produced by the waveform and by the ACG encoder.
    loss_history_ : list of float
        Training loss of every step.
    """

    supervised = False
    needs_templates = True

    def __init__(
        self,
        steps: int = 300,
        batch_size: int = 128,
        lr: float = 1e-3,
        weight_decay: float = 1e-5,
        temperature: float = 0.5,
        learn_temperature: bool = False,
        acg_noise: float = 0.02,
        acg_scale_jitter: float = 0.1,
        waveform_noise: float = 0.02,
        amplitude_jitter: float = 0.1,
        num_quantiles: int = 10,
        num_lags: int = 101,
        max_lag_ms: float = 1000.0,
        seed: int = 0,
        num_threads: int | None = 1,
        progress_bar: bool = False,
    ):
        self.steps = steps
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.temperature = temperature
        self.learn_temperature = learn_temperature
        self.acg_noise = acg_noise
        self.acg_scale_jitter = acg_scale_jitter
        self.waveform_noise = waveform_noise
        self.amplitude_jitter = amplitude_jitter
        self.num_quantiles = num_quantiles
        self.num_lags = num_lags
        self.max_lag_ms = max_lag_ms
        self.seed = seed
        self.num_threads = num_threads
        self.progress_bar = progress_bar

    # ------------------------------------------------------------------------------------------------------
    # checks and inputs

    def _check_params(self) -> None:
        for name in ("steps", "batch_size", "num_quantiles", "num_lags"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"NEMO.{name} must be a positive integer, got {value!r}")
        if self.batch_size < 2:
            raise ValueError(f"NEMO.batch_size must be >= 2 (the CLIP loss needs negatives), got {self.batch_size}")
        for name in ("lr", "temperature"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"NEMO.{name} must be a positive number, got {value!r}")
        for name in ("weight_decay", "acg_noise", "acg_scale_jitter", "waveform_noise", "amplitude_jitter"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"NEMO.{name} must be a number >= 0, got {value!r}")
        if self.amplitude_jitter >= 1:
            raise ValueError(f"NEMO.amplitude_jitter must be < 1, got {self.amplitude_jitter!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise ValueError(f"NEMO.seed must be a non-negative integer, got {self.seed!r}")
        threads = self.num_threads
        if threads is not None and (
            isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 1
        ):
            raise ValueError(f"NEMO.num_threads must be None or a positive integer, got {self.num_threads!r}")
        acg_lag_edges(self.num_lags, self.max_lag_ms)

    def _inputs(
        self, populations: Sequence[SpikeTrainSet], templates, num_samples: int | None, desc: str
    ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Per population: normalised waveforms, scaled log ACGs, and which units have a usable waveform."""
        if isinstance(populations, SpikeTrainSet):
            raise ValueError("give a sequence of SpikeTrainSet populations, e.g. [population], not one population")
        populations = list(populations)
        if not populations:
            raise ValueError("give at least one population")
        for i, pop in enumerate(populations):
            if not isinstance(pop, SpikeTrainSet):
                raise ValueError(f"population {i} is a {type(pop).__name__}, expected a SpikeTrainSet")
        if templates is None:
            raise ValueError(
                "NEMO needs templates: one (num_units, num_samples) array of peak-channel mean waveforms per "
                "population (e.g. from SpikeInterface's 'templates' extension, or simulate_templates)"
            )
        if isinstance(templates, np.ndarray) and templates.ndim != 1:
            templates = [templates] if len(populations) == 1 and templates.ndim == 2 else None
            if templates is None:
                raise ValueError("templates must be a list with one (num_units, num_samples) array per population")
        templates = list(templates)
        if len(templates) != len(populations):
            raise ValueError(f"{len(templates)} template arrays for {len(populations)} populations; give one each")
        out = []
        bar = _bar(self.progress_bar, len(populations), desc)
        try:
            for i, (pop, w) in enumerate(zip(populations, templates)):
                w = np.asarray(w, dtype=np.float64)
                n = len(pop.spike_times)
                if w.ndim != 2 or w.shape[0] != n:
                    raise ValueError(
                        f"templates of population {i} have shape {w.shape}; expected ({n}, num_samples): one "
                        "peak-channel waveform per unit"
                    )
                expected = num_samples if num_samples is not None else out[0][0].shape[1] if out else None
                if w.shape[1] < 2 or (expected is not None and w.shape[1] != expected):
                    what = "as in fit" if num_samples is not None else "as the first population"
                    raise ValueError(
                        f"templates of population {i} have {w.shape[1]} samples per waveform; expected "
                        f"{expected if expected is not None else '>= 2'} ({what})"
                    )
                wave = normalise_templates(w)
                ok = np.all(np.isfinite(wave), axis=1)
                acg = population_log_acgs(pop, self.num_quantiles, self.num_lags, self.max_lag_ms)
                out.append((np.nan_to_num(wave), acg, ok))
                if bar is not None:
                    bar.update(1)
        finally:
            if bar is not None:
                bar.close()
        return out

    # ------------------------------------------------------------------------------------------------------
    # fit / transform

    def fit(self, populations: Sequence[SpikeTrainSet], labels=None, templates=None) -> "NEMO":
        """Train the two encoders with the CLIP loss on all units of all populations.

        Parameters
        ----------
        populations : sequence of SpikeTrainSet
            One per recording.
        labels : ignored
            Self-supervised: never read.
        templates : sequence of np.ndarray
            One ``(num_units, num_samples)`` array of peak-channel mean waveforms per population (the same
            ``num_samples`` for all). Units whose waveform is all zero or not finite are left out.

        Returns
        -------
        NEMO
            self.

        Raises
        ------
        ValueError
            Without templates, for template arrays of the wrong shape or number, bad parameters, or fewer
            than 2 usable units.
        """
        self._check_params()
        inputs = self._inputs(populations, templates, None, "NEMO: 3-D ACGs")
        wave = np.concatenate([x[0][x[2]] for x in inputs])
        acg = np.concatenate([x[1][x[2]] for x in inputs])
        if len(wave) < 2:
            raise ValueError(f"NEMO needs at least 2 units with a usable waveform to train, got {len(wave)}")
        num_samples = int(wave.shape[1])
        rng = np.random.default_rng([int(self.seed), 7])
        gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
        batch = min(int(self.batch_size), len(wave))
        wave_t, acg_t = torch.from_numpy(wave), torch.from_numpy(acg)
        losses: list[float] = []
        with torch_threads(self.num_threads), torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(rng.integers(2**62)))
            model = _NEMONet(num_samples, self.num_quantiles, self.num_lags, self.temperature, self.learn_temperature)
            opt = torch.optim.Adam(model.parameters(), lr=self.lr, weight_decay=self.weight_decay)
            sched = torch.optim.lr_scheduler.LambdaLR(
                opt, lambda k: 0.5 * (1.0 + math.cos(math.pi * min(k, self.steps) / self.steps))
            )
            model.train()
            order = rng.permutation(len(wave))
            pos = 0
            bar = _bar(self.progress_bar, int(self.steps), "NEMO: training")
            try:
                for _ in range(int(self.steps)):
                    if pos + batch > len(order):
                        order, pos = rng.permutation(len(wave)), 0
                    idx = torch.from_numpy(order[pos : pos + batch])
                    pos += batch
                    w, a = self._augment(wave_t[idx], acg_t[idx], gen)
                    loss = model.loss(w, a)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    sched.step()
                    losses.append(float(loss.detach()))
                    if bar is not None:
                        bar.update(1)
                        bar.set_postfix(loss=f"{losses[-1]:.3f}", refresh=False)
            finally:
                if bar is not None:
                    bar.close()
        model.eval()
        self.model_ = model
        self.num_samples_ = num_samples
        self.waveform_slice_ = slice(0, 300)
        self.acg_slice_ = slice(300, 500)
        self.loss_history_ = losses
        return self

    def _augment(self, w: torch.Tensor, a: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        n = len(w)
        amp = 1.0 + self.amplitude_jitter * (2.0 * torch.rand(n, 1, generator=gen) - 1.0)
        w = w * amp + self.waveform_noise * torch.randn(w.shape, generator=gen)
        scale = torch.exp(self.acg_scale_jitter * torch.randn(n, 1, 1, generator=gen))
        a = a * scale + self.acg_noise * torch.randn(a.shape, generator=gen)
        return w, a

    def transform(self, populations: Sequence[SpikeTrainSet], templates=None) -> list[np.ndarray]:
        """Embed every unit: concatenated waveform (300) and ACG (200) encoder outputs.

        Parameters
        ----------
        populations : sequence of SpikeTrainSet
            One per recording.
        templates : sequence of np.ndarray
            One ``(num_units, num_samples)`` array per population, ``num_samples`` as in ``fit``.

        Returns
        -------
        list of np.ndarray
            One float32 ``(num_units, 500)`` array per population; rows of units without a usable waveform
            (all zero or not finite) are NaN.

        Raises
        ------
        ValueError
            Before ``fit``, without templates, or for template arrays of the wrong shape or number.
        """
        if not hasattr(self, "model_"):
            raise ValueError("this NEMO instance is not fitted yet: call fit(populations, templates=...) first")
        inputs = self._inputs(populations, templates, self.num_samples_, "NEMO: 3-D ACGs")
        out = []
        with torch_threads(self.num_threads), torch.no_grad():
            self.model_.eval()
            for wave, acg, ok in inputs:
                z = np.full((len(wave), 500), np.nan, dtype=np.float32)
                rows = []
                for start in range(0, len(wave), 1024):
                    sl = slice(start, start + 1024)
                    rows.append(self.model_.encode(torch.from_numpy(wave[sl]), torch.from_numpy(acg[sl])).numpy())
                emb = np.concatenate(rows) if rows else np.zeros((0, 500), dtype=np.float32)
                z[ok] = emb[ok]
                out.append(z)
        return out

    def fit_transform(self, populations: Sequence[SpikeTrainSet], labels=None, templates=None) -> list[np.ndarray]:
        """``fit`` then ``transform`` on the same populations."""
        return self.fit(populations, labels, templates).transform(populations, templates)


def _bar(enabled: bool, total: int, desc: str):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc)
