"""Benchmark suite: NuCLR's three evaluation protocols, our models and the baselines, in one run.

``neuronid benchmark [--quick]`` (or :func:`run_benchmark`) simulates animals of the ``easy`` and ``hard``
presets, fits every method and scores a linear probe on two tasks (cell type, brain region) under the three
protocols of NuCLR, with animals as the unit of generalisation:

``transductive``
    Self-supervised training sees every animal; the probe is trained and tested on a stratified random split
    of the units (train and test units may share an animal).
``transductive_zero_shot``
    Self-supervised training sees every animal, the held-out test animal included; the probe is trained on
    the other animals' labels and tested on the test animal, whose labels are never used.
``inductive_zero_shot``
    The test animal is never seen: self-supervised training excludes it and the frozen model embeds it.

For each preset and seed ``k`` the animals are split into probe-training animals, one validation animal
(to tune the probe's ``C``) and one test animal, rotating with ``k``. Probe: StandardScaler +
class-balanced LogisticRegression, with ``C = 1`` (the paper) and with ``C`` chosen on the validation animal
(or, in the transductive protocol, on a validation split of the training units); the chosen probe is refit
on all probe-training units. Metrics: macro-F1 and balanced accuracy, mean and standard deviation over seeds.

Methods (see :func:`method_specs`): ours (NuCLR-style), ours without its spatial (population) blocks, ours
with random weights, the shipped default model (pretrained on other simulated animals), NeurPIR, handcrafted single-unit features at 1 ms and at the model's bin size, the
population-coupling feature alone and with the single-unit features, LOLCAT (supervised), NEMO (needs
waveform templates) and NeuPRINT. Self-supervised models are first trained without the test animal (the
inductive model); the model for the two transductive protocols continues that training on all animals
(``transductive_steps``), or is refitted on all animals for baselines without warm starts. Methods that
learn nothing (features, random weights) give the same embedding in every protocol.

Every fit is recorded in a ledger (which animals its corpus held, whether it was given labels and of which
units), and :func:`check_protocol` verifies from the ledger that no held-out animal entered an inductive
fit, that self-supervised fits never received labels and that no test unit's label reached a supervised fit
or a probe. Time and peak memory of every fit and embedding are measured in the same run.
"""

from __future__ import annotations

import math
import os
import platform
import sys
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .data import SpikeTrainSet
from .evaluation import linear_probe

__all__ = [
    "BenchmarkSettings",
    "QUICK",
    "FULL",
    "PROTOCOLS",
    "TASKS",
    "SelfSupervisedEncoder",
    "method_specs",
    "animal_split",
    "check_protocol",
    "run_benchmark",
]

PROTOCOLS = ("transductive", "transductive_zero_shot", "inductive_zero_shot")
TASKS = ("cell_type", "brain_region")
OURS = "ours (NuCLR)"


@dataclass(frozen=True)
class BenchmarkSettings:
    """Everything that sets the size of a benchmark run.

    Parameters
    ----------
    presets : tuple of str, default: ("easy", "hard")
        Simulator presets, each a separate dataset.
    num_animals : int, default: 5
        Simulated animals per preset (at least 3: probe-training, validation and test animals).
    num_neurons : int, default: 150
        Simulated neurons per animal (one session each).
    duration_s : float, default: 240.0
        Recorded seconds per session.
    seeds : tuple of int, default: (0, 1, 2)
        One repetition per seed: the test animal rotates and every model is refitted with this seed.
    ssl_steps : int, default: 200
        Self-supervised training steps of our models (ours, no-spatial ablation, NeurPIR).
    transductive_steps : int, default: 60
        Further steps on all animals (test animal included) for the transductive protocols.
    batch_size : int, default: 8
        View pairs per step.
    max_units : int, default: 48
        Units per training view.
    baseline_steps : dict, default: {} (FULL: LOLCAT 200, NEMO 200, NeuPRINT 300)
        Optional ``steps`` overrides for LOLCAT, NEMO and NeuPRINT (keys ``"lolcat"``, ``"nemo"``,
        ``"neuprint"``; missing keys keep each baseline's default).
    methods : tuple of str | None, default: None
        Subset of the method names of :func:`method_specs` (None: all available).
    label_fractions : tuple of float, default: (0.01, 0.05, 0.1, 0.25, 0.5, 1.0)
        Fractions of probe-training units for the label-efficiency curve.
    scaling_animals : tuple of int, default: (1, 2, 4)
        Numbers of pretraining animals for the scaling curve (seed 0, inductive zero-shot).
    scaling_presets : tuple of str, default: ("hard",)
        Presets on which the scaling curve is measured (each point is one more pretraining run).
    c_grid : tuple of float, default: (0.01, 0.1, 1.0, 10.0)
        Candidate probe ``C`` values.
    transductive_test_fraction : float, default: 0.3
        Fraction of units held out for testing in the transductive protocol.
    num_threads : int, default: 2
        Torch CPU threads.
    simulation_seed : int, default: 0
        Simulator seed.
    """

    presets: tuple = ("easy", "hard")
    num_animals: int = 5
    num_neurons: int = 150
    duration_s: float = 240.0
    seeds: tuple = (0, 1, 2)
    ssl_steps: int = 200
    transductive_steps: int = 60
    batch_size: int = 8
    max_units: int = 48
    baseline_steps: dict = field(default_factory=dict)
    methods: tuple | None = None
    label_fractions: tuple = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0)
    scaling_animals: tuple = (1, 2, 4)
    scaling_presets: tuple = ("hard",)
    c_grid: tuple = (0.01, 0.1, 1.0, 10.0)
    transductive_test_fraction: float = 0.3
    num_threads: int = 2
    simulation_seed: int = 0

    def __post_init__(self):
        if not self.presets:
            raise ValueError("presets must name at least one simulator preset")
        if self.num_animals < 3:
            raise ValueError(f"num_animals must be >= 3 (train, validation, test), got {self.num_animals}")
        if not self.seeds:
            raise ValueError("seeds must hold at least one seed")
        if self.ssl_steps < 1 or self.transductive_steps < 1:
            raise ValueError("ssl_steps and transductive_steps must be >= 1")
        if not 0 < self.transductive_test_fraction < 1:
            raise ValueError("transductive_test_fraction must be in (0, 1)")
        if any(not 0 < f <= 1 for f in self.label_fractions):
            raise ValueError("label_fractions must lie in (0, 1]")
        if any(n < 1 or n > self.num_animals - 1 for n in self.scaling_animals):
            raise ValueError(f"scaling_animals must lie in [1, num_animals - 1 = {self.num_animals - 1}]")


