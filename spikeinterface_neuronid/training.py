"""Self-supervised pretraining and fine-tuning of an embedding method on spike-train sets.

Every step draws ``batch_size`` view pairs (two windows of one population,
:func:`~spikeinterface_neuronid.data.sample_view_pair`), pads them into a
:class:`~spikeinterface_neuronid.methods.ViewBatch` and minimises the method's loss with AdamW, linear
warm-up and a cosine decay to zero. The result is a :class:`~spikeinterface_neuronid.bundle.ModelBundle`.

Multi-GPU / multi-process
-------------------------
Launched under ``torchrun`` (``WORLD_SIZE > 1`` in the environment, or a process group already
initialised), :func:`pretrain` joins the process group (NCCL on CUDA, gloo on CPU), uses the GPU
``LOCAL_RANK`` when ``device="cuda"`` and wraps the model in ``DistributedDataParallel``. ``batch_size`` is
per rank: a step trains on a global batch of ``batch_size x world_size`` view pairs, and rank ``r`` draws
its positions ``r * batch_size`` to ``(r + 1) * batch_size - 1`` (``shard_global_batch``, on by default
under torchrun), each from its own stream seeded by ``(seed, step, position)``, so ranks never draw the
same sample and the result does not depend on how the global batch is split. The number of matched unit
pairs is all-reduced every step and each rank's loss is weighted by its share of them, so that DDP's
gradient average is the gradient of NuCLR's loss over the global batch (mean over all its matched pairs):
without dropout, ``W`` processes with ``batch_size=B`` train the same model (up to float rounding) as one
process with ``batch_size=W * B, shard_global_batch=True``. The history (global loss, global pair count)
and the weights are the same on every rank; only rank 0 shows a progress bar and writes checkpoints, so save
the bundle on rank 0 only::

    torchrun --nproc_per_node 4 train.py   # train.py calls pretrain(..., device="cuda")

On CUDA the encoder and projector run under bf16 autocast (``mixed_precision``); the loss, the weights and
the optimiser stay in float32. CPU training is float32.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from . import _train_state
from .bundle import ModelBundle
from .data import SpikeTrainSet, ViewPair, sample_view_pair
from .inference import torch_threads
from .methods import ViewBatch, get_method

__all__ = [
    "pretrain",
    "fine_tune",
    "fine_tune_transductive",
    "collate_view_pairs",
    "draw_view_pairs",
    "SpanSampler",
]

logger = logging.getLogger(__name__)

#: Consecutive failed draws after which the corpus is declared unusable.
MAX_FAILED_DRAWS = 1000

#: Second entropy word of the per-sample streams of ``shard_global_batch=True``: keeps them apart from the
#: per-rank streams ``(seed, rank)`` of the default single-process stream.
_SHARD_STREAM = 0x5EED5A4D


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
    **view_kwargs: Any,
) -> list[ViewPair]:
    """Draw ``num`` view pairs from populations chosen uniformly from ``corpus``.

    Draws that :func:`~spikeinterface_neuronid.data.sample_view_pair` (or, for span-context models,
    ``sampler``) rejects (too few shared units) are redrawn.

    Raises
    ------
    ValueError
        After :data:`MAX_FAILED_DRAWS` consecutive rejected draws: the recordings are shorter than one
        window or too sparse.
    """
    pairs: list[ViewPair] = []
    failed = too_short = 0
    while len(pairs) < num:
        index = int(rng.integers(len(corpus)))
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


def _draw_positions(
    seed: int, step: int, positions: range, corpus, spec, sampler: SpanSampler | None, view_kwargs: dict
) -> list[ViewPair]:
    """The view pairs of the given global batch positions of one step, each drawn from its own stream."""
    pairs: list[ViewPair] = []
    for position in positions:
        rng = _sample_rng(seed, step, position)
        pairs += draw_view_pairs(rng, corpus, spec, 1, sampler=sampler, **view_kwargs)
    return pairs


def _global_step_loss(
    loss: torch.Tensor, num_pairs: int, world: int, pair_weighted: bool
) -> tuple[torch.Tensor, float, int]:
    """All-reduce one step's pair count and loss across ranks.

    Returns the loss to back-propagate on this rank, the loss of the global batch and its number of matched
    pairs. With ``pair_weighted`` (NuCLR: the loss is the mean over matched pairs) rank ``r``'s loss is
    scaled by ``world * n_r / sum(n)``, so that DDP's average of the ranks' gradients is the gradient of the
    mean over all matched pairs of the global batch; otherwise the ranks' losses count equally.
    """
    import torch.distributed as dist

    local = loss.detach().to(torch.float64)
    count = torch.tensor(float(num_pairs), dtype=torch.float64, device=loss.device)
    stats = torch.stack((count, local * count if pair_weighted else local))
    dist.all_reduce(stats)
    total_pairs, total = stats.tolist()
    if not pair_weighted:
        return loss, total / world, int(round(total_pairs))
    if total_pairs <= 0:  # no matched pair anywhere: every rank's loss is a zero attached to the graph
        return loss, 0.0 if math.isfinite(total) else total, 0
    return loss * (world * num_pairs / total_pairs), total / total_pairs, int(round(total_pairs))


def _num_matched(batch: ViewBatch) -> int:
    """Number of units present in both views, over the batch (the positive pairs)."""
    same = batch.units1[:, :, None] == batch.units2[:, None, :]
    return int((same & batch.mask1[:, :, None] & batch.mask2[:, None, :]).sum())


def _lr_factor(step: int, steps: int, warmup: int) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine from 1 to 0 at the last step."""
    if step < warmup:
        return (step + 1) / warmup
    span = max(1, steps - warmup - 1)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warmup) / span)))


