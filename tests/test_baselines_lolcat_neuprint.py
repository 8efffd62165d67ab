"""LOLCAT and NeuPRINT baselines: shapes, determinism, label handling, learning, test-time optimisation, errors."""

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted

from spikeinterface_neuronid.benchmark.baselines.lolcat import LOLCAT, isi_snippet_histograms, segment_softmax
from spikeinterface_neuronid.benchmark.baselines.neuprint import NeuPRINT
from spikeinterface_neuronid.data import SpikeTrainSet
from spikeinterface_neuronid.simulation import simulate_dataset

FAST_LOLCAT = dict(steps=12, batch_size=16, hidden_dim=32, snippet_dim=16, heads=2, head_dim=8, max_snippets=8)
FAST_NEUPRINT = dict(steps=6, batch_size=32, transform_steps=4, model_dim=16, embedding_dim=8, window_bins=16)


@pytest.fixture(scope="module")
def sessions():
    return simulate_dataset("easy", animals=(0, 1), num_neurons=40, duration_s=60, progress_bar=False)


@pytest.fixture(scope="module")
def populations(sessions):
    return [s.to_spike_train_set(covariates=False) for s in sessions]


def _toy(seed, num_units=24, duration=60.0):
    """Two trivially separable classes: Poisson 4 Hz units vs. regular 25 Hz units."""
    rng = np.random.default_rng(seed)
    trains, labels = [], []
    for u in range(num_units):
        if u % 2:
            t = np.cumsum(rng.exponential(1 / 4.0, 400))
            labels.append("poisson")
        else:
            t = np.cumsum(0.04 + rng.normal(0, 0.001, 2000))
            labels.append("regular")
        trains.append(t[t < duration])
    return SpikeTrainSet(trains, duration), np.array(labels)


# ----------------------------------------------------------------------------------------------------------
# LOLCAT


def test_isi_histograms_and_segment_softmax():
    hist = isi_snippet_histograms(np.array([0.1, 0.2, 0.25, 3.5, 7.0]), duration=9.0)
    assert hist.shape == (1, 90)  # snippet 0 has two ISIs, snippets 1 and 2 one spike each
    assert np.isclose(hist.sum(), 1.0)
    assert isi_snippet_histograms(np.array([1.0]), 9.0).shape == (0, 90)
    scores = torch.randn(7, 3)
    segment = torch.tensor([0, 0, 1, 1, 1, 2, 2])
    out = segment_softmax(scores, segment, 3)
    assert torch.allclose(out[:2], torch.softmax(scores[:2], 0))
    assert torch.allclose(out[2:5], torch.softmax(scores[2:5], 0))


def test_lolcat_shapes_determinism_and_nan_rows(sessions, populations):
    labels = [s.cell_type for s in sessions]
    silent = SpikeTrainSet([np.array([5.0]), populations[0].spike_times[0]], populations[0].duration)
    a = LOLCAT(seed=3, **FAST_LOLCAT).fit(populations, labels)
    b = LOLCAT(seed=3, **FAST_LOLCAT).fit(populations, labels)
    ea, eb = a.transform(populations + [silent]), b.transform(populations + [silent])
    assert a.embedding_dim_ == 16 and a.supervised and not a.needs_templates
    for pop, x, y in zip(populations, ea, eb):
        assert x.shape == (len(pop.spike_times), 16) and np.isfinite(x).all()
        np.testing.assert_array_equal(x, y)
    assert np.isnan(ea[-1][0]).all() and np.isfinite(ea[-1][1]).all()
    assert a.predict([silent])[0][0] == ""
    c = LOLCAT(seed=4, **FAST_LOLCAT).fit(populations, labels)
    assert not np.array_equal(c.transform(populations)[0], ea[0])


def test_lolcat_never_reads_unlabelled_units(sessions, populations):
    labels = [s.cell_type.copy() for s in sessions]
    labels[0][::2] = ""
    labels[1][:] = ""  # a population without labelled units is simply not trained on
    a = LOLCAT(seed=0, **FAST_LOLCAT).fit(populations, labels)
    # replace the spike trains of every unlabelled unit: training must not change
    rng = np.random.default_rng(0)
    changed = []
    for pop, lab in zip(populations, labels):
        trains = [
            np.sort(rng.uniform(0, pop.duration, 300)) if lab[u] == "" else t for u, t in enumerate(pop.spike_times)
        ]
        changed.append(SpikeTrainSet(trains, pop.duration))
    b = LOLCAT(seed=0, **FAST_LOLCAT).fit(changed, labels)
    assert a.num_train_units_ == b.num_train_units_ == np.count_nonzero(labels[0] != "")
    np.testing.assert_array_equal(a.transform(populations)[1], b.transform(populations)[1])
    assert a.loss_history_ == b.loss_history_


def test_lolcat_learns_separable_toy():
    pop, labels = _toy(0)
    model = LOLCAT(steps=60, batch_size=16, max_snippets=8, seed=0).fit([pop], [labels])
    assert list(model.classes_) == ["poisson", "regular"]
    accuracy = np.mean(model.predict([pop])[0] == labels)
    assert accuracy > 0.8
    test_pop, test_labels = _toy(1)
    assert np.mean(model.predict([test_pop])[0] == test_labels) > 0.8


