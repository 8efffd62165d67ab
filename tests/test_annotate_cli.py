"""`neuronid annotate`: nothing left behind on SIGTERM or SIGKILL, and one actionable line per problem."""

import os
import shutil
import signal
import time
from pathlib import Path

import pytest

pynwb = pytest.importorskip("pynwb")
h5py = pytest.importorskip("h5py")
pytest.importorskip("ndx_neuron_embedding")

from spikeinterface_neuronid.nwb.annotate import annotate_command, annotate_nwb_files, find_nwb_files  # noqa: E402
from spikeinterface_neuronid.nwb import read_embedding_arrays  # noqa: E402

# a small old file (pynwb 2.8, 5 units, 30 s; see tests/data/nwb_legacy/README.md)
FIXTURE = Path(__file__).parent / "data" / "nwb_legacy" / "pynwb28_minimal.nwb"


@pytest.fixture
def tree(tmp_path):
    """raw/sub-1/sub-1_ses-0.nwb and raw/sub-2/sub-2_ses-0.nwb (copies of one fixture)."""
    for sub in ("sub-1", "sub-2"):
        (tmp_path / "raw" / sub).mkdir(parents=True)
        shutil.copyfile(FIXTURE, tmp_path / "raw" / sub / f"{sub}_ses-0.nwb")
    return tmp_path / "raw"


def hidden(folder) -> list:
    return sorted(str(p.relative_to(folder)) for p in Path(folder).rglob(".*"))


