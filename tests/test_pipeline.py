"""End to end on simulated data: pretraining loss falls, the demo runs, the CLI parses."""

import json

import numpy as np
import pytest

from spikeinterface_neuronid.cli import _parse_range, main
from spikeinterface_neuronid.demo import run_demo
from spikeinterface_neuronid.methods.nuclr import NuCLRConfig
from spikeinterface_neuronid.simulation import CELL_TYPES, simulate_dataset
from spikeinterface_neuronid.training import pretrain

TINY = dict(dim=16, num_heads=2, projector_dim=16)


@pytest.fixture(scope="module")
def simulated_corpus():
    sessions = simulate_dataset("easy", animals=[0, 1], num_neurons=60, duration_s=60.0, progress_bar=False)
    return [s.to_spike_train_set(covariates=False) for s in sessions]


@pytest.fixture(scope="module")
def trained(simulated_corpus):
    return pretrain(
        simulated_corpus, config=NuCLRConfig.cpu(**TINY), steps=80, batch_size=4, max_units=32,
        warmup_steps=10, lr=3e-3, progress_bar=False, num_threads=1,
    )


def test_training_loss_falls_on_simulated_populations(trained):
    losses = np.asarray(trained[1]["loss"])
    assert losses[-16:].mean() < losses[:16].mean() - 0.2


def test_demo_runs_end_to_end_and_writes_its_outputs(tmp_path, trained):
    model = trained[0].save(tmp_path / "m.safetensors")
    metrics = run_demo(
        tmp_path / "out", model=str(model), animals=(1000, 1001, 1002), progress_bar=False,
        simulate_kwargs=dict(num_neurons=60, duration_s=30.0),
    )
    assert metrics["test_animal"] == 1002 and metrics["probe_animals"] == [1000, 1001]
    assert (metrics["num_train_units"], metrics["num_test_units"]) == (96, 48)  # 80 % of 60 neurons recorded
    assert metrics["classes"] == sorted(CELL_TYPES) and np.sum(metrics["confusion"]) == 48
    # measured 0.861 (chance 0.2): the 80-step model's embedding carries the cell type to an unseen animal
    assert metrics["macro_f1"] > 0.6 and metrics["balanced_accuracy"] > 0.6
    saved = json.loads((tmp_path / "out" / "demo_metrics.json").read_text())
    assert saved == json.loads(json.dumps(metrics)) and saved["model_sha256"] == trained[0].sha256
    assert (tmp_path / "out" / "embedding_map.png").stat().st_size > 10_000
    # the labelling workflow: a cell_type head fitted on the probe animals, saved with the model
    from spikeinterface_neuronid.bundle import ModelBundle

    workflow_model = ModelBundle.load(metrics["workflow_model"])
    assert workflow_model.heads["cell_type"].classes == sorted(CELL_TYPES)
    assert workflow_model.sha256 != trained[0].sha256
    # measured: accuracy 0.872 on the labelled units, 2 % (1 of 48) 'unknown'
    assert metrics["workflow_accuracy"] > 0.6 and metrics["workflow_fraction_unknown"] <= 0.25


def test_demo_refuses_animals_seen_in_pretraining(tmp_path, trained):
    bundle = trained[0]
    bundle.provenance["animals"] = [1000]
    path = bundle.save(tmp_path / "seen.safetensors")
    with pytest.raises(ValueError, match="used to pretrain"):
        run_demo(tmp_path / "o", model=str(path), animals=(1000, 1001), progress_bar=False)


def test_cli_pretrain_on_simulated_animals(tmp_path):
    out = tmp_path / "cli.safetensors"
    code = main(
        ["pretrain", "--simulated", "easy", "--animals", "0-1", "--sessions", "1", "--steps", "3",
         "--batch-size", "2", "--num-neurons", "40", "--duration-s", "30", "-o", str(out)]
        + ["--name", "cli-test"]
    )
    from spikeinterface_neuronid.bundle import ModelBundle

    bundle = ModelBundle.load(out)
    assert code == 0 and bundle.name == "cli-test" and bundle.provenance["animals"] == [0, 1]
    card = out.with_suffix(".md").read_text()
    assert card.startswith("---\n") and f"sha256: {bundle.sha256}" in card  # YAML front matter first
    assert "\n# Model card: cli-test\n" in card
    info = json.loads((tmp_path / "cli.model_info.json").read_text())  # issue 14 part 4
    assert info["sha256"] == bundle.sha256 and info["file"] == "cli.safetensors" and info["method"] == "nuclr"
    assert info["package_versions"]["spikeinterface_neuronid"] == bundle.package_version
    assert info["config"] == bundle.config.to_dict() and info["label_classes"] == {}


def test_parse_range():
    assert _parse_range("0-3,7") == [0, 1, 2, 3, 7]
