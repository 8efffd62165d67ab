"""Training batches of :func:`~spikeinterface_neuronid.training.pretrain`: view pairs drawn from a corpus, padded.

:func:`draw_view_pairs` draws pairs from one stream in sequence; :func:`draw_positions` draws each position of
a global batch from its own stream (``shard_global_batch=True``), so that ranks never draw the same sample;
:class:`SpanSampler` draws the span views of span-context models; :func:`collate_view_pairs` pads a list of
pairs into a :class:`~spikeinterface_neuronid.methods.ViewBatch`. The public names are documented, and
imported, as those of :mod:`spikeinterface_neuronid.training`.
"""

from __future__ import annotations

from typing import Any, Iterator, Sequence

import numpy as np
import torch

from .data import SpikeTrainSet, ViewPair, sample_view_pair
from .methods import ViewBatch

__all__ = [
    "collate_view_pairs",
    "draw_view_pairs",
    "draw_positions",
    "num_matched",
    "SpanSampler",
    "SessionBlocks",
    "StepBatches",
    "step_batch_loader",
    "MAX_FAILED_DRAWS",
]

#: Consecutive failed draws after which the corpus is declared unusable.
MAX_FAILED_DRAWS = 1000

#: Second entropy word of the per-sample streams of ``shard_global_batch=True``: keeps them apart from the
#: per-rank streams ``(seed, rank)`` of the default single-process stream.
_SHARD_STREAM = 0x5EED5A4D

#: Second entropy word of the epoch shuffles of :class:`SessionBlocks`.
_BLOCK_STREAM = 0xB10C5


def collate_view_pairs(pairs: Sequence[ViewPair]) -> ViewBatch:
    """Pad view pairs into one batch (counts 0, masks False and unit indices -1 for padding).

    Parameters
    ----------
    pairs : sequence of ViewPair
        Pairs with the same number of bins per window.

    Returns
    -------
    ViewBatch
        CPU tensors; ``covariates1`` / ``covariates2`` are ``(B, T, k)`` when the pairs carry covariates,
        else None.
    """
    if not pairs:
        raise ValueError("no view pairs to collate")
    bins = pairs[0].counts1.shape[1]
    sides = []
    for counts_attr, units_attr in (("counts1", "units1"), ("counts2", "units2")):
        width = max(len(getattr(p, units_attr)) for p in pairs)
        counts = np.zeros((len(pairs), width, bins), dtype=np.float32)
        mask = np.zeros((len(pairs), width), dtype=bool)
        units = np.full((len(pairs), width), -1, dtype=np.int64)
        for row, pair in enumerate(pairs):
            c, u = getattr(pair, counts_attr), getattr(pair, units_attr)
            if c.shape[1] != bins:
                raise ValueError(f"view pairs have different window lengths ({c.shape[1]} and {bins} bins)")
            counts[row, : len(u)] = c
            mask[row, : len(u)] = True
            units[row, : len(u)] = u
        sides += [torch.from_numpy(counts), torch.from_numpy(mask), torch.from_numpy(units)]
    covariates = [_collate_covariates(pairs, attr, bins) for attr in ("covariates1", "covariates2")]
    span = dict(unit_inputs1=None, unit_inputs2=None, edges1=None, edges2=None)
    for side in ("1", "2"):
        width = max(len(getattr(p, "units" + side)) for p in pairs)
        span["unit_inputs" + side] = _collate_rows(pairs, "unit_inputs" + side, width)
        span["edges" + side] = _collate_rows(pairs, "edges" + side, width, square=True)
    return ViewBatch(*sides, *covariates, **span)


def _collate_rows(pairs: Sequence[ViewPair], attr: str, width: int, square: bool = False) -> torch.Tensor | None:
    """Zero-padded ``(B, width, F)`` (or ``(B, width, width, L)`` with ``square``) of a per-unit attribute."""
    values = [getattr(p, attr, None) for p in pairs]
    if all(v is None for v in values):
        return None
    if any(v is None for v in values):
        raise ValueError(f"some view pairs have {attr} and others do not; draw all pairs the same way")
    tail = values[0].shape[2:] if square else values[0].shape[1:]
    shape = (len(pairs), width, width, *tail) if square else (len(pairs), width, *tail)
    out = np.zeros(shape, dtype=np.float32)
    for row, v in enumerate(values):
        n = v.shape[0]
        if square:
            out[row, :n, :n] = v
        else:
            out[row, :n] = v
    return torch.from_numpy(out)


