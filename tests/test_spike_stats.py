"""Spike statistics of the span-context model: values on constructed spike trains, additivity, speed-critical paths."""

import numpy as np
import pytest

from spikeinterface_neuronid.data import SpikeTrainSet
from spikeinterface_neuronid.spike_stats import (
    StatsSpec,
    bin_index,
    chunk_statistics,
    num_edge_features,
    num_unit_features,
)


def _poisson(rng, rate, duration):
    n = rng.poisson(rate * duration)
    return np.sort(rng.uniform(0, duration, n))


def _whole(trains, spec=None, relational=True):
    return chunk_statistics(
        trains, spec, relational=relational, starts=np.array([0.0]), stops=np.array([trains.duration])
    )


def test_bin_index_puts_edge_spikes_in_the_later_bin():
    times = np.array([0.0, 0.02, 0.04, 0.06, 0.1, 0.0599999])
    assert bin_index(times, 0.02).tolist() == [0, 1, 2, 3, 5, 2]


def test_lagged_copy_gives_a_correlation_peak_at_its_lag():
    rng = np.random.default_rng(0)
    duration = 120.0
    a = _poisson(rng, 10.0, duration)
    b = np.sort(a[a < duration - 0.2] + 0.1 + rng.normal(0, 0.002, (a < duration - 0.2).sum()))
    c = _poisson(rng, 10.0, duration)
    trains = SpikeTrainSet([a, b, c], duration)
    stats = _whole(trains)
    unit_inputs, edges = stats.inputs(slice(0, 1), np.arange(3))
    spec = stats.spec
    corr = edges[..., : spec.num_lags] / 5.0
    lag = spec.max_lag_bins
    # corr[a, b, l] = corr(x_a(t), x_b(t + l)): b follows a by 100 ms = 5 bins
    assert np.argmax(corr[0, 1]) == lag + 5
    assert corr[0, 1, lag + 5] > 0.5
    assert np.argmax(corr[1, 0]) == lag - 5
    assert np.abs(corr[0, 2]).max() < 0.1
    assert np.all(edges[np.arange(3), np.arange(3)] == 0)
    assert edges.shape == (3, 3, num_edge_features(spec))
    assert unit_inputs.shape == (3, num_unit_features(spec))


def test_coincident_spikes_of_duplicate_units_are_removed():
    rng = np.random.default_rng(1)
    duration = 60.0
    a = _poisson(rng, 20.0, duration)
    dup = np.clip(a + rng.uniform(-0.0005, 0.0005, a.size), 0, duration)
    dup.sort()
    trains = SpikeTrainSet([a, dup, _poisson(rng, 20.0, duration)], duration)
    lag = StatsSpec().max_lag_bins
    kept = _whole(trains, StatsSpec(coincidence_s=0.0)).inputs(slice(0, 1), np.arange(3))[1][0, 1, lag] / 5
    removed = _whole(trains).inputs(slice(0, 1), np.arange(3))[1][0, 1, lag] / 5
    assert kept > 0.9
    assert abs(removed) < 0.1


def test_coincidence_removal_counts_every_close_pair_exactly():
    """Bursts of up to 4 units within 1 ms (partners several spikes apart in time order), against brute force."""
    rng = np.random.default_rng(5)
    duration = 20.0
    centres = np.sort(rng.uniform(0.01, duration - 0.01, 150))
    trains = [list(_poisson(rng, 3.0, duration)) for _ in range(4)]
    for c in centres:
        for u in rng.choice(4, size=rng.integers(2, 5), replace=False):
            trains[u].append(c + rng.uniform(-0.0006, 0.0006))
    trains = SpikeTrainSet([np.sort(t) for t in trains], duration)
    spec = StatsSpec()
    w, lag = spec.coincidence_s, spec.max_lag_bins
    kept = _whole(trains, StatsSpec(coincidence_s=0.0)).pair_sums[0]
    removed = _whole(trains, spec).pair_sums[0]
    expected = np.zeros_like(kept)
    for i, ti in enumerate(trains.spike_times):
        for j, tj in enumerate(trains.spike_times):
            if i == j:
                continue
            close = np.abs(ti[:, None] - tj[None, :]) <= w + 1e-12
            for p, q in zip(*np.nonzero(close)):
                d = bin_index(tj[q : q + 1], spec.pair_bin_s)[0] - bin_index(ti[p : p + 1], spec.pair_bin_s)[0]
                expected[i, j, d + lag] += 1
    assert expected.sum() > 300
    np.testing.assert_array_equal(kept - removed, expected)


