"""Weights in and out of a :func:`~spikeinterface_neuronid.training.pretrain` run.

The starting weights of ``init`` (:func:`load_init`), the checkpoints taken every ``checkpoint_every`` steps
(:func:`take_checkpoint`: score, keep the best, write the model), the training state written next to them
(:func:`save_run_state`, file format in :mod:`spikeinterface_neuronid._train_state`), both together
(:class:`Checkpointer`), and the restoration of a training state on resume (:func:`resume_run`).
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from . import _train_state
from ._distributed import all_gather
from .bundle import ModelBundle

__all__ = ["Checkpointer", "take_checkpoint", "save_run_state", "resume_run", "load_init"]

logger = logging.getLogger("spikeinterface_neuronid.training")


def take_checkpoint(
    step, method, config, encoder, projector, name, score_fn, path, rank, history, best, model, distributed=False
):
    """Score and/or save the current weights.

    Rank 0 writes and scores (in eval mode, torch's RNG state restored afterwards); under torchrun its score
    is broadcast so that every rank keeps the same best. The score is appended to ``history["checkpoints"]``.

    Parameters
    ----------
    step : int
        Steps done.
    method : str
        The method's name.
    config : MethodConfig
        The model's config.
    encoder, projector : torch.nn.Module
        The modules being trained.
    name : str
        Name of the written model.
    score_fn : callable | None
        ``score(bundle) -> float`` (higher is better); None: no scoring.
    path : str | PathLike | None
        Where the checkpoint is written (rank 0); None: not written.
    rank : int
        This process's rank.
    history : dict
        The run's history.
    best : dict | None
        The best checkpoint so far.
    model : torch.nn.Module
        The trained module (its train/eval mode is restored after scoring).
    distributed : bool, default: False
        Under torchrun.

    Returns
    -------
    dict | None
        The best checkpoint so far (``step``, ``score`` and copies of the two state dicts), or None without
        scoring.
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


def save_run_state(
    path, step, settings, encoder, projector, optimizer, sampler_state, history, best, rank, world, distributed, device
) -> None:
    """Write the training state next to the checkpoint (rank 0); under torchrun every rank's RNG is gathered.

    Parameters
    ----------
    path : str | PathLike
        The checkpoint path (the state goes to :func:`~spikeinterface_neuronid._train_state.state_path`).
    step : int
        Steps done.
    settings : dict
        The settings that define the run.
    encoder, projector : torch.nn.Module
        The modules being trained.
    optimizer : torch.optim.Optimizer
        Their AdamW optimiser.
    sampler_state : dict
        The numpy sampler's ``bit_generator.state`` before the next step's batch was drawn.
    history : dict
        The run's history.
    best : dict | None
        The best checkpoint so far.
    rank, world : int
        This process's rank and the number of processes.
    distributed : bool
        Under torchrun (every rank must call this).
    device : str
        The training device.
    """
    on_cuda = torch.device(device).type == "cuda"
    torch_rng = [torch.get_rng_state()]
    cuda_rng = [torch.cuda.get_rng_state(torch.device(device))] if on_cuda else None
    if distributed:
        torch_rng = all_gather(torch_rng[0], world, device)
        cuda_rng = all_gather(cuda_rng[0], world, device) if cuda_rng is not None else None
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


@dataclass
class Checkpointer:
    """The checkpoints of one run: ``checkpointer(done, sampler_state)`` after ``done`` steps.

    Each call runs :func:`take_checkpoint` (keeping the best checkpoint in :attr:`best`) and, with
    ``settings``, :func:`save_run_state`.

    Parameters
    ----------
    method : str
        The method's name.
    config : MethodConfig
        The model's config.
    encoder, projector : torch.nn.Module
        The modules being trained.
    model : torch.nn.Module
        The trained module (the objective or its DDP wrapper).
    optimizer : torch.optim.Optimizer
        Their AdamW optimiser.
    name : str
        Name of the written model.
    score_fn : callable | None
        ``score(bundle) -> float``; None: no scoring.
    path : str | PathLike | None
        Where checkpoints are written.
    settings : dict | None
        The settings that define the run; None: no training state is written.
    history : dict
        The run's history.
    rank, world : int
        This process's rank and the number of processes.
    distributed : bool
        Under torchrun.
    device : str
        The training device.
    best : dict | None, default: None
        The best checkpoint so far (a resumed run's).
    """

    method: str
    config: Any
    encoder: nn.Module
    projector: nn.Module
    model: nn.Module
    optimizer: Any
    name: str
    score_fn: Callable | None
    path: Any
    settings: dict | None
    history: dict
    rank: int
    world: int
    distributed: bool
    device: Any
    best: dict | None = None

    def __call__(self, done: int, sampler_state: dict) -> None:
        self.best = take_checkpoint(
            done,
            self.method,
            self.config,
            self.encoder,
            self.projector,
            self.name,
            self.score_fn,
            self.path,
            self.rank,
            self.history,
            self.best,
            self.model,
            self.distributed,
        )
        if self.settings is not None:
            save_run_state(
                self.path,
                done,
                self.settings,
                self.encoder,
                self.projector,
                self.optimizer,
                sampler_state,
                self.history,
                self.best,
                self.rank,
                self.world,
                self.distributed,
                self.device,
            )


def resume_run(state: dict, encoder: nn.Module, projector: nn.Module, optimizer, rng, rank: int, device) -> int:
    """Restore a loaded training state into the freshly built run.

    Parameters
    ----------
    state : dict
        As returned by :func:`~spikeinterface_neuronid._train_state.load_state`.
    encoder, projector : torch.nn.Module
        The freshly built modules.
    optimizer : torch.optim.Optimizer
        Their freshly built optimiser.
    rng : np.random.Generator
        The run's sampler stream (its state is replaced).
    rank : int
        This process's rank.
    device : str
        The training device.

    Returns
    -------
    int
        The step to continue from.
    """
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


def load_init(
    init: ModelBundle, config, encoder: nn.Module, projector: nn.Module, module, freeze: bool = False
) -> None:
    """Copy ``init``'s weights into freshly built modules; a config that changes shapes is an error.

    Parameters
    ----------
    init : ModelBundle
        The starting model.
    config : MethodConfig
        The config the modules were built with.
    encoder, projector : torch.nn.Module
        The freshly built modules.
    module : module
        The method module (its ``grow_init_state``, if any, maps init's names onto grown modules).
    freeze : bool, default: False
        The modules may also hold parameters that ``init`` lacks; init's parameters are then fixed
        (``requires_grad=False``).
    """
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
