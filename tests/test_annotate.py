"""NWB: analyzer -> full NWB file (neuroconv), `neuronid annotate`, and the Zarr backend."""

import hashlib
import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest

pynwb = pytest.importorskip("pynwb")
pytest.importorskip("ndx_neuron_embedding")
pytest.importorskip("neuroconv")
pytest.importorskip("nwbinspector")

import spikeinterface.core as si  # noqa: E402
from pynwb import NWBHDF5IO, NWBFile  # noqa: E402
from pynwb.file import Subject  # noqa: E402

import spikeinterface_neuronid  # noqa: F401, E402  (registers the extension)
from spikeinterface_neuronid.nwb.annotate import annotate_command, annotate_nwb_files, find_nwb_files  # noqa: E402
from spikeinterface_neuronid.nwb import (  # noqa: E402
    read_embedding_arrays,
    write_analyzer_to_nwb,
    write_embeddings_to_nwb,
)
from spikeinterface_neuronid.simulation import simulate_sorting  # noqa: E402
from spikeinterface_neuronid.labeling import extension_predictions

FS = 30000.0
DURATION = 20.0
METADATA = {
    "NWBFile": {
        "session_description": "Simulated session for spikeinterface-neuronid annotate tests.",
        "session_start_time": "2024-01-01T12:00:00+00:00",
        "session_id": "ses-0",
        "experimenter": ["Doe, Jane"],
        "institution": "Test University",
        "experiment_description": "Simulated units.",
        "keywords": ["test"],
    },
    "Subject": {"subject_id": "a1", "species": "Mus musculus", "sex": "U", "age": "P60D", "description": "Simulated."},
}


