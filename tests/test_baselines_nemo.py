"""Tests of the NEMO-lite baseline (3-D ACG, templates, CLIP training); tiny simulations, a few seconds."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted

from spikeinterface_neuronid.benchmark.baselines.nemo import (
    NEMO,
    acg_3d,
    acg_lag_edges,
    log_acg_3d,
    normalise_templates,
    population_log_acgs,
)
from spikeinterface_neuronid.data import SpikeTrainSet
from spikeinterface_neuronid.simulation import simulate_dataset, simulate_templates

FAST = dict(steps=5, batch_size=32, num_threads=1)


@pytest.fixture(scope="module")
def data():
    sessions = simulate_dataset("easy", animals=(0, 1), num_neurons=40, duration_s=60, progress_bar=False)
    populations = [s.to_spike_train_set(covariates=False) for s in sessions]
    templates = [simulate_templates(s) for s in sessions]
    return sessions, populations, templates


# ----------------------------------------------------------------------------------------------------------
# 3-D ACG


def test_lag_edges():
    edges = acg_lag_edges()
    assert edges.shape == (102,) and edges[0] == 1.0 and edges[-1] == 1000.0
    assert np.all(np.diff(edges) > 0)
    assert np.all(edges[edges >= 32] == np.round(edges[edges >= 32]))
    with pytest.raises(ValueError, match="num_lags"):
        acg_lag_edges(0)
    with pytest.raises(ValueError, match="narrower than 1 ms"):
        acg_lag_edges(2000)


def test_periodic_train_puts_its_mass_at_the_period():
    period_s = 0.020
    times = np.arange(0.0, 20.0, period_s) + 0.0004
    acg = acg_3d(times, 20.0)
    assert acg.shape == (10, 101) and acg.dtype == np.float32
    edges = acg_lag_edges()
    width_s = np.diff(edges) / 1000.0
    mass = acg.astype(np.float64) * width_s  # later spikes per reference spike in each bin
    # nothing before the period; all the mass of lag 20 ms in the bins overlapping [20, 21) ms
    assert np.all(mass[:, edges[1:] <= 20.0] == 0)
    first = (edges[:-1] < 21.0) & (edges[1:] > 20.0)
    assert np.allclose(mass[:, first].sum(axis=1), 1.0, atol=0.01)
    # one spike at each multiple of the period: 49 of them within 1 s; the lowest and highest rate quantiles hold
    # the spikes near the ends of the recording (shorter boxcar), whose later spikes are partly missing
    total = mass.sum(axis=1)
    assert np.allclose(total[1:-1], 49.0, atol=0.01) and np.all(total <= 49.01)
    assert np.all(mass[:, (edges[:-1] >= 22.0) & (edges[1:] <= 39.0)] == 0)


def test_acg_3d_deciles_follow_the_rate():
    rng = np.random.default_rng(0)
    # 100 s at 5 Hz then 100 s at 40 Hz (Poisson): high-rate deciles see a higher conditional rate at long lags
    slow = np.sort(rng.uniform(0, 100, 500))
    fast = np.sort(rng.uniform(100, 200, 4000))
    acg = acg_3d(np.concatenate([slow, fast]), 200.0)
    long = acg_lag_edges()[:-1] >= 100
    assert acg[0, long].mean() < 10 < 30 < acg[-1, long].mean()
    # empty and tiny trains
    assert np.all(acg_3d(np.zeros(0), 10.0) == 0) and np.all(acg_3d(np.array([1.0]), 10.0) == 0)
    assert acg_3d(np.array([1.0, 1.005, 1.5]), 10.0).shape == (10, 101)
    assert np.all(np.isfinite(log_acg_3d(acg))) and log_acg_3d(acg).min() >= 0


def test_population_log_acgs_and_templates(data):
    _, populations, templates = data
    acgs = population_log_acgs(populations[0])
    assert acgs.shape == (len(populations[0].spike_times), 10, 101) and np.all(np.isfinite(acgs))
    norm = normalise_templates(templates[0])
    assert np.allclose(np.abs(norm).max(axis=1), 1.0)
    bad = templates[0].copy()
    bad[0] = 0.0
    bad[1, 3] = np.nan
    norm = normalise_templates(bad)
    assert np.all(np.isnan(norm[:2])) and np.all(np.isfinite(norm[2:]))


# ----------------------------------------------------------------------------------------------------------
# NEMO estimator


def test_nemo_shapes_determinism_and_parts(data):
    _, populations, templates = data
    model = NEMO(**FAST, seed=3).fit(populations, templates=templates)
    assert NEMO.supervised is False and NEMO.needs_templates is True
    z = model.transform(populations, templates=templates)
    assert [e.shape for e in z] == [(len(p.spike_times), 500) for p in populations]
    assert all(e.dtype == np.float32 and np.all(np.isfinite(e)) for e in z)
    assert model.waveform_slice_ == slice(0, 300) and model.acg_slice_ == slice(300, 500)
    assert len(model.loss_history_) == 5 and np.all(np.isfinite(model.loss_history_))
    again = NEMO(**FAST, seed=3).fit(populations, templates=templates).transform(populations, templates=templates)
    assert all(np.array_equal(a, b) for a, b in zip(z, again))
    other = NEMO(**FAST, seed=4).fit(populations, templates=templates).transform(populations, templates=templates)
    assert not np.array_equal(z[0], other[0])


def test_nemo_nan_rows_and_thread_restore(data):
    import torch

    _, populations, templates = data
    before = torch.get_num_threads()
    model = NEMO(**FAST).fit(populations, templates=templates)
    assert torch.get_num_threads() == before
    broken = templates[0].copy()
    broken[2] = np.nan
    z = model.transform(populations[:1], templates=[broken])[0]
    assert np.all(np.isnan(z[2])) and np.all(np.isfinite(np.delete(z, 2, axis=0)))


def test_nemo_errors(data):
    _, populations, templates = data
    with pytest.raises(ValueError, match="not fitted"):
        NEMO().transform(populations, templates=templates)
    with pytest.raises(ValueError, match="needs templates"):
        NEMO(**FAST).fit(populations)
    with pytest.raises(ValueError, match="one each"):
        NEMO(**FAST).fit(populations, templates=templates[:1])
    with pytest.raises(ValueError, match="shape"):
        NEMO(**FAST).fit(populations, templates=[t[:-1] for t in templates])
    with pytest.raises(ValueError, match="sequence of SpikeTrainSet"):
        NEMO(**FAST).fit(populations[0], templates=templates[0])
    with pytest.raises(ValueError, match="steps"):
        NEMO(steps=0).fit(populations, templates=templates)
    model = NEMO(**FAST).fit(populations, templates=templates)
    with pytest.raises(ValueError, match="as in fit"):
        model.transform(populations, templates=[t[:, :60] for t in templates])
    tiny = SpikeTrainSet([np.array([0.5])], 1.0)
    with pytest.raises(ValueError, match="at least 2 units"):
        NEMO(**FAST).fit([tiny], templates=[np.ones((1, 90))])


def test_nemo_clone_and_set_params(data):
    _, populations, templates = data
    model = NEMO(**FAST, seed=2).fit(populations, templates=templates)
    copy = clone(model)
    assert copy.get_params() == model.get_params()
    with pytest.raises(NotFittedError):
        check_is_fitted(copy)
    with pytest.raises(ValueError, match="not fitted"):
        copy.transform(populations, templates=templates)
    assert copy.set_params(temperature=0.1, steps=2) is copy
    assert copy.get_params()["temperature"] == 0.1 and copy.steps == 2
    assert model.temperature == 0.5 and model.steps == FAST["steps"]
