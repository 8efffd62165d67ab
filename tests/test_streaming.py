"""Streaming corpus: NWB files and analyzer folders read lazily (LazyCorpus) and `neuronid pretrain` on them."""

import json
import warnings
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pynwb")
pytest.importorskip("neuroconv")

import spikeinterface.core as si  # noqa: E402

import spikeinterface_neuronid  # noqa: F401, E402
from spikeinterface_neuronid import streaming  # noqa: E402
from spikeinterface_neuronid.bundle import ModelBundle  # noqa: E402
from spikeinterface_neuronid.cli import main  # noqa: E402
from spikeinterface_neuronid.corpus import spike_train_corpus  # noqa: E402
from spikeinterface_neuronid.methods.nuclr import NuCLRConfig  # noqa: E402
from spikeinterface_neuronid.nwb import write_analyzer_to_nwb  # noqa: E402
from spikeinterface_neuronid.streaming import (  # noqa: E402
    CorpusSourceError,
    LazyCorpus,
    expand_sources,
    load_spike_train_sets,
)
from spikeinterface_neuronid.training import pretrain  # noqa: E402

FS = 30000.0
DURATION = 60.0
METADATA = {
    "NWBFile": {
        "session_description": "Simulated session for spikeinterface-neuronid streaming tests.",
        "session_start_time": "2024-01-01T12:00:00+00:00",
        "session_id": "ses-0",
        "experimenter": ["Doe, Jane"],
        "institution": "Test University",
    },
    "Subject": {"subject_id": "a1", "species": "Mus musculus", "sex": "U", "age": "P60D", "description": "Simulated."},
}
#: relative path -> generator seed; one Zarr store among the HDF5 files
FILES = {"sub-a/sub-a_ses-0.nwb": 0, "sub-a/sub-a_ses-1.nwb": 1, "sub-b/sub-b_ses-0.nwb.zarr": 2}


def _sorting(seed, durations=(DURATION,)):
    rates = np.random.default_rng(seed).uniform(3.0, 15.0, 8)
    return si.generate_sorting(
        num_units=8, durations=list(durations), firing_rates=rates, sampling_frequency=FS, seed=seed
    )


def _analyzer(sorting, durations=(DURATION,)):
    recording = si.generate_recording(num_channels=1, durations=list(durations), sampling_frequency=FS, seed=0)
    return si.create_sorting_analyzer(sorting, recording, sparse=False)


@pytest.fixture(scope="module")
def nwb_tree(tmp_path_factory):
    """A DANDI-like folder of three NWB files (two HDF5, one Zarr) and the sortings they were written from."""
    root = tmp_path_factory.mktemp("nwb_corpus")
    sortings = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for rel, seed in FILES.items():
            sortings[rel] = _sorting(seed)
            write_analyzer_to_nwb(_analyzer(sortings[rel]), root / rel, METADATA, embeddings=False)
    (root / "notes.txt").write_text("not an NWB file; skipped by the folder search")
    return root, sortings


@pytest.fixture(scope="module")
def analyzer_folder(tmp_path_factory):
    """A binary-folder analyzer with two segments."""
    durations = (DURATION, 40.0)
    folder = tmp_path_factory.mktemp("analyzers") / "two_segments"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _analyzer(_sorting(5, durations), durations).save_as(format="binary_folder", folder=folder)
    return folder


def _tiny_config():
    return NuCLRConfig.cpu(dim=16, num_heads=2, projector_dim=16, edge_dim=4)


def test_lazy_items_equal_the_written_spike_times(nwb_tree):
    root, sortings = nwb_tree
    sources = expand_sources([root])
    assert [p.relative_to(root).as_posix() for p in sources] == sorted(FILES)
    corpus = LazyCorpus(sources)
    assert len(corpus) == 3 and corpus.num_loads == 0  # the length comes from metadata only
    assert corpus.kinds == ["nwb"] * 3
    for i, path in enumerate(sources):
        item = corpus[i]
        (eager,) = load_spike_train_sets(path)
        sorting = sortings[path.relative_to(root).as_posix()]
        assert item.num_units == sorting.get_num_units() == eager.num_units
        assert item.duration == pytest.approx(DURATION) and eager.duration == item.duration
        for unit_id, lazy_train, eager_train in zip(sorting.unit_ids, item.spike_times, eager.spike_times):
            np.testing.assert_array_equal(lazy_train, eager_train)
            np.testing.assert_allclose(lazy_train, sorting.get_unit_spike_train(unit_id) / FS, rtol=0, atol=1e-9)
    assert corpus.num_loads == 3
    # deterministic: the same sources in the same order give the same items
    again = LazyCorpus(expand_sources([root]))
    assert all(
        np.array_equal(a, b) for i in range(3) for a, b in zip(again[i].spike_times, corpus[i].spike_times)
    )
    assert corpus[-1] is corpus[2]
    with pytest.raises(IndexError):
        corpus[3]


