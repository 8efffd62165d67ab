"""Simulated Izhikevich populations with known cell type, brain region, animal and session.

Ground truth for tests, the demo, model pretraining and benchmarks. Each session is one recurrent network
of Izhikevich (2003) neurons of five firing types, split into brain regions that differ in their population
dynamics, simulated with a vectorised numpy loop (dt = 1 ms, two 0.5 ms half-steps for v)::

    v' = 0.04 v^2 + 5 v + 140 - u + I        u' = a (b v - u)        if v >= 30 mV: v <- c, u <- u + d

Types (canonical a, b, c, d, then a per-neuron multiplicative jitter): RS (0.02, 0.2, -65, 8),
IB (0.02, 0.2, -55, 4), CH (0.02, 0.2, -50, 2) are excitatory; FS (0.1, 0.2, -65, 2) and
LTS (0.02, 0.25, -65, 2) are inhibitory. A neuron whose v reaches 30 mV during the two half-steps spikes and is
reset at the end of the step; its recovery update uses the 30 mV peak, not the overshoot of the quadratic term
(the original code's overshoot makes ISIs irregular even without noise). The state is float32.

Input current of neuron ``i`` (all terms but the white noise are sampled on a 5 ms grid and held; the white
noise is a fresh standard normal per neuron and 1 ms step, quantised to 65,536 levels)::

    I_i(t) = bias_i + drift_i(t) + noise_sd_i * white_i(t)             private
           + slow_i(t) + osc_i(t)                                     region structure (see below)
           + global_i * G(t) + stimulus(t) @ tuning_i                 zero-lag, the same in every region
           + sum over presynaptic spikes of the previous step         sparse recurrent E (+) / I (-) weights

``slow`` is band-limited noise (difference of two low-pass filters, ``slow_tau_ms``), ``osc`` a
constant-amplitude rhythm (``osc_freq_hz``) with a diffusing phase. Every neuron receives both with the same
variance and spectrum; regions differ only in *how they are shared* (``region_mode``):

- ``"shared"`` (preset ``easy``): a fraction of the slow drive is common to the region at zero lag; the
  fraction falls linearly from region to region (``shared_fraction``), so region can be read from each unit's
  correlation with the summed population.
- ``"lagged"`` (preset ``hard``): region kinds cycle through ``wave`` (one slow drive delivered with
  neuron-specific lags uniform in ``[0, lag_max_ms]``: a travelling wave / sequence), ``oscillation`` (one
  rhythm, each neuron at its own phase; phases stratified so the region's summed drive cancels) and
  ``private`` (independent drives). No region has extra zero-lag shared drive, and the zero-lag global drive
  and stimulus act alike in all regions, so the population-coupling shortcut fails. Repeated kinds (more than
  three regions) change parameters: later ``wave`` regions have shorter lag spreads, later ``oscillation``
  regions faster rhythms and later ``private`` regions slower band-limited drive.
- ``"mixed"`` (preset ``varied``): as ``"lagged"``, plus a zero-lag shared fraction drawn per animal and
  region from the ``shared_fraction`` range, so population coupling varies between animals.

Waveforms: :func:`simulate_templates` gives each unit a peak-channel mean waveform (trough, then a peak)
whose trough-to-peak width and peak / trough ratio depend on the cell type with realistic overlap (FS narrow,
RS / IB / CH broad, LTS intermediate), plus per-unit amplitude, slope and averaging noise and nothing from the
region: a partial signal that separates excitatory from inhibitory units but not the five types.
:func:`simulate_sorting` with ``with_recording=True`` injects the same shapes, so SpikeInterface's ``templates``
extension recovers them.

Randomness: animal-level statistics (drive and noise gains, coupling strength and fan-out, jitter level,
rhythm frequency, lag spread, type proportions) come from a generator seeded by ``(seed, preset, animal)``
only; the network instance, neuron parameters, noise, stimulus sequence and the set of recorded neurons
from ``(seed, preset, animal, session)``. Same arguments give bit-identical output on the same platform and
numpy version, also when sessions are simulated together by :func:`simulate_dataset`.

Speed: one Python step per simulated millisecond, a dozen in-place ufunc calls on the state vectors plus an
``np.add.at`` over the out-going synapses of the neurons that spiked; for large populations the drive of
the next 1 s chunk is built in a worker thread meanwhile. ``benchmarks/bench_simulate.py`` times 2,000
neurons x 600 s (about 50 s on 2 cores, ``benchmarks/results/simulate.json``); 250 neurons x 8 min take
about 15-20 s. :func:`simulate_dataset` simulates several sessions in one loop, which amortises the
per-step overhead.
"""

from __future__ import annotations

import math
import statistics
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from spikeinterface.core import BaseRecording, BaseSorting

    from ..data import SpikeTrainSet

__all__ = [
    "CELL_TYPES",
    "PRESETS",
    "STIMULUS_RATE_HZ",
    "SimulatedSession",
    "simulate_session",
    "simulate_sorting",
    "simulate_dataset",
    "simulate_templates",
]

CELL_TYPES = ("RS", "IB", "CH", "FS", "LTS")
"""The five Izhikevich (2003) firing types, in the order used for type-indexed parameters."""

_IZHIKEVICH_ABCD = np.array(
    [
        [0.02, 0.20, -65.0, 8.0],  # RS regular spiking
        [0.02, 0.20, -55.0, 4.0],  # IB intrinsically bursting
        [0.02, 0.20, -50.0, 2.0],  # CH chattering
        [0.10, 0.20, -65.0, 2.0],  # FS fast spiking
        [0.02, 0.25, -65.0, 2.0],  # LTS low-threshold spiking
    ]
)
_EXCITATORY = np.array([True, True, True, False, False])

_DT_S = 0.001  # simulation step, seconds
_COARSE = 5  # steps per sample of the slow drives (5 ms)
STIMULUS_RATE_HZ = 1.0 / (_COARSE * _DT_S)
"""Sampling rate of :attr:`SimulatedSession.stimulus` (200 Hz: one sample per 5 ms)."""
_CHUNK = 1000  # steps per drive chunk (1 s); a multiple of _COARSE
_V_PEAK = 30.0
_NUM_STIM_CHANNELS = 2
_REGION_KINDS = ("wave", "oscillation", "private")
_REGION_MODES = ("shared", "lagged", "mixed")
_MAX_BATCH_NEURONS = 4096  # simulate_dataset: neurons simulated together in one loop

# ---------------------------------------------------------------------------------------------------------------------
# presets

_BASE: dict[str, Any] = dict(
    num_neurons=250,
    duration_s=480.0,
    num_regions=3,
    recorded_fraction=0.8,
    min_spikes=1,
    warmup_s=2.0,
    type_proportions=(0.30, 0.15, 0.15, 0.25, 0.15),
    type_concentration=150.0,
    jitter=(0.03, 0.05),
    bias_mean=1.5,
    bias_sd=1.0,
    noise_sd=(5.0, 2.0),
    fanout=100,
    w_exc=0.5,
    w_inh=1.0,
    cross_region_fraction=0.05,
    region_mode="shared",
    shared_fraction=(0.9, 0.0),
    slow_sd=3.0,
    slow_tau_ms=(10.0, 60.0),
    osc_sd=1.5,
    osc_freq_hz=(4.0, 10.0),
    osc_phase_diffusion=2.0,
    lag_max_ms=(200.0, 300.0),
    global_sd=0.5,
    global_tau_s=1.0,
    stim_sd=1.0,
    stim_block_s=(1.0, 5.0),
    drift=0.0,
    drift_period_s=60.0,
    merge_fraction=0.0,
    drop_fraction=0.0,
    animal_variability=0.2,
)

