"""Handcrafted feature baselines, checked on constructed spike trains with known answers."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted

from spikeinterface_neuronid.benchmark.baselines.features import (
    ConcatenatedFeatures,
    PairwiseCorrelationFeatures,
    PopulationCouplingFeatures,
    SingleUnitFeatures,
    SpikeTriggeredPopulationFeatures,
)
from spikeinterface_neuronid.data import SpikeTrainSet


def _poisson(rng: np.random.Generator, rate: float, duration: float) -> np.ndarray:
    return np.sort(rng.uniform(0, duration, rng.poisson(rate * duration)))


def test_population_coupling_reads_shared_drive():
    rng = np.random.default_rng(0)
    duration = 60.0
    shared = np.sort(rng.uniform(0, duration, 600))
    coupled = [
        np.sort(np.concatenate([shared + rng.normal(0, 0.002, shared.size), rng.uniform(0, duration, 50)]))
        for _ in range(4)
    ]
    private = [np.sort(rng.uniform(0, duration, 650)) for _ in range(4)]
    trains = [np.clip(t, 0, duration) for t in coupled + private]
    pop = SpikeTrainSet([np.sort(t) for t in trains], duration)
    x = PopulationCouplingFeatures().fit([pop]).transform([pop])[0]
    assert x.shape == (8, 3)
    assert x[:4, 0].min() > x[4:, 0].max() + 0.2


def test_single_unit_features_see_bursts_and_rates():
    rng = np.random.default_rng(1)
    duration = 100.0
    regular = np.arange(0.05, duration, 0.1)  # 10 Hz clock
    onsets = np.sort(rng.uniform(0, duration - 1, 100))
    bursty = np.sort(np.concatenate([onsets + k * 0.004 for k in range(4)]))
    silent = np.array([1.0, 2.0])
    pop = SpikeTrainSet([regular, bursty, silent], duration)
    est = SingleUnitFeatures(0.001).fit([pop])
    x = est.transform([pop])[0]
    names = est.feature_names_
    assert x.shape == (3, len(names))
    assert np.all(np.isnan(x[2]))  # fewer than 3 spikes
    rate, cv, burst = names.index("log_rate"), names.index("isi_cv"), names.index("burst_fraction")
    assert x[0, rate] == pytest.approx(np.log(10.0), abs=0.02)
    assert x[0, cv] < 0.05 < x[1, cv]
    assert x[1, burst] > 0.5 > x[0, burst]
    both = ConcatenatedFeatures([SingleUnitFeatures(0.02), PopulationCouplingFeatures()]).fit([pop])
    assert both.transform([pop])[0].shape[1] == len(SingleUnitFeatures(0.02).fit([pop]).feature_names_) + 3
    with pytest.raises(ValueError, match="fit"):
        SingleUnitFeatures().transform([pop])


@pytest.fixture(scope="module")
def lagged_population():
    """Units 0 and 1: unit 1 copies unit 0's spikes 100 ms later; units 2-5: independent Poisson."""
    rng = np.random.default_rng(2)
    duration = 120.0
    leader = _poisson(rng, 8.0, duration - 1.0)
    follower = leader + 0.1
    others = [_poisson(rng, 8.0, duration) for _ in range(4)]
    return SpikeTrainSet([leader, follower, *others], duration)