def test_cache_holds_at_most_cache_size_sessions(nwb_tree, monkeypatch):
    root, _ = nwb_tree
    corpus = LazyCorpus(expand_sources([root]), cache_size=2)
    loads, held = [], []
    original = streaming.load_spike_train_sets

    def counting(path, *args, **kwargs):
        loads.append(path.name)
        held.append(len(corpus._cache) + 1)  # sessions in memory while this one is read
        return original(path, *args, **kwargs)

    monkeypatch.setattr(streaming, "load_spike_train_sets", counting)
    for i in (0, 1, 0, 2, 2, 1, 0):
        corpus[i]
        assert len(corpus.cached_sources) <= 2
    # 0, 1 read; 0 hit; 2 evicts 1; 2 hit; 1 evicts 0; 0 evicts 2
    assert corpus.num_loads == len(loads) == 5
    assert max(held) <= 2
    assert [p.name for p in corpus.cached_sources] == ["sub-a_ses-1.nwb", "sub-a_ses-0.nwb"]


def test_analyzer_folders_one_item_per_segment(analyzer_folder):
    corpus = LazyCorpus([analyzer_folder])
    assert len(corpus) == 2 and corpus.num_loads == 0 and corpus.kinds == ["analyzer"]
    eager = spike_train_corpus([si.load_sorting_analyzer(analyzer_folder, load_extensions=False)])
    for i in range(2):
        assert corpus[i].duration == eager[i].duration
        assert all(np.array_equal(a, b) for a, b in zip(corpus[i].spike_times, eager[i].spike_times))
    assert corpus.num_loads == 1  # both segments come from one read
    assert corpus.source_of(1) == (analyzer_folder, 1)


def test_pretrain_on_lazy_corpus_gives_the_eager_weights(nwb_tree, analyzer_folder):
    root, _ = nwb_tree
    sources = expand_sources([root]) + [analyzer_folder]
    eager = [s for path in sources for s in load_spike_train_sets(path)]
    kwargs = dict(config=_tiny_config(), steps=2, batch_size=2, seed=3, num_threads=1, progress_bar=False)
    lazy_bundle, lazy_history = pretrain(LazyCorpus(sources, cache_size=1), **kwargs)
    eager_bundle, eager_history = pretrain(eager, **kwargs)
    assert lazy_history["loss"] == eager_history["loss"]
    assert lazy_bundle.sha256 == eager_bundle.sha256
    assert lazy_bundle.provenance["training"]["num_sessions"] == len(eager) == 5


def _coarse_nwb(path):
    """An NWB file whose Units table says its spike times are on a 2 ms grid."""
    from pynwb import NWBHDF5IO, NWBFile
    from pynwb.misc import Units

    start = datetime(2024, 1, 1, tzinfo=timezone.utc)
    nwbfile = NWBFile(session_description="coarse", identifier="coarse", session_start_time=start)
    nwbfile.units = Units(name="units", resolution=0.002)
    nwbfile.add_unit(spike_times=np.arange(0.0, 20.0, 0.25))
    with NWBHDF5IO(str(path), "w") as io:
        io.write(nwbfile)
    return path


def test_unreadable_sources_are_named(tmp_path, nwb_tree):
    root, _ = nwb_tree
    fake = tmp_path / "fake.nwb"
    fake.write_text("not HDF5")
    with pytest.raises(CorpusSourceError, match="fake.nwb"):
        LazyCorpus([fake])
    with pytest.raises(FileNotFoundError, match="missing.nwb"):
        LazyCorpus([tmp_path / "missing.nwb"])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CorpusSourceError, match="holds no NWB files"):
        expand_sources([empty])
    with pytest.raises(CorpusSourceError, match="notes.txt"):
        expand_sources([root / "notes.txt"])
    # the spike-time grid is checked as `neuronid annotate` checks it, when the file is read
    corpus = LazyCorpus([_coarse_nwb(tmp_path / "coarse.nwb")])
    with pytest.raises(CorpusSourceError, match=r"coarse\.nwb.*too coarse"):
        corpus[0]
    with pytest.raises(ValueError, match="cache_size"):
        LazyCorpus([fake], cache_size=0)


