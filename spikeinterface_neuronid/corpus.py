"""SpikeInterface sortings and analyzers as model input (spike trains in seconds, one set per segment).

This is the one place that turns SpikeInterface objects into :class:`~spikeinterface_neuronid.data.SpikeTrainSet`;
the torch code never sees SpikeInterface.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .data import SpikeTrainSet

#: Coarsest spike-time grid accepted (Hz): the model's fine-timescale channel reads 1 ms rates and 1-50 ms
#: autocorrelograms, which a coarser grid destroys.
MIN_SPIKE_TIME_RATE_HZ = 1000.0
#: Below this rate (Hz) the spike times are accepted with a warning: the 1 ms features are quantised.
QUANTISED_SPIKE_TIME_RATE_HZ = 10000.0


def check_spike_time_resolution(sampling_frequency: float, what: str = "the sorting's sampling_frequency") -> None:
    """Reject spike times on a grid coarser than 1 ms, and warn below 10 kHz.

    Parameters
    ----------
    sampling_frequency : float
        Rate (Hz) of the grid the spike times are on (a sorting's sampling frequency).
    what : str, default: "the sorting's sampling_frequency"
        How to name the rate in the messages (e.g. ``"--sampling-frequency"``).

    Raises
    ------
    ValueError
        If the rate is not positive, or below :data:`MIN_SPIKE_TIME_RATE_HZ`.

    Warns
    -----
    UserWarning
        Below :data:`QUANTISED_SPIKE_TIME_RATE_HZ`.
    """
    import warnings

    fs = float(sampling_frequency)
    if not np.isfinite(fs) or fs <= 0:
        raise ValueError(f"{what} must be a positive number of Hz, got {sampling_frequency!r}")
    if fs < MIN_SPIKE_TIME_RATE_HZ:
        raise ValueError(
            f"{what} is {fs:g} Hz: spike times on a {1000.0 / fs:g} ms grid are too coarse for the model, whose "
            f"fine-timescale features need at least 1 ms resolution ({MIN_SPIKE_TIME_RATE_HZ:g} Hz); use the "
            "recording's sampling rate (e.g. 30000 Hz)"
        )
    if fs < QUANTISED_SPIKE_TIME_RATE_HZ:
        warnings.warn(
            f"{what} is {fs:g} Hz: spike times on a {1000.0 / fs:g} ms grid quantise the model's 1-50 ms "
            "fine-timescale features, so embeddings differ from those of the same spikes at 30 kHz; use the "
            f"recording's sampling rate if you have it (>= {QUANTISED_SPIKE_TIME_RATE_HZ:g} Hz)",
            UserWarning,
            stacklevel=3,
        )

__all__ = [
    "sorting_to_spike_train_sets",
    "analyzer_to_spike_train_sets",
    "spike_train_corpus",
    "peak_channel_waveforms",
    "spike_only_analyzer",
]


def sorting_to_spike_train_sets(
    sorting,
    num_samples_per_segment: Sequence[int],
    covariates: Sequence[np.ndarray] | None = None,
    covariate_rate_hz: float | None = None,
    waveforms: dict | None = None,
) -> list[SpikeTrainSet]:
    """One :class:`SpikeTrainSet` per segment of a SpikeInterface sorting.

    Parameters
    ----------
    sorting : BaseSorting
        The sorting.
    num_samples_per_segment : sequence of int
        Length of each segment in samples (e.g. ``sorting_analyzer.get_num_samples(i)``).
    covariates : sequence of np.ndarray | None, default: None
        Surrounding information, one ``(n_samples, k)`` array per segment, sample ``i`` covering
        ``[i, i + 1) / covariate_rate_hz`` s from the segment start (see :class:`SpikeTrainSet`). None: none.
    covariate_rate_hz : float | None, default: None
        Sampling rate of ``covariates`` in Hz (required with them).
    waveforms : dict | None, default: None
        Keyword arguments ``waveforms`` (``(num_units, num_samples)`` peak-channel templates in
        ``sorting.unit_ids`` order), ``waveform_sampling_frequency`` and ``waveform_nbefore`` of
        :class:`SpikeTrainSet`, attached to every segment (:func:`peak_channel_waveforms`). None: none.

    Returns
    -------
    list of SpikeTrainSet
        Spike times in seconds from the start of each segment, units in ``sorting.unit_ids`` order.
    """
    fs = float(sorting.get_sampling_frequency())
    check_spike_time_resolution(fs)
    if sorting.get_num_units() == 0:
        raise ValueError("the sorting has no units: there is nothing to embed")
    if covariates is not None and len(covariates) != len(num_samples_per_segment):
        raise ValueError(
            f"{len(covariates)} covariate array(s) for {len(num_samples_per_segment)} segment(s); give one per segment"
        )
    unit_ids = list(sorting.unit_ids)
    segments = []
    for segment_index, num_samples in enumerate(num_samples_per_segment):
        trains = [
            np.asarray(sorting.get_unit_spike_train(unit_id, segment_index=segment_index), dtype=np.int64) / fs
            for unit_id in unit_ids
        ]
        cov = (
            None
            if covariates is None
            else dict(covariates=covariates[segment_index], covariate_rate_hz=covariate_rate_hz)
        )
        segments.append(
            SpikeTrainSet(trains, duration=num_samples / fs, unit_ids=unit_ids, **(cov or {}), **(waveforms or {}))
        )
    return segments


def peak_channel_waveforms(sorting_analyzer) -> dict | None:
    """Each unit's mean waveform on its peak channel, from the analyzer's ``templates`` extension.

    Returns
    -------
    dict | None
        ``waveforms`` (float64, ``(num_units, num_samples)``, rows in ``unit_ids`` order; the channel of
        largest absolute amplitude), ``waveform_sampling_frequency`` and ``waveform_nbefore``, as keyword
        arguments of :class:`SpikeTrainSet`; None when the analyzer has no computed ``templates``.
    """
    if not sorting_analyzer.has_extension("templates"):
        return None
    ext = sorting_analyzer.get_extension("templates")
    if ext is None or not ext.data:
        return None
    templates = np.asarray(ext.get_data(operator="average"), dtype=np.float64)  # (units, samples, channels)
    if templates.ndim != 3 or templates.shape[0] != sorting_analyzer.get_num_units():
        return None
    peak = np.argmax(np.abs(templates).max(axis=1), axis=1)
    waveforms = templates[np.arange(templates.shape[0]), :, peak]
    return dict(
        waveforms=waveforms,
        waveform_sampling_frequency=float(sorting_analyzer.sampling_frequency),
        waveform_nbefore=int(ext.nbefore),
    )


def analyzer_to_spike_train_sets(
    sorting_analyzer, covariates: Sequence[np.ndarray] | None = None, covariate_rate_hz: float | None = None
) -> list[SpikeTrainSet]:
    """One :class:`SpikeTrainSet` per segment of a ``SortingAnalyzer`` (works without its recording).

    ``covariates`` / ``covariate_rate_hz``: see :func:`sorting_to_spike_train_sets`. When the analyzer has a
    computed ``templates`` extension, each unit's peak-channel waveform is attached
    (:func:`peak_channel_waveforms`), which models with a waveform channel use.
    """
    num_samples = [sorting_analyzer.get_num_samples(i) for i in range(sorting_analyzer.get_num_segments())]
    return sorting_to_spike_train_sets(
        sorting_analyzer.sorting, num_samples, covariates, covariate_rate_hz, peak_channel_waveforms(sorting_analyzer)
    )


def _segments_of(source) -> list[SpikeTrainSet]:
    if isinstance(source, SpikeTrainSet):
        return [source]
    if hasattr(source, "get_num_samples") and hasattr(source, "sorting"):
        return analyzer_to_spike_train_sets(source)
    if hasattr(source, "get_unit_spike_train"):
        num_samples = []
        spikes = None
        for segment_index in range(source.get_num_segments()):
            if source.has_recording():
                num_samples.append(source.get_num_samples(segment_index))
                continue
            spikes = source.to_spike_vector() if spikes is None else spikes
            in_segment = spikes["sample_index"][spikes["segment_index"] == segment_index]
            num_samples.append(int(in_segment.max()) + 1 if in_segment.size else 0)
        return sorting_to_spike_train_sets(source, num_samples)
    raise TypeError(
        f"cannot read spike trains from {type(source).__name__}; give a SortingAnalyzer, a BaseSorting or a SpikeTrainSet"
    )


def spike_train_corpus(sources: Sequence) -> list[SpikeTrainSet]:
    """Flatten analyzers, sortings or spike-train sets into a training corpus, one item per segment.

    For a sorting without a registered recording the segment is taken to end at its last spike.
    """
    corpus = []
    for source in sources:
        corpus.extend(_segments_of(source))
    return corpus


def spike_only_analyzer(sorting, num_samples: int):
    """An in-memory ``SortingAnalyzer`` of ``sorting`` on a lazy one-channel placeholder recording.

    For sortings read without their recording (NWB Units tables, phy folders): the placeholder generates no
    data unless read, and gives the analyzer its duration and sampling frequency.

    Parameters
    ----------
    sorting : BaseSorting
        The sorting (one segment).
    num_samples : int
        Length of the placeholder recording in samples at ``sorting.sampling_frequency``.

    Returns
    -------
    SortingAnalyzer
    """
    import spikeinterface.core as si

    fs = float(sorting.sampling_frequency)
    placeholder = si.generate_recording(
        num_channels=1, durations=[num_samples / fs], sampling_frequency=fs, set_probe=True, seed=0
    )
    return si.create_sorting_analyzer(
        sorting,
        placeholder,
        format="memory",
        sparse=False,
        main_channel_indices=np.zeros(sorting.get_num_units(), dtype=int),
    )