#: The committed full run: 44 min on 2 CPU cores (benchmarks/results/benchmark/results.json).
FULL = BenchmarkSettings(baseline_steps=dict(lolcat=200, nemo=200, neuprint=300))

#: Smoke test of the protocol wiring (CI): every method and protocol on tiny data, a few minutes on 2 cores.
QUICK = BenchmarkSettings(
    num_animals=3,
    num_neurons=40,
    duration_s=60.0,
    seeds=(0, 1, 2),
    ssl_steps=4,
    transductive_steps=2,
    batch_size=4,
    max_units=16,
    baseline_steps=dict(lolcat=10, nemo=10, neuprint=10),
    label_fractions=(0.25, 1.0),
    scaling_animals=(1, 2),
    scaling_presets=("easy", "hard"),
    c_grid=(0.1, 1.0),
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

        from .bundle import ModelBundle
        from .methods import get_method
        from .training import pretrain

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
        from .inference import embed_populations

        if not hasattr(self, "bundle_"):
            raise ValueError("call fit() before transform()")
        return [
            embed_populations(self.bundle_, [pop], seed=self.seed, num_threads=self.num_threads).embedding.astype(
                np.float64
            )
            for pop in populations
        ]


class PretrainedModel:
    """A model file used as it is (no training on the benchmark's animals): a fixed-embedding method.

    Parameters
    ----------
    model : str, default: "default"
        ``"default"`` (the shipped model) or a path to a model file.
    seed : int, default: 0
        Seed of the inference engine's unit grouping.
    num_threads : int | None, default: None
        Torch CPU threads.
    """

    supervised = False
    needs_templates = False

    def __init__(self, model: str = "default", seed: int = 0, num_threads: int | None = None):
        self.model = model
        self.seed = seed
        self.num_threads = num_threads

    def fit(self, populations: Sequence[SpikeTrainSet], labels=None, templates=None) -> "PretrainedModel":
        """Load the model (nothing is learned from ``populations``)."""
        from .inference import resolve_model

        self.bundle_ = resolve_model(self.model)
        return self

    transform = SelfSupervisedEncoder.transform


# ---------------------------------------------------------------------------------------------------------------------
# method table


@dataclass(frozen=True)
class MethodSpec:
    """How the benchmark builds and treats one method.

    ``kind`` is ``"fixed"`` (learns nothing from the data: one embedding serves every protocol),
    ``"ssl"`` (self-supervised: an inductive fit and a transductive one) or ``"supervised"`` (fitted on the
    probe-training labels of each task and split).
    """

    name: str
    kind: str
    build: Callable[[int], Any]
    continues: bool = False  # transductive model = the inductive one trained further on all animals
    description: str = ""


def method_specs(settings: BenchmarkSettings) -> list[MethodSpec]:
    """The methods of a run, in table order."""
    from .methods.nuclr import NuCLRConfig

    s = settings
    threads = s.num_threads
    ours_config = NuCLRConfig.cpu()
    no_spatial = NuCLRConfig.cpu(
        temporal_layers=ours_config.temporal_layers + ours_config.spatiotemporal_layers, spatiotemporal_layers=0
    )

    def ssl(method, config, steps):
        return lambda seed: SelfSupervisedEncoder(
            method, config, steps=steps, batch_size=s.batch_size, max_units=s.max_units, seed=seed, num_threads=threads
        )

    from .baselines.features import ConcatenatedFeatures, PopulationCouplingFeatures, SingleUnitFeatures

    bin_s = ours_config.bin_s
    specs = [
        MethodSpec(OURS, "ssl", ssl("nuclr", ours_config, s.ssl_steps), True, "NuCLR cpu() config"),
        MethodSpec(
            "ours, no spatial blocks", "ssl", ssl("nuclr", no_spatial, s.ssl_steps), True,
            "same depth, every block temporal-only: no population context",
        ),
        MethodSpec("ours, random weights", "fixed", ssl("nuclr", ours_config, 0), False, "untrained encoder"),
        MethodSpec(
            "ours, shipped default model", "fixed", lambda seed: PretrainedModel("default", seed, threads), False,
            "2,000 steps on other simulated animals (varied + easy presets); never saw the benchmark's animals",
        ),
    ]
    from .methods.neurpir import NeurPIRConfig

    specs.append(
        MethodSpec(
            "NeurPIR", "ssl", ssl("neurpir", NeurPIRConfig.cpu(num_covariates=2), s.ssl_steps), True,
            "VICReg, segment-length augmentation, stimulus covariates",
        )
    )
    specs += [
        MethodSpec("single-unit features 1 ms", "fixed", lambda seed: SingleUnitFeatures(0.001), False,
                   "rate, CV, CV2, burst fraction, log-ISI histogram, ACG (SpikeInterface)"),
        MethodSpec(f"single-unit features {bin_s * 1000:g} ms", "fixed", lambda seed: SingleUnitFeatures(bin_s),
                   False, "the same at the model's bin size"),
        MethodSpec("population coupling", "fixed", lambda seed: PopulationCouplingFeatures(), False,
                   "correlation with the summed activity of the other units"),
        MethodSpec(
            "single-unit 1 ms + population coupling", "fixed",
            lambda seed: ConcatenatedFeatures([SingleUnitFeatures(0.001), PopulationCouplingFeatures()]), False, "",
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
                cls.__name__, kind,
                (lambda c, o: lambda seed: c(seed=seed, num_threads=threads, **o))(cls, overrides),
                False, description,
            )
        )
    if s.methods is not None:
        known = {spec.name for spec in specs}
        unknown = sorted(set(s.methods) - known)
        if unknown:
            raise ValueError(f"unknown benchmark methods {unknown}; available: {sorted(known)}")
        specs = [spec for spec in specs if spec.name in s.methods]
    return specs


# ---------------------------------------------------------------------------------------------------------------------
# splits, ledger, probes


def animal_split(num_animals: int, seed_index: int) -> dict[str, list[int]]:
    """Probe-training, validation and test animals (indices) of repetition ``seed_index``.

    The test animal rotates from the last one backwards; the validation animal is the one before it.
    """
    test = (num_animals - 1 - seed_index) % num_animals
    val = (test - 1) % num_animals
    train = [a for a in range(num_animals) if a not in (test, val)]
    return dict(train=train, val=[val], test=[test])


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


def _evaluate_split(x, y, train, val, test, c_grid) -> dict:
    """Probe scores with C=1 and with C tuned on ``val``; index arrays select units of ``x``/``y``."""
    ok = _finite_rows(x)
    train, val, test = train[ok[train]], val[ok[val]], test[ok[test]]
    fit_idx = np.concatenate([train, val])
    if len(np.unique(y[fit_idx])) < 2 or len(test) == 0:
        raise ValueError("the probe needs units of at least two classes to train on and test units to score")
    def probe(fit, score, C):
        r = linear_probe(x[fit], y[fit], x[score], y[score], C=C)
        return dict(macro_f1=r.macro_f1, balanced_accuracy=r.balanced_accuracy, C=float(C), predictions=r.predictions)

    out = {"C=1": probe(fit_idx, test, 1.0)}
    best_c, best = 1.0, -1.0
    if len(np.unique(y[train])) >= 2 and len(val):
        for c in c_grid:
            f1 = probe(train, val, c)["macro_f1"]
            if f1 > best + 1e-12:
                best_c, best = float(c), f1
    out["C tuned"] = out["C=1"] if best_c == 1.0 else probe(fit_idx, test, best_c)
    out["test_index"] = test
    out["probe_train_index"] = fit_idx
    return out


def _transductive_split(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stratified neuron-level split: (train, val, test) unit indices; val is a quarter of the train units."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(y))
    fit_idx, test = train_test_split(idx, test_size=fraction, stratify=y, random_state=seed)
    train, val = train_test_split(fit_idx, test_size=0.25, stratify=y[fit_idx], random_state=seed)
    return np.sort(train), np.sort(val), np.sort(test)


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


# ---------------------------------------------------------------------------------------------------------------------
# the run


class _Dataset:
    """One preset's simulated animals as model input, with labels and (if available) waveform templates."""

    def __init__(self, preset: str, settings: BenchmarkSettings, progress_bar: bool):
        from .simulate import simulate_dataset, simulate_templates

        sessions = simulate_dataset(
            preset,
            animals=list(range(settings.num_animals)),
            num_neurons=settings.num_neurons,
            duration_s=settings.duration_s,
            seed=settings.simulation_seed,
            progress_bar=progress_bar,
        )
        self.preset = preset
        self.sessions = sessions
        self.populations = [s.to_spike_train_set() for s in sessions]
        self.labels = {task: [np.asarray(getattr(s, task)).astype(str) for s in sessions] for task in TASKS}
        self.animal_of_unit = np.concatenate([np.full(s.num_units, a) for a, s in enumerate(sessions)])
        self.templates = [simulate_templates(s, seed=settings.simulation_seed) for s in sessions]

    def y(self, task: str) -> np.ndarray:
        return np.concatenate(self.labels[task])


class _Run:
    def __init__(self, settings: BenchmarkSettings, log: Callable[[str], None]):
        self.settings = settings
        self.log = log
        self.ledger: list[dict] = []
        self.probes: list[dict] = []
        self.rows: list[dict] = []
        self.speed: list[dict] = []
        self.examples: dict = {}  # (preset, method) -> embedding + labels of the test animal, seed 0, inductive

    # -- fitting with bookkeeping ------------------------------------------------------------------------------

    def _fit(self, spec: MethodSpec, seed: int, data: _Dataset, corpus: list[int], protocol: str, split: dict,
             labels: list[np.ndarray] | None = None, init=None):
        est = spec.build(seed)
        pops = [data.populations[a] for a in corpus]
        kwargs: dict = {}
        if getattr(est, "needs_templates", False):
            kwargs["templates"] = [data.templates[a] for a in corpus]
        if labels is not None:
            kwargs["labels"] = [labels[a] for a in corpus]
        if init is not None:
            kwargs["init"] = init
            est.steps = self.settings.transductive_steps
        labelled = 0 if labels is None else int(sum((labels[a] != "").sum() for a in corpus))
        labelled_test = 0
        if labels is not None:
            labelled_test = int(sum((labels[a] != "").sum() for a in split["test"] if a in corpus))
            if split.get("test_units") is not None:
                flat = np.concatenate([labels[a] for a in range(len(labels))])
                labelled_test = int((flat[split["test_units"]] != "").sum())
        with _PeakMemory() as meter:
            est.fit(pops, **kwargs)
        self.ledger.append(
            dict(
                preset=data.preset, seed=seed, method=spec.name, kind=spec.kind, protocol=protocol,
                corpus_animals=[int(a) for a in corpus], test_animals=[int(a) for a in split["test"]],
                labelled_units=labelled, labelled_test_units=labelled_test,
                continued_from_inductive=init is not None,
            )
        )
        self.speed.append(dict(preset=data.preset, seed=seed, method=spec.name, stage="fit", protocol=protocol,
                               seconds=meter.seconds, peak_mib=meter.peak_mib, num_units=sum(p.num_units for p in pops)))
        return est

    def _embed(self, spec: MethodSpec, est, data: _Dataset, seed: int, protocol: str) -> np.ndarray:
        kwargs = {"templates": data.templates} if getattr(est, "needs_templates", False) else {}
        with _PeakMemory() as meter:
            parts = est.transform(data.populations, **kwargs)
        self.speed.append(dict(preset=data.preset, seed=seed, method=spec.name, stage="embed", protocol=protocol,
                               seconds=meter.seconds, peak_mib=meter.peak_mib,
                               num_units=sum(p.num_units for p in data.populations)))
        return np.concatenate([np.asarray(p, dtype=np.float64) for p in parts])

    # -- scoring -----------------------------------------------------------------------------------------------

    def _score(self, x, data, task, protocol, spec, seed, split, tsplit=None):
        y = data.y(task)
        if protocol == "transductive":
            train, val, test = tsplit
        else:
            animal = data.animal_of_unit
            train = np.flatnonzero(np.isin(animal, split["train"]))
            val = np.flatnonzero(np.isin(animal, split["val"]))
            test = np.flatnonzero(np.isin(animal, split["test"]))
        result = _evaluate_split(x, y, train, val, test, self.settings.c_grid)
        self.probes.append(dict(preset=data.preset, seed=seed, method=spec.name, task=task, protocol=protocol,
                                overlap=int(np.intersect1d(result["probe_train_index"], test).size)))
        for variant in ("C=1", "C tuned"):
            r = result[variant]
            self.rows.append(dict(
                preset=data.preset, task=task, protocol=protocol, method=spec.name, seed=seed, probe=variant,
                C=r["C"], macro_f1=r["macro_f1"], balanced_accuracy=r["balanced_accuracy"],
                num_train_units=int(len(train) + len(val)), num_test_units=int(len(result["test_index"])),
            ))
        if protocol == "inductive_zero_shot" and seed == self.settings.seeds[0]:
            t = result["test_index"]
            self.examples.setdefault((data.preset, spec.name), {})[task] = dict(
                x=x[t], y=y[t], pred=result["C=1"]["predictions"]
            )
        return result

    # -- one preset x seed ---------------------------------------------------------------------------------------

    def run_seed(self, data: _Dataset, seed_index: int, seed: int, specs: Sequence[MethodSpec]) -> dict:
        split = animal_split(self.settings.num_animals, seed_index)
        everyone = list(range(self.settings.num_animals))
        not_test = [a for a in everyone if a not in split["test"]]
        tsplits = {task: _transductive_split(data.y(task), self.settings.transductive_test_fraction, seed)
                   for task in TASKS}
        kept = {}
        for spec in specs:
            t0 = time.perf_counter()
            if spec.kind == "fixed":
                est = self._fit(spec, seed, data, everyone, "fixed", split)
                x = self._embed(spec, est, data, seed, "all")
                for task in TASKS:
                    for protocol in PROTOCOLS:
                        self._score(x, data, task, protocol, spec, seed, split, tsplits[task])
            elif spec.kind == "ssl":
                est_i = self._fit(spec, seed, data, not_test, "inductive", split)
                x_i = self._embed(spec, est_i, data, seed, "inductive")
                if spec.continues:
                    est_t = self._fit(spec, seed, data, everyone, "transductive", split, init=est_i)
                else:
                    est_t = self._fit(spec, seed, data, everyone, "transductive", split)
                x_t = self._embed(spec, est_t, data, seed, "transductive")
                for task in TASKS:
                    self._score(x_t, data, task, "transductive", spec, seed, split, tsplits[task])
                    self._score(x_t, data, task, "transductive_zero_shot", spec, seed, split)
                    self._score(x_i, data, task, "inductive_zero_shot", spec, seed, split)
                if spec.name == OURS:
                    kept["inductive"] = (est_i, x_i)
            else:  # supervised: fitted on the probe-training labels of each task and split
                for task in TASKS:
                    y_parts = data.labels[task]
                    zs_labels = [y if a not in split["test"] else np.full(y.shape, "", dtype=y.dtype)
                                 for a, y in enumerate(y_parts)]
                    est = self._fit(spec, seed, data, everyone, "zero_shot", split, labels=zs_labels)
                    x = self._embed(spec, est, data, seed, "zero_shot")
                    self._score(x, data, task, "transductive_zero_shot", spec, seed, split)
                    self._score(x, data, task, "inductive_zero_shot", spec, seed, split)
                    train, val, test = tsplits[task]
                    flat = np.full(len(data.y(task)), "", dtype=object)
                    flat[np.concatenate([train, val])] = data.y(task)[np.concatenate([train, val])]
                    bounds = np.cumsum([0] + [len(y) for y in y_parts])
                    t_labels = [flat[bounds[a]:bounds[a + 1]].astype(str) for a in range(len(y_parts))]
                    est = self._fit(spec, seed, data, everyone, "transductive", dict(split, test_units=test),
                                    labels=t_labels)
                    x = self._embed(spec, est, data, seed, "transductive")
                    self._score(x, data, task, "transductive", spec, seed, split, tsplits[task])
            self.log(f"  {data.preset} seed {seed} {spec.name}: {time.perf_counter() - t0:.1f} s")
        return kept

    # -- curves ----------------------------------------------------------------------------------------------

    def label_efficiency(self, data: _Dataset, x: np.ndarray, seed_index: int, seed: int) -> list[dict]:
        split = animal_split(self.settings.num_animals, seed_index)
        animal = data.animal_of_unit
        fit_idx = np.flatnonzero(~np.isin(animal, split["test"]))
        test = np.flatnonzero(np.isin(animal, split["test"]))
        rows = []
        rng = np.random.default_rng(seed)
        for task in TASKS:
            y = data.y(task)
            for fraction in self.settings.label_fractions:
                # stratified subsample with at least one unit per class
                chosen = []
                for c in np.unique(y[fit_idx]):
                    members = fit_idx[y[fit_idx] == c]
                    k = max(1, int(round(fraction * len(members))))
                    chosen.append(rng.choice(members, size=k, replace=False))
                chosen = np.sort(np.concatenate(chosen))
                ok_train = chosen[_finite_rows(x[chosen])]
                ok_test = test[_finite_rows(x[test])]
                r = linear_probe(x[ok_train], y[ok_train], x[ok_test], y[ok_test])
                rows.append(dict(preset=data.preset, task=task, seed=seed, fraction=float(fraction),
                                 num_labelled_units=int(len(ok_train)), macro_f1=r.macro_f1,
                                 balanced_accuracy=r.balanced_accuracy))
        return rows

    def scaling(self, data: _Dataset, spec: MethodSpec) -> list[dict]:
        seed = self.settings.seeds[0]
        split = animal_split(self.settings.num_animals, 0)
        candidates = split["train"] + split["val"]
        rows = []
        for n in self.settings.scaling_animals:
            corpus = candidates[:n]
            est = self._fit(spec, seed, data, corpus, "inductive", split)
            x = self._embed(spec, est, data, seed, "inductive")
            for task in TASKS:
                animal = data.animal_of_unit
                train = np.flatnonzero(np.isin(animal, split["train"]))
                val = np.flatnonzero(np.isin(animal, split["val"]))
                test = np.flatnonzero(np.isin(animal, split["test"]))
                r = _evaluate_split(x, data.y(task), train, val, test, self.settings.c_grid)["C=1"]
                rows.append(dict(preset=data.preset, task=task, num_pretraining_animals=int(n),
                                 pretraining_units=int(sum(data.populations[a].num_units for a in corpus)),
                                 macro_f1=r["macro_f1"], balanced_accuracy=r["balanced_accuracy"]))
            self.log(f"  scaling {data.preset}: {n} animals done")
        return rows


def _summarise(rows: Sequence[dict]) -> list[dict]:
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["preset"], r["task"], r["protocol"], r["method"], r["probe"]), []).append(r)
    out = []
    for (preset, task, protocol, method, probe), rs in groups.items():
        f1 = np.array([r["macro_f1"] for r in rs])
        ba = np.array([r["balanced_accuracy"] for r in rs])
        out.append(dict(preset=preset, task=task, protocol=protocol, method=method, probe=probe, num_seeds=len(rs),
                        macro_f1_mean=float(f1.mean()), macro_f1_std=float(f1.std(ddof=1)) if len(rs) > 1 else 0.0,
                        balanced_accuracy_mean=float(ba.mean()),
                        balanced_accuracy_std=float(ba.std(ddof=1)) if len(rs) > 1 else 0.0))
    return out


