"""Predicted labels with abstentions and NaN rows, the label -> probabilities reference, and files written by 0.1.0."""
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import pynwb
from pynwb import NWBHDF5IO

from ndx_neuron_embedding import (
    ClassProbabilities,
    PredictedLabel,
    add_neuron_embedding,
    add_predicted_labels,
    get_class_probabilities,
)

from .conftest import CLASS_LABELS, make_dandi_nwbfile, make_model, make_predictions

OLD_FILE = Path(__file__).parent / "data" / "ndx_neuron_embedding_0.1.0.nwb"
MISSING = [3, 7]  # units without an embedding
ABSTAIN = [0, 5]  # units where the model abstains


def predictions_with_gaps():
    """Embedding with NaN rows, matching NaN probability rows, 'unknown' labels there and at ABSTAIN."""
    embedding, labels, probs = make_predictions()
    embedding[MISSING] = np.nan
    probs[MISSING] = np.nan
    labels = ["unknown" if i in MISSING + ABSTAIN else x for i, x in enumerate(labels)]
    return embedding, labels, probs


def file_with_gaps(**kwargs):
    embedding, labels, probs = predictions_with_gaps()
    nwbfile = make_dandi_nwbfile()
    model = make_model()
    nwbfile.add_lab_meta_data(model)
    add_neuron_embedding(nwbfile.units, embedding, model)
    cols = add_predicted_labels(
        nwbfile.units, "cell_type", labels, probs, CLASS_LABELS, model, unknown_label="unknown", **kwargs
    )
    return nwbfile, cols


def _errors(path):
    result = pynwb.validate(path=str(path))
    return list(result[0] if isinstance(result, tuple) else result)


def _str(values):
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


# --- in memory ---------------------------------------------------------------------------------------------------


def test_unknown_and_nan_rows_are_accepted():
    _, labels, probs = predictions_with_gaps()
    nwbfile, cols = file_with_gaps()
    lab, prob, conf = cols["labels"], cols["probabilities"], cols["confidence"]
    assert list(lab.data) == labels
    assert list(lab.class_labels) == CLASS_LABELS + ["unknown"]  # every value is one of class_labels
    assert lab.unknown_label == "unknown"
    assert list(prob.class_labels) == CLASS_LABELS
    assert lab.probabilities is prob and get_class_probabilities(lab) is prob
    assert np.isnan(prob.data[MISSING]).all()
    assert np.isnan(conf.data[MISSING]).all()
    keep = [i for i in range(len(labels)) if i not in MISSING]
    np.testing.assert_array_equal(conf.data[keep], probs[keep].max(axis=1))
    assert nwbfile.units.colnames[-3:] == ("cell_type", "cell_type_probabilities", "cell_type_confidence")


def test_labels_none_gives_unknown_for_nan_rows():
    embedding, _, probs = predictions_with_gaps()
    nwbfile = make_dandi_nwbfile()
    model = make_model()
    add_neuron_embedding(nwbfile.units, embedding, model)
    cols = add_predicted_labels(nwbfile.units, "cell_type", None, probs, CLASS_LABELS, model, unknown_label="unknown")
    labels = list(cols["labels"].data)
    assert [labels[i] for i in MISSING] == ["unknown", "unknown"]
    keep = [i for i in range(len(labels)) if i not in MISSING]
    assert [labels[i] for i in keep] == [CLASS_LABELS[j] for j in probs[keep].argmax(axis=1)]


def test_declared_but_unused_unknown_label():
    _, labels, probs = make_predictions()
    nwbfile = make_dandi_nwbfile()
    model = make_model()
    cols = add_predicted_labels(nwbfile.units, "cell_type", labels, probs, CLASS_LABELS, model, unknown_label="?")
    assert cols["labels"].unknown_label == "?"
    assert list(cols["labels"].class_labels) == CLASS_LABELS


def test_given_confidence_is_written():
    _, _, probs = predictions_with_gaps()
    conf = np.where(np.isnan(probs[:, 0]), np.nan, 0.5).astype(np.float32)
    _, cols = file_with_gaps(confidence=conf)
    np.testing.assert_array_equal(cols["confidence"].data, conf)


