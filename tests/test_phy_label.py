"""`neuronid label`: phy TSV columns for Kilosort / phy folders (exported by SpikeInterface), analyzers and NWB files."""

import csv
import hashlib
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import spikeinterface.core as si
import torch

import spikeinterface_neuronid  # noqa: F401  (registers the extension)
from spikeinterface_neuronid import fit_head
from spikeinterface_neuronid.bundle import ModelBundle
from spikeinterface_neuronid.cli import main
from spikeinterface_neuronid.corpus import peak_channel_waveforms
from spikeinterface_neuronid.methods.nuclr import NuCLRConfig, build_encoder
from spikeinterface_neuronid.phy import (
    LabelInputError,
    PhyFolderWarning,
    label_phy_folder,
    phy_folder_analyzer,
    tsv_name,
)

from conftest import make_analyzer

TASK = "firing"
CLASSES = {"fast", "slow"}
TSV = tsv_name(TASK)
COLUMNS = ["cluster_id", f"neuronid_{TASK}", f"neuronid_{TASK}_probability"]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A tiny window-context model with a ``firing`` head (fast/slow units), and the same model without heads."""
    folder = tmp_path_factory.mktemp("model")
    torch.manual_seed(0)
    config = NuCLRConfig.window(dim=16, num_heads=2, projector_dim=16)
    bundle = ModelBundle.from_modules("nuclr", config, build_encoder(config), name="test-phy")
    headless = str(bundle.save(folder / "headless.safetensors"))
    analyzer = make_analyzer(num_units=24, seed=10, max_rate=30.0)
    emb = analyzer.compute("neuron_embedding", model=headless).get_data()
    rates = np.array([analyzer.sorting.get_unit_spike_train(u).size for u in analyzer.unit_ids])
    labels = np.where(rates > np.median(rates), "fast", "slow")
    labels[[0, 5, 9]] = np.where(labels[[0, 5, 9]] == "fast", "slow", "fast")  # not perfectly separable
    bundle.add_head(fit_head(emb, labels, TASK, C=0.1, threshold=0.6))
    return str(bundle.save(folder / "heads.safetensors")), headless


@pytest.fixture(scope="module")
def waveform_model(tmp_path_factory):
    """A tiny span-context model with a waveform channel and a ``firing`` head."""
    torch.manual_seed(1)
    config = NuCLRConfig.cpu(dim=16, num_heads=2, projector_dim=16)
    assert config.waveform_channel
    bundle = ModelBundle.from_modules("nuclr", config, build_encoder(config), name="test-phy-waveforms")
    folder = tmp_path_factory.mktemp("waveform_model")
    headless = str(bundle.save(folder / "headless.safetensors"))
    analyzer = make_analyzer(num_units=24, seed=11, max_rate=30.0)
    emb = analyzer.compute("neuron_embedding", model=headless).get_data()
    labels = np.resize(np.array(["fast", "slow"]), len(emb))
    bundle.add_head(fit_head(emb, labels, TASK, threshold=0.0))
    return str(bundle.save(folder / "heads.safetensors"))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A phy folder written by SpikeInterface's export_to_phy from a small analyzer (and that analyzer)."""
    from spikeinterface.exporters import export_to_phy

    recording, sorting = si.generate_ground_truth_recording(durations=[30.0], num_units=6, num_channels=4, seed=3)
    analyzer = si.create_sorting_analyzer(sorting, recording, format="memory", sparse=False)
    analyzer.compute(["random_spikes", "templates"])
    folder = tmp_path_factory.mktemp("export") / "phy"
    export_to_phy(
        analyzer, folder, copy_binary=False, compute_pc_features=False, compute_amplitudes=False, verbose=False
    )
    return folder, analyzer


@pytest.fixture
def phy(exported, tmp_path):
    """A fresh copy of the exported phy folder for one test."""
    return Path(shutil.copytree(exported[0], tmp_path / "phy"))


