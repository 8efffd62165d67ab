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
Fitting a head (scikit-learn) lives in :mod:`~spikeinterface_neuronid.calibration`; the array checks, the
softmax and the mixture density live in the private ``_head_math`` module.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from ._head_math import float_array, max_or_nan, mixture_factors, mixture_neg_log_density, softmax, to_numpy
from .schema import UNKNOWN

__all__ = [
    "LinearHead",
    "HEAD_ARRAYS",
    "OOD_ARRAYS",
]

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
        dim``: see ``ood_columns`` of :func:`~spikeinterface_neuronid.calibration.fit_head`). None: no check.
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
        mean = float_array(self.mean, "mean", 1)
        scale = float_array(self.scale, "scale", 1)
        coef = float_array(self.coef, "coef", 2)
        intercept = float_array(self.intercept, "intercept", 1)
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
        location, precision, log_weight, factors, offsets = mixture_factors(
            self.task, self.ood_location, self.ood_precision, self.ood_log_weight, dim
        )
        try:
            ood_threshold = float(self.ood_threshold)
        except (TypeError, ValueError):
            raise ValueError(f"ood_threshold must be a finite number, got {self.ood_threshold!r}") from None
        if not np.isfinite(ood_threshold) or isinstance(self.ood_threshold, bool):
            raise ValueError(f"ood_threshold must be a finite number, got {self.ood_threshold!r}")
        object.__setattr__(self, "ood_location", location)
        object.__setattr__(self, "ood_precision", precision)
        object.__setattr__(self, "ood_log_weight", log_weight)
        object.__setattr__(self, "ood_threshold", ood_threshold)
        object.__setattr__(self, "_ood_factors", (factors, offsets))

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
        out[ok] = softmax(z[ok] / self.temperature)
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
        return max_or_nan(self.predict_proba(x))

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
            out[ok] = mixture_neg_log_density(z, self.ood_location, factors, offsets)
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
        conf = max_or_nan(proba)
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
                ood_location=to_numpy(arrays["ood_location"]),
                ood_precision=to_numpy(arrays["ood_precision"]),
                ood_log_weight=to_numpy(arrays["ood_log_weight"]),
                ood_threshold=metadata["ood_threshold"],
            )
        return cls(
            task=task,
            classes=list(metadata["classes"]),
            mean=to_numpy(arrays["mean"]),
            scale=to_numpy(arrays["scale"]),
            coef=to_numpy(arrays["coef"]),
            intercept=to_numpy(arrays["intercept"]),
            temperature=metadata["temperature"],
            threshold=metadata["threshold"],
            provenance=metadata.get("provenance") or {},
            **ood,
        )

    def __repr__(self) -> str:
        ood = f", ood_threshold={self.ood_threshold:.4g}" if self.has_ood else ""
        return (
            f"LinearHead(task={self.task!r}, classes={self.classes}, dim={self.dim}, "
            f"temperature={self.temperature:.3g}, threshold={self.threshold:.3g}{ood})"
        )

