"""spikeinterface_neuronid.nwb: embeddings and predictions into / out of an NWB Units table."""

import hashlib
import shutil
import subprocess
import sys
from datetime import datetime, timezone

import numpy as np
import pytest

pynwb = pytest.importorskip("pynwb")
pytest.importorskip("ndx_neuron_embedding")
pytest.importorskip("h5py")

import spikeinterface.core as si  # noqa: E402
import torch  # noqa: E402
from pynwb import NWBHDF5IO, NWBFile  # noqa: E402
from pynwb.file import Subject  # noqa: E402

import spikeinterface_neuronid  # noqa: F401, E402  (registers the extension)
from spikeinterface_neuronid import fit_head  # noqa: E402
from spikeinterface_neuronid.bundle import ModelBundle  # noqa: E402
from spikeinterface_neuronid.methods.nuclr import NuCLRConfig, build_encoder  # noqa: E402
from spikeinterface_neuronid.nwb import (  # noqa: E402
    read_embedding_arrays,
    read_embeddings_from_nwb,
    write_embeddings_to_nwb,
)
from spikeinterface_neuronid.simulation import simulate_sorting  # noqa: E402
from spikeinterface_neuronid.labeling import extension_predictions

FS = 30000.0
DURATION = 30.0
NUM_UNITS = 40
ID_OFFSET = 100  # NWB ids differ from positions, to check matching by id