def checksums(folder: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def phy_cluster_ids(folder: Path) -> np.ndarray:
    return np.unique(np.load(folder / "spike_clusters.npy"))


def check_tsv(path: Path, cluster_ids) -> pd.DataFrame:
    """The file is a phy cluster TSV: tab-separated, cluster_id first, one row per cluster, labels and probabilities."""
    table = pd.read_csv(path, sep="\t")
    assert list(table.columns) == COLUMNS
    np.testing.assert_array_equal(table["cluster_id"].to_numpy(), np.asarray(cluster_ids))
    assert set(table[COLUMNS[1]].astype(str)) <= CLASSES | {"unknown"}
    probability = table[COLUMNS[2]].to_numpy(dtype=float)
    assert np.all((probability >= 0) & (probability <= 1)), probability
    with open(path, newline="") as f:  # what phylib's read_tsv does: csv rows, tab delimiter in the header line
        header = f.readline()
        assert "\t" in header and header.split("\t")[0] == "cluster_id"
        f.seek(0)
        rows = list(csv.reader(f, delimiter="\t"))
    assert all(len(row) == 3 for row in rows) and [int(r[0]) for r in rows[1:]] == list(table["cluster_id"])
    return table


def test_label_writes_phy_tsvs_and_touches_nothing_else(phy, models, capsys):
    model, _ = models
    before = checksums(phy)
    assert main(["label", str(phy), "--model", model, "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert f"{phy}: 6 clusters (phy folder)" in out and f"wrote {phy / TSV}" in out
    assert "labelled 1 of 1 input(s)" in out.splitlines()[-1]
    check_tsv(phy / TSV, phy_cluster_ids(phy))
    after = checksums(phy)
    assert set(after) == set(before) | {TSV}  # no other new file (no temporary file left behind)
    assert {k: after[k] for k in before} == before  # every file of the sorter / exporter is byte-identical
    written = after[TSV]

    # a second run refuses to replace our TSV, in the command line's terms; --overwrite replaces it
    assert main(["label", str(phy), "--model", model, "--no-progress"]) == 1
    captured = capsys.readouterr()
    assert f"FAILED {phy}: " in captured.err and "--overwrite" in captured.err and "overwrite=True" in captured.err
    assert "labelled 0 of 1 input(s)" in captured.out and checksums(phy)[TSV] == written
    assert main(["label", str(phy), "--model", model, "--overwrite", "--no-progress"]) == 0
    capsys.readouterr()
    check_tsv(phy / TSV, phy_cluster_ids(phy))
    assert {k: checksums(phy)[k] for k in before} == before

    # the Python API: same files, FileExistsError without overwrite
    with pytest.raises(FileExistsError, match="--overwrite"):
        label_phy_folder(phy, model=model)
    paths = label_phy_folder(phy, model=model, overwrite=True)
    assert paths == [phy / TSV]


def test_bad_inputs_fail_in_order_and_the_good_one_is_written(phy, models, tmp_path, capsys):
    model, _ = models
    not_phy = tmp_path / "notes"
    not_phy.mkdir()
    (not_phy / "readme.txt").write_text("not a sorting\n")
    broken = Path(shutil.copytree(phy, tmp_path / "broken"))
    np.save(broken / "spike_clusters.npy", np.load(broken / "spike_clusters.npy")[:-5])
    missing = tmp_path / "missing"
    code = main(["label", str(not_phy), str(phy), str(broken), str(missing), "--model", model, "--no-progress"])
    assert code == 1
    captured = capsys.readouterr()
    failed = [line for line in captured.err.splitlines() if line.startswith("FAILED")]
    assert [line.split(":")[0] for line in failed] == [f"FAILED {not_phy}", f"FAILED {broken}", f"FAILED {missing}"]
    assert "spike_times.npy" in failed[0] and "inconsistent" in failed[1] and "does not exist" in failed[2]
    assert all("\n" not in line for line in failed)
    assert captured.out.splitlines()[-1].startswith("labelled 1 of 4 input(s)")
    check_tsv(phy / TSV, phy_cluster_ids(phy))
    assert not (broken / TSV).exists() and not (not_phy / TSV).exists()


def test_phy_folder_analyzer_has_the_clusters_and_their_templates(exported):
    folder, original = exported
    analyzer = phy_folder_analyzer(folder)
    np.testing.assert_array_equal(analyzer.sorting.get_property("original_cluster_id"), phy_cluster_ids(folder))
    for index, unit_id in enumerate(original.unit_ids):  # export_to_phy numbers the clusters by unit index
        np.testing.assert_array_equal(
            analyzer.sorting.get_unit_spike_train(analyzer.unit_ids[index]),
            original.sorting.get_unit_spike_train(unit_id),
        )
    got, expected = peak_channel_waveforms(analyzer), peak_channel_waveforms(original)
    np.testing.assert_allclose(got["waveforms"], expected["waveforms"], rtol=1e-5, atol=1e-6)
    assert got["waveform_sampling_frequency"] == expected["waveform_sampling_frequency"]
    assert abs(got["waveform_nbefore"] - expected["waveform_nbefore"]) <= 2
    assert phy_folder_analyzer(folder, waveforms=False).has_extension("templates") is False


def test_templates_reach_a_model_with_a_waveform_channel(phy, waveform_model, models, capsys):
    assert main(["label", str(phy), "--model", waveform_model, "--no-progress"]) == 0
    assert "note: peak-channel waveforms from templates.npy given to the model" in capsys.readouterr().out
    check_tsv(phy / TSV, phy_cluster_ids(phy))
    with_templates = phy_folder_analyzer(phy).compute("neuron_embedding", model=waveform_model).get_data()
    without = phy_folder_analyzer(phy, waveforms=False).compute("neuron_embedding", model=waveform_model).get_data()
    assert np.all(np.isfinite(with_templates)) and not np.allclose(with_templates, without)
    # a model without a waveform channel says that it does not use them
    assert main(["label", str(phy), "--model", models[0], "--overwrite", "--no-progress"]) == 0
    assert "templates.npy not used: the model 'test-phy' has no waveform channel" in capsys.readouterr().out


def test_curated_folder_and_folder_without_params(phy, models, tmp_path, capsys):
    model, _ = models
    # phy-style curation after the export: clusters 0 and 1 merged into a new cluster that no TSV lists
    clusters = np.load(phy / "spike_clusters.npy")
    merged = clusters.copy()
    merged[np.isin(clusters, [0, 1])] = clusters.max() + 1
    np.save(phy / "spike_clusters.npy", merged)
    assert main(["label", str(phy), "--model", model, "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "note: read_phy leaves out 1 cluster(s)" in out
    check_tsv(phy / TSV, np.unique(merged))
    with pytest.warns(PhyFolderWarning, match="read_phy leaves out"):
        waveforms = peak_channel_waveforms(phy_folder_analyzer(phy))["waveforms"]
    assert np.all(np.isfinite(waveforms)) and len(waveforms) == len(np.unique(merged))

    # without params.py the sampling rate must be given
    bare = Path(shutil.copytree(phy, tmp_path / "bare"))
    (bare / "params.py").unlink()
    (bare / TSV).unlink()
    assert main(["label", str(bare), "--model", model, "--no-progress"]) == 1
    assert "--sampling-frequency" in capsys.readouterr().err
    fs = str(si.read_python(str(phy / "params.py"))["sample_rate"])
    assert main(["label", str(bare), "--model", model, "--sampling-frequency", fs, "--no-progress"]) == 0
    capsys.readouterr()
    check_tsv(bare / TSV, np.unique(merged))


def test_analyzer_input_needs_output_and_stays_unchanged(exported, models, tmp_path, capsys):
    model, _ = models
    _, original = exported
    folder = tmp_path / "analyzer"
    original.save_as(format="binary_folder", folder=folder)
    before = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()}
    assert main(["label", str(folder), "--model", model, "--no-progress"]) == 1
    assert "-o/--output" in capsys.readouterr().err
    out = tmp_path / "labels"
    assert main(["label", str(folder), "--model", model, "-o", str(out), "--no-progress"]) == 0
    capsys.readouterr()
    table = pd.read_csv(out / "analyzer" / TSV, sep="\t", dtype={"cluster_id": str})
    assert list(table.columns) == COLUMNS and list(table["cluster_id"]) == [str(u) for u in original.unit_ids]
    after = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()}
    assert after == before


def test_nwb_input(models, tmp_path, capsys):
    pynwb = pytest.importorskip("pynwb")
    from datetime import datetime, timezone

    model, _ = models
    analyzer = make_analyzer(num_units=6, duration=30.0, seed=4)
    nwbfile = pynwb.NWBFile("label test", "label-test", datetime(2024, 1, 1, tzinfo=timezone.utc))
    for unit_id in analyzer.unit_ids:
        nwbfile.add_unit(spike_times=analyzer.sorting.get_unit_spike_train(unit_id) / analyzer.sampling_frequency)
    path = tmp_path / "session.nwb"
    with pynwb.NWBHDF5IO(path, "w") as io:
        io.write(nwbfile)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    out = tmp_path / "labels"
    assert main(["label", str(path), "--model", model, "-o", str(out), "--no-progress"]) == 0
    capsys.readouterr()
    table = pd.read_csv(out / "session" / TSV, sep="\t")
    assert list(table.columns) == COLUMNS and list(table["cluster_id"]) == list(range(6))
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest


def test_model_without_heads_is_a_usage_error(phy, models, capsys):
    _, headless = models
    assert main(["label", str(phy), "--model", headless, "--no-progress"]) == 2
    assert "no task heads" in capsys.readouterr().err and not (phy / TSV).exists()
    with pytest.raises(LabelInputError, match="not a Kilosort/phy folder"):
        label_phy_folder(phy.parent, model=headless)
