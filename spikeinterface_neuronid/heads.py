"""Task heads: calibrated linear classifiers on top of the embeddings, with an "unknown" answer.

A head turns the embedding of a unit into a label for one task (``"cell_type"``, ``"brain_region"``, ...):

1. standardise the embedding (``(x - mean) / scale``), as scikit-learn's ``StandardScaler``;
2. apply a multinomial logistic regression (``coef``, ``intercept``) to get one logit per class;
3. divide the logits by a ``temperature`` fitted on held-out units (temperature scaling) and take the softmax:
   the calibrated probabilities;
4. answer the most probable class, or ``"unknown"`` when its calibrated probability is below ``threshold``;
5. out-of-distribution check (heads fitted with ``ood_quantile``, the default): also answer ``"unknown"`` when
   the embedding is unlike the embeddings the head was trained on, i.e. when its out-of-distribution score
   (the negative log-density of the standardised embedding under a Gaussian mixture fitted to the training
   embeddings: ``ood_location``, ``ood_precision``, ``ood_log_weight``) exceeds ``ood_threshold``, a
   quantile of the scores of held-out units. Confident probabilities of a unit unlike every training unit
   mean nothing: a linear classifier extrapolates. Heads without the out-of-distribution arrays (stored by
   older versions, or fitted with ``ood_quantile=None``) skip this step.

Heads are plain numbers (numpy arrays plus a small JSON-able description), so they are stored in the model file
next to the encoder weights (see :class:`~spikeinterface_neuronid.bundle.ModelBundle`) without pickling.
scikit-learn is imported only to fit a head.
"""

from __future__ import annotations

import dataclasses
import json
import re
import warnings
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

__all__ = [
    "LinearHead",
    "fit_head",
    "expected_calibration_error",
    "head_outputs",
    "UNKNOWN",
    "HEAD_ARRAYS",
    "OOD_ARRAYS",
    "CLASSES_SUFFIX",
]

#: Label answered when the head abstains (low confidence, out of distribution, or no embedding).
UNKNOWN = "unknown"
#: Arrays of the out-of-distribution check, optional: heads stored by older versions lack them.
OOD_ARRAYS = ("ood_location", "ood_precision", "ood_log_weight")
#: Names of a head's arrays (stored in the model file as ``head.<task>.<array>``): the classifier's, which
#: every head has, then :data:`OOD_ARRAYS`.
HEAD_ARRAYS = ("mean", "scale", "coef", "intercept", *OOD_ARRAYS)
_REQUIRED_ARRAYS = HEAD_ARRAYS[:4]
_TASK_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_LOG_T_BOUNDS = (np.log(1e-2), np.log(1e2))


def check_task_name(task: str) -> str:
    """Return ``task`` if it is a valid task name (letters, digits, underscores; starts with a letter)."""
    if not isinstance(task, str) or not _TASK_RE.match(task):
        raise ValueError(
            f"task must be a name made of letters, digits and underscores that starts with a letter "
            f"(e.g. 'cell_type'), got {task!r}"
        )
    return task


def _float_array(value, name: str, ndim: int) -> np.ndarray:
    arr = np.array(value, dtype=np.float64, copy=True, order="C")
    if arr.ndim != ndim:
        raise ValueError(f"{name} must be a {ndim}-D array, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must hold finite values")
    arr.flags.writeable = False
    return arr


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - np.max(z, axis=1, keepdims=True)
    e = np.exp(z)
    return e / np.sum(e, axis=1, keepdims=True)


