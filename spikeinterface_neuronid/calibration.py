"""Fitting and calibrating task heads: temperature scaling, the out-of-distribution check, calibration error.

:func:`fit_head` fits a :class:`~spikeinterface_neuronid.heads.LinearHead` on labelled embeddings (a scikit-learn
standardiser and multinomial logistic regression), calibrates its probabilities by temperature scaling on
held-out units and fits its out-of-distribution density with a conformal threshold. scikit-learn is imported only
here, so applying a head needs numpy alone.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any, Sequence

import numpy as np

from .evaluation import _label_strings, expected_calibration_error
from .heads import _LOG_T_BOUNDS, LinearHead, check_task_name
from .schema import UNKNOWN

__all__ = ["fit_head", "head_from_sklearn", "fit_temperature"]


def head_from_sklearn(
    estimator,
    task: str,
    *,
    temperature: float = 1.0,
    threshold: float = 0.5,
    provenance: dict | None = None,
) -> LinearHead:
    """Convert a fitted scikit-learn ``LogisticRegression`` (optionally after a ``StandardScaler``) to a head.

    Parameters
    ----------
    estimator : sklearn.pipeline.Pipeline | sklearn.linear_model.LogisticRegression
        A fitted ``LogisticRegression``, or a pipeline of a ``StandardScaler`` and a ``LogisticRegression``.
        With two classes the binary model ``sigmoid(w.x + b)`` becomes the equivalent softmax over the
        logits ``(-(w.x + b) / 2, (w.x + b) / 2)``.
    task : str
        Task name.
    temperature : float, default: 1.0
        Calibration temperature.
    threshold : float, default: 0.5
        Abstention threshold.
    provenance : dict | None, default: None
        JSON-serialisable description.

    Returns
    -------
    LinearHead
        Its ``predict_proba`` equals the estimator's when ``temperature`` is 1.
    """
    steps = list(getattr(estimator, "steps", [(None, estimator)]))
    steps = [step for _, step in steps if step is not None and step != "passthrough"]
    if not steps or not hasattr(steps[-1], "coef_"):
        raise ValueError("estimator must be a fitted LogisticRegression or a pipeline ending with one")
    scaler, clf = (steps[0], steps[1]) if len(steps) == 2 else (None, steps[0])
    if len(steps) > 2 or (scaler is not None and type(scaler).__name__ != "StandardScaler"):
        raise ValueError("only a StandardScaler followed by a LogisticRegression can be converted")
    coef = np.asarray(clf.coef_, dtype=np.float64)
    intercept = np.asarray(clf.intercept_, dtype=np.float64).reshape(-1)
    classes = [str(c) for c in clf.classes_]
    if len(classes) == 2 and coef.shape[0] == 1:
        coef = np.vstack([-coef[0] / 2.0, coef[0] / 2.0])
        intercept = np.array([-intercept[0] / 2.0, intercept[0] / 2.0])
    dim = coef.shape[1]
    mean = np.zeros(dim) if scaler is None or getattr(scaler, "mean_", None) is None else scaler.mean_
    scale = np.ones(dim) if scaler is None or getattr(scaler, "scale_", None) is None else scaler.scale_
    return LinearHead(
        task=task,
        classes=classes,
        mean=mean,
        scale=scale,
        coef=coef,
        intercept=intercept,
        temperature=temperature,
        threshold=threshold,
        provenance=provenance or {},
    )


def _nll(logits: np.ndarray, y: np.ndarray, temperature: float) -> float:
    z = logits / temperature
    zmax = np.max(z, axis=1, keepdims=True)
    lse = zmax[:, 0] + np.log(np.sum(np.exp(z - zmax), axis=1))
    return float(np.mean(lse - z[np.arange(len(y)), y]))


def fit_temperature(logits: np.ndarray, y: np.ndarray, *, tol: float = 1e-6) -> float:
    """Temperature minimising the negative log-likelihood of ``softmax(logits / T)`` on labelled units.

    Golden-section search over ``log T`` in ``[log 0.01, log 100]``; the NLL is convex in ``1 / T``, so it has
    a single minimum there.

    Parameters
    ----------
    logits : np.ndarray
        ``(n, n_classes)`` uncalibrated logits of held-out units.
    y : np.ndarray
        ``(n,)`` integer class index of each unit.
    tol : float, default: 1e-6
        Width of the final bracket in ``log T``.

    Returns
    -------
    float
        The temperature.
    """
    logits = np.asarray(logits, dtype=np.float64)
    y = np.asarray(y, dtype=np.int64)
    invphi = (np.sqrt(5.0) - 1.0) / 2.0
    a, b = _LOG_T_BOUNDS
    c, d = b - invphi * (b - a), a + invphi * (b - a)
    fc, fd = _nll(logits, y, np.exp(c)), _nll(logits, y, np.exp(d))
    while b - a > tol:
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - invphi * (b - a)
            fc = _nll(logits, y, np.exp(c))
        else:
            a, c, fc = c, d, fd
            d = a + invphi * (b - a)
            fd = _nll(logits, y, np.exp(d))
    return float(np.exp((a + b) / 2.0))


def _stratified_split(y: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Boolean calibration mask: about ``fraction`` of each class, at least one unit, leaving at least one."""
    cal = np.zeros(len(y), dtype=bool)
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        n_cal = int(np.clip(round(fraction * len(idx)), 1, len(idx) - 1))
        cal[rng.choice(idx, size=n_cal, replace=False)] = True
    return cal


