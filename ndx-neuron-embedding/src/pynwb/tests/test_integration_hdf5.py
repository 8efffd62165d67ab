"""HDF5 round trip, schema validation, NWB Inspector (DANDI config) and a fresh-process read via the cached spec."""
import json
import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest
import pynwb
from pynwb import NWBHDF5IO
from pynwb.testing import NWBH5IOFlexMixin, TestCase

from ndx_neuron_embedding import ClassProbabilities, NeuronEmbedding, NeuronEmbeddingModel, PredictedLabel
from ndx_neuron_embedding.testing.mock import mock_NeuronEmbeddingModel, mock_Units_with_neuron_embedding

from .conftest import CLASS_LABELS, make_dandi_nwbfile, make_model


def _validation_errors(path):
    result = pynwb.validate(path=str(path))
    # pynwb >= 3 returns a list of errors; pynwb 2.x returns (errors, status)
    if isinstance(result, tuple):
        result = result[0]
    return list(result)


def test_roundtrip_bit_exact(written_path, predictions):
    embedding, labels, probs = predictions
    with NWBHDF5IO(written_path, "r") as io:
        nwbfile = io.read()
        units = nwbfile.units
        emb_col = units["embedding"]
        lab_col = units["cell_type"]
        prob_col = units["cell_type_probabilities"]
        assert isinstance(emb_col, NeuronEmbedding)
        assert isinstance(lab_col, PredictedLabel)
        assert isinstance(prob_col, ClassProbabilities)

        emb = emb_col.data[:]
        assert emb.dtype == np.float32 and emb.shape == embedding.shape
        assert emb.tobytes() == embedding.tobytes()
        p = prob_col.data[:]
        assert p.dtype == np.float32 and p.tobytes() == probs.tobytes()
        assert [x.decode() if isinstance(x, bytes) else x for x in lab_col.data[:]] == labels
        np.testing.assert_array_equal(units["cell_type_confidence"].data[:], probs.max(axis=1))

        assert list(prob_col.class_labels) == CLASS_LABELS
        assert list(lab_col.class_labels) == CLASS_LABELS

        model = nwbfile.lab_meta_data["neuron_embedding_model"]
        assert isinstance(model, NeuronEmbeddingModel)
        for col in (emb_col, lab_col, prob_col):
            assert col.model is model
        assert model.model_name == "neuronid-test"
        assert model.model_checksum == make_model().model_checksum
        assert model.checksum_algorithm == "sha256"
        assert model.embedding_dim == embedding.shape[1]

        df = units.to_dataframe()
        np.testing.assert_array_equal(np.stack(df["embedding"].to_numpy()), embedding)

    # plain h5py view: typed datasets with an object reference to the model group
    with h5py.File(written_path, "r") as f:
        dset = f["units/embedding"]
        assert dset.attrs["neurodata_type"] == "NeuronEmbedding"
        assert dset.attrs["namespace"] == "ndx-neuron-embedding"
        assert f[dset.attrs["model"]].name == "/general/neuron_embedding_model"
        assert "ndx-neuron-embedding" in f["specifications"]


def test_pynwb_validate(written_path):
    assert _validation_errors(written_path) == []


def test_nwbinspector_dandi(written_path):
    nwbinspector = pytest.importorskip("nwbinspector")
    from nwbinspector import Importance, inspect_nwbfile

    kwargs = {}
    if hasattr(nwbinspector, "load_config"):
        kwargs["config"] = nwbinspector.load_config(filepath_or_keyword="dandi")
    messages = list(
        inspect_nwbfile(
            nwbfile_path=str(written_path), importance_threshold=Importance.BEST_PRACTICE_VIOLATION, **kwargs
        )
    )
    assert messages == [], "\n".join(f"{m.importance.name} {m.check_function_name}: {m.message}" for m in messages)


FRESH_READ = textwrap.dedent(
    """
    import json, sys
    from pynwb import NWBHDF5IO
    with NWBHDF5IO(sys.argv[1], "r", load_namespaces=True) as io:
        nwbfile = io.read()
        units = nwbfile.units
        model = nwbfile.lab_meta_data["neuron_embedding_model"]
        out = dict(
            imported=any(m.startswith("ndx_neuron_embedding") for m in sys.modules),
            types={c: type(units[c]).__name__ for c in ("embedding", "cell_type", "cell_type_probabilities")},
            model_type=type(model).__name__,
            model_name=model.model_name,
            links_resolve=all(units[c].model is model for c in ("embedding", "cell_type", "cell_type_probabilities")),
            class_labels=[str(x) for x in units["cell_type_probabilities"].class_labels],
            embedding=units["embedding"].data[:].tolist(),
            emb_dtype=str(units["embedding"].data.dtype),
        )
    print(json.dumps(out))
    """
)


def test_fresh_process_read_without_package(written_path, predictions):
    embedding, _, _ = predictions
    proc = subprocess.run(
        [sys.executable, "-c", FRESH_READ, str(written_path)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["imported"] is False
    assert out["types"] == {
        "embedding": "NeuronEmbedding",
        "cell_type": "PredictedLabel",
        "cell_type_probabilities": "ClassProbabilities",
    }
    assert out["model_type"] == "NeuronEmbeddingModel"
    assert out["model_name"] == "neuronid-test"
    assert out["links_resolve"] is True
    assert out["class_labels"] == CLASS_LABELS
    assert out["emb_dtype"] == "float32"
    np.testing.assert_array_equal(np.asarray(out["embedding"], dtype=np.float32), embedding)


def test_append_to_existing_file(tmp_path, predictions):
    """Columns can be added to a file that was written without the extension (append mode)."""
    embedding, labels, probs = predictions
    path = tmp_path / "append.nwb"
    with NWBHDF5IO(path, "w") as io:
        io.write(make_dandi_nwbfile())
    from ndx_neuron_embedding import add_neuron_embedding, add_predicted_labels

    with NWBHDF5IO(path, "a") as io:
        nwbfile = io.read()
        model = make_model()
        nwbfile.add_lab_meta_data(model)
        add_neuron_embedding(nwbfile.units, embedding, model)
        add_predicted_labels(nwbfile.units, "cell_type", labels, probs, CLASS_LABELS, model)
        io.write(nwbfile)
    assert _validation_errors(path) == []
    with NWBHDF5IO(path, "r") as io:
        nwbfile = io.read()
        assert nwbfile.units["embedding"].data[:].tobytes() == embedding.tobytes()
        assert nwbfile.units["cell_type_probabilities"].model is nwbfile.lab_meta_data["neuron_embedding_model"]
        assert nwbfile.units["cell_type"].probabilities is nwbfile.units["cell_type_probabilities"]


class TestUnitsWithNeuronEmbeddingRoundtrip(NWBH5IOFlexMixin, TestCase):
    """pynwb's standard write / validate / read / compare / export round trip using the mock helpers."""

    def getContainerType(self):
        return "Units with ndx-neuron-embedding columns"

    def addContainer(self):
        model = mock_NeuronEmbeddingModel(name="neuron_embedding_model", nwbfile=self.nwbfile)
        mock_Units_with_neuron_embedding(nwbfile=self.nwbfile, model=model, num_units=5)

    def getContainer(self, nwbfile):
        return nwbfile.units