@dataclass(frozen=True, eq=False)
class LinearHead:
    """A calibrated linear classifier for one task, applied to unit embeddings.

    Instances are immutable (the arrays are read-only); use :func:`dataclasses.replace` to change e.g. the
    threshold: ``dataclasses.replace(head, threshold=0.7)``.

    Parameters
    ----------
    task : str
        Task name (letters, digits, underscores), e.g. ``"cell_type"``. Used in the model file and as the prefix
        of the extension's data keys and of the sorting properties (``<task>_label``).
    classes : list of str
        Class names, in the order of the rows of ``coef`` and of the probability columns. ``"unknown"`` is
        reserved.
    mean : np.ndarray
        float64 ``(dim,)``: standardisation offset.
    scale : np.ndarray
        float64 ``(dim,)``: standardisation scale (positive).
    coef : np.ndarray
        float64 ``(n_classes, dim)``: logistic-regression weights on the standardised embedding.
    intercept : np.ndarray
        float64 ``(n_classes,)``: logistic-regression intercepts.
    temperature : float, default: 1.0
        Calibration temperature: the probabilities are ``softmax(logits / temperature)``.
    threshold : float, default: 0.5
        Abstention threshold in [0, 1]: a unit is labelled ``"unknown"`` when its largest calibrated
        probability is strictly below it.
    provenance : dict, default: {}
        JSON-serialisable description of how the head was fitted (data, labels, settings, scores).
    ood_location : np.ndarray | None, default: None
        float64 ``(k, d)``: means of the ``k`` Gaussian components of the density of the standardised
        training embeddings (the out-of-distribution check), over their first ``d <= dim`` columns (``d <
        dim``: see ``ood_columns`` of :func:`fit_head`). None: no check.
    ood_precision : np.ndarray | None, default: None
        float64 ``(k, d, d)``: the components' precision matrices (inverse covariances; symmetric,
        positive definite). None: no check.
    ood_log_weight : np.ndarray | None, default: None
        float64 ``(k,)``: natural logarithms of the components' mixture weights. None: no check.
    ood_threshold : float | None, default: None
        A unit whose :meth:`ood_score` is strictly above it is out of distribution and labelled ``"unknown"``,
        whatever its probabilities. None: no check. The four ``ood_*`` values are given together or not at
        all.

    Notes
    -----
    Heads without the ``ood_*`` values (fitted with ``ood_quantile=None`` or stored in a model file by a
    version before the out-of-distribution check) load and predict as before: they abstain only on low
    confidence. :meth:`without_ood` removes the check from a head.
    """

    task: str
    classes: list[str]
    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: np.ndarray
    temperature: float = 1.0
    threshold: float = 0.5
    provenance: dict = field(default_factory=dict)
    ood_location: np.ndarray | None = None
    ood_precision: np.ndarray | None = None
    ood_log_weight: np.ndarray | None = None
    ood_threshold: float | None = None

    def __post_init__(self):
        set_ = object.__setattr__
        check_task_name(self.task)
        if isinstance(self.classes, str):
            raise ValueError("classes must be a list of class names, not a string")
        classes = [str(c) for c in self.classes]
        if len(classes) < 2:
            raise ValueError(f"a head needs at least 2 classes, got {classes}")
        if len(set(classes)) != len(classes):
            raise ValueError(f"class names must be unique, got {classes}")
        if any(c in ("", UNKNOWN) for c in classes):
            raise ValueError(f"class names must be non-empty and not {UNKNOWN!r} (reserved), got {classes}")
        set_(self, "classes", classes)
        mean = _float_array(self.mean, "mean", 1)
        scale = _float_array(self.scale, "scale", 1)
        coef = _float_array(self.coef, "coef", 2)
        intercept = _float_array(self.intercept, "intercept", 1)
        dim = mean.shape[0]
        if scale.shape != (dim,) or coef.shape != (len(classes), dim) or intercept.shape != (len(classes),):
            raise ValueError(
                f"head '{self.task}' arrays do not fit {len(classes)} classes and dimension {dim}: mean {mean.shape}, "
                f"scale {scale.shape}, coef {coef.shape}, intercept {intercept.shape}"
            )
        if np.any(scale <= 0):
            raise ValueError("scale must be positive")
        for name, arr in (("mean", mean), ("scale", scale), ("coef", coef), ("intercept", intercept)):
            set_(self, name, arr)
        temperature = float(self.temperature)
        if not np.isfinite(temperature) or temperature <= 0:
            raise ValueError(f"temperature must be a positive number, got {self.temperature!r}")
        threshold = float(self.threshold)
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {self.threshold!r}")
        set_(self, "temperature", temperature)
        set_(self, "threshold", threshold)
        provenance = dict(self.provenance or {})
        try:
            json.dumps(provenance)
        except (TypeError, ValueError) as err:
            raise ValueError(f"provenance must be JSON-serialisable: {err}") from None
        set_(self, "provenance", provenance)
        self._check_ood(dim)

    def _check_ood(self, dim: int) -> None:
        values = (self.ood_location, self.ood_precision, self.ood_log_weight, self.ood_threshold)
        if all(v is None for v in values):
            object.__setattr__(self, "_ood_factors", None)
            return
        if any(v is None for v in values):
            raise ValueError(
                f"head '{self.task}': ood_location, ood_precision, ood_log_weight and ood_threshold must be given "
                "together (or all None for a head without an out-of-distribution check)"
            )
        location = _float_array(self.ood_location, "ood_location", 2)
        precision = _float_array(self.ood_precision, "ood_precision", 3)
        log_weight = _float_array(self.ood_log_weight, "ood_log_weight", 1)
        k, d = location.shape
        if k < 1 or not 1 <= d <= dim or precision.shape != (k, d, d) or log_weight.shape != (k,):
            raise ValueError(
                f"head '{self.task}': the out-of-distribution arrays do not fit dimension {dim}: ood_location "
                f"{location.shape} (must be (k, d), k >= 1, 1 <= d <= {dim}), ood_precision {precision.shape} "
                f"(must be (k, d, d)), ood_log_weight {log_weight.shape} (must be (k,))"
            )
        factors = np.empty_like(precision)
        for i, m in enumerate(precision):
            if not np.allclose(m, m.T, rtol=1e-10, atol=1e-12 * float(np.max(np.abs(m)))):
                raise ValueError(f"head '{self.task}': ood_precision[{i}] must be symmetric")
            try:
                factors[i] = np.linalg.cholesky(m)
            except np.linalg.LinAlgError:
                raise ValueError(f"head '{self.task}': ood_precision[{i}] must be positive definite") from None
        try:
            ood_threshold = float(self.ood_threshold)
        except (TypeError, ValueError):
            raise ValueError(f"ood_threshold must be a finite number, got {self.ood_threshold!r}") from None
        if not np.isfinite(ood_threshold) or isinstance(self.ood_threshold, bool):
            raise ValueError(f"ood_threshold must be a finite number, got {self.ood_threshold!r}")
        # log N(z; mu, P^-1) = log|L| - d log(2 pi) / 2 - |(z - mu) L|^2 / 2, with P = L L^T
        log_norm = np.log(np.diagonal(factors, axis1=1, axis2=2)).sum(axis=1) - 0.5 * d * np.log(2.0 * np.pi)
        object.__setattr__(self, "ood_location", location)
        object.__setattr__(self, "ood_precision", precision)
        object.__setattr__(self, "ood_log_weight", log_weight)
        object.__setattr__(self, "ood_threshold", ood_threshold)
        object.__setattr__(self, "_ood_factors", (factors, log_weight + log_norm))

    # -- prediction ---------------------------------------------------------------------------------------

    @property
    def dim(self) -> int:
        """Embedding dimension the head expects."""
        return int(self.mean.shape[0])

    @property
    def num_classes(self) -> int:
        """Number of classes (``"unknown"`` excluded)."""
        return len(self.classes)

    def _inputs(self, x) -> tuple[np.ndarray, np.ndarray]:
        x = np.asarray(x, dtype=np.float64)
        if x.ndim == 1:
            x = x[None, :]
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"head '{self.task}' expects embeddings of shape (n, {self.dim}), got {x.shape}")
        return x, np.all(np.isfinite(x), axis=1)

    def logits(self, x) -> np.ndarray:
        """Uncalibrated logits ``(n, n_classes)`` (temperature not applied); NaN for rows with a non-finite value.

        Parameters
        ----------
        x : array-like
            Embeddings ``(n, dim)``.

        Returns
        -------
        np.ndarray
            float64 ``(n, n_classes)``.
        """
        x, ok = self._inputs(x)
        out = np.full((x.shape[0], self.num_classes), np.nan)
        out[ok] = ((x[ok] - self.mean) / self.scale) @ self.coef.T + self.intercept
        return out

    def predict_proba(self, x) -> np.ndarray:
        """Calibrated class probabilities ``softmax(logits / temperature)``.

        Parameters
        ----------
        x : array-like
            Embeddings ``(n, dim)``.

        Returns
        -------
        np.ndarray
            float64 ``(n, n_classes)``, columns in :attr:`classes` order; rows of embeddings with a non-finite
            value (units without an embedding) are NaN.
        """
        z = self.logits(x)
        ok = np.all(np.isfinite(z), axis=1)
        out = np.full(z.shape, np.nan)
        out[ok] = _softmax(z[ok] / self.temperature)
        return out

    def confidence(self, x) -> np.ndarray:
        """Largest calibrated probability of each unit (NaN for units without an embedding).

        Parameters
        ----------
        x : array-like
            Embeddings ``(n, dim)``.

        Returns
        -------
        np.ndarray
            float64 ``(n,)``.
        """
        return _max_or_nan(self.predict_proba(x))

    @property
    def has_ood(self) -> bool:
        """Whether the head has an out-of-distribution check (False for heads stored by older versions)."""
        return self.ood_threshold is not None

    def without_ood(self) -> "LinearHead":
        """A copy of the head without the out-of-distribution check (it abstains on low confidence only)."""
        return dataclasses.replace(
            self, ood_location=None, ood_precision=None, ood_log_weight=None, ood_threshold=None
        )

    def ood_score(self, x) -> np.ndarray:
        """Out-of-distribution score: negative log-density of the standardised embedding under the mixture.

        ``-log sum_k exp(ood_log_weight[k]) N(z; ood_location[k], inv(ood_precision[k]))`` with
        ``z = (x - mean) / scale``: large for embeddings unlike the training embeddings. With one component
        it is half the squared Mahalanobis distance plus a constant.

        Parameters
        ----------
        x : array-like
            Embeddings ``(n, dim)``.

        Returns
        -------
        np.ndarray
            float64 ``(n,)``; NaN for rows with a non-finite value (units without an embedding).

        Raises
        ------
        ValueError
            If the head has no out-of-distribution check (:attr:`has_ood` is False).
        """
        if not self.has_ood:
            raise ValueError(
                f"head '{self.task}' has no out-of-distribution check (fitted with ood_quantile=None, or stored "
                "by a version without it); refit it with fit_head to add one"
            )
        x, ok = self._inputs(x)
        out = np.full(x.shape[0], np.nan)
        if np.any(ok):
            factors, offsets = self._ood_factors
            d = self.ood_location.shape[1]  # the density sees the first d columns
            z = (x[ok, :d] - self.mean[:d]) / self.scale[:d]
            log_p = np.empty((z.shape[0], len(offsets)))
            for i, (centre, factor) in enumerate(zip(self.ood_location, factors)):
                w = (z - centre) @ factor
                log_p[:, i] = offsets[i] - 0.5 * np.einsum("ij,ij->i", w, w)
            top = np.max(log_p, axis=1)
            out[ok] = -(top + np.log(np.sum(np.exp(log_p - top[:, None]), axis=1)))
        return out

    def is_ood(self, x) -> np.ndarray:
        """Whether each unit is out of distribution: :meth:`ood_score` strictly above :attr:`ood_threshold`.

        Parameters
        ----------
        x : array-like
            Embeddings ``(n, dim)``.

        Returns
        -------
        np.ndarray
            bool ``(n,)``; False for units without an embedding (they are ``"unknown"`` anyway) and for every
            unit when the head has no out-of-distribution check.
        """
        if not self.has_ood:
            return np.zeros(self._inputs(x)[0].shape[0], dtype=bool)
        score = self.ood_score(x)
        return np.isfinite(score) & (score > self.ood_threshold)

    def predict(self, x) -> np.ndarray:
        """Most probable class of each unit, or ``"unknown"`` where the head abstains.

        Parameters
        ----------
        x : array-like
            Embeddings ``(n, dim)``.

        Returns
        -------
        np.ndarray
            Fixed-width unicode array ``(n,)``. Units whose largest calibrated probability is strictly below
            :attr:`threshold`, units out of distribution (:meth:`is_ood`) and units without an embedding
            (NaN rows) are ``"unknown"``.
        """
        return self.labels_from_proba(self.predict_proba(x), ood=self.is_ood(x))

    def labels_from_proba(self, proba: np.ndarray, ood: np.ndarray | None = None) -> np.ndarray:
        """Labels of :meth:`predict` from already computed calibrated probabilities.

        Parameters
        ----------
        proba : np.ndarray
            ``(n, n_classes)`` calibrated probabilities (NaN rows for units without an embedding).
        ood : np.ndarray | None, default: None
            bool ``(n,)``: units to label ``"unknown"`` as out of distribution (:meth:`is_ood`); None: none.

        Returns
        -------
        np.ndarray
            Fixed-width unicode array ``(n,)``.
        """
        proba = np.asarray(proba, dtype=np.float64)
        conf = _max_or_nan(proba)
        width = max(len(UNKNOWN), *(len(c) for c in self.classes))
        labels = np.full(proba.shape[0], UNKNOWN, dtype=f"<U{width}")
        confident = np.isfinite(conf) & (conf >= self.threshold)
        if ood is not None:
            ood = np.asarray(ood, dtype=bool)
            if ood.shape != confident.shape:
                raise ValueError(f"ood must have shape {confident.shape}, got {ood.shape}")
            confident &= ~ood
        if np.any(confident):
            best = np.argmax(proba[confident], axis=1)
            labels[confident] = np.asarray(self.classes)[best]
        return labels

    # -- storage ------------------------------------------------------------------------------------------

    def to_arrays(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """The head as arrays and JSON-able metadata (what the model file stores).

        Returns
        -------
        arrays : dict of str to np.ndarray
            float64 ``mean``, ``scale``, ``coef`` and ``intercept`` (copies), and ``ood_location``,
            ``ood_precision`` and ``ood_log_weight`` for a head with an out-of-distribution check.
        metadata : dict
            ``classes``, ``temperature``, ``threshold`` and ``provenance``, and ``ood_threshold`` for a head with
            an out-of-distribution check. A head without one gives exactly what older versions stored.
        """
        names = HEAD_ARRAYS if self.has_ood else _REQUIRED_ARRAYS
        arrays = {name: np.array(getattr(self, name), dtype=np.float64, order="C") for name in names}
        metadata = dict(
            classes=list(self.classes),
            temperature=self.temperature,
            threshold=self.threshold,
            provenance=json.loads(json.dumps(self.provenance)),
        )
        if self.has_ood:
            metadata["ood_threshold"] = self.ood_threshold
        return arrays, metadata

    @classmethod
    def from_arrays(cls, task: str, arrays: Mapping[str, Any], metadata: Mapping[str, Any]) -> "LinearHead":
        """Rebuild a head from :meth:`to_arrays` output.

        Parameters
        ----------
        task : str
            Task name.
        arrays : mapping of str to array-like
            ``mean``, ``scale``, ``coef``, ``intercept``, and optionally ``ood_location``, ``ood_precision``
            and ``ood_log_weight`` (the out-of-distribution check; heads stored by older versions lack them).
        metadata : mapping
            ``classes``, ``temperature``, ``threshold``, optionally ``provenance``, and ``ood_threshold``
            exactly when the out-of-distribution arrays are given.

        Raises
        ------
        ValueError
            If an array or metadata entry is missing, unexpected or inconsistent.
        """
        has_ood = any(name in arrays for name in OOD_ARRAYS)
        expected = HEAD_ARRAYS if has_ood else _REQUIRED_ARRAYS
        missing = [name for name in expected if name not in arrays]
        unexpected = sorted(set(arrays) - set(HEAD_ARRAYS))
        if missing or unexpected:
            raise ValueError(f"head '{task}': missing arrays {missing}, unexpected arrays {unexpected}")
        if not isinstance(metadata, Mapping):
            raise ValueError(f"head '{task}': metadata must be a dict, got {type(metadata).__name__}")
        lacking = [k for k in ("classes", "temperature", "threshold") if k not in metadata]
        if lacking:
            raise ValueError(f"head '{task}': metadata lacks {lacking}")
        if not isinstance(metadata["classes"], (list, tuple)):
            raise ValueError(f"head '{task}': classes must be a list")
        if has_ood != ("ood_threshold" in metadata):
            raise ValueError(
                f"head '{task}': the out-of-distribution arrays {list(OOD_ARRAYS)} and the metadata entry "
                "'ood_threshold' must be stored together"
            )
        ood = {}
        if has_ood:
            ood = dict(
                ood_location=_to_numpy(arrays["ood_location"]),
                ood_precision=_to_numpy(arrays["ood_precision"]),
                ood_log_weight=_to_numpy(arrays["ood_log_weight"]),
                ood_threshold=metadata["ood_threshold"],
            )
        return cls(
            task=task,
            classes=list(metadata["classes"]),
            mean=_to_numpy(arrays["mean"]),
            scale=_to_numpy(arrays["scale"]),
            coef=_to_numpy(arrays["coef"]),
            intercept=_to_numpy(arrays["intercept"]),
            temperature=metadata["temperature"],
            threshold=metadata["threshold"],
            provenance=metadata.get("provenance") or {},
            **ood,
        )

    @classmethod
    def from_sklearn(
        cls,
        estimator,
        task: str,
        *,
        temperature: float = 1.0,
        threshold: float = 0.5,
        provenance: dict | None = None,
    ) -> "LinearHead":
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
        return cls(
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

    def __repr__(self) -> str:
        ood = f", ood_threshold={self.ood_threshold:.4g}" if self.has_ood else ""
        return (
            f"LinearHead(task={self.task!r}, classes={self.classes}, dim={self.dim}, "
            f"temperature={self.temperature:.3g}, threshold={self.threshold:.3g}{ood})"
        )


def _to_numpy(value) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor read from the model file
        value = value.detach().to("cpu").numpy()
    return np.asarray(value)


def _max_or_nan(proba: np.ndarray) -> np.ndarray:
    proba = np.asarray(proba, dtype=np.float64)
    out = np.full(proba.shape[0], np.nan)
    ok = np.all(np.isfinite(proba), axis=1)
    if np.any(ok):
        out[ok] = np.max(proba[ok], axis=1)
    return out


def _is_missing(label) -> bool:
    if label is None:
        return True
    if isinstance(label, (float, np.floating)) and np.isnan(label):
        return True
    return str(label) in ("", "nan", "None")


def _label_strings(labels, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels as str (``""`` where missing) and the mask of labelled entries."""
    labels = list(labels) if not isinstance(labels, np.ndarray) else list(labels.tolist())
    if len(labels) != n:
        raise ValueError(f"got {len(labels)} labels for {n} units: there must be one label (or None) per unit")
    missing = np.array([_is_missing(v) for v in labels], dtype=bool)
    out = np.array(["" if m else str(v) for v, m in zip(labels, missing)], dtype=object)
    return out, ~missing


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
        partial = LinearHead.from_sklearn(pipe, task)
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
    head = LinearHead.from_sklearn(pipe, task, temperature=temperature, threshold=threshold)
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


def expected_calibration_error(proba, y, classes: Sequence[str], n_bins: int = 10) -> float:
    """Expected calibration error of the top label: ``sum_b |accuracy_b - confidence_b| * n_b / n``.

    Units are binned by their largest probability into ``n_bins`` equal-width bins over [0, 1].

    Parameters
    ----------
    proba : array-like
        ``(n, n_classes)`` probabilities, columns in ``classes`` order; NaN rows are skipped.
    y : sequence
        True label of each unit; missing labels (None, ``""``, NaN) are skipped.
    classes : sequence of str
        Class names of the columns.
    n_bins : int, default: 10
        Number of confidence bins.

    Returns
    -------
    float
        ECE in [0, 1]; NaN if no unit is left.
    """
    proba = np.asarray(proba, dtype=np.float64)
    if proba.ndim != 2 or proba.shape[1] != len(classes):
        raise ValueError(f"proba must have shape (n, {len(classes)}), got {proba.shape}")
    y_str, labelled = _label_strings(y, proba.shape[0])
    ok = labelled & np.all(np.isfinite(proba), axis=1)
    if not np.any(ok):
        return float("nan")
    proba, y_str = proba[ok], y_str[ok].astype(str)
    conf = np.max(proba, axis=1)
    correct = np.asarray(classes, dtype=str)[np.argmax(proba, axis=1)] == y_str
    bins = np.minimum((conf * n_bins).astype(np.int64), n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        in_bin = bins == b
        if np.any(in_bin):
            ece += abs(float(np.mean(correct[in_bin])) - float(np.mean(conf[in_bin]))) * in_bin.sum() / len(conf)
    return float(ece)


#: Suffix of the per-task data keys that are not per unit (the class order), left alone by ``select_units``.
CLASSES_SUFFIX = "_classes"


def head_outputs(head, embedding: np.ndarray) -> dict[str, np.ndarray]:
    """The extension's data entries for one task head applied to the embeddings.

    Parameters
    ----------
    head : LinearHead
        The task head.
    embedding : np.ndarray
        ``(num_units, dim)`` embeddings (NaN rows for units without one).

    Returns
    -------
    dict of str to np.ndarray
        ``<task>_label`` (``<U``), ``<task>_probabilities`` (float32), ``<task>_confidence`` (float32) and
        ``<task>_classes`` (``<U``). The label is ``"unknown"`` where the stored confidence is below the head's
        threshold, where the unit is out of distribution (:meth:`LinearHead.is_ood`; its probabilities are
        still stored) and where it has no embedding.
    """
    # labels from the stored float32 probabilities: "unknown" exactly where the stored confidence < threshold
    proba = head.predict_proba(embedding).astype(np.float32)
    task = head.task
    return {
        f"{task}_label": head.labels_from_proba(proba, ood=head.is_ood(embedding)),
        f"{task}_probabilities": proba,
        f"{task}_confidence": np.max(proba, axis=1),
        f"{task}{CLASSES_SUFFIX}": np.asarray(head.classes, dtype=str),
    }
