"""Benchmark suite: our models against the baselines under NuCLR's three protocols, with intervals.

``neuronid benchmark [--quick]`` (or :func:`run_benchmark`) simulates the animals of each preset (``easy``,
``hard``, ``varied``; one session per animal), embeds their units with every method and scores a linear
probe (:func:`~spikeinterface_neuronid.evaluation.linear_probe`: StandardScaler + class-balanced logistic
regression) on two tasks, cell type and brain region. Animals are the unit of generalisation.

``inductive_zero_shot`` (IZS, the headline)
    Leave one animal out: every animal is the test animal once. The probe (``C = 1``) is trained on the
    other animals' units and predicts the test animal's units. Methods that learn from data (NeurPIR, NEMO
    and NeuPRINT self-supervised, LOLCAT supervised) are refitted for every test animal without it. A
    secondary column tunes ``C`` on a validation animal (the one before the test animal) and refits.
``transductive_zero_shot`` (TZS)
    The same leave-one-animal-out probes, but self-supervised methods are fitted once per preset on every
    animal (every animal's activity is seen; labels never). LOLCAT reads labelled units only, so a TZS fit
    (test animal unlabelled) equals its IZS fit, which is reused.
``transductive`` (TD)
    The transductively fitted embedding, probed on a stratified random split of the units (train and
    test units may share an animal), one split per seed of ``transductive_seeds``.

Our shipped default model (the product row) embeds the animals as it is for IZS; for TD and TZS it is
fine-tuned self-supervised on all animals of the preset
(:func:`~spikeinterface_neuronid.training.fine_tune_transductive`, ``transductive_steps`` steps). Methods
that learn nothing (handcrafted features, fixed model files such as the ablations, random weights) give
the same embedding in every protocol.

**Intervals.** IZS macro-F1 is computed on the predictions pooled over all test animals (each animal
predicted by its own leave-one-out probe). A paired hierarchical bootstrap (:func:`hierarchical_bootstrap`:
resample animals with replacement, then units within each resampled animal) gives a 95 % percentile
interval for every method and for the difference of the product row to every baseline (every row whose
name does not start with "ours"); the mean ± std over test animals is reported as well. The verdict
(:func:`verdicts`) compares the product row with the best baseline per preset and task.

Every fit is recorded in a ledger (which animals its corpus held, whether it was given labels and of which
units), and :func:`check_protocol` verifies from it that no held-out animal entered an inductive fit, that
self-supervised fits never received labels and that no test unit's label reached a supervised fit or a
probe. Before anything runs, the provenance of every fixed model file is checked: a model pretrained on
one of the benchmark's animals (same preset, animal id and simulation seed) is refused. Time and peak
memory of every fit and embedding are measured in the same run.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import textwrap
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..data import SpikeTrainSet
from ..evaluation import linear_probe

__all__ = [
    "BenchmarkSettings",
    "QUICK",
    "FULL",
    "PROTOCOLS",
    "TASKS",
    "PRODUCT",
    "ABLATION_MODEL_ROWS",
    "SelfSupervisedEncoder",
    "PretrainedModel",
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

PROTOCOLS = ("transductive", "transductive_zero_shot", "inductive_zero_shot")
TASKS = ("cell_type", "brain_region")
#: The product row: our shipped default model.
PRODUCT = "ours, shipped default model"
ABLATION_FULL = "ours, ablation budget: full design"
ABLATION_NO_RELATIONAL = "ours, no relational channel"
#: The command that trains the ablation model files of :data:`ABLATION_MODEL_ROWS`.
ABLATION_COMMAND = "python benchmarks/train_default_model.py --ablations"
#: FULL's fixed model rows: (row name, model file relative to the repository root, description).
ABLATION_MODEL_ROWS: tuple[tuple[str, str, str], ...] = (
    (
        ABLATION_FULL,
        "benchmarks/models/ablation-full.safetensors",
        "the full design (relational and fine-timescale channels, spatial blocks) at the ablations' budget",
    ),
    (
        ABLATION_NO_RELATIONAL,
        "benchmarks/models/ablation-no-relational.safetensors",
        "the same budget without the relational (pairwise) channel",
    ),
    (
        "ours, no spatial blocks",
        "benchmarks/models/ablation-no-spatial.safetensors",
        "the same budget, every block temporal-only: no population context",
    ),
    (
        "ours, no fine-timescale channel",
        "benchmarks/models/ablation-no-fine.safetensors",
        "the same budget without the 1 ms single-unit channel",
    ),
)
_REPO_ROOT = Path(__file__).resolve().parents[1]
_KINDS = ("fixed", "pretrained", "ssl", "supervised")


def is_baseline(name: str) -> bool:
    """Whether a row is a baseline: every row whose name does not start with "ours"."""
    return not name.startswith("ours")


@dataclass(frozen=True)
class BenchmarkSettings:
    """Everything that sets the size of a benchmark run.

    Parameters
    ----------
    presets : tuple of str, default: ("easy", "hard", "varied")
        Simulator presets, each a separate dataset.
    num_animals : int, default: 8
        Simulated animals per preset (ids ``0 .. num_animals - 1``; at least 3: test, validation and
        probe-training animals).
    num_neurons : int, default: 150
        Simulated neurons per animal (one session each).
    duration_s : float, default: 240.0
        Recorded seconds per session.
    test_animals : tuple of int | None, default: None
        Animals that are held out in turn (None: every animal, i.e. leave-one-animal-out). A subset gives a
        cheaper, partial run (e.g. to time the pieces).
    transductive_seeds : tuple of int, default: (0, 1, 2)
        One stratified random unit split of the transductive protocol per seed.
    seed : int, default: 0
        Seed of every model fit and of the inference engine.
    ssl_steps : int, default: 200
        Training steps of the self-supervised models trained in the benchmark (NeurPIR).
    transductive_steps : int, default: 200
        Steps of the product row's transductive fine-tuning on all animals of a preset (TD and TZS).
    batch_size : int, default: 8
        View pairs per step (NeurPIR).
    max_units : int, default: 48
        Units per training view (NeurPIR).
    baseline_steps : dict, default: {} (FULL: LOLCAT 200, NEMO 200, NeuPRINT 300)
        Optional ``steps`` overrides for LOLCAT, NEMO and NeuPRINT (keys ``"lolcat"``, ``"nemo"``,
        ``"neuprint"``; missing keys keep each baseline's default).
    model_rows : tuple of (str, str, str), default: :data:`ABLATION_MODEL_ROWS`
        Fixed model rows: (row name, model file, description). The file is relative to the repository root
        or absolute, or ``"default"`` for the shipped model's file. A missing file is an error.
    methods : tuple of str | None, default: None
        Subset of the row names of :func:`method_specs` (None: all).
    label_fractions : tuple of float, default: (0.01, 0.05, 0.1, 0.25, 0.5, 1.0)
        Fractions of probe-training units for the product row's label-efficiency curve (IZS).
    c_grid : tuple of float, default: (0.01, 0.1, 1.0, 10.0)
        Candidate probe ``C`` values of the "C tuned" column.
    transductive_test_fraction : float, default: 0.3
        Fraction of units held out for testing in the transductive protocol.
    bootstrap_resamples : int, default: 2000
        Resamples of the hierarchical bootstrap.
    bootstrap_seed : int, default: 0
        Seed of the bootstrap (the same resamples for every method: the intervals of differences are paired).
    target_margin : float, default: 0.03
        The product row must beat the best baseline by this much (with the interval above 0).
    ablation_margin : float, default: 0.10
        The region macro-F1 on ``hard`` the relational channel must be worth.
    waveforms : bool, default: True
        Attach each unit's simulated peak-channel waveform to its population (the templates NEMO is given, as
        a ``templates`` extension would give them), for models with a waveform channel.
    num_threads : int, default: 2
        Torch CPU threads.
    simulation_seed : int, default: 0
        Simulator seed.
    """

    presets: tuple = ("easy", "hard", "varied")
    num_animals: int = 8
    num_neurons: int = 150
    duration_s: float = 240.0
    test_animals: tuple | None = None
    transductive_seeds: tuple = (0, 1, 2)
    seed: int = 0
    ssl_steps: int = 200
    transductive_steps: int = 200
    batch_size: int = 8
    max_units: int = 48
    baseline_steps: dict = field(default_factory=dict)
    model_rows: tuple = ABLATION_MODEL_ROWS
    methods: tuple | None = None
    label_fractions: tuple = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0)
    c_grid: tuple = (0.01, 0.1, 1.0, 10.0)
    transductive_test_fraction: float = 0.3
    bootstrap_resamples: int = 2000
    bootstrap_seed: int = 0
    target_margin: float = 0.03
    ablation_margin: float = 0.10
    waveforms: bool = True
    num_threads: int = 2
    simulation_seed: int = 0

    def __post_init__(self):
        if not self.presets:
            raise ValueError("presets must name at least one simulator preset")
        if self.num_animals < 3:
            raise ValueError(f"num_animals must be >= 3 (test, validation, probe training), got {self.num_animals}")
        if self.test_animals is not None:
            tests = list(self.test_animals)
            if not tests or len(set(tests)) != len(tests) or any(not 0 <= int(a) < self.num_animals for a in tests):
                raise ValueError(
                    f"test_animals must be distinct animal indices in [0, num_animals - 1 = {self.num_animals - 1}], "
                    f"got {self.test_animals!r}"
                )
        if not self.transductive_seeds:
            raise ValueError("transductive_seeds must hold at least one seed")
        if self.ssl_steps < 1 or self.transductive_steps < 1:
            raise ValueError(
                f"ssl_steps and transductive_steps must be >= 1, got {self.ssl_steps} and {self.transductive_steps}"
            )
        if not 0 < self.transductive_test_fraction < 1:
            raise ValueError(f"transductive_test_fraction must be in (0, 1), got {self.transductive_test_fraction}")
        if any(not 0 < f <= 1 for f in self.label_fractions):
            raise ValueError(f"label_fractions must lie in (0, 1], got {self.label_fractions!r}")
        if not self.c_grid or any(not c > 0 for c in self.c_grid):
            raise ValueError(f"c_grid must hold positive values, got {self.c_grid!r}")
        if self.bootstrap_resamples < 1:
            raise ValueError(f"bootstrap_resamples must be >= 1, got {self.bootstrap_resamples}")
        for row in self.model_rows:
            if len(row) != 3 or not all(isinstance(v, str) and v for v in row):
                raise ValueError(f"model_rows entries must be (name, model file, description) strings, got {row!r}")
        names = [row[0] for row in self.model_rows]
        if len(set(names)) != len(names) or PRODUCT in names:
            raise ValueError(f"model_rows names must be distinct and differ from {PRODUCT!r}, got {names}")

    @property
    def tested_animals(self) -> list[int]:
        """The animals held out in turn (all of them unless ``test_animals`` says otherwise)."""
        if self.test_animals is None:
            return list(range(self.num_animals))
        return [int(a) for a in self.test_animals]


#: The committed full run: 3 presets x 8 animals, leave-one-animal-out (see the README for its measured time).
FULL = BenchmarkSettings(baseline_steps=dict(lolcat=200, nemo=200, neuprint=300))

#: Smoke test of the protocol wiring (CI): every row type and protocol on tiny data, under 3 min on 2 cores.
#: Its one fixed model row loads the shipped model's file, so it needs no ablation files.
QUICK = BenchmarkSettings(
    presets=("hard",),
    num_animals=3,
    num_neurons=40,
    duration_s=60.0,
    transductive_seeds=(0,),
    ssl_steps=4,
    transductive_steps=2,
    batch_size=4,
    max_units=16,
    baseline_steps=dict(lolcat=5, nemo=5, neuprint=5),
    model_rows=(("ours, model file (smoke test)", "default", "the shipped model loaded as a fixed model file"),),
    label_fractions=(0.25, 1.0),
    c_grid=(0.1, 1.0),
    bootstrap_resamples=200,
)


# ---------------------------------------------------------------------------------------------------------------------
# our models as estimators


class SelfSupervisedEncoder:
    """A registered self-supervised method (NuCLR, NeurPIR) with the baseline estimator interface.

    Parameters
    ----------
    method : str, default: "nuclr"
        Registered method name.
    config : method config | None, default: None
        None uses the method's ``Config.cpu()``.
    steps : int, default: 300
        Training steps; 0 keeps the random initial weights (the "does training matter?" control).
    batch_size, max_units, lr : int, int, float
        Passed to :func:`~spikeinterface_neuronid.training.pretrain`.
    seed : int, default: 0
        Seed of initialisation and training.
    num_threads : int | None, default: None
        Torch CPU threads.

    Attributes
    ----------
    bundle_ : ModelBundle
        The trained (or randomly initialised) model.
    """

    supervised = False
    needs_templates = False

    def __init__(
        self,
        method: str = "nuclr",
        config: Any = None,
        steps: int = 300,
        batch_size: int = 8,
        max_units: int = 48,
        lr: float = 1e-3,
        seed: int = 0,
        num_threads: int | None = None,
    ):
        self.method = method
        self.config = config
        self.steps = steps
        self.batch_size = batch_size
        self.max_units = max_units
        self.lr = lr
        self.seed = seed
        self.num_threads = num_threads

    def fit(self, populations: Sequence[SpikeTrainSet], labels=None, templates=None, init=None):
        """Train on the populations (self-supervised; ``labels`` and ``templates`` are not read).

        ``init`` (a fitted :class:`SelfSupervisedEncoder`) continues its training instead of starting afresh.
        """
        import torch

        from ..bundle import ModelBundle
        from ..methods import get_method
        from ..training import pretrain

        module = get_method(self.method)
        config = self.config if self.config is not None else module.Config.cpu()
        if self.steps == 0:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(self.seed))
                encoder, projector = module.build_encoder(config), module.build_projector(config)
            self.bundle_ = ModelBundle.from_modules(self.method, config, encoder, projector, name="random-init")
            return self
        self.bundle_, self.history_ = pretrain(
            list(populations),
            config=None if init is not None else config,
            method=self.method,
            steps=self.steps,
            batch_size=self.batch_size,
            max_units=self.max_units,
            lr=self.lr,
            warmup_steps=max(1, min(50, self.steps // 10)),
            seed=self.seed,
            init=None if init is None else init.bundle_,
            num_threads=self.num_threads,
            progress_bar=False,
        )
        return self

    def transform(self, populations: Sequence[SpikeTrainSet], templates=None) -> list[np.ndarray]:
        """One ``(num_units, dim)`` embedding array per population."""
        from ..inference import embed_populations

        if not hasattr(self, "bundle_"):
            raise ValueError("call fit() before transform()")
        return [
            embed_populations(self.bundle_, [pop], seed=self.seed, num_threads=self.num_threads).embedding.astype(
                np.float64
            )
            for pop in populations
        ]


class PretrainedModel:
    """A model file used as it is, or fine-tuned transductively on the populations it is given.

    Parameters
    ----------
    model : str, default: "default"
        ``"default"`` (the shipped model) or a path to a model file.
    seed : int, default: 0
        Seed of the inference engine's unit grouping and of the fine-tuning.
    num_threads : int | None, default: None
        Torch CPU threads.
    transductive_steps : int, default: 0
        0: ``fit`` only loads the model (nothing is learned; a fixed-embedding method). Otherwise ``fit``
        fine-tunes it self-supervised on its populations for this many steps
        (:func:`~spikeinterface_neuronid.training.fine_tune_transductive`; no labels are read).

    Attributes
    ----------
    bundle_ : ModelBundle
        The loaded (or fine-tuned) model.
    """

    supervised = False
    needs_templates = False

    def __init__(
        self, model: str = "default", seed: int = 0, num_threads: int | None = None, transductive_steps: int = 0
    ):
        self.model = model
        self.seed = seed
        self.num_threads = num_threads
        self.transductive_steps = transductive_steps

    def fit(self, populations: Sequence[SpikeTrainSet], labels=None, templates=None) -> "PretrainedModel":
        """Load the model; with ``transductive_steps > 0`` fine-tune it on ``populations`` (no labels)."""
        from ..inference import resolve_model

        bundle = resolve_model(self.model)
        if int(self.transductive_steps) > 0:
            from ..training import fine_tune_transductive

            bundle = fine_tune_transductive(
                bundle, list(populations), int(self.transductive_steps), seed=self.seed, num_threads=self.num_threads
            )
        self.bundle_ = bundle
        return self

    transform = SelfSupervisedEncoder.transform


# ---------------------------------------------------------------------------------------------------------------------
# method table


@dataclass(frozen=True)
class MethodSpec:
    """How the benchmark builds and treats one row.

    ``kind`` is ``"fixed"`` (learns nothing from the data: one embedding serves every protocol),
    ``"pretrained"`` (a fixed model for IZS that is fine-tuned transductively on all animals for TD and TZS:
    the product row), ``"ssl"`` (self-supervised: refitted without each test animal for IZS, fitted once on
    all animals for TD and TZS) or ``"supervised"`` (fitted on the probe-training labels of each task and
    split). ``build(seed)`` returns a fresh estimator.
    """

    name: str
    kind: str
    build: Callable[[int], Any]
    description: str = ""
    model_file: str | None = None  # fixed model rows: the resolved file, for the provenance check

    def __post_init__(self):
        if self.kind not in _KINDS:
            raise ValueError(f"MethodSpec kind must be one of {_KINDS}, got {self.kind!r}")


def _resolve_model_file(name: str, path: str) -> str:
    """``"default"`` or the absolute path of a model row's file (a missing file: an error naming its command)."""
    if path == "default":
        return path
    p = Path(path).expanduser()
    if not p.is_absolute():
        p = _REPO_ROOT / p
    if not p.is_file():
        raise FileNotFoundError(
            f"model file of benchmark row {name!r} not found: {p}. Make the ablation models with "
            f"`{ABLATION_COMMAND}`, or leave the row out (settings.model_rows / methods)"
        )
    return str(p)