def tree_sha256(path) -> str:
    """Checksum of a file, or of every file of a directory store (names and bytes)."""
    path = Path(path)
    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for f in files:
        h.update(str(f.relative_to(path) if f != path else f.name).encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def dandi_messages(path):
    from nwbinspector import Importance, inspect_nwbfile, load_config

    messages = inspect_nwbfile(
        nwbfile_path=str(path), config=load_config("dandi"), importance_threshold=Importance.BEST_PRACTICE_VIOLATION
    )
    return [(m.importance.name, m.check_function_name, m.message) for m in messages]


def assert_valid(path):
    errors = pynwb.validate(path=str(path))
    errors = errors[0] if isinstance(errors, tuple) else errors
    assert not errors, errors
    assert not dandi_messages(path)


def make_analyzer(animal=1, embed=True):
    sorting = simulate_sorting("easy", animal=animal, num_neurons=15, duration_s=DURATION, sampling_frequency=FS)
    recording = si.generate_recording(num_channels=1, durations=[DURATION], sampling_frequency=FS, seed=0)
    analyzer = si.create_sorting_analyzer(sorting, recording, sparse=False)
    if embed:
        analyzer.compute("neuron_embedding")
    return analyzer


@pytest.fixture(scope="module")
def analyzer():
    return make_analyzer()


@pytest.fixture(scope="module")
def dandi_tree(tmp_path_factory, analyzer):
    """sub-a1/sub-a1_ses-0.nwb, sub-a2/sub-a2_ses-0.nwb (good), sub-a1/sub-a1_ses-1.nwb.zarr (good, Zarr),
    sub-nounits/... (no Units table) and sub-nospikes/... (units without spikes)."""
    root = tmp_path_factory.mktemp("dandiset")
    write_analyzer_to_nwb(analyzer, root / "sub-a1" / "sub-a1_ses-0.nwb", METADATA, embeddings=False)
    write_analyzer_to_nwb(analyzer, root / "sub-a1" / "sub-a1_ses-1.nwb.zarr", METADATA, embeddings=False)
    other = make_analyzer(animal=2, embed=False)
    md2 = {"NWBFile": METADATA["NWBFile"], "Subject": dict(METADATA["Subject"], subject_id="a2")}
    write_analyzer_to_nwb(other, root / "sub-a2" / "sub-a2_ses-0.nwb", md2)
    start = datetime(2024, 1, 1, tzinfo=timezone.utc)
    for name, units in (("nounits", False), ("nospikes", True)):
        nwbfile = NWBFile(session_description="broken", identifier=name, session_start_time=start)
        if units:
            for _ in range(3):
                nwbfile.add_unit(spike_times=[])
        (root / f"sub-{name}").mkdir()
        with NWBHDF5IO(str(root / f"sub-{name}" / f"sub-{name}_ses-0.nwb"), "w") as io:
            io.write(nwbfile)
    return root


def test_write_analyzer_round_trip(analyzer, tmp_path):
    path = write_analyzer_to_nwb(analyzer, tmp_path / "full.nwb", METADATA)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full.nwb"]  # no temporary file left
    assert_valid(path)
    ext = analyzer.get_extension("neuron_embedding")
    with NWBHDF5IO(str(path), "r") as io:
        nwbfile = io.read()
        assert nwbfile.subject.subject_id == "a1" and nwbfile.session_id == "ses-0"
        units = nwbfile.units
        assert units.resolution == pytest.approx(1 / FS)
        assert list(units["unit_name"][:]) == [str(u) for u in analyzer.unit_ids]
        for row, uid in enumerate(analyzer.unit_ids):
            expected = analyzer.sorting.get_unit_spike_train(uid, return_times=True)
            np.testing.assert_array_equal(units["spike_times"][row], expected)
        assert {"embedding", "firing_type", "firing_type_probabilities", "cell_type"} <= set(units.colnames)
        np.testing.assert_array_equal(units["obs_intervals"][0], [[0.0, DURATION]])
    arrays = read_embedding_arrays(path)
    np.testing.assert_array_equal(arrays["embedding"], ext.data["embedding"])
    np.testing.assert_array_equal(arrays["tasks"]["firing_type"]["labels"], extension_predictions(ext)["firing_type"].labels)

    # a fresh process reads it with pynwb alone (cached spec), without our packages
    code = (
        "import sys\nfrom pynwb import NWBHDF5IO\n"
        f"with NWBHDF5IO({str(path)!r}, 'r', load_namespaces=True) as io:\n"
        "    u = io.read().units\n"
        "    print(u['embedding'].data[:].shape, u['embedding'].model.model_name, u['firing_type'].data[0])\n"
        "assert 'spikeinterface_neuronid' not in sys.modules and 'ndx_neuron_embedding' not in sys.modules\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert f"({analyzer.get_num_units()}, {ext.data['embedding'].shape[1]})" in res.stdout


def test_write_analyzer_metadata_errors(analyzer, tmp_path):
    out = tmp_path / "x.nwb"
    with pytest.raises(ValueError) as err:
        write_analyzer_to_nwb(analyzer, out, {"NWBFile": {}})
    msg = str(err.value)
    for needle in ("session_description is missing", "session_start_time is missing", "Subject is missing"):
        assert needle in msg
    bad = {
        "NWBFile": {"session_description": "s", "session_start_time": datetime(2024, 1, 1)},
        "Subject": {"subject_id": "a/1", "species": "mouse", "sex": "female"},
    }
    with pytest.raises(ValueError) as err:
        write_analyzer_to_nwb(analyzer, out, bad)
    msg = str(err.value)
    for needle in ("has no time zone", "must not contain '/'", "Latin binomial", "sex='female'", "age is missing"):
        assert needle in msg
    analyzer.sorting.set_property("embedding", np.zeros(analyzer.get_num_units()))
    try:
        with pytest.raises(ValueError, match=r"skip_properties=\['embedding'\]"):
            write_analyzer_to_nwb(analyzer, out, METADATA)
    finally:
        analyzer.sorting.delete_property("embedding")
    write_analyzer_to_nwb(analyzer, out, METADATA, embeddings=False)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        write_analyzer_to_nwb(analyzer, out, METADATA)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.nwb"]


def test_zarr_round_trip_bit_exact(analyzer, tmp_path):
    from hdmf_zarr.nwb import NWBZarrIO

    ext = analyzer.get_extension("neuron_embedding")
    store = write_analyzer_to_nwb(analyzer, tmp_path / "full.nwb.zarr", METADATA)
    assert store.is_dir() and sorted(p.name for p in tmp_path.iterdir()) == ["full.nwb.zarr"]
    with NWBZarrIO(str(store), "r") as io:
        assert not pynwb.validate(io=io)
    arrays = read_embedding_arrays(store)
    assert arrays["unit_ids"] == [str(u) for u in analyzer.unit_ids]
    np.testing.assert_array_equal(arrays["embedding"], ext.data["embedding"])
    prediction = extension_predictions(ext)["firing_type"]
    for key in ("labels", "probabilities", "confidence"):
        np.testing.assert_array_equal(arrays["tasks"]["firing_type"][key], getattr(prediction, key))

    # write_embeddings_to_nwb: Zarr -> Zarr copy, HDF5 -> Zarr copy, source untouched; overwrite replaces a store
    bare = write_analyzer_to_nwb(analyzer, tmp_path / "bare.nwb.zarr", METADATA, embeddings=False)
    before = tree_sha256(bare)
    write_embeddings_to_nwb(analyzer, bare, tmp_path / "copy.nwb.zarr")
    write_embeddings_to_nwb(analyzer, bare, tmp_path / "copy.nwb.zarr", overwrite=True)
    assert tree_sha256(bare) == before
    np.testing.assert_array_equal(read_embedding_arrays(tmp_path / "copy.nwb.zarr")["embedding"], ext.data["embedding"])
    h5 = write_analyzer_to_nwb(analyzer, tmp_path / "bare.nwb", METADATA, embeddings=False)
    write_embeddings_to_nwb(analyzer, h5, tmp_path / "from_h5.nwb.zarr")
    np.testing.assert_array_equal(
        read_embedding_arrays(tmp_path / "from_h5.nwb.zarr")["embedding"], ext.data["embedding"]
    )
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary store left


def test_find_nwb_files(dandi_tree, tmp_path):
    found = find_nwb_files([dandi_tree], exclude=dandi_tree / "annotated")
    rels = [str(rel) for _, rel in found]
    assert rels == [
        "sub-a1/sub-a1_ses-0.nwb",
        "sub-a1/sub-a1_ses-1.nwb.zarr",
        "sub-a2/sub-a2_ses-0.nwb",
        "sub-nospikes/sub-nospikes_ses-0.nwb",
        "sub-nounits/sub-nounits_ses-0.nwb",
    ]
    single = dandi_tree / "sub-a1" / "sub-a1_ses-0.nwb"
    assert find_nwb_files([single, single]) == [(single, Path("sub-a1_ses-0.nwb"))]
    with pytest.raises(FileNotFoundError):
        find_nwb_files([tmp_path / "missing.nwb"])


def test_annotate_tree_reports_bad_files_and_keeps_sources(dandi_tree, analyzer, capsys):
    sources = sorted(p for p in dandi_tree.glob("sub-*/*") if p.name.endswith((".nwb", ".nwb.zarr")))
    before = {p: tree_sha256(p) for p in sources}
    out = dandi_tree / "annotated"  # inside the input tree: skipped when searching
    code = annotate_command([dandi_tree], out, progress_bar=False)  # what `neuronid annotate DIR -o OUT` runs
    captured = capsys.readouterr()
    assert code == 1
    assert "FAILED" in captured.err and "no Units table" in captured.err and "none of the 3 units" in captured.err
    assert "annotated 3 of 5 file(s)" in captured.out
    assert {p: tree_sha256(p) for p in sources} == before  # sources byte-identical
    written = sorted(str(p.relative_to(out)) for p in out.glob("*/*"))
    assert written == ["sub-a1/sub-a1_ses-0.nwb", "sub-a1/sub-a1_ses-1.nwb.zarr", "sub-a2/sub-a2_ses-0.nwb"]

    ext = analyzer.get_extension("neuron_embedding")
    for rel in ("sub-a1/sub-a1_ses-0.nwb", "sub-a1/sub-a1_ses-1.nwb.zarr"):
        arrays = read_embedding_arrays(out / rel)
        assert arrays["unit_ids"] == [str(u) for u in analyzer.unit_ids]
        # same spikes, same duration (obs_intervals): the same embedding as on the analyzer itself
        np.testing.assert_array_equal(arrays["embedding"], ext.data["embedding"])
        np.testing.assert_array_equal(arrays["tasks"]["firing_type"]["labels"], extension_predictions(ext)["firing_type"].labels)
    assert_valid(out / "sub-a2/sub-a2_ses-0.nwb")  # (sub-a1's HDF5 twin is checked in test_write_analyzer_round_trip)

    # a second run without --overwrite reports the existing copies; with it, they are replaced
    assert annotate_command([dandi_tree / "sub-a2"], out / "sub-a2", progress_bar=False) == 1
    assert "exists" in capsys.readouterr().err
    good = dandi_tree / "sub-a2" / "sub-a2_ses-0.nwb"
    assert annotate_command([good], out / "sub-a2", overwrite=True, progress_bar=False) == 0
    assert annotate_command([out / "sub-a2" / "sub-a2_ses-0.nwb"], out / "again", progress_bar=False) == 1
    assert "already annotated" in capsys.readouterr().err


def test_annotate_old_style_file(tmp_path):
    """A file as found in the wild: no unit_name, no resolution, no Subject, an ElectricalSeries-free old layout."""
    sorting = simulate_sorting("easy", animal=4, num_neurons=15, duration_s=DURATION, sampling_frequency=FS)
    nwbfile = NWBFile(
        session_description="old file", identifier="old", session_start_time=datetime(1900, 1, 1, tzinfo=timezone.utc)
    )
    for i, uid in enumerate(sorting.unit_ids):
        nwbfile.add_unit(id=10 + i, spike_times=sorting.get_unit_spike_train(uid) / FS - 0.25)  # some times < 0
    src = tmp_path / "old.nwb"
    with NWBHDF5IO(str(src), "w") as io:
        io.write(nwbfile)
    before = tree_sha256(src)
    results = annotate_nwb_files([src], tmp_path / "out", progress_bar=False)
    assert [r.error for r in results] == [None] and results[0].num_units == len(sorting.unit_ids)
    assert tree_sha256(src) == before
    arrays = read_embedding_arrays(tmp_path / "out" / "old.nwb")
    assert arrays["unit_ids"] == [str(10 + i) for i in range(len(sorting.unit_ids))]
    assert np.isfinite(arrays["embedding"]).all(axis=1).sum() >= len(sorting.unit_ids) - 2
    assert not os.path.exists(tmp_path / "out" / ".old.nwb.tmp")


def test_cli_annotate(dandi_tree, tmp_path):
    """The console script: exit code 0 for a good file, 2 when no NWB file is found."""
    cli = pytest.importorskip("spikeinterface_neuronid.cli")
    if "annotate" not in Path(cli.__file__).read_text():
        pytest.skip("this checkout's cli.py has no annotate subcommand")
    good = dandi_tree / "sub-a2" / "sub-a2_ses-0.nwb"
    assert cli.main(["annotate", str(good), "-o", str(tmp_path / "out"), "--no-progress"]) == 0
    assert (tmp_path / "out" / "sub-a2_ses-0.nwb").is_file()
    (tmp_path / "empty").mkdir()
    assert cli.main(["annotate", str(tmp_path / "empty"), "-o", str(tmp_path / "out2"), "--no-progress"]) == 2


def test_demo_nwb_file(analyzer, tmp_path):
    from spikeinterface_neuronid.nwb.demo_file import write_demo_nwb

    path = write_demo_nwb(analyzer, tmp_path / "sub-1003_ses-0.nwb", 1003, "easy")
    assert not dandi_messages(path)
    with NWBHDF5IO(str(path), "r") as io:
        units = io.read().units
        assert "embedding" not in units.colnames and "cell_type" not in units.colnames
        np.testing.assert_array_equal(units["true_cell_type"][:], analyzer.sorting.get_property("cell_type"))
