"""What the release scripts share: paths, the animal splits and the commands they record.

Every split is a tuple of simulated animal ids (the ``animals`` of
:func:`~spikeinterface_neuronid.simulation.simulate_dataset`). The NuCLR default model's splits (pretraining,
validation, head, evaluation) are pairwise disjoint and disjoint from the benchmark's animals; the NeurPIR
default model pretrains on benchmark animals 0-3 and is evaluated on :data:`EVAL_ANIMALS` too.
"""

from __future__ import annotations

from pathlib import Path

from spikeinterface_neuronid.simulation import EVALUATION_ANIMALS

ROOT = Path(__file__).resolve().parents[2]
#: Where the shipped model files, their scores and their cards live.
MODEL_DIR = ROOT / "spikeinterface_neuronid" / "default_model"
#: The benchmark's measurements (``calibration.json``, ``ood.json``, ...).
RESULTS_DIR = ROOT / "benchmarks" / "results"

#: Inductive zero-shot evaluation of every shipped model (also the demo's animals); never trained on.
EVAL_ANIMALS = EVALUATION_ANIMALS
#: Pretraining corpus of the NuCLR default model (every preset).
PRETRAIN_ANIMALS = tuple(range(2000, 2008))
#: Checkpoint selection of the NuCLR default model.
VALIDATION_ANIMALS = (2900, 2901)
#: Training and calibration of the ``firing_type`` head.
HEAD_ANIMALS = tuple(range(200, 208))
#: The benchmark's animals (``neuronid benchmark``).
BENCHMARK_ANIMALS = tuple(range(0, 8))
#: Pretraining corpus of the NeurPIR default model (``varied`` and ``easy``).
NEURPIR_TRAIN_ANIMALS = (0, 1, 2, 3)

#: The scripts of this folder, run as ``python -m tools.release.<name>`` from the repository root.
SCRIPTS = ("train_default_model", "fit_default_head", "train_default_neurpir")


def script_command(script: str) -> str:
    """The command line that runs a release script, as the files it writes record it.

    Parameters
    ----------
    script : str
        One of :data:`SCRIPTS`.

    Returns
    -------
    str
        ``"python -m tools.release.<script>"`` (without arguments).
    """
    if script not in SCRIPTS:
        raise ValueError(f"unknown release script {script!r}; expected one of {SCRIPTS}")
    return f"python -m tools.release.{script}"


#: How runs before the move to ``tools/release/`` recorded each script (their provenance keeps it as it was).
MOVED_FROM = {f"python benchmarks/{script}.py": script_command(script) for script in SCRIPTS}
