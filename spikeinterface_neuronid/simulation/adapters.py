"""SpikeInterface adapters: a simulated session as a sorting, optionally with a matching recording."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .network import simulate_session
from .presets import _preset_code
from .session import _num_samples
from .waveforms import _waveform_shapes

if TYPE_CHECKING:  # pragma: no cover
    from spikeinterface.core import BaseRecording, BaseSorting


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