def test_pairwise_correlation_finds_the_lag_of_a_copy(lagged_population):
    pop = lagged_population
    est = PairwiseCorrelationFeatures().fit([pop])
    stats = est.pair_statistics(pop)
    # the copy: |xcorr| ~ 1 at the 100 ms lag (5 bins of 20 ms), unit 1 following unit 0
    assert stats["max_abs_xcorr"][0, 1] == pytest.approx(1.0, abs=0.01)
    assert stats["max_abs_xcorr"][1, 0] == pytest.approx(stats["max_abs_xcorr"][0, 1])
    assert stats["lag_s"][0, 1] == pytest.approx(0.1) and stats["lag_s"][1, 0] == pytest.approx(-0.1)
    assert stats["zero_lag_abs_corr"][0, 1] < 0.1
    # independent Poisson units: small values (31 lags of a 6,000-bin series: max |r| ~ 0.04)
    independent = stats["max_abs_xcorr"][2:, 2:][~np.eye(4, dtype=bool)]
    assert independent.max() < 0.1
    # the copy's 2-16 Hz coherence: a pure delay keeps the magnitude
    assert stats["coherence"][0, 1] > 0.9 and stats["coherence"][2:, 2:][~np.eye(4, dtype=bool)].max() < 0.2
    x = est.transform([pop])[0]
    assert x.shape == (6, 9) and len(est.feature_names_) == 9
    names = est.feature_names_
    top10 = names.index("max_abs_xcorr_top10")
    # top-k uses min(k, partners): with 5 partners, top-10 and top-30 are the mean over all of them
    assert x[:, top10] == pytest.approx(x[:, names.index("max_abs_xcorr_mean")])
    top1 = PairwiseCorrelationFeatures(top_k=(1,)).fit([pop]).transform([pop])[0]
    assert top1[0, 1] == pytest.approx(stats["max_abs_xcorr"][0, 1])  # column 1: the top-1 of max |xcorr|
    assert top1[:2, 1].min() > 0.95 > 0.1 > top1[2:, 1].max()


