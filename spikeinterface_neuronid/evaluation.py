"""Linear-probe evaluation of embeddings (NuCLR's protocol: StandardScaler + balanced logistic regression)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

__all__ = ["ProbeResult", "linear_probe", "expected_calibration_error"]


@dataclass
class ProbeResult:
    """Scores of a linear probe on held-out units.

    Attributes
    ----------
    macro_f1, balanced_accuracy : float
        Headline metrics on the test units.
    classes : list of str
        Class names in the order of ``per_class`` and ``confusion``.
    per_class : dict
        ``{class: {"precision", "recall", "f1", "support"}}``.
    confusion : np.ndarray
        Confusion matrix, rows = true class, columns = predicted class.
    predictions : np.ndarray
        Predicted label of each test unit.
    """

    macro_f1: float
    balanced_accuracy: float
    classes: list
    per_class: dict
    confusion: np.ndarray
    predictions: np.ndarray = field(repr=False)

    def table(self) -> str:
        """Per-class precision / recall / F1 as aligned text, with the macro scores last."""
        lines = [f"{'class':>10} {'precision':>9} {'recall':>7} {'f1':>6} {'support':>8}"]
        for name in self.classes:
            row = self.per_class[name]
            lines.append(
                f"{name:>10} {row['precision']:9.3f} {row['recall']:7.3f} {row['f1']:6.3f} {row['support']:8d}"
            )
        lines.append(f"{'macro-F1':>10} {self.macro_f1:.3f}   balanced accuracy {self.balanced_accuracy:.3f}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return dict(
            macro_f1=self.macro_f1,
            balanced_accuracy=self.balanced_accuracy,
            classes=list(self.classes),
            per_class=self.per_class,
            confusion=self.confusion.tolist(),
        )


def linear_probe(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    C: float = 1.0,
    max_iter: int = 2000,
) -> ProbeResult:
    """Fit StandardScaler + class-balanced LogisticRegression on train units, score on test units.

    Rows with non-finite values (units without an embedding) are dropped from both sets.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    train_ok = np.all(np.isfinite(train_x), axis=1)
    test_ok = np.all(np.isfinite(test_x), axis=1)
    train_x, train_y = np.asarray(train_x)[train_ok], np.asarray(train_y).astype(str)[train_ok]
    test_x, test_y = np.asarray(test_x)[test_ok], np.asarray(test_y).astype(str)[test_ok]
    if len(np.unique(train_y)) < 2:
        raise ValueError("the probe needs at least two classes among the training units")
    probe = make_pipeline(
        StandardScaler(), LogisticRegression(C=C, class_weight="balanced", max_iter=max_iter)
    )
    from threadpoolctl import threadpool_limits

    # probes are small: BLAS threads only add overhead (2-3x slower on 2 cores)
    with threadpool_limits(1):
        probe.fit(train_x, train_y)
        pred = probe.predict(test_x)
    classes = sorted(set(train_y) | set(test_y))
    precision, recall, f1, support = precision_recall_fscore_support(
        test_y, pred, labels=classes, zero_division=0
    )
    per_class = {
        c: dict(precision=float(p), recall=float(r), f1=float(f), support=int(s))
        for c, p, r, f, s in zip(classes, precision, recall, f1, support)
    }
    present = sorted(set(test_y))
    return ProbeResult(
        macro_f1=float(f1_score(test_y, pred, labels=present, average="macro", zero_division=0)),
        balanced_accuracy=float(balanced_accuracy_score(test_y, pred)),
        classes=classes,
        per_class=per_class,
        confusion=confusion_matrix(test_y, pred, labels=classes),
        predictions=pred,
    )


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
