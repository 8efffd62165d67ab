"""The three evaluation protocols of NuCLR, with the splits, probes, pooled scores and intervals they use.

Every protocol scores a linear probe (:func:`~spikeinterface_neuronid.evaluation.linear_probe`) on the
embeddings of each row, for each task; animals are the unit of generalisation.

``inductive_zero_shot`` (IZS, the headline)
    Leave one animal out: every animal is the test animal once. The probe (``C = 1``) is trained on the
    other animals' units and predicts the test animal's units. Methods that learn from data (NeurPIR, NEMO
    and NeuPRINT self-supervised, LOLCAT supervised) are refitted for every test animal without it. A
    secondary column tunes ``C`` on a validation animal (the one before the test animal) and refits.
``transductive_zero_shot`` (TZS)
    The same leave-one-animal-out probes, but self-supervised methods are fitted once per preset on every
    animal (every animal's activity is seen; labels never). LOLCAT reads labelled units only, so a TZS fit
    (test animal unlabelled) equals its IZS fit, which is reused.
``transductive`` (TD)
    The transductively fitted embedding, probed on a stratified random split of the units (train and
    test units may share an animal), one split per seed of ``transductive_seeds``.

Our shipped default model (the product row) embeds the animals as it is for IZS; for TD and TZS it is
fine-tuned self-supervised on all animals of the preset
(:func:`~spikeinterface_neuronid.training.fine_tune_transductive`, ``transductive_steps`` steps). Methods
that learn nothing (handcrafted features, fixed model files such as the ablations, random weights) give
the same embedding in every protocol.

**Intervals.** IZS macro-F1 is computed on the predictions pooled over all test animals (each animal predicted
by its own leave-one-out probe). A paired hierarchical bootstrap
(:func:`~spikeinterface_neuronid.benchmark.hierarchical_bootstrap`: resample animals with replacement, then
units within each resampled animal) gives a 95 % percentile interval for every method and for the difference
of the product row to every baseline (every row whose name does not start with "ours"); the mean ± std over
test animals is reported as well. The verdict (:func:`~spikeinterface_neuronid.benchmark.verdicts`) compares
the product row with the best baseline per preset and task.

Every fit is recorded in a ledger (which animals its corpus held, whether it was given labels and of which
units), and :func:`~spikeinterface_neuronid.benchmark.check_protocol` verifies from it that no held-out animal
entered an inductive fit, that self-supervised fits never received labels and that no test unit's label
reached a supervised fit or a probe. Before anything runs, the provenance of every fixed model file is
checked: a model pretrained on one of the benchmark's animals (same preset, animal id and simulation seed) is
refused. Time and peak memory of every fit and embedding are measured in the same run.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .settings import ABLATION_FULL, ABLATION_NO_RELATIONAL, PRODUCT, TASKS, BenchmarkSettings, is_baseline

__all__ = ["check_protocol", "hierarchical_bootstrap", "pooled_scores", "verdicts"]


def _finite_rows(x: np.ndarray) -> np.ndarray:
    return np.all(np.isfinite(x), axis=1)


def _transductive_split(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified unit-level split of the transductive protocol: (train, test) unit indices."""
    from sklearn.model_selection import train_test_split

    train, test = train_test_split(np.arange(len(y)), test_size=fraction, stratify=y, random_state=seed)
    return np.sort(train), np.sort(test)