def test_cli_pretrain_on_nwb_folder(nwb_tree, tmp_path, capsys):
    root, _ = nwb_tree
    out = tmp_path / "model.safetensors"
    code = main(
        ["pretrain", str(root), "--steps", "2", "--batch-size", "2", "--cache-sessions", "2", "-o", str(out)]
    )
    assert code == 0 and out.is_file() and out.with_suffix(".md").is_file()
    assert json.loads(out.with_suffix(".model_info.json").read_text())["method"] == "nuclr"
    provenance = ModelBundle.load(out).provenance
    assert provenance["data"] == "NWB files" and provenance["num_sessions"] == 3
    # more files than --cache-sessions: session-blocked sampling with blocks of the cache's size, by default
    assert provenance["training"]["session_block"] == 2 and provenance["training"]["session_block_steps"] == 100
    assert [Path(p).name for p in provenance["sources"]] == [Path(rel).name for rel in sorted(FILES)]
    assert "wrote" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["pretrain", str(tmp_path / "nowhere"), "--steps", "2", "-o", str(out)])
    assert "nowhere" in capsys.readouterr().err


def test_session_blocks_visit_every_item_once_per_epoch():
    from spikeinterface_neuronid._sampling import SessionBlocks

    blocks = SessionBlocks(num_items=7, sessions=3, steps=4, seed=1)
    assert blocks.blocks_per_epoch == 3
    assert all(np.array_equal(blocks.items(0), blocks.items(s)) for s in range(4))  # one block, 4 steps
    for epoch in range(2):
        items = [blocks.items(4 * (3 * epoch + b)) for b in range(3)]
        assert [len(i) for i in items] == [3, 3, 1]
        assert sorted(np.concatenate(items).tolist()) == list(range(7))
    assert not np.array_equal(
        np.concatenate([blocks.items(4 * b) for b in range(3)]),
        np.concatenate([blocks.items(4 * b) for b in (3, 4, 5)]),
    )  # each epoch its own shuffle
    assert np.array_equal(SessionBlocks(7, 3, 4, seed=1).items(9), blocks.items(9))
    with pytest.raises(ValueError, match="session_block must"):
        SessionBlocks(7, 0, 4, seed=1)
    with pytest.raises(ValueError, match="session_block_steps must"):
        SessionBlocks(7, 2, 1.5, seed=1)


def test_blocked_pretrain_reads_each_source_once_per_block(nwb_tree, analyzer_folder):
    from spikeinterface_neuronid._sampling import SessionBlocks

    root, _ = nwb_tree
    sources = expand_sources([root]) + [analyzer_folder]
    kwargs = dict(config=_tiny_config(), steps=6, batch_size=2, seed=3, num_threads=1, progress_bar=False)
    blocked = dict(session_block=2, session_block_steps=3)
    corpus = LazyCorpus(sources, cache_size=2)
    bundle, history = pretrain(corpus, **kwargs, **blocked)
    blocks = SessionBlocks(len(corpus), 2, 3, seed=3)
    sources_per_block = [{corpus.source_of(int(i))[0] for i in blocks.items(step)} for step in (0, 3)]
    assert corpus.num_loads <= sum(len(s) for s in sources_per_block)
    assert bundle.provenance["training"]["session_block"] == 2
    # the same blocks on the eager corpus give the same weights; no blocks gives others
    eager = [s for path in sources for s in load_spike_train_sets(path)]
    assert pretrain(eager, **kwargs, **blocked)[0].sha256 == bundle.sha256
    unblocked_corpus = LazyCorpus(sources, cache_size=2)
    assert pretrain(unblocked_corpus, **kwargs)[0].sha256 != bundle.sha256
    assert unblocked_corpus.num_loads > corpus.num_loads


def test_dataloader_workers_do_not_change_the_model(nwb_tree):
    root, _ = nwb_tree
    sources = expand_sources([root])
    kwargs = dict(config=_tiny_config(), steps=5, batch_size=2, seed=4, num_threads=1, progress_bar=False)
    in_thread, history = pretrain(LazyCorpus(sources, cache_size=1), shard_global_batch=True, **kwargs)
    with_workers, workers_history = pretrain(LazyCorpus(sources, cache_size=1), num_workers=2, **kwargs)
    assert with_workers.sha256 == in_thread.sha256 and workers_history["loss"] == history["loss"]
    with pytest.raises(ValueError, match="num_workers"):
        pretrain(LazyCorpus(sources), num_workers=1, shard_global_batch=False, **kwargs)
    with pytest.raises(ValueError, match="num_workers"):
        pretrain(LazyCorpus(sources), num_workers=-1, **kwargs)


def test_lazy_corpus_pickles_without_its_cache(nwb_tree):
    import pickle

    root, _ = nwb_tree
    corpus = LazyCorpus(expand_sources([root]), cache_size=2)
    corpus[0]
    copy = pickle.loads(pickle.dumps(corpus))
    assert copy.cached_sources == [] and len(copy) == len(corpus)
    assert all(np.array_equal(a, b) for a, b in zip(copy[0].spike_times, corpus[0].spike_times))