def _collate_covariates(pairs: Sequence[ViewPair], attr: str, bins: int) -> torch.Tensor | None:
    """``(B, T, k)`` covariates of one side, or None when no pair has any (all pairs must agree)."""
    values = [getattr(p, attr, None) for p in pairs]
    present = [v is not None for v in values]
    if not any(present):
        return None
    if not all(present):
        raise ValueError("some view pairs have covariates and others do not; give covariates for every population")
    shapes = {np.shape(v) for v in values}
    if len(shapes) != 1 or next(iter(shapes))[0] != bins:
        raise ValueError(f"view pairs have covariates of different shapes {sorted(shapes)} (expected ({bins}, k))")
    return torch.from_numpy(np.stack(values).astype(np.float32, copy=False))


class SpanSampler:
    """Draws span view pairs (:func:`~spikeinterface_neuronid.span_views.sample_span_pair`) from a corpus.

    The chunk statistics of each corpus item are computed the first time the item is drawn and kept (about
    ``n^2 x 31 x 4`` bytes per chunk of ``n`` units for a relational model: 3 MB for 160 units and 30 s).

    Parameters
    ----------
    corpus : sequence of SpikeTrainSet
        The training populations.
    config : NuCLRConfig
        A span-context config.
    small_view_probability : float, default: 0.1
        See :class:`~spikeinterface_neuronid.span_views.SpanViewSettings`.
    max_cached : int | None, default: None
        Keep the statistics of at most this many items (least recently drawn dropped first; they are recomputed,
        identically, when drawn again). None keeps all, or, for a corpus with a ``cache_size`` (a lazy corpus,
        :class:`~spikeinterface_neuronid.streaming.LazyCorpus`), that many, so that memory stays bounded by the
        sessions in use and not by the corpus.
    """

    def __init__(
        self,
        corpus: Sequence[SpikeTrainSet],
        config,
        small_view_probability: float = 0.1,
        max_cached: int | None = None,
    ):
        from collections import OrderedDict

        from .span_views import SpanViewSettings

        self.corpus = corpus
        self.config = config
        self.settings = SpanViewSettings.from_config(config, small_view_probability)
        if max_cached is None:
            max_cached = getattr(corpus, "cache_size", None)
        if max_cached is not None and (isinstance(max_cached, bool) or int(max_cached) < 1):
            raise ValueError(f"max_cached must be a positive integer or None, got {max_cached!r}")
        self.max_cached = None if max_cached is None else int(max_cached)
        self._stats: OrderedDict[int, Any] = OrderedDict()

    def statistics(self, index: int):
        """The (cached) chunk statistics of corpus item ``index``.

        A recording shorter than two ``chunk_s`` chunks is cut into two halves instead (whole bins, at least
        one window each), so that short recordings still give two disjoint spans.
        """
        from dataclasses import replace

        from .spike_stats import chunk_statistics

        if index not in self._stats:
            trains = self.corpus[index]
            spec = self.config.stats_spec
            window_s = self.config.window_spec.window_s
            if window_s * 2 <= trains.duration < 2 * spec.chunk_s:
                half = np.floor(trains.duration / 2 / spec.pair_bin_s + 1e-9) * spec.pair_bin_s
                spec = replace(spec, chunk_s=float(half))
            stats = chunk_statistics(trains, spec, relational=self.config.relational)
            if self.max_cached is not None:
                while len(self._stats) >= self.max_cached:
                    self._stats.popitem(last=False)
            self._stats[index] = stats.to_cumulative()
        else:
            self._stats.move_to_end(index)
        return self._stats[index]

    def __call__(
        self, rng: np.random.Generator, index: int, spec, min_keep: float = 0.5, max_units: int = 256, **_ignored
    ) -> ViewPair | None:
        from .span_views import sample_span_pair

        return sample_span_pair(
            rng,
            self.corpus[index],
            self.statistics(index),
            spec,
            self.settings,
            min_keep=min_keep,
            max_units=max_units,
        )