def one_line_errors(err: str) -> list:
    """The lines of stderr; none of them may be a traceback's."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert not [line for line in lines if line.startswith(("Traceback", "  File ", "    "))], err
    return lines


@pytest.fixture
def default_sigterm():
    """SIGTERM with its default handler (killing the process) during the test, as in a plain shell."""
    previous = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    yield
    signal.signal(signal.SIGTERM, previous)


def test_sigterm_removes_the_partial_copy(tree, tmp_path, monkeypatch, capsys, default_sigterm):
    # Imported first: before the fix there is no handler, and a SIGTERM would kill the test run itself.
    from spikeinterface_neuronid.nwb.annotate import _sigterm_as_exception  # noqa: F401

    calls = []
    real_export = pynwb.NWBHDF5IO.export

    def export(self, *args, **kwargs):  # the second file is killed in the middle of its write
        calls.append(self)
        if len(calls) == 1:
            return real_export(self, *args, **kwargs)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises during the sleep
        raise AssertionError("SIGTERM was not turned into an exception")

    monkeypatch.setattr(pynwb.NWBHDF5IO, "export", export)
    out = tmp_path / "annotated"
    assert annotate_command([tree], out, progress_bar=False) == 143
    err = capsys.readouterr().err
    assert "stopped by SIGTERM after 1 of 2 file(s)" in err
    assert hidden(out) == []  # no .sub-2_ses-0.nwb.XXXXXXXX.tmp
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*.nwb")) == ["sub-1/sub-1_ses-0.nwb"]
    read_embedding_arrays(out / "sub-1" / "sub-1_ses-0.nwb")  # the finished copy is kept, whole
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the previous handler is back

    # the Python API raises SystemExit(143) after the same clean-up
    calls.clear()
    calls.append(None)  # kill the first write
    with pytest.raises(SystemExit) as stop:
        annotate_nwb_files([tree / "sub-2"], tmp_path / "again", progress_bar=False)
    assert stop.value.code == 143 and hidden(tmp_path / "again") == []


def test_sigterm_handler_of_the_application_is_left_alone(monkeypatch):
    from spikeinterface_neuronid.nwb.annotate import _sigterm_as_exception

    def mine(signum, frame):
        pass

    previous = signal.signal(signal.SIGTERM, mine)
    try:
        with _sigterm_as_exception():
            assert signal.getsignal(signal.SIGTERM) is mine
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_stale_temporaries_of_a_killed_run_are_removed(tree, tmp_path):
    """SIGKILL cannot be caught: the next run for the same output removes what the killed one left."""
    out = tmp_path / "annotated" / "sub-1"
    out.mkdir(parents=True)
    stale = [".sub-1_ses-0.nwb.k3_9xq2z.tmp"]  # exactly our temporary pattern for this output
    others = [
        ".sub-1_ses-0.nwb.notes.tmp",  # not 8 characters
        ".sub-1_ses-0.nwb.k3_9xq2z.tmp.bak",
        "sub-1_ses-0.nwb.k3_9xq2z.tmp",  # not hidden
        ".sub-2_ses-0.nwb.k3_9xq2z.tmp",  # another output
        ".sub-1_ses-0.nwb.K3_9XQ2Z.tmp",  # not tempfile's alphabet
    ]
    for name in stale + others:
        (out / name).write_bytes(b"x" * 1000)
    with pytest.warns(UserWarning, match=r"removed .*\.sub-1_ses-0\.nwb\.k3_9xq2z\.tmp"):
        results = annotate_nwb_files([tree / "sub-1"], out, progress_bar=False)
    assert [r.error for r in results] == [None]
    assert sorted(p.name for p in out.iterdir()) == sorted(others + ["sub-1_ses-0.nwb"])


def test_interrupted_zarr_replacement_is_restored(tmp_path):
    """A killed replacement of a Zarr store leaves the previous store aside as .NAME.XXXXXXXX.old: it is moved
    back when the store is missing, and removed when the new store is in place."""
    from spikeinterface_neuronid.nwb.io import _recover_interrupted_writes

    store = tmp_path / "s.nwb.zarr"
    aside = tmp_path / ".s.nwb.zarr.1a2b3c4d.old"
    aside.mkdir()
    (aside / ".zgroup").write_text("{}")
    with pytest.warns(UserWarning, match="restored"):
        _recover_interrupted_writes(store)
    assert (store / ".zgroup").is_file() and not aside.exists()
    aside.mkdir()
    with pytest.warns(UserWarning, match="removed"):
        _recover_interrupted_writes(store)
    assert store.is_dir() and not aside.exists()


def test_output_folder_is_the_input_folder(tree, capsys):
    assert annotate_command([tree], tree, progress_bar=False) == 2
    (line,) = one_line_errors(capsys.readouterr().err)
    assert "is the input folder" in line and f"-o {tree / 'annotated'}" in line
    with pytest.raises(ValueError, match="output_folder .* is the input folder"):
        annotate_nwb_files([tree], tree, progress_bar=False)


def test_copy_over_its_source(tree, capsys):
    folder = tree / "sub-1"
    assert annotate_command([folder / "sub-1_ses-0.nwb"], folder, progress_bar=False) == 2
    (line,) = one_line_errors(capsys.readouterr().err)
    assert "over the file itself" in line and "-o" in line and "overwrite" not in line


def test_earlier_outputs_inside_the_input_tree_are_skipped(tree, capsys):
    assert annotate_command([tree / "sub-1"], tree / "annotated", progress_bar=False) == 0
    capsys.readouterr()
    # a second run into another folder of the same tree does not re-ingest the first run's copy
    assert annotate_command([tree], tree / "annotated_v2", progress_bar=False) == 0
    captured = capsys.readouterr()
    assert "skipped an annotated copy" in captured.err and "FAILED" not in captured.err
    assert "annotated 2 of 2 file(s)" in captured.out
    assert sorted(str(p.relative_to(tree / "annotated_v2")) for p in (tree / "annotated_v2").rglob("*.nwb")) == [
        "sub-1/sub-1_ses-0.nwb",
        "sub-2/sub-2_ses-0.nwb",
    ]


def test_symlinked_input_still_excludes_the_output_folder(tree, tmp_path):
    (tree / "annotated" / "sub-1").mkdir(parents=True)
    shutil.copyfile(FIXTURE, tree / "annotated" / "sub-1" / "sub-1_ses-0.nwb")
    link = tmp_path / "link"
    link.symlink_to(tree, target_is_directory=True)
    rels = [str(rel) for _, rel in find_nwb_files([link], exclude=tree / "annotated")]
    assert rels == ["sub-1/sub-1_ses-0.nwb", "sub-2/sub-2_ses-0.nwb"]


def test_existing_copy_names_the_command_line_option(tree, capsys):
    out = tree.parent / "annotated"
    assert annotate_command([tree / "sub-1"], out, progress_bar=False) == 0
    assert annotate_command([tree / "sub-1"], out, progress_bar=False) == 1
    lines = one_line_errors(capsys.readouterr().err)
    source, copy = tree / "sub-1" / "sub-1_ses-0.nwb", out / "sub-1_ses-0.nwb"
    assert lines == [f"FAILED {source}: {copy} exists; pass --overwrite to replace it"]


def test_files_that_are_not_nwb(tmp_path, capsys):
    with h5py.File(tmp_path / "plain.nwb", "w") as f:  # HDF5, but not NWB
        f["x"] = 1
    (tmp_path / "text.nwb").write_text("not HDF5")
    inputs = [tmp_path / "plain.nwb", tmp_path / "text.nwb"]
    results = annotate_nwb_files(inputs, tmp_path / "out", progress_bar=False)
    assert "an HDF5 file but not an NWB file" in results[0].error and "\n" not in results[0].error
    assert "not an HDF5 file" in results[1].error
    assert annotate_command([tmp_path / "plain.nwb"], tmp_path / "out", progress_bar=False) == 1
    lines = one_line_errors(capsys.readouterr().err)
    assert len(lines) == 1 and "not an NWB file" in lines[0] and "neuroconv" in lines[0]


@pytest.mark.parametrize("fs", [1.0, 10.0])
def test_too_coarse_sampling_frequency_is_one_line(tree, capsys, fs):
    """--sampling-frequency 1 (or 10) used to give garbage labels without a word (issue 11 item 4)."""
    assert annotate_command([tree / "sub-1"], tree.parent / "out", sampling_frequency=fs, progress_bar=False) == 1
    lines = one_line_errors(capsys.readouterr().err)
    assert len(lines) == 1 and "--sampling-frequency" in lines[0] and "too coarse" in lines[0], lines
    assert not (tree.parent / "out" / "sub-1_ses-0.nwb").exists()
