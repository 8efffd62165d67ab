"""Training views of span-context models: two disjoint spans of one population (pure numpy).

A span-context model (:class:`~spikeinterface_neuronid.methods.nuclr.NuCLRConfig` with ``context="span"``)
sees a unit through the statistics of a whole span of the recording. Its two training views are spans of
the same segment that **do not overlap** in time, so the pair and single-unit statistics of the two views
come from different spikes: matching a unit across views rewards what is stable about it, not the sampling
noise of one span. Span lengths are drawn independently for the two views (1 chunk to ``max_span_s``), the
segment-length augmentation that makes one model serve short and long recordings.
"""

from __future__ import annotations

import numpy as np

from .data import SpikeTrainSet, ViewPair, WindowSpec, waveform_input
from .spike_stats import ChunkStatistics

__all__ = ["SpanViewSettings", "sample_span_pair", "span_unit_inputs"]


def span_unit_inputs(
    stats: ChunkStatistics,
    chunks: slice,
    units: np.ndarray,
    trains: SpikeTrainSet,
    relational: bool,
    fine: bool,
    waveform: bool,
    drop_waveforms: bool = False,
) -> tuple[np.ndarray, np.ndarray | None]:
    """A span-context model's ``unit_inputs`` and ``edges`` for ``units`` over ``chunks``.

    ``unit_inputs`` is :meth:`ChunkStatistics.inputs`' statistics, then (``waveform``) each unit's
    :func:`~spikeinterface_neuronid.data.waveform_input` and a 1/0 flag of whether it has one;
    ``drop_waveforms`` hides every waveform (training: the model must also work without them).
    """
    unit_inputs, edges = stats.inputs(chunks, units, relational=relational, fine=fine)
    if waveform:
        wave, present = waveform_input(trains, units)
        if drop_waveforms:
            wave, present = np.zeros_like(wave), np.zeros_like(present)
        unit_inputs = np.concatenate([unit_inputs, wave, present[:, None].astype(np.float32)], axis=1)
    return unit_inputs, edges


class SpanViewSettings:
    """How span views are drawn (see :func:`sample_span_pair`).

    Parameters
    ----------
    max_span_chunks : int
        Longest span, in chunks.
    windows_per_view : int
        10 s windows per view whose counts go to the temporal blocks.
    min_spikes : int
        Units with fewer spikes in a span are not in that view.
    relational, fine, waveform : bool
        Which inputs the model takes (:func:`span_unit_inputs`).
    small_view_probability : float, default: 0.1
        Probability that both views of a pair hold the same 2-10 units only, so that the model learns to
        embed populations of a handful of units without its population context diluting them.
    waveform_drop_probability : float, default: 0.5
        Probability that a view hides all waveforms (recordings without a ``templates`` extension).
    """

    def __init__(
        self,
        max_span_chunks: int,
        windows_per_view: int,
        min_spikes: int,
        relational: bool,
        fine: bool,
        waveform: bool = False,
        small_view_probability: float = 0.1,
        waveform_drop_probability: float = 0.5,
    ):
        self.max_span_chunks = int(max_span_chunks)
        self.windows_per_view = int(windows_per_view)
        self.min_spikes = int(min_spikes)
        self.relational = bool(relational)
        self.fine = bool(fine)
        self.waveform = bool(waveform)
        self.small_view_probability = float(small_view_probability)
        self.waveform_drop_probability = float(waveform_drop_probability)

    @classmethod
    def from_config(cls, config, small_view_probability: float = 0.1) -> "SpanViewSettings":
        """Settings of a span-context NuCLR config."""
        return cls(
            max_span_chunks=max(1, int(np.floor(config.max_span_s / config.chunk_s + 1e-9))),
            windows_per_view=config.windows_per_view,
            min_spikes=config.min_span_spikes,
            relational=config.relational,
            fine=config.fine_channel,
            waveform=config.waveform_channel,
            small_view_probability=small_view_probability,
        )


