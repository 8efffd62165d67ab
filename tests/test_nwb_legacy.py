"""`neuronid annotate` on NWB files of older pynwb releases and of other writers (tests/data/nwb_legacy/).

Each fixture is annotated once by the command line (one model load for all); every copy must read back, pass
pynwb's validation and NWB Inspector's DANDI configuration (up to the fixtures' own, listed problems), and every
source must stay byte-identical. The fallback for files that hdmf cannot export is checked on the issue's file
(a non-ragged ``electrodes`` column) with the layout tolerance switched off, which is how it failed before.
"""

import hashlib
from pathlib import Path

import numpy as np
import pytest

pynwb = pytest.importorskip("pynwb")
h5py = pytest.importorskip("h5py")
pytest.importorskip("ndx_neuron_embedding")
pytest.importorskip("nwbinspector")

from spikeinterface_neuronid import cli  # noqa: E402
from spikeinterface_neuronid.nwb import write as nwb_write  # noqa: E402
from spikeinterface_neuronid.nwb.annotate import annotate_nwb_file  # noqa: E402
from spikeinterface_neuronid.nwb import read_embedding_arrays, read_embeddings_from_nwb  # noqa: E402

FIXTURES = Path(__file__).parent / "data" / "nwb_legacy"
FILES = sorted(FIXTURES.glob("*.nwb"))
OUR_COLUMNS = {"embedding", "firing_type", "firing_type_probabilities", "firing_type_confidence"}

# Problems the fixtures have on their own (they are synthetic, or anonymised on purpose); nothing else may be
# reported at BEST_PRACTICE_VIOLATION or above.
NO_SUBJECT = "check_subject_exists"  # the "minimal" files and handmade_no_cached_spec have no Subject
NO_RESOLUTION = "check_units_resolution_is_set"  # ... nor a Units resolution
MISSING_MOVIE = "check_image_series_external_file_valid"  # the OpticalSeries' movie files are not shipped
KNOWN_PROBLEMS = {
    "minimal": {NO_SUBJECT, NO_RESOLUTION, MISSING_MOVIE},
    "handmade_no_cached_spec": {NO_SUBJECT, NO_RESOLUTION},
    "handmade_plain_electrodes": {MISSING_MOVIE},
}


def known_problems(name: str) -> set:
    return set().union(*(v for k, v in KNOWN_PROBLEMS.items() if k in name))


def sha256(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def check_copy(path, source) -> None:
    """Reads back, validates, and passes the DANDI inspection up to the source's own problems."""
    from nwbinspector import Importance, inspect_nwbfile_object, load_config

    table = read_embeddings_from_nwb(path)
    with h5py.File(source, "r") as f:
        num_units = len(f["units/id"])
    assert len(table) == num_units
    assert np.isfinite(table.filter(like="embedding_").to_numpy()).all(axis=1).sum() >= num_units - 1
    with pynwb.NWBHDF5IO(str(path), "r", load_namespaces=True) as io:
        errors = pynwb.validate(io=io)
        assert not errors, errors
        messages = list(
            inspect_nwbfile_object(
                io.read(), config=load_config("dandi"), importance_threshold=Importance.BEST_PRACTICE_VIOLATION
            )
        )
    ours = [m for m in messages if m.object_name in OUR_COLUMNS | {"neuron_embedding_model"}]
    assert not ours, [(m.check_function_name, m.message) for m in ours]
    unexpected = {m.check_function_name for m in messages} - known_problems(Path(source).name)
    assert not unexpected, [(m.check_function_name, m.message) for m in messages]


@pytest.fixture(scope="module")
def annotated(tmp_path_factory):
    """``neuronid annotate tests/data/nwb_legacy -o OUT``: (OUT, checksums of the sources before, exit code)."""
    assert len(FILES) >= 8, f"the legacy fixtures are missing from {FIXTURES}"
    out = tmp_path_factory.mktemp("legacy_annotated")
    before = {p.name: sha256(p) for p in FILES}
    code = cli.main(["annotate", str(FIXTURES), "-o", str(out), "--no-progress"])
    return out, before, code


def test_every_fixture_is_annotated(annotated):
    out, before, code = annotated
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(before)  # no temporary left behind either
    assert {p.name: sha256(p) for p in FILES} == before  # the sources are byte-identical


@pytest.mark.parametrize("source", FILES, ids=[p.stem for p in FILES])
def test_annotated_copy_is_valid(annotated, source):
    out, _, _ = annotated
    check_copy(out / source.name, source)


def test_plain_electrodes_keep_their_layout(annotated):
    """The issue's file: the non-ragged electrodes column is written as it was, not re-indexed."""
    out, _, _ = annotated
    name = "handmade_plain_electrodes.nwb"
    with h5py.File(FIXTURES / name, "r") as src, h5py.File(out / name, "r") as copy:
        assert "electrodes_index" not in copy["units"]
        np.testing.assert_array_equal(copy["units/electrodes"][:], src["units/electrodes"][:])
        assert list(copy["stimulus/presentation/movie/external_file"][:]) == list(
            src["stimulus/presentation/movie/external_file"][:]
        )


def test_fallback_copy_and_append(annotated, tmp_path, monkeypatch):
    """A file that hdmf cannot export (here: the layout tolerance switched off, so the export fails with the
    issue's ContainerConfigurationError) is copied byte for byte and the columns appended; nothing else
    changes."""
    out, _, _ = annotated
    source = FIXTURES / "handmade_plain_electrodes.nwb"
    before = sha256(source)
    monkeypatch.setattr(nwb_write, "_tolerate_legacy_layouts", lambda io, nwbfile: None)
    target = tmp_path / "copy.nwb"
    with pytest.warns(UserWarning, match=r"could not re-write .*electrodes_index.*byte copy"):
        assert annotate_nwb_file(source, target) == 6
    assert sha256(source) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy.nwb"]
    check_copy(target, source)
    # the same embeddings as the exported copy
    np.testing.assert_array_equal(
        read_embedding_arrays(target)["embedding"], read_embedding_arrays(out / source.name)["embedding"]
    )
    with h5py.File(source, "r") as src, h5py.File(target, "r") as copy:
        assert copy.attrs["nwb_version"] == src.attrs["nwb_version"] == "2.4.0"  # not re-labelled
        assert copy["identifier"][()] != src["identifier"][()]
        assert copy["units"].attrs["object_id"] != src["units"].attrs["object_id"]
        names = []
        src.visit(names.append)
        for name in names:  # every object of the source is there, with the same data
            assert name in copy, name
            if isinstance(src[name], h5py.Dataset) and src[name].dtype.kind != "O" and name != "identifier":
                np.testing.assert_array_equal(copy[name][()], src[name][()], err_msg=name)
        added = {n for n in _names(copy) if n not in set(names)}
        assert {f"units/{c}" for c in OUR_COLUMNS} | {"general/neuron_embedding_model"} <= added
        assert all(n.split("/")[0] in ("units", "general", "specifications") for n in added), added
        assert list(copy["units"].attrs["colnames"])[-4:] == [
            "embedding",
            "firing_type",
            "firing_type_probabilities",
            "firing_type_confidence",
        ]
        # the label column's references point into the copy: its probabilities column and the model record
        label = copy["units/firing_type"]
        assert copy[label.attrs["probabilities"]].name == "/units/firing_type_probabilities"
        assert copy[label.attrs["model"]].name == "/general/neuron_embedding_model"


def _names(f) -> list:
    names = []
    f.visit(names.append)
    return names
