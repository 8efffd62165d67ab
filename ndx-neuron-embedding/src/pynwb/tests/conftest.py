from datetime import datetime, timezone

import numpy as np
import pytest
from pynwb import NWBFile
from pynwb.file import Subject

from ndx_neuron_embedding import NeuronEmbeddingModel, add_neuron_embedding, add_predicted_labels

NUM_UNITS = 12
EMBEDDING_DIM = 16
CLASS_LABELS = ["pyramidal", "pv", "sst", "vip"]  # deliberately not alphabetical: order must be preserved


def make_dandi_nwbfile(num_units: int = NUM_UNITS, seed: int = 0) -> NWBFile:
    """NWBFile carrying the metadata DANDI requires, with a Units table of sorted fractional spike times."""
    rng = np.random.default_rng(seed)
    nwbfile = NWBFile(
        session_description="Test session for ndx-neuron-embedding round trips.",
        identifier="ndx-neuron-embedding-test-file",
        session_start_time=datetime(2024, 1, 1, 12, 0, 0, tzinfo=timezone.utc),
        session_id="ses-1",
        experimenter=["Doe, Jane"],
        institution="Test University",
        lab="Test Lab",
        experiment_description="Synthetic extracellular recording used to test the ndx-neuron-embedding extension.",
        keywords=["test", "embedding", "cell type"],
    )
    nwbfile.subject = Subject(
        subject_id="m1",
        species="Mus musculus",
        sex="F",
        age="P60D",
        description="Synthetic test mouse.",
    )
    for _ in range(num_units):
        nwbfile.add_unit(spike_times=np.sort(rng.uniform(0.0, 100.0, 30)) + 0.123)
    nwbfile.units.resolution = 1 / 30000
    return nwbfile


def make_model(**kwargs) -> NeuronEmbeddingModel:
    params = dict(
        name="neuron_embedding_model",
        description="Contrastive per-unit embedding with a cell-type classification head (test instance).",
        model_name="neuronid-test",
        model_version="0.1.0",
        model_checksum="9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        method="Contrastive embedding of waveform and spike-train features; logistic-regression head.",
        training_data_description="Synthetic units with ground-truth labels generated for tests.",
        embedding_dim=EMBEDDING_DIM,
        inference_software="spikeinterface-neuronid 0.1.0",
    )
    params.update(kwargs)
    return NeuronEmbeddingModel(**params)


def make_predictions(num_units: int = NUM_UNITS, seed: int = 1):
    rng = np.random.default_rng(seed)
    embedding = rng.standard_normal((num_units, EMBEDDING_DIM)).astype(np.float32)
    logits = rng.standard_normal((num_units, len(CLASS_LABELS)))
    probs = (np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)).astype(np.float32)
    labels = [CLASS_LABELS[j] for j in probs.argmax(axis=1)]
    return embedding, labels, probs


@pytest.fixture
def predictions():
    return make_predictions()


@pytest.fixture
def nwbfile_with_columns(predictions):
    embedding, labels, probs = predictions
    nwbfile = make_dandi_nwbfile()
    model = make_model()
    nwbfile.add_lab_meta_data(model)
    add_neuron_embedding(nwbfile.units, embedding, model)
    add_predicted_labels(nwbfile.units, "cell_type", labels, probs, CLASS_LABELS, model)
    return nwbfile


@pytest.fixture
def written_path(nwbfile_with_columns, tmp_path):
    from pynwb import NWBHDF5IO

    path = tmp_path / "test_ndx_neuron_embedding.nwb"
    with NWBHDF5IO(path, "w") as io:
        io.write(nwbfile_with_columns)
    return path
