"""Model adapters: every row of the benchmark behind one estimator interface, and the table of rows.

Our models become estimators with the baselines' interface (:mod:`spikeinterface_neuronid.benchmark.baselines`):
:class:`~spikeinterface_neuronid.benchmark.SelfSupervisedEncoder` trains a registered self-supervised method (or
keeps its random weights), :class:`~spikeinterface_neuronid.benchmark.PretrainedModel` loads a model file (the
shipped model, an ablation) and optionally fine-tunes it transductively.
:func:`~spikeinterface_neuronid.benchmark.method_specs` wraps them and the baselines into
:class:`~spikeinterface_neuronid.benchmark.MethodSpec` rows, which tell the run loop how to treat each row in
each protocol; :func:`~spikeinterface_neuronid.benchmark.check_model_provenance` finds model files that were
pretrained on the benchmark's animals.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..data import SpikeTrainSet
from .settings import ABLATION_COMMAND, PRODUCT, BenchmarkSettings

__all__ = [
    "SelfSupervisedEncoder",
    "PretrainedModel",
    "MethodSpec",
    "method_specs",
    "check_model_provenance",
]

_REPO_ROOT = Path(__file__).resolve().parents[2]
_KINDS = ("fixed", "pretrained", "ssl", "supervised")


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
        from ..models import resolve_model

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
    from ..models import resolve_model

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
    from ..models import resolve_model

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
