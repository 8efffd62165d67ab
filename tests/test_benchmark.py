"""The benchmark's protocol wiring: splits, the ledger checks, and a tiny end-to-end run."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from spikeinterface_neuronid.baselines.features import (
    ConcatenatedFeatures,
    PopulationCouplingFeatures,
    SingleUnitFeatures,
)
from spikeinterface_neuronid.benchmark import (
    PROTOCOLS,
    QUICK,
    TASKS,
    BenchmarkSettings,
    MethodSpec,
    _Dataset,
    _Run,
    animal_split,
    check_protocol,
    run_benchmark,
)
from spikeinterface_neuronid.data import SpikeTrainSet

TINY = replace(
    QUICK,
    presets=("easy",),
    num_animals=3,
    num_neurons=30,
    duration_s=40.0,
    seeds=(0, 1),
    label_fractions=(0.5, 1.0),
    scaling_animals=(1,),
    scaling_presets=("easy",),
)


@pytest.fixture(scope="module")
def tiny_data():
    return _Dataset("easy", TINY, progress_bar=False)


def test_animal_split_rotates_and_is_disjoint():
    seen_tests = set()
    for k in range(5):
        split = animal_split(5, k)
        parts = [set(split["train"]), set(split["val"]), set(split["test"])]
        assert set().union(*parts) == set(range(5))
        assert sum(len(p) for p in parts) == 5
        assert len(split["test"]) == 1 and len(split["val"]) == 1
        seen_tests |= parts[2]
    assert seen_tests == set(range(5))


def test_settings_reject_bad_values():
    with pytest.raises(ValueError, match="num_animals"):
        BenchmarkSettings(num_animals=2)
    with pytest.raises(ValueError, match="scaling_animals"):
        BenchmarkSettings(num_animals=4, scaling_animals=(4,))
    with pytest.raises(ValueError, match="unknown benchmark methods"):
        from spikeinterface_neuronid.benchmark import method_specs

        method_specs(replace(QUICK, methods=("no such method",)))


def test_check_protocol_flags_each_violation():
    good_fit = dict(protocol="inductive", kind="ssl", corpus_animals=[0, 1], test_animals=[2],
                    labelled_units=0, labelled_test_units=0)
    good_probe = dict(overlap=0)
    assert all(check_protocol([good_fit], [good_probe]).values())
    leaky = dict(good_fit, corpus_animals=[0, 1, 2])
    assert not check_protocol([leaky], [good_probe])["inductive_fits_exclude_test_animal"]
    labelled_ssl = dict(good_fit, labelled_units=3)
    assert not check_protocol([labelled_ssl], [good_probe])["self_supervised_fits_never_see_labels"]
    sup = dict(good_fit, kind="supervised", labelled_units=10, labelled_test_units=1)
    assert not check_protocol([sup], [good_probe])["supervised_fits_never_see_test_labels"]
    assert not check_protocol([good_fit], [dict(overlap=2)])["probes_never_train_on_test_units"]


class _SpySSL:
    """Records what a self-supervised fit receives."""

    supervised = False
    needs_templates = False
    calls: list = []

    def __init__(self, seed):
        self.seed = seed

    def fit(self, populations, labels=None, templates=None, init=None):
        _SpySSL.calls.append(dict(populations=list(populations), labels=labels))
        return self

    def transform(self, populations, templates=None):
        return [SingleUnitFeatures(0.001).fit(populations).transform([p])[0] for p in populations]


class _SpySupervised(_SpySSL):
    supervised = True
    calls: list = []

    def fit(self, populations, labels=None, templates=None, init=None):
        _SpySupervised.calls.append(dict(populations=list(populations), labels=[np.array(y) for y in labels]))
        return self


def test_fits_never_see_held_out_animals_or_test_labels(tiny_data):
    _SpySSL.calls, _SpySupervised.calls = [], []
    run = _Run(TINY, log=lambda _m: None)
    specs = [
        MethodSpec("spy ssl", "ssl", _SpySSL, False),
        MethodSpec("spy supervised", "supervised", _SpySupervised, False),
    ]
    run.run_seed(tiny_data, 0, 0, specs)
    split = animal_split(TINY.num_animals, 0)
    test_pop = tiny_data.populations[split["test"][0]]
    # inductive ssl fit first: the test animal's population is not in its corpus; no labels anywhere
    inductive, transductive = _SpySSL.calls
    assert all(p is not test_pop for p in inductive["populations"])
    assert any(p is test_pop for p in transductive["populations"])
    assert inductive["labels"] is None and transductive["labels"] is None
    # supervised zero-shot fits: every test-animal unit is unlabelled
    zero_shot = [c for i, c in enumerate(_SpySupervised.calls) if i % 2 == 0]
    for call in zero_shot:
        for pop, labels in zip(call["populations"], call["labels"]):
            if pop is test_pop:
                assert np.all(labels == "")
            else:
                assert np.all(labels != "")
    # supervised transductive fits: exactly the probe's training units are labelled
    transductive_calls = [c for i, c in enumerate(_SpySupervised.calls) if i % 2 == 1]
    n_labelled = [sum(int((y != "").sum()) for y in c["labels"]) for c in transductive_calls]
    n_units = len(tiny_data.animal_of_unit)
    assert all(0 < n < n_units for n in n_labelled)
    assert all(check_protocol(run.ledger, run.probes).values())
    # every task x protocol scored with both probe variants
    keys = {(r["task"], r["protocol"], r["probe"]) for r in run.rows if r["method"] == "spy ssl"}
    assert keys == {(t, p, v) for t in TASKS for p in PROTOCOLS for v in ("C=1", "C tuned")}


def test_population_coupling_reads_shared_drive():
    rng = np.random.default_rng(0)
    duration = 60.0
    shared = np.sort(rng.uniform(0, duration, 600))
    coupled = [np.sort(np.concatenate([shared + rng.normal(0, 0.002, shared.size), rng.uniform(0, duration, 50)]))
               for _ in range(4)]
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


def test_tiny_run_writes_results_and_passes_checks(tmp_path):
    settings = replace(
        TINY,
        methods=("ours (NuCLR)", "ours, random weights", "single-unit features 1 ms", "population coupling"),
        ssl_steps=2,
        transductive_steps=1,
    )
    result = run_benchmark(tmp_path, settings, command="test", progress_bar=False, log=None)
    assert all(result["checks"].values())
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["checks"] == result["checks"]
    assert {r["method"] for r in saved["summary"]} == set(settings.methods)
    assert all(r["num_seeds"] == 2 for r in saved["summary"])
    table = (tmp_path / "results.md").read_text()
    assert "## easy — cell type" in table and "## easy — brain region" in table
    assert "| **ours (NuCLR)** |" in table and "FAILED" not in table
    for name in saved["figures"]:
        assert (tmp_path / name).stat().st_size > 0
    assert {r["fraction"] for r in saved["label_efficiency"]} == {0.5, 1.0}
    assert [r["num_pretraining_animals"] for r in saved["scaling"]] == [1, 1]
    fits = [f for f in saved["ledger"] if f["method"] == "ours (NuCLR)"]
    assert any(f["continued_from_inductive"] for f in fits)
    assert saved["speed_summary"]["ours (NuCLR)"]["fit_s_mean"] > 0
