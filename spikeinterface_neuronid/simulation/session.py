"""The simulator's output record, :class:`SimulatedSession`, and its conversions to SpikeInterface and
:class:`~spikeinterface_neuronid.data.SpikeTrainSet`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from .waveforms import simulate_templates

if TYPE_CHECKING:  # pragma: no cover
    from spikeinterface.core import BaseSorting

    from ..data import SpikeTrainSet


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