def draw_view_pairs(
    rng: np.random.Generator,
    corpus: Sequence[SpikeTrainSet],
    spec,
    num: int,
    sampler: SpanSampler | None = None,
    items: np.ndarray | None = None,
    **view_kwargs: Any,
) -> list[ViewPair]:
    """Draw ``num`` view pairs from populations chosen uniformly from ``corpus`` (or from its ``items``).

    Draws that :func:`~spikeinterface_neuronid.data.sample_view_pair` (or, for span-context models,
    ``sampler``) rejects (too few shared units) are redrawn.

    Parameters
    ----------
    rng : np.random.Generator
        The stream the populations and views are drawn from.
    corpus : sequence of SpikeTrainSet
        The training populations.
    spec : WindowSpec
        Window settings of the model.
    num : int
        Number of pairs.
    sampler : SpanSampler | None, default: None
        Draws span views (span-context models); None draws window views.
    items : np.ndarray | None, default: None
        Corpus indices to draw from (the block of :class:`SessionBlocks` of the step); None: all items.
    **view_kwargs
        ``max_shift_s``, ``min_keep``, ``max_units``: passed to the view sampler.

    Returns
    -------
    list of ViewPair

    Raises
    ------
    ValueError
        After :data:`MAX_FAILED_DRAWS` consecutive rejected draws: the recordings are shorter than one
        window or too sparse.
    """
    pairs: list[ViewPair] = []
    failed = too_short = 0
    while len(pairs) < num:
        index = int(rng.integers(len(corpus))) if items is None else int(items[rng.integers(len(items))])
        trains = corpus[index]
        if sampler is not None:
            pair = sampler(rng, index, spec, **view_kwargs)
        else:
            pair = sample_view_pair(rng, trains, spec, **view_kwargs)
        if pair is not None:
            pairs.append(pair)
            failed = too_short = 0
            continue
        failed += 1
        too_short += trains.duration < (2 * spec.window_s if sampler is not None else spec.window_s)
        if failed >= MAX_FAILED_DRAWS:
            if sampler is not None:
                raise ValueError(
                    f"could not draw a training view pair in {failed} tries ({too_short} from recordings shorter "
                    f"than two {spec.window_s:g} s windows): span-context training needs recordings of at least "
                    f"{2 * spec.window_s:g} s (two disjoint spans) with at least 2 units spiking "
                    f"{sampler.config.min_span_spikes}+ times in both spans; give longer or denser recordings"
                )
            raise ValueError(
                f"could not draw a training view pair in {failed} tries ({too_short} from recordings shorter "
                f"than one {spec.window_s:g} s window): the recordings are shorter than one window or too "
                "sparse (fewer than 2 units spiking in both windows of a pair); give longer or denser "
                "recordings"
            )
    return pairs


def _sample_rng(seed: int, step: int, position: int) -> np.random.Generator:
    """The stream of global batch position ``position`` at step ``step`` (``shard_global_batch=True``)."""
    return np.random.default_rng([int(seed), _SHARD_STREAM, int(step), int(position)])


def draw_positions(
    seed: int,
    step: int,
    positions: range,
    corpus,
    spec,
    sampler: SpanSampler | None,
    view_kwargs: dict,
    items: np.ndarray | None = None,
) -> list[ViewPair]:
    """The view pairs of some positions of one step's global batch, each drawn from its own stream.

    Position ``p`` of step ``s`` is drawn from the stream seeded by ``(seed, s, p)``, so the pairs do not
    depend on how the positions of a global batch are split between ranks (``shard_global_batch=True``).

    Parameters
    ----------
    seed : int
        Seed of the run.
    step : int
        The step (0-based).
    positions : range
        Positions of the global batch to draw.
    corpus : sequence of SpikeTrainSet
        The training populations.
    spec : WindowSpec
        Window settings of the model.
    sampler : SpanSampler | None
        Draws span views (span-context models); None draws window views.
    view_kwargs : dict
        Passed to :func:`draw_view_pairs`.
    items : np.ndarray | None, default: None
        Corpus indices to draw from; None: all items.

    Returns
    -------
    list of ViewPair
        One pair per position, in order.
    """
    pairs: list[ViewPair] = []
    for position in positions:
        rng = _sample_rng(seed, step, position)
        pairs += draw_view_pairs(rng, corpus, spec, 1, sampler=sampler, items=items, **view_kwargs)
    return pairs