def _verdict(summary: Sequence[dict], preset: str = "hard", protocol: str = "inductive_zero_shot") -> dict:
    """Does ours beat every baseline on ``preset``, per task (macro-F1 mean, C=1)?

    Ablations of ours (rows starting with "ours") are not baselines. ``within_one_std`` lists the baselines
    below ours by less than the larger of the two standard deviations: no clear win over those.
    """
    verdict = {}
    for task in TASKS:
        rows = {r["method"]: r for r in summary if r["preset"] == preset and r["task"] == task
                and r["protocol"] == protocol and r["probe"] == "C=1"}
        if OURS not in rows:
            continue
        ours = rows[OURS]["macro_f1_mean"]
        better = sorted(
            ((m, r["macro_f1_mean"]) for m, r in rows.items()
             if m != OURS and not m.startswith("ours") and r["macro_f1_mean"] >= ours),
            key=lambda t: -t[1],
        )
        spread = rows[OURS]["macro_f1_std"]
        close = sorted(
            m for m, r in rows.items()
            if not m.startswith("ours") and r["macro_f1_mean"] < ours
            and ours - r["macro_f1_mean"] < max(spread, r["macro_f1_std"])
        )
        verdict[task] = dict(ours=ours, ours_std=spread, beats_every_baseline=not better,
                             baselines_at_or_above=[dict(method=m, macro_f1=v) for m, v in better],
                             within_one_std=close)
    return verdict


