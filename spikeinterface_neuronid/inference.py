"""Embedding a population with a trained model (torch; knows nothing of SpikeInterface).

Window-context models (NuCLR as published, NeurPIR): each recording segment is tiled with non-overlapping
windows. In every window, the units with at least one spike form the population context the encoder attends
over; a unit's embedding is the mean of its per-window vectors over all windows where it was active
(NuCLR's inference rule).

Span-context models (the default NuCLR model): each segment is cut into equal spans of at most
``max_span_s`` (the whole segment when it is shorter); the statistics of each span (fine-timescale and
relational, :mod:`~spikeinterface_neuronid.spike_stats`) are accumulated over all of its spikes and its
temporal tokens are all of its 10 s windows; a unit's embedding is the mean over the spans where it fired at
least ``min_span_spikes`` times.
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from .bundle import ModelBundle
from .data import SpikeTrainSet, WindowSpec, inference_window_starts
from .models import resolve_model

__all__ = [
    "MissingCovariatesWarning",
    "EmbeddingResult",
    "embed_populations",
    "window_spec_of",
    "span_boundaries",
]


class MissingCovariatesWarning(UserWarning):
    """A model trained with covariates (stimulus, behaviour) got none, so zeros fill its covariate channels."""

def window_spec_of(bundle: ModelBundle) -> WindowSpec:
    """The window discretisation a model was trained with."""
    cfg = bundle.config
    return WindowSpec(bin_s=cfg.bin_s, token_bins=cfg.token_bins, window_tokens=cfg.window_tokens)


@dataclass
class EmbeddingResult:
    """Per-unit embeddings of one population.

    Attributes
    ----------
    embedding : np.ndarray
        float32, shape ``(num_units, dim)``; rows of units never active in a full window are NaN.
    num_windows : np.ndarray
        int64, shape ``(num_units,)``: number of windows each unit's embedding averages over.
    """

    embedding: np.ndarray
    num_windows: np.ndarray

    @property
    def embedded(self) -> np.ndarray:
        """Boolean mask of the units that have an embedding (at least one active window)."""
        return self.num_windows > 0


def _context_groups(active: np.ndarray, max_units: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Split the active units of one window into random groups of at most ``max_units`` units.

    Spatial attention is quadratic in the number of units; random, balanced groups bound its cost
    for very large populations (thousands of Neuropixels units) while keeping a population context.
    """
    if len(active) <= max_units:
        return [active]
    num_groups = int(np.ceil(len(active) / max_units))
    shuffled = rng.permutation(active)
    return [np.sort(g) for g in np.array_split(shuffled, num_groups)]


def _iter_samples(
    segments: Sequence[SpikeTrainSet], spec: WindowSpec, max_units: int, seed: int
) -> Iterator[tuple[int, float, np.ndarray]]:
    rng = np.random.default_rng(seed)
    for seg_index, trains in enumerate(segments):
        for start in inference_window_starts(trains.duration, spec.window_s):
            active = trains.active_units(start, start + spec.window_s)
            if len(active) == 0:
                continue
            for group in _context_groups(active, max_units, rng):
                yield seg_index, float(start), group


