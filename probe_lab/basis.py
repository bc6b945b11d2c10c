"""The coordinates the k-feature family M_k counts in.

M_k is a probe on the first ``k`` features of one representation. Raw residual-stream
coordinates carry no order of importance, so by default the features are rotated
onto their principal components, sorted by decreasing variance: the first ``k``
then span the ``k``-dimensional subspace that keeps the most variance, and M_k1
can simulate M_k2 whenever ``k1 >= k2``. The rotation is fit without labels.

This is the one PCA of the project: studies and experiments both call it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["BASES", "principal_components", "standardizes", "to_basis"]

BASES = ("pca", "raw")


def principal_components(x: Any, rows: Any = None) -> np.ndarray:
    """Project features onto their principal components, by decreasing variance.

    Args:
        x: ``(n, d)`` features.
        rows: bool ``(n,)`` or indices: the rows the mean and covariance are fit
            on (default all). Every row is projected.

    Returns:
        ``(n, d)`` float32 ``(x - mean) @ V``, where the columns of ``V`` are the
        covariance's eigenvectors sorted by decreasing eigenvalue. The projections
        are centred but not scaled (column ``j`` has the ``j``-th eigenvalue as its
        variance on the fit rows).
    """
    x = np.asarray(x, np.float64)
    fit = x if rows is None else x[rows]
    if fit.shape[0] < 2:
        raise ValueError(
            f"a principal-component basis needs at least 2 rows to fit, got "
            f"{fit.shape[0]}"
        )
    mean = fit.mean(axis=0)
    spectrum, vectors = np.linalg.eigh(np.cov(fit, rowvar=False))
    order = np.argsort(spectrum)[::-1]
    return ((x - mean) @ vectors[:, order]).astype(np.float32)


def to_basis(
    x: Any, kind: str, rows: Any = None, *, whiten: bool = False
) -> np.ndarray:
    """Features in a study's basis.

    Args:
        x: ``(n, d)`` features.
        kind: ``pca`` (:func:`principal_components` fit on ``rows``) or ``raw``
            (unchanged).
        rows: the rows the basis is fit on (default all).
        whiten: ``pca`` only. False: every component is divided by ONE common
            scale (the root mean variance on ``rows``), so components keep their
            relative variances and the probe sees a rotation of the centred
            features; the trainer must then not standardize per feature. True:
            the components as they are, for the trainer to scale each to unit
            variance (whitening).

    Returns:
        ``(n, d)`` float32 (``raw``: as stored).
    """
    if kind == "raw":
        if whiten:
            raise ValueError("whitening needs basis='pca'")
        return np.asarray(x)
    if kind != "pca":
        raise ValueError(f"basis must be one of {BASES}, got {kind!r}")
    pcs = principal_components(x, rows)
    if whiten:
        return pcs
    fit = pcs if rows is None else pcs[rows]
    scale = float(np.sqrt(np.mean(fit.astype(np.float64) ** 2)))
    return (pcs / max(scale, 1e-12)).astype(np.float32)


def standardizes(kind: str, whiten: bool) -> bool:
    """Whether the trainer should z-score each feature of a basis: raw coordinates
    and whitened components yes; unwhitened components no (it would whiten them)."""
    return kind == "raw" or whiten