def check_protocol(ledger: Sequence[dict], probes: Sequence[dict]) -> dict[str, bool]:
    """Verify the protocol from the ledger of fits and probes of a run.

    Returns
    -------
    dict
        ``inductive_fits_exclude_test_animal``, ``self_supervised_fits_never_see_labels``,
        ``supervised_fits_never_see_test_labels`` and ``probes_never_train_on_test_units``, each True when
        the rule held for every fit / probe.
    """
    inductive = all(
        not (set(f["corpus_animals"]) & set(f["test_animals"])) for f in ledger if f["protocol"] == "inductive"
    )
    ssl = all(f["labelled_units"] == 0 for f in ledger if f["kind"] != "supervised")
    supervised = all(f["labelled_test_units"] == 0 for f in ledger if f["kind"] == "supervised")
    probe = all(p["overlap"] == 0 for p in probes)
    return dict(
        inductive_fits_exclude_test_animal=bool(inductive),
        self_supervised_fits_never_see_labels=bool(ssl),
        supervised_fits_never_see_test_labels=bool(supervised),
        probes_never_train_on_test_units=bool(probe),
    )


def hierarchical_bootstrap(groups: np.ndarray, num_resamples: int, seed: int = 0) -> np.ndarray:
    """Multiplicities of a two-level bootstrap: resample groups (animals), then units within each drawn group.

    Parameters
    ----------
    groups : np.ndarray
        Group (animal) of each unit, shape ``(n,)``.
    num_resamples : int
        Number of resamples ``B``.
    seed : int, default: 0
        Seed; the same seed, groups and ``B`` give the same resamples, so scores of several methods computed
        with the same weights are paired.

    Returns
    -------
    np.ndarray
        ``(B, n)`` int32: how often each unit is drawn in each resample (every resample holds as many groups
        as ``groups`` has, each with as many draws as it has units).
    """
    groups = np.asarray(groups)
    if groups.ndim != 1 or groups.size == 0:
        raise ValueError(f"groups must be a non-empty 1-D array, got shape {groups.shape}")
    if int(num_resamples) < 1:
        raise ValueError(f"num_resamples must be >= 1, got {num_resamples!r}")
    members = [np.flatnonzero(groups == g) for g in np.unique(groups)]
    rng = np.random.default_rng(seed)
    weights = np.zeros((int(num_resamples), groups.size), dtype=np.int32)
    for b in range(int(num_resamples)):
        picks = rng.integers(0, len(members), size=len(members))
        drawn = np.concatenate([members[g][rng.integers(0, members[g].size, size=members[g].size)] for g in picks])
        weights[b] = np.bincount(drawn, minlength=groups.size)
    return weights


