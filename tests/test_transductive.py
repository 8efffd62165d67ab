"""Transductive use: compute("neuron_embedding", fine_tune_steps=...) fine-tunes on the analyzer's own spike trains."""

import json

import numpy as np
import pytest
import spikeinterface.core as si
import torch

import spikeinterface_neuronid  # noqa: F401  (registers the extension)
from spikeinterface_neuronid import fit_head
from spikeinterface_neuronid.bundle import ModelBundle
from spikeinterface_neuronid.methods.nuclr import NuCLRConfig, build_encoder
from spikeinterface_neuronid.training import fine_tune_transductive
from spikeinterface_neuronid.corpus import analyzer_to_spike_train_sets
from spikeinterface_neuronid.labeling import extension_predictions

from conftest import make_analyzer

STEPS = 3


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A tiny random model with a two-class head fitted on its own embeddings: (path, bundle)."""
    torch.manual_seed(0)
    config = NuCLRConfig.cpu(dim=16, num_heads=2, projector_dim=16)
    bundle = ModelBundle.from_modules("nuclr", config, build_encoder(config), name="test-random")
    folder = tmp_path_factory.mktemp("model")
    headless = str(bundle.save(folder / "headless.safetensors"))
    analyzer = make_analyzer(num_units=12, seed=7)
    emb = analyzer.compute("neuron_embedding", model=headless).get_data()
    rates = np.array([analyzer.sorting.get_unit_spike_train(u).size for u in analyzer.unit_ids])
    bundle.add_head(fit_head(emb, np.where(rates > np.median(rates), "fast", "slow"), "firing", threshold=0.0, calibration_fraction=0))
    return str(bundle.save(folder / "heads.safetensors")), bundle


@pytest.fixture(scope="module")
def analyzer():
    return make_analyzer(num_units=10, seed=1)


@pytest.fixture(scope="module")
def computed(model, analyzer):
    """Embeddings without fine-tuning, and two fine-tuned computes with the same seed."""
    path, _ = model
    plain = analyzer.compute("neuron_embedding", model=path, n_jobs=1).get_data()
    first = analyzer.compute("neuron_embedding", model=path, fine_tune_steps=STEPS, n_jobs=1)
    first = dict(params=dict(first.params), data={k: np.asarray(v).copy() for k, v in first.data.items()})
    second = analyzer.compute("neuron_embedding", model=path, fine_tune_steps=STEPS, n_jobs=1)
    return plain, first, second


def test_fine_tuning_changes_embeddings_deterministically(computed):
    plain, first, second = computed
    tuned = first["data"]["embedding"]
    assert tuned.shape == plain.shape and np.all(np.isfinite(tuned))
    assert np.max(np.abs(tuned - plain)) > 1e-6
    np.testing.assert_array_equal(second.get_data(), tuned)
    assert second.params == first["params"]


def test_params_record_the_fine_tuned_model(model, analyzer, computed):
    path, bundle = model
    _, first, second = computed
    params = second.params
    assert params["fine_tune_steps"] == STEPS and params["fine_tune_seed"] == 0
    assert params["model_sha256"] == bundle.sha256
    assert "fine_tuned_sha256" not in params  # provenance of the result, not an input
    sha = second.data["provenance"]["fine_tuned_sha256"]
    assert isinstance(sha, str) and len(sha) == 64 and sha != bundle.sha256
    # the checksum is that of fine_tune_transductive's model, with the heads
    tuned = fine_tune_transductive(bundle, analyzer_to_spike_train_sets(analyzer), steps=STEPS, seed=0, num_threads=1)
    assert tuned.sha256 == sha and set(tuned.heads) == {"firing"}
    assert json.loads(json.dumps(params)) == params  # JSON-native
    plain = make_analyzer(num_units=6, seed=5).compute("neuron_embedding", model=path)
    assert plain.params["fine_tune_steps"] == 0 and plain.data["provenance"] == {"fine_tuned_sha256": None}


def test_heads_still_label_units(model, computed):
    _, bundle = model
    _, first, second = computed
    labels = extension_predictions(second)["firing"].labels
    assert labels.shape == (10,) and set(labels) <= {"fast", "slow"}
    # the labels are the original head applied to the fine-tuned embeddings
    np.testing.assert_array_equal(labels, bundle.heads["firing"].predict(second.get_data()))


@pytest.mark.parametrize("format", ["binary_folder", "zarr"])
def test_other_seed_and_saved_params(tmp_path, model, format):
    path, _ = model
    folder = tmp_path / ("a.zarr" if format == "zarr" else "a")
    analyzer = make_analyzer(num_units=8, seed=2, format=format, folder=folder)
    ext = analyzer.compute("neuron_embedding", model=path, fine_tune_steps=2, fine_tune_seed=1, n_jobs=1)
    other = analyzer.compute("neuron_embedding", model=path, fine_tune_steps=2, fine_tune_seed=2, n_jobs=1)
    assert ext.data["provenance"]["fine_tuned_sha256"] != other.data["provenance"]["fine_tuned_sha256"]
    loaded = si.load_sorting_analyzer(folder).get_extension("neuron_embedding")
    assert loaded.params == other.params and loaded.data["provenance"] == other.data["provenance"]
    np.testing.assert_array_equal(loaded.get_data(), other.get_data())


def test_merge_fine_tunes_again_on_the_new_population(model, analyzer, computed):
    path, _ = model
    _, _, ext = computed
    merged = analyzer.merge_units([[analyzer.unit_ids[0], analyzer.unit_ids[2]]], new_id_strategy="append")
    merged_ext = merged.get_extension("neuron_embedding")
    fresh = si.create_sorting_analyzer(merged.sorting, analyzer.recording, format="memory", sparse=False)
    fresh_ext = fresh.compute("neuron_embedding", model=path, fine_tune_steps=STEPS, n_jobs=1)
    np.testing.assert_allclose(merged_ext.get_data(), fresh_ext.get_data(), atol=1e-5)
    tuned_sha = merged_ext.data["provenance"]["fine_tuned_sha256"]
    assert tuned_sha == fresh_ext.data["provenance"]["fine_tuned_sha256"] != ext.data["provenance"]["fine_tuned_sha256"]


def test_bad_fine_tune_params_keep_previous_result(tmp_path, model):
    path, _ = model
    analyzer = make_analyzer(num_units=6, seed=3, format="binary_folder", folder=tmp_path / "b")
    emb = analyzer.compute("neuron_embedding", model=path).get_data()
    with pytest.raises(ValueError, match="fine_tune_steps must be >= 0"):
        analyzer.compute("neuron_embedding", model=path, fine_tune_steps=-1)
    with pytest.raises(TypeError, match="fine_tune_steps must be an integer"):
        analyzer.compute("neuron_embedding", model=path, fine_tune_steps=2.5)
    np.testing.assert_array_equal(analyzer.get_extension("neuron_embedding").get_data(), emb)