def method_specs(settings: BenchmarkSettings) -> list[MethodSpec]:
    """The rows of a run, in table order.

    Raises
    ------
    ValueError
        If ``settings.methods`` names an unknown row.
    FileNotFoundError
        If the model file of a selected ``model_rows`` entry does not exist.
    """
    from .baselines.features import (
        ConcatenatedFeatures,
        PairwiseCorrelationFeatures,
        PopulationCouplingFeatures,
        SingleUnitFeatures,
        SpikeTriggeredPopulationFeatures,
    )
    from ..inference import resolve_model

    s = settings
    threads = s.num_threads
    default = resolve_model("default")
    bin_s = float(getattr(default.config, "bin_s", 0.02))

    def fixed_model(path):
        return lambda seed: PretrainedModel(path, seed, threads)

    specs = [
        MethodSpec(
            PRODUCT,
            "pretrained",
            lambda seed: PretrainedModel("default", seed, threads),
            "the shipped model as it is (IZS); fine-tuned transductively on all animals for TD and TZS",
            model_file="default",
        ),
    ]
    specs += [
        MethodSpec(name, "fixed", fixed_model(path), description, model_file=path)
        for name, path, description in s.model_rows
    ]
    specs.append(
        MethodSpec(
            "ours, random weights",
            "fixed",
            lambda seed: SelfSupervisedEncoder(default.method, default.config, steps=0, seed=seed, num_threads=threads),
            "untrained encoder with the shipped model's config",
        )
    )
    from ..methods.neurpir import NeurPIRConfig

    specs.append(
        MethodSpec(
            "NeurPIR",
            "ssl",
            lambda seed: SelfSupervisedEncoder(
                "neurpir",
                NeurPIRConfig.cpu(num_covariates=2),
                steps=s.ssl_steps,
                batch_size=s.batch_size,
                max_units=s.max_units,
                seed=seed,
                num_threads=threads,
            ),
            "VICReg, segment-length augmentation, stimulus covariates",
        )
    )

    def su1():
        return SingleUnitFeatures(0.001)

    specs += [
        MethodSpec(
            "single-unit features 1 ms",
            "fixed",
            lambda seed: su1(),
            "rate, CV, CV2, burst fraction, log-ISI histogram, ACG (SpikeInterface)",
        ),
        MethodSpec(
            f"single-unit features {bin_s * 1000:g} ms",
            "fixed",
            lambda seed: SingleUnitFeatures(bin_s),
            "the same at the shipped model's bin size",
        ),
        MethodSpec(
            "population coupling",
            "fixed",
            lambda seed: PopulationCouplingFeatures(),
            "correlation with the summed activity of the other units",
        ),
        MethodSpec(
            "pairwise correlations",
            "fixed",
            lambda seed: PairwiseCorrelationFeatures(),
            "mean / top-10 / top-30 over partners of max |xcorr| (±300 ms), zero-lag |corr|, 2-16 Hz coherence",
        ),
        MethodSpec(
            "single-unit 1 ms + pairwise",
            "fixed",
            lambda seed: ConcatenatedFeatures([su1(), PairwiseCorrelationFeatures()]),
            "the 1 ms single-unit features and the pairwise correlations side by side",
        ),
        MethodSpec(
            "single-unit 1 ms + pairwise + spike-triggered population",
            "fixed",
            lambda seed: ConcatenatedFeatures(
                [su1(), PairwiseCorrelationFeatures(), SpikeTriggeredPopulationFeatures()]
            ),
            "and the others' rate at ±2-20 ms around each spike, with its post-minus-pre asymmetry",
        ),
    ]
    from .baselines.lolcat import LOLCAT
    from .baselines.nemo import NEMO
    from .baselines.neuprint import NeuPRINT

    for key, cls, kind, description in (
        ("lolcat", LOLCAT, "supervised", "ISI-histogram snippet sets + attention pooling, supervised"),
        ("nemo", NEMO, "ssl", "CLIP between log 3-D ACG and peak-channel template"),
        ("neuprint", NeuPRINT, "ssl", "per-unit vector + causal transformer, test-time optimisation"),
    ):
        overrides = {"steps": s.baseline_steps[key]} if key in s.baseline_steps else {}
        specs.append(
            MethodSpec(
                cls.__name__,
                kind,
                (lambda c, o: lambda seed: c(seed=seed, num_threads=threads, **o))(cls, overrides),
                description,
            )
        )
    names = [spec.name for spec in specs]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise ValueError(f"model_rows names clash with built-in rows: {duplicated}")
    if s.methods is not None:
        unknown = sorted(set(s.methods) - set(names))
        if unknown:
            raise ValueError(f"unknown benchmark methods {unknown}; available: {names}")
        specs = [spec for spec in specs if spec.name in s.methods]
    # only now: the missing model file of a row that was not selected is no error
    resolved = []
    for spec in specs:
        if spec.kind == "fixed" and spec.model_file is not None:
            path = _resolve_model_file(spec.name, spec.model_file)
            spec = replace(spec, build=fixed_model(path), model_file=path)
        resolved.append(spec)
    return resolved


