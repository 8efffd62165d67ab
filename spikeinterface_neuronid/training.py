"""Self-supervised pretraining and fine-tuning of an embedding method on spike-train sets.

Every step draws ``batch_size`` view pairs (two windows of one population,
:func:`~spikeinterface_neuronid.data.sample_view_pair`), pads them into a
:class:`~spikeinterface_neuronid.methods.ViewBatch` and minimises the method's loss with AdamW, linear
warm-up and a cosine decay to zero. The result is a :class:`~spikeinterface_neuronid.bundle.ModelBundle`.

Multi-GPU / multi-process
-------------------------
Launched under ``torchrun`` (``WORLD_SIZE > 1`` in the environment, or a process group already
initialised), :func:`pretrain` joins the process group (NCCL on CUDA, gloo on CPU), uses the GPU
``LOCAL_RANK`` when ``device="cuda"``, wraps the model in ``DistributedDataParallel`` and draws each rank's
samples from its own stream (seeded by ``(seed, rank)``); ``batch_size`` is per rank. Only rank 0 shows a
progress bar. All ranks return the same weights (gradients are averaged), but the history holds each
rank's own losses; save the bundle on rank 0 only::

    torchrun --nproc_per_node 4 train.py   # train.py calls pretrain(..., device="cuda")
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
    """

    def __init__(self, corpus: Sequence[SpikeTrainSet], config, small_view_probability: float = 0.1):
        from .span_views import SpanViewSettings

        self.corpus = corpus
        self.config = config
        self.settings = SpanViewSettings.from_config(config, small_view_probability)
        self._stats: dict[int, Any] = {}

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
            self._stats[index] = stats.to_cumulative()
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


class _Objective(nn.Module):
    """Encoder + projector whose forward is the method's loss (one module, so DDP can wrap it)."""

    def __init__(self, method, config, encoder: nn.Module, projector: nn.Module):
        super().__init__()
        self.method, self.config = method, config
        self.encoder, self.projector = encoder, projector

    def forward(self, batch: ViewBatch) -> torch.Tensor:
        return self.method.loss(self.encoder, self.projector, batch, self.config)


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
        View pairs per step (per process under torchrun).
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
        Write the latest checkpoint there (atomically, safetensors); on rank 0 only. A crashed run can be
        continued with ``init=ModelBundle.load(path)``.

    Returns
    -------
    bundle : ModelBundle
        The trained model (encoder and projector weights).
    history : dict
        Per-step lists ``"loss"``, ``"lr"``, ``"step_time_s"`` and ``"num_pairs"`` (matched units), and
        ``"seconds"`` (total).

    Raises
    ------
    ValueError
        For an empty corpus, invalid settings, a config that does not fit ``init``'s weights, or when no
        view pair can be drawn (recordings shorter than one window or too sparse).
    FloatingPointError
        If the loss becomes NaN or infinite (lower ``lr``).

    Notes
    -----
    Torch's global RNG state is saved and restored around training; on CPU,
    ``torch.use_deterministic_algorithms(True, warn_only=True)`` is set for the duration of the call and
    then restored. Bit-identical results also need the same torch build and ``num_threads``.

    Under ``torchrun`` only rank 0 shows a progress bar; every rank returns the same weights and its own
    loss history (see the module docstring). Pair weighting of the loss is per rank (NuCLR all-reduces
    the number of pairs across GPUs first); DDP averages the ranks' gradients.
    """
    if len(corpus) == 0:
        raise ValueError("the training corpus is empty: give at least one SpikeTrainSet")
    for label, value in (("steps", steps), ("batch_size", batch_size), ("max_units", max_units or 1)):
        if int(value) < 1:
            raise ValueError(f"{label} must be >= 1, got {value}")
    if warmup_steps < 0:
        raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
    if not 0.0 < min_keep <= 1.0:
        raise ValueError(f"min_keep must be in (0, 1], got {min_keep}")
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
    rng = np.random.default_rng([int(seed), rank])
    view_kwargs = dict(max_shift_s=max_shift_s, min_keep=min_keep, max_units=int(max_units))

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
                _load_init(init, config, encoder, projector)
            # dropout stream of this rank, independent of the initialisation
            torch.manual_seed(int(np.random.SeedSequence([int(seed), rank, 1]).generate_state(1)[0]))
            objective = _Objective(module, config, encoder, projector).to(device)
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
            model.train()
            recent: list[float] = []

            def draw() -> ViewBatch:
                return collate_view_pairs(
                    draw_view_pairs(rng, corpus, spec, batch_size, sampler=sampler, **view_kwargs)
                )

            # the next batch is drawn in a worker thread while this step trains; only that thread uses ``rng``,
            # in step order, so the stream of batches is the same as without it
            loader = ThreadPoolExecutor(max_workers=1)
            pending = loader.submit(draw)
            for step in range(steps):
                t0 = time.perf_counter()
                factor = _lr_factor(step, steps, warmup)
                for group in optimizer.param_groups:
                    group["lr"] = lr * factor
                batch = pending.result()
                if step + 1 < steps:
                    pending = loader.submit(draw)
                num_pairs = _num_matched(batch)
                loss = model(batch.to(device))
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
        selected_checkpoint=None if best is None else dict(step=best["step"], score=best["score"]),
        loss_first=float(losses[:tail].mean()),
        loss_last=float(losses[-tail:].mean()),
        seconds=round(history["seconds"], 2),
        torch=torch.__version__,
    )
    info = dict(provenance or {})
    info["training"] = training
    bundle = ModelBundle.from_modules(method, config, encoder, projector, name=name, provenance=info)
    return bundle, history


def _checkpoint(step, method, config, encoder, projector, name, score_fn, path, rank, history, best, model):
    """Score and/or save the current weights; returns the best checkpoint so far (or None without scoring)."""
    snapshot = ModelBundle.from_modules(method, config, encoder, projector, name=name)
    if path is not None and rank == 0:
        snapshot.save(path)
    if score_fn is None:
        return best
    was_training = model.training
    model.eval()
    with torch.random.fork_rng(devices=[]):
        score = float(score_fn(snapshot))
    model.train(was_training)
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


def _load_init(init: ModelBundle, config, encoder: nn.Module, projector: nn.Module) -> None:
    """Copy ``init``'s weights into freshly built modules; a config that changes shapes is an error."""
    try:
        encoder.load_state_dict(init.state_dict)
        if init.projector_state_dict is not None:
            projector.load_state_dict(init.projector_state_dict)
    except RuntimeError as err:
        raise ValueError(f"the config does not fit the weights of init model {init.name!r}: {err}") from None


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
