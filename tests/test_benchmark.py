"""The benchmark's protocol wiring: what each fit receives, the ledger checks, intervals, verdicts, a tiny run."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from conftest import TINY_BENCHMARK

from spikeinterface_neuronid.benchmark.baselines.features import SingleUnitFeatures
from spikeinterface_neuronid.benchmark import (
    ABLATION_FULL,
    ABLATION_MODEL_ROWS,
    ABLATION_NO_RELATIONAL,
    FULL,
    PRODUCT,
    PROTOCOLS,
    QUICK,
    TASKS,
    BenchmarkSettings,
    MethodSpec,
    SelfSupervisedEncoder,
    check_model_provenance,
    check_protocol,
    hierarchical_bootstrap,
    method_specs,
    pooled_scores,
    readme_excerpt,
    run_benchmark,
    verdicts,
)
from spikeinterface_neuronid.benchmark.engine import _Dataset, _Run

TINY = TINY_BENCHMARK


@pytest.fixture(scope="module")
def tiny_data():
    return _Dataset("easy", TINY, progress_bar=False)


# -- settings and the method table -------------------------------------------------------------------------------


def test_settings_reject_bad_values():
    with pytest.raises(ValueError, match="num_animals"):
        BenchmarkSettings(num_animals=2)
    with pytest.raises(ValueError, match="test_animals"):
        BenchmarkSettings(num_animals=4, test_animals=(4,))
    with pytest.raises(ValueError, match="model_rows"):
        BenchmarkSettings(model_rows=(("ours, x", "x.safetensors"),))
    with pytest.raises(ValueError, match="bootstrap_resamples"):
        BenchmarkSettings(bootstrap_resamples=0)
    with pytest.raises(ValueError, match="unknown benchmark methods"):
        method_specs(replace(QUICK, methods=("no such method",)))
    assert BenchmarkSettings().tested_animals == list(range(8))
    assert BenchmarkSettings(test_animals=(5, 2)).tested_animals == [5, 2]


def test_full_design_and_row_order():
    assert FULL.presets == ("easy", "hard", "varied") and FULL.num_animals == 8 and FULL.test_animals is None
    assert (FULL.num_neurons, FULL.duration_s, FULL.simulation_seed, FULL.bootstrap_resamples) == (150, 240.0, 0, 2000)
    assert FULL.model_rows == ABLATION_MODEL_ROWS
    assert [r[0] for r in FULL.model_rows] == [
        ABLATION_FULL,
        ABLATION_NO_RELATIONAL,
        "ours, no spatial blocks",
        "ours, no fine-timescale channel",
    ]
    specs = method_specs(QUICK)  # QUICK needs no ablation file
    names = [s.name for s in specs]
    assert names[0] == PRODUCT and specs[0].kind == "pretrained"
    assert names[1] == QUICK.model_rows[0][0] and specs[1].kind == "fixed" and specs[1].model_file == "default"
    assert names[2:4] == ["ours, random weights", "NeurPIR"]
    assert names[4:10] == [
        "single-unit features 1 ms",
        "single-unit features 20 ms",
        "population coupling",
        "pairwise correlations",
        "single-unit 1 ms + pairwise",
        "single-unit 1 ms + pairwise + spike-triggered population",
    ]
    assert names[10:] == ["LOLCAT", "NEMO", "NeuPRINT"]
    assert {s.kind for s in specs} == {"pretrained", "fixed", "ssl", "supervised"}
    random_weights = specs[2].build(0)
    assert isinstance(random_weights, SelfSupervisedEncoder) and random_weights.steps == 0


def test_missing_model_file_is_an_error_naming_path_and_command():
    settings = replace(QUICK, model_rows=(("ours, missing", "benchmarks/models/no-such-model.safetensors", "d"),))
    with pytest.raises(FileNotFoundError, match=r"no-such-model\.safetensors.*train_default_model(\.py)? --ablations"):
        method_specs(settings)
    # rows left out by `methods` need no file
    assert [s.name for s in method_specs(replace(FULL, methods=("population coupling",)))] == ["population coupling"]


def test_model_provenance_overlap_is_refused(tmp_path):
    est = SelfSupervisedEncoder(steps=0).fit([])
    bundle = est.bundle_
    bundle.provenance = dict(presets=dict(hard=[3, 2001], easy=[2000]))
    path = bundle.save(tmp_path / "leaky.safetensors")
    spec = MethodSpec("ours, leaky", "fixed", lambda seed: None, model_file=str(path))
    settings = replace(TINY, presets=("easy", "hard"), num_animals=4)
    assert check_model_provenance([spec], settings) == {"ours, leaky": [["hard", 3]]}
    assert check_model_provenance([spec], replace(settings, presets=("easy",))) == {}
    assert check_model_provenance([spec], replace(settings, simulation_seed=1)) == {}
    with pytest.raises(RuntimeError, match="pretrained on benchmark animals"):
        run_benchmark(tmp_path / "out", settings, progress_bar=False, log=None, specs=[spec])


def test_check_protocol_flags_each_violation():
    good_fit = dict(
        protocol="inductive",
        kind="ssl",
        corpus_animals=[0, 1],
        test_animals=[2],
        labelled_units=0,
        labelled_test_units=0,
    )
    good_probe = dict(overlap=0)
    assert all(check_protocol([good_fit], [good_probe]).values())
    leaky = dict(good_fit, corpus_animals=[0, 1, 2])
    assert not check_protocol([leaky], [good_probe])["inductive_fits_exclude_test_animal"]
    labelled_ssl = dict(good_fit, labelled_units=3)
    assert not check_protocol([labelled_ssl], [good_probe])["self_supervised_fits_never_see_labels"]
    sup = dict(good_fit, kind="supervised", labelled_units=10, labelled_test_units=1)
    assert not check_protocol([sup], [good_probe])["supervised_fits_never_see_test_labels"]
    assert not check_protocol([good_fit], [dict(overlap=2)])["probes_never_train_on_test_units"]


# -- spies: what each fit receives ---------------------------------------------------------------------------------


class _Spy:
    """Records what each fit receives; embeds with cheap single-unit features."""

    supervised = False
    needs_templates = False
    calls: list = []

    def __init__(self, seed):
        self.seed = seed
        self.transductive_steps = 0

    def fit(self, populations, labels=None, templates=None):
        type(self).calls.append(
            dict(
                populations=list(populations),
                labels=None if labels is None else [np.array(y) for y in labels],
                templates=templates,
                transductive_steps=self.transductive_steps,
            )
        )
        return self

    def transform(self, populations, templates=None):
        return SingleUnitFeatures(0.001).fit(populations).transform(populations)


class _SpyFixed(_Spy):
    calls: list = []


class _SpyPretrained(_Spy):
    calls: list = []


class _SpySSL(_Spy):
    calls: list = []
    needs_templates = True


class _SpySupervised(_Spy):
    supervised = True
    calls: list = []


def test_fits_receive_only_what_the_protocol_allows(tiny_data):
    for cls in (_SpyFixed, _SpyPretrained, _SpySSL, _SpySupervised):
        cls.calls = []
    run = _Run(TINY, log=lambda _m: None)
    specs = [
        MethodSpec(PRODUCT, "pretrained", _SpyPretrained),
        MethodSpec("spy fixed", "fixed", _SpyFixed),
        MethodSpec("spy ssl", "ssl", _SpySSL),
        MethodSpec("spy supervised", "supervised", _SpySupervised),
    ]
    run.run_preset(tiny_data, specs)
    pops = tiny_data.populations
    n = len(pops)

    def held_out(call):
        return [a for a in range(n) if all(p is not pops[a] for p in call["populations"])]

    # fixed: one fit, nothing held out, no labels
    assert len(_SpyFixed.calls) == 1 and held_out(_SpyFixed.calls[0]) == [] and _SpyFixed.calls[0]["labels"] is None
    # product: the model as it is, then transductive fine-tuning on every animal, never labels
    fixed, transductive = _SpyPretrained.calls
    assert fixed["transductive_steps"] == 0
    assert transductive["transductive_steps"] == TINY.transductive_steps and held_out(transductive) == []
    assert fixed["labels"] is None and transductive["labels"] is None
    # self-supervised: refitted without each test animal (in turn), then once on all; templates follow the corpus
    ssl = _SpySSL.calls
    assert [held_out(c) for c in ssl] == [[a] for a in range(n)] + [[]]
    assert all(c["labels"] is None and len(c["templates"]) == len(c["populations"]) for c in ssl)
    # supervised, per task: IZS fits without the test animal and with every other label; then TD fits with
    # exactly the probe's training units labelled
    sup = _SpySupervised.calls
    per_task = n + len(TINY.transductive_seeds)
    assert len(sup) == len(TASKS) * per_task
    for t, task in enumerate(TASKS):
        calls = sup[t * per_task : (t + 1) * per_task]
        for a, call in enumerate(calls[:n]):
            assert held_out(call) == [a]
            assert all(np.all(y != "") for y in call["labels"])
        y_all = tiny_data.y(task)
        for call in calls[n:]:
            assert held_out(call) == []
            flat = np.concatenate(call["labels"])
            labelled = flat != ""
            assert 0 < labelled.sum() < len(flat)
            assert np.all(flat[labelled] == y_all[labelled])
    assert all(check_protocol(run.ledger, run.probes).values())
    # every protocol scored; C tuned only for IZS; every test unit predicted once per (method, task, protocol)
    keys = {(r["method"], r["task"], r["protocol"], r["probe"]) for r in run.folds}
    for m in ("spy fixed", "spy ssl", "spy supervised", PRODUCT):
        for task in TASKS:
            assert {(p, v) for mm, t, p, v in keys if mm == m and t == task} == {(p, "C=1") for p in PROTOCOLS} | {
                ("inductive_zero_shot", "C tuned")
            }
            pred = run.predictions[("easy", task, "inductive_zero_shot", "C=1", m)]
            assert np.all(pred != "")
    izs = [r for r in run.folds if r["method"] == "spy ssl" and r["protocol"] == "inductive_zero_shot"]
    assert sorted({r["fold"] for r in izs}) == list(range(n))
    # fixed methods: TZS is IZS (same embedding, same probe)
    for task in TASKS:
        a = run.predictions[("easy", task, "inductive_zero_shot", "C=1", "spy fixed")]
        b = run.predictions[("easy", task, "transductive_zero_shot", "C=1", "spy fixed")]
        assert np.array_equal(a, b)


# -- intervals and verdicts ---------------------------------------------------------------------------------------


def test_hierarchical_bootstrap_resamples_animals_then_units():
    groups = np.repeat([0, 1, 2, 3], [5, 5, 5, 5])
    w = hierarchical_bootstrap(groups, 300, seed=1)
    assert w.shape == (300, 20) and np.all(w.sum(axis=1) == 20)
    assert np.array_equal(w, hierarchical_bootstrap(groups, 300, seed=1))
    per_animal = w.reshape(300, 4, 5).sum(axis=2)
    assert np.all(per_animal % 5 == 0)  # an animal enters a resample 0, 1, 2, ... times with all its draws
    assert (per_animal == 0).any()  # some resamples leave an animal out
    with pytest.raises(ValueError, match="num_resamples"):
        hierarchical_bootstrap(groups, 0)


def test_pooled_scores_match_scikit_learn():
    from sklearn.metrics import balanced_accuracy_score, f1_score

    rng = np.random.default_rng(0)
    y = rng.choice(["a", "b", "c"], 200)
    pred = np.where(rng.random(200) < 0.7, y, rng.choice(["a", "b", "c"], 200)).astype(object)
    pred[:10] = ""  # no prediction: left out
    got = pooled_scores(y, pred)
    ok = pred != ""
    assert got["macro_f1"][0] == pytest.approx(f1_score(y[ok], pred[ok].astype(str), average="macro"))
    assert got["balanced_accuracy"][0] == pytest.approx(balanced_accuracy_score(y[ok], pred[ok].astype(str)))
    w = np.zeros((1, 200))
    w[0, 50:100] = 2
    sub = pooled_scores(y, pred, w)["macro_f1"][0]
    assert sub == pytest.approx(f1_score(y[50:100], pred[50:100].astype(str), average="macro"))


def _constructed_run(product_pred, others):
    """A _Run holding given IZS predictions (functions of the truth) for 4 animals x 50 units on 'hard'."""
    settings = replace(TINY, presets=("hard",), num_animals=4, bootstrap_resamples=500)
    run = _Run(settings, log=lambda _m: None)
    rng = np.random.default_rng(0)
    animal = np.repeat(np.arange(4), 50)
    y = rng.choice(["x", "y", "z"], animal.size)
    run.truth["hard"] = dict(animal=animal, y={task: y for task in TASKS})
    rows = {PRODUCT: product_pred(y), **{m: f(y) for m, f in others.items()}}
    for method, pred in rows.items():
        for task in TASKS:
            run.predictions[("hard", task, "inductive_zero_shot", "C=1", method)] = np.asarray(pred, dtype=object)
    return run, list(rows), y


def _corrupt(y, fraction, seed):
    rng = np.random.default_rng(seed)
    flip = rng.random(y.size) < fraction
    return np.where(flip, np.roll(y, 1), y)


def test_bootstrap_intervals_of_differences():
    def same(y):
        return _corrupt(y, 0.2, seed=5)

    run, methods, y = _constructed_run(same, {"same": same, "worse": lambda y: _corrupt(y, 0.6, seed=6)})
    summary, differences, ablation = run.summarise(methods)
    by = {d["method"]: d for d in differences if d["task"] == "cell_type"}
    # identical predictions: a zero-width interval at 0
    assert by["same"]["difference"] == 0 and by["same"]["ci_low"] == 0 and by["same"]["ci_high"] == 0
    # a clearly worse baseline: the difference and its whole interval above 0
    assert by["worse"]["difference"] > 0.2 and by["worse"]["ci_low"] > 0.1
    # every method's interval brackets its pooled score
    for r in summary:
        assert r["ci_low"] <= r["macro_f1"] <= r["ci_high"]
    assert ablation == []
    v = verdicts(summary, differences, ablation)
    assert [(e["task"], e["best_baseline"], e["target_met"]) for e in v["product"]] == [
        (t, "same", False) for t in TASKS
    ]
    assert v["ablation"] is None


def test_verdict_target_and_ablation():
    run, methods, y = _constructed_run(lambda y: y.copy(), {"worse": lambda y: _corrupt(y, 0.5, seed=1)})
    summary, differences, _ = run.summarise(methods)
    v = verdicts(summary, differences)
    assert all(e["target_met"] and e["difference"] > 0.03 and e["ci_low"] > 0 for e in v["product"])
    # the thresholds: >= margin and a lower bound above 0
    base = dict(preset="hard", task="cell_type", method="b")
    rows = [
        dict(
            preset="hard", task="cell_type", method=PRODUCT, protocol="inductive_zero_shot", probe="C=1", macro_f1=0.8
        ),
        dict(preset="hard", task="cell_type", method="b", protocol="inductive_zero_shot", probe="C=1", macro_f1=0.75),
    ]
    for diff, low, met in ((0.05, 0.01, True), (0.05, -0.01, False), (0.02, 0.005, False), (0.03, 0.001, True)):
        got = verdicts(rows, [dict(base, difference=diff, ci_low=low, ci_high=0.1)])["product"][0]
        assert got["target_met"] is met and got["best_baseline"] == "b"
    abl = dict(preset="hard", task="brain_region", full=ABLATION_FULL, no_relational=ABLATION_NO_RELATIONAL)
    assert verdicts(rows, [], [dict(abl, drop=0.12, ci_low=0.05, ci_high=0.2)])["ablation"]["target_met"]
    low = verdicts(rows, [], [dict(abl, drop=0.08, ci_low=0.01, ci_high=0.15)])["ablation"]
    assert not low["target_met"] and low["interval_above_zero"]


def test_ablation_drop_from_predictions():
    run, methods, y = _constructed_run(
        lambda y: y.copy(),
        {ABLATION_FULL: lambda y: y.copy(), ABLATION_NO_RELATIONAL: lambda y: _corrupt(y, 0.5, seed=2)},
    )
    summary, differences, ablation = run.summarise(methods)
    assert differences == []  # no baseline rows: every row here starts with "ours"
    hard = next(a for a in ablation if a["task"] == "brain_region")
    assert hard["drop"] > 0.3 and hard["ci_low"] > 0.2
    v = verdicts(summary, differences, ablation)
    assert v["ablation"]["target_met"] and v["ablation"]["interval_above_zero"]


# -- end to end ----------------------------------------------------------------------------------------------------


def test_tiny_run_writes_results_and_passes_checks(tmp_path):
    settings = replace(
        TINY,
        methods=(PRODUCT, QUICK.model_rows[0][0], "ours, random weights", "pairwise correlations", "LOLCAT"),
        baseline_steps=dict(lolcat=3),
    )
    result = run_benchmark(tmp_path, settings, command="test", progress_bar=False, log=None)
    assert all(result["checks"].values())
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["checks"] == result["checks"]
    assert {r["method"] for r in saved["summary"]} == set(settings.methods)
    izs = [r for r in saved["summary"] if r["protocol"] == "inductive_zero_shot" and r["probe"] == "C=1"]
    assert all(r["num_folds"] == 3 and r["ci_low"] <= r["macro_f1"] <= r["ci_high"] for r in izs)
    assert {(d["method"], d["task"]) for d in saved["differences"]} == {
        (m, t) for m in ("pairwise correlations", "LOLCAT") for t in TASKS
    }
    assert [v["task"] for v in saved["verdict"]["product"]] == list(TASKS)
    table = (tmp_path / "results.md").read_text()
    assert "## easy — cell type" in table and "## easy — brain region" in table
    assert f"| **{PRODUCT}** |" in table and "FAILED" not in table and "minus each baseline" in table
    for name in saved["figures"]:
        assert (tmp_path / name).stat().st_size > 0
    assert {r["fraction"] for r in saved["label_efficiency"]} == {0.5, 1.0}
    fits = [f for f in saved["ledger"] if f["method"] == PRODUCT]
    assert [f["transductive_steps"] for f in fits] == [0, settings.transductive_steps]
    assert saved["speed_summary"]["LOLCAT"]["fit_s_mean"] > 0
    predictions = json.loads((tmp_path / "predictions.json").read_text())
    task = predictions["easy"]["tasks"]["cell_type"]
    assert len(task["predictions"][f"inductive_zero_shot|C=1|{PRODUCT}"]) == len(task["y"])
    excerpt = readme_excerpt(saved, presets=("easy",))
    assert "#### easy — cell type" in excerpt and "minus each baseline" in excerpt and "#### Verdict" in excerpt