# ---------------------------------------------------------------------------------------------------------------------
# reporting


def _fmt(mean: float, std: float) -> str:
    return f"{mean:.3f} ± {std:.3f}"


def _preset_tables(result: dict, presets: Sequence[str]) -> list[str]:
    """The markdown tables (one per preset and task) of a run."""
    lines: list[str] = []
    summary = result["summary"]
    methods = result["methods"]
    for preset in presets:
        for task in TASKS:
            lines += [f"## {preset} — {task.replace('_', ' ')}", "",
                      "| method | TD | TZS | IZS | IZS, C tuned | IZS balanced acc. |",
                      "|---|---|---|---|---|---|"]
            for m in methods:
                cell = {}
                for r in summary:
                    if r["preset"] == preset and r["task"] == task and r["method"] == m["name"]:
                        cell[(r["protocol"], r["probe"])] = r
                if not cell:
                    continue
                get = lambda p, v="C=1", k="macro_f1": (  # noqa: E731
                    _fmt(cell[(p, v)][f"{k}_mean"], cell[(p, v)][f"{k}_std"]) if (p, v) in cell else "–")
                name = f"**{m['name']}**" if m["name"] == OURS else m["name"]
                lines.append(
                    f"| {name} | {get('transductive')} | {get('transductive_zero_shot')} | "
                    f"{get('inductive_zero_shot')} | {get('inductive_zero_shot', 'C tuned')} | "
                    f"{get('inductive_zero_shot', 'C=1', 'balanced_accuracy')} |"
                )
            lines.append("")
    return lines


