"""Task heads in the neuron_embedding extension and neuronid_label_units (tiny random-init model)."""

import numpy as np
import pytest
import spikeinterface.core as si
import torch

import spikeinterface_neuronid  # noqa: F401  (registers the extension)
from spikeinterface_neuronid import fit_head, neuronid_label_units
from spikeinterface_neuronid.bundle import ModelBundle
from spikeinterface_neuronid.labeling import extension_predictions
from spikeinterface_neuronid.methods.nuclr import NuCLRConfig, build_encoder

from conftest import make_analyzer as make_shared_analyzer

THRESHOLD = 0.75


def make_analyzer(num_units=16, **kwargs):
    return make_shared_analyzer(num_units=num_units, max_rate=30.0, **kwargs)


def firing_class(analyzer):
    rates = np.array([analyzer.sorting.get_unit_spike_train(u).size for u in analyzer.unit_ids])
    return np.where(rates > np.median(rates), "fast", "slow")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A head-less tiny model and the same model with two heads fitted on its own embeddings."""
    folder = tmp_path_factory.mktemp("model")
    torch.manual_seed(0)
    # a window-context model: these tests are about the labels, and its random embedding spreads the rates widely
    config = NuCLRConfig.window(dim=16, num_heads=2, projector_dim=16)
    bundle = ModelBundle.from_modules("nuclr", config, build_encoder(config), name="test-random")
    headless = str(bundle.save(folder / "headless.safetensors"))
    analyzer = make_analyzer(num_units=24, seed=10)
    emb = analyzer.compute("neuron_embedding", model=headless).get_data()
    labels = firing_class(analyzer)
    flip = [0, 5, 9, 13]  # label noise: calibrated probabilities that are not all 0 or 1
    labels[flip] = np.where(labels[flip] == "fast", "slow", "fast")
    bundle.add_head(fit_head(emb, labels, "firing", C=0.1, threshold=THRESHOLD))
    thirds = np.resize(np.array(["x", "y", "z"]), len(emb))
    bundle.add_head(fit_head(emb, thirds, "region", threshold=0.0))
    return headless, str(bundle.save(folder / "heads.safetensors")), bundle


def check_consistent(ext, bundle):
    """The extension stores the embedding only; its predictions are the model's heads applied to it."""
    assert set(ext.data) == {"embedding", "num_windows", "embedded", "provenance"}
    emb = np.asarray(ext.data["embedding"])
    predictions = extension_predictions(ext)
    assert list(predictions) == list(bundle.heads)
    for task, head in bundle.heads.items():
        p = predictions[task]
        assert p.probabilities.dtype == np.float32 and p.probabilities.shape == (len(emb), head.num_classes)
        np.testing.assert_allclose(p.probabilities, head.predict_proba(emb), atol=1e-6)
        np.testing.assert_array_equal(p.labels, head.predict(emb))
        assert p.labels.dtype.kind == "U" and p.classes == tuple(head.classes)
        with np.errstate(invalid="ignore"):
            np.testing.assert_allclose(p.confidence, np.max(p.probabilities, axis=1), atol=0)
    return predictions


@pytest.mark.parametrize("format", ["binary_folder", "zarr"])
def test_labels_land_in_the_dataframe_and_sorting_properties(tmp_path, models, format):
    _, model, bundle = models
    folder = tmp_path / ("a.zarr" if format == "zarr" else "a")
    analyzer = make_analyzer(format=format, folder=folder)
    df = neuronid_label_units(analyzer, model=model)
    assert list(df.index) == list(analyzer.unit_ids)
    assert list(df.columns) == ["firing_label", "firing_probability", "region_label", "region_probability"]
    ext = analyzer.get_extension("neuron_embedding")
    check_consistent(ext, bundle)
    labels, prob = df["firing_label"].to_numpy().astype(str), df["firing_probability"].to_numpy()
    assert set(labels) <= {"fast", "slow", "unknown"} and 0 < np.sum(labels == "unknown") < len(labels)
    np.testing.assert_array_equal(labels == "unknown", prob < THRESHOLD)
    assert np.all(df["region_label"] != "unknown")  # threshold 0: never abstains

    for column in df.columns:
        np.testing.assert_array_equal(analyzer.sorting.get_property(column), df[column].to_numpy())
    reloaded = si.load_sorting_analyzer(folder)
    np.testing.assert_array_equal(reloaded.sorting.get_property("firing_label"), labels)
    np.testing.assert_array_equal(reloaded.sorting.get_property("region_probability"), df["region_probability"])
    before, after = extension_predictions(ext), check_consistent(reloaded.get_extension("neuron_embedding"), bundle)
    for task in bundle.heads:
        np.testing.assert_array_equal(after[task].labels, before[task].labels)
        np.testing.assert_array_equal(after[task].probabilities, before[task].probabilities)

    only = neuronid_label_units(reloaded, model=model, tasks="region", set_properties=False)
    assert list(only.columns) == ["region_label", "region_probability"]


def test_compute_is_reused_or_redone(models):
    headless, model, bundle = models
    analyzer = make_analyzer()
    analyzer.compute("neuron_embedding", model=headless)
    with pytest.raises(ValueError, match=r"no task heads.*fit_head.*add_head"):
        neuronid_label_units(analyzer, model=headless)
    neuronid_label_units(analyzer, model=model, set_properties=False)  # computed with another model: redone
    ext = analyzer.get_extension("neuron_embedding")
    assert ext.params["model_sha256"] == bundle.sha256 and "firing_label" not in analyzer.sorting.get_property_keys()
    neuronid_label_units(analyzer, model=model)
    assert analyzer.get_extension("neuron_embedding") is ext  # up to date: reused
    neuronid_label_units(analyzer, model=model, batch_size=3)
    assert analyzer.get_extension("neuron_embedding").params["batch_size"] == 3
    with pytest.raises(ValueError, match=r"no head for task\(s\) \['nope'\]"):
        neuronid_label_units(analyzer, model=model, tasks=["nope"])


def test_units_without_embedding_are_unknown(models):
    _, model, _ = models
    analyzer = make_analyzer(num_units=10, silent_units=2)
    df = neuronid_label_units(analyzer, model=model)
    predictions = extension_predictions(analyzer.get_extension("neuron_embedding"))
    assert np.all(np.isnan(predictions["firing"].probabilities[:2]))
    assert np.all(np.isnan(predictions["region"].confidence[:2]))
    assert list(df["firing_label"].iloc[:2]) == ["unknown"] * 2 and list(df["region_label"].iloc[:2]) == ["unknown"] * 2
    assert df["firing_probability"].iloc[:2].isna().all() and df["firing_probability"].iloc[2:].notna().all()


def test_select_merge_split_keep_labels_consistent(models):
    _, model, bundle = models
    analyzer = make_analyzer(num_units=12)
    ext = analyzer.compute("neuron_embedding", model=model)
    full = check_consistent(ext, bundle)

    keep = [0, 3, 4, 9]
    sub = check_consistent(analyzer.select_units(analyzer.unit_ids[keep]).get_extension("neuron_embedding"), bundle)
    np.testing.assert_array_equal(sub["firing"].labels, full["firing"].labels[keep])
    np.testing.assert_array_equal(sub["region"].probabilities, full["region"].probabilities[keep])
    # as many units as classes: rows are still the units'
    two = check_consistent(analyzer.select_units(analyzer.unit_ids[[1, 0]]).get_extension("neuron_embedding"), bundle)
    np.testing.assert_array_equal(two["firing"].labels, full["firing"].labels[[1, 0]])

    def fresh(sorting):
        other = si.create_sorting_analyzer(sorting, analyzer.recording, format="memory", sparse=False)
        return other.compute("neuron_embedding", model=model)

    merged = analyzer.merge_units([[analyzer.unit_ids[1], analyzer.unit_ids[5]]], new_id_strategy="append")
    got = check_consistent(merged.get_extension("neuron_embedding"), bundle)
    ref = extension_predictions(fresh(merged.sorting))
    for task in bundle.heads:
        np.testing.assert_array_equal(got[task].labels, ref[task].labels)
        np.testing.assert_allclose(got[task].probabilities, ref[task].probabilities, atol=1e-5)
    df = neuronid_label_units(merged, model=model)
    np.testing.assert_array_equal(df["firing_label"].to_numpy().astype(str), ref["firing"].labels)

    unit = analyzer.unit_ids[6]
    n = analyzer.sorting.get_unit_spike_train(unit).size
    split = analyzer.split_units({unit: [np.arange(0, n, 2), np.arange(1, n, 2)]})
    got = check_consistent(split.get_extension("neuron_embedding"), bundle)
    assert got["firing"].labels.shape == (analyzer.get_num_units() + 1,)
    ref = extension_predictions(fresh(split.sorting))
    for task in bundle.heads:
        np.testing.assert_array_equal(got[task].labels, ref[task].labels)
