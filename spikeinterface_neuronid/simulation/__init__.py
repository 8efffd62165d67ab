"""Simulated Izhikevich populations with known cell type, brain region, animal and session.

Ground truth for tests, the demo, model pretraining and benchmarks. The package is laid out by stage, each
module importing only from the ones before it:

- :mod:`~spikeinterface_neuronid.simulation.presets`: cell types, presets, parameter checks, animal-level draws;
- :mod:`~spikeinterface_neuronid.simulation.waveforms`: peak-channel mean waveforms (:func:`simulate_templates`);
- :mod:`~spikeinterface_neuronid.simulation.session`: the output record :class:`SimulatedSession` and its
  conversions;
- :mod:`~spikeinterface_neuronid.simulation.drive`: the input current (random signals, region structure,
  stimulus, drift);
- :mod:`~spikeinterface_neuronid.simulation.network`: the Izhikevich network, the simulation loop,
  :func:`simulate_session` and :func:`simulate_dataset`;
- :mod:`~spikeinterface_neuronid.simulation.adapters`: SpikeInterface sorting / recording
  (:func:`simulate_sorting`).
"""

from . import presets as _presets
from .adapters import simulate_sorting
from .network import simulate_dataset, simulate_session
from .session import SimulatedSession
from .waveforms import simulate_templates

__all__ = [
    "CELL_TYPES",
    "EVALUATION_ANIMALS",
    "PRESETS",
    "STIMULUS_RATE_HZ",
    "SimulatedSession",
    "simulate_session",
    "simulate_sorting",
    "simulate_dataset",
    "simulate_templates",
]

# assignments, not imports: Sphinx reads the documentation of these names from this file
CELL_TYPES = _presets.CELL_TYPES
"""The five Izhikevich (2003) firing types, in the order used for type-indexed parameters."""

#: Animal ids held out of every shipped model's pretraining and head fitting: used for evaluation and the demo.
EVALUATION_ANIMALS = _presets.EVALUATION_ANIMALS

STIMULUS_RATE_HZ = _presets.STIMULUS_RATE_HZ
"""Sampling rate of :attr:`SimulatedSession.stimulus` (200 Hz: one sample per 5 ms)."""

PRESETS = _presets.PRESETS
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