def _verdict_lines(result: dict) -> list[str]:
    """The computed answer to "does ours beat every baseline on hard?", as markdown lines."""
    lines: list[str] = []
    if result.get("verdict"):
        lines += ["## Does ours beat every baseline on `hard` (inductive zero-shot, macro-F1, C=1)?", ""]
        for task, v in result["verdict"].items():
            if v["beats_every_baseline"]:
                close = (f"; not by more than one std over: {', '.join(v['within_one_std'])}"
                         if v["within_one_std"] else "")
                lines.append(f"- {task}: **yes** (ours {v['ours']:.3f} ± {v['ours_std']:.3f}{close}).")
            else:
                others = ", ".join(f"{b['method']} {b['macro_f1']:.3f}" for b in v["baselines_at_or_above"])
                lines.append(f"- {task}: **no** — ours {v['ours']:.3f}; at or above it: {others}.")
        lines.append("")
    return lines


def _markdown(result: dict) -> str:
    s = result["settings"]
    lines = [
        "# Benchmark results",
        "",
        f"Command: `{result['command']}`  ",
        f"Wall time: {result['elapsed_s'] / 60:.1f} min on {result['machine']['cpu_count']} CPU cores "
        f"({result['machine']['platform']}), torch {result['machine']['torch']}, {result['date']}.",
        "",
        f"Data: simulator presets {', '.join(s['presets'])}; {s['num_animals']} animals × {s['num_neurons']} neurons × "
        f"{s['duration_s']:g} s per preset; seeds {', '.join(map(str, s['seeds']))} (test animal rotates with the seed). "
        f"Self-supervised training: {s['ssl_steps']} steps (+{s['transductive_steps']} on all animals for the "
        f"transductive protocols), batch {s['batch_size']} × ≤{s['max_units']} units.",
        "",
        "Cells: macro-F1, mean ± std over seeds, linear probe (StandardScaler + balanced logistic regression). "
        "TD = transductive, TZS = transductive zero-shot, IZS = inductive zero-shot (held-out animal never seen). "
        "C=1 is the paper's probe; 'C tuned' chooses C on the validation animal. Chance macro-F1 ≈ 1 / classes.",
        "",
    ]
    lines += _preset_tables(result, s["presets"])
    lines += _verdict_lines(result)
    speed = result["speed_summary"]
    lines += ["## Speed and memory (same run)", "",
              "| method | fit time per fit (s) | embed time per preset (s) | peak memory (MiB above baseline) |",
              "|---|---|---|---|"]
    for m in result["methods"]:
        if m["name"] in speed:
            sp = speed[m["name"]]
            lines.append(f"| {m['name']} | {sp['fit_s_mean']:.1f} | {sp['embed_s_mean']:.1f} | {sp['peak_mib_max']:.0f} |")
    lines += ["", "Checks of the protocol wiring (from the ledger of every fit and probe):", ""]
    lines += [f"- {k.replace('_', ' ')}: {'passed' if v else 'FAILED'}" for k, v in result["checks"].items()]
    lines += ["", "Figures: " + ", ".join(f"`{f}`" for f in result["figures"]), ""]
    return "\n".join(lines)


