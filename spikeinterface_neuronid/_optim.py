"""The optimisation of :func:`~spikeinterface_neuronid.training.pretrain`: objective, schedule and step loop.

AdamW with weight decay on matrices only (:func:`param_groups`), a linear warm-up and a cosine decay to zero
(:func:`lr_factor`), the method's loss as one module that DDP can wrap (:class:`Objective`, optionally under
bf16 autocast) and the loop over steps (:func:`run_steps`), which draws the next batch in a worker thread
while the current step trains.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from ._sampling import num_matched
from .methods import ViewBatch

__all__ = ["lr_factor", "param_groups", "use_autocast", "Objective", "deterministic", "run_steps"]

logger = logging.getLogger("spikeinterface_neuronid.training")


def lr_factor(step: int, steps: int, warmup: int) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine from 1 to 0 at the last step.

    Parameters
    ----------
    step : int
        The step (0-based).
    steps : int
        Steps of the run.
    warmup : int
        Warm-up steps.

    Returns
    -------
    float
        The factor of the peak learning rate.
    """
    if step < warmup:
        return (step + 1) / warmup
    span = max(1, steps - warmup - 1)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warmup) / span)))


def param_groups(modules: Sequence[nn.Module], weight_decay: float) -> list[dict]:
    """AdamW parameter groups: weight decay on matrices only, none on norm weights and biases (1-D).

    Parameters
    ----------
    modules : sequence of torch.nn.Module
        The trained modules (parameters with ``requires_grad=False`` are left out).
    weight_decay : float
        Weight decay of the matrices.

    Returns
    -------
    list of dict
        The decayed group, then the undecayed one.
    """
    decay, no_decay = [], []
    for module in modules:
        for param in module.parameters():
            if param.requires_grad:
                (decay if param.dim() >= 2 else no_decay).append(param)
    return [dict(params=decay, weight_decay=weight_decay), dict(params=no_decay, weight_decay=0.0)]


def use_autocast(device, mixed_precision: bool | None) -> bool:
    """Whether the encoder and projector run under bf16 autocast (``mixed_precision`` of ``pretrain``).

    Parameters
    ----------
    device : str
        The requested torch device.
    mixed_precision : bool | None
        True needs a CUDA GPU with bf16 support; None: on exactly when there is one.

    Returns
    -------
    bool
    """
    on_cuda = torch.device(device).type == "cuda"
    if mixed_precision and not on_cuda:
        raise ValueError(
            f"mixed_precision=True needs a CUDA device (bf16 autocast), got device={str(device)!r}; "
            "CPU training is float32: leave mixed_precision None or False"
        )
    if mixed_precision and torch.cuda.is_available() and not torch.cuda.is_bf16_supported():
        raise ValueError("mixed_precision=True needs a GPU with bf16 support; this one has none: pass False")
    autocast = bool(on_cuda and torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    return autocast if mixed_precision is None else bool(mixed_precision)


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


class Objective(nn.Module):
    """Encoder + projector whose forward is the method's loss (one module, so DDP can wrap it).

    Parameters
    ----------
    method : module
        The method module (its ``loss``).
    config : MethodConfig
        The model's config.
    encoder, projector : torch.nn.Module
        The trained modules.
    autocast : str | None, default: None
        A device type: run the encoder and projector under bf16 autocast there; None: float32.
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
def deterministic(enabled: bool):
    """Context in which ``torch.use_deterministic_algorithms(True, warn_only=True)`` holds (when ``enabled``).

    Parameters
    ----------
    enabled : bool
        False leaves the setting alone.
    """
    previous = torch.are_deterministic_algorithms_enabled()
    previous_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    if enabled:
        torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous, warn_only=previous_warn)


def run_steps(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    draw: Callable[[int], ViewBatch],
    rng: np.random.Generator,
    start: int,
    steps: int,
    warmup: int,
    lr: float,
    device,
    history: dict,
    clip_modules: Sequence[nn.Module],
    grad_clip: float | None,
    log_every: int,
    progress,
    global_loss: Callable | None = None,
    checkpoint_every: int | None = None,
    checkpoint: Callable[[int, dict], None] | None = None,
) -> None:
    """Train steps ``start`` to ``steps - 1``, appending to ``history``.

    The batch of the next step is drawn in a worker thread while the current one trains; only that thread
    uses ``rng``, in step order, so the stream of batches is the same as without it.

    Parameters
    ----------
    model : torch.nn.Module
        The :class:`Objective` (or its DDP wrapper): ``model(batch)`` is the loss.
    optimizer : torch.optim.Optimizer
        AdamW; its learning rate is set every step.
    draw : callable
        ``draw(step) -> ViewBatch``, the CPU batch of a step.
    rng : np.random.Generator
        The sampler stream ``draw`` uses (its state is handed to ``checkpoint``).
    start, steps : int
        First step and number of steps of the run.
    warmup : int
        Warm-up steps of the schedule.
    lr : float
        Peak learning rate.
    device : str
        The training device.
    history : dict
        Lists ``"loss"``, ``"lr"``, ``"num_pairs"`` and ``"step_time_s"``, appended to.
    clip_modules : sequence of torch.nn.Module
        Modules whose gradient norms are clipped, each on its own.
    grad_clip : float | None
        Largest gradient norm; None: no clipping.
    log_every : int
        Steps between progress-bar/log updates of the running mean loss.
    progress : tqdm | None
        Progress bar, updated every step.
    global_loss : callable | None, default: None
        Under torchrun, ``global_loss(loss, num_pairs) -> (loss, value, num_pairs)``
        (:func:`~spikeinterface_neuronid._distributed.global_step_loss`); None: a single process.
    checkpoint_every : int | None, default: None
        Call ``checkpoint`` every this many steps and after the last one.
    checkpoint : callable | None, default: None
        ``checkpoint(steps_done, sampler_state)``, with the sampler state before the pending batch was drawn.

    Raises
    ------
    FloatingPointError
        If the loss becomes NaN or infinite.
    """
    recent: list[float] = []
    loader = ThreadPoolExecutor(max_workers=1)
    try:
        # the sampler state before the pending batch was drawn (the worker is idle when it is taken):
        # a run resumed from a checkpoint draws that batch again
        drawn_from = rng.bit_generator.state
        pending = loader.submit(draw, start) if start < steps else None
        for step in range(start, steps):
            t0 = time.perf_counter()
            factor = lr_factor(step, steps, warmup)
            for group in optimizer.param_groups:
                group["lr"] = lr * factor
            batch = pending.result()
            if step + 1 < steps:
                drawn_from = rng.bit_generator.state
                pending = loader.submit(draw, step + 1)
            num_pairs = num_matched(batch)
            loss = model(batch.to(device))
            if global_loss is not None:
                # every rank gets the same value, so a non-finite loss stops all ranks together
                loss, value, num_pairs = global_loss(loss, num_pairs)
            else:
                value = float(loss.detach())
            if not math.isfinite(value):
                raise FloatingPointError(f"the training loss became {value} at step {step}; lower lr")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if grad_clip is not None:
                for module in clip_modules:
                    torch.nn.utils.clip_grad_norm_(module.parameters(), grad_clip)
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
                checkpoint(step + 1, drawn_from)
    finally:
        loader.shutdown(wait=True, cancel_futures=True)