@contextlib.contextmanager
def torch_threads(num_threads: int | None):
    """Temporarily set the number of torch intra-op threads (``None`` leaves it unchanged)."""
    import torch

    previous = torch.get_num_threads()
    if num_threads is not None and num_threads > 0:
        torch.set_num_threads(int(num_threads))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def embed_populations(
    model: str | Path | ModelBundle | None,
    segments: Sequence[SpikeTrainSet],
    *,
    batch_size: int = 16,
    max_context_units: int | None = None,
    seed: int = 0,
    device: str = "cpu",
    num_threads: int | None = None,
    progress_bar: bool = False,
) -> EmbeddingResult:
    """Embed every unit of one population recorded in one or more segments.

    Parameters
    ----------
    model : str | Path | ModelBundle | None
        ``"default"`` (or None) for the shipped model, a path to a model file, or a loaded bundle.
    segments : sequence of SpikeTrainSet
        The segments of one recording; all must hold the same units in the same order.
    batch_size : int, default: 16
        Number of (window, unit group) samples per forward pass.
    max_context_units : int | None, default: None
        Largest number of units attended over together; larger windows are split into random groups.
        None uses the model's ``max_context_units``.
    seed : int, default: 0
        Seed of the random grouping (only used when a window has more than ``max_context_units`` units).
    device : str, default: "cpu"
        Torch device.
    num_threads : int | None, default: None
        Torch CPU threads for the duration of the call.
    progress_bar : bool, default: False
        Show a tqdm progress bar over windows.

    Returns
    -------
    EmbeddingResult

    Notes
    -----
    A model whose config has ``num_covariates > 0`` (e.g. NeurPIR with surrounding information) gets each
    window's covariates (:meth:`SpikeTrainSet.bin_covariates`) as ``covariates=``; segments without
    covariates give zeros (with one warning per call). Other models never get ``covariates=``.

    Raises
    ------
    ValueError
        If there are fewer than two units, segments disagree on the units, no segment is at least
        one window long, or a segment's number of covariates differs from the model's.
    """
    import torch

    bundle = resolve_model(model)
    spec = window_spec_of(bundle)
    if len(segments) == 0:
        raise ValueError("no recording segment given")
    num_units = segments[0].num_units
    if any(s.num_units != num_units for s in segments):
        raise ValueError("all segments must hold the same units in the same order")
    if num_units < 2:
        raise ValueError(
            f"the population has {num_units} unit; embeddings are learned from population context and need "
            "at least 2 units recorded together (preferably tens)"
        )
    if all(s.duration < spec.window_s for s in segments):
        if len(segments) == 1:
            raise ValueError(
                f"the recording ({segments[0].duration:.3g} s) is shorter than one {spec.window_s:g} s window of "
                f"the model; give at least {spec.window_s:g} s of spikes"
            )
        durations = ", ".join(f"{s.duration:.3g}" for s in segments[:5]) + (", ..." if len(segments) > 5 else "")
        raise ValueError(
            f"each of the {len(segments)} segments ({durations} s) is shorter than one {spec.window_s:g} s window "
            f"of the model; segments are embedded separately (windows never span two segments), so at least one "
            f"segment must last {spec.window_s:g} s"
        )
    max_units = int(bundle.config.max_context_units if max_context_units is None else max_context_units)
    if max_units < 1:
        raise ValueError(f"max_context_units must be >= 1, got {max_units}")

    num_cov = int(getattr(bundle.config, "num_covariates", 0) or 0)
    if num_cov:
        bad = [i for i, s in enumerate(segments) if s.covariates is not None and s.num_covariates != num_cov]
        if bad:
            raise ValueError(
                f"the model takes {num_cov} covariates but segment {bad[0]} has {segments[bad[0]].num_covariates}"
            )
        if any(s.covariates is None for s in segments):
            warnings.warn(
                f"model '{bundle.name}' expects {num_cov} covariates (stimulus/behaviour); none given, zeros used. "
                "Pass covariates= and covariate_rate_hz= (see the NeurPIR tutorial)",
                MissingCovariatesWarning,
                stacklevel=2,
            )

    encoder = bundle.encoder().to(device)
    if getattr(bundle.config, "context", "window") == "span":
        result = _embed_spans(encoder, bundle.config, segments, max_units, seed, device, num_threads, progress_bar)
        return _warn_if_nothing_embedded(result)
    sums = np.zeros((num_units, bundle.config.embedding_dim), dtype=np.float64)
    counts = np.zeros(num_units, dtype=np.int64)
    samples = list(_iter_samples(segments, spec, max_units, seed))

    progress = None
    if progress_bar:
        from tqdm.auto import tqdm

        progress = tqdm(total=len(samples), desc="neuron_embedding", unit="window")
    with torch_threads(num_threads), torch.inference_mode():
        for first in range(0, len(samples), batch_size):
            batch = samples[first : first + batch_size]
            width = max(len(units) for _, _, units in batch)
            x = np.zeros((len(batch), width, spec.window_bins), dtype=np.float32)
            mask = np.zeros((len(batch), width), dtype=bool)
            for row, (seg_index, start, units) in enumerate(batch):
                x[row, : len(units)] = segments[seg_index].bin(start, spec.window_bins, spec.bin_s, units)
                mask[row, : len(units)] = True
            extra = {}
            if num_cov:
                cov = np.zeros((len(batch), spec.window_bins, num_cov), dtype=np.float32)
                for row, (seg_index, start, _) in enumerate(batch):
                    if segments[seg_index].covariates is not None:
                        cov[row] = segments[seg_index].bin_covariates(start, spec.window_bins, spec.bin_s)
                extra["covariates"] = torch.from_numpy(cov).to(device)
            out = encoder(torch.from_numpy(x).to(device), torch.from_numpy(mask).to(device), **extra)
            out = out.detach().to("cpu", torch.float64).numpy()
            for row, (_, _, units) in enumerate(batch):
                np.add.at(sums, units, out[row, : len(units)])
                np.add.at(counts, units, 1)
            if progress is not None:
                progress.update(len(batch))
    if progress is not None:
        progress.close()

    embedding = np.full(sums.shape, np.nan, dtype=np.float32)
    seen = counts > 0
    embedding[seen] = (sums[seen] / counts[seen, None]).astype(np.float32)
    return _warn_if_nothing_embedded(EmbeddingResult(embedding=embedding, num_windows=counts))