def check_model_provenance(specs: Sequence[MethodSpec], settings: BenchmarkSettings) -> dict[str, list]:
    """Benchmark animals each model file was pretrained on, from its provenance.

    A model whose provenance lists, under ``"presets"``, one of the run's presets with one of the animal ids
    ``0 .. num_animals - 1`` (and whose ``"simulation_seed"``, 0 when not recorded, equals the run's) saw a
    benchmark animal: its zero-shot scores would be leaked.

    Returns
    -------
    dict
        ``{row name: [[preset, animal], ...]}`` for every row with an overlap (empty when none).
    """
    from ..inference import resolve_model

    overlaps: dict[str, list] = {}
    ids = set(range(settings.num_animals))
    for spec in specs:
        if spec.model_file is None:
            continue
        prov = resolve_model(spec.model_file).provenance or {}
        if int(prov.get("simulation_seed", 0)) != int(settings.simulation_seed):
            continue
        presets = prov.get("presets") or {}
        found = [
            [p, int(a)]
            for p in settings.presets
            if isinstance(presets, dict)
            for a in presets.get(p, ())
            if int(a) in ids
        ]
        if found:
            overlaps[spec.name] = found
    return overlaps


# ---------------------------------------------------------------------------------------------------------------------
# splits, ledger, intervals


class _PeakMemory:
    """Peak resident memory (MiB above the start) of the process during a block, sampled every 20 ms."""

    def __init__(self):
        self.peak_mib = 0.0
        self._stop = threading.Event()

    @staticmethod
    def _rss() -> float:
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
        except (OSError, ValueError):  # not Linux: fall back to the lifetime peak
            import resource

            scale = 1 / 2**20 if sys.platform == "darwin" else 1 / 1024
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale

    def _sample(self):
        while not self._stop.wait(0.02):
            self.peak_mib = max(self.peak_mib, self._rss() - self._start)

    def __enter__(self):
        self._start = self._rss()
        self._t0 = time.perf_counter()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak_mib = max(self.peak_mib, self._rss() - self._start)
        self.seconds = time.perf_counter() - self._t0
        return False


def _finite_rows(x: np.ndarray) -> np.ndarray:
    return np.all(np.isfinite(x), axis=1)