def pooled_scores(y_true: np.ndarray, y_pred: np.ndarray, weights: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Macro-F1 and balanced accuracy of pooled predictions, for each row of unit weights.

    Parameters
    ----------
    y_true : np.ndarray
        True label of each unit, shape ``(n,)``.
    y_pred : np.ndarray
        Predicted label of each unit; ``""`` marks a unit without a prediction (a method that cannot embed it),
        which is left out, as :func:`~spikeinterface_neuronid.evaluation.linear_probe` leaves it out.
    weights : np.ndarray | None, default: None
        ``(B, n)`` unit multiplicities (e.g. from :func:`hierarchical_bootstrap`); None: every unit once.

    Returns
    -------
    dict
        ``macro_f1`` and ``balanced_accuracy``, each ``(B,)`` (``(1,)`` without weights). As in scikit-learn,
        classes are averaged over those present among the (weighted) true labels.
    """
    y_true = np.asarray(y_true).astype(str)
    y_pred = np.asarray(y_pred).astype(str)
    if y_true.shape != y_pred.shape or y_true.ndim != 1:
        raise ValueError(f"y_true and y_pred must be 1-D of the same length, got {y_true.shape} and {y_pred.shape}")
    w = np.ones((1, y_true.size)) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.ndim != 2 or w.shape[1] != y_true.size:
        raise ValueError(f"weights must have shape (B, {y_true.size}), got {w.shape}")
    valid = y_pred != ""
    classes = sorted(set(y_true[valid]) | set(y_pred[valid]))
    true = np.stack([(y_true == c) & valid for c in classes], axis=1).astype(np.float64)
    pred = np.stack([(y_pred == c) & valid for c in classes], axis=1).astype(np.float64)
    n_true, n_pred, n_hit = w @ true, w @ pred, w @ (true * pred)
    present = n_true > 0
    count = present.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(n_true + n_pred > 0, 2 * n_hit / (n_true + n_pred), 0.0)
        recall = np.where(present, n_hit / n_true, 0.0)
        macro = np.where(count > 0, (f1 * present).sum(axis=1) / count, np.nan)
        balanced = np.where(count > 0, recall.sum(axis=1) / count, np.nan)
    return dict(macro_f1=macro, balanced_accuracy=balanced)


def _interval(values: np.ndarray) -> tuple[float, float]:
    low, high = np.nanpercentile(values, [2.5, 97.5])
    return float(low), float(high)



def _paired_difference(
    dists: dict[str, np.ndarray], points: dict[str, float], first: str, second: str
) -> tuple[float, float, float]:
    """``first`` minus ``second``: the difference of their macro-F1 and its interval over the paired resamples."""
    low, high = _interval(dists[first] - dists[second])
    return points[first] - points[second], low, high


def verdicts(
    summary: Sequence[dict],
    differences: Sequence[dict],
    ablation: Sequence[dict] = (),
    target_margin: float = 0.03,
    ablation_margin: float = 0.10,
) -> dict:
    """Does the product row beat the best baseline (IZS, C=1), and is the relational channel worth its margin?

    Parameters
    ----------
    summary : sequence of dict
        Summary rows with ``preset``, ``task``, ``method``, ``protocol``, ``probe`` and ``macro_f1`` (pooled).
    differences : sequence of dict
        Rows with ``preset``, ``task``, ``method`` (the baseline), ``difference`` (product - baseline),
        ``ci_low`` and ``ci_high``.
    ablation : sequence of dict, default: ()
        Rows with ``preset``, ``task``, ``drop`` (full design - no relational channel), ``ci_low``, ``ci_high``.
    target_margin : float, default: 0.03
        ``target_met`` needs a difference >= this and an interval whose lower bound is above 0.
    ablation_margin : float, default: 0.10
        The ablation's ``target_met`` needs a region drop on ``hard`` >= this.

    Returns
    -------
    dict
        ``product``: one entry per preset and task with ``best_baseline``, its ``best_baseline_macro_f1``,
        ``product_macro_f1``, ``difference``, ``ci_low``, ``ci_high`` and ``target_met``; ``ablation``: the
        ``hard`` brain-region entry of ``ablation`` with ``target_met`` and ``interval_above_zero``, or None.
    """
    product = []
    for d_preset, d_task in dict.fromkeys((d["preset"], d["task"]) for d in differences):
        rows = [
            r
            for r in summary
            if r["preset"] == d_preset
            and r["task"] == d_task
            and r["protocol"] == "inductive_zero_shot"
            and r["probe"] == "C=1"
        ]
        ours = next((r for r in rows if r["method"] == PRODUCT), None)
        baselines = [r for r in rows if is_baseline(r["method"])]
        if ours is None or not baselines:
            continue
        best = max(baselines, key=lambda r: r["macro_f1"])
        diff = next(
            d for d in differences if d["preset"] == d_preset and d["task"] == d_task and d["method"] == best["method"]
        )
        product.append(
            dict(
                preset=d_preset,
                task=d_task,
                product_macro_f1=ours["macro_f1"],
                best_baseline=best["method"],
                best_baseline_macro_f1=best["macro_f1"],
                difference=diff["difference"],
                ci_low=diff["ci_low"],
                ci_high=diff["ci_high"],
                target_met=bool(diff["difference"] >= target_margin and diff["ci_low"] > 0),
            )
        )
    hard = next((a for a in ablation if a["preset"] == "hard" and a["task"] == "brain_region"), None)
    abl = None
    if hard is not None:
        abl = dict(
            hard,
            margin=ablation_margin,
            target_met=bool(hard["drop"] >= ablation_margin),
            interval_above_zero=bool(hard["ci_low"] > 0),
        )
    return dict(product=product, target_margin=target_margin, ablation=abl)


def _std(values: np.ndarray) -> float:
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def _summarise(
    settings: BenchmarkSettings,
    truth_by_preset: dict[str, dict],
    folds: Sequence[dict],
    predictions: dict[tuple, np.ndarray],
    methods: Sequence[str],
) -> tuple[list[dict], list[dict], list[dict]]:
    """Summary rows, product-minus-baseline differences and the ablation drops, with bootstrap intervals."""
    s = settings
    summary, differences, ablation = [], [], []
    for preset, truth in truth_by_preset.items():
        units = np.flatnonzero(np.isin(truth["animal"], s.tested_animals))
        weights = hierarchical_bootstrap(truth["animal"][units], s.bootstrap_resamples, s.bootstrap_seed)
        for task in TASKS:
            y = truth["y"][task][units]
            dists: dict[str, np.ndarray] = {}
            points: dict[str, float] = {}
            for method in methods:
                td = [
                    r
                    for r in folds
                    if r["preset"] == preset
                    and r["task"] == task
                    and r["method"] == method
                    and r["protocol"] == "transductive"
                ]
                if td:
                    f1 = np.array([r["macro_f1"] for r in td])
                    ba = np.array([r["balanced_accuracy"] for r in td])
                    summary.append(
                        dict(
                            preset=preset,
                            task=task,
                            method=method,
                            protocol="transductive",
                            probe="C=1",
                            macro_f1=float(f1.mean()),
                            balanced_accuracy=float(ba.mean()),
                            macro_f1_mean=float(f1.mean()),
                            macro_f1_std=_std(f1),
                            num_folds=len(td),
                        )
                    )
                for protocol in ("transductive_zero_shot", "inductive_zero_shot"):
                    for probe in ("C=1", "C tuned"):
                        key = (preset, task, protocol, probe, method)
                        if key not in predictions:
                            continue
                        pred = predictions[key][units].astype(str)
                        point = pooled_scores(y, pred)
                        per = np.array(
                            [
                                r["macro_f1"]
                                for r in folds
                                if r["preset"] == preset
                                and r["task"] == task
                                and r["protocol"] == protocol
                                and r["probe"] == probe
                                and r["method"] == method
                            ]
                        )
                        row = dict(
                            preset=preset,
                            task=task,
                            method=method,
                            protocol=protocol,
                            probe=probe,
                            macro_f1=float(point["macro_f1"][0]),
                            balanced_accuracy=float(point["balanced_accuracy"][0]),
                            macro_f1_mean=float(per.mean()) if per.size else float("nan"),
                            macro_f1_std=_std(per),
                            num_folds=int(per.size),
                            num_test_units=int((pred != "").sum()),
                        )
                        if protocol == "inductive_zero_shot" and probe == "C=1":
                            dists[method] = pooled_scores(y, pred, weights)["macro_f1"]
                            points[method] = row["macro_f1"]
                            row["ci_low"], row["ci_high"] = _interval(dists[method])
                        summary.append(row)
            if PRODUCT in dists:
                for method in dists:
                    if is_baseline(method):
                        diff, low, high = _paired_difference(dists, points, PRODUCT, method)
                        differences.append(
                            dict(preset=preset, task=task, method=method, difference=diff, ci_low=low, ci_high=high)
                        )
            if ABLATION_FULL in dists and ABLATION_NO_RELATIONAL in dists:
                drop, low, high = _paired_difference(dists, points, ABLATION_FULL, ABLATION_NO_RELATIONAL)
                ablation.append(
                    dict(
                        preset=preset,
                        task=task,
                        full=ABLATION_FULL,
                        no_relational=ABLATION_NO_RELATIONAL,
                        drop=drop,
                        ci_low=low,
                        ci_high=high,
                    )
                )
    return summary, differences, ablation