def _warn_if_nothing_embedded(result: "EmbeddingResult") -> "EmbeddingResult":
    if not np.any(result.embedded):
        warnings.warn(
            f"none of the {result.embedding.shape[0]} units could be embedded: no unit fired enough in any window "
            "or span of the recording (too few spikes, or too short a recording), so every embedding is NaN and "
            "every label 'unknown'",
            UserWarning,
            stacklevel=3,
        )
    return result


def span_boundaries(duration: float, config) -> list[tuple[float, float, int]]:
    """Equal spans of at most ``config.max_span_s`` tiling a segment: ``(start_s, stop_s, num_windows)``.

    Span boundaries lie on the bin grid; each span holds ``num_windows >= 1`` whole windows for the temporal
    blocks, and its statistics cover the whole span. A segment shorter than one window has no span.
    """
    spec = config.window_spec
    if duration < spec.window_s:
        return []
    num = int(np.ceil(duration / config.max_span_s - 1e-9))
    length = np.floor(duration / num / spec.bin_s + 1e-9) * spec.bin_s
    windows = max(1, int(np.floor(length / spec.window_s + 1e-9)))
    return [(i * length, (i + 1) * length, windows) for i in range(num)]


class _Subset:
    """The waveform fields of a SpikeTrainSet restricted to ``units`` (what :func:`span_unit_inputs` reads)."""

    def __init__(self, trains: SpikeTrainSet, units: np.ndarray):
        self.waveforms = None if trains.waveforms is None else trains.waveforms[units]
        self.waveform_sampling_frequency = trains.waveform_sampling_frequency
        self.waveform_nbefore = trains.waveform_nbefore


def _embed_spans(encoder, config, segments, max_units, seed, device, num_threads, progress_bar) -> EmbeddingResult:
    import torch

    from .span_views import span_unit_inputs
    from .spike_stats import chunk_statistics

    spec = config.window_spec
    stats_spec = config.stats_spec
    num_units = segments[0].num_units
    sums = np.zeros((num_units, config.embedding_dim), dtype=np.float64)
    counts = np.zeros(num_units, dtype=np.int64)
    rng = np.random.default_rng(seed)
    jobs = []
    for seg_index, trains in enumerate(segments):
        for start, stop, windows in span_boundaries(trains.duration, config):
            spikes = np.array(
                [np.searchsorted(t, stop, "left") - np.searchsorted(t, start, "left") for t in trains.spike_times]
            )
            active = np.flatnonzero(spikes >= config.min_span_spikes)
            for group in _context_groups(active, max_units, rng):
                if len(group):
                    jobs.append((seg_index, start, stop, windows, group))
    progress = None
    if progress_bar:
        from tqdm.auto import tqdm

        progress = tqdm(total=len(jobs), desc="neuron_embedding", unit="span")
    with torch_threads(num_threads), torch.inference_mode():
        for seg_index, start, stop, windows, group in jobs:
            trains = segments[seg_index]
            stats = chunk_statistics(
                trains,
                stats_spec,
                relational=config.relational,
                starts=np.array([start]),
                stops=np.array([stop]),
                units=group,
            )
            unit_inputs, edges = span_unit_inputs(
                stats,
                slice(0, 1),
                np.arange(len(group)),
                _Subset(trains, group),
                config.relational,
                config.fine_channel,
                config.waveform_channel,
            )
            window_starts = np.array([start + w * spec.window_s for w in range(windows)])
            x = trains.bin_windows(window_starts, spec.window_bins, spec.bin_s, group)
            extra = dict(unit_inputs=torch.from_numpy(unit_inputs)[None].to(device))
            if edges is not None:
                extra["edges"] = torch.from_numpy(edges)[None].to(device)
            mask = torch.ones((1, len(group)), dtype=torch.bool, device=device)
            out = encoder(torch.from_numpy(x)[None].to(device), mask, **extra)[0]
            sums[group] += out.detach().to("cpu", torch.float64).numpy()
            counts[group] += windows
            if progress is not None:
                progress.update(1)
    if progress is not None:
        progress.close()
    embedding = np.full(sums.shape, np.nan, dtype=np.float32)
    seen = counts > 0
    spans_seen = np.zeros(num_units, dtype=np.float64)
    for seg_index, start, stop, windows, group in jobs:
        spans_seen[group] += 1
    embedding[seen] = (sums[seen] / spans_seen[seen, None]).astype(np.float32)
    return EmbeddingResult(embedding=embedding, num_windows=counts)
