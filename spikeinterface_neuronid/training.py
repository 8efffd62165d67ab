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

import os
import time
from functools import partial
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from . import _optim, _train_state
from ._checkpoints import Checkpointer, load_init, resume_run
from ._distributed import global_step_loss, join_process_group
from ._sampling import (
    SessionBlocks,
    SpanSampler,
    StepBatches,
    collate_view_pairs,
    draw_view_pairs,
    step_batch_loader,
)
from .bundle import ModelBundle
from .data import SpikeTrainSet
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
    session_block: int | None = None,
    session_block_steps: int = 100,
    num_workers: int = 0,
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
        earlier versions). None: True under torchrun (world size > 1) or with ``num_workers``, False in a
        single process, so that a single-process run gives the same weights as before this option existed.
    mixed_precision : bool | None, default: None
        Run the encoder and projector under bf16 autocast (the contrastive loss, the weights and AdamW stay
        float32). None: on when ``device`` is CUDA and the GPU supports bf16, off on CPU; True needs a CUDA
        device; False trains in float32 everywhere.
    freeze_init : bool, default: False
        Grow ``init`` instead of fine-tuning it: ``config`` may add modules that ``init`` lacks (for NuCLR, the
        single-unit tower of ``single_unit_path``); the weights that come from ``init`` stay fixed and only the
        new ones are trained. Without it every weight of ``init`` must fit ``config`` and all are trained.
    session_block : int | None, default: None
        Session-blocked sampling (:class:`~spikeinterface_neuronid._sampling.SessionBlocks`): the corpus is
        shuffled every epoch and cut into blocks of this many items, and the steps of one block draw only from
        its items, so that a lazy corpus with a cache of ``session_block`` sources reads each source about
        once per block. None draws every pair from the whole corpus.
    session_block_steps : int, default: 100
        Steps per block of ``session_block``.
    num_workers : int, default: 0
        DataLoader worker processes that draw and collate the batches ahead of training (each with its own
        copy of the corpus cache and of the span statistics cache); 0 draws them in a thread of this
        process. The batches of a step come from that step's streams (``shard_global_batch``, which must then
        be on), so the result does not depend on ``num_workers``.
    resume_from : str | PathLike | None, default: None
        Continue a run from a checkpoint written with ``checkpoint_path`` (that path, or its
        ``.state.safetensors`` file): the weights, AdamW state, step, sampler and torch RNG states, history
        and best checkpoint are restored and training goes on to the same total ``steps`` with the same
        schedule (no new warm-up). The settings that define the run (method, config, steps, batch size, lr,
        weight decay, warm-up, view settings, grad clip, seed, world size, sampling mode, precision, number
        of sessions, init model) must be those of the checkpoint's run; ``device``, ``num_threads``,
        ``checkpoint_*``, ``num_workers`` and logging may change. On CPU with the same thread count the result is
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
    if isinstance(num_workers, bool) or int(num_workers) != num_workers or int(num_workers) < 0:
        raise ValueError(f"num_workers must be an integer >= 0, got {num_workers!r}")
    num_workers = int(num_workers)
    if num_workers and shard_global_batch is False:
        raise ValueError(
            "num_workers > 0 draws every step from its own streams: use shard_global_batch=True or None, or "
            "num_workers=0"
        )
    blocks = None if session_block is None else SessionBlocks(len(corpus), session_block, session_block_steps, seed)
    autocast = _optim.use_autocast(device, mixed_precision)
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

    distributed, created_group, rank, world, device = join_process_group(device)
    on_cpu = torch.device(device).type == "cpu"
    shard = (world > 1 or num_workers > 0) if shard_global_batch is None else bool(shard_global_batch)
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
    if blocks is not None:  # (absent when off, so that state files of earlier versions still resume)
        run_settings.update(session_block=blocks.sessions, session_block_steps=blocks.steps)
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
    fork_devices = [torch.device(device)] if torch.device(device).type == "cuda" else []
    t_start = time.perf_counter()
    progress = None
    try:
        with torch_threads(num_threads), _optim.deterministic(on_cpu), torch.random.fork_rng(devices=fork_devices):
            torch.manual_seed(int(seed))
            encoder = module.build_encoder(config)
            projector = module.build_projector(config)
            if init is not None:
                load_init(init, config, encoder, projector, module, freeze=bool(freeze_init))
            # dropout stream of this rank, independent of the initialisation
            torch.manual_seed(int(np.random.SeedSequence([int(seed), rank, 1]).generate_state(1)[0]))
            objective = _optim.Objective(
                module, config, encoder, projector, autocast=torch.device(device).type if autocast else None
            ).to(device)
            model: nn.Module = objective
            if distributed:
                from torch.nn.parallel import DistributedDataParallel

                model = DistributedDataParallel(
                    objective, device_ids=[torch.device(device).index] if not on_cpu else None
                )
            optimizer = torch.optim.AdamW(
                _optim.param_groups([encoder, projector], weight_decay), lr=lr, betas=(0.9, 0.999), eps=1e-8
            )
            if progress_bar and rank == 0:
                from tqdm.auto import tqdm

                progress = tqdm(total=steps, desc=f"pretrain {method}", unit="step")
            checkpoints = Checkpointer(
                method=method,
                config=config,
                encoder=encoder,
                projector=projector,
                model=model,
                optimizer=optimizer,
                name=name,
                score_fn=checkpoint_score,
                path=checkpoint_path,
                settings=run_settings if state_file else None,
                history=history,
                rank=rank,
                world=world,
                distributed=distributed,
                device=device,
            )
            start = 0
            if resumed is not None:
                start = resume_run(resumed, encoder, projector, optimizer, rng, rank, device)
                for key, values in resumed["history"].items():
                    history[key] = list(values)
                checkpoints.best = resumed["best"]
                if progress is not None:
                    progress.update(start)
            model.train()

            positions = range(rank * batch_size, (rank + 1) * batch_size)
            step_batches = StepBatches(corpus, spec, sampler, view_kwargs, seed, positions, start, steps, blocks)
            if num_workers and start < steps:
                loaded = step_batch_loader(step_batches, num_workers)

                def draw(step: int) -> ViewBatch:
                    drawn_step, batch = next(loaded)
                    if drawn_step != step:  # the DataLoader yields its workers' batches in turn
                        raise RuntimeError(f"the batch loader gave step {drawn_step} for step {step}")
                    return batch

            elif shard:
                draw = step_batches.batch
            else:

                def draw(step: int) -> ViewBatch:
                    items = None if blocks is None else blocks.items(step)
                    pairs = draw_view_pairs(
                        rng, corpus, spec, batch_size, sampler=sampler, items=items, **view_kwargs
                    )
                    return collate_view_pairs(pairs)

            global_loss = partial(global_step_loss, world=world, pair_weighted=pair_weighted) if distributed else None
            _optim.run_steps(
                model,
                optimizer,
                draw,
                rng,
                start,
                steps,
                warmup,
                lr,
                device,
                history,
                clip_modules=(encoder, projector),
                grad_clip=grad_clip,
                log_every=log_every,
                progress=progress,
                global_loss=global_loss,
                checkpoint_every=checkpoint_every,
                checkpoint=checkpoints,
            )
            best = checkpoints.best
    finally:
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
    if blocks is not None:
        training.update(session_block=blocks.sessions, session_block_steps=blocks.steps)
    if autocast:
        training["precision"] = "bf16-autocast"
    if resumed is not None:
        training["resumed_from_step"] = resumed["step"]
    info = dict(provenance or {})
    info["training"] = training
    bundle = ModelBundle.from_modules(method, config, encoder, projector, name=name, provenance=info)
    return bundle, history


# fine_tuning imports pretrain from here; defined above, so the re-export below does not loop
from .fine_tuning import fine_tune, fine_tune_transductive  # noqa: E402