def test_explicit_embedding_argument():
    """The NaN rows are checked against the given embedding, also when the table has no embedding column."""
    embedding, labels, probs = predictions_with_gaps()
    nwbfile = make_dandi_nwbfile()
    model = make_model()
    add_predicted_labels(
        nwbfile.units, "cell_type", labels, probs, CLASS_LABELS, model, unknown_label="unknown", embedding=embedding
    )
    kwargs = dict(unknown_label="unknown", embedding=np.zeros_like(embedding))
    with pytest.raises(ValueError, match="without an embedding"):
        add_predicted_labels(nwbfile.units, "other", labels, probs, CLASS_LABELS, model, **kwargs)


def test_embedding_of_another_model_is_not_used():
    embedding, labels, probs = predictions_with_gaps()
    nwbfile = make_dandi_nwbfile()
    add_neuron_embedding(nwbfile.units, np.zeros_like(embedding), make_model(name="other_model"))
    add_predicted_labels(nwbfile.units, "cell_type", labels, probs, CLASS_LABELS, make_model(), unknown_label="unknown")


BAD = {
    "partly_nan": ("probabilities", r"probabilities rows \[1\] are partly NaN"),
    "not_summing": ("probabilities", r"probabilities rows \[2\] do not sum to 1"),
    "out_of_range": ("probabilities", r"probabilities must be in \[0, 1\]"),
    "inf": ("probabilities", r"probabilities must be in \[0, 1\]"),
    "nan_not_missing_embedding": ("probabilities", "exactly for the rows without an embedding"),
    "missing_embedding_not_nan": ("probabilities", "exactly for the rows without an embedding"),
    "nan_rows_without_unknown_label": ("unknown_label", r"all NaN \(no prediction\): pass unknown_label="),
    "undeclared_label": ("labels", r"labels \['astrocyte'\] are not in class_labels"),
    "abstention_without_unknown_label": ("labels", "pass unknown_label= to declare"),
    "class_label_on_nan_row": ("labels", r"labels of rows \[3\] must be unknown_label"),
    "unknown_label_is_a_class": ("unknown_label", "must not be one of class_labels"),
    "empty_unknown_label": ("unknown_label", "non-empty string"),
    "confidence_nan_mismatch": ("confidence", "confidence must be NaN exactly"),
    "confidence_range": ("confidence", r"confidence must be in \[0, 1\]"),
    "confidence_without_column": ("confidence", "add_confidence is False"),
    "column_exists": ("task", "already has column"),
}


@pytest.mark.parametrize("kind", sorted(BAD))
def test_rejected_inputs(kind):
    embedding, labels, probs = predictions_with_gaps()
    nwbfile = make_dandi_nwbfile()
    units = nwbfile.units
    model = make_model()
    add_neuron_embedding(units, embedding, model)
    kwargs = dict(unknown_label="unknown")
    if kind == "partly_nan":
        probs[1, 0] = np.nan
    elif kind == "not_summing":
        probs[2] *= 0.5
    elif kind == "out_of_range":
        probs[1, :2] = [1.5, -0.5]
        probs[1, 2:] = 0
    elif kind == "inf":
        probs[1, 0] = np.inf
    elif kind == "nan_not_missing_embedding":
        probs[1] = np.nan
        labels[1] = "unknown"
    elif kind == "missing_embedding_not_nan":
        probs[3] = [1, 0, 0, 0]
    elif kind == "nan_rows_without_unknown_label":
        kwargs = {}
        labels = [CLASS_LABELS[0]] * len(labels)
    elif kind == "undeclared_label":
        labels[1] = "astrocyte"
    elif kind == "abstention_without_unknown_label":
        embedding, labels, probs = make_predictions()
        units = make_dandi_nwbfile().units
        labels[0] = "unknown"
        kwargs = {}
    elif kind == "class_label_on_nan_row":
        labels[3] = CLASS_LABELS[0]
    elif kind == "unknown_label_is_a_class":
        kwargs = dict(unknown_label=CLASS_LABELS[1])
    elif kind == "empty_unknown_label":
        kwargs = dict(unknown_label="")
    elif kind == "confidence_nan_mismatch":
        kwargs["confidence"] = np.full(len(labels), 0.5, dtype=np.float32)
    elif kind == "confidence_range":
        kwargs["confidence"] = np.where(np.isnan(probs[:, 0]), np.nan, 2.0)
    elif kind == "confidence_without_column":
        kwargs.update(confidence=np.nanmax(probs, axis=1, initial=0), add_confidence=False)
    elif kind == "column_exists":
        units.add_column(name="cell_type_confidence", description="taken", data=np.zeros(len(labels)))
    before = list(units.colnames)
    parameter, message = BAD[kind]
    with pytest.raises(ValueError, match=message) as info:
        add_predicted_labels(units, "cell_type", labels, probs, CLASS_LABELS, model, **kwargs)
    assert parameter in str(info.value) or kind == "column_exists"
    assert list(units.colnames) == before  # nothing half-written


