"""Fine-tuning: :func:`pretrain` continued from a model, on new populations or on those about to be embedded.

Both functions are also importable from :mod:`spikeinterface_neuronid.training`, where they were defined
before.
"""

from __future__ import annotations

from typing import Any, Sequence

from .bundle import ModelBundle
from .data import SpikeTrainSet

__all__ = ["fine_tune", "fine_tune_transductive"]


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
    from .training import pretrain

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