def sha256(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def make_dandi_nwbfile(with_units=True) -> NWBFile:
    """DANDI-ready NWBFile (metadata as in ndx-neuron-embedding's test fixture) with simulated spike trains."""
    nwbfile = NWBFile(
        session_description="Simulated session for spikeinterface-neuronid NWB round trips.",
        identifier="spikeinterface-neuronid-nwb-test-source",
        session_start_time=datetime(2024, 1, 1, 12, 0, 0, tzinfo=timezone.utc),
        session_id="ses-1",
        experimenter=["Doe, Jane"],
        institution="Test University",
        lab="Test Lab",
        experiment_description="Simulated extracellular units used to test writing neuron embeddings to NWB.",
        keywords=["test", "embedding", "cell type"],
    )
    nwbfile.subject = Subject(
        subject_id="m1", species="Mus musculus", sex="F", age="P60D", description="Simulated test mouse."
    )
    if with_units:
        sorting = simulate_sorting(num_neurons=NUM_UNITS, duration_s=DURATION, sampling_frequency=FS)
        for i, uid in enumerate(sorting.unit_ids):
            times = sorting.get_unit_spike_train(uid).astype(np.float64) / FS + 0.5 / FS  # fractional seconds
            nwbfile.add_unit(id=ID_OFFSET + i, spike_times=np.sort(times))
        nwbfile.units.resolution = 1 / FS
    return nwbfile


def assert_valid(path):
    errors = pynwb.validate(path=str(path))
    errors = errors[0] if isinstance(errors, tuple) else errors  # pynwb < 3 returns (errors, status)
    assert not errors, errors


def write(nwbfile, path):
    with NWBHDF5IO(str(path), "w") as io:
        io.write(nwbfile)
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    folder = tmp_path_factory.mktemp("nwb")
    source = write(make_dandi_nwbfile(), folder / "source.nwb")
    from spikeinterface.extractors import read_nwb_sorting

    sorting = read_nwb_sorting(source, sampling_frequency=FS)
    recording = si.generate_recording(num_channels=4, durations=[DURATION + 1.0], sampling_frequency=FS, seed=0)
    analyzer = si.create_sorting_analyzer(sorting, recording, sparse=False)

    torch.manual_seed(0)
    config = NuCLRConfig.cpu(dim=16, num_heads=2, projector_dim=16)
    bundle = ModelBundle.from_modules("nuclr", config, build_encoder(config), name="test-random")
    headless = str(bundle.save(folder / "headless.safetensors"))
    emb = analyzer.compute("neuron_embedding", model=headless).get_data()
    rates = np.array([sorting.get_unit_spike_train(u).size for u in sorting.unit_ids])
    labels = np.where(rates > np.median(rates), "fast", "slow")
    uncalibrated = fit_head(emb, labels, "firing", C=0.1, threshold=0.0, calibration_fraction=0)
    confidence = uncalibrated.predict_proba(emb).max(axis=1)
    threshold = float(np.quantile(confidence, 0.25))  # abstains on about a quarter: "unknown" labels
    bundle.add_head(fit_head(emb, labels, "firing", C=0.1, threshold=threshold, calibration_fraction=0))
    thirds = np.resize(np.array(["x", "y", "z"]), len(emb))
    bundle.add_head(fit_head(emb, thirds, "region", threshold=0.0))  # never abstains (the ndx helper path)
    model = str(bundle.save(folder / "heads.safetensors"))
    analyzer.compute("neuron_embedding", model=model)
    return folder, source, analyzer


def test_sorting_ids_are_nwb_ids(setup):
    _, _, analyzer = setup
    n = analyzer.get_num_units()
    assert n >= 20  # the simulation sorts most of its NUM_UNITS neurons
    assert [str(u) for u in analyzer.unit_ids] == [str(ID_OFFSET + i) for i in range(n)]


def test_export_round_trip_validates_and_leaves_source_untouched(setup, tmp_path):
    _, source, analyzer = setup
    before = sha256(source)
    out = write_embeddings_to_nwb(analyzer, source, tmp_path / "out.nwb")
    assert out == tmp_path / "out.nwb" and out.is_file()
    assert sha256(source) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.nwb"]  # no temporary file left

    with NWBHDF5IO(str(source), "r") as a, NWBHDF5IO(str(out), "r") as b:
        assert a.read().identifier != b.read().identifier

    assert_valid(out)

    from nwbinspector import Importance, inspect_nwbfile, load_config

    messages = list(
        inspect_nwbfile(
            nwbfile_path=str(out),
            config=load_config("dandi"),
            importance_threshold=Importance.BEST_PRACTICE_VIOLATION,
        )
    )
    assert not messages, [(m.importance, m.check_function_name, m.message) for m in messages]

    ext = analyzer.get_extension("neuron_embedding")
    arrays = read_embedding_arrays(out)
    assert arrays["unit_ids"] == [str(u) for u in analyzer.unit_ids]
    assert arrays["embedding"].dtype == np.float32
    np.testing.assert_array_equal(arrays["embedding"], ext.data["embedding"])  # bit-exact (NaN rows included)
    assert "unknown" in extension_predictions(ext)["firing"].labels and "unknown" not in extension_predictions(ext)["region"].labels
    assert sorted(arrays["tasks"]) == ["firing", "region"]
    for task, t in arrays["tasks"].items():
        np.testing.assert_array_equal(t["labels"], extension_predictions(ext)[task].labels)
        np.testing.assert_array_equal(t["probabilities"], extension_predictions(ext)[task].probabilities)
        np.testing.assert_array_equal(t["confidence"], extension_predictions(ext)[task].confidence)
        assert t["class_labels"] == [str(c) for c in extension_predictions(ext)[task].classes]
    assert arrays["tasks"]["firing"]["label_classes"] == ["fast", "slow", "unknown"]
    assert arrays["tasks"]["region"]["label_classes"] == ["x", "y", "z"]
    m = arrays["model"]
    assert m["model_name"] == "test-random" and m["model_checksum"] == ext.params["model_sha256"]
    assert m["embedding_dim"] == 32 and m["model_version"] == spikeinterface_neuronid.__version__
    assert "nuclr" in m["method"] and m["inference_date"]

    df = read_embeddings_from_nwb(out)
    assert list(df.index) == arrays["unit_ids"]
    assert list(df.columns) == [f"embedding_{j}" for j in range(32)] + [
        "firing_label",
        "firing_probability",
        "region_label",
        "region_probability",
    ]
    np.testing.assert_array_equal(df.filter(like="embedding_").to_numpy(), ext.data["embedding"])
    np.testing.assert_array_equal(df["firing_label"].to_numpy().astype(str), extension_predictions(ext)["firing"].labels)
    np.testing.assert_array_equal(df["region_probability"].to_numpy(), extension_predictions(ext)["region"].confidence)

    # overwrite=True replaces an existing output
    write_embeddings_to_nwb(analyzer, source, out, overwrite=True)
    assert sha256(source) == before


def test_rows_follow_the_nwb_table_order(setup, tmp_path):
    _, source, analyzer = setup
    # a source whose Units rows are in reverse order
    with NWBHDF5IO(str(source), "r") as io:
        src = io.read()
        rev = NWBFile(
            session_description=src.session_description,
            identifier="reversed",
            session_start_time=src.session_start_time,
        )
        rev.subject = Subject(subject_id="m1", species="Mus musculus", sex="F", age="P60D", description="mouse")
        ids = list(src.units.id[:])
        for row in reversed(range(len(ids))):
            rev.add_unit(id=ids[row], spike_times=src.units["spike_times"][row])
    path = write(rev, tmp_path / "rev.nwb")
    out = write_embeddings_to_nwb(analyzer, path, tmp_path / "rev_out.nwb")
    arrays = read_embedding_arrays(out)
    assert arrays["unit_ids"] == [str(u) for u in analyzer.unit_ids][::-1]
    ext = analyzer.get_extension("neuron_embedding")
    np.testing.assert_array_equal(arrays["embedding"], ext.data["embedding"][::-1])
    np.testing.assert_array_equal(arrays["tasks"]["firing"]["labels"], extension_predictions(ext)["firing"].labels[::-1])


def test_read_without_the_extension_package(setup, tmp_path):
    _, source, analyzer = setup
    out = write_embeddings_to_nwb(analyzer, source, tmp_path / "out.nwb")
    code = (
        "import sys, numpy as np\n"
        "from spikeinterface_neuronid.nwb import read_embeddings_from_nwb, read_embedding_arrays\n"
        f"a = read_embedding_arrays({str(out)!r}); df = read_embeddings_from_nwb({str(out)!r})\n"
        "assert 'ndx_neuron_embedding' not in sys.modules\n"
        "print(a['embedding'].shape, len(df))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    n = analyzer.get_num_units()
    assert f"({n}, 32) {n}" in res.stdout


def test_bad_inputs_write_nothing(setup, tmp_path):
    folder, source, analyzer = setup
    before = sha256(source)
    out = tmp_path / "out.nwb"

    bare = si.create_sorting_analyzer(analyzer.sorting, analyzer.recording, sparse=False)
    with pytest.raises(ValueError, match="no 'neuron_embedding' extension"):
        write_embeddings_to_nwb(bare, source, out)
    with pytest.raises(ValueError, match="is the source file"):
        write_embeddings_to_nwb(analyzer, source, source)
    with pytest.raises(ValueError, match="output_path"):
        write_embeddings_to_nwb(analyzer, source)

    subset = analyzer.select_units(analyzer.unit_ids[:10])
    n_missing = analyzer.get_num_units() - 10
    with pytest.raises(ValueError, match=rf"{n_missing} NWB unit\(s\) not in the analyzer: '110', '111'"):
        write_embeddings_to_nwb(subset, source, out)
    with pytest.raises(ValueError, match="unit_id_column='nope' is not a column"):
        write_embeddings_to_nwb(analyzer, source, out, unit_id_column="nope")

    no_units = write(make_dandi_nwbfile(with_units=False), tmp_path / "no_units.nwb")
    with pytest.raises(ValueError, match="no Units table"):
        write_embeddings_to_nwb(analyzer, no_units, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["no_units.nwb"]  # no output, no temporary file

    done = write_embeddings_to_nwb(analyzer, source, tmp_path / "done.nwb")
    done_sha = sha256(done)
    with pytest.raises(ValueError, match=r"already has column\(s\) \['embedding', 'firing'"):
        write_embeddings_to_nwb(analyzer, done, out)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        write_embeddings_to_nwb(analyzer, source, done)
    assert sha256(done) == done_sha
    assert sorted(p.name for p in tmp_path.iterdir()) == ["done.nwb", "no_units.nwb"]
    assert sha256(source) == before


def test_in_place_append_on_a_copy(setup, tmp_path):
    _, source, analyzer = setup
    copy = tmp_path / "copy.nwb"
    shutil.copyfile(source, copy)
    with NWBHDF5IO(str(copy), "r") as io:
        identifier = io.read().identifier
    assert write_embeddings_to_nwb(analyzer, copy, in_place=True) == copy
    arrays = read_embedding_arrays(copy)
    ext = analyzer.get_extension("neuron_embedding")
    np.testing.assert_array_equal(arrays["embedding"], ext.data["embedding"])
    np.testing.assert_array_equal(arrays["tasks"]["firing"]["probabilities"], extension_predictions(ext)["firing"].probabilities)
    with NWBHDF5IO(str(copy), "r") as io:
        assert io.read().identifier == identifier  # appended, same file
    assert_valid(copy)

    appended = sha256(copy)
    with pytest.raises(ValueError, match="already has column"):
        write_embeddings_to_nwb(analyzer, copy, in_place=True)
    assert sha256(copy) == appended
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy.nwb"]