def _transductive_split(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified unit-level split of the transductive protocol: (train, test) unit indices."""
    from sklearn.model_selection import train_test_split

    train, test = train_test_split(np.arange(len(y)), test_size=fraction, stratify=y, random_state=seed)
    return np.sort(train), np.sort(test)


def check_protocol(ledger: Sequence[dict], probes: Sequence[dict]) -> dict[str, bool]:
    """Verify the protocol from the ledger of fits and probes of a run.

    Returns
    -------
    dict
        ``inductive_fits_exclude_test_animal``, ``self_supervised_fits_never_see_labels``,
        ``supervised_fits_never_see_test_labels`` and ``probes_never_train_on_test_units``, each True when
        the rule held for every fit / probe.
    """
    inductive = all(
        not (set(f["corpus_animals"]) & set(f["test_animals"])) for f in ledger if f["protocol"] == "inductive"
    )
    ssl = all(f["labelled_units"] == 0 for f in ledger if f["kind"] != "supervised")
    supervised = all(f["labelled_test_units"] == 0 for f in ledger if f["kind"] == "supervised")
    probe = all(p["overlap"] == 0 for p in probes)
    return dict(
        inductive_fits_exclude_test_animal=bool(inductive),
        self_supervised_fits_never_see_labels=bool(ssl),
        supervised_fits_never_see_test_labels=bool(supervised),
        probes_never_train_on_test_units=bool(probe),
    )


def hierarchical_bootstrap(groups: np.ndarray, num_resamples: int, seed: int = 0) -> np.ndarray:
    """Multiplicities of a two-level bootstrap: resample groups (animals), then units within each drawn group.

    Parameters
    ----------
    groups : np.ndarray
        Group (animal) of each unit, shape ``(n,)``.
    num_resamples : int
        Number of resamples ``B``.
    seed : int, default: 0
        Seed; the same seed, groups and ``B`` give the same resamples, so scores of several methods computed
        with the same weights are paired.

    Returns
    -------
    np.ndarray
        ``(B, n)`` int32: how often each unit is drawn in each resample (every resample holds as many groups
        as ``groups`` has, each with as many draws as it has units).
    """
    groups = np.asarray(groups)
    if groups.ndim != 1 or groups.size == 0:
        raise ValueError(f"groups must be a non-empty 1-D array, got shape {groups.shape}")
    if int(num_resamples) < 1:
        raise ValueError(f"num_resamples must be >= 1, got {num_resamples!r}")
    members = [np.flatnonzero(groups == g) for g in np.unique(groups)]
    rng = np.random.default_rng(seed)
    weights = np.zeros((int(num_resamples), groups.size), dtype=np.int32)
    for b in range(int(num_resamples)):
        picks = rng.integers(0, len(members), size=len(members))
        drawn = np.concatenate([members[g][rng.integers(0, members[g].size, size=members[g].size)] for g in picks])
        weights[b] = np.bincount(drawn, minlength=groups.size)
    return weights


def pooled_scores(y_true: np.ndarray, y_pred: np.ndarray, weights: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Macro-F1 and balanced accuracy of pooled predictions, for each row of unit weights.

    Parameters
    ----------
    y_true : np.ndarray
        True label of each unit, shape ``(n,)``.
    y_pred : np.ndarray
        Predicted label of each unit; ``""`` marks a unit without a prediction (a method that cannot embed it),
        which is left out, as :func:`~spikeinterface_neuronid.evaluation.linear_probe` leaves it out.
    weights : np.ndarray | None, default: None
        ``(B, n)`` unit multiplicities (e.g. from :func:`hierarchical_bootstrap`); None: every unit once.

    Returns
    -------
    dict
        ``macro_f1`` and ``balanced_accuracy``, each ``(B,)`` (``(1,)`` without weights). As in scikit-learn,
        classes are averaged over those present among the (weighted) true labels.
    """
    y_true = np.asarray(y_true).astype(str)
    y_pred = np.asarray(y_pred).astype(str)
    if y_true.shape != y_pred.shape or y_true.ndim != 1:
        raise ValueError(f"y_true and y_pred must be 1-D of the same length, got {y_true.shape} and {y_pred.shape}")
    w = np.ones((1, y_true.size)) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.ndim != 2 or w.shape[1] != y_true.size:
        raise ValueError(f"weights must have shape (B, {y_true.size}), got {w.shape}")
    valid = y_pred != ""
    classes = sorted(set(y_true[valid]) | set(y_pred[valid]))
    true = np.stack([(y_true == c) & valid for c in classes], axis=1).astype(np.float64)
    pred = np.stack([(y_pred == c) & valid for c in classes], axis=1).astype(np.float64)
    n_true, n_pred, n_hit = w @ true, w @ pred, w @ (true * pred)
    present = n_true > 0
    count = present.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(n_true + n_pred > 0, 2 * n_hit / (n_true + n_pred), 0.0)
        recall = np.where(present, n_hit / n_true, 0.0)
        macro = np.where(count > 0, (f1 * present).sum(axis=1) / count, np.nan)
        balanced = np.where(count > 0, recall.sum(axis=1) / count, np.nan)
    return dict(macro_f1=macro, balanced_accuracy=balanced)


def _interval(values: np.ndarray) -> tuple[float, float]:
    low, high = np.nanpercentile(values, [2.5, 97.5])
    return float(low), float(high)


def verdicts(
    summary: Sequence[dict],
    differences: Sequence[dict],
    ablation: Sequence[dict] = (),
    target_margin: float = 0.03,
    ablation_margin: float = 0.10,
) -> dict:
    """Does the product row beat the best baseline (IZS, C=1), and is the relational channel worth its margin?

    Parameters
    ----------
    summary : sequence of dict
        Summary rows with ``preset``, ``task``, ``method``, ``protocol``, ``probe`` and ``macro_f1`` (pooled).
    differences : sequence of dict
        Rows with ``preset``, ``task``, ``method`` (the baseline), ``difference`` (product - baseline),
        ``ci_low`` and ``ci_high``.
    ablation : sequence of dict, default: ()
        Rows with ``preset``, ``task``, ``drop`` (full design - no relational channel), ``ci_low``, ``ci_high``.
    target_margin : float, default: 0.03
        ``target_met`` needs a difference >= this and an interval whose lower bound is above 0.
    ablation_margin : float, default: 0.10
        The ablation's ``target_met`` needs a region drop on ``hard`` >= this.

    Returns
    -------
    dict
        ``product``: one entry per preset and task with ``best_baseline``, its ``best_baseline_macro_f1``,
        ``product_macro_f1``, ``difference``, ``ci_low``, ``ci_high`` and ``target_met``; ``ablation``: the
        ``hard`` brain-region entry of ``ablation`` with ``target_met`` and ``interval_above_zero``, or None.
    """
    product = []
    for d_preset, d_task in dict.fromkeys((d["preset"], d["task"]) for d in differences):
        rows = [
            r
            for r in summary
            if r["preset"] == d_preset
            and r["task"] == d_task
            and r["protocol"] == "inductive_zero_shot"
            and r["probe"] == "C=1"
        ]
        ours = next((r for r in rows if r["method"] == PRODUCT), None)
        baselines = [r for r in rows if is_baseline(r["method"])]
        if ours is None or not baselines:
            continue
        best = max(baselines, key=lambda r: r["macro_f1"])
        diff = next(
            d for d in differences if d["preset"] == d_preset and d["task"] == d_task and d["method"] == best["method"]
        )
        product.append(
            dict(
                preset=d_preset,
                task=d_task,
                product_macro_f1=ours["macro_f1"],
                best_baseline=best["method"],
                best_baseline_macro_f1=best["macro_f1"],
                difference=diff["difference"],
                ci_low=diff["ci_low"],
                ci_high=diff["ci_high"],
                target_met=bool(diff["difference"] >= target_margin and diff["ci_low"] > 0),
            )
        )
    hard = next((a for a in ablation if a["preset"] == "hard" and a["task"] == "brain_region"), None)
    abl = None
    if hard is not None:
        abl = dict(
            hard,
            margin=ablation_margin,
            target_met=bool(hard["drop"] >= ablation_margin),
            interval_above_zero=bool(hard["ci_low"] > 0),
        )
    return dict(product=product, target_margin=target_margin, ablation=abl)


# ---------------------------------------------------------------------------------------------------------------------
# the run


class _Dataset:
    """One preset's simulated animals as model input, with labels and waveform templates."""

    def __init__(self, preset: str, settings: BenchmarkSettings, progress_bar: bool):
        from ..simulation import simulate_dataset, simulate_templates

        sessions = simulate_dataset(
            preset,
            animals=list(range(settings.num_animals)),
            num_neurons=settings.num_neurons,
            duration_s=settings.duration_s,
            seed=settings.simulation_seed,
            progress_bar=progress_bar,
        )
        self.preset = preset
        self.labels = {task: [np.asarray(getattr(s, task)).astype(str) for s in sessions] for task in TASKS}
        self.animal_of_unit = np.concatenate([np.full(s.num_units, a) for a, s in enumerate(sessions)])
        fs, ms_before = 30000.0, 1.0
        self.templates = [
            simulate_templates(s, sampling_frequency=fs, ms_before=ms_before, seed=settings.simulation_seed)
            for s in sessions
        ]
        self.populations = [s.to_spike_train_set() for s in sessions]
        if settings.waveforms:  # the templates NEMO gets, as a SortingAnalyzer's templates extension gives them
            self.populations = [
                SpikeTrainSet(
                    p.spike_times,
                    p.duration,
                    covariates=p.covariates,
                    covariate_rate_hz=p.covariate_rate_hz,
                    waveforms=t,
                    waveform_sampling_frequency=fs,
                    waveform_nbefore=int(round(ms_before * 1e-3 * fs)),
                )
                for p, t in zip(self.populations, self.templates)
            ]

    def y(self, task: str) -> np.ndarray:
        return np.concatenate(self.labels[task])


class _Run:
    def __init__(self, settings: BenchmarkSettings, log: Callable[[str], None]):
        self.settings = settings
        self.log = log
        self.ledger: list[dict] = []
        self.probes: list[dict] = []
        self.folds: list[dict] = []
        self.speed: list[dict] = []
        self.label_efficiency: list[dict] = []
        self.predictions: dict[tuple, np.ndarray] = {}  # (preset, task, protocol, probe, method) -> label per unit
        self.truth: dict[str, dict] = {}  # preset -> animal of each unit, labels per task
        self.examples: dict = {}  # (preset, method) -> {task: embedding and labels of the first test animal, IZS}

    # -- fitting with bookkeeping ------------------------------------------------------------------------------

    def _fit(
        self,
        spec: MethodSpec,
        data: _Dataset,
        corpus: Sequence[int],
        protocol: str,
        fold,
        test_animals,
        labels: list[np.ndarray] | None = None,
        test_units: np.ndarray | None = None,
        task: str | None = None,
    ):
        est = spec.build(self.settings.seed)
        if spec.kind == "pretrained" and protocol == "transductive":
            est.transductive_steps = self.settings.transductive_steps
        pops = [data.populations[a] for a in corpus]
        kwargs: dict = {}
        if getattr(est, "needs_templates", False):
            kwargs["templates"] = [data.templates[a] for a in corpus]
        labelled = labelled_test = 0
        if labels is not None:
            kwargs["labels"] = [labels[a] for a in corpus]
            labelled = int(sum((labels[a] != "").sum() for a in corpus))
            labelled_test = int(sum((labels[a] != "").sum() for a in test_animals if a in corpus))
            if test_units is not None:  # transductive: the test units are spread over all animals
                labelled_test = int((np.concatenate(labels)[test_units] != "").sum())
        with _PeakMemory() as meter:
            est.fit(pops, **kwargs)
        self.ledger.append(
            dict(
                preset=data.preset,
                method=spec.name,
                kind=spec.kind,
                protocol=protocol,
                fold=fold,
                task=task,
                corpus_animals=[int(a) for a in corpus],
                test_animals=[int(a) for a in test_animals],
                labelled_units=labelled,
                labelled_test_units=labelled_test,
                transductive_steps=int(getattr(est, "transductive_steps", 0) or 0) if spec.kind == "pretrained" else 0,
            )
        )
        self.speed.append(
            dict(
                preset=data.preset,
                method=spec.name,
                stage="fit",
                protocol=protocol,
                fold=fold,
                seconds=meter.seconds,
                peak_mib=meter.peak_mib,
                num_units=sum(p.num_units for p in pops),
            )
        )
        return est

    def _embed(self, spec: MethodSpec, est, data: _Dataset, protocol: str, fold) -> np.ndarray:
        kwargs = {"templates": data.templates} if getattr(est, "needs_templates", False) else {}
        with _PeakMemory() as meter:
            parts = est.transform(data.populations, **kwargs)
        self.speed.append(
            dict(
                preset=data.preset,
                method=spec.name,
                stage="embed",
                protocol=protocol,
                fold=fold,
                seconds=meter.seconds,
                peak_mib=meter.peak_mib,
                num_units=sum(p.num_units for p in data.populations),
            )
        )
        return np.concatenate([np.asarray(p, dtype=np.float64) for p in parts])

    # -- scoring -----------------------------------------------------------------------------------------------

    def _record(self, data, task, protocol, probe, spec, fold, C, result, train, test):
        self.folds.append(
            dict(
                preset=data.preset,
                task=task,
                protocol=protocol,
                method=spec.name,
                probe=probe,
                fold=int(fold),
                C=float(C),
                macro_f1=result.macro_f1,
                balanced_accuracy=result.balanced_accuracy,
                num_train_units=int(len(train)),
                num_test_units=int(len(test)),
            )
        )
        if protocol != "transductive":
            key = (data.preset, task, protocol, probe, spec.name)
            if key not in self.predictions:
                self.predictions[key] = np.full(len(data.animal_of_unit), "", dtype=object)
            self.predictions[key][test] = result.predictions

    def _zero_shot(
        self,
        x: np.ndarray,
        data: _Dataset,
        task: str,
        spec: MethodSpec,
        animal: int,
        protocols: Sequence[str],
        tune: bool,
    ) -> None:
        """Leave-one-animal-out probes for ``animal``: C=1 (recorded under every protocol), and C tuned."""
        y, of = data.y(task), data.animal_of_unit
        ok = _finite_rows(x)
        train = np.flatnonzero((of != animal) & ok)
        test = np.flatnonzero((of == animal) & ok)
        if len(test) == 0 or len(np.unique(y[train])) < 2:
            raise ValueError(f"{spec.name} on {data.preset}: no embedded test units or < 2 training classes")
        result = linear_probe(x[train], y[train], x[test], y[test], C=1.0)
        self.probes.append(
            dict(
                preset=data.preset,
                method=spec.name,
                task=task,
                protocol=protocols[0],
                fold=int(animal),
                overlap=int(np.intersect1d(train, test).size),
            )
        )
        for protocol in protocols:
            self._record(data, task, protocol, "C=1", spec, animal, 1.0, result, train, test)
        if tune:
            val_animal = (animal - 1) % self.settings.num_animals
            sub, val = train[of[train] != val_animal], train[of[train] == val_animal]
            best_c, best = 1.0, -1.0
            if len(np.unique(y[sub])) >= 2 and len(val):
                for c in self.settings.c_grid:
                    f1 = linear_probe(x[sub], y[sub], x[val], y[val], C=c).macro_f1
                    if f1 > best + 1e-12:
                        best_c, best = float(c), f1
            tuned = result if best_c == 1.0 else linear_probe(x[train], y[train], x[test], y[test], C=best_c)
            self._record(data, task, "inductive_zero_shot", "C tuned", spec, animal, best_c, tuned, train, test)
        if protocols[0] == "inductive_zero_shot" and animal == self.settings.tested_animals[0]:
            self.examples.setdefault((data.preset, spec.name), {})[task] = dict(x=x[test], y=y[test])

    def _transductive(self, x: np.ndarray, data: _Dataset, task: str, spec: MethodSpec, seed: int, split) -> None:
        y = data.y(task)
        ok = _finite_rows(x)
        train, test = split[0][ok[split[0]]], split[1][ok[split[1]]]
        result = linear_probe(x[train], y[train], x[test], y[test], C=1.0)
        self.probes.append(
            dict(
                preset=data.preset,
                method=spec.name,
                task=task,
                protocol="transductive",
                fold=int(seed),
                overlap=int(np.intersect1d(train, test).size),
            )
        )
        self._record(data, task, "transductive", "C=1", spec, seed, 1.0, result, train, test)

    # -- one preset ----------------------------------------------------------------------------------------------

    def run_preset(self, data: _Dataset, specs: Sequence[MethodSpec], bar=None) -> None:
        s = self.settings
        everyone = list(range(s.num_animals))
        tested = s.tested_animals
        self.truth[data.preset] = dict(animal=data.animal_of_unit, y={task: data.y(task) for task in TASKS})
        tsplits = {
            task: {
                seed: _transductive_split(data.y(task), s.transductive_test_fraction, seed)
                for seed in s.transductive_seeds
            }
            for task in TASKS
        }
        izs, tzs = "inductive_zero_shot", "transductive_zero_shot"
        for spec in specs:
            t0 = time.perf_counter()
            if spec.kind in ("fixed", "pretrained"):
                est = self._fit(spec, data, everyone, "fixed", "all", tested)
                x = self._embed(spec, est, data, "fixed", "all")
                for task in TASKS:
                    for a in tested:
                        self._zero_shot(x, data, task, spec, a, (izs, tzs) if spec.kind == "fixed" else (izs,), True)
                if spec.kind == "pretrained":
                    if spec.name == PRODUCT:
                        self._label_efficiency(data, x)
                    est = self._fit(spec, data, everyone, "transductive", "all", tested)
                    x = self._embed(spec, est, data, "transductive", "all")
                    for task in TASKS:
                        for a in tested:
                            self._zero_shot(x, data, task, spec, a, (tzs,), False)
                for task in TASKS:
                    for seed, split in tsplits[task].items():
                        self._transductive(x, data, task, spec, seed, split)
            elif spec.kind == "ssl":
                for a in tested:
                    corpus = [b for b in everyone if b != a]
                    est = self._fit(spec, data, corpus, "inductive", int(a), [a])
                    x = self._embed(spec, est, data, "inductive", int(a))
                    for task in TASKS:
                        self._zero_shot(x, data, task, spec, a, (izs,), True)
                    self.log(f"  {data.preset} {spec.name}: test animal {a} done ({time.perf_counter() - t0:.0f} s)")
                est = self._fit(spec, data, everyone, "transductive", "all", tested)
                x = self._embed(spec, est, data, "transductive", "all")
                for task in TASKS:
                    for a in tested:
                        self._zero_shot(x, data, task, spec, a, (tzs,), False)
                    for seed, split in tsplits[task].items():
                        self._transductive(x, data, task, spec, seed, split)
            else:  # supervised: fitted on the probe-training labels of each task and split
                for task in TASKS:
                    parts = data.labels[task]
                    for a in tested:
                        corpus = [b for b in everyone if b != a]  # the test animal is not even given unlabelled
                        est = self._fit(spec, data, corpus, "inductive", int(a), [a], labels=parts, task=task)
                        x = self._embed(spec, est, data, "inductive", int(a))
                        # reads labelled units only: a TZS fit (test animal unlabelled) would be this fit
                        self._zero_shot(x, data, task, spec, a, (izs, tzs), True)
                    bounds = np.cumsum([0] + [len(y) for y in parts])
                    for seed, (train, test) in tsplits[task].items():
                        flat = np.full(bounds[-1], "", dtype=object)
                        flat[train] = data.y(task)[train]
                        labels = [flat[bounds[b] : bounds[b + 1]].astype(str) for b in everyone]
                        est = self._fit(
                            spec,
                            data,
                            everyone,
                            "transductive",
                            int(seed),
                            tested,
                            labels=labels,
                            test_units=test,
                            task=task,
                        )
                        x = self._embed(spec, est, data, "transductive", int(seed))
                        self._transductive(x, data, task, spec, seed, (train, test))
            self.log(f"  {data.preset} {spec.name}: {time.perf_counter() - t0:.1f} s")
            if bar is not None:
                bar.update(1)

    def izs_example(self, data: _Dataset, spec: MethodSpec) -> None:
        """Only the IZS fit(s) and C=1 probes of the first test animal, as :meth:`run_preset` makes them.

        Fills ``examples`` (the embedding maps' input) and the C=1 predictions of that animal, with the same
        fits (corpus, labels, seed) as a full run, so that a re-run can redraw the figures of a row it keeps.
        """
        everyone = list(range(self.settings.num_animals))
        a = self.settings.tested_animals[0]
        izs = ("inductive_zero_shot",)
        if spec.kind in ("fixed", "pretrained"):
            est = self._fit(spec, data, everyone, "fixed", "all", self.settings.tested_animals)
            x = self._embed(spec, est, data, "fixed", "all")
            for task in TASKS:
                self._zero_shot(x, data, task, spec, a, izs, False)
        elif spec.kind == "ssl":
            est = self._fit(spec, data, [b for b in everyone if b != a], "inductive", int(a), [a])
            x = self._embed(spec, est, data, "inductive", int(a))
            for task in TASKS:
                self._zero_shot(x, data, task, spec, a, izs, False)
        else:
            for task in TASKS:
                corpus = [b for b in everyone if b != a]
                est = self._fit(spec, data, corpus, "inductive", int(a), [a], labels=data.labels[task], task=task)
                x = self._embed(spec, est, data, "inductive", int(a))
                self._zero_shot(x, data, task, spec, a, izs, False)

    # -- label efficiency (product row, IZS) -----------------------------------------------------------------------

    def _label_efficiency(self, data: _Dataset, x: np.ndarray) -> None:
        of = data.animal_of_unit
        ok = _finite_rows(x)
        tested = self.settings.tested_animals
        units = np.flatnonzero(np.isin(of, tested))
        rng = np.random.default_rng(self.settings.seed)
        for task in TASKS:
            y = data.y(task)
            for fraction in self.settings.label_fractions:
                pred = np.full(len(y), "", dtype=object)
                sizes = []
                for a in tested:
                    pool = np.flatnonzero((of != a) & ok)
                    # stratified subsample with at least one unit per class
                    chosen = np.sort(
                        np.concatenate(
                            [
                                rng.choice(m, size=max(1, int(round(fraction * m.size))), replace=False)
                                for m in (pool[y[pool] == c] for c in np.unique(y[pool]))
                            ]
                        )
                    )
                    test = np.flatnonzero((of == a) & ok)
                    pred[test] = linear_probe(x[chosen], y[chosen], x[test], y[test]).predictions
                    sizes.append(chosen.size)
                score = pooled_scores(y[units], pred[units])
                self.label_efficiency.append(
                    dict(
                        preset=data.preset,
                        task=task,
                        method=PRODUCT,
                        fraction=float(fraction),
                        num_labelled_units=float(np.mean(sizes)),
                        macro_f1=float(score["macro_f1"][0]),
                        balanced_accuracy=float(score["balanced_accuracy"][0]),
                    )
                )

    # -- summary, intervals ------------------------------------------------------------------------------------------

    def summarise(self, methods: Sequence[str]) -> tuple[list[dict], list[dict], list[dict]]:
        """Summary rows, product-minus-baseline differences and the ablation drops, with bootstrap intervals."""
        s = self.settings
        summary, differences, ablation = [], [], []
        for preset, truth in self.truth.items():
            units = np.flatnonzero(np.isin(truth["animal"], s.tested_animals))
            weights = hierarchical_bootstrap(truth["animal"][units], s.bootstrap_resamples, s.bootstrap_seed)
            for task in TASKS:
                y = truth["y"][task][units]
                dists: dict[str, np.ndarray] = {}
                points: dict[str, float] = {}
                for method in methods:
                    td = [
                        r
                        for r in self.folds
                        if r["preset"] == preset
                        and r["task"] == task
                        and r["method"] == method
                        and r["protocol"] == "transductive"
                    ]
                    if td:
                        f1 = np.array([r["macro_f1"] for r in td])
                        ba = np.array([r["balanced_accuracy"] for r in td])
                        summary.append(
                            dict(
                                preset=preset,
                                task=task,
                                method=method,
                                protocol="transductive",
                                probe="C=1",
                                macro_f1=float(f1.mean()),
                                balanced_accuracy=float(ba.mean()),
                                macro_f1_mean=float(f1.mean()),
                                macro_f1_std=_std(f1),
                                num_folds=len(td),
                            )
                        )
                    for protocol in ("transductive_zero_shot", "inductive_zero_shot"):
                        for probe in ("C=1", "C tuned"):
                            key = (preset, task, protocol, probe, method)
                            if key not in self.predictions:
                                continue
                            pred = self.predictions[key][units].astype(str)
                            point = pooled_scores(y, pred)
                            per = np.array(
                                [
                                    r["macro_f1"]
                                    for r in self.folds
                                    if r["preset"] == preset
                                    and r["task"] == task
                                    and r["protocol"] == protocol
                                    and r["probe"] == probe
                                    and r["method"] == method
                                ]
                            )
                            row = dict(
                                preset=preset,
                                task=task,
                                method=method,
                                protocol=protocol,
                                probe=probe,
                                macro_f1=float(point["macro_f1"][0]),
                                balanced_accuracy=float(point["balanced_accuracy"][0]),
                                macro_f1_mean=float(per.mean()) if per.size else float("nan"),
                                macro_f1_std=_std(per),
                                num_folds=int(per.size),
                                num_test_units=int((pred != "").sum()),
                            )
                            if protocol == "inductive_zero_shot" and probe == "C=1":
                                dists[method] = pooled_scores(y, pred, weights)["macro_f1"]
                                points[method] = row["macro_f1"]
                                row["ci_low"], row["ci_high"] = _interval(dists[method])
                            summary.append(row)
                if PRODUCT in dists:
                    for method in dists:
                        if is_baseline(method):
                            low, high = _interval(dists[PRODUCT] - dists[method])
                            differences.append(
                                dict(
                                    preset=preset,
                                    task=task,
                                    method=method,
                                    difference=points[PRODUCT] - points[method],
                                    ci_low=low,
                                    ci_high=high,
                                )
                            )
                if ABLATION_FULL in dists and ABLATION_NO_RELATIONAL in dists:
                    low, high = _interval(dists[ABLATION_FULL] - dists[ABLATION_NO_RELATIONAL])
                    ablation.append(
                        dict(
                            preset=preset,
                            task=task,
                            full=ABLATION_FULL,
                            no_relational=ABLATION_NO_RELATIONAL,
                            drop=points[ABLATION_FULL] - points[ABLATION_NO_RELATIONAL],
                            ci_low=low,
                            ci_high=high,
                        )
                    )
        return summary, differences, ablation

    def predictions_record(self) -> dict:
        """Every pooled prediction as class indices (-1: no prediction), to recompute any interval later."""
        out: dict = {}
        for preset, truth in self.truth.items():
            entry = dict(animal=truth["animal"].tolist(), tasks={})
            for task in TASKS:
                y = truth["y"][task]
                preds = {
                    f"{protocol}|{probe}|{method}": p.astype(str)
                    for (pr, t, protocol, probe, method), p in self.predictions.items()
                    if pr == preset and t == task
                }
                classes = sorted(set(y) | {c for p in preds.values() for c in p if c})
                index = {c: i for i, c in enumerate(classes)}
                entry["tasks"][task] = dict(
                    classes=classes,
                    y=[index[c] for c in y],
                    predictions={k: [index.get(c, -1) for c in p] for k, p in preds.items()},
                )
            out[preset] = entry
        return out


def _std(values: np.ndarray) -> float:
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


# ---------------------------------------------------------------------------------------------------------------------
# reporting

_TASK_NAMES = {"cell_type": "cell type", "brain_region": "brain region"}


def _fmt(row: dict) -> str:
    """Mean ± std over folds (the mean alone when there was one fold)."""
    if row.get("num_folds", 2) < 2:
        return f"{row['macro_f1_mean']:.3f}"
    return f"{row['macro_f1_mean']:.3f} ± {row['macro_f1_std']:.3f}"


def _fmt_ci(value: float, low: float, high: float, signed: bool = False) -> str:
    f = "{:+.3f}" if signed else "{:.3f}"
    return f"{f.format(value)} [{f.format(low)}, {f.format(high)}]"


def _preset_tables(result: dict, presets: Sequence[str]) -> list[str]:
    """The markdown tables (one per preset and task) of a run."""
    lines: list[str] = []
    summary = result["summary"]
    for preset in presets:
        for task in TASKS:
            cells = {
                (r["method"], r["protocol"], r["probe"]): r
                for r in summary
                if r["preset"] == preset and r["task"] == task
            }
            if not cells:
                continue
            lines += [
                f"## {preset} — {_TASK_NAMES[task]}",
                "",
                "| method | TD | TZS | IZS [95 % CI] | IZS mean ± std over animals | IZS, C tuned "
                "| IZS balanced acc. |",
                "|---|---|---|---|---|---|---|",
            ]
            for m in result["methods"]:
                name = m["name"]
                td = cells.get((name, "transductive", "C=1"))
                tzs = cells.get((name, "transductive_zero_shot", "C=1"))
                izs = cells.get((name, "inductive_zero_shot", "C=1"))
                tuned = cells.get((name, "inductive_zero_shot", "C tuned"))
                if izs is None and td is None and tzs is None:
                    continue
                dash = "–"
                shown = f"**{name}**" if name == PRODUCT else name
                lines.append(
                    " | ".join(
                        [
                            f"| {shown}",
                            _fmt(td) if td else dash,
                            f"{tzs['macro_f1']:.3f}" if tzs else dash,
                            _fmt_ci(izs["macro_f1"], izs["ci_low"], izs["ci_high"]) if izs else dash,
                            _fmt(izs) if izs else dash,
                            f"{tuned['macro_f1']:.3f}" if tuned else dash,
                            f"{izs['balanced_accuracy']:.3f}" if izs else dash,
                        ]
                    )
                    + " |"
                )
            lines.append("")
    return lines


def _difference_table(result: dict) -> list[str]:
    """Product row minus every baseline (IZS, C=1, pooled macro-F1) with 95 % intervals, as one table."""
    diffs = result["differences"]
    if not diffs:
        return []
    columns = list(dict.fromkeys((d["preset"], d["task"]) for d in diffs))
    by_key = {(d["preset"], d["task"], d["method"]): d for d in diffs}
    lines = [
        f"## {PRODUCT} minus each baseline (IZS, pooled macro-F1, C=1, paired 95 % CI)",
        "",
        "| baseline | " + " | ".join(f"{p} {_TASK_NAMES[t]}" for p, t in columns) + " |",
        "|---|" + "---|" * len(columns),
    ]
    for m in result["methods"]:
        if not is_baseline(m["name"]) or not any((p, t, m["name"]) in by_key for p, t in columns):
            continue
        cells = []
        for p, t in columns:
            d = by_key.get((p, t, m["name"]))
            cells.append(_fmt_ci(d["difference"], d["ci_low"], d["ci_high"], signed=True) if d else "–")
        lines.append(f"| {m['name']} | " + " | ".join(cells) + " |")
    lines.append("")
    return lines


def _verdict_lines(result: dict) -> list[str]:
    """The computed verdicts, as markdown lines."""
    verdict = result.get("verdict") or {}
    lines: list[str] = []
    if verdict.get("product"):
        margin = verdict["target_margin"]
        lines += [f"## Verdict: does {PRODUCT} beat the best baseline by ≥ {margin:.2f} (IZS, macro-F1, C=1)?", ""]
        for v in verdict["product"]:
            answer = "**yes**" if v["target_met"] else "**no**"
            lines.append(
                f"- {v['preset']}, {_TASK_NAMES[v['task']]}: {answer} — ours {v['product_macro_f1']:.3f}, "
                f"best baseline {v['best_baseline']} {v['best_baseline_macro_f1']:.3f}; difference "
                f"{_fmt_ci(v['difference'], v['ci_low'], v['ci_high'], signed=True)} "
                f"(target: ≥ {margin:+.2f} with the interval above 0)."
            )
        lines.append("")
    abl = verdict.get("ablation")
    if abl:
        answer = "**yes**" if abl["target_met"] else "**no**"
        lines += [
            f"## Verdict: is the relational channel worth ≥ {abl['margin']:.2f} region macro-F1 on `hard` (IZS)?",
            "",
            f"- {answer} — {abl['full']} minus {abl['no_relational']}: "
            f"{_fmt_ci(abl['drop'], abl['ci_low'], abl['ci_high'], signed=True)}"
            f" (interval {'above' if abl['interval_above_zero'] else 'not above'} 0).",
            "",
        ]
    return lines


def _rerun_lines(result: dict) -> list[str]:
    """Which rows were re-run, when and how (none: no lines); the other rows are from the original run."""
    reruns = result.get("reruns") or []
    if not reruns:
        return []
    lines = []
    for r in reruns:
        rows = ", ".join(f"**{m}**" for m in r["methods"])
        lines.append(
            f"Re-run{'s' if len(r['methods']) > 1 else ''} of {rows}: `{r['command']}`, {r['date']}, "
            f"{r['elapsed_s'] / 60:.1f} min on {r['machine']['cpu_count']} CPU cores.  "
        )
        if r.get("kept_rows_differ"):
            lines.append(f"NOT reproduced by the current code (kept anyway): {', '.join(r['kept_rows_differ'])}.  ")
    lines[-1] = lines[-1].rstrip()
    lines += [
        "",
        "The re-run rows' scores, predictions, timings and model files (sha256 in `results.json`, `reruns`) come "
        "from their latest re-run; every other row, and the command, date and wall time above, come from the "
        "original run. Everything computed across rows (tables, differences, verdicts) was recomputed from the merged "
        "predictions, as a full run computes it.",
        "",
    ]
    return lines


def _markdown(result: dict) -> str:
    s = result["settings"]
    tested = s["test_animals"] if s["test_animals"] is not None else list(range(s["num_animals"]))
    lines = [
        "# Benchmark results",
        "",
        f"Command: `{result['command']}`  ",
        f"Wall time: {result['elapsed_s'] / 60:.1f} min on {result['machine']['cpu_count']} CPU cores "
        f"({result['machine']['platform']}), torch {result['machine']['torch']}, {result['date']}.",
        "",
        *_rerun_lines(result),
        f"Data: simulator presets {', '.join(s['presets'])}; {s['num_animals']} animals × {s['num_neurons']} "
        f"neurons × {s['duration_s']:g} s per preset (simulation seed {s['simulation_seed']}); test animals "
        f"{', '.join(map(str, tested))}, each held out once. Our product row: the shipped default model "
        f"(IZS as shipped; TD/TZS after {s['transductive_steps']} steps of transductive fine-tuning on all animals). "
        f"NeurPIR: {s['ssl_steps']} steps, batch {s['batch_size']} × ≤{s['max_units']} units.",
        "",
        "Cells: macro-F1, linear probe (StandardScaler + class-balanced logistic regression, C=1 unless tuned). "
        "IZS = inductive zero-shot: leave one animal out, methods that learn are refitted without it; its "
        "macro-F1 is computed on the predictions pooled over all test animals, with a 95 % hierarchical bootstrap "
        f"interval ({s['bootstrap_resamples']} resamples of animals, then units within animals); mean ± std over "
        "test animals beside it. 'C tuned' chooses C on a validation animal. TZS = transductive zero-shot (the same "
        "probes; self-supervised methods fitted on all animals), pooled. TD = transductive (stratified random unit "
        f"split), mean ± std over split seeds {', '.join(map(str, s['transductive_seeds']))}. "
        "Chance macro-F1 ≈ 1 / classes.",
        "",
    ]
    lines += _preset_tables(result, s["presets"])
    lines += _difference_table(result)
    lines += _verdict_lines(result)
    if result["label_efficiency"]:
        rows = result["label_efficiency"]
        fractions = sorted({r["fraction"] for r in rows})
        lines += [
            f"## Label efficiency of {PRODUCT} (IZS, pooled macro-F1)",
            "",
            "| preset, task | " + " | ".join(f"{f:g}" for f in fractions) + " |",
            "|---|" + "---|" * len(fractions),
        ]
        for preset in s["presets"]:
            for task in TASKS:
                got = {r["fraction"]: r["macro_f1"] for r in rows if r["preset"] == preset and r["task"] == task}
                if got:
                    lines.append(
                        f"| {preset}, {_TASK_NAMES[task]} | "
                        + " | ".join(f"{got[f]:.3f}" if f in got else "–" for f in fractions)
                        + " |"
                    )
        lines.append("")
    speed = result["speed_summary"]
    lines += [
        "## Speed and memory (same run)" if not result.get("reruns") else "## Speed and memory",
        "",
        *(
            ["Each row's timings come from the run that produced its scores (the re-run, for re-run rows).", ""]
            if result.get("reruns")
            else []
        ),
        "| method | fits | fit time per fit (s) | embed time per fit (s) | peak memory (MiB above baseline) |",
        "|---|---|---|---|---|",
    ]
    for m in result["methods"]:
        if m["name"] in speed:
            sp = speed[m["name"]]
            lines.append(
                f"| {m['name']} | {sp['num_fits']} | {sp['fit_s_mean']:.1f} | {sp['embed_s_mean']:.1f} | "
                f"{sp['peak_mib_max']:.0f} |"
            )
    lines += [
        "",
        "Checks of the protocol wiring (from the ledger of every fit and probe, and the models' provenance):",
        "",
    ]
    lines += [f"- {k.replace('_', ' ')}: {'passed' if v else 'FAILED'}" for k, v in result["checks"].items()]
    lines += ["", "Figures: " + ", ".join(f"`{f}`" for f in result["figures"]), ""]
    return "\n".join(lines)


#: Rows whose embedding maps and confusion matrices are drawn (those present in the run).
FIGURE_METHODS = (PRODUCT, "single-unit 1 ms + pairwise + spike-triggered population", "LOLCAT", "NEMO")


def _figures(run: _Run, result: dict, out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from ..plots import plot_confusion_matrix, plot_embedding_map, save_figure

    names = []
    first = run.settings.tested_animals[0]
    for preset in result["settings"]["presets"]:
        truth = run.truth.get(preset)
        if truth is None:
            continue
        units = np.flatnonzero(np.isin(truth["animal"], run.settings.tested_animals))
        for task in TASKS:
            present = [m for m in FIGURE_METHODS if task in run.examples.get((preset, m), {})]
            if not present:
                continue
            for kind in ("embedding_map", "confusion"):
                fig, axes = plt.subplots(1, len(present), figsize=(4.2 * len(present), 3.8), squeeze=False)
                for ax, m in zip(axes[0], present):
                    title = "\n".join(textwrap.wrap(m, 34))
                    if kind == "embedding_map":
                        ex = run.examples[(preset, m)][task]
                        plot_embedding_map(ex["x"], ex["y"], ax=ax, title=title)
                    else:
                        pred = run.predictions[(preset, task, "inductive_zero_shot", "C=1", m)][units].astype(str)
                        ok = pred != ""
                        plot_confusion_matrix(truth["y"][task][units][ok], pred[ok], ax=ax, title=title)
                where = f"test animal {first}" if kind == "embedding_map" else "all test animals pooled"
                fig.suptitle(f"{preset}, {_TASK_NAMES[task]}: inductive zero-shot, {where}")
                fig.tight_layout()
                name = f"{kind}_{preset}_{task}.png"
                save_figure(fig, out / name)
                plt.close(fig)
                names.append(name)
    if result["label_efficiency"]:
        fig, axes = plt.subplots(1, len(TASKS), figsize=(5 * len(TASKS), 3.8), squeeze=False)
        for ax, task in zip(axes[0], TASKS):
            for preset in result["settings"]["presets"]:
                rs = sorted(
                    (r for r in result["label_efficiency"] if r["preset"] == preset and r["task"] == task),
                    key=lambda r: r["fraction"],
                )
                ax.plot([r["fraction"] for r in rs], [r["macro_f1"] for r in rs], "o-", label=preset)
            ax.set_xscale("log")
            ax.set_xlabel("fraction of probe-training labels")
            ax.set_ylabel("macro-F1 (held-out animals, pooled)")
            ax.set_title(f"{PRODUCT}: {_TASK_NAMES[task]}")
            ax.legend(frameon=False)
        fig.tight_layout()
        save_figure(fig, out / "label_efficiency.png")
        plt.close(fig)
        names.append("label_efficiency.png")
    return names


def _speed_summary(speed: Sequence[dict], methods: Sequence[str]) -> dict:
    """Mean fit and embed time, peak memory and number of fits per method, from the speed records."""
    summary = {}
    for name in methods:
        fits = [r for r in speed if r["method"] == name and r["stage"] == "fit"]
        embeds = [r for r in speed if r["method"] == name and r["stage"] == "embed"]
        if fits:
            summary[name] = dict(
                fit_s_mean=float(np.mean([r["seconds"] for r in fits])),
                embed_s_mean=float(np.mean([r["seconds"] for r in embeds])) if embeds else float("nan"),
                peak_mib_max=float(max(r["peak_mib"] for r in fits + embeds)),
                num_fits=len(fits),
                total_s=float(sum(r["seconds"] for r in fits + embeds)),
            )
    return summary


def _models_record(specs: Sequence[MethodSpec]) -> list[dict]:
    """File, name and sha256 of the model of every row that loads a model file."""
    from ..inference import resolve_model

    models = []
    for sp in specs:
        if sp.model_file is not None:
            bundle = resolve_model(sp.model_file)
            models.append(dict(method=sp.name, file=sp.model_file, name=bundle.name, sha256=bundle.sha256))
    return models


def _machine() -> dict:
    """Platform and library versions recorded with a run."""
    import sklearn
    import torch

    return dict(
        platform=platform.platform(),
        cpu_count=os.cpu_count(),
        python=platform.python_version(),
        torch=torch.__version__,
        numpy=np.__version__,
        sklearn=sklearn.__version__,
    )


def _write_outputs(out: Path, run: "_Run", result: dict) -> None:
    """Write ``predictions.json``, ``results.json`` and ``results.md`` of a run (each atomically)."""
    from .._io import atomic_path, write_json

    with atomic_path(out / "predictions.json") as tmp:
        tmp.write_text(json.dumps(run.predictions_record(), separators=(",", ":")) + "\n")
    write_json(out / "results.json", result)
    with atomic_path(out / "results.md") as tmp:
        tmp.write_text(_markdown(result))


def _raise_on_failed_checks(checks: dict, out: Path) -> None:
    failed = [k for k, v in checks.items() if not v]
    if failed:
        raise RuntimeError(f"protocol checks failed: {failed}; see {out / 'results.json'} (ledger)")


def run_benchmark(
    output_dir: str | Path,
    settings: BenchmarkSettings = FULL,
    command: str | None = None,
    progress_bar: bool = True,
    log: Callable[[str], None] | None = print,
    specs: Sequence[MethodSpec] | None = None,
) -> dict:
    """Run the benchmark and write ``results.json``, ``results.md``, ``predictions.json`` and the figures.

    Parameters
    ----------
    output_dir : str | Path
        Folder for the outputs (created; files in it are replaced atomically).
    settings : BenchmarkSettings, default: FULL
        Size of the run (:data:`FULL` or :data:`QUICK`, or your own).
    command : str | None, default: None
        The command line recorded in the results (None: ``sys.argv``).
    progress_bar : bool, default: True
        Show a tqdm progress bar over the (preset, method) pairs.
    log : callable | None, default: print
        Receives one line per finished method and stage.
    specs : sequence of MethodSpec | None, default: None
        The rows to run (None: :func:`method_specs` of ``settings``).

    Returns
    -------
    dict
        The content of ``results.json``.

    Raises
    ------
    FileNotFoundError
        Before any work, if a fixed model row's file is missing (the message names the command that makes it).
    RuntimeError
        Before any work, if a fixed model was pretrained on one of the benchmark's animals; after the run, if
        a protocol check fails (the outputs are still written, with the failed check).
    """
    import torch

    log = log or (lambda _msg: None)
    t_start = time.perf_counter()
    specs = list(method_specs(settings) if specs is None else specs)
    overlaps = check_model_provenance(specs, settings)
    if overlaps:
        raise RuntimeError(
            "these models were pretrained on benchmark animals (same preset, animal id and simulation seed), so "
            f"their zero-shot scores would be leaked: {overlaps}; pretrain them on other animal ids"
        )
    models = _models_record(specs)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    run = _Run(settings, log)
    bar = None
    if progress_bar:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(settings.presets) * len(specs), desc="benchmark", unit="method")
    old_threads = torch.get_num_threads()
    torch.set_num_threads(int(settings.num_threads))
    try:
        for preset in settings.presets:
            t0 = time.perf_counter()
            data = _Dataset(preset, settings, progress_bar=False)
            log(
                f"{preset}: simulated {len(data.populations)} animals, {len(data.animal_of_unit)} units "
                f"in {time.perf_counter() - t0:.1f} s"
            )
            run.run_preset(data, specs, bar)
    finally:
        torch.set_num_threads(old_threads)
        if bar is not None:
            bar.close()

    t0 = time.perf_counter()
    summary, differences, ablation = run.summarise([sp.name for sp in specs])
    log(f"bootstrap intervals: {time.perf_counter() - t0:.1f} s")
    speed_summary = _speed_summary(run.speed, [sp.name for sp in specs])
    checks = check_protocol(run.ledger, run.probes)
    checks["fixed_models_never_saw_benchmark_animals"] = True  # checked before the run (it raises otherwise)
    result = dict(
        command=command if command is not None else " ".join(["neuronid", *sys.argv[1:]]),
        date=time.strftime("%Y-%m-%d"),
        machine=_machine(),
        settings=asdict(settings),
        methods=[
            dict(name=sp.name, kind=sp.kind, description=sp.description, baseline=is_baseline(sp.name)) for sp in specs
        ],
        models=models,
        summary=summary,
        differences=differences,
        ablation=ablation,
        verdict=verdicts(summary, differences, ablation, settings.target_margin, settings.ablation_margin),
        label_efficiency=run.label_efficiency,
        speed_summary=speed_summary,
        checks=checks,
        folds=run.folds,
        speed=run.speed,
        ledger=run.ledger,
        elapsed_s=0.0,
        figures=[],
    )
    result["figures"] = _figures(run, result, out)
    result["elapsed_s"] = time.perf_counter() - t_start
    _write_outputs(out, run, result)
    log(f"benchmark finished in {result['elapsed_s'] / 60:.1f} min; results in {out}")
    _raise_on_failed_checks(checks, out)
    return result


def _json_normalised(obj: Any) -> Any:
    """``obj`` as it reads back from JSON (tuples become lists)."""
    return json.loads(json.dumps(obj))


def load_previous_run(output_dir: str | Path, settings: BenchmarkSettings) -> tuple[dict, dict]:
    """The ``results.json`` and ``predictions.json`` of a previous run in ``output_dir``, checked against ``settings``.

    Parameters
    ----------
    output_dir : str | Path
        The previous run's output folder.
    settings : BenchmarkSettings
        The settings of the re-run; they must equal the previous run's.

    Returns
    -------
    tuple of dict
        The previous results and predictions.

    Raises
    ------
    FileNotFoundError
        If either file is missing.
    ValueError
        If a file cannot be read, or the previous run's settings differ from ``settings``.
    """
    out = Path(output_dir)
    loaded = []
    for name in ("results.json", "predictions.json"):
        path = out / name
        if not path.is_file():
            raise FileNotFoundError(
                f"a re-run merges into a previous run, but {path} does not exist: run the full benchmark first"
            )
        try:
            loaded.append(json.loads(path.read_text()))
        except (OSError, ValueError) as err:
            raise ValueError(f"cannot read {path}: {err}") from None
    previous, predictions = loaded
    ours = _json_normalised(asdict(settings))
    theirs = previous.get("settings")
    if not isinstance(theirs, dict) or "methods" not in previous or "summary" not in previous:
        raise ValueError(f"{out / 'results.json'} is no benchmark result of this version: run the full benchmark")
    if theirs != ours:
        differ = sorted(k for k in set(ours) | set(theirs) if ours.get(k) != theirs.get(k))
        raise ValueError(
            f"{out / 'results.json'} was written with other settings (differing: {', '.join(differ)}); a re-run "
            "must use the settings of the run it merges into (e.g. --quick results cannot be merged into a full run)"
        )
    if sorted(predictions) != sorted(settings.presets):
        raise ValueError(
            f"{out / 'predictions.json'} holds presets {sorted(predictions)}, not {list(settings.presets)}"
        )
    return previous, predictions


def _decode_predictions(record: dict, preset: str) -> dict[tuple, np.ndarray]:
    """The ``(preset, task, protocol, probe, method) -> label per unit`` predictions of one preset of a record."""
    out = {}
    for task, entry in record[preset]["tasks"].items():
        classes = np.asarray(entry["classes"] + [""], dtype=object)  # index -1: no prediction
        for key, idx in entry["predictions"].items():
            protocol, probe, method = key.split("|", 2)
            out[(preset, task, protocol, probe, method)] = classes[np.asarray(idx, dtype=np.int64)]
    return out


def _merge_rows(
    previous: Sequence[dict], new: Sequence[dict], rerun: Sequence[str], presets: Sequence[str], methods: Sequence[str]
) -> list[dict]:
    """Records of every (preset, method) in a full run's order: the re-run methods' from ``new``, others' kept."""
    merged = []
    for preset in presets:
        for method in methods:
            source = new if method in rerun else previous
            merged += [r for r in source if r["preset"] == preset and r["method"] == method]
    return merged


def rerun_benchmark(
    output_dir: str | Path,
    methods: Sequence[str],
    settings: BenchmarkSettings = FULL,
    command: str | None = None,
    progress_bar: bool = True,
    log: Callable[[str], None] | None = print,
    verify_kept: bool = False,
) -> dict:
    """Re-run some rows of a previous run and merge them into its results, as a full run would have them.

    The named rows go through every protocol (TD, TZS, IZS, C tuned, label efficiency, timings, ledger) with
    the settings of the previous run in ``output_dir``. Every record of the other rows (folds, predictions,
    ledger, timings, label efficiency, model files) is kept from the previous ``results.json`` and
    ``predictions.json``; everything computed across rows (summary, paired bootstrap differences, verdicts,
    ablation, ``results.md``, figures) is recomputed from the merged records, exactly as :func:`run_benchmark`
    computes it. The embedding maps of kept rows are redrawn from a refit of their first test animal's IZS fit
    (the same corpus and seed as the original run), which doubles as a check that the current code still
    reproduces them: the refit's C=1 predictions of that animal must equal the stored ones (``verify_kept``
    extends the check to every kept row). The provenance goes to ``results["reruns"]`` (command, date,
    machine, wall time, rows and their model files' sha256, the kept rows checked and those that differed);
    ``command``, ``date``, ``machine`` and ``elapsed_s`` stay the original run's.

    Parameters
    ----------
    output_dir : str | Path
        The previous run's output folder; its files are replaced (atomically) by the merged ones.
    methods : sequence of str
        Names of the rows to re-run (rows of the previous run).
    settings : BenchmarkSettings, default: FULL
        Must equal the previous run's settings.
    command : str | None, default: None
        The re-run's command line for the provenance (None: ``sys.argv``).
    progress_bar : bool, default: True
        Show a tqdm progress bar over the re-run (preset, method) pairs.
    log : callable | None, default: print
        Receives one line per finished method and stage.
    verify_kept : bool, default: False
        Check every kept row (not only the figures' rows) by refitting its first test animal's IZS fit.

    Returns
    -------
    dict
        The merged content of ``results.json``.

    Raises
    ------
    FileNotFoundError
        If the previous ``results.json`` or ``predictions.json`` is missing, or a re-run row's model file.
    ValueError
        If the previous run's settings differ, a name is not a row of it, the current method table differs
        from the previous run's, a kept row loads a model file that changed since, or the simulated data
        differ from the previous run's.
    RuntimeError
        If a re-run model was pretrained on benchmark animals, or (after writing the outputs) a protocol check
        fails or a checked kept row is not reproduced by the current code.
    """
    import torch

    from ..inference import resolve_model

    log = log or (lambda _msg: None)
    t_start = time.perf_counter()
    out = Path(output_dir)
    previous, previous_predictions = load_previous_run(out, settings)
    names = [m["name"] for m in previous["methods"]]
    rerun = list(dict.fromkeys(methods))
    if not rerun:
        raise ValueError("name at least one method to re-run")
    unknown = [m for m in rerun if m not in names]
    if unknown:
        raise ValueError(f"unknown method(s) to re-run {unknown}; the rows of {out / 'results.json'}: {names}")
    try:
        current_files = {sp.name: sp.model_file for sp in method_specs(settings)}
        current = list(current_files)
    except FileNotFoundError:  # a kept row's model file is absent here: it is not needed
        current, current_files = None, {}
    if current is not None and current != names:
        raise ValueError(
            f"the current method table {current} differs from the rows of {out / 'results.json'} {names}: "
            "run the full benchmark"
        )
    specs = method_specs(replace(settings, methods=tuple(rerun)))
    overlaps = check_model_provenance(specs, settings)
    if overlaps:
        raise RuntimeError(
            "these models were pretrained on benchmark animals (same preset, animal id and simulation seed), so "
            f"their zero-shot scores would be leaked: {overlaps}; pretrain them on other animal ids"
        )
    new_models = _models_record(specs)
    for m in previous.get("models", []):  # a kept row whose model file changed would be stale
        if m["method"] in rerun:
            continue
        file = current_files.get(m["method"]) or m["file"]
        if file != "default" and not Path(file).is_file():
            continue  # absent here: cannot be checked (and is not needed)
        model = resolve_model(file)
        sha = model.sha256
        # a file of an older format keeps the checksum it was recorded with in its (verified) header
        if m["sha256"] not in (sha, model.stored_sha256):
            raise ValueError(
                f"the model file of kept row {m['method']!r} ({m['file']}) changed since the previous run "
                f"(sha256 {m['sha256'][:12]}… → {sha[:12]}…): re-run that row too"
            )
    checked = [m for m in names if m not in rerun and (verify_kept or m in FIGURE_METHODS)]
    check_specs = method_specs(replace(settings, methods=tuple(checked))) if checked else []

    run = _Run(settings, log)
    scratch = _Run(settings, lambda _msg: None)  # the kept rows' check fits: nothing of it is kept
    differ = []
    bar = None
    if progress_bar:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(settings.presets) * len(specs), desc="benchmark re-run", unit="method")
    old_threads = torch.get_num_threads()
    torch.set_num_threads(int(settings.num_threads))
    merged_predictions: dict[tuple, np.ndarray] = {}
    try:
        for preset in settings.presets:
            t0 = time.perf_counter()
            data = _Dataset(preset, settings, progress_bar=False)
            log(
                f"{preset}: simulated {len(data.populations)} animals, {len(data.animal_of_unit)} units "
                f"in {time.perf_counter() - t0:.1f} s"
            )
            stored = previous_predictions[preset]
            same = np.array_equal(np.asarray(stored["animal"]), data.animal_of_unit) and all(
                np.array_equal(
                    np.asarray(stored["tasks"][t]["classes"], dtype=object)[stored["tasks"][t]["y"]], data.y(t)
                )
                for t in TASKS
            )
            if not same:
                raise ValueError(f"{preset}: the simulated data differ from those of {out / 'predictions.json'}")
            run.run_preset(data, specs, bar)
            kept = _decode_predictions(previous_predictions, preset)
            for method in names:  # a full run's order
                source = run.predictions if method in rerun else kept
                merged_predictions.update({k: v for k, v in source.items() if k[0] == preset and k[4] == method})
            first = data.animal_of_unit == settings.tested_animals[0]
            for spec in check_specs:
                t0 = time.perf_counter()
                scratch.izs_example(data, spec)
                for task in TASKS:
                    key = (preset, task, "inductive_zero_shot", "C=1", spec.name)
                    if not np.array_equal(scratch.predictions[key][first].astype(str), kept[key][first].astype(str)):
                        differ.append(f"{preset}, {task}, {spec.name}")
                        log(f"  warning: {preset} {task} {spec.name}: the current code predicts otherwise")
                log(f"  {preset} {spec.name}: kept row checked ({time.perf_counter() - t0:.1f} s)")
            run.examples.update({k: v for k, v in scratch.examples.items() if k[0] == preset})
    finally:
        torch.set_num_threads(old_threads)
        if bar is not None:
            bar.close()
    run.predictions = merged_predictions
    new_probes = run.probes
    for key in ("folds", "ledger", "speed", "label_efficiency"):
        setattr(run, key, _merge_rows(previous[key], getattr(run, key), rerun, settings.presets, names))

    summary, differences, ablation = run.summarise(names)
    checks = check_protocol(run.ledger, new_probes)  # the kept rows' probes: their previous check
    checks["fixed_models_never_saw_benchmark_animals"] = True  # checked before the run (it raises otherwise)
    checks = {k: bool(v and previous["checks"].get(k, True)) for k, v in checks.items()}
    descriptions = {sp.name: sp.description for sp in specs}
    methods_record = [
        dict(m, description=descriptions[m["name"]]) if m["name"] in rerun else m for m in previous["methods"]
    ]
    models = [
        entry
        for name in names
        for entry in (new_models if name in rerun else previous.get("models", []))
        if entry["method"] == name
    ]
    result = dict(
        previous,
        methods=methods_record,
        models=models,
        summary=summary,
        differences=differences,
        ablation=ablation,
        verdict=verdicts(summary, differences, ablation, settings.target_margin, settings.ablation_margin),
        label_efficiency=run.label_efficiency,
        speed_summary=_speed_summary(run.speed, names),
        checks=checks,
        folds=run.folds,
        speed=run.speed,
        ledger=run.ledger,
        figures=[],
    )
    provenance = dict(
        command=command if command is not None else " ".join(["neuronid", *sys.argv[1:]]),
        date=time.strftime("%Y-%m-%d"),
        methods=rerun,
        models=new_models,
        machine=_machine(),
        kept_rows_checked=checked,
        kept_rows_differ=differ,
        elapsed_s=0.0,
    )
    result["reruns"] = list(previous.get("reruns", [])) + [provenance]
    result["figures"] = _figures(run, result, out)
    provenance["elapsed_s"] = time.perf_counter() - t_start
    _write_outputs(out, run, result)
    log(f"re-run of {rerun} finished in {provenance['elapsed_s'] / 60:.1f} min; merged results in {out}")
    _raise_on_failed_checks(checks, out)
    if differ:
        raise RuntimeError(
            f"the current code no longer reproduces these kept rows (first test animal, IZS): {differ}; the merged "
            f"results in {out} record it (reruns); re-run those rows too, or run the full benchmark"
        )
    return result


