"""The work of ``neuronid pretrain`` and ``neuronid benchmark``, called by :func:`spikeinterface_neuronid.cli.main`.

:func:`pretrain_command` gathers the corpus (simulated animals or NWB files and analyzers, read lazily), pretrains
or fine-tunes a model with :func:`~spikeinterface_neuronid.training.pretrain` and writes it with its model card and
``.model_info.json``; :func:`benchmark_command` runs :func:`~spikeinterface_neuronid.benchmark.run_benchmark`.
Both report errors in the command line's terms and return the exit code. ``neuronid demo`` runs
:func:`spikeinterface_neuronid.demo.demo_command`, ``annotate`` and ``label`` run
:func:`spikeinterface_neuronid.nwb.annotate.annotate_command` and :func:`spikeinterface_neuronid.phy.label_command`.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

__all__ = ["input_corpus", "pretrain_command", "benchmark_command"]


def input_corpus(inputs: Sequence[str | Path], cache_sessions: int = 4):
    """The lazy corpus of ``neuronid pretrain``'s inputs (NWB files, folders of them, analyzer folders).

    Only metadata is read here; a source that fails later names itself in the error.

    Parameters
    ----------
    inputs : sequence of str | Path
        NWB files (``.nwb``, ``.nwb.zarr``), folders searched recursively for them, and SortingAnalyzer folders.
    cache_sessions : int, default: 4
        Sessions held in memory at once.

    Returns
    -------
    spikeinterface_neuronid.streaming.LazyCorpus
        The corpus.

    Raises
    ------
    FileNotFoundError, spikeinterface_neuronid.streaming.CorpusSourceError
        When an input is missing or not a readable session.
    """
    from .streaming import LazyCorpus, expand_sources

    return LazyCorpus(expand_sources(inputs), cache_size=cache_sessions)


def pretrain_command(
    output: str | Path,
    *,
    command: str,
    inputs: Sequence[str | Path] = (),
    corpus=None,
    simulated: str | None = None,
    animals: Sequence[int] = tuple(range(16)),
    sessions: int = 2,
    num_neurons: int | None = None,
    duration_s: float | None = None,
    method: str = "nuclr",
    config: str = "cpu",
    init: str | None = None,
    cache_sessions: int = 4,
    session_block: int | None = None,
    session_block_steps: int = 100,
    num_workers: int = 0,
    steps: int = 2000,
    batch_size: int = 8,
    lr: float = 1e-3,
    seed: int = 0,
    checkpoint: str | Path | None = None,
    checkpoint_every: int = 100,
    resume: bool = False,
    device: str = "cpu",
    name: str = "neuronid-model",
) -> int:
    """Run ``neuronid pretrain``: pretrain (or fine-tune) a model and write it with its card and model info.

    Parameters
    ----------
    output : str | Path
        Model file to write (``.safetensors``); the model card (``.md``) and ``.model_info.json`` go next to it.
    command : str
        The command line, stored in the model's provenance.
    inputs : sequence of str | Path, default: ()
        Sources of the corpus when ``simulated`` is None, see :func:`input_corpus`.
    corpus : LazyCorpus | None, default: None
        The corpus of ``inputs`` when already built; None builds it from ``inputs``.
    simulated : str | None, default: None
        Pretrain on simulated animals of this preset instead of ``inputs``.
    animals : sequence of int, default: 0-15
        Simulated animal seeds.
    sessions : int, default: 2
        Simulated sessions per animal.
    num_neurons : int | None, default: None
        Simulated neurons per session; None keeps the preset's.
    duration_s : float | None, default: None
        Simulated seconds per session; None keeps the preset's.
    method : str, default: "nuclr"
        Self-supervised method.
    config : str, default: "cpu"
        Config preset of the method (a classmethod of its ``Config``); ignored with ``init``.
    init : str | None, default: None
        Model to fine-tune from (``"default"`` or a path); None starts from random weights.
    cache_sessions : int, default: 4
        Input sessions held in memory at once.
    session_block : int | None, default: None
        Sessions per block of session-blocked sampling (``pretrain(session_block=...)``); 0 turns it off;
        None: ``cache_sessions`` for ``inputs`` with more items than that, else off.
    session_block_steps : int, default: 100
        Steps per session block.
    num_workers : int, default: 0
        DataLoader worker processes drawing the batches (``pretrain(num_workers=...)``).
    steps : int, default: 2000
        Optimiser steps.
    batch_size : int, default: 8
        View pairs per step, per process under torchrun.
    lr : float, default: 1e-3
        Peak learning rate of AdamW.
    seed : int, default: 0
        Seed of initialisation, sampling and dropout.
    checkpoint : str | Path | None, default: None
        Where to write checkpoints; None writes none.
    checkpoint_every : int, default: 100
        Steps between checkpoints, with ``checkpoint``.
    resume : bool, default: False
        Continue the run from ``checkpoint``'s training state.
    device : str, default: "cpu"
        Torch device.
    name : str, default: "neuronid-model"
        Model name stored in the file.

    Returns
    -------
    int
        Exit code: 0, or 2 when the training state of ``resume`` does not fit the run (the reason is printed).
    """
    from . import training
    from .models import resolve_model

    provenance: dict = {}
    if simulated:
        from .simulation import simulate_dataset

        sizes = {k: v for k, v in dict(num_neurons=num_neurons, duration_s=duration_s).items() if v}
        sessions_data = simulate_dataset(
            simulated, animals=animals, sessions_per_animal=sessions, progress_bar=True, **sizes
        )
        from .data import SpikeTrainSet

        corpus = [SpikeTrainSet(s.spike_times, s.duration) for s in sessions_data]
        provenance = dict(
            data="simulated Izhikevich populations (spikeinterface_neuronid.simulation)",
            preset=simulated,
            animals=list(animals),
            sessions_per_animal=sessions,
            num_sessions=len(corpus),
            num_units=int(sum(s.num_units for s in corpus)),
        )
    else:
        corpus = corpus if corpus is not None else input_corpus(inputs, cache_sessions)
        kinds = set(corpus.kinds)
        data = {frozenset({"analyzer"}): "sorting analyzers", frozenset({"nwb"}): "NWB files"}.get(
            frozenset(kinds), "NWB files and sorting analyzers"
        )
        provenance = dict(data=data, sources=[str(p) for p in corpus.sources], num_sessions=len(corpus))
    provenance["command"] = command
    if session_block is None:
        session_block = cache_sessions if not simulated and len(corpus) > cache_sessions else 0
    init_bundle = resolve_model(init) if init else None
    method_config = None
    if init_bundle is None:
        from .methods import get_method

        method_config = getattr(get_method(method).Config, config)()
    from ._train_state import TrainingStateError

    try:
        bundle, history = training.pretrain(
            corpus,
            config=method_config,
            method=method,
            steps=steps,
            batch_size=batch_size,
            lr=lr,
            seed=seed,
            init=init_bundle,
            device=device,
            name=name,
            provenance=provenance,
            session_block=session_block or None,
            session_block_steps=session_block_steps,
            num_workers=num_workers,
            checkpoint_every=checkpoint_every if checkpoint else None,
            checkpoint_path=checkpoint,
            resume_from=checkpoint if resume else None,
        )
    except TrainingStateError as err:
        print(f"neuronid pretrain: error: --resume: {err}", file=sys.stderr)
        return 2
    if history.get("rank", 0) != 0:
        return 0  # under torchrun every rank holds the same weights; rank 0 writes the file
    path = bundle.save(output)
    from ._io import atomic_path
    from .model_card import model_card, save_model_info

    with atomic_path(path.with_suffix(".md")) as tmp:
        tmp.write_text(model_card(bundle))
    save_model_info(bundle, path)
    losses = np.asarray(history["loss"])
    k = max(1, len(losses) // 10)
    print(f"loss {losses[:k].mean():.3f} -> {losses[-k:].mean():.3f}; wrote {path} (sha256 {bundle.sha256[:12]}…)")
    return 0


#: The options of ``neuronid benchmark`` that set each field of the benchmark settings.
_BENCHMARK_OPTIONS = dict(
    presets="--presets", transductive_seeds="--seeds", test_animals="--test-animals", methods="--methods"
)


def _cli_terms(message: str, names: dict[str, str]) -> str:
    """``message`` with Python parameter names replaced by the command-line options that set them."""
    for python_name, option in names.items():
        message = re.sub(rf"\b{re.escape(python_name)}\b", option, message)
    return message


def benchmark_command(
    output: str | Path,
    *,
    command: str,
    quick: bool = False,
    presets: Sequence[str] | None = None,
    seeds: Sequence[int] | None = None,
    test_animals: Sequence[int] | None = None,
    methods: Sequence[str] | None = None,
    progress_bar: bool = True,
) -> int:
    """Run ``neuronid benchmark``: :func:`~spikeinterface_neuronid.benchmark.run_benchmark` with these settings.

    Parameters
    ----------
    output : str | Path
        Output folder.
    command : str
        The command line, stored with the results.
    quick : bool, default: False
        Start from the quick settings instead of the full ones.
    presets : sequence of str | None, default: None
        Simulator presets; None keeps the settings'.
    seeds : sequence of int | None, default: None
        Seeds of the transductive unit splits; None keeps the settings'.
    test_animals : sequence of int | None, default: None
        Animals held out in turn; None keeps the settings'.
    methods : sequence of str | None, default: None
        Subset of the table's methods; None runs all of them.
    progress_bar : bool, default: True
        Show progress bars.

    Returns
    -------
    int
        Exit code: 0; 2 for settings that do not fit (the reason is printed in the options' terms); 1 when the
        run fails.
    """
    from .benchmark import run_benchmark, settings_from_args

    try:
        settings = settings_from_args(
            quick,
            presets=tuple(presets) if presets else None,
            transductive_seeds=tuple(seeds) if seeds else None,
            test_animals=tuple(test_animals) if test_animals else None,
            methods=tuple(methods) if methods else None,
        )
    except ValueError as err:
        print(f"neuronid benchmark: {_cli_terms(str(err), _BENCHMARK_OPTIONS)}", file=sys.stderr)
        return 2
    try:
        run_benchmark(output, settings, command=command, progress_bar=progress_bar)
    except (RuntimeError, FileNotFoundError) as err:
        print(f"neuronid benchmark: {err}", file=sys.stderr)
        return 1
    return 0