# --- round trips -------------------------------------------------------------------------------------------------


@pytest.fixture
def gaps_path(tmp_path):
    nwbfile, _ = file_with_gaps()
    path = tmp_path / "gaps.nwb"
    with NWBHDF5IO(path, "w") as io:
        io.write(nwbfile)
    return path


def test_nan_rows_and_unknown_survive_write_read(gaps_path):
    embedding, labels, probs = predictions_with_gaps()
    assert _errors(gaps_path) == []
    with NWBHDF5IO(gaps_path, "r") as io:
        units = io.read().units
        lab = units["cell_type"]
        prob = units["cell_type_probabilities"]
        assert isinstance(lab, PredictedLabel) and isinstance(prob, ClassProbabilities)
        assert _str(lab.data[:]) == labels
        assert _str(lab.class_labels) == CLASS_LABELS + ["unknown"]
        assert lab.unknown_label == "unknown"
        assert prob.data[:].tobytes() == probs.tobytes()  # bit-exact, NaN rows included
        assert units["embedding"].data[:].tobytes() == embedding.tobytes()
        assert np.isnan(units["cell_type_confidence"].data[:][MISSING]).all()
        # the label column resolves its probabilities column through the reference, not by name
        assert lab.probabilities is prob
        assert get_class_probabilities(lab) is prob
        assert prob.model is lab.model


def test_nwbinspector_dandi_accepts_gaps(gaps_path):
    nwbinspector = pytest.importorskip("nwbinspector")
    from nwbinspector import Importance, inspect_nwbfile

    messages = list(
        inspect_nwbfile(
            nwbfile_path=str(gaps_path),
            config=nwbinspector.load_config(filepath_or_keyword="dandi"),
            importance_threshold=Importance.BEST_PRACTICE_VIOLATION,
        )
    )
    assert messages == [], [(m.check_function_name, m.message) for m in messages]


def test_reference_is_an_hdf5_object_reference(gaps_path):
    h5py = pytest.importorskip("h5py")
    with h5py.File(gaps_path, "r") as f:
        attrs = f["units/cell_type"].attrs
        assert f[attrs["probabilities"]].name == "/units/cell_type_probabilities"
        assert attrs["unknown_label"] == "unknown"