PRESETS: dict[str, dict] = {
    "easy": dict(_BASE),
    "hard": {
        **_BASE,
        "duration_s": 240.0,
        "jitter": (0.10, 0.20),
        # per-type bias so that the types' rate distributions overlap (medians within a factor ~2)
        "bias_mean": {"RS": 1.0, "IB": -1.0, "CH": -3.5, "FS": -1.5, "LTS": -4.5},
        "bias_sd": 2.5,
        "noise_sd": (4.0, 4.0),
        "region_mode": "lagged",
        "shared_fraction": (0.0, 0.0),
    },
    "varied": {
        **_BASE,
        "recorded_fraction": 0.7,
        "jitter": (0.08, 0.12),
        "bias_mean": {"RS": -1.5, "IB": -2.5, "CH": -4.5, "FS": -1.0, "LTS": -5.0},
        "bias_sd": 4.0,
        "noise_sd": (4.5, 3.0),
        "region_mode": "mixed",
        "shared_fraction": (0.0, 0.5),
        "drift": 0.5,
        "merge_fraction": 0.05,
        "drop_fraction": 0.1,
        "animal_variability": 0.3,
    },
}
"""Default keyword values of each preset; any key can be overridden in :func:`simulate_session`.

Keys (``(lo, hi)`` ranges are drawn uniformly per animal unless said otherwise):

- ``num_neurons`` (int): neurons simulated per session (>= 5 per region).
- ``duration_s`` (float): recorded duration in seconds (rounded to 1 ms).
- ``num_regions`` (int): brain regions per session, labelled ``"region0"``...; every region holds all types.
- ``recorded_fraction`` (float in (0, 1]): fraction of neurons recorded (a random subset per session that
  keeps at least one unit of every region x type group).
- ``min_spikes`` (int): neurons with fewer spikes in the recording are never returned (a sorter cannot find
  them).
- ``warmup_s`` (float): simulated time discarded before the recording starts.
- ``type_proportions`` (5 floats): base proportions of RS, IB, CH, FS, LTS; each animal draws its own from a
  Dirichlet with ``type_concentration``, kept within 0.6x..1.4x of the base.
- ``jitter`` ((lo, hi), at most 0.35): relative sd of the per-neuron multiplicative jitter of a, b, c, d
  (normal, clipped at 2.5 sd).
- ``bias_mean`` (float or {type: float}), ``bias_sd`` (float): tonic input current per neuron, normal with the
  draws clipped to [-3, +1.5] sd (a long low-rate tail, a short high-rate one). Per-type means that offset the
  types' excitability make their rate distributions overlap (``hard``).
- ``noise_sd`` ((excitatory, inhibitory)): sd of the private white-noise current per 1 ms step (times a
  per-neuron log-normal factor, sd 0.2).
- ``fanout`` (int): out-going synapses per neuron; ``w_exc``, ``w_inh`` (float): mean excitatory / inhibitory
  weight magnitude (uniform in [0, 2 w]); ``cross_region_fraction``: fraction of synapses to other regions.
- ``region_mode`` ("shared" | "lagged" | "mixed") and ``shared_fraction`` ((first, last)): see the module
  docstring; in "shared" mode the zero-lag shared fraction of the slow drive goes linearly from ``first`` in
  region0 to ``last`` in the last region, in "mixed" mode it is drawn per animal and region in the range.
- ``slow_sd``, ``slow_tau_ms`` ((fast, slow) filter time constants); ``osc_sd``, ``osc_freq_hz`` (range),
  ``osc_phase_diffusion`` (rad / sqrt(s)); ``lag_max_ms`` (range of the wave regions' largest lag). Per-neuron
  amplitudes vary by a log-normal factor (sd 0.3), with the same distribution in every region.
- ``global_sd``, ``global_tau_s``: zero-lag drive shared by all regions (per-neuron gain uniform in [0, 2 sd]).
- ``stim_sd``: sd of each neuron's tuning to the two stimulus channels; ``stim_block_s`` (min, max) block
  length of the stimulus sequence (blocks of off / DC / sinusoid).
- ``drift`` (float): slow excitability drift (0 = off): each neuron's bias wanders with sd ``4 * drift``
  current units, linearly interpolated between random knots every ``drift_period_s`` seconds (``drift=0.5``
  changes a 10 Hz neuron's rate by roughly x/÷ 1.5-2 over minutes).
- ``merge_fraction`` (float in [0, 1)): fraction of recorded units whose spike train is the union of two
  neurons of the same region; the labels are those of the neuron with more spikes.
- ``drop_fraction`` (float in [0, 1)): fraction of recorded units removed (missed by the sorter), biased
  towards low firing rates.
- ``animal_variability`` (float in [0, 1)): animal-level gains (noise, drives, coupling, fan-out) are
  multiplied by uniform factors in ``[1 - v, 1 + v]``.
"""


# ---------------------------------------------------------------------------------------------------------------------
# output


@dataclass
class SimulatedSession:
    """One simulated recording session: spike trains of the recorded units and their ground truth.

    Parameters
    ----------
    spike_times : list of np.ndarray
        Spike times in seconds, sorted, in ``[0, duration)``, one array per recorded unit.
    duration : float
        Recording length in seconds.
    cell_type : np.ndarray
        Cell type of each unit (one of :data:`CELL_TYPES`), a ``<U`` string array.
    brain_region : np.ndarray
        Region of each unit (``"region0"``, ``"region1"``, ...), a ``<U`` string array.
    animal_id : str
        Animal label, e.g. ``"animal3"``.
    session_id : str
        Session label, e.g. ``"animal3_session1"``.
    stimulus : np.ndarray
        Stimulus drive, shape ``(n_samples, 2)``, sampled at ``stimulus_rate_hz`` from the recording start
        (sample ``k`` covers ``[k, k + 1) / stimulus_rate_hz``). Each neuron receives
        ``stimulus @ tuning`` as input current.
    stimulus_rate_hz : float
        Sampling rate of ``stimulus``.
    neuron_index : np.ndarray, default: empty
        Index of each unit's (dominant) neuron in the simulated network.
    merged_with : np.ndarray, default: empty
        Index of the second neuron merged into the unit, -1 for single-neuron units.
    params : dict, default: {}
        The resolved keyword parameters and the animal-level draws (JSON-serialisable values).
    """

    spike_times: list[np.ndarray]
    duration: float
    cell_type: np.ndarray
    brain_region: np.ndarray
    animal_id: str
    session_id: str
    stimulus: np.ndarray
    stimulus_rate_hz: float
    neuron_index: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    merged_with: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    params: dict = field(default_factory=dict)

    @property
    def num_units(self) -> int:
        """Number of recorded units."""
        return len(self.spike_times)

    def firing_rates(self) -> np.ndarray:
        """Mean firing rate of each unit in Hz.

        Returns
        -------
        np.ndarray
            Spikes per second, one value per unit.
        """
        return np.array([len(t) for t in self.spike_times], dtype=np.float64) / self.duration

    def to_sorting(self, sampling_frequency: float = 30000.0) -> "BaseSorting":
        """Convert to a SpikeInterface ``NumpySorting`` with one segment.

        Parameters
        ----------
        sampling_frequency : float, default: 30000.0
            Sampling frequency in Hz; spike times are rounded to the nearest sample (and kept below
            ``duration * sampling_frequency``).

        Returns
        -------
        spikeinterface.core.NumpySorting
            Unit ids ``"0"`` ... ``"N-1"`` (strings) and the per-unit properties ``cell_type``,
            ``brain_region``, ``animal_id`` and ``session_id``.
        """
        from spikeinterface.core import NumpySorting

        sampling_frequency = float(sampling_frequency)
        if not np.isfinite(sampling_frequency) or sampling_frequency <= 0:
            raise ValueError(f"sampling_frequency must be a positive number, got {sampling_frequency!r}")
        num_samples = _num_samples(self.duration, sampling_frequency)
        unit_ids = np.array([str(i) for i in range(self.num_units)])
        samples, labels = [], []
        for i, times in enumerate(self.spike_times):
            s = np.minimum(np.round(np.asarray(times, dtype=np.float64) * sampling_frequency), num_samples - 1)
            samples.append(s.astype(np.int64))
            labels.append(np.full(s.size, i, dtype=np.int64))
        samples = np.concatenate(samples) if samples else np.zeros(0, dtype=np.int64)
        labels = np.concatenate(labels) if labels else np.zeros(0, dtype=np.int64)
        order = np.argsort(samples, kind="stable")
        sorting = NumpySorting.from_samples_and_labels(
            [samples[order]], [unit_ids[labels[order]]], sampling_frequency, unit_ids=unit_ids
        )
        n = self.num_units
        sorting.set_property("cell_type", np.asarray(self.cell_type, dtype=str))
        sorting.set_property("brain_region", np.asarray(self.brain_region, dtype=str))
        sorting.set_property("animal_id", np.array([self.animal_id] * n, dtype=str))
        sorting.set_property("session_id", np.array([self.session_id] * n, dtype=str))
        return sorting


    def to_spike_train_set(self, covariates: bool = True, waveforms: bool = False) -> "SpikeTrainSet":
        """Convert to a :class:`~spikeinterface_neuronid.data.SpikeTrainSet` for training or embedding.

        Parameters
        ----------
        covariates : bool, default: True
            Attach the stimulus (``(n_samples, 2)`` at ``stimulus_rate_hz``) as covariates, the surrounding
            information a NeurPIR model with ``num_covariates=2`` takes.
        waveforms : bool, default: False
            Attach each unit's peak-channel mean waveform (:func:`simulate_templates` with its defaults: 90
            samples at 30 kHz, spike time at sample 30), as a ``templates`` extension would give it.

        Returns
        -------
        SpikeTrainSet
            The recorded units' spike trains, unit ids ``0 .. N-1``.
        """
        from ..data import SpikeTrainSet

        extra: dict = {}
        if covariates:
            extra.update(covariates=self.stimulus, covariate_rate_hz=self.stimulus_rate_hz)
        if waveforms:
            extra.update(waveforms=simulate_templates(self), waveform_sampling_frequency=30000.0, waveform_nbefore=30)
        return SpikeTrainSet(self.spike_times, self.duration, **extra)


def _num_samples(duration: float, sampling_frequency: float) -> int:
    return max(1, int(round(duration * sampling_frequency)))


# ---------------------------------------------------------------------------------------------------------------------
# parameters and seeds


def _check_preset(preset: str) -> dict:
    if not isinstance(preset, str) or preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; valid presets: {', '.join(sorted(PRESETS))}")
    return PRESETS[preset]


def _range(value, name: str) -> tuple[float, float]:
    if np.isscalar(value):
        value = (value, value)
    value = tuple(float(x) for x in value)
    if len(value) != 2 or not all(np.isfinite(value)):
        raise ValueError(f"{name} must be a number or a (low, high) pair of numbers, got {value!r}")
    return value


