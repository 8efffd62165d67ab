"""Cell types, presets and their keyword parameters, the simulator's constants and the animal-level draws.

:func:`_resolve_params` checks a preset's keywords with the caller's overrides; :func:`_animal_draws` gives the
animal-level statistics, which depend only on ``(seed, preset, animal)``.
"""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np

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

#: Default keyword values of each preset (keys: :data:`spikeinterface_neuronid.simulation.PRESETS`).
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


#: Animal ids held out of every shipped model's pretraining and head fitting: used for evaluation and the demo.
EVALUATION_ANIMALS = (1000, 1001, 1002, 1003)


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