def _param_groups(modules: Sequence[nn.Module], weight_decay: float) -> list[dict]:
    """Weight decay on matrices only; none on norm weights and biases (1-D parameters)."""
    decay, no_decay = [], []
    for module in modules:
        for param in module.parameters():
            if param.requires_grad:
                (decay if param.dim() >= 2 else no_decay).append(param)
    return [dict(params=decay, weight_decay=weight_decay), dict(params=no_decay, weight_decay=0.0)]


class _Autocast:
    """Calls a module under bf16 autocast and returns float32, so that the loss itself stays in float32.

    Other attributes (``parameters()``, ``config``) are the module's.
    """

    def __init__(self, module: nn.Module, device_type: str):
        self.module, self.device_type = module, device_type

    def __call__(self, *args, **kwargs):
        with torch.autocast(self.device_type, dtype=torch.bfloat16):
            out = self.module(*args, **kwargs)
        return out.float() if isinstance(out, torch.Tensor) and out.is_floating_point() else out

    def __getattr__(self, name: str):
        if name in ("module", "device_type"):
            raise AttributeError(name)
        return getattr(self.module, name)


class _Objective(nn.Module):
    """Encoder + projector whose forward is the method's loss (one module, so DDP can wrap it).

    With ``autocast`` (a device type) the encoder and projector run under bf16 autocast.
    """

    def __init__(self, method, config, encoder: nn.Module, projector: nn.Module, autocast: str | None = None):
        super().__init__()
        self.method, self.config = method, config
        self.encoder, self.projector = encoder, projector
        self.autocast = autocast

    def forward(self, batch: ViewBatch) -> torch.Tensor:
        if self.autocast is None:
            return self.method.loss(self.encoder, self.projector, batch, self.config)
        encoder, projector = _Autocast(self.encoder, self.autocast), _Autocast(self.projector, self.autocast)
        return self.method.loss(encoder, projector, batch, self.config).float()


@contextlib.contextmanager
def _deterministic(enabled: bool):
    previous = torch.are_deterministic_algorithms_enabled()
    previous_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    if enabled:
        torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous, warn_only=previous_warn)


def _distributed(device: str) -> tuple[bool, bool, int, int, str]:
    """Join torchrun's process group if there is one: ``(distributed, created, rank, world, device)``."""
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if not dist.is_available() or not (dist.is_initialized() or world > 1):
        return False, False, 0, 1, device
    created = False
    if str(device).startswith("cuda") and torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        device = f"cuda:{local}"
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if str(device).startswith("cuda") else "gloo")
        created = True
    return True, created, dist.get_rank(), dist.get_world_size(), device