def _disjoint_spans(rng: np.random.Generator, num_chunks: int, max_chunks: int) -> tuple[slice, slice] | None:
    """Two non-overlapping runs of chunks with independent random lengths (None for fewer than 2 chunks)."""
    if num_chunks < 2:
        return None
    k1 = int(rng.integers(1, min(max_chunks, num_chunks - 1) + 1))
    k2 = int(rng.integers(1, min(max_chunks, num_chunks - k1) + 1))
    # starts of span 1 that leave room for span 2 before or after it
    starts1 = np.arange(num_chunks - k1 + 1)
    starts1 = starts1[(starts1 >= k2) | (starts1 + k1 + k2 <= num_chunks)]
    s1 = int(starts1[int(rng.integers(starts1.size))])
    starts2 = np.arange(num_chunks - k2 + 1)
    starts2 = starts2[(starts2 + k2 <= s1) | (starts2 >= s1 + k1)]
    s2 = int(starts2[int(rng.integers(starts2.size))])
    return slice(s1, s1 + k1), slice(s2, s2 + k2)


def _keep(rng: np.random.Generator, units: np.ndarray, min_keep: float, max_units: int) -> np.ndarray:
    n = len(units)
    if n == 0:
        return units
    k = min(max(int(rng.integers(int(np.floor(min_keep * n)), n + 1)), 1), max_units)
    return np.sort(rng.choice(units, size=k, replace=False))


def _window_counts(
    rng: np.random.Generator,
    trains: SpikeTrainSet,
    start: float,
    stop: float,
    units: np.ndarray,
    spec: WindowSpec,
    num_windows: int,
) -> np.ndarray:
    latest = max(start, stop - spec.window_s)
    starts = np.sort(rng.uniform(start, latest, num_windows)) if latest > start else np.full(num_windows, start)
    starts = np.round(starts / spec.bin_s) * spec.bin_s
    return np.concatenate([trains.bin(float(s), spec.window_bins, spec.bin_s, units) for s in starts], axis=1)


def sample_span_pair(
    rng: np.random.Generator,
    trains: SpikeTrainSet,
    stats: ChunkStatistics,
    spec: WindowSpec,
    settings: SpanViewSettings,
    min_keep: float = 0.5,
    max_units: int = 256,
    min_shared_units: int = 2,
) -> ViewPair | None:
    """Draw two non-overlapping spans of one segment as a training pair.

    Each view is a run of whole chunks (lengths drawn independently, 1 to ``settings.max_span_chunks`` and
    together at most the segment); it keeps the units with at least ``settings.min_spikes`` spikes in its
    span, then an independent random ``min_keep``-100 % of them, capped at ``max_units``. With probability
    ``settings.small_view_probability`` both views instead keep the same 2-10 units active in both spans.
    Each view's counts are ``settings.windows_per_view`` random windows of its span, back to back; its
    statistics are those of the whole span (:meth:`ChunkStatistics.inputs`).

    Returns
    -------
    ViewPair | None
        None when the segment has fewer than two chunks or fewer than ``min_shared_units`` units are in both
        views.
    """
    spans = _disjoint_spans(rng, stats.num_chunks, settings.max_span_chunks)
    if spans is None:
        return None
    active = [np.flatnonzero(stats.spike_counts(s) >= settings.min_spikes) for s in spans]
    both = np.intersect1d(*active)
    if both.size < min_shared_units:
        return None
    if rng.random() < settings.small_view_probability:
        size = int(rng.integers(min_shared_units, min(10, both.size) + 1))
        chosen = np.sort(rng.choice(both, size=size, replace=False))
        units = [chosen, chosen]
    else:
        units = [_keep(rng, a, min_keep, max_units) for a in active]
        if np.intersect1d(*units).size < min_shared_units:
            return None
    out = {}
    for side, (span, u) in enumerate(zip(spans, units), start=1):
        start, stop = float(stats.starts[span][0]), float(stats.stops[span][-1])
        out[f"counts{side}"] = _window_counts(rng, trains, start, stop, u, spec, settings.windows_per_view)
        out[f"units{side}"] = u
        drop = bool(rng.random() < settings.waveform_drop_probability)
        unit_inputs, edges = span_unit_inputs(
            stats, span, u, trains, settings.relational, settings.fine, settings.waveform, drop_waveforms=drop
        )
        out[f"unit_inputs{side}"] = unit_inputs
        out[f"edges{side}"] = edges
    return ViewPair(**out)