def _group_split(y: np.ndarray, groups: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Calibration mask made of whole groups (about ``fraction`` of the units), every class left for training."""
    unique = np.unique(groups)
    if len(unique) < 2:
        raise ValueError(f"calibration by groups needs at least 2 groups among the labelled units, got {len(unique)}")
    num_classes = len(np.unique(y))
    for _ in range(200):
        cal = np.zeros(len(y), dtype=bool)
        for g in rng.permutation(unique):
            if cal.sum() >= fraction * len(y):
                break
            candidate = cal | (groups == g)
            if candidate.all():
                continue
            cal = candidate
        if cal.any() and len(np.unique(y[~cal])) == num_classes:
            return cal
    raise ValueError(
        "could not hold out whole groups for calibration while keeping every class among the training units; "
        "use more groups, a smaller calibration_fraction, or groups=None"
    )


#: Ridge added to the diagonal of every component covariance of the out-of-distribution mixture (in the
#: standardised space, where every dimension has unit variance).
OOD_REG_COVAR = 1e-3
#: Fewest units per component of the out-of-distribution mixture, in multiples of the embedding dimension.
_OOD_UNITS_PER_COMPONENT = 2


def _fit_mixture(z: np.ndarray, components: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Gaussian mixture (full covariances) of standardised embeddings: means, precisions, log weights, k.

    The number of components is ``components`` or fewer, so that each has on average at least
    ``2 * dim`` units to estimate its covariance from.
    """
    from sklearn.mixture import GaussianMixture

    k = int(np.clip(z.shape[0] // (_OOD_UNITS_PER_COMPONENT * z.shape[1]), 1, components))
    gmm = GaussianMixture(
        n_components=k, covariance_type="full", reg_covar=OOD_REG_COVAR, max_iter=500, random_state=seed
    ).fit(z)
    precision = np.einsum("kij,klj->kil", gmm.precisions_cholesky_, gmm.precisions_cholesky_)
    precision = (precision + np.transpose(precision, (0, 2, 1))) / 2.0
    return gmm.means_, precision, np.log(gmm.weights_), k


def _ood_folds(y: np.ndarray, groups: np.ndarray | None, num_folds: int, rng: np.random.Generator) -> np.ndarray:
    """Fold index of every unit: whole groups per fold (as many folds as groups at most), else stratified."""
    fold = np.empty(len(y), dtype=np.int64)
    if groups is not None:
        unique = rng.permutation(np.unique(groups))
        order = {g: i % min(num_folds, len(unique)) for i, g in enumerate(unique)}
        fold[:] = [order[g] for g in groups]
        return fold
    offset = 0
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        fold[idx] = (offset + np.arange(len(idx))) % num_folds
        offset += len(idx)
    return fold


def _sklearn_pipeline(C: float, max_iter: int):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=C, class_weight="balanced", max_iter=max_iter))


def fit_head(
    embeddings,
    labels: Sequence,
    task: str,
    *,
    C: float = 1.0,
    calibration_fraction: float = 0.25,
    threshold: float = 0.5,
    seed: int = 0,
    groups: Sequence | None = None,
    max_iter: int = 2000,
    provenance: dict | None = None,
    ood_quantile: float | None = 0.975,
    ood_components: int = 10,
    ood_columns: int | None = None,
) -> LinearHead:
    """Fit a calibrated linear head for one task on labelled unit embeddings, with an out-of-distribution check.

    The head is a ``StandardScaler`` followed by a class-balanced multinomial ``LogisticRegression``
    (scikit-learn; the linear-probe protocol of :func:`~spikeinterface_neuronid.evaluation.linear_probe`).
    Its probabilities are calibrated by temperature scaling:

    1. hold out ``calibration_fraction`` of the labelled units (stratified by class, or whole ``groups``);
    2. fit the pipeline on the other units and find the temperature that minimises the negative
       log-likelihood of the held-out units (:func:`fit_temperature`);
    3. refit the pipeline on all labelled units and keep that temperature.

    The out-of-distribution check (``ood_quantile``) models the density of the standardised training
    embeddings with a Gaussian mixture (``ood_components`` full-covariance components, fitted by
    scikit-learn's ``GaussianMixture``) and sets its threshold on held-out units, by cross-fitting:

    1. split the labelled units into ``round(1 / calibration_fraction)`` folds, of whole ``groups`` when
       given (so every threshold score comes from an animal the mixture did not see), else stratified by
       class;
    2. for each fold, fit the standardisation and the mixture on the other folds and score the fold's units
       (:meth:`LinearHead.ood_score`);
    3. the threshold is the conformal ``ood_quantile`` of these held-out scores (the
       ``ceil((n + 1) * ood_quantile)``-th smallest of ``n``); the mixture is then refitted on all labelled
       units. About ``1 - ood_quantile`` of new units like the training units are then flagged as out of
       distribution and labelled ``"unknown"``.

    Parameters
    ----------
    embeddings : array-like
        ``(num_units, dim)`` embeddings, e.g. ``sorting_analyzer.get_extension("neuron_embedding").get_data()``
        (several sessions may be stacked). Rows with a non-finite value are skipped.
    labels : sequence
        One label per unit; None, ``""`` and NaN (also the strings ``"nan"`` and ``"None"`` they become in
        string arrays) mark units without a label, which are skipped.
    task : str
        Task name, e.g. ``"cell_type"``.
    C : float, default: 1.0
        Inverse L2 regularisation strength of the logistic regression.
    calibration_fraction : float, default: 0.25
        Fraction of the labelled units held out to fit the temperature (and one fold in
        ``1 / calibration_fraction`` for the out-of-distribution threshold); 0 skips calibration (temperature
        1, and no out-of-distribution check: its threshold needs held-out units).
    threshold : float, default: 0.5
        Abstention threshold on the largest calibrated probability (units below it are ``"unknown"``).
    seed : int, default: 0
        Seed of the calibration split.
    groups : sequence | None, default: None
        One group per unit (e.g. the animal or session): the calibration units are whole groups, so the
        temperature is fitted on units from animals the classifier did not see. None splits by class.
    max_iter : int, default: 2000
        Iterations of the logistic-regression solver.
    provenance : dict | None, default: None
        Extra JSON-serialisable description stored with the head (e.g. the label source); the fit settings
        and scores are added under ``"fit"`` (the out-of-distribution check's under ``"fit"]["ood"``).
    ood_quantile : float | None, default: 0.975
        Quantile in (0, 1) of the held-out units' out-of-distribution scores used as threshold: the expected
        fraction of in-distribution units flagged is ``1 - ood_quantile``. None fits no out-of-distribution
        check (the head abstains on low confidence only). The check is also skipped, with a warning, when
        there are too few labelled units for the quantile (fewer than ``1 / (1 - ood_quantile)``).
    ood_components : int, default: 10
        Most Gaussian components of the out-of-distribution density; fewer are used when there are fewer than
        ``2 * dim`` labelled units per component.
    ood_columns : int | None, default: None
        Fit the out-of-distribution density on the first ``ood_columns`` embedding columns only; None: all. For
        a NuCLR model with the single-unit path pass ``model.config.dim``, its population-context half: the
        single-unit half cannot tell independent Poisson units from the training units, and a density over
        both halves flags far fewer foreign populations (``benchmarks/ood_density_variants.py``). The
        classifier always uses every column.

    Returns
    -------
    LinearHead

    Raises
    ------
    ValueError
        If ``embeddings``, ``labels`` and ``groups`` differ in length, fewer than 2 classes are labelled, a class
        has fewer than 2 units, a class is named ``"unknown"``, or the settings are out of range.
    """
    check_task_name(task)
    x = np.asarray(embeddings, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be a 2-D array (num_units, dim), got shape {x.shape}")
    label_str, labelled = _label_strings(labels, x.shape[0])
    if groups is not None:
        groups = np.asarray(groups)
        if groups.shape != (x.shape[0],):
            raise ValueError(f"got {groups.shape[0] if groups.ndim else 0} groups for {x.shape[0]} units")
    if not 0.0 <= float(calibration_fraction) < 1.0:
        raise ValueError(f"calibration_fraction must be in [0, 1), got {calibration_fraction}")
    if not 0.0 <= float(threshold) <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    if not float(C) > 0:
        raise ValueError(f"C must be positive, got {C}")
    if ood_quantile is not None:
        if isinstance(ood_quantile, bool) or not isinstance(ood_quantile, (int, float, np.floating, np.integer)):
            raise ValueError(f"ood_quantile must be a number in (0, 1) or None, got {ood_quantile!r}")
        if not 0.0 < float(ood_quantile) < 1.0:
            raise ValueError(f"ood_quantile must be in (0, 1) (or None to skip the check), got {ood_quantile!r}")
    if isinstance(ood_components, bool) or not isinstance(ood_components, (int, np.integer)) or ood_components < 1:
        raise ValueError(f"ood_components must be a positive integer, got {ood_components!r}")
    if ood_columns is not None and (
        isinstance(ood_columns, bool)
        or not isinstance(ood_columns, (int, np.integer))
        or not 1 <= ood_columns <= x.shape[1]
    ):
        raise ValueError(
            f"ood_columns must be an integer in [1, {x.shape[1]}] (the embedding width) or None, got {ood_columns!r}"
        )

    keep = labelled & np.all(np.isfinite(x), axis=1)
    x, y_str = x[keep], label_str[keep].astype(str)
    if groups is not None:
        groups = groups[keep]
    classes, y, counts = np.unique(y_str, return_inverse=True, return_counts=True)
    classes = [str(c) for c in classes]
    if UNKNOWN in classes:
        raise ValueError(f"{UNKNOWN!r} is reserved for abstention and cannot be a class; relabel those units")
    if len(classes) < 2:
        raise ValueError(
            f"a head needs at least 2 classes among the labelled units with an embedding, got {classes} "
            f"({int(keep.sum())} units)"
        )
    small = {c: int(n) for c, n in zip(classes, counts) if n < 2}
    if small:
        raise ValueError(f"every class needs at least 2 labelled units with an embedding; too few: {small}")

    rng = np.random.default_rng(seed)
    fit_info: dict[str, Any] = dict(
        C=float(C),
        class_weight="balanced",
        calibration_fraction=float(calibration_fraction),
        threshold=float(threshold),
        seed=int(seed),
        split="groups" if groups is not None else "stratified",
        num_units=int(len(y)),
        class_counts={c: int(n) for c, n in zip(classes, counts)},
    )
    temperature = 1.0
    if calibration_fraction > 0:
        cal = (
            _stratified_split(y, calibration_fraction, rng)
            if groups is None
            else _group_split(y, groups, calibration_fraction, rng)
        )
        pipe = _sklearn_pipeline(float(C), int(max_iter)).fit(x[~cal], y_str[~cal])
        partial = head_from_sklearn(pipe, task)
        # the partial fit knows every class (checked by the split) in the same sorted order
        logits = partial.logits(x[cal])
        temperature = fit_temperature(logits, y[cal])
        at_bound = bool(np.any(np.isclose(np.log(temperature), _LOG_T_BOUNDS, atol=1e-3)))
        if at_bound:
            warnings.warn(
                f"head '{task}': the temperature ({temperature:.3g}) reached the end of its search range "
                f"[{np.exp(_LOG_T_BOUNDS[0]):g}, {np.exp(_LOG_T_BOUNDS[1]):g}]: the {int(cal.sum())} calibration "
                "units are probably perfectly separated (probabilities become 0 or 1). Label more units, or pass "
                "calibration_fraction=0 to keep the uncalibrated probabilities",
                stacklevel=2,
            )
        proba_1 = partial.predict_proba(x[cal])
        proba_t = dataclasses.replace(partial, temperature=temperature).predict_proba(x[cal])
        fit_info.update(
            num_calibration_units=int(cal.sum()),
            temperature=temperature,
            temperature_at_bound=at_bound,
            calibration_nll_before=_nll(logits, y[cal], 1.0),
            calibration_nll_after=_nll(logits, y[cal], temperature),
            calibration_ece_before=expected_calibration_error(proba_1, y_str[cal], classes),
            calibration_ece_after=expected_calibration_error(proba_t, y_str[cal], classes),
        )
    pipe = _sklearn_pipeline(float(C), int(max_iter)).fit(x, y_str)
    try:
        import sklearn

        fit_info["sklearn_version"] = sklearn.__version__
    except Exception:  # pragma: no cover
        pass
    head = head_from_sklearn(pipe, task, temperature=temperature, threshold=threshold)
    ood, ood_info = {}, None
    if ood_quantile is not None:
        ood, ood_info = _fit_ood(
            head, x, y, groups, float(ood_quantile), int(ood_components), float(calibration_fraction), seed,
            x.shape[1] if ood_columns is None else int(ood_columns),
        )
        fit_info["ood"] = ood_info
    info = dict(provenance or {})
    info["fit"] = fit_info
    return dataclasses.replace(head, provenance=info, **ood)


def _conformal_rank(n: int, quantile: float) -> int:
    """Rank (1-based) of the conformal ``quantile`` among ``n`` sorted scores: ``ceil((n + 1) * quantile)``."""
    return int(np.ceil((n + 1) * quantile - 1e-9))  # the tolerance absorbs rounding, e.g. 40 * 0.975


def _fit_ood(
    head: LinearHead,
    x: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray | None,
    quantile: float,
    components: int,
    calibration_fraction: float,
    seed: int,
    columns: int,
) -> tuple[dict, dict]:
    """The out-of-distribution arrays and threshold of :func:`fit_head` (empty when skipped) and their provenance."""
    info: dict[str, Any] = dict(
        method="gaussian_mixture",
        quantile=quantile,
        max_components=components,
        reg_covar=OOD_REG_COVAR,
        columns=columns,
    )
    if calibration_fraction <= 0:
        info["skipped"] = "calibration_fraction=0: no held-out units to set the threshold"
        return {}, info
    n = len(y)
    rank = _conformal_rank(n, quantile)
    if rank > n:
        needed = n + 1
        while _conformal_rank(needed, quantile) > needed:
            needed += 1
        warnings.warn(
            f"head '{head.task}': {n} labelled units are too few to set the out-of-distribution threshold at "
            f"ood_quantile={quantile:g} (it needs at least {needed}); the head "
            "has no out-of-distribution check. Label more units, lower ood_quantile, or pass ood_quantile=None",
            stacklevel=3,
        )
        info["skipped"] = f"too few labelled units ({n}) for the quantile"
        return {}, info
    rng = np.random.default_rng([int(seed), 1])
    num_folds = max(2, int(round(1.0 / calibration_fraction)))
    fold = _ood_folds(y, groups, num_folds, rng)
    held_out = np.full(n, np.nan)
    fold_components = []
    for f in np.unique(fold):
        test = fold == f
        mean, scale = np.mean(x[~test], axis=0), np.std(x[~test], axis=0)
        scale = np.where(scale > 0, scale, 1.0)  # as StandardScaler
        loc, prec, logw, k = _fit_mixture(((x[~test] - mean) / scale)[:, :columns], components, seed)
        fold_components.append(k)
        partial = dataclasses.replace(
            head, mean=mean, scale=scale, ood_location=loc, ood_precision=prec, ood_log_weight=logw, ood_threshold=0.0
        )
        held_out[test] = partial.ood_score(x[test])
    ood_threshold = float(np.sort(held_out)[rank - 1])
    loc, prec, logw, k = _fit_mixture(((x - head.mean) / head.scale)[:, :columns], components, seed)
    arrays = dict(ood_location=loc, ood_precision=prec, ood_log_weight=logw, ood_threshold=ood_threshold)
    in_sample = dataclasses.replace(head, **arrays).ood_score(x)
    info.update(
        components=k,
        folds=int(len(np.unique(fold))),
        fold_components=fold_components,
        split="groups" if groups is not None else "stratified",
        num_calibration_units=n,
        threshold=ood_threshold,
        held_out_score_quantiles={
            str(q): float(v) for q, v in zip((0.5, 0.9, 0.99), np.quantile(held_out, (0.5, 0.9, 0.99)))
        },
        training_fraction_flagged=float(np.mean(in_sample > ood_threshold)),
    )
    return arrays, info