def _resolve_params(preset: str, num_neurons, duration_s, overrides: dict) -> dict:
    params = dict(_check_preset(preset))
    unknown = sorted(set(overrides) - set(params))
    if unknown:
        raise ValueError(
            f"unknown simulation parameter(s) {', '.join(map(repr, unknown))}; valid keys: {', '.join(sorted(params))}"
        )
    params.update(overrides)
    if num_neurons is not None:
        params["num_neurons"] = num_neurons
    if duration_s is not None:
        params["duration_s"] = duration_s

    def _int(name, low):
        value = params[name]
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        params[name] = int(value)

    def _float(name, low, high, low_open=False, high_open=False):
        value = params[name]
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be a number, got {value!r}") from None
        bad = not np.isfinite(value) or value < low or value > high
        bad = bad or (low_open and value == low) or (high_open and value == high)
        if bad:
            lb, hb = "(" if low_open else "[", ")" if high_open else "]"
            raise ValueError(f"{name} must be in {lb}{low}, {high}{hb}, got {value!r}")
        params[name] = value

    _int("num_regions", 1)
    _int("num_neurons", 1)
    if params["num_neurons"] < 5 * params["num_regions"]:
        raise ValueError(
            f"num_neurons={params['num_neurons']} is too small: every region needs all 5 cell types, "
            f"so give at least 5 * num_regions = {5 * params['num_regions']} neurons"
        )
    _float("duration_s", 0.0, 1e6, low_open=True)
    if round(params["duration_s"] / _DT_S) < 1:
        raise ValueError(f"duration_s must be at least 1 ms, got {params['duration_s']!r}")
    _float("warmup_s", 0.0, 3600.0)
    _float("recorded_fraction", 0.0, 1.0, low_open=True)
    _float("merge_fraction", 0.0, 1.0, high_open=True)
    _float("drop_fraction", 0.0, 1.0, high_open=True)
    _float("animal_variability", 0.0, 1.0, high_open=True)
    _float("cross_region_fraction", 0.0, 1.0)
    _float("type_concentration", 0.0, np.inf, low_open=True, high_open=True)
    for name in ("bias_sd", "slow_sd", "osc_sd", "osc_phase_diffusion", "global_sd", "stim_sd", "drift"):
        _float(name, 0.0, 1e6)
    for name in ("w_exc", "w_inh"):
        _float(name, 0.0, 1e6)
    _float("global_tau_s", 0.001, 1e6)
    _float("drift_period_s", 1.0, 1e6)
    _int("fanout", 0)
    _int("min_spikes", 0)
    if params["region_mode"] not in _REGION_MODES:
        raise ValueError(f"region_mode must be one of {_REGION_MODES}, got {params['region_mode']!r}")
    props = np.asarray(params["type_proportions"], dtype=np.float64)
    if props.shape != (5,) or not np.all(np.isfinite(props)) or np.any(props <= 0):
        raise ValueError(f"type_proportions must be 5 positive numbers (RS, IB, CH, FS, LTS), got {props!r}")
    params["type_proportions"] = tuple(float(x) for x in props / props.sum())
    bias = params["bias_mean"]
    if isinstance(bias, dict):
        missing = set(CELL_TYPES) - set(bias)
        extra = set(bias) - set(CELL_TYPES)
        if missing or extra:
            raise ValueError(f"bias_mean dict must have exactly the keys {CELL_TYPES}, got {sorted(bias)}")
        params["bias_mean"] = {k: float(bias[k]) for k in CELL_TYPES}
    else:
        params["bias_mean"] = float(bias)
    noise = _range(params["noise_sd"], "noise_sd")
    if min(noise) < 0:
        raise ValueError(f"noise_sd must be non-negative, got {noise!r}")
    params["noise_sd"] = noise
    for name in ("jitter", "shared_fraction", "slow_tau_ms", "osc_freq_hz", "lag_max_ms", "stim_block_s"):
        params[name] = _range(params[name], name)
    lo, hi = params["jitter"]
    if not 0 <= lo <= hi <= 0.35:  # normal draws are clipped at 2.5 sd: factors stay >= 0.125
        raise ValueError(f"jitter must satisfy 0 <= low <= high <= 0.35, got {params['jitter']!r}")
    if not all(0 <= x <= 1 for x in params["shared_fraction"]):
        raise ValueError(f"shared_fraction values must be in [0, 1], got {params['shared_fraction']!r}")
    fast, slow = params["slow_tau_ms"]
    if not _COARSE <= fast < slow:
        raise ValueError(f"slow_tau_ms must be (fast, slow) with {_COARSE} <= fast < slow, got {(fast, slow)!r}")
    lo, hi = params["osc_freq_hz"]
    if not 0 < lo <= hi < 0.25 * STIMULUS_RATE_HZ:
        raise ValueError(f"osc_freq_hz must satisfy 0 < low <= high < {0.25 * STIMULUS_RATE_HZ}, got {(lo, hi)!r}")
    lo, hi = params["lag_max_ms"]
    if not 0 <= lo <= hi <= 10_000:
        raise ValueError(f"lag_max_ms must satisfy 0 <= low <= high <= 10000, got {(lo, hi)!r}")
    lo, hi = params["stim_block_s"]
    if not 0.01 <= lo <= hi:
        raise ValueError(f"stim_block_s must satisfy 0.01 <= min <= max, got {(lo, hi)!r}")
    return params


def _preset_code(preset: str) -> int:
    return zlib.crc32(preset.encode("utf8"))


