"""The neuron_embedding analyzer extension: contract in all three formats, reload, select/merge/split, bad input."""

import numpy as np
import pytest
import spikeinterface.core as si

import spikeinterface_neuronid  # noqa: F401  (registers the extension)
from spikeinterface_neuronid.bundle import ModelBundle

from conftest import FS, make_analyzer


@pytest.mark.parametrize("format", ["memory", "binary_folder", "zarr"])
def test_contract_in_every_format(tmp_path, model_path, format):
    folder = None if format == "memory" else tmp_path / ("analyzer.zarr" if format == "zarr" else "analyzer")
    analyzer = make_analyzer(format=format, folder=folder)
    ext = analyzer.compute("neuron_embedding", model=model_path, progress_bar=False)
    emb = ext.get_data()
    # the tiny cpu() model: dim 16, so 32 columns ([population context, single unit])
    assert emb.shape == (analyzer.get_num_units(), 32) and emb.dtype == np.float32
    assert np.all(np.isfinite(emb))
    assert ext.params["model_sha256"] == ModelBundle.load(model_path).sha256
    df = ext.get_data(outputs="pandas")
    assert list(df.index) == list(analyzer.unit_ids)

    if format != "memory":
        loaded = si.load_sorting_analyzer(folder)
        np.testing.assert_array_equal(loaded.get_extension("neuron_embedding").get_data(), emb)
        assert loaded.get_extension("neuron_embedding").params == ext.params

    keep = analyzer.unit_ids[[1, 3, 4, 8]]
    sub = analyzer.select_units(keep)
    np.testing.assert_array_equal(sub.get_extension("neuron_embedding").get_data(), emb[[1, 3, 4, 8]])

    merged = analyzer.merge_units([[analyzer.unit_ids[0], analyzer.unit_ids[2]]], new_id_strategy="append")
    merged_emb = merged.get_extension("neuron_embedding").get_data()
    assert merged_emb.shape == (analyzer.get_num_units() - 1, 32)
    fresh = si.create_sorting_analyzer(merged.sorting, analyzer.recording, format="memory", sparse=False)
    fresh_emb = fresh.compute("neuron_embedding", model=model_path).get_data()
    np.testing.assert_allclose(merged_emb, fresh_emb, atol=1e-5)
    # the population changed, so even units that were not merged get new embeddings
    assert not np.allclose(merged_emb[0], emb[1], atol=1e-5)

    unit = analyzer.unit_ids[5]
    n = analyzer.sorting.get_unit_spike_train(unit).size
    split = analyzer.split_units({unit: [np.arange(0, n, 2), np.arange(1, n, 2)]})
    split_emb = split.get_extension("neuron_embedding").get_data()
    assert split_emb.shape == (analyzer.get_num_units() + 1, 32)
    fresh = si.create_sorting_analyzer(split.sorting, analyzer.recording, format="memory", sparse=False)
    np.testing.assert_allclose(split_emb, fresh.compute("neuron_embedding", model=model_path).get_data(), atol=1e-5)


def test_permuting_units_permutes_embeddings(model_path):
    analyzer = make_analyzer(num_units=12)
    emb = analyzer.compute("neuron_embedding", model=model_path).get_data()
    perm = np.random.default_rng(1).permutation(analyzer.get_num_units())
    permuted_sorting = analyzer.sorting.select_units(analyzer.unit_ids[perm])
    other = si.create_sorting_analyzer(permuted_sorting, analyzer.recording, format="memory", sparse=False)
    np.testing.assert_allclose(other.compute("neuron_embedding", model=model_path).get_data(), emb[perm], atol=1e-5)


def test_same_input_same_result_and_units_carry_identity(model_path):
    a = make_analyzer(seed=3).compute("neuron_embedding", model=model_path).get_data()
    b = make_analyzer(seed=3).compute("neuron_embedding", model=model_path).get_data()
    np.testing.assert_array_equal(a, b)
    c = make_analyzer(seed=4).compute("neuron_embedding", model=model_path).get_data()
    assert not np.allclose(a, c)


def test_large_population_is_grouped_and_seeded(model_path):
    analyzer = make_analyzer(num_units=30)
    full = analyzer.compute("neuron_embedding", model=model_path).get_data()
    grouped = analyzer.compute("neuron_embedding", model=model_path, max_context_units=8, seed=0).get_data()
    again = analyzer.compute("neuron_embedding", model=model_path, max_context_units=8, seed=0).get_data()
    np.testing.assert_array_equal(grouped, again)
    assert np.all(np.isfinite(grouped)) and not np.allclose(grouped, full)


def test_silent_units_get_nan_rows_and_a_flag(model_path):
    analyzer = make_analyzer(num_units=8, silent_units=2)
    ext = analyzer.compute("neuron_embedding", model=model_path)
    emb = ext.get_data()
    assert np.all(np.isnan(emb[:2])) and np.all(np.isfinite(emb[2:]))
    np.testing.assert_array_equal(ext.data["embedded"], [False, False] + [True] * 6)
    assert ext.data["num_windows"][2] == 3  # 32 s -> three full 10 s windows


def test_bad_input_gives_clear_errors(model_path):
    with pytest.raises(ValueError, match="at least 2 units"):
        make_analyzer(num_units=1).compute("neuron_embedding", model=model_path)
    with pytest.raises(ValueError, match="shorter than one 10 s window"):
        make_analyzer(duration=6.0).compute("neuron_embedding", model=model_path)
    with pytest.raises(FileNotFoundError, match="model file not found"):
        make_analyzer().compute("neuron_embedding", model="/nonexistent/model.safetensors")
    sorting = si.NumpySorting.from_unit_dict([{}], sampling_frequency=FS)
    recording = si.generate_recording(num_channels=4, durations=[20.0], sampling_frequency=FS)
    empty = si.create_sorting_analyzer(sorting, recording, format="memory", sparse=False)
    with pytest.raises(ValueError, match="no units"):
        empty.compute("neuron_embedding", model=model_path)


def test_typo_in_params_keeps_previous_result(tmp_path, model_path):
    analyzer = make_analyzer(format="binary_folder", folder=tmp_path / "a")
    emb = analyzer.compute("neuron_embedding", model=model_path).get_data()
    with pytest.raises(TypeError, match="unknown parameter"):
        analyzer.compute("neuron_embedding", model=model_path, batchsize=4)
    np.testing.assert_array_equal(analyzer.get_extension("neuron_embedding").get_data(), emb)


def test_corrupted_model_file_is_rejected(tmp_path, model_path):
    data = bytearray(open(model_path, "rb").read())
    data[-5] ^= 0xFF
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(bytes(data))
    with pytest.raises(ValueError):
        make_analyzer().compute("neuron_embedding", model=str(bad))