def test_sums_over_chunks_equal_sums_over_the_whole_span():
    rng = np.random.default_rng(2)
    duration = 90.0
    trains = SpikeTrainSet([_poisson(rng, r, duration) for r in (5.0, 15.0, 30.0, 0.5)], duration)
    spec = StatsSpec(chunk_s=30.0)
    chunked = chunk_statistics(trains, spec)
    whole = _whole(trains, spec)
    assert chunked.num_chunks == 3
    a_inputs, a_edges = chunked.inputs(slice(0, 3), np.arange(4))
    b_inputs, b_edges = whole.inputs(slice(0, 1), np.arange(4))
    np.testing.assert_allclose(a_inputs, b_inputs, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(a_edges, b_edges, rtol=1e-4, atol=1e-4)
    cumulative = chunk_statistics(trains, spec).to_cumulative()
    for chunks in (slice(0, 3), slice(1, 2), slice(0, 2)):
        x = chunked.inputs(chunks, np.array([2, 0]))
        y = cumulative.inputs(chunks, np.array([2, 0]))
        np.testing.assert_allclose(x[0], y[0], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(x[1], y[1], rtol=1e-4, atol=1e-4)


def test_spike_triggered_population_rate_shows_who_drives_whom():
    rng = np.random.default_rng(3)
    duration = 120.0
    driver = _poisson(rng, 10.0, duration)
    follows = driver[rng.random(driver.size) < 0.5] + 0.003  # 3 ms after half of the driver's spikes
    background = _poisson(rng, 10.0, duration)
    target = np.sort(np.concatenate([follows[follows < duration], background]))
    trains = SpikeTrainSet([driver, target], duration)
    unit_inputs, _ = _whole(trains).inputs(slice(0, 1), np.arange(2))
    asymmetry = unit_inputs[:, num_unit_features(StatsSpec(), relational=False) + 12]
    assert asymmetry[0] > 1.0  # the others fire after the driver's spikes
    assert asymmetry[1] < -1.0  # ... and before the target's


def test_fine_statistics_of_regular_and_poisson_units():
    rng = np.random.default_rng(4)
    duration = 200.0
    regular = np.arange(0.05, duration, 0.1)
    poisson = _poisson(rng, 10.0, duration)
    trains = SpikeTrainSet([regular, poisson], duration)
    unit_inputs, _ = _whole(trains, relational=False).inputs(slice(0, 1), np.arange(2), relational=False)
    log_rate, cv = unit_inputs[:, 0], unit_inputs[:, 1]
    np.testing.assert_allclose(np.exp(log_rate), [10.0, len(poisson) / duration], rtol=1e-3)
    assert cv[0] < 1e-6 and 0.9 < cv[1] < 1.1
    acg = unit_inputs[1, 3 + 21 : 3 + 21 + 14]  # log1p(ACG / rate): Poisson gives log(2) at every lag
    assert np.all(np.abs(acg - np.log(2.0)) < 0.25)


def test_fine_off_zeroes_the_single_unit_columns_and_keeps_the_shape():
    rng = np.random.default_rng(5)
    trains = SpikeTrainSet([_poisson(rng, 5.0, 60.0) for _ in range(3)], 60.0)
    stats = _whole(trains)
    on, _ = stats.inputs(slice(0, 1), np.arange(3))
    off, _ = stats.inputs(slice(0, 1), np.arange(3), fine=False)
    fine = 3 + 21 + 14
    assert on.shape == off.shape
    assert np.all(off[:, :fine] == 0) and np.any(on[:, :fine] != 0)
    np.testing.assert_array_equal(on[:, fine:], off[:, fine:])


def test_invalid_settings_name_the_parameter():
    with pytest.raises(ValueError, match="chunk_s"):
        StatsSpec(chunk_s=0.031)
    with pytest.raises(ValueError, match="max_lag_bins"):
        StatsSpec(max_lag_bins=40)
