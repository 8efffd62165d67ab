"""In-memory tests: constructors, helpers' checks, mock factories."""
import numpy as np
import pytest
from pynwb.testing.mock.file import mock_NWBFile

from ndx_neuron_embedding import (
    ClassProbabilities,
    NeuronEmbedding,
    NeuronEmbeddingModel,
    PredictedLabel,
    add_neuron_embedding,
    add_predicted_labels,
)
from ndx_neuron_embedding.testing.mock import mock_NeuronEmbeddingModel, mock_Units_with_neuron_embedding

from .conftest import CLASS_LABELS, make_dandi_nwbfile, make_model, make_predictions


def test_model_constructor_defaults():
    model = make_model()
    assert isinstance(model, NeuronEmbeddingModel)
    assert model.checksum_algorithm == "sha256"
    assert model.embedding_dim == 16
    assert model.model_url is None


def test_columns_require_model():
    with pytest.raises(TypeError):
        NeuronEmbedding(name="embedding", description="x", data=np.zeros((2, 3), dtype=np.float32))
    nwbfile = make_dandi_nwbfile(num_units=2)
    with pytest.raises(TypeError):
        nwbfile.units.add_column(
            name="embedding", description="x", data=np.zeros((2, 3), np.float32), col_cls=NeuronEmbedding
        )


def test_class_probabilities_requires_class_labels():
    model = make_model()
    with pytest.raises(TypeError):
        ClassProbabilities(name="p", description="x", data=np.zeros((2, 3), np.float32), model=model)


def test_add_columns(predictions):
    embedding, labels, probs = predictions
    nwbfile = make_dandi_nwbfile()
    model = make_model()
    nwbfile.add_lab_meta_data(model)
    emb_col = add_neuron_embedding(nwbfile.units, embedding.astype(np.float64), model)
    cols = add_predicted_labels(nwbfile.units, "cell_type", labels, probs, CLASS_LABELS, model)
    assert isinstance(emb_col, NeuronEmbedding) and emb_col.data.dtype == np.float32
    assert isinstance(cols["labels"], PredictedLabel)
    assert isinstance(cols["probabilities"], ClassProbabilities)
    assert list(cols["probabilities"].class_labels) == CLASS_LABELS
    assert emb_col.model is model and cols["labels"].model is model
    np.testing.assert_array_equal(cols["confidence"].data, probs.max(axis=1))
    assert set(nwbfile.units.colnames) >= {"embedding", "cell_type", "cell_type_probabilities", "cell_type_confidence"}


def test_labels_default_to_argmax(predictions):
    _, labels, probs = predictions
    nwbfile = make_dandi_nwbfile()
    model = make_model()
    cols = add_predicted_labels(nwbfile.units, "cell_type", None, probs, CLASS_LABELS, model, add_confidence=False)
    assert list(cols["labels"].data) == labels
    assert cols["confidence"] is None


@pytest.mark.parametrize(
    "kind",
    ["emb_rows", "emb_dim", "emb_1d", "prob_shape", "prob_sum", "prob_range", "unknown_label", "dup_classes"],
)
def test_helper_checks(kind):
    embedding, labels, probs = make_predictions()
    nwbfile = make_dandi_nwbfile()
    units = nwbfile.units
    model = make_model()
    with pytest.raises(ValueError):
        if kind == "emb_rows":
            add_neuron_embedding(units, embedding[:-1], model)
        elif kind == "emb_dim":
            add_neuron_embedding(units, embedding[:, :-1], model)
        elif kind == "emb_1d":
            add_neuron_embedding(units, embedding[:, 0], model)
        elif kind == "prob_shape":
            add_predicted_labels(units, "cell_type", labels, probs[:, :-1], CLASS_LABELS, model)
        elif kind == "prob_sum":
            add_predicted_labels(units, "cell_type", labels, probs * 0.5, CLASS_LABELS, model)
        elif kind == "prob_range":
            bad = probs.copy()
            bad[0, :2] = [1.5, -0.5]
            bad[0, 2:] = 0
            add_predicted_labels(units, "cell_type", labels, bad, CLASS_LABELS, model)
        elif kind == "unknown_label":
            add_predicted_labels(units, "cell_type", ["astrocyte"] + labels[1:], probs, CLASS_LABELS, model)
        elif kind == "dup_classes":
            add_predicted_labels(units, "cell_type", labels, probs, ["a", "a", "b", "c"], model)
    # a failed check must not leave a half-written column behind
    assert "embedding" not in units.colnames and "cell_type" not in units.colnames


def test_mocks():
    nwbfile = mock_NWBFile()
    model = mock_NeuronEmbeddingModel(nwbfile=nwbfile, embedding_dim=5)
    assert nwbfile.lab_meta_data[model.name] is model
    units = mock_Units_with_neuron_embedding(nwbfile=nwbfile, model=model, num_units=7)
    assert nwbfile.units is units
    assert units["embedding"].data.shape == (7, 5)
    assert units["cell_type_probabilities"].data.shape == (7, 4)
    assert units["embedding"].model is model

    standalone = mock_Units_with_neuron_embedding(num_units=3)
    assert standalone["embedding"].data.shape == (3, 8)
