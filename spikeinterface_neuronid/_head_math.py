"""The numbers behind :class:`~spikeinterface_neuronid.heads.LinearHead`: array checks, softmax, mixture density.

Private to :mod:`~spikeinterface_neuronid.heads` (numpy only). The out-of-distribution density is a Gaussian
mixture over standardised embeddings, stored as component means (``location``), precision matrices
(``precision``, inverse covariances) and log mixture weights (``log_weight``); :func:`mixture_factors` checks
and factorises it once, and :func:`mixture_neg_log_density` scores embeddings with the factors.
"""

from __future__ import annotations

import numpy as np

__all__ = ["float_array", "softmax", "max_or_nan", "to_numpy", "mixture_factors", "mixture_neg_log_density"]


def float_array(value, name: str, ndim: int) -> np.ndarray:
    """A read-only float64 C-contiguous copy of ``value``; ValueError unless ``ndim``-D and finite."""
    arr = np.array(value, dtype=np.float64, copy=True, order="C")
    if arr.ndim != ndim:
        raise ValueError(f"{name} must be a {ndim}-D array, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must hold finite values")
    arr.flags.writeable = False
    return arr


def softmax(z: np.ndarray) -> np.ndarray:
    """Row-wise softmax of ``(n, k)`` logits (shifted by the row maximum, so it does not overflow)."""
    z = z - np.max(z, axis=1, keepdims=True)
    e = np.exp(z)
    return e / np.sum(e, axis=1, keepdims=True)


def max_or_nan(proba: np.ndarray) -> np.ndarray:
    """Largest value of each row of ``(n, k)`` probabilities; NaN for rows with a non-finite value."""
    proba = np.asarray(proba, dtype=np.float64)
    out = np.full(proba.shape[0], np.nan)
    ok = np.all(np.isfinite(proba), axis=1)
    if np.any(ok):
        out[ok] = np.max(proba[ok], axis=1)
    return out


def to_numpy(value) -> np.ndarray:
    """``value`` as a numpy array; a torch tensor (as read from the model file) is moved to the CPU first."""
    if hasattr(value, "detach"):  # a torch tensor read from the model file
        value = value.detach().to("cpu").numpy()
    return np.asarray(value)


def mixture_factors(
    task: str, location, precision, log_weight, dim: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Check a Gaussian mixture over the first ``d <= dim`` standardised columns and factorise its precisions.

    Parameters
    ----------
    task : str
        The head's task (named in the errors).
    location, precision, log_weight : array-like
        ``(k, d)`` component means, ``(k, d, d)`` precision matrices (symmetric, positive definite) and
        ``(k,)`` log mixture weights.
    dim : int
        The head's embedding dimension.

    Returns
    -------
    location, precision, log_weight : np.ndarray
        The checked arrays (read-only float64 copies).
    factors : np.ndarray
        ``(k, d, d)`` lower Cholesky factors ``L`` of the precisions (``P = L L^T``).
    offsets : np.ndarray
        ``(k,)`` each component's log weight plus the log of its normalising constant.

    Raises
    ------
    ValueError
        If an array is not finite, the shapes do not fit each other and ``dim``, or a precision matrix is
        not symmetric positive definite.
    """
    location = float_array(location, "ood_location", 2)
    precision = float_array(precision, "ood_precision", 3)
    log_weight = float_array(log_weight, "ood_log_weight", 1)
    k, d = location.shape
    if k < 1 or not 1 <= d <= dim or precision.shape != (k, d, d) or log_weight.shape != (k,):
        raise ValueError(
            f"head '{task}': the out-of-distribution arrays do not fit dimension {dim}: ood_location "
            f"{location.shape} (must be (k, d), k >= 1, 1 <= d <= {dim}), ood_precision {precision.shape} "
            f"(must be (k, d, d)), ood_log_weight {log_weight.shape} (must be (k,))"
        )
    factors = np.empty_like(precision)
    for i, m in enumerate(precision):
        if not np.allclose(m, m.T, rtol=1e-10, atol=1e-12 * float(np.max(np.abs(m)))):
            raise ValueError(f"head '{task}': ood_precision[{i}] must be symmetric")
        try:
            factors[i] = np.linalg.cholesky(m)
        except np.linalg.LinAlgError:
            raise ValueError(f"head '{task}': ood_precision[{i}] must be positive definite") from None
    # log N(z; mu, P^-1) = log|L| - d log(2 pi) / 2 - |(z - mu) L|^2 / 2, with P = L L^T
    log_norm = np.log(np.diagonal(factors, axis1=1, axis2=2)).sum(axis=1) - 0.5 * d * np.log(2.0 * np.pi)
    return location, precision, log_weight, factors, log_weight + log_norm


def mixture_neg_log_density(
    z: np.ndarray, location: np.ndarray, factors: np.ndarray, offsets: np.ndarray
) -> np.ndarray:
    """``-log sum_k exp(offsets[k] - |(z - location[k]) factors[k]|^2 / 2)`` of each row of ``z`` ``(n, d)``.

    With the outputs of :func:`mixture_factors`, the negative log-density of the mixture at each row
    (computed with a shifted log-sum-exp, so it does not underflow far from every component).
    """
    log_p = np.empty((z.shape[0], len(offsets)))
    for i, (centre, factor) in enumerate(zip(location, factors)):
        w = (z - centre) @ factor
        log_p[:, i] = offsets[i] - 0.5 * np.einsum("ij,ij->i", w, w)
    top = np.max(log_p, axis=1)
    return -(top + np.log(np.sum(np.exp(log_p - top[:, None]), axis=1)))