def test_lolcat_errors(sessions, populations):
    labels = [s.cell_type for s in sessions]
    with pytest.raises(ValueError, match="not fitted"):
        LOLCAT().transform(populations)
    with pytest.raises(ValueError, match="empty"):
        LOLCAT().fit([], [])
    with pytest.raises(ValueError, match="wrap a single one"):
        LOLCAT().fit(populations[0], labels[0])
    with pytest.raises(ValueError, match="supervised"):
        LOLCAT().fit(populations)
    with pytest.raises(ValueError, match="one per population"):
        LOLCAT().fit(populations, labels[:1])
    with pytest.raises(ValueError, match="entries but population 1"):
        LOLCAT().fit(populations, [labels[0], labels[1][:-1]])
    with pytest.raises(ValueError, match="must be strings"):
        LOLCAT().fit(populations, [labels[0], np.arange(len(labels[1]))])
    with pytest.raises(ValueError, match="at least two classes"):
        LOLCAT().fit(populations, [np.full(len(x), "RS") for x in labels])
    with pytest.raises(ValueError, match="steps"):
        LOLCAT(steps=0).fit(populations, labels)
    with pytest.raises(ValueError, match="dropout_max"):
        LOLCAT(dropout_min=0.5, dropout_max=0.2).fit(populations, labels)


def test_lolcat_clone_and_set_params(sessions, populations):
    model = LOLCAT(seed=2, **FAST_LOLCAT).fit(populations, [s.cell_type for s in sessions])
    copy = clone(model)
    assert copy.get_params() == model.get_params()
    with pytest.raises(NotFittedError):
        check_is_fitted(copy)
    with pytest.raises(ValueError, match="not fitted"):
        copy.transform(populations)
    assert copy.set_params(dropout=0.3, heads=1) is copy
    assert copy.get_params()["dropout"] == 0.3 and copy.heads == 1
    assert model.dropout == 0.2 and model.heads == FAST_LOLCAT["heads"]


# ----------------------------------------------------------------------------------------------------------
# NeuPRINT


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_neuprint_fitted_table_and_test_time_optimisation(populations):
    model = NeuPRINT(seed=1, **FAST_NEUPRINT).fit(populations[:1])
    assert not model.supervised and not model.needs_templates
    before = _state(model.dynamics_)
    (table,) = model.transform(populations[:1])
    np.testing.assert_array_equal(table, model.embeddings_[0])
    assert table.shape == (len(populations[0].spike_times), 8) and np.isfinite(table).all()

    copy = SpikeTrainSet(populations[0].spike_times, populations[0].duration)  # equal content, other object
    new, again = model.transform([populations[1], copy])
    assert model.last_transform_seconds_ > 0 and len(model.transform_loss_) == 2
    assert new.shape == (len(populations[1].spike_times), 8) and np.isfinite(new).all()
    assert not np.array_equal(again, table)  # re-fitted by test-time optimisation, not looked up
    after = _state(model.dynamics_)
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert all(not p.requires_grad for p in model.dynamics_.parameters())
    # deterministic and independent of the order of the list
    (new2,) = model.transform([populations[1]])
    np.testing.assert_array_equal(new, new2)


def test_neuprint_deterministic(populations):
    a = NeuPRINT(seed=5, mask_ratio=0.25, **FAST_NEUPRINT).fit(populations)
    b = NeuPRINT(seed=5, mask_ratio=0.25, **FAST_NEUPRINT).fit(populations)
    for x, y in zip(a.transform(populations), b.transform(populations)):
        np.testing.assert_array_equal(x, y)
    assert a.loss_history_ == b.loss_history_
    assert all(np.isfinite(a.loss_history_))
    c = NeuPRINT(seed=6, **FAST_NEUPRINT).fit(populations)
    assert not np.array_equal(c.embeddings_[0], a.embeddings_[0])


def test_neuprint_ignores_labels(populations):
    a = NeuPRINT(seed=0, **FAST_NEUPRINT).fit(populations[:1])
    b = NeuPRINT(seed=0, **FAST_NEUPRINT).fit(populations[:1], labels=object())  # never read
    np.testing.assert_array_equal(a.embeddings_[0], b.embeddings_[0])


def test_neuprint_errors(populations):
    with pytest.raises(ValueError, match="not fitted"):
        NeuPRINT().transform(populations)
    with pytest.raises(ValueError, match="empty"):
        NeuPRINT().fit([])
    with pytest.raises(ValueError, match="not a SpikeTrainSet"):
        NeuPRINT().fit([np.zeros(3)])
    short = SpikeTrainSet([np.array([0.1, 0.5])], 1.0)
    with pytest.raises(ValueError, match="shorter than one window"):
        NeuPRINT(**FAST_NEUPRINT).fit([short])
    with pytest.raises(ValueError, match="divisible"):
        NeuPRINT(model_dim=30, num_heads=4).fit(populations)
    model = NeuPRINT(**FAST_NEUPRINT).fit(populations[:1])
    with pytest.raises(ValueError, match="shorter than one window"):
        model.transform([short])


def test_neuprint_clone_and_set_params(populations):
    model = NeuPRINT(seed=2, **FAST_NEUPRINT).fit(populations[:1])
    copy = clone(model)
    assert copy.get_params() == model.get_params()
    with pytest.raises(NotFittedError):
        check_is_fitted(copy)
    with pytest.raises(ValueError, match="not fitted"):
        copy.transform(populations[:1])
    assert copy.set_params(mask_ratio=0.5, transform_steps=None) is copy
    assert copy.get_params()["mask_ratio"] == 0.5 and copy.transform_steps is None
    assert model.mask_ratio == 0.0 and model.transform_steps == FAST_NEUPRINT["transform_steps"]