FRESH_READ = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from pynwb import NWBHDF5IO
    with NWBHDF5IO(sys.argv[1], "r", load_namespaces=True) as io:
        units = io.read().units
        out = {}
        for name in units.colnames:
            col = units[name]
            if getattr(col, "neurodata_type", None) != "PredictedLabel":
                continue
            linked = getattr(col, "probabilities", None)
            out[name] = dict(
                linked=None if linked is None else linked.name,
                linked_is_column=linked is not None and linked is units[linked.name],
                unknown_label=getattr(col, "unknown_label", None),
                labels=[x.decode() if isinstance(x, bytes) else str(x) for x in col.data[:]],
                class_labels=[str(x) for x in col.class_labels],
                nan_rows=np.flatnonzero(np.isnan(units[name + "_probabilities"].data[:]).all(axis=1)).tolist(),
            )
        out["imported"] = any(m.startswith("ndx_neuron_embedding") for m in sys.modules)
    print(json.dumps(out))
    """
)


def _fresh_read(path):
    proc = subprocess.run([sys.executable, "-c", FRESH_READ, str(path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_fresh_process_resolves_reference(gaps_path):
    _, labels, _ = predictions_with_gaps()
    out = _fresh_read(gaps_path)
    assert out.pop("imported") is False
    assert out == {
        "cell_type": dict(
            linked="cell_type_probabilities",
            linked_is_column=True,
            unknown_label="unknown",
            labels=labels,
            class_labels=CLASS_LABELS + ["unknown"],
            nan_rows=MISSING,
        )
    }


def test_zarr_round_trip(tmp_path):
    hdmf_zarr = pytest.importorskip("hdmf_zarr")
    nwbfile, _ = file_with_gaps()
    path = tmp_path / "gaps.nwb.zarr"
    with hdmf_zarr.NWBZarrIO(str(path), "w") as io:
        io.write(nwbfile)
    _, labels, probs = predictions_with_gaps()
    with hdmf_zarr.NWBZarrIO(str(path), "r") as io:
        units = io.read().units
        assert _str(units["cell_type"].data[:]) == labels
        assert units["cell_type"].probabilities is units["cell_type_probabilities"]
        assert units["cell_type"].unknown_label == "unknown"
        np.testing.assert_array_equal(units["cell_type_probabilities"].data[:], probs)


# --- files written by 0.1.0 --------------------------------------------------------------------------------------


def test_old_file_is_the_old_format():
    h5py = pytest.importorskip("h5py")
    with h5py.File(OLD_FILE, "r") as f:
        assert list(f["specifications/ndx-neuron-embedding"]) == ["0.1.0"]
        assert "probabilities" not in f["units/cell_type"].attrs and "unknown_label" not in f["units/region"].attrs


@pytest.mark.filterwarnings("ignore:Ignoring the following cached namespace:UserWarning")  # 0.1.0 cached, 0.2.0 loaded
def test_old_file_reads_with_this_package(tmp_path):
    path = tmp_path / OLD_FILE.name
    shutil.copyfile(OLD_FILE, path)
    assert _errors(path) == []
    with NWBHDF5IO(path, "r") as io:
        units = io.read().units
        model = units["embedding"].model
        for task, classes in (("cell_type", ["pv", "sst"]), ("region", ["ca1", "dg", "th"])):
            lab = units[task]
            assert isinstance(lab, PredictedLabel) and lab.model is model
            assert lab.probabilities is None and lab.unknown_label is None
            prob = get_class_probabilities(lab)  # found by name in 0.1.0 files
            assert prob is units[f"{task}_probabilities"] and isinstance(prob, ClassProbabilities)
            assert _str(prob.class_labels) == classes
        assert _str(units["region"].data[:]) == ["ca1", "unknown", "unknown", "th"]
        assert _str(units["region"].class_labels) == ["ca1", "dg", "th", "unknown"]
        assert np.isnan(units["region_probabilities"].data[1]).all()
        assert np.isnan(units["embedding"].data[1]).all()


def test_old_file_reads_in_fresh_process(tmp_path):
    path = tmp_path / OLD_FILE.name
    shutil.copyfile(OLD_FILE, path)
    out = _fresh_read(path)
    assert out.pop("imported") is False
    assert out["cell_type"]["linked"] is None and out["cell_type"]["unknown_label"] is None
    assert out["region"]["labels"] == ["ca1", "unknown", "unknown", "th"] and out["region"]["nan_rows"] == [1]


def test_get_class_probabilities_without_any():
    nwbfile = make_dandi_nwbfile(num_units=2)
    nwbfile.units.add_column(
        name="cell_type", description="x", data=["pv", "pv"], col_cls=PredictedLabel, model=make_model()
    )
    assert get_class_probabilities(nwbfile.units["cell_type"]) is None
