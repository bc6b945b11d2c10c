"""The one PCA of the project, and what whitening does and does not do."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.decomposition import PCA

from probe_lab.basis import principal_components, standardizes, to_basis


def data(n=300, d=6, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)) * np.linspace(3, 0.2, d) @ rng.normal(size=(d, d))


def test_principal_components_equal_sklearn_up_to_sign():
    x = data()
    rows = np.arange(300) < 200
    ours = principal_components(x, rows)
    ref = PCA().fit(x[rows]).transform(x)
    signs = np.sign((ours * ref).sum(axis=0))
    np.testing.assert_allclose(ours, ref * signs, rtol=1e-4, atol=1e-4)


def test_unwhitened_components_keep_their_relative_variance():
    x = data()
    pcs = to_basis(x, "pca", whiten=False)
    var = pcs.var(axis=0)
    assert np.all(np.diff(var) < 0)  # decreasing: not whitened
    assert np.mean(pcs.astype(np.float64) ** 2) == pytest.approx(1.0, rel=1e-5)
    raw_var = principal_components(x).var(axis=0)
    np.testing.assert_allclose(var / var[0], raw_var / raw_var[0], rtol=1e-4)
    # Whitening leaves scaling to the trainer, which z-scores each component.
    assert standardizes("pca", whiten=True) and not standardizes("pca", whiten=False)
    assert standardizes("raw", whiten=False)
    with pytest.raises(ValueError, match="whitening needs basis='pca'"):
        to_basis(x, "raw", whiten=True)
