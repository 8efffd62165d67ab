"""The README's usage example, run end to end, and the mock helpers through a write / read round trip."""
import re
from pathlib import Path

import numpy as np
import pynwb
from pynwb import NWBHDF5IO
from pynwb.testing.mock.file import mock_NWBFile

from ndx_neuron_embedding import ClassProbabilities, NeuronEmbeddingModel, PredictedLabel, get_class_probabilities
from ndx_neuron_embedding.testing.mock import mock_NeuronEmbeddingModel, mock_Units_with_neuron_embedding

README = Path(__file__).resolve().parents[3] / "README.md"


def readme_usage_code() -> str:
    text = README.read_text(encoding="utf-8")
    usage = text[text.index("## Usage") :]
    match = re.search(r"```python\n(.*?)```", usage, flags=re.S)
    assert match, "README.md has no python block under '## Usage'"
    return match.group(1)


def test_readme_usage_example(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(readme_usage_code(), str(README), "exec"), namespace)  # noqa: S102 - our own README

    assert (tmp_path / "out.nwb").is_file()
    assert namespace["read_labels"] == ["pyr", "unknown", "pv", "unknown"]
    np.testing.assert_array_equal(namespace["read_probabilities"], namespace["probabilities"].astype(np.float32))
    assert np.isnan(namespace["read_probabilities"][3]).all()
    assert namespace["read_classes"] == ["pyr", "pv"]
    assert namespace["abstention"] == "unknown"
    assert namespace["read_model"].model_name == "neuronid-default"

    errors = pynwb.validate(path=str(tmp_path / "out.nwb"))
    assert not (errors[0] if isinstance(errors, tuple) else errors)
    with NWBHDF5IO(tmp_path / "out.nwb", "r") as io:
        nwbfile = io.read()
        units = nwbfile.units
        label_col = units["cell_type"]
        assert isinstance(label_col, PredictedLabel)
        assert label_col.probabilities is units["cell_type_probabilities"]
        assert get_class_probabilities(label_col) is units["cell_type_probabilities"]
        assert list(label_col.class_labels) == ["pyr", "pv", "unknown"]
        emb = units["embedding"].data[:]
        assert emb.dtype == np.float32 and np.isnan(emb[3]).all() and np.isfinite(emb[:3]).all()
        conf = units["cell_type_confidence"].data[:]
        np.testing.assert_array_equal(conf[:3], np.float32([0.9, 0.55, 0.8]))
        assert np.isnan(conf[3])
        assert isinstance(nwbfile.lab_meta_data["neuron_embedding_model"], NeuronEmbeddingModel)


def test_mock_helpers_round_trip(tmp_path):
    nwbfile = mock_NWBFile()
    model = mock_NeuronEmbeddingModel(name="neuron_embedding_model", nwbfile=nwbfile, embedding_dim=4)
    units = mock_Units_with_neuron_embedding(
        nwbfile=nwbfile, model=model, num_units=6, num_without_embedding=2, unknown_label="unknown", threshold=0.4
    )
    labels = [str(x) for x in units["cell_type"].data]
    probs = np.asarray(units["cell_type_probabilities"].data)
    assert labels[-2:] == ["unknown", "unknown"] and np.isnan(probs[-2:]).all() and np.isfinite(probs[:-2]).all()
    path = tmp_path / "mock.nwb"
    with NWBHDF5IO(path, "w") as io:
        io.write(nwbfile)
    with NWBHDF5IO(path, "r") as io:
        read = io.read().units
        assert [str(x) for x in read["cell_type"].data[:]] == labels
        np.testing.assert_array_equal(read["cell_type_probabilities"].data[:], probs)
        assert isinstance(read["cell_type"].probabilities, ClassProbabilities)
        assert read["cell_type"].probabilities is read["cell_type_probabilities"]
        assert read["cell_type"].unknown_label == "unknown"
