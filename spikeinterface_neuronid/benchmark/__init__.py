"""Benchmark suite: our models against the baselines under NuCLR's three protocols, with intervals.

``neuronid benchmark [--quick]`` (or :func:`run_benchmark`) simulates the animals of each preset (``easy``,
``hard``, ``varied``; one session per animal), embeds their units with every method and scores a linear
probe (:func:`~spikeinterface_neuronid.evaluation.linear_probe`: StandardScaler + class-balanced logistic
regression) on two tasks, cell type and brain region. Animals are the unit of generalisation.

The package is laid out by stage; each module imports only those listed before it:

:mod:`~spikeinterface_neuronid.benchmark.settings`
    :class:`BenchmarkSettings`, its presets :data:`FULL` and :data:`QUICK`, the row names.
:mod:`~spikeinterface_neuronid.benchmark.protocol`
    The three protocols: splits, pooled scores and their intervals, the protocol checks, the verdicts.
:mod:`~spikeinterface_neuronid.benchmark.adapters`
    Our models as estimators with the baselines' interface; the rows of a run (:func:`method_specs`).
:mod:`~spikeinterface_neuronid.benchmark.engine`
    The run loop: every row's fits, embeddings and probes under each protocol, with their ledger.
:mod:`~spikeinterface_neuronid.benchmark.report`
    ``results.md``, the excerpt the README quotes (:func:`readme_excerpt`), the figures.
:mod:`~spikeinterface_neuronid.benchmark.run`
    :func:`run_benchmark`, which writes ``results.json`` and its companions.
:mod:`~spikeinterface_neuronid.benchmark.rerun`
    :func:`rerun_benchmark`, which re-runs some rows and merges them into a previous run.

The baselines are in :mod:`~spikeinterface_neuronid.benchmark.baselines`.
"""

from __future__ import annotations

from . import settings as _settings
from .adapters import MethodSpec, PretrainedModel, SelfSupervisedEncoder, check_model_provenance, method_specs
from .protocol import check_protocol, hierarchical_bootstrap, pooled_scores, verdicts
from .report import readme_excerpt
from .rerun import load_previous_run, rerun_benchmark
from .run import run_benchmark
from .settings import (
    ABLATION_FULL,
    ABLATION_NO_RELATIONAL,
    PROTOCOLS,
    TASKS,
    BenchmarkSettings,
    is_baseline,
    settings_from_args,
)

# bound here rather than imported: autodoc reads the doc comments of a module's own assignments only
#: The product row: our shipped default model.
PRODUCT = _settings.PRODUCT
#: FULL's fixed model rows: (row name, model file relative to the repository root, description).
ABLATION_MODEL_ROWS: tuple[tuple[str, str, str], ...] = _settings.ABLATION_MODEL_ROWS
#: The committed full run: 3 presets x 8 animals, leave-one-animal-out (see the README for its measured time).
FULL = _settings.FULL
#: Smoke test of the protocol wiring (CI): every row type and protocol on tiny data, under 3 min on 2 cores.
#: Its one fixed model row loads the shipped model's file, so it needs no ablation files.
QUICK = _settings.QUICK

__all__ = [
    "BenchmarkSettings",
    "QUICK",
    "FULL",
    "settings_from_args",
    "PROTOCOLS",
    "TASKS",
    "PRODUCT",
    "ABLATION_FULL",
    "ABLATION_NO_RELATIONAL",
    "ABLATION_MODEL_ROWS",
    "SelfSupervisedEncoder",
    "PretrainedModel",
    "MethodSpec",
    "method_specs",
    "is_baseline",
    "check_protocol",
    "check_model_provenance",
    "hierarchical_bootstrap",
    "pooled_scores",
    "verdicts",
    "run_benchmark",
    "rerun_benchmark",
    "load_previous_run",
    "readme_excerpt",
]
