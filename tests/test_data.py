import numpy as np
import pytest

from spikeinterface_neuronid.data import SpikeTrainSet, WindowSpec, inference_window_starts, sample_view_pair


def test_bin_counts_match_floor_rule():
    trains = SpikeTrainSet([np.array([0.0, 0.019, 0.02, 0.5, 0.999]), np.array([0.041])], duration=1.0)
    counts = trains.bin(0.0, 50, 0.02)
    assert counts.shape == (2, 50)
    assert counts[0, 0] == 2 and counts[0, 1] == 1 and counts[0, 25] == 1 and counts[0, 49] == 1
    assert counts[1, 2] == 1 and counts.sum() == 6
    # a window later in time only sees its own spikes
    assert trains.bin(0.5, 10, 0.02, np.array([0])).sum() == 1


@pytest.mark.parametrize(
    "times, message",
    [
        ([np.array([0.1, np.nan])], "non-finite"),
        ([np.array([0.3, 0.1])], "unsorted"),
        ([np.array([0.1, 12.0])], "outside"),
        ([], "no units"),
    ],
)
def test_bad_spike_trains_are_rejected_with_a_reason(times, message):
    with pytest.raises(ValueError, match=message):
        SpikeTrainSet(times, duration=10.0)


def test_bad_duration_is_rejected():
    with pytest.raises(ValueError, match="duration"):
        SpikeTrainSet([np.array([0.1])], duration=0.0)


def test_inference_windows_tile_without_overlap():
    starts = inference_window_starts(35.0, 10.0)
    np.testing.assert_allclose(starts, [0.0, 10.0, 20.0])
    assert inference_window_starts(9.9, 10.0).size == 0


def test_view_pairs_follow_nuclr_sampling():
    rng = np.random.default_rng(0)
    spec = WindowSpec()
    gen = np.random.default_rng(1)
    trains = SpikeTrainSet([np.sort(gen.uniform(0, 120, 600)) for _ in range(40)], duration=120.0)
    sizes = []
    for _ in range(50):
        pair = sample_view_pair(rng, trains, spec, max_shift_s=30.0, min_keep=0.5, max_units=32)
        assert pair is not None
        assert pair.counts1.shape == (len(pair.units1), spec.window_bins)
        assert len(pair.units1) <= 32 and len(pair.units2) <= 32
        assert len(np.intersect1d(pair.units1, pair.units2)) >= 2
        sizes.append(len(pair.units1))
    # unit dropout draws different view sizes between 50 % and 100 % (capped at 32)
    assert min(sizes) >= 20 and len(set(sizes)) > 3


def test_view_pair_is_none_for_too_short_recordings():
    trains = SpikeTrainSet([np.array([1.0, 2.0])] * 3, duration=5.0)
    assert sample_view_pair(np.random.default_rng(0), trains, WindowSpec()) is None


def test_atomic_writes_leave_no_partial_file_and_normal_permissions(tmp_path):
    import os

    from spikeinterface_neuronid._io import atomic_path, write_json

    target = tmp_path / "out.json"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert not target.exists() and list(tmp_path.iterdir()) == []
    write_json(target, {"a": 1})
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask
