"""Settings of a benchmark run: the settings class, its two presets, the names of the protocols and rows.

:class:`~spikeinterface_neuronid.benchmark.BenchmarkSettings` sets the size of a run;
:data:`~spikeinterface_neuronid.benchmark.FULL` is the committed full run,
:data:`~spikeinterface_neuronid.benchmark.QUICK` the smoke test. The constants name what every other stage
shares: the three protocols, the two tasks, the product row and the ablation rows (their model files and the
command that trains them).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

__all__ = [
    "PROTOCOLS",
    "TASKS",
    "PRODUCT",
    "ABLATION_FULL",
    "ABLATION_NO_RELATIONAL",
    "ABLATION_COMMAND",
    "ABLATION_MODEL_ROWS",
    "BenchmarkSettings",
    "FULL",
    "QUICK",
    "is_baseline",
    "settings_from_args",
]

PROTOCOLS = ("transductive", "transductive_zero_shot", "inductive_zero_shot")
TASKS = ("cell_type", "brain_region")
#: The product row: our shipped default model.
PRODUCT = "ours, shipped default model"
ABLATION_FULL = "ours, ablation budget: full design"
ABLATION_NO_RELATIONAL = "ours, no relational channel"
#: The command that trains the ablation model files of :data:`ABLATION_MODEL_ROWS`.
ABLATION_COMMAND = "python -m tools.release.train_default_model --ablations"
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


def is_baseline(name: str) -> bool:
    """Whether a row is a baseline: every row whose name does not start with "ours".

    Parameters
    ----------
    name : str
        Row (method) name.

    Returns
    -------
    bool
        True for a baseline row.
    """
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



def settings_from_args(quick: bool, **overrides: Any) -> BenchmarkSettings:
    """:data:`QUICK` or :data:`FULL` with the given non-None fields replaced.

    Parameters
    ----------
    quick : bool
        Start from :data:`QUICK` (True) or :data:`FULL` (False).
    **overrides
        :class:`BenchmarkSettings` fields to replace; None values are ignored.

    Returns
    -------
    BenchmarkSettings
        The settings of the run.
    """
    base = QUICK if quick else FULL
    return replace(base, **{k: v for k, v in overrides.items() if v is not None})
