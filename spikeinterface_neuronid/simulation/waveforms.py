"""Peak-channel mean waveforms of simulated units.

:func:`simulate_templates` gives each unit a peak-channel mean waveform (trough, then a peak) whose
trough-to-peak width and peak / trough ratio depend on the cell type with realistic overlap (FS narrow,
RS / IB / CH broad, LTS intermediate), plus per-unit amplitude, slope and averaging noise and nothing from the
region: a partial signal that separates excitatory from inhibitory units but not the five types.
:func:`~spikeinterface_neuronid.simulation.simulate_sorting` with ``with_recording=True`` injects the same
shapes, so SpikeInterface's ``templates`` extension recovers them.
"""

from __future__ import annotations

import math
import zlib
from typing import TYPE_CHECKING

import numpy as np

from .presets import CELL_TYPES, _check_index, _preset_code

if TYPE_CHECKING:  # pragma: no cover
    from .session import SimulatedSession

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