def _figures(run: _Run, result: dict, out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from .plots import plot_confusion_matrix, plot_embedding_map, save_figure

    names = []
    methods = [m["name"] for m in result["methods"]]
    for preset in result["settings"]["presets"]:
        for task in TASKS:
            present = [m for m in methods if task in run.examples.get((preset, m), {})]
            if not present:
                continue
            cols = min(4, len(present))
            rows_n = math.ceil(len(present) / cols)
            for kind in ("embedding_map", "confusion"):
                fig, axes = plt.subplots(rows_n, cols, figsize=(4.2 * cols, 3.8 * rows_n), squeeze=False)
                for ax, m in zip(axes.ravel(), present):
                    ex = run.examples[(preset, m)][task]
                    ok = _finite_rows(ex["x"])
                    if kind == "embedding_map":
                        plot_embedding_map(ex["x"][ok], ex["y"][ok], ax=ax, title=m)
                    else:
                        plot_confusion_matrix(ex["y"][ok], ex["pred"], ax=ax, title=m)
                for ax in axes.ravel()[len(present):]:
                    ax.axis("off")
                fig.suptitle(f"{preset}, {task.replace('_', ' ')}: held-out animal (inductive zero-shot, seed "
                             f"{result['settings']['seeds'][0]})")
                fig.tight_layout()
                name = f"{kind}_{preset}_{task}.png"
                save_figure(fig, out / name)
                plt.close(fig)
                names.append(name)
    if result["label_efficiency"]:
        fig, axes = plt.subplots(1, len(TASKS), figsize=(5 * len(TASKS), 3.8), squeeze=False)
        for ax, task in zip(axes[0], TASKS):
            for preset in result["settings"]["presets"]:
                rs = [r for r in result["label_efficiency"] if r["preset"] == preset and r["task"] == task]
                fr = sorted({r["fraction"] for r in rs})
                mean = [np.mean([r["macro_f1"] for r in rs if r["fraction"] == f]) for f in fr]
                ax.plot(fr, mean, "o-", label=preset)
            ax.set_xscale("log")
            ax.set_xlabel("fraction of probe-training labels")
            ax.set_ylabel("macro-F1 (held-out animal)")
            ax.set_title(f"{OURS}: {task.replace('_', ' ')}")
            ax.legend(frameon=False)
        fig.tight_layout()
        save_figure(fig, out / "label_efficiency.png")
        plt.close(fig)
        names.append("label_efficiency.png")
    if result["scaling"]:
        fig, axes = plt.subplots(1, len(TASKS), figsize=(5 * len(TASKS), 3.8), squeeze=False)
        for ax, task in zip(axes[0], TASKS):
            for preset in result["settings"]["presets"]:
                rs = [r for r in result["scaling"] if r["preset"] == preset and r["task"] == task]
                ax.plot([r["num_pretraining_animals"] for r in rs], [r["macro_f1"] for r in rs], "o-", label=preset)
            ax.set_xlabel("pretraining animals")
            ax.set_ylabel("macro-F1 (held-out animal)")
            ax.set_title(f"{OURS}: {task.replace('_', ' ')}")
            ax.legend(frameon=False)
        fig.tight_layout()
        save_figure(fig, out / "scaling.png")
        plt.close(fig)
        names.append("scaling.png")
    return names


def run_benchmark(
    output_dir: str | Path,
    settings: BenchmarkSettings = FULL,
    command: str | None = None,
    progress_bar: bool = True,
    log: Callable[[str], None] | None = print,
) -> dict:
    """Run the benchmark and write ``results.json``, ``results.md`` and the figures into ``output_dir``.

    Parameters
    ----------
    output_dir : str | Path
        Folder for the outputs (created; files in it are replaced atomically).
    settings : BenchmarkSettings, default: FULL
        Size of the run (:data:`FULL` or :data:`QUICK`, or your own).
    command : str | None, default: None
        The command line recorded in the results (None: ``sys.argv``).
    progress_bar : bool, default: True
        Show a tqdm progress bar over the (preset, seed) repetitions.
    log : callable | None, default: print
        Receives one line per finished method and stage.

    Returns
    -------
    dict
        The content of ``results.json``.

    Raises
    ------
    RuntimeError
        If a protocol check fails (the outputs are still written, with the failed check).
    """
    import torch

    from ._io import atomic_path, write_json

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    log = log or (lambda _msg: None)
    t_start = time.perf_counter()
    specs = method_specs(settings)
    run = _Run(settings, log)
    label_eff: list[dict] = []
    scaling: list[dict] = []
    bar = None
    if progress_bar:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(settings.presets) * len(settings.seeds), desc="benchmark", unit="seed")
    old_threads = torch.get_num_threads()
    torch.set_num_threads(int(settings.num_threads))
    try:
        for preset in settings.presets:
            t0 = time.perf_counter()
            data = _Dataset(preset, settings, progress_bar=False)
            log(f"{preset}: simulated {len(data.sessions)} animals, {len(data.animal_of_unit)} units "
                f"in {time.perf_counter() - t0:.1f} s")
            for k, seed in enumerate(settings.seeds):
                kept = run.run_seed(data, k, seed, specs)
                if "inductive" in kept:
                    label_eff += run.label_efficiency(data, kept["inductive"][1], k, seed)
                if bar is not None:
                    bar.update(1)
            ours = next((sp for sp in specs if sp.name == OURS), None)
            if ours is not None and settings.scaling_animals and preset in settings.scaling_presets:
                scaling += run.scaling(data, ours)
    finally:
        torch.set_num_threads(old_threads)
        if bar is not None:
            bar.close()

    summary = _summarise(run.rows)
    speed_summary = {}
    for sp in specs:
        fits = [r for r in run.speed if r["method"] == sp.name and r["stage"] == "fit"]
        embeds = [r for r in run.speed if r["method"] == sp.name and r["stage"] == "embed"]
        if fits:
            speed_summary[sp.name] = dict(
                fit_s_mean=float(np.mean([r["seconds"] for r in fits])),
                embed_s_mean=float(np.mean([r["seconds"] for r in embeds])) if embeds else float("nan"),
                peak_mib_max=float(max(r["peak_mib"] for r in fits + embeds)),
                num_fits=len(fits),
            )
    checks = check_protocol(run.ledger, run.probes)
    import sklearn

    result = dict(
        command=command if command is not None else " ".join(["neuronid", *sys.argv[1:]]),
        date=time.strftime("%Y-%m-%d"),
        machine=dict(platform=platform.platform(), cpu_count=os.cpu_count(), python=platform.python_version(),
                     torch=torch.__version__, numpy=np.__version__, sklearn=sklearn.__version__),
        settings=asdict(settings),
        methods=[dict(name=sp.name, kind=sp.kind, description=sp.description) for sp in specs],
        summary=summary,
        verdict=_verdict(summary) if "hard" in settings.presets else {},
        label_efficiency=label_eff,
        scaling=scaling,
        speed_summary=speed_summary,
        checks=checks,
        rows=run.rows,
        speed=run.speed,
        ledger=run.ledger,
        elapsed_s=0.0,
        figures=[],
    )
    result["figures"] = _figures(run, result, out)
    result["elapsed_s"] = time.perf_counter() - t_start
    write_json(out / "results.json", result)
    with atomic_path(out / "results.md") as tmp:
        tmp.write_text(_markdown(result))
    log(f"benchmark finished in {result['elapsed_s'] / 60:.1f} min; results in {out}")
    failed = [k for k, v in checks.items() if not v]
    if failed:
        raise RuntimeError(f"protocol checks failed: {failed}; see {out / 'results.json'} (ledger)")
    return result


def readme_excerpt(result: dict, presets: Sequence[str] = ("hard",)) -> str:
    """The part of a run's ``results.md`` the README quotes: the given presets' tables and the verdict."""
    lines = [f"Command: `{result['command']}` ({result['elapsed_s'] / 60:.0f} min on "
             f"{result['machine']['cpu_count']} CPU cores, {result['date']}); macro-F1, mean ± std over seeds "
             f"{', '.join(map(str, result['settings']['seeds']))}.", ""]
    lines += _preset_tables(result, [p for p in presets if p in result["settings"]["presets"]])
    lines += _verdict_lines(result)
    lines = ["#### " + line[3:] if line.startswith("## ") else line for line in lines]  # README sub-headings
    return "\n".join(lines).rstrip() + "\n"


def settings_from_args(quick: bool, **overrides: Any) -> BenchmarkSettings:
    """:data:`QUICK` or :data:`FULL` with the given non-None fields replaced."""
    base = QUICK if quick else FULL
    return replace(base, **{k: v for k, v in overrides.items() if v is not None})
