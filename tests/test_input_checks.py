"""Inputs that used to give silently wrong results now give a clear error or warning (issue 11 items 4, 5, 7)."""

import warnings

import numpy as np
import pytest
import spikeinterface.core as si

import spikeinterface_neuronid  # noqa: F401  (registers the extension)
from spikeinterface_neuronid.corpus import sorting_to_spike_train_sets
from spikeinterface_neuronid.data import SpikeTrainSet
from spikeinterface_neuronid.inference import embed_populations


def _sorting(fs, duration=24.0, num_units=4, seed=0):
    rng = np.random.default_rng(seed)
    trains = {
        f"u{i}": np.unique(rng.integers(0, int(duration * fs), size=int(8 * duration))).astype(np.int64)
        for i in range(num_units)
    }
    return si.NumpySorting.from_unit_dict([trains], sampling_frequency=fs)


@pytest.mark.parametrize("fs", [1.0, 10.0, 500.0])
def test_spike_times_coarser_than_1ms_are_rejected(fs):
    sorting = _sorting(fs, num_units=3)
    with pytest.raises(ValueError, match=r"sampling_frequency is .* Hz: spike times on a .* ms grid are too coarse"):
        sorting_to_spike_train_sets(sorting, [int(24.0 * fs)])


def test_spike_times_on_a_1ms_grid_warn_and_30khz_does_not():
    with pytest.warns(UserWarning, match="1 ms grid quantise the model's 1-50 ms"):
        sorting_to_spike_train_sets(_sorting(1000.0), [24000])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sorting_to_spike_train_sets(_sorting(30000.0), [24 * 30000])


def test_spikes_on_bin_edges_fall_in_the_later_bin():
    fs = 30000.0
    # a spike exactly on every 20 ms edge after t = 10 s, from integer sample indices (as a sorting gives)
    samples = 300000 + 600 * np.arange(500)
    trains = SpikeTrainSet([samples / fs], duration=30.0)
    counts = trains.bin(10.0, 500, 0.02)
    np.testing.assert_array_equal(counts[0], np.ones(500))


def test_duplicate_spike_times_warn_and_count_once():
    times = np.array([0.1, 0.2, 0.2, 0.5, 0.5, 0.5])
    with pytest.warns(UserWarning, match=r"3 duplicate spike times .* in 1 unit\(s\).*counted once"):
        trains = SpikeTrainSet([times, np.array([0.3])], duration=1.0, unit_ids=["a", "b"])
    np.testing.assert_array_equal(trains.spike_times[0], [0.1, 0.2, 0.5])
    assert trains.bin(0.0, 50, 0.02).sum() == 4


def test_population_with_no_active_unit_warns(model_path):
    # two spikes per unit: below the 3 spikes a span needs, so nothing can be embedded
    trains = SpikeTrainSet([np.array([1.0, 2.0]), np.array([3.0, 4.0])], duration=40.0)
    with pytest.warns(UserWarning, match="none of the 2 units could be embedded"):
        result = embed_populations(model_path, [trains])
    assert not result.embedded.any()


def test_each_segment_too_short_is_named(model_path):
    seg = SpikeTrainSet([np.linspace(0.1, 6.0, 30), np.linspace(0.2, 6.1, 30)], duration=6.3)
    with pytest.raises(ValueError, match=r"each of the 2 segments \(6.3, 6.3 s\) is shorter than one 10 s window"):
        embed_populations(model_path, [seg, seg])
    with pytest.raises(ValueError, match=r"the recording \(6.3 s\) is shorter than one 10 s window"):
        embed_populations(model_path, [seg])
