"""The default model shipped inside the package: present, small, safe to load, documented, and useful."""

import json

import numpy as np
import spikeinterface.core as si

import spikeinterface_neuronid  # noqa: F401
from spikeinterface_neuronid.bundle import ModelBundle
from spikeinterface_neuronid.cli import DEMO_ANIMALS
from spikeinterface_neuronid.evaluation import linear_probe
from spikeinterface_neuronid.inference import default_model_path
from spikeinterface_neuronid.simulate import simulate_sorting


def test_default_model_file_is_small_verified_and_described_by_its_card():
    path = default_model_path()
    assert path.is_file() and path.stat().st_size < 10 * 1024 * 1024
    bundle = ModelBundle.load(path)  # verifies the checksum, never unpickles
    scores = json.loads((path.parent / "default_model_scores.json").read_text())
    card = (path.parent / "MODEL_CARD.md").read_text()
    assert scores["sha256"] == bundle.sha256 and bundle.sha256 in card
    assert not set(bundle.provenance["animals"]) & set(DEMO_ANIMALS)
    assert bundle.provenance["command"] == scores["command"]


def test_default_model_separates_cell_types_of_unseen_animals():
    embeddings, labels = [], []
    for animal in DEMO_ANIMALS[:3]:
        recording, sorting = simulate_sorting(
            "easy", animal=animal, num_neurons=120, duration_s=120.0, with_recording=True
        )
        analyzer = si.create_sorting_analyzer(sorting, recording, format="memory", sparse=False)
        embeddings.append(analyzer.compute("neuron_embedding").get_data())
        labels.append(sorting.get_property("cell_type"))
    result = linear_probe(np.concatenate(embeddings[:2]), np.concatenate(labels[:2]), embeddings[2], labels[2])
    # well above chance (0.2) on a short recording; the demo measures the full-size number
    assert result.balanced_accuracy > 0.6, result.table()