class SessionBlocks:
    """Session-blocked sampling: the corpus items each step may draw from.

    The corpus is shuffled once per epoch (seeded) and cut into blocks of ``sessions`` items (the last block
    of an epoch may be smaller); block ``b`` is used for steps ``b * steps`` to ``(b + 1) * steps - 1``. A lazy
    corpus whose cache holds ``sessions`` sources then reads each source once per block instead of at
    almost every draw, and every item is visited once per epoch. The block of a step depends only on
    ``(seed, step)``, so DataLoader workers and ranks agree on it.

    Parameters
    ----------
    num_items : int
        Items of the corpus.
    sessions : int
        Items per block.
    steps : int
        Steps per block.
    seed : int
        Seed of the epoch shuffles.
    """

    def __init__(self, num_items: int, sessions: int, steps: int, seed: int):
        for label, value in (("session_block", sessions), ("session_block_steps", steps)):
            if isinstance(value, bool) or int(value) != value or int(value) < 1:
                raise ValueError(f"{label} must be an integer >= 1, got {value!r}")
        self.num_items, self.sessions, self.steps, self.seed = int(num_items), int(sessions), int(steps), int(seed)
        self.blocks_per_epoch = -(-self.num_items // self.sessions)

    def block_of(self, step: int) -> int:
        """The block index of ``step``."""
        return int(step) // self.steps

    def items(self, step: int) -> np.ndarray:
        """The corpus indices step ``step`` draws from."""
        epoch, within = divmod(self.block_of(step), self.blocks_per_epoch)
        order = np.random.default_rng([self.seed, _BLOCK_STREAM, epoch]).permutation(self.num_items)
        return order[within * self.sessions : (within + 1) * self.sessions]

    def __repr__(self) -> str:
        return f"SessionBlocks({self.num_items} items, {self.sessions} per block, {self.steps} steps per block)"


def num_matched(batch: ViewBatch) -> int:
    """Number of units present in both views, over the batch (the positive pairs).

    Parameters
    ----------
    batch : ViewBatch
        A collated batch.

    Returns
    -------
    int
    """
    same = batch.units1[:, :, None] == batch.units2[:, None, :]
    return int((same & batch.mask1[:, :, None] & batch.mask2[:, None, :]).sum())


class StepBatches(torch.utils.data.IterableDataset):
    """The collated batches of steps ``start`` to ``steps - 1`` of one rank, for a DataLoader with workers.

    Worker ``w`` of ``n`` draws steps ``start + w``, ``start + w + n``, ...; a DataLoader takes the workers'
    items in turn, so it yields ``(step, batch)`` in step order. Every batch is drawn from the streams of its
    step (:func:`draw_positions`), so the batches do not depend on the number of workers.

    Parameters
    ----------
    corpus : sequence of SpikeTrainSet
        The training populations (a :class:`~spikeinterface_neuronid.streaming.LazyCorpus` has a cache per
        worker).
    spec : WindowSpec
        Window settings of the model.
    sampler : SpanSampler | None
        Draws span views (span-context models); None draws window views.
    view_kwargs : dict
        Passed to :func:`draw_view_pairs`.
    seed : int
        Seed of the run.
    positions : range
        This rank's positions of the global batch.
    start, steps : int
        First step and number of steps of the run.
    blocks : SessionBlocks | None, default: None
        Session-blocked sampling; None draws from the whole corpus.
    """

    def __init__(
        self,
        corpus,
        spec,
        sampler: SpanSampler | None,
        view_kwargs: dict,
        seed: int,
        positions: range,
        start: int,
        steps: int,
        blocks: SessionBlocks | None = None,
    ):
        super().__init__()
        self.corpus, self.spec, self.sampler, self.view_kwargs = corpus, spec, sampler, dict(view_kwargs)
        self.seed, self.positions, self.start, self.steps, self.blocks = int(seed), positions, start, steps, blocks

    def batch(self, step: int) -> ViewBatch:
        """The collated batch of ``step``."""
        items = None if self.blocks is None else self.blocks.items(step)
        pairs = draw_positions(
            self.seed, step, self.positions, self.corpus, self.spec, self.sampler, self.view_kwargs, items
        )
        return collate_view_pairs(pairs)

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        for step in range(self.start + worker, self.steps, workers):
            yield step, self.batch(step)


def _as_is(item):
    return item


def step_batch_loader(batches: StepBatches, num_workers: int) -> Iterator[tuple[int, ViewBatch]]:
    """A DataLoader over ``batches`` with ``num_workers`` worker processes (2 batches in flight per worker).

    Parameters
    ----------
    batches : StepBatches
        The batches of the run.
    num_workers : int
        Worker processes, >= 1.

    Returns
    -------
    iterator of (int, ViewBatch)
        ``(step, batch)`` in step order.
    """
    # a generator of its own: the loader's worker seeds must not come from (and advance) torch's global RNG,
    # which the dropout of the training step uses
    generator = torch.Generator().manual_seed(batches.seed)
    loader = torch.utils.data.DataLoader(
        batches,
        batch_size=None,
        num_workers=int(num_workers),
        collate_fn=_as_is,
        prefetch_factor=2,
        generator=generator,
    )
    return iter(loader)
