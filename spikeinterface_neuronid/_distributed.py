"""Multi-process training under ``torchrun``: joining the process group and the global loss of a step.

See the module docstring of :mod:`spikeinterface_neuronid.training` for how the global batch is split and
weighted across ranks.
"""

from __future__ import annotations

import math
import os

import torch

__all__ = ["join_process_group", "global_step_loss", "all_gather"]


def join_process_group(device: str) -> tuple[bool, bool, int, int, str]:
    """Join torchrun's process group if there is one.

    NCCL on CUDA (the GPU ``LOCAL_RANK`` becomes the device), gloo on CPU; a group that is already
    initialised is used as it is.

    Parameters
    ----------
    device : str
        The requested torch device.

    Returns
    -------
    distributed : bool
        Whether a process group is in use (``WORLD_SIZE > 1`` or one already initialised).
    created : bool
        Whether this call initialised it (the caller destroys it at the end).
    rank, world : int
        This process's rank and the number of processes (0 and 1 without a group).
    device : str
        The device to train on.
    """
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


def global_step_loss(
    loss: torch.Tensor, num_pairs: int, world: int, pair_weighted: bool
) -> tuple[torch.Tensor, float, int]:
    """All-reduce one step's pair count and loss across ranks.

    With ``pair_weighted`` (NuCLR: the loss is the mean over matched pairs) rank ``r``'s loss is scaled by
    ``world * n_r / sum(n)``, so that DDP's average of the ranks' gradients is the gradient of the mean over
    all matched pairs of the global batch; otherwise the ranks' losses count equally.

    Parameters
    ----------
    loss : torch.Tensor
        This rank's scalar loss (attached to the graph).
    num_pairs : int
        This rank's number of matched unit pairs.
    world : int
        Number of ranks.
    pair_weighted : bool
        Weight the ranks by their pair counts.

    Returns
    -------
    loss : torch.Tensor
        The loss to back-propagate on this rank.
    value : float
        The loss of the global batch.
    num_pairs : int
        The global batch's number of matched pairs.
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


def all_gather(state: torch.Tensor, world: int, device) -> list[torch.Tensor]:
    """Every rank's copy of ``state``, on the CPU (through ``device``: NCCL gathers CUDA tensors only).

    Parameters
    ----------
    state : torch.Tensor
        This rank's tensor (the same shape on every rank).
    world : int
        Number of ranks.
    device : str | torch.device
        The device of the process group's backend.

    Returns
    -------
    list of torch.Tensor
        One tensor per rank, in rank order.
    """
    import torch.distributed as dist

    local = state.to(device)
    parts = [torch.empty_like(local) for _ in range(world)]
    dist.all_gather(parts, local)
    return [part.cpu() for part in parts]