def pretrain(
    corpus: Sequence[SpikeTrainSet],
    config: Any = None,
    method: str = "nuclr",
    steps: int = 2000,
    batch_size: int = 8,
    lr: float = 1e-3,
    weight_decay: float = 0.01,
    warmup_steps: int = 200,
    max_shift_s: float = 30.0,
    min_keep: float = 0.5,
    max_units: int | None = None,
    grad_clip: float | None = 1.0,
    seed: int = 0,
    init: ModelBundle | None = None,
    device: str = "cpu",
    num_threads: int | None = None,
    progress_bar: bool = True,
    log_every: int = 10,
    name: str = "neuronid-model",
    provenance: dict | None = None,
    checkpoint_every: int | None = None,
    checkpoint_score: Callable[[ModelBundle], float] | None = None,
    checkpoint_path: str | os.PathLike | None = None,
    shard_global_batch: bool | None = None,
    mixed_precision: bool | None = None,
    resume_from: str | os.PathLike | None = None,
    freeze_init: bool = False,
) -> tuple[ModelBundle, dict]:
    """Self-supervised training of an embedding model on a corpus of populations.

    Parameters
    ----------
    corpus : sequence of SpikeTrainSet
        One item per population segment. A list, or any object with ``__len__`` and ``__getitem__``
        returning a :class:`~spikeinterface_neuronid.data.SpikeTrainSet`; items are only requested when a
        sample is drawn from them (uniformly over items), so a lazy sequence that loads (and caches)
        sessions on access can stream hundreds of sessions without holding them all in memory.
    config : method config | None, default: None
        Architecture and loss settings; None uses ``init``'s config or the method's ``Config.cpu()``.
    method : str, default: "nuclr"
        Registered method name (ignored in favour of ``init.method`` when ``init`` is given).
    steps : int, default: 2000
        Optimiser steps.
    batch_size : int, default: 8
        View pairs per step and process: under torchrun the global batch of a step is
        ``batch_size x world_size`` view pairs.
    lr : float, default: 1e-3
        Peak learning rate of AdamW (betas 0.9/0.999).
    weight_decay : float, default: 0.01
        AdamW weight decay of weight matrices (not of norm weights or biases).
    warmup_steps : int, default: 200
        Linear warm-up steps (capped at ``steps``), then cosine decay to 0.
    max_shift_s : float, default: 30.0
        Largest start offset between the two views of a pair.
    min_keep : float, default: 0.5
        Each view keeps a random ``min_keep``-100 % of its active units (unit dropout).
    max_units : int | None, default: None
        Cap on units per view; None: 256 for span-context NuCLR models (so that unit dropout, not the cap,
        sets the view size of populations of up to a few hundred units), 64 otherwise.
    grad_clip : float | None, default: 1.0
        Gradient-norm clip, applied to encoder and projector separately (as NuCLR); None disables it.
    seed : int, default: 0
        Seed of initialisation, sampling and dropout. On CPU the same seed, data, settings and thread
        count give bit-identical weights.
    init : ModelBundle | None, default: None
        Start from this model's encoder (and projector, if stored): fine-tuning.
    device : str, default: "cpu"
        Torch device (``"cuda"`` under torchrun uses the GPU ``LOCAL_RANK``).
    num_threads : int | None, default: None
        Torch CPU threads during training (restored afterwards); None leaves the setting.
    progress_bar : bool, default: True
        Show a tqdm progress bar with the running loss.
    log_every : int, default: 10
        Steps between progress-bar/log updates of the running mean loss.
    name : str, default: "neuronid-model"
        Name of the resulting model.
    provenance : dict | None, default: None
        JSON-serialisable description of the data; the training settings are added under ``"training"``.
    checkpoint_every : int | None, default: None
        Every this many steps (and after the last one) a checkpoint is taken: the current weights are scored
        with ``checkpoint_score`` and/or written to ``checkpoint_path``. None: no checkpoints.
    checkpoint_score : callable | None, default: None
        ``score(bundle) -> float`` (higher is better), e.g. a linear probe on a validation animal that is not a
        test animal. With it, the returned model is the best-scoring checkpoint (NuCLR's model selection) and
        the history gets ``"checkpoints"``: ``[{"step", "score"}, ...]``. It runs in eval mode with torch's
        RNG state restored afterwards, so it does not change the training stream.
    checkpoint_path : str | PathLike | None, default: None
        Write the latest checkpoint there (atomically, safetensors); on rank 0 only. Next to it,
        ``<stem>.state.safetensors`` holds the training state (weights, AdamW state, step, settings, sampler
        and torch RNG states, history, best checkpoint; safetensors + JSON, no pickle), from which
        ``resume_from`` continues the run. Under torchrun give a path on every rank (every rank takes part
        in gathering the RNG states).
    shard_global_batch : bool | None, default: None
        How the view pairs of a step are drawn. True: position ``p`` of step ``s`` of the global batch
        (``batch_size x world_size`` pairs) is drawn from its own stream seeded by ``(seed, s, p)`` and rank
        ``r`` draws positions ``r * batch_size`` to ``(r + 1) * batch_size - 1``, so the ranks' samples never
        overlap and ``W`` processes with ``batch_size=B`` draw exactly the pairs of one process with
        ``batch_size=W * B`` (with dropout 0 they train the same model, up to float rounding). False: each rank
        draws its pairs in sequence from one stream seeded by ``(seed, rank)`` (the single-process stream of
        earlier versions). None: True under torchrun (world size > 1), False in a single process, so that a
        single-process run gives the same weights as before this option existed.
    mixed_precision : bool | None, default: None
        Run the encoder and projector under bf16 autocast (the contrastive loss, the weights and AdamW stay
        float32). None: on when ``device`` is CUDA and the GPU supports bf16, off on CPU; True needs a CUDA
        device; False trains in float32 everywhere.
    freeze_init : bool, default: False
        Grow ``init`` instead of fine-tuning it: ``config`` may add modules that ``init`` lacks (for NuCLR, the
        single-unit tower of ``single_unit_path``); the weights that come from ``init`` stay fixed and only the
        new ones are trained. Without it every weight of ``init`` must fit ``config`` and all are trained.
    resume_from : str | PathLike | None, default: None
        Continue a run from a checkpoint written with ``checkpoint_path`` (that path, or its
        ``.state.safetensors`` file): the weights, AdamW state, step, sampler and torch RNG states, history
        and best checkpoint are restored and training goes on to the same total ``steps`` with the same
        schedule (no new warm-up). The settings that define the run (method, config, steps, batch size, lr,
        weight decay, warm-up, view settings, grad clip, seed, world size, sampling mode, precision, number
        of sessions, init model) must be those of the checkpoint's run; ``device``, ``num_threads``,
        ``checkpoint_*`` and logging may change. On CPU with the same thread count the result is
        bit-identical to an uninterrupted run. Under torchrun every rank reads the file (a shared
        filesystem) and ``shard_global_batch`` must be on (the default there). None: start afresh.

    Returns
    -------
    bundle : ModelBundle
        The trained model (encoder and projector weights).
    history : dict
        Per-step lists ``"loss"``, ``"lr"``, ``"step_time_s"`` and ``"num_pairs"`` (matched units), and
        ``"seconds"`` (total), ``"rank"`` and ``"world_size"``. Under torchrun ``"loss"`` and ``"num_pairs"``
        are those of the global batch (the same on every rank).

    Raises
    ------
    ValueError
        For an empty corpus, invalid settings, a config that does not fit ``init``'s weights, when no
        view pair can be drawn (recordings shorter than one window or too sparse), or a ``resume_from``
        file that is corrupted or whose run has other settings (the message names the setting).
    FileNotFoundError
        If ``resume_from`` has no training-state file.
    FloatingPointError
        If the loss becomes NaN or infinite (lower ``lr``).

    Notes
    -----
    Torch's global RNG state is saved and restored around training; on CPU,
    ``torch.use_deterministic_algorithms(True, warn_only=True)`` is set for the duration of the call and
    then restored. Bit-identical results also need the same torch build and ``num_threads``.

    Under ``torchrun`` only rank 0 shows a progress bar, writes checkpoints and runs ``checkpoint_score``
    (its score is broadcast, so every rank selects the same checkpoint); every rank returns the same weights
    and history (see the module docstring). For NuCLR the number of matched pairs is all-reduced every
    step and each rank's loss weighted by its share, as NuCLR does across GPUs, so the gradient is that of
    the global batch; for other methods the ranks' losses count equally.
    """
    if len(corpus) == 0:
        raise ValueError("the training corpus is empty: give at least one SpikeTrainSet")
    for label, value in (("steps", steps), ("batch_size", batch_size), ("max_units", max_units or 1)):
        if int(value) < 1:
            raise ValueError(f"{label} must be >= 1, got {value}")
    if warmup_steps < 0:
        raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
    if freeze_init and init is None:
        raise ValueError("freeze_init=True needs an init model to grow: pass init=ModelBundle.load(...)")
    if not 0.0 < min_keep <= 1.0:
        raise ValueError(f"min_keep must be in (0, 1], got {min_keep}")
    for label, value in (("shard_global_batch", shard_global_batch), ("mixed_precision", mixed_precision)):
        if value is not None and not isinstance(value, (bool, np.bool_)):
            raise ValueError(f"{label} must be True, False or None, got {value!r}")
    on_cuda = torch.device(device).type == "cuda"
    if mixed_precision and not on_cuda:
        raise ValueError(
            f"mixed_precision=True needs a CUDA device (bf16 autocast), got device={str(device)!r}; "
            "CPU training is float32: leave mixed_precision None or False"
        )
    if mixed_precision and torch.cuda.is_available() and not torch.cuda.is_bf16_supported():
        raise ValueError("mixed_precision=True needs a GPU with bf16 support; this one has none: pass False")
    autocast = bool(on_cuda and torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    autocast = autocast if mixed_precision is None else bool(mixed_precision)
    if init is not None:
        method = init.method
    module = get_method(method)
    if config is None:
        config = init.config if init is not None else module.Config.cpu()
    elif isinstance(config, dict):
        config = module.Config.from_dict(config)
    if not isinstance(config, module.Config):
        raise ValueError(
            f"config must be a {module.Config.__name__} for method {method!r}, got {type(config).__name__}"
        )
    spec = config.window_spec
    steps, batch_size, warmup = int(steps), int(batch_size), min(int(warmup_steps), int(steps))
    span_context = getattr(config, "context", "window") == "span"
    if max_units is None:
        max_units = 256 if span_context else 64
    sampler = SpanSampler(corpus, config) if span_context else None

    distributed, created_group, rank, world, device = _distributed(device)
    on_cpu = torch.device(device).type == "cpu"
    shard = (world > 1) if shard_global_batch is None else bool(shard_global_batch)
    rng = np.random.default_rng([int(seed), rank])
    view_kwargs = dict(max_shift_s=max_shift_s, min_keep=min_keep, max_units=int(max_units))
    # NuCLR's loss is the mean over the matched pairs of the batch: ranks are weighted by their pair counts
    pair_weighted = getattr(module, "NAME", method) == "nuclr"

    # what defines the run: a resumed run must have the same (the training-state file stores them)
    run_settings = dict(
        method=method,
        config=config.to_dict(),
        steps=steps,
        batch_size=batch_size,
        lr=float(lr),
        weight_decay=float(weight_decay),
        warmup_steps=warmup,
        max_shift_s=float(max_shift_s),
        min_keep=float(min_keep),
        max_units=int(max_units),
        grad_clip=None if grad_clip is None else float(grad_clip),
        seed=int(seed),
        world_size=world,
        shard_global_batch=shard,
        mixed_precision=autocast,
        num_sessions=len(corpus),
        init=None if init is None else init.sha256,
        freeze_init=bool(freeze_init),
    )
    resumed = None
    if resume_from is not None:
        if world > 1 and not shard:
            raise ValueError(
                "resume_from under torchrun needs shard_global_batch=True (the per-rank sampler streams of "
                "shard_global_batch=False are not saved)"
            )
        resumed = _train_state.load_state(resume_from, run_settings)
    state_file = checkpoint_path is not None and bool(checkpoint_every)

    history: dict[str, Any] = dict(loss=[], lr=[], step_time_s=[], num_pairs=[])
    best = None
    loader = None
    fork_devices = [torch.device(device)] if torch.device(device).type == "cuda" else []
    t_start = time.perf_counter()
    progress = None
    try:
        with torch_threads(num_threads), _deterministic(on_cpu), torch.random.fork_rng(devices=fork_devices):
            torch.manual_seed(int(seed))
            encoder = module.build_encoder(config)
            projector = module.build_projector(config)
            if init is not None:
                _load_init(init, config, encoder, projector, module, freeze=bool(freeze_init))
            # dropout stream of this rank, independent of the initialisation
            torch.manual_seed(int(np.random.SeedSequence([int(seed), rank, 1]).generate_state(1)[0]))
            objective = _Objective(
                module, config, encoder, projector, autocast=torch.device(device).type if autocast else None
            ).to(device)
            model: nn.Module = objective
            if distributed:
                from torch.nn.parallel import DistributedDataParallel

                model = DistributedDataParallel(
                    objective, device_ids=[torch.device(device).index] if not on_cpu else None
                )
            optimizer = torch.optim.AdamW(
                _param_groups([encoder, projector], weight_decay), lr=lr, betas=(0.9, 0.999), eps=1e-8
            )
            if progress_bar and rank == 0:
                from tqdm.auto import tqdm

                progress = tqdm(total=steps, desc=f"pretrain {method}", unit="step")
            start = 0
            if resumed is not None:
                start = _resume(resumed, encoder, projector, optimizer, rng, rank, device)
                for key, values in resumed["history"].items():
                    history[key] = list(values)
                best = resumed["best"]
                if progress is not None:
                    progress.update(start)
            model.train()
            recent: list[float] = []

            def draw(step: int) -> ViewBatch:
                if shard:
                    positions = range(rank * batch_size, (rank + 1) * batch_size)
                    pairs = _draw_positions(seed, step, positions, corpus, spec, sampler, view_kwargs)
                else:
                    pairs = draw_view_pairs(rng, corpus, spec, batch_size, sampler=sampler, **view_kwargs)
                return collate_view_pairs(pairs)

            # the next batch is drawn in a worker thread while this step trains; only that thread uses ``rng``,
            # in step order, so the stream of batches is the same as without it
            loader = ThreadPoolExecutor(max_workers=1)
            # the sampler state before the pending batch was drawn (the worker is idle when it is taken):
            # a run resumed from a checkpoint draws that batch again
            drawn_from = rng.bit_generator.state
            pending = loader.submit(draw, start) if start < steps else None
            for step in range(start, steps):
                t0 = time.perf_counter()
                factor = _lr_factor(step, steps, warmup)
                for group in optimizer.param_groups:
                    group["lr"] = lr * factor
                batch = pending.result()
                if step + 1 < steps:
                    drawn_from = rng.bit_generator.state
                    pending = loader.submit(draw, step + 1)
                num_pairs = _num_matched(batch)
                loss = model(batch.to(device))
                if distributed:
                    # every rank gets the same value, so a non-finite loss stops all ranks together
                    loss, value, num_pairs = _global_step_loss(loss, num_pairs, world, pair_weighted)
                else:
                    value = float(loss.detach())
                if not math.isfinite(value):
                    raise FloatingPointError(f"the training loss became {value} at step {step}; lower lr")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if grad_clip is not None:
                    torch.nn.utils.clip_grad_norm_(encoder.parameters(), grad_clip)
                    torch.nn.utils.clip_grad_norm_(projector.parameters(), grad_clip)
                optimizer.step()
                history["loss"].append(value)
                history["lr"].append(lr * factor)
                history["num_pairs"].append(num_pairs)
                history["step_time_s"].append(time.perf_counter() - t0)
                recent.append(value)
                if (step + 1) % max(1, int(log_every)) == 0 or step + 1 == steps:
                    mean = float(np.mean(recent))
                    recent = []
                    if progress is not None:
                        progress.set_postfix(loss=f"{mean:.3f}", lr=f"{lr * factor:.2e}", refresh=False)
                    logger.debug("step %d/%d loss %.4f lr %.2e", step + 1, steps, mean, lr * factor)
                if progress is not None:
                    progress.update(1)
                if checkpoint_every and ((step + 1) % int(checkpoint_every) == 0 or step + 1 == steps):
                    best = _checkpoint(
                        step + 1,
                        method,
                        config,
                        encoder,
                        projector,
                        name,
                        checkpoint_score,
                        checkpoint_path,
                        rank,
                        history,
                        best,
                        model,
                        distributed,
                    )
                    if state_file:
                        _save_state(
                            checkpoint_path,
                            step + 1,
                            run_settings,
                            encoder,
                            projector,
                            optimizer,
                            drawn_from,
                            history,
                            best,
                            rank,
                            world,
                            distributed,
                            device,
                        )
    finally:
        if loader is not None:
            loader.shutdown(wait=True, cancel_futures=True)
        if progress is not None:
            progress.close()
        if created_group:
            import torch.distributed as dist

            dist.destroy_process_group()
    history["seconds"] = time.perf_counter() - t_start
    history["rank"], history["world_size"] = rank, world
    if best is not None:
        encoder.load_state_dict(best["encoder"])
        projector.load_state_dict(best["projector"])

    losses = np.asarray(history["loss"])
    tail = max(1, len(losses) // 10)
    training = dict(
        method=method,
        steps=steps,
        batch_size=batch_size,
        world_size=world,
        lr=lr,
        weight_decay=weight_decay,
        warmup_steps=warmup,
        max_shift_s=max_shift_s,
        min_keep=min_keep,
        max_units=int(max_units),
        grad_clip=grad_clip,
        seed=int(seed),
        device=str(device),
        num_sessions=len(corpus),
        init=None if init is None else dict(name=init.name, sha256=init.sha256),
        **(dict(freeze_init=True) if freeze_init else {}),
        selected_checkpoint=None if best is None else dict(step=best["step"], score=best["score"]),
        loss_first=float(losses[:tail].mean()),
        loss_last=float(losses[-tail:].mean()),
        seconds=round(history["seconds"], 2),
        torch=torch.__version__,
    )
    if shard or world > 1:  # (absent from single-process runs of the default stream, as before)
        training.update(shard_global_batch=shard, global_batch_size=batch_size * world)
    if autocast:
        training["precision"] = "bf16-autocast"
    if resumed is not None:
        training["resumed_from_step"] = resumed["step"]
    info = dict(provenance or {})
    info["training"] = training
    bundle = ModelBundle.from_modules(method, config, encoder, projector, name=name, provenance=info)
    return bundle, history


def _checkpoint(
    step, method, config, encoder, projector, name, score_fn, path, rank, history, best, model, distributed=False
):
    """Score and/or save the current weights; returns the best checkpoint so far (or None without scoring).

    Rank 0 writes and scores; under torchrun its score is broadcast so that every rank keeps the same best.
    """
    if rank == 0 and (path is not None or score_fn is not None):
        snapshot = ModelBundle.from_modules(method, config, encoder, projector, name=name)
        if path is not None:
            snapshot.save(path)
    if score_fn is None:
        return best
    score, failed = float("nan"), None
    if rank == 0:
        was_training = model.training
        model.eval()
        try:
            with torch.random.fork_rng(devices=[]):
                score = float(score_fn(snapshot))
        except Exception as err:  # the other ranks must learn of it, or they wait for the score forever
            if not distributed:
                raise
            failed = err
        model.train(was_training)
    if distributed:
        import torch.distributed as dist

        device = next(encoder.parameters()).device
        shared = torch.tensor([score, float(failed is not None)], dtype=torch.float64, device=device)
        dist.broadcast(shared, 0)
        if failed is not None:
            raise failed
        if shared[1].item():
            raise RuntimeError(f"checkpoint_score failed on rank 0 at step {step}")
        score = float(shared[0].item())
    history.setdefault("checkpoints", []).append(dict(step=int(step), score=score))
    logger.info("checkpoint at step %d: score %.4f", step, score)
    if best is None or score > best["score"]:
        best = dict(
            step=int(step),
            score=score,
            encoder=copy.deepcopy(encoder.state_dict()),
            projector=copy.deepcopy(projector.state_dict()),
        )
    return best


def _save_state(
    path, step, settings, encoder, projector, optimizer, sampler_state, history, best, rank, world, distributed, device
) -> None:
    """Write the training state next to the checkpoint (rank 0); under torchrun every rank's RNG is gathered."""
    on_cuda = torch.device(device).type == "cuda"
    torch_rng = [torch.get_rng_state()]
    cuda_rng = [torch.cuda.get_rng_state(torch.device(device))] if on_cuda else None
    if distributed:
        import torch.distributed as dist

        def gather(state: torch.Tensor) -> list[torch.Tensor]:
            local = state.to(device)  # NCCL gathers CUDA tensors only
            parts = [torch.empty_like(local) for _ in range(world)]
            dist.all_gather(parts, local)
            return [part.cpu() for part in parts]

        torch_rng = gather(torch_rng[0])
        cuda_rng = gather(cuda_rng[0]) if cuda_rng is not None else None
    if rank != 0:
        return
    _train_state.save_state(
        path,
        step=step,
        settings=settings,
        encoder=encoder,
        projector=projector,
        optimizer=optimizer,
        torch_rng=torch_rng,
        cuda_rng=cuda_rng,
        sampler_state=sampler_state,
        history=history,
        best=best,
    )


def _resume(state: dict, encoder: nn.Module, projector: nn.Module, optimizer, rng, rank: int, device) -> int:
    """Restore a loaded training state into the freshly built run; returns the step to continue from."""
    where = state["path"]
    try:
        encoder.load_state_dict(state["encoder"])
        projector.load_state_dict(state["projector"])
    except RuntimeError as err:
        raise ValueError(f"{where}: the saved weights do not fit the model: {err}") from None
    _train_state.restore_optimizer(optimizer, state)
    if state["torch_rng"][rank] is None:
        raise ValueError(f"{where}: no torch RNG state of rank {rank}")
    torch.set_rng_state(state["torch_rng"][rank])
    if torch.device(device).type == "cuda" and state["cuda_rng"][rank] is not None:
        torch.cuda.set_rng_state(state["cuda_rng"][rank], torch.device(device))
    try:
        rng.bit_generator.state = state["sampler_state"]
    except (TypeError, ValueError, KeyError) as err:
        raise ValueError(f"{where}: unusable sampler state ({err})") from None
    return int(state["step"])


def _load_init(
    init: ModelBundle, config, encoder: nn.Module, projector: nn.Module, module, freeze: bool = False
) -> None:
    """Copy ``init``'s weights into freshly built modules; a config that changes shapes is an error.

    With ``freeze`` the modules may also hold parameters that ``init`` lacks (the method's ``grow_init_state``
    maps init's names onto the grown modules); init's parameters are then fixed (``requires_grad=False``)."""
    encoder_state, projector_state = init.state_dict, init.projector_state_dict
    grow = getattr(module, "grow_init_state", None)
    if freeze and grow is not None:
        encoder_state, projector_state = grow(init.config, config, encoder_state, projector_state)
    loaded = []
    try:
        for target, state in ((encoder, encoder_state), (projector, projector_state)):
            if state is None:
                continue
            missing, unexpected = target.load_state_dict(state, strict=False)
            if unexpected or (missing and not freeze):  # growing may add modules; nothing else may differ
                raise RuntimeError(f"unexpected keys {sorted(unexpected)}, missing keys {sorted(missing)}")
            loaded.append((target, set(state)))
    except RuntimeError as err:
        raise ValueError(f"the config does not fit the weights of init model {init.name!r}: {err}") from None
    if freeze:
        for target, names in loaded:
            for name, param in target.named_parameters():
                if name in names:
                    param.requires_grad_(False)
        if not any(p.requires_grad for m in (encoder, projector) for p in m.parameters()):
            raise ValueError(
                f"freeze_init=True but config adds no module to init model {init.name!r}: nothing would be trained"
            )


def fine_tune(
    bundle: ModelBundle,
    corpus: Sequence[SpikeTrainSet],
    steps: int = 500,
    lr: float = 2e-4,
    warmup_steps: int = 50,
    name: str | None = None,
    **kwargs: Any,
) -> tuple[ModelBundle, dict]:
    """Continue self-supervised training of ``bundle`` on new populations.

    A thin wrapper of :func:`pretrain` with ``init=bundle``, fewer steps and a lower learning rate; other
    keyword arguments are passed on.

    Returns
    -------
    bundle : ModelBundle
        The fine-tuned model (provenance records the starting model's name and sha256).
    history : dict
        As :func:`pretrain`.
    """
    return pretrain(
        corpus,
        init=bundle,
        steps=steps,
        lr=lr,
        warmup_steps=warmup_steps,
        name=name or f"{bundle.name}-finetuned",
        **kwargs,
    )


def fine_tune_transductive(
    bundle: ModelBundle,
    corpus: Sequence[SpikeTrainSet],
    steps: int,
    seed: int = 0,
    device: str = "cpu",
    num_threads: int | None = None,
    progress_bar: bool = False,
) -> ModelBundle:
    """Fine-tune a model self-supervised on the populations it is about to embed (transductive use).

    The encoder (and projector) are trained for ``steps`` more steps with :func:`fine_tune`'s defaults on
    ``corpus`` only, e.g. the segments of one sorting (no label is used). The task heads of ``bundle`` are
    copied unchanged onto the result, so the fine-tuned model still labels units; they were fitted on the
    embeddings of the original encoder, so they are only as good as the fine-tuned embeddings stay close to
    those (few steps, low learning rate).

    Parameters
    ----------
    bundle : ModelBundle
        The starting model (not modified).
    corpus : sequence of SpikeTrainSet
        The populations to adapt to, one item per segment.
    steps : int
        Optimiser steps (>= 1).
    seed : int, default: 0
        Seed of the sampling and dropout: on CPU, the same seed, data, model and thread count give the same
        weights (and the same :attr:`~spikeinterface_neuronid.bundle.ModelBundle.sha256`).
    device : str, default: "cpu"
        Torch device.
    num_threads : int | None, default: None
        Torch CPU threads during training; None leaves the setting.
    progress_bar : bool, default: False
        Show a progress bar over steps.

    Returns
    -------
    ModelBundle
        The fine-tuned model, named ``<name>-transductive``, with the original heads; its provenance records
        the starting model's name and sha256 under ``"transductive"``.
    """
    steps = int(steps)
    if steps < 1:
        raise ValueError(f"steps must be >= 1 for transductive fine-tuning, got {steps}")
    provenance = dict(
        transductive=dict(
            base_model=bundle.name,
            base_sha256=bundle.sha256,
            num_segments=len(corpus),
            num_units=int(max((s.num_units for s in corpus), default=0)),
        )
    )
    tuned, _ = fine_tune(
        bundle,
        corpus,
        steps=steps,
        seed=int(seed),
        device=device,
        num_threads=num_threads,
        progress_bar=progress_bar,
        name=f"{bundle.name}-transductive",
        provenance=provenance,
    )
    for head in bundle.heads.values():
        tuned.add_head(head)
    return tuned
