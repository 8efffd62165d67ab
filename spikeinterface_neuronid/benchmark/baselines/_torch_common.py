"""Small helpers shared by the torch baselines (:mod:`.lolcat`, :mod:`.neuprint`): input checks, thread and
random-state scoping, progress bars. Pure numpy / torch; no SpikeInterface."""

from __future__ import annotations

import contextlib
import math
from typing import Any, Iterator, Sequence

import numpy as np
import torch

__all__ = [
    "check_populations",
    "check_int",
    "check_float",
    "check_fitted",
    "torch_scope",
    "progress",
]


def check_populations(populations: Any, owner: str) -> list:
    """``populations`` as a list of spike-train sets (objects with ``spike_times`` and ``duration``).

    Raises
    ------
    ValueError
        If it is a single population, not a sequence, empty, or holds an object that is not a population
        with at least one unit and a positive duration.
    """
    if hasattr(populations, "spike_times"):
        raise ValueError(f"{owner}: populations must be a sequence of SpikeTrainSet; wrap a single one in a list")
    if isinstance(populations, (str, bytes)) or not isinstance(populations, Sequence):
        try:
            populations = list(populations)
        except TypeError:
            raise ValueError(
                f"{owner}: populations must be a sequence of SpikeTrainSet, got {type(populations).__name__}"
            ) from None
    populations = list(populations)
    if not populations:
        raise ValueError(f"{owner}: populations is empty; give at least one SpikeTrainSet")
    for k, pop in enumerate(populations):
        if not (hasattr(pop, "spike_times") and hasattr(pop, "duration")):
            raise ValueError(
                f"{owner}: population {k} is a {type(pop).__name__}, not a SpikeTrainSet (spike_times, duration)"
            )
        if len(pop.spike_times) == 0:
            raise ValueError(f"{owner}: population {k} has no units")
        duration = float(pop.duration)
        if not (math.isfinite(duration) and duration > 0):
            raise ValueError(f"{owner}: population {k} has a non-positive duration ({duration!r} s)")
    return populations


def check_int(owner: str, name: str, value: Any, low: int) -> int:
    """``value`` as an int ``>= low`` (bools rejected)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{owner}: {name} must be an integer >= {low}, got {value!r}")
    return int(value)


def check_float(owner: str, name: str, value: Any, low: float, high: float = math.inf, low_open: bool = False) -> float:
    """``value`` as a finite float in ``[low, high]`` (``(low, high]`` with ``low_open``)."""
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    if ok:
        value = float(value)
        ok = math.isfinite(value) and (value > low if low_open else value >= low) and value <= high
    if not ok:
        bracket = "(" if low_open else "["
        raise ValueError(f"{owner}: {name} must be a finite number in {bracket}{low}, {high}], got {value!r}")
    return value


def check_fitted(estimator: Any, attribute: str) -> None:
    """Raise ``ValueError`` unless ``estimator`` has the fitted ``attribute``."""
    if not hasattr(estimator, attribute):
        raise ValueError(f"this {type(estimator).__name__} is not fitted yet; call fit(populations, ...) first")


@contextlib.contextmanager
def torch_scope(seed: int, num_threads: int | None) -> Iterator[torch.Generator]:
    """Run a block with ``num_threads`` torch threads and torch's global RNG seeded by ``seed``.

    The global RNG state (used by parameter initialisation and dropout) and the thread count are restored
    afterwards, so the caller's random streams are not disturbed. Yields a ``torch.Generator`` seeded with
    ``seed + 1`` for explicit sampling.
    """
    from ...inference import torch_threads

    with torch.random.fork_rng(devices=[]), torch_threads(num_threads):
        torch.manual_seed(seed)
        yield torch.Generator().manual_seed(seed + 1)


def progress(total: int, enabled: bool, desc: str):
    """A tqdm bar over ``total`` steps, or a no-op stand-in with the same ``update``/``set_postfix``/``close``."""
    if enabled:
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, unit="step")
    return _NoProgress()


class _NoProgress:
    def update(self, n: int = 1) -> None:
        pass

    def set_postfix(self, *args, **kwargs) -> None:
        pass

    def close(self) -> None:
        pass