def readme_excerpt(result: dict, presets: Sequence[str] = ("hard", "varied")) -> str:
    """The part of a run's ``results.md`` the README quotes: the given presets' tables, differences, verdicts.

    Raises
    ------
    ValueError
        If ``result`` comes from the previous benchmark protocol (no pooled scores and differences).
    """
    if "differences" not in result or "test_animals" not in result.get("settings", {}):
        raise ValueError(
            "this results.json comes from the previous benchmark protocol (no pooled scores or differences); "
            "rerun python benchmarks/run_benchmark.py"
        )
    s = result["settings"]
    tested = s["test_animals"] if s["test_animals"] is not None else list(range(s["num_animals"]))
    lines = [
        f"Command: `{result['command']}` ({result['elapsed_s'] / 60:.0f} min on "
        f"{result['machine']['cpu_count']} CPU cores, {result['date']}); macro-F1 on the predictions pooled "
        f"over {len(tested)} held-out animals per preset, 95 % hierarchical bootstrap intervals "
        f"({s['bootstrap_resamples']} resamples); TD: mean ± std over split seeds "
        f"{', '.join(map(str, s['transductive_seeds']))}.",
        "",
        *_rerun_lines(result),
    ]
    lines += _preset_tables(result, [p for p in presets if p in s["presets"]])
    lines += _difference_table(result)
    lines += _verdict_lines(result)
    lines = ["#### " + line[3:] if line.startswith("## ") else line for line in lines]  # README sub-headings
    return "\n".join(lines).rstrip() + "\n"


def settings_from_args(quick: bool, **overrides: Any) -> BenchmarkSettings:
    """:data:`QUICK` or :data:`FULL` with the given non-None fields replaced."""
    base = QUICK if quick else FULL
    return replace(base, **{k: v for k, v in overrides.items() if v is not None})