def test_pairwise_coherence_matches_scipy(lagged_population):
    from scipy.signal import coherence

    pop = lagged_population
    est = PairwiseCorrelationFeatures().fit([pop])
    stats = est.pair_statistics(pop)
    bins = int(pop.duration // 0.02)
    counts = [np.bincount(np.minimum((t / 0.02).astype(int), bins - 1), minlength=bins) for t in pop.spike_times]
    f, c = coherence(counts[0], counts[2], fs=50.0, nperseg=64)
    band = (f >= 2) & (f <= 16)
    assert stats["coherence"][0, 2] == pytest.approx(c[band].mean(), rel=1e-6)


def test_pairwise_silent_units_and_bad_parameters():
    rng = np.random.default_rng(3)
    pop = SpikeTrainSet([_poisson(rng, 5.0, 30.0), np.array([]), _poisson(rng, 5.0, 30.0)], 30.0)
    x = PairwiseCorrelationFeatures().fit([pop]).transform([pop])[0]
    assert np.all(np.isnan(x[1])) and np.all(np.isfinite(x[[0, 2]]))  # the silent unit is nobody's partner
    with pytest.raises(ValueError, match="bin_s"):
        PairwiseCorrelationFeatures(bin_s=0).fit([pop])
    with pytest.raises(ValueError, match="band"):
        PairwiseCorrelationFeatures(band=(2.0, 30.0)).fit([pop])  # above the 25 Hz Nyquist frequency of 20 ms bins
    with pytest.raises(ValueError, match="top_k"):
        PairwiseCorrelationFeatures(top_k=(0,)).fit([pop])
    with pytest.raises(ValueError, match="fit"):
        PairwiseCorrelationFeatures().transform([pop])


def test_spike_triggered_population_sees_followers_and_ignores_coincidences():
    rng = np.random.default_rng(4)
    duration = 100.0
    driver = _poisson(rng, 10.0, duration - 0.1)
    # two followers fire 3 ms after most of the driver's spikes, on top of their own background
    followers = [
        np.sort(np.concatenate([driver[rng.random(driver.size) < 0.8] + 0.003, _poisson(rng, 5.0, duration - 0.1)]))
        for _ in range(2)
    ]
    # duplicates: a unit that copies a fourth unit within < 1 ms (a sorting artefact)
    original = _poisson(rng, 10.0, duration - 0.1)
    duplicate = original + 0.0004
    background = [_poisson(rng, 10.0, duration) for _ in range(3)]
    pop = SpikeTrainSet([driver, *followers, original, duplicate, *background], duration)
    est = SpikeTriggeredPopulationFeatures().fit([pop])
    x = est.transform([pop])[0]
    names = est.feature_names_
    assert x.shape == (8, 39) and names[-1] == "stpr_post_minus_pre"
    assert set(est.lags_ms_) == set(range(-20, -1)) | set(range(2, 21))  # |lag| <= 1 ms left out
    asym = x[:, -1]
    assert asym[0] > 1.0  # the driver: others fire more 2-5 ms after its spikes than before
    assert asym[1] < -0.2 and asym[2] < -0.2  # the followers see the driver's spikes before theirs
    # the duplicate pair's coincidences (lag 0) are not counted: it looks like the independent background
    assert np.abs(x[3:, :-1]).max() < 0.6 and np.abs(asym[3:]).max() < 0.3
    lag3 = names.index("stpr_+3ms")
    assert x[0, lag3] > 5.0  # the driver's spike-triggered rate peaks at +3 ms
    with_coincidences = SpikeTriggeredPopulationFeatures(exclude_ms=-1).fit([pop])
    x0 = with_coincidences.transform([pop])[0]
    assert x0[3, with_coincidences.feature_names_.index("stpr_+0ms")] > 5.0  # it would, without the exclusion


def test_spike_triggered_population_rejects_bad_parameters():
    pop = SpikeTrainSet([np.array([1.0, 2.0]), np.array([1.5])], 3.0)
    with pytest.raises(ValueError, match="asymmetry_ms"):
        SpikeTriggeredPopulationFeatures(asymmetry_ms=(1, 5)).fit([pop])
    with pytest.raises(ValueError, match="max_lag_ms"):
        SpikeTriggeredPopulationFeatures(max_lag_ms=0).fit([pop])
    silent = SpikeTrainSet([np.array([1.0, 2.0]), np.array([]), np.array([1.003])], 3.0)
    x = SpikeTriggeredPopulationFeatures().fit([silent]).transform([silent])[0]
    assert np.all(np.isnan(x[1])) and np.all(np.isfinite(x[[0, 2]]))


@pytest.mark.parametrize(
    "est, param, value",
    [
        (SingleUnitFeatures(0.02), "isi_bins", 10),
        (PopulationCouplingFeatures((0.05,)), "time_scales_s", (0.1, 1.0)),
        (PairwiseCorrelationFeatures(top_k=(5,)), "max_lag_s", 0.1),
        (SpikeTriggeredPopulationFeatures(max_lag_ms=10), "exclude_ms", 0),
    ],
    ids=["single_unit", "coupling", "pairwise", "spike_triggered"],
)
def test_feature_baselines_clone_and_set_params(est, param, value, lagged_population):
    est.fit([lagged_population])
    check_is_fitted(est)
    copy = clone(est)
    assert copy.get_params() == est.get_params()
    with pytest.raises(NotFittedError):
        check_is_fitted(copy)
    with pytest.raises(ValueError, match="call fit"):
        copy.transform([lagged_population])
    assert copy.set_params(**{param: value}) is copy
    assert copy.get_params()[param] == value and getattr(copy, param) == value
    assert est.get_params()[param] != value


def test_concatenated_features_clone_clones_its_parts(lagged_population):
    est = ConcatenatedFeatures([SingleUnitFeatures(0.02), PopulationCouplingFeatures()]).fit([lagged_population])
    copy = clone(est)
    # the parts are fresh estimators (compared by identity), with the same parameters
    assert copy.get_params().keys() == est.get_params().keys()
    assert [p.get_params() for p in copy.parts] == [p.get_params() for p in est.parts]
    assert all(a is not b for a, b in zip(copy.parts, est.parts))
    for unfitted in (copy, *copy.parts):
        with pytest.raises(NotFittedError):
            check_is_fitted(unfitted)
    part = SingleUnitFeatures()
    copy.set_params(parts=[part])
    assert copy.get_params()["parts"] == [part] and len(est.parts) == 2