def _check_index(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    return int(value)


def _animal_draws(params: dict, preset: str, animal: int, seed: int) -> dict:
    """Animal-level statistics: depend only on (seed, preset, animal) and the preset's ranges."""
    rng = np.random.default_rng([seed, _preset_code(preset), animal, 1])
    u = rng.random(16)  # fixed number of draws, whatever the parameters
    v = params["animal_variability"]

    def gain(k):
        return 1.0 + v * (2.0 * u[k] - 1.0)

    def within(k, rng_pair):
        lo, hi = rng_pair
        return lo + (hi - lo) * u[k]

    base = np.asarray(params["type_proportions"])
    g = np.random.default_rng([seed, _preset_code(preset), animal, 2]).gamma(params["type_concentration"] * base)
    props = np.clip(g / g.sum(), 0.6 * base, 1.4 * base)
    props /= props.sum()
    region_rng = np.random.default_rng([seed, _preset_code(preset), animal, 3])
    lo, hi = params["shared_fraction"]
    shared = lo + (hi - lo) * region_rng.random(params["num_regions"])
    return dict(
        noise_gain=gain(0),
        slow_gain=gain(1),
        osc_gain=gain(2),
        global_gain=gain(3),
        stim_gain=gain(4),
        w_exc_gain=gain(5),
        w_inh_gain=gain(6),
        fanout_gain=gain(7),
        bias_shift=v * (2.0 * u[8] - 1.0) * max(params["bias_sd"], 1.0),
        jitter=within(9, params["jitter"]),
        osc_freq_hz=within(10, params["osc_freq_hz"]),
        lag_max_ms=within(11, params["lag_max_ms"]),
        slow_tau_gain=gain(12),
        type_proportions=props,
        mixed_shared_fraction=shared,
    )


# ---------------------------------------------------------------------------------------------------------------------
# random signals

_NORMAL_LUT: np.ndarray | None = None


def _normal_lut() -> np.ndarray:
    """65,536 standard normal quantiles: white noise as a table lookup of random uint16 (4x faster than randn)."""
    global _NORMAL_LUT
    if _NORMAL_LUT is None:
        nd = statistics.NormalDist()
        lut = np.array([nd.inv_cdf((k + 0.5) / 65536.0) for k in range(65536)], dtype=np.float64)
        _NORMAL_LUT = (lut / lut.std()).astype(np.float32)
    return _NORMAL_LUT


def _fast_normal(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    n = int(np.prod(shape))
    return _normal_lut()[np.frombuffer(rng.bytes(2 * n), dtype=np.uint16).reshape(shape)]


def _lowpass_coefficients(tau_steps: float) -> tuple[float, float]:
    """x[k+1] = alpha x[k] + beta e[k] with unit stationary variance for unit-variance e."""
    alpha = math.exp(-1.0 / tau_steps)
    return alpha, math.sqrt(1.0 - alpha * alpha)


def _bandpass_norm(a1: float, b1: float, a2: float, b2: float) -> float:
    """Stationary sd of x1 - x2 for two low-pass filters (unit-variance each) driven by the same noise."""
    cov = b1 * b2 / (1.0 - a1 * a2)
    return math.sqrt(max(2.0 - 2.0 * cov, 1e-12))


def _filter_fft(white: np.ndarray, alphas: Sequence[float], betas: Sequence[float], signs: Sequence[float]):
    """Circular version of a sum of first-order recursions, applied along axis 0 (exact stationary spectrum)."""
    n = white.shape[0]
    spec = np.fft.rfft(white, axis=0)
    z = np.exp(-2j * np.pi * np.fft.rfftfreq(n))
    h = sum(s * b * z / (1.0 - a * z) for a, b, s in zip(alphas, betas, signs))
    if spec.ndim > 1:
        h = h.reshape((-1,) + (1,) * (spec.ndim - 1))
    return np.fft.irfft(spec * h, n=n, axis=0)


_IIR_BLOCK = 40  # rows per vectorised block of the first-order recursions (alpha ** -40 stays finite)


def _iir_tables(alpha: np.ndarray, beta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Tables for :func:`_iir_block`: alpha ** (j + 1) and beta * alpha ** -(j + 1), j < _IIR_BLOCK."""
    j = np.arange(1, _IIR_BLOCK + 1)[:, None]
    return alpha[None, :] ** j, beta[None, :] * alpha[None, :] ** (-j)


def _iir_block(x0: np.ndarray, e: np.ndarray, tables: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """x[j] = alpha x[j-1] + beta e[j] for the rows of ``e`` (<= _IIR_BLOCK), x[-1] = x0, as four array calls.

    x[j] = alpha^(j+1) * (x0 + cumsum_i<=j beta alpha^-(i+1) e[i]); the tables hold both powers.
    """
    up, down = tables
    b = e.shape[0]
    y = np.multiply(e, down[:b], dtype=np.float64)
    np.cumsum(y, axis=0, out=y)
    y += x0
    y *= up[:b]
    return y


def _stimulus_sequence(rngs: Sequence[np.random.Generator], n: int, block_s: tuple[float, float]) -> np.ndarray:
    """Blocks of off / DC / sinusoid, one channel per generator, sampled on the coarse grid; unit-ish amplitude."""
    out = np.zeros((n, len(rngs)))
    rate = STIMULUS_RATE_HZ
    for ch, rng in enumerate(rngs):
        k = 0
        while k < n:
            length = max(1, int(round(rng.uniform(*block_s) * rate)))
            kind = rng.integers(3)
            level = rng.uniform(-1.5, 1.5)
            amp = rng.uniform(0.5, 1.5)
            freq = math.exp(rng.uniform(math.log(0.5), math.log(4.0)))
            phase = rng.uniform(0.0, 2.0 * math.pi)
            stop = min(n, k + length)
            if kind == 1:
                out[k:stop, ch] = level
            elif kind == 2:
                t = np.arange(stop - k) / rate
                out[k:stop, ch] = amp * math.sqrt(2.0) * np.sin(2.0 * np.pi * freq * t + phase)
            k = stop
    return out


# ---------------------------------------------------------------------------------------------------------------------
# one network (session)


class _Network:
    """All per-session arrays: neuron parameters, synapses, drive generators and labels."""

    def __init__(self, preset: str, animal: int, session: int, seed: int, params: dict):
        self.preset, self.animal, self.session, self.seed, self.params = preset, animal, session, seed, params
        self.animal_draws = A = _animal_draws(params, preset, animal, seed)
        rng = self._stream(11)
        n = self.n = params["num_neurons"]
        R = params["num_regions"]
        self.warmup_steps = _COARSE * int(round(params["warmup_s"] / (_COARSE * _DT_S)))
        self.record_steps = int(round(params["duration_s"] / _DT_S))
        self.total_steps = self.warmup_steps + self.record_steps

        # regions and types ------------------------------------------------------------------------------------
        sizes = np.full(R, n // R)
        sizes[: n % R] += 1
        self.region = np.repeat(np.arange(R), sizes)
        self.region_start = np.concatenate([[0], np.cumsum(sizes)])
        types = []
        for r in range(R):
            extra = rng.multinomial(sizes[r] - 5, A["type_proportions"])
            t = np.concatenate([np.arange(5), np.repeat(np.arange(5), extra)])
            types.append(rng.permutation(t))
        self.type = np.concatenate(types)
        exc = _EXCITATORY[self.type]

        # Izhikevich parameters with multiplicative jitter ----------------------------------------------------
        jit = A["jitter"] * np.clip(rng.standard_normal((n, 4)), -2.5, 2.5)
        abcd = _IZHIKEVICH_ABCD[self.type] * (1.0 + jit)
        self.a, self.b, self.c, self.d = (abcd[:, k].copy() for k in range(4))

        # tonic input and noise -------------------------------------------------------------------------------
        bm = params["bias_mean"]
        mean = np.array([bm[t] for t in CELL_TYPES])[self.type] if isinstance(bm, dict) else np.full(n, bm)
        self.bias = mean + A["bias_shift"] + params["bias_sd"] * np.clip(rng.standard_normal(n), -3.0, 1.5)
        noise = np.where(exc, params["noise_sd"][0], params["noise_sd"][1]) * A["noise_gain"]
        self.noise_sd = noise * np.exp(0.2 * rng.standard_normal(n))

        # synapses: fixed fan-out, targets mostly in the own region (global indices added at batching) --------
        K = int(round(params["fanout"] * A["fanout_gain"]))
        self.fanout = K
        if K > 0:
            start = self.region_start[self.region][:, None]
            size = sizes[self.region][:, None]
            own = start + (np.arange(n)[:, None] - start + 1 + rng.integers(0, np.maximum(size - 1, 1), (n, K))) % size
            other = rng.integers(0, n, (n, K))
            cross = rng.random((n, K)) < params["cross_region_fraction"]
            targets = np.where(cross & (R > 1), other, own)
            mag = np.where(exc, params["w_exc"] * A["w_exc_gain"], -params["w_inh"] * A["w_inh_gain"])
            self.weights = mag[:, None] * 2.0 * rng.random((n, K))
            self.targets = targets.astype(np.int64)
        else:
            self.targets = np.zeros((n, 0), dtype=np.int64)
            self.weights = np.zeros((n, 0))

        # region structure ---------------------------------------------------------------------------------------
        self._build_drives(params, A, rng, sizes)

        # initial state -----------------------------------------------------------------------------------------
        self.v0 = -65.0 + 5.0 * rng.standard_normal(n)
        self.u0 = self.b * self.v0

        self.noise_rng = self._stream(12)  # drives, chunk by chunk
        self.post_rng = self._stream(13)  # spike-time jitter, recorded / dropped / merged units
        self._prepare_chunks()

    def _stream(self, key: int) -> np.random.Generator:
        """An independent random stream of this session."""
        return np.random.default_rng([self.seed, _preset_code(self.preset), self.animal, self.session, key])

    # drives ------------------------------------------------------------------------------------------------------

    def _build_drives(self, params: dict, A: dict, rng: np.random.Generator, sizes: np.ndarray) -> None:
        n, R = self.n, params["num_regions"]
        mode = params["region_mode"]
        n_coarse = -(-self.total_steps // _COARSE)
        self.n_coarse = n_coarse
        self.recorded_coarse_start = self.warmup_steps // _COARSE

        kind = np.array([_REGION_KINDS[r % 3] for r in range(R)])
        repeat = np.array([r // 3 for r in range(R)])
        if mode == "shared":
            lo, hi = params["shared_fraction"]
            zero_lag = np.linspace(lo, hi, R) if R > 1 else np.array([lo])
            kind = np.array(["private"] * R)
            repeat = np.zeros(R, dtype=int)
        elif mode == "lagged":
            zero_lag = np.zeros(R)
        else:
            zero_lag = A["mixed_shared_fraction"]
        self.region_kind = kind
        self.region_zero_lag = zero_lag

        # slow band-limited drive: coefficients per neuron (private) and per region (shared)
        fast, slow = params["slow_tau_ms"]
        tau_scale = A["slow_tau_gain"]
        ms_per_coarse = _COARSE * _DT_S * 1000.0
        region_tau_slow = np.array(
            [slow * tau_scale * (2.0 ** repeat[r] if kind[r] == "private" else 1.0) for r in range(R)]
        )
        tau_fast = fast * tau_scale / ms_per_coarse
        self.slow_coef = []  # per region: (a1, b1, a2, b2, norm)
        for r in range(R):
            a1, b1 = _lowpass_coefficients(tau_fast)
            a2, b2 = _lowpass_coefficients(region_tau_slow[r] / ms_per_coarse)
            self.slow_coef.append((a1, b1, a2, b2, _bandpass_norm(a1, b1, a2, b2)))
        coef = np.array(self.slow_coef)[self.region]
        self.pa1, self.pb1, self.pa2, self.pb2, self.pnorm = (coef[:, k].copy() for k in range(5))

        # lags (wave regions), zero-lag and private weights of the slow drive (squares sum to 1)
        lag_max = A["lag_max_ms"]
        # wave neurons get the region's drive with their own lag and a sign, half of them inverted (push-pull),
        # so the region's summed drive cancels and the sequence leaves no zero-lag population signal
        lag = np.zeros(n)
        is_wave = np.zeros(n, dtype=bool)
        sign = np.ones(n)
        for r in range(R):
            sl = slice(self.region_start[r], self.region_start[r + 1])
            if kind[r] == "wave":
                lag[sl] = rng.uniform(0.0, lag_max / (1.0 + repeat[r]), sizes[r])
                is_wave[sl] = True
                sign[sl] = rng.permutation(np.arange(sizes[r]) % 2 * 2.0 - 1.0)
        zl = np.asarray(zero_lag, dtype=np.float64)[self.region]
        self.w0 = np.sqrt(zl)
        self.w_lag = np.where(is_wave, np.sqrt(1.0 - zl), 0.0) * sign
        self.w_priv = np.sqrt(np.clip(1.0 - self.w_lag**2 - self.w0**2, 0.0, 1.0))
        self.lag_coarse = np.round(lag / ms_per_coarse).astype(np.int64)
        self.max_lag = int(self.lag_coarse.max(initial=0))

        amp_slow = params["slow_sd"] * A["slow_gain"]
        amp_osc = params["osc_sd"] * A["osc_gain"]
        self.amp_slow = amp_slow * np.exp(0.3 * rng.standard_normal(n) - 0.045)
        self.amp_osc = amp_osc * np.exp(0.3 * rng.standard_normal(n) - 0.045)

        # oscillation: shared-phase regions use the region's phase process + a stratified per-neuron phase
        dt_c = _COARSE * _DT_S
        freq = A["osc_freq_hz"] * np.array(
            [1.0 + 0.4 * repeat[r] if kind[r] == "oscillation" else 1.0 for r in range(R)]
        )
        self.omega = (2.0 * np.pi * dt_c * freq)[self.region] * np.exp(0.05 * rng.standard_normal(n))
        self.phase_step_sd = params["osc_phase_diffusion"] * math.sqrt(dt_c)
        self.osc_shared = np.zeros(n, dtype=bool)
        self.phase = np.zeros(n)
        for r in range(R):
            sl = slice(self.region_start[r], self.region_start[r + 1])
            m = sizes[r]
            if kind[r] == "oscillation":
                self.osc_shared[sl] = True
                self.phase[sl] = 2.0 * np.pi * (rng.permutation(m) + rng.random(m)) / m
        self.omega_shared = 2.0 * np.pi * dt_c * freq  # per region

        # zero-lag components common to all regions
        self.global_gain = params["global_sd"] * A["global_gain"] * rng.uniform(0.0, 2.0, n)
        self.tuning = params["stim_sd"] * A["stim_gain"] * rng.standard_normal((_NUM_STIM_CHANNELS, n))

        # private state carried across chunks
        cov = self.pb1 * self.pb2 / (1.0 - self.pa1 * self.pa2)
        self.x1 = rng.standard_normal(n)
        self.x2 = cov * self.x1 + np.sqrt(np.maximum(1.0 - cov**2, 0.0)) * rng.standard_normal(n)
        self.theta = rng.uniform(0.0, 2.0 * np.pi, n)

        # shared signals for the whole session on the coarse grid (own streams: the neuron parameters above do
        # not depend on the duration, and a longer session's stimulus starts with a shorter one's) -------------
        signal_rng = self._stream(14)
        lag_pad = self.max_lag
        white = signal_rng.standard_normal((n_coarse + lag_pad, 2 * R + 1))
        z_lag = np.zeros((R, n_coarse + lag_pad))
        z0 = np.zeros((R, n_coarse))
        for r in range(R):
            a1, b1, a2, b2, norm = self.slow_coef[r]
            z_lag[r] = _filter_fft(white[:, r], (a1, a2), (b1, b2), (1.0, -1.0)) / norm
            z0[r] = _filter_fft(white[lag_pad:, R + r], (a1, a2), (b1, b2), (1.0, -1.0)) / norm
        ag, bg = _lowpass_coefficients(params["global_tau_s"] / dt_c)
        g = _filter_fft(white[lag_pad:, 2 * R], (ag,), (bg,), (1.0,))
        self.global_signal = g / max(g.std(), 1e-12)
        self.z_lag, self.z0, self.lag_pad = z_lag, z0, lag_pad
        steps = self.phase_step_sd * signal_rng.standard_normal((n_coarse, R)) + self.omega_shared[None, :]
        self.theta_shared = (signal_rng.uniform(0, 2 * np.pi, R)[None, :] + np.cumsum(steps, axis=0)).T.copy()
        stim_rngs = [self._stream(100 + ch) for ch in range(_NUM_STIM_CHANNELS)]
        self.stimulus_full = _stimulus_sequence(stim_rngs, n_coarse, params["stim_block_s"])

        # drift: knots of a slow bias offset per neuron
        self.drift_amp = 4.0 * params["drift"]
        if self.drift_amp > 0:
            drift_rng = self._stream(16)
            period = params["drift_period_s"] / _DT_S
            n_knots = int(math.ceil(self.total_steps / period)) + 2
            self.drift_period_steps = period
            self.drift_offset = drift_rng.uniform(0.0, period, n)
            self.drift_knots = drift_rng.standard_normal((n_knots, n))

    def _prepare_chunks(self) -> None:
        """float32 copies of everything the per-chunk drive needs (float32 halves the cost of the big arrays)."""
        f32 = np.float32
        self.iir1 = _iir_tables(self.pa1, self.pb1)
        self.iir2 = _iir_tables(self.pa2, self.pb2)
        self.theta = self.theta.astype(f32)
        self.c_priv = (self.w_priv * self.amp_slow / self.pnorm).astype(f32)
        self.c_lag = (self.w_lag * self.amp_slow).astype(f32)
        self.c_zero = (self.w0 * self.amp_slow).astype(f32)
        self.c_osc = (math.sqrt(2.0) * self.amp_osc).astype(f32)
        self.c_omega = self.omega.astype(f32)
        self.c_global = self.global_gain.astype(f32)
        self.c_tuning = self.tuning.astype(f32)
        self.c_noise = (0.01 * self.noise_sd).astype(f32)
        self.z_lag = self.z_lag.astype(f32)
        self.z0 = self.z0.astype(f32)
        self.global_signal32 = self.global_signal.astype(f32)
        self.stimulus32 = self.stimulus_full.astype(f32)
        self.theta_shared = (self.theta_shared % (2.0 * np.pi)).astype(f32)
        self.phase32 = self.phase.astype(f32)
        self.region_slices = [
            slice(self.region_start[r], self.region_start[r + 1]) for r in range(len(self.region_kind))
        ]
        self.wave_cols = np.flatnonzero(self.w_lag != 0)
        self.wave_offset = (self.lag_pad - self.lag_coarse[self.wave_cols]).astype(np.int64)
        self.wave_region = self.region[self.wave_cols]
        self.osc_regions = [r for r in range(len(self.region_kind)) if self.osc_shared[self.region_slices[r]].any()]

    def drive_chunk(self, step0: int, length: int, out: np.ndarray) -> None:
        """Fill ``out`` (length x n, float32) with 0.01 * I_ext + 1.4 for steps [step0, step0 + length)."""
        n = self.n
        k0 = step0 // _COARSE
        nc = -(-length // _COARSE)
        rows = slice(k0, k0 + nc)
        rng = self.noise_rng
        # private band-limited drive: two first-order recursions on the same noise, carried across chunks
        white = _fast_normal(rng, (nc, n))
        coarse = np.empty((nc, n), dtype=np.float32)
        for k in range(0, nc, _IIR_BLOCK):
            e = white[k : k + _IIR_BLOCK]
            b = e.shape[0]
            x1 = _iir_block(self.x1, e, self.iir1)
            x2 = _iir_block(self.x2, e, self.iir2)
            np.subtract(x1, x2, out=coarse[k : k + b])
            self.x1, self.x2 = x1[-1].copy(), x2[-1].copy()
        coarse *= self.c_priv
        # lagged (wave regions) and zero-lag shared slow drive
        if self.wave_cols.size:
            cols = np.arange(k0, k0 + nc)[:, None] + self.wave_offset[None, :]
            coarse[:, self.wave_cols] += self.z_lag[self.wave_region[None, :], cols] * self.c_lag[self.wave_cols]
        for r, sl in enumerate(self.region_slices):
            if self.region_zero_lag[r] > 0:
                coarse[:, sl] += np.multiply.outer(self.z0[r, rows], self.c_zero[sl])
        # oscillation: own diffusing phase, or the region's shared phase + a fixed per-neuron offset
        theta = _fast_normal(rng, (nc, n))
        theta *= np.float32(self.phase_step_sd)
        theta += self.c_omega
        np.cumsum(theta, axis=0, out=theta)
        theta += self.theta
        self.theta = np.mod(theta[-1], np.float32(2.0 * np.pi))
        for r in self.osc_regions:
            sl = self.region_slices[r]
            np.add.outer(self.theta_shared[r, rows], self.phase32[sl], out=theta[:, sl])
        np.cos(theta, out=theta)
        theta *= self.c_osc
        coarse += theta
        # zero-lag, the same statistics in every region: global state and stimulus
        coarse += np.multiply.outer(self.global_signal32[rows], self.c_global)
        coarse += self.stimulus32[rows] @ self.c_tuning
        # tonic bias (+ drift), then 0.5 * I + 70
        bias = self.bias
        if self.drift_amp > 0:
            pos = (step0 + 0.5 * length + self.drift_offset) / self.drift_period_steps
            i0 = np.floor(pos).astype(np.int64)
            w = pos - i0
            cols = np.arange(n)
            d = (1.0 - w) * self.drift_knots[i0, cols] + w * self.drift_knots[i0 + 1, cols]
            bias = bias + self.drift_amp * d
        coarse += bias.astype(np.float32)
        coarse *= np.float32(0.01)  # the loop's scaled units: D = 0.01 I + 1.4
        coarse += np.float32(1.4)
        # fine white noise, one value per neuron and 1 ms step, plus the held coarse drive
        idx = np.frombuffer(rng.bytes(2 * length * n), dtype=np.uint16).reshape(length, n)
        if out.flags.c_contiguous:
            np.take(_normal_lut(), idx, out=out)
        else:  # a column block of a batch
            out[...] = _normal_lut()[idx]
        out *= self.c_noise
        for j in range(_COARSE):  # hold each coarse sample for _COARSE steps, in place (out may be a view)
            view = out[j::_COARSE]
            view += coarse[: view.shape[0]]

    # outputs -----------------------------------------------------------------------------------------------------

    def make_session(self, neuron_steps: list[np.ndarray]) -> SimulatedSession:
        """Turn per-neuron spike steps (recording-relative) into a SimulatedSession."""
        p, rng = self.params, self.post_rng
        n, R = self.n, p["num_regions"]
        duration = self.record_steps * _DT_S
        times = [(s + rng.random(s.size)) * _DT_S for s in neuron_steps]
        counts = np.array([t.size for t in times], dtype=np.float64)
        group = self.region * 5 + self.type

        # which neurons are recorded: a random subset of the neurons with enough spikes, keeping every
        # region x type group that has such a neuron
        n_rec = max(min(n, int(round(p["recorded_fraction"] * n))), 1)
        priority = rng.permutation(n)
        priority = priority[counts[priority] >= p["min_spikes"]]
        first = np.zeros(n, dtype=bool)
        seen: set[int] = set()
        for i in priority:
            if group[i] not in seen:
                seen.add(int(group[i]))
                first[i] = True
        order = np.concatenate([priority[first[priority]], priority[~first[priority]]])
        recorded = np.sort(order[: max(n_rec, int(first.sum()))])

        # missed units: biased towards low rates, never the last of its group
        n_drop = int(round(p["drop_fraction"] * recorded.size))
        if n_drop:
            w = 1.0 / (counts[recorded] / duration + 1.0)
            keys = rng.random(recorded.size) ** (1.0 / w)  # weighted sampling without replacement
            left = {g: c for g, c in zip(*np.unique(group[recorded], return_counts=True))}
            dropped = set()
            for j in np.argsort(-keys):
                if len(dropped) == n_drop:
                    break
                g = group[recorded[j]]
                if left[g] > 1:
                    left[g] -= 1
                    dropped.add(j)
            recorded = recorded[np.setdiff1d(np.arange(recorded.size), np.array(sorted(dropped), dtype=np.int64))]

        # merges: union with a neuron of the same region (unrecorded ones first)
        merged_with = np.full(recorded.size, -1, dtype=np.int64)
        dominant = recorded.copy()
        n_merge = int(round(p["merge_fraction"] * recorded.size))
        unit_times = [times[i] for i in recorded]
        if n_merge:
            is_rec = np.zeros(n, dtype=bool)
            is_rec[recorded] = True
            used = set(recorded.tolist())
            for j in rng.choice(recorded.size, n_merge, replace=False):
                i = recorded[j]
                same = np.flatnonzero(self.region == self.region[i])
                cand = [k for k in rng.permutation(same) if k not in used and not is_rec[k]]
                if not cand:
                    cand = [k for k in rng.permutation(same) if k != i]
                if not cand:
                    continue
                k = int(cand[0])
                used.add(k)
                unit_times[j] = np.sort(np.concatenate([times[i], times[k]]))
                merged_with[j] = k
                if counts[k] > counts[i]:
                    dominant[j], merged_with[j] = k, i

        # shuffle the unit order so it carries no label information
        perm = rng.permutation(recorded.size)
        dominant, merged_with = dominant[perm], merged_with[perm]
        unit_times = [unit_times[j] for j in perm]
        c0 = self.recorded_coarse_start
        n_stim = int(math.ceil(self.record_steps / _COARSE))
        animal_id = f"animal{self.animal}"
        A = self.animal_draws
        info = {k: (list(v) if isinstance(v, tuple) else v) for k, v in p.items()}
        info["preset"] = self.preset
        info["seed"] = self.seed
        info["animal"] = {k: (np.asarray(v).tolist() if isinstance(v, np.ndarray) else float(v)) for k, v in A.items()}
        info["region_kind"] = self.region_kind.tolist()
        info["region_zero_lag_fraction"] = np.asarray(self.region_zero_lag, dtype=float).tolist()
        info["fanout"] = self.fanout
        return SimulatedSession(
            spike_times=unit_times,
            duration=duration,
            cell_type=np.array(CELL_TYPES)[self.type[dominant]].astype(str),
            brain_region=np.array([f"region{r}" for r in range(R)])[self.region[dominant]].astype(str),
            animal_id=animal_id,
            session_id=f"{animal_id}_session{self.session}",
            stimulus=self.stimulus_full[c0 : c0 + n_stim].copy(),
            stimulus_rate_hz=STIMULUS_RATE_HZ,
            neuron_index=dominant,
            merged_with=merged_with,
            params=info,
        )


# ---------------------------------------------------------------------------------------------------------------------
# the loop


def _simulate_networks(networks: list[_Network], progress=None, threaded: bool | None = None) -> list[list[np.ndarray]]:
    """Simulate independent networks of equal length together; returns per network, per neuron spike steps.

    The networks share one state vector; their synapses never cross, so every neuron's arithmetic (including
    the order of the recurrent sums) is the same as when its network is simulated alone. With ``threaded``, the
    drive of chunk k + 1 is built in a worker thread while chunk k is simulated (same numbers, in order); by
    default only from 1,024 neurons on, below that the GIL hand-overs cost more than the overlap saves.
    """
    total_steps = networks[0].total_steps
    assert all(net.total_steps == total_steps for net in networks)
    sizes = [net.n for net in networks]
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    N = int(offsets[-1])
    cat = np.concatenate
    # Scaled variables: w = 0.02 v and q = 0.01 u turn each half-step into w <- w (w + 3.5) + D - q with
    # D = 0.01 I + 1.4 (three ufunc calls instead of four); the peak is w = 0.6, the reset w = 0.02 c.
    # The recovery update of a neuron that fired uses the peak (v = 30 mV); it is applied after the reset as
    # one jump: q += 0.5 a b (0.6 - 0.02 c) + 0.01 d.
    f32 = np.float32
    a = cat([net.a for net in networks])
    b = cat([net.b for net in networks])
    c = cat([net.c for net in networks])
    d = cat([net.d for net in networks])
    w_reset = (0.02 * c).astype(f32)
    one_minus_a = (1.0 - a).astype(f32)
    k_ab = (0.5 * a * b).astype(f32)
    q_jump = (0.5 * a * b * (0.02 * _V_PEAK - 0.02 * c) + 0.01 * d).astype(f32)
    w_peak = f32(0.02 * _V_PEAK)
    K = max(net.targets.shape[1] for net in networks)
    targets = np.zeros((N, K), dtype=np.intp)
    weights = np.zeros((N, K), dtype=f32)  # float32 like J: np.add.at with mixed types is 50x slower
    for net, o in zip(networks, offsets[:-1]):
        k = net.targets.shape[1]
        targets[o : o + net.n, :k] = net.targets + o
        targets[o : o + net.n, k:] = o  # padding: zero weight onto the network's first neuron
        weights[o : o + net.n, :k] = 0.01 * net.weights
    # float32 state: the per-step cost is dominated by call overhead, float32 trims the rest
    w = (0.02 * cat([net.v0 for net in networks])).astype(f32)
    q = (0.01 * cat([net.u0 for net in networks])).astype(f32)
    J = np.empty(N, dtype=f32)
    tmp = np.empty(N, dtype=f32)
    fired = np.empty(N, dtype=bool)
    chunk_idx: list[np.ndarray] = []
    chunk_steps: list[np.ndarray] = []
    pending = None  # (targets, weights) of the synapses of the previous step's spikes
    # local names: attribute lookups cost as much as small ufuncs here
    multiply, add, subtract, greater_equal = np.multiply, np.add, np.subtract, np.greater_equal
    fired_nonzero, add_at = fired.nonzero, np.add.at
    # The drive of the next chunk is built in a worker thread while this chunk is simulated: its large numpy
    # calls release the GIL, so a second core takes most of that cost. Double-buffered, so results are the same.
    buffers = [np.empty((_CHUNK, N), dtype=f32), np.empty((_CHUNK, N), dtype=f32)]
    starts = list(range(0, total_steps, _CHUNK))

    def build(i: int) -> np.ndarray:
        step0 = starts[i]
        length = min(_CHUNK, total_steps - step0)
        out = buffers[i % 2][:length]
        for net, o in zip(networks, offsets[:-1]):
            net.drive_chunk(step0, length, out[:, o : o + net.n])
        return out

    if threaded is None:
        threaded = N >= 1024
    executor = ThreadPoolExecutor(max_workers=1) if threaded else None
    future = executor.submit(build, 0) if executor else None
    try:
        for i, step0 in enumerate(starts):
            if executor:
                D = future.result()
                if i + 1 < len(starts):
                    future = executor.submit(build, i + 1)
            else:
                D = build(i)
            length = D.shape[0]
            idx_list: list[np.ndarray] = []
            step_list: list[int] = []
            for t in range(length):
                subtract(D[t], q, out=J)  # J = 0.02 (0.5 I + 70 - 0.5 u)
                if pending is not None:  # recurrent input from the previous step's spikes
                    add_at(J, pending[0], pending[1])
                add(w, 3.5, out=tmp)  # half-step 1
                multiply(tmp, w, out=tmp)
                add(tmp, J, out=w)
                add(w, 3.5, out=tmp)  # half-step 2
                multiply(tmp, w, out=tmp)
                add(tmp, J, out=w)
                greater_equal(w, w_peak, out=fired)
                idx = fired_nonzero()[0]
                if idx.size:
                    w[idx] = w_reset[idx]
                multiply(q, one_minus_a, out=q)  # u <- u + a (b v - u)
                multiply(w, k_ab, out=tmp)
                add(q, tmp, out=q)
                if idx.size:
                    q[idx] += q_jump[idx]
                    pending = (targets[idx].ravel(), weights[idx].ravel())
                    idx_list.append(idx)
                    step_list.append(t)
                else:
                    pending = None
            if idx_list:
                counts = np.fromiter((i.size for i in idx_list), dtype=np.int64, count=len(idx_list))
                chunk_idx.append(cat(idx_list).astype(np.int32))
                # int32 steps: 2**31 ms is 24 days
                chunk_steps.append(np.repeat(np.asarray(step_list, dtype=np.int32) + np.int32(step0), counts))
            if progress is not None:
                progress.update(length * _DT_S)
    finally:
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)
    if chunk_idx:
        neuron = cat(chunk_idx)
        steps = cat(chunk_steps)
    else:
        neuron = np.zeros(0, dtype=np.int32)
        steps = np.zeros(0, dtype=np.int32)
    order = np.argsort(neuron, kind="stable")  # stable: keeps time order within a neuron
    neuron, steps = neuron[order], steps[order]
    bounds = np.searchsorted(neuron, np.arange(N + 1))
    out = []
    for net, o in zip(networks, offsets[:-1]):
        trains = []
        for i in range(o, o + net.n):
            s = steps[bounds[i] : bounds[i + 1]] - net.warmup_steps
            trains.append(s[s >= 0])
        out.append(trains)
    return out


def _progress(enabled: bool, total: float, desc: str):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=round(total, 3), desc=desc, unit="sim s", unit_scale=False)


# ---------------------------------------------------------------------------------------------------------------------
# waveforms

# Per-type waveform statistics (per type in CELL_TYPES order): trough-to-peak width in ms (mean, sd) and the
# ratio of the after-trough peak to the trough depth (mean, sd). Fast spiking cells are narrow with a large
# peak; regular spiking / bursting cells broad with a small one; LTS (somatostatin-like) cells intermediate,
# overlapping both. RS, IB and CH differ only slightly, so waveforms separate E from I but not the five types.
_WAVEFORM_WIDTH_MS = np.array([[0.66, 0.10], [0.70, 0.10], [0.61, 0.10], [0.30, 0.06], [0.47, 0.10]])
_WAVEFORM_PEAK_RATIO = np.array([[0.28, 0.08], [0.25, 0.08], [0.30, 0.08], [0.50, 0.12], [0.42, 0.10]])
_WAVEFORM_ANIMAL_WIDTH = 0.05  # animal-level width factor, uniform in [1 - x, 1 + x] (probe, preparation)


def _session_key(session: SimulatedSession, seed: int | None) -> list[int]:
    """Seed words that identify a session (preset, simulation seed, session id) plus the template seed."""
    params = session.params or {}
    preset = str(params.get("preset", ""))
    sim_seed = params.get("seed", 0)
    sim_seed = int(sim_seed) if isinstance(sim_seed, (int, np.integer)) else 0
    extra = 0 if seed is None else _check_index(seed, "seed")
    return [extra, sim_seed, _preset_code(preset), zlib.crc32(str(session.session_id).encode("utf8"))]


def _waveform_shapes(
    session: SimulatedSession, times_ms: np.ndarray, seed: int | None, noise_sd: np.ndarray | None
) -> np.ndarray:
    """Peak-channel mean waveform (µV) of each unit of ``session`` at ``times_ms`` relative to the trough.

    Unit ``i`` gets its parameters from a generator keyed by the session and the unit's network neuron (its
    position when the session has no ``neuron_index``), so a neuron keeps its waveform whichever units are
    recorded; ``noise_sd`` (one value per unit, or None) adds smoothed Gaussian noise of that sd from a
    separate stream.
    """
    key = _session_key(session, seed)
    types = np.asarray(session.cell_type, dtype=str)
    n = session.num_units
    neuron = np.asarray(session.neuron_index, dtype=np.int64)
    if neuron.size != n:
        neuron = np.arange(n, dtype=np.int64)
    unknown = sorted(set(types.tolist()) - set(CELL_TYPES))
    if unknown:
        raise ValueError(f"unknown cell type(s) {', '.join(map(repr, unknown))}; expected {', '.join(CELL_TYPES)}")
    type_index = np.array([CELL_TYPES.index(c) for c in types], dtype=np.int64)
    animal_rng = np.random.default_rng([key[0], key[1], key[2], zlib.crc32(str(session.animal_id).encode("utf8")), 40])
    animal_width = 1.0 + _WAVEFORM_ANIMAL_WIDTH * (2.0 * animal_rng.random() - 1.0)
    t = np.asarray(times_ms, dtype=np.float64)
    out = np.zeros((n, t.size), dtype=np.float64)
    for i in range(n):
        rng = np.random.default_rng(key + [int(neuron[i]), 41])
        k = type_index[i]
        z = np.clip(rng.standard_normal(4), -2.5, 2.5)
        width = np.clip(animal_width * (_WAVEFORM_WIDTH_MS[k, 0] + _WAVEFORM_WIDTH_MS[k, 1] * z[0]), 0.15, 1.1)
        ratio = np.clip(_WAVEFORM_PEAK_RATIO[k, 0] + _WAVEFORM_PEAK_RATIO[k, 1] * z[1], 0.05, 0.9)
        amplitude = float(np.clip(70.0 * np.exp(0.45 * z[2]), 25.0, 300.0))
        slope = math.exp(0.2 * z[3])  # repolarisation: > 1 slower return from the trough
        sharp = rng.uniform(2.5, 5.0)  # shape of the after-trough peak (larger: sharper)
        fall = rng.uniform(0.06, 0.10)  # depolarisation time constant of the trough, ms
        pre = rng.uniform(0.0, 0.12)  # small peak before the trough
        rise = 0.30 * width * slope
        trough = -np.exp(-0.5 * (t / np.where(t < 0, fall, rise)) ** 2)
        x = np.maximum(t, 0.0) / width
        peak = ratio * x**sharp * np.exp(sharp * (1.0 - x))
        before = pre * np.exp(-0.5 * ((t + 0.3) / 0.12) ** 2)
        shape = trough + peak + before
        out[i] = amplitude * shape / -shape.min()
    if noise_sd is not None:
        kernel = np.array([0.25, 0.5, 0.25])
        gain = 1.0 / math.sqrt(float(np.sum(kernel**2)))  # the smoothed noise keeps the requested sd
        for i in range(n):
            rng = np.random.default_rng(key + [int(neuron[i]), 42])
            e = np.convolve(rng.standard_normal(t.size + 2), kernel, mode="valid")
            out[i] += noise_sd[i] * gain * e
    return out.astype(np.float32)


# ---------------------------------------------------------------------------------------------------------------------
# public API


def simulate_session(
    preset: str = "easy",
    animal: int = 0,
    session: int = 0,
    num_neurons: int | None = None,
    duration_s: float | None = None,
    seed: int | None = None,
    progress_bar: bool = False,
    **overrides,
) -> SimulatedSession:
    """Simulate one recording session of an Izhikevich population.

    Parameters
    ----------
    preset : str, default: "easy"
        ``"easy"`` (canonical types, 3-5 % jitter, regions differ by zero-lag shared drive, 250 neurons x 8 min),
        ``"hard"`` (10-20 % jitter, rate-matched types, regions differ by lagged / oscillatory structure,
        250 neurons x 4 min) or ``"varied"`` (8-12 % jitter, wide rate range, drift, merged and missed units,
        mixed region structure, 250 neurons x 8 min). See :data:`PRESETS`.
    animal : int, default: 0
        Animal seed (>= 0): animal-level statistics depend only on it (and on ``seed`` and the preset).
    session : int, default: 0
        Session seed (>= 0): network instance, noise, stimulus and recorded neurons.
    num_neurons : int or None, default: None
        Neurons simulated; None uses the preset's ``num_neurons``. About
        ``recorded_fraction * num_neurons * (1 - drop_fraction)`` units are returned.
    duration_s : float or None, default: None
        Recorded duration in seconds; None uses the preset's ``duration_s``.
    seed : int or None, default: None
        Base seed mixed into every random stream; None means 0.
    progress_bar : bool, default: False
        Show a tqdm progress bar over simulated seconds.
    **overrides
        Any other key of :data:`PRESETS` (e.g. ``drift=0.5``, ``merge_fraction=0.1``, ``num_regions=2``).

    Returns
    -------
    SimulatedSession
        Spike trains of the recorded units with their cell type, region, animal and session labels and the
        stimulus.

    Raises
    ------
    ValueError
        For an unknown preset or override key (the message lists the valid ones), ``num_neurons`` below
        ``5 * num_regions``, a non-positive duration, or an out-of-range parameter.
    """
    net = _make_network(preset, animal, session, num_neurons, duration_s, seed, overrides)
    bar = _progress(progress_bar, net.total_steps * _DT_S, f"simulate {preset} animal{net.animal} session{net.session}")
    try:
        (trains,) = _simulate_networks([net], bar)
    finally:
        if bar is not None:
            bar.close()
    return net.make_session(trains)


def _make_network(preset, animal, session, num_neurons, duration_s, seed, overrides) -> _Network:
    params = _resolve_params(preset, num_neurons, duration_s, overrides)
    animal = _check_index(animal, "animal")
    session = _check_index(session, "session")
    seed = 0 if seed is None else _check_index(seed, "seed")
    return _Network(preset, animal, session, seed, params)


def simulate_sorting(
    preset: str = "easy",
    animal: int = 0,
    session: int = 0,
    *,
    with_recording: bool = False,
    sampling_frequency: float = 30000.0,
    num_channels: int = 16,
    **kwargs,
) -> "BaseSorting | tuple[BaseRecording, BaseSorting]":
    """Simulate one session and return it as a SpikeInterface sorting (optionally with a matching recording).

    Parameters
    ----------
    preset : str, default: "easy"
        Preset name, see :func:`simulate_session`.
    animal : int, default: 0
        Animal seed.
    session : int, default: 0
        Session seed.
    with_recording : bool, default: False
        Also return a lazy recording: templates injected at the spike times into generated noise (sd 5 µV)
        on a generated two-column probe, so that analyzers with waveforms / templates can be built. Each
        unit's template is its noise-free :func:`simulate_templates` shape (the cell-type dependent
        peak-channel waveform, 1 ms before and 3 ms after the trough) spread over the channels with the
        spatial profile of ``spikeinterface.core.generate_templates`` at a generated unit location.
    sampling_frequency : float, default: 30000.0
        Sampling frequency of the sorting (and recording) in Hz.
    num_channels : int, default: 16
        Channels of the generated probe (only with ``with_recording``).
    **kwargs
        Passed to :func:`simulate_session` (``num_neurons``, ``duration_s``, ``seed``, ``progress_bar`` and
        preset overrides).

    Returns
    -------
    sorting : spikeinterface.core.BaseSorting
        The sorting of :meth:`SimulatedSession.to_sorting`, when ``with_recording`` is False.
    (recording, sorting) : tuple
        When ``with_recording`` is True; the sorting then also has the properties ``gt_unit_locations`` and
        ``main_channel_id``.
    """
    if with_recording and (
        isinstance(num_channels, bool) or not isinstance(num_channels, (int, np.integer)) or num_channels < 2
    ):
        raise ValueError(f"num_channels must be an integer >= 2, got {num_channels!r}")
    if not np.isfinite(float(sampling_frequency)) or float(sampling_frequency) <= 0:
        raise ValueError(f"sampling_frequency must be a positive number, got {sampling_frequency!r}")
    sim = simulate_session(preset, animal, session, **kwargs)
    sorting = sim.to_sorting(sampling_frequency=sampling_frequency)
    if not with_recording:
        return sorting
    from spikeinterface.core import generate_ground_truth_recording

    seed = kwargs.get("seed")
    rec_seed = int(
        np.random.default_rng([0 if seed is None else int(seed), _preset_code(preset), animal, session, 21]).integers(
            2**31
        )
    )
    num_samples = _num_samples(sim.duration, float(sampling_frequency))
    common = dict(
        durations=[num_samples / float(sampling_frequency)],
        sampling_frequency=float(sampling_frequency),
        noise_kwargs=dict(noise_levels=5.0, strategy="on_the_fly"),
        ms_before=1.0,
        ms_after=3.0,
        seed=rec_seed,
    )
    # probe, unit locations and generated templates (lazy, nothing is computed yet) ...
    recording, sorting = generate_ground_truth_recording(
        num_channels=int(num_channels),
        sorting=sorting,
        generate_unit_locations_kwargs=dict(
            margin_um=10.0, minimum_z=5.0, maximum_z=50.0, minimum_distance=5.0, distance_strict=False
        ),
        **common,
    )
    # ... whose spatial spread (each channel's projection on the main channel, 1 at the peak) scales our noise-free
    # peak-channel shapes (simulate_templates without noise); the noise of the recording is unchanged
    generated = np.asarray(recording.templates, dtype=np.float64)
    main = np.argmax(np.abs(generated).max(axis=1), axis=1)
    main_trace = generated[np.arange(len(main)), :, main]
    spread = np.einsum("ut,utc->uc", main_trace, generated)
    spread /= np.abs(spread).max(axis=1, keepdims=True)  # 1 on the peak channel
    nbefore = int(round(1.0 * float(sampling_frequency) / 1000.0))
    times_ms = (np.arange(generated.shape[1]) - nbefore) * 1000.0 / float(sampling_frequency)
    shapes = _waveform_shapes(sim, times_ms, None, None).astype(np.float64)
    templates = (shapes[:, :, None] * spread[:, None, :]).astype(np.float32)
    recording, sorting = generate_ground_truth_recording(
        probe=recording.get_probe(), sorting=sorting, templates=templates, **common
    )
    return recording, sorting


def simulate_templates(
    session: SimulatedSession,
    num_samples: int = 90,
    sampling_frequency: float = 30000.0,
    ms_before: float = 1.0,
    noise_level: float = 5.0,
    max_spikes: int = 500,
    seed: int | None = None,
) -> np.ndarray:
    """Peak-channel mean waveform of each unit of a simulated session, with a partial cell-type signal.

    Each waveform is a trough at ``ms_before`` followed by a positive peak, plus a small peak before the
    trough. The trough-to-peak width and the peak / trough ratio depend on the unit's cell type, with
    overlap as in extracellular recordings: fast spiking (FS) cells are narrow (width about 0.30 ± 0.06 ms)
    with a large peak, regular spiking and bursting cells (RS, IB, CH) broad (0.6-0.7 ± 0.1 ms) with a small
    one, and low-threshold spiking (LTS) cells intermediate (0.47 ± 0.1 ms). RS, IB and CH differ only
    slightly, so waveform features separate excitatory from inhibitory units well but not the five types.
    Every unit also gets its own amplitude (log-normal, median 70 µV), repolarisation slope, peak sharpness
    and pre-trough peak; widths of an animal share a factor within ±5 %. Nothing depends on the brain region.

    The residual noise of averaging ``N = min(num_spikes, max_spikes)`` spikes recorded with noise of sd
    ``noise_level`` is added (sd ``noise_level / sqrt(N)``, slightly smoothed), as in the ``templates``
    extension of a SpikeInterface analyzer (default 500 spikes per unit). ``simulate_sorting(...,
    with_recording=True)`` injects the same noise-free shapes into its recording, so the templates
    SpikeInterface computes from it recover these waveforms.

    Parameters
    ----------
    session : SimulatedSession
        A simulated session (from :func:`simulate_session` or :func:`simulate_dataset`).
    num_samples : int, default: 90
        Samples per waveform (90 samples at 30 kHz: 1 ms before and 2 ms after the trough, the window of
        SpikeInterface's ``templates`` extension and of NEMO).
    sampling_frequency : float, default: 30000.0
        Sampling frequency in Hz.
    ms_before : float, default: 1.0
        Time of the trough from the first sample, in ms (sample ``round(ms_before * sampling_frequency /
        1000)``; the spike time in SpikeInterface's convention).
    noise_level : float, default: 5.0
        Recording noise sd in µV (0 gives noise-free waveforms).
    max_spikes : int, default: 500
        At most this many spikes are averaged.
    seed : int or None, default: None
        Extra seed (None means 0). The waveforms are deterministic given the session's identity (preset,
        simulation seed, session id, and each unit's network neuron) and this seed; a neuron keeps its
        waveform whichever units are recorded.

    Returns
    -------
    np.ndarray
        float32 array of shape ``(num_units, num_samples)`` in µV, trough negative.

    Raises
    ------
    ValueError
        For a non-positive ``num_samples``, ``sampling_frequency`` or ``max_spikes``, a negative
        ``noise_level`` or seed, or a cell type outside :data:`CELL_TYPES`.
    """
    if isinstance(num_samples, bool) or not isinstance(num_samples, (int, np.integer)) or num_samples < 1:
        raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")
    if isinstance(max_spikes, bool) or not isinstance(max_spikes, (int, np.integer)) or max_spikes < 1:
        raise ValueError(f"max_spikes must be a positive integer, got {max_spikes!r}")
    sampling_frequency = float(sampling_frequency)
    if not np.isfinite(sampling_frequency) or sampling_frequency <= 0:
        raise ValueError(f"sampling_frequency must be a positive number, got {sampling_frequency!r}")
    noise_level = float(noise_level)
    if not np.isfinite(noise_level) or noise_level < 0:
        raise ValueError(f"noise_level must be a number >= 0, got {noise_level!r}")
    ms_before = float(ms_before)
    if not np.isfinite(ms_before):
        raise ValueError(f"ms_before must be a finite number, got {ms_before!r}")
    nbefore = int(round(ms_before * sampling_frequency / 1000.0))
    times_ms = (np.arange(int(num_samples)) - nbefore) * 1000.0 / sampling_frequency
    noise_sd = None
    if noise_level > 0:
        counts = np.array([max(len(t), 1) for t in session.spike_times], dtype=np.float64)
        noise_sd = noise_level / np.sqrt(np.minimum(counts, int(max_spikes)))
    return _waveform_shapes(session, times_ms, seed, noise_sd)


def simulate_dataset(
    preset: str = "easy",
    animals: Sequence[int] = (0, 1, 2),
    sessions_per_animal: int = 1,
    progress_bar: bool = True,
    **kwargs,
) -> list[SimulatedSession]:
    """Simulate several animals with several sessions each.

    Sessions are simulated together in one loop (up to 4,096 neurons at a time), which is several times
    faster than one by one for small populations; the output is identical to calling
    :func:`simulate_session` for each ``(animal, session)``.

    Parameters
    ----------
    preset : str, default: "easy"
        Preset name, see :func:`simulate_session`.
    animals : sequence of int, default: (0, 1, 2)
        Animal seeds.
    sessions_per_animal : int, default: 1
        Sessions ``0 .. sessions_per_animal - 1`` are simulated for every animal.
    progress_bar : bool, default: True
        Show a tqdm progress bar.
    **kwargs
        Passed to :func:`simulate_session` (``num_neurons``, ``duration_s``, ``seed`` and preset overrides).

    Returns
    -------
    list of SimulatedSession
        Ordered by animal, then session.
    """
    sessions_per_animal = _check_index(sessions_per_animal, "sessions_per_animal")
    if sessions_per_animal < 1:
        raise ValueError("sessions_per_animal must be >= 1")
    animals = [_check_index(a, "animal") for a in animals]
    if not animals:
        raise ValueError("animals must name at least one animal")
    if "session" in kwargs or "animal" in kwargs:
        raise ValueError("give animals and sessions_per_animal, not animal / session")
    num_neurons = kwargs.pop("num_neurons", None)
    duration_s = kwargs.pop("duration_s", None)
    seed = kwargs.pop("seed", None)
    kwargs.pop("progress_bar", None)
    networks = [
        _make_network(preset, a, s, num_neurons, duration_s, seed, kwargs)
        for a in animals
        for s in range(sessions_per_animal)
    ]
    batches: list[list[_Network]] = []
    for net in networks:
        if batches and sum(x.n for x in batches[-1]) + net.n <= _MAX_BATCH_NEURONS:
            batches[-1].append(net)
        else:
            batches.append([net])
    total = sum(batch[0].total_steps for batch in batches) * _DT_S
    bar = _progress(progress_bar, total, f"simulate {preset} x{len(networks)} sessions")
    out: list[SimulatedSession] = []
    try:
        for batch in batches:
            trains = _simulate_networks(batch, bar)
            out.extend(net.make_session(t) for net, t in zip(batch, trains))
    finally:
        if bar is not None:
            bar.close()
    return out
