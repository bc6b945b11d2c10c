"""The L-BFGS solver against scikit-learn's LogisticRegression."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_problem
from sklearn.linear_model import LogisticRegression

from probe_lab import TrainConfig, train_probes


@pytest.mark.parametrize("lam", [1e-3, 1e-2, 1e-1])
def test_lbfgs_matches_sklearn_at_the_same_l2(lam):
    x, y, _ = make_problem(n=400, d=10, n_probes=4, noise=1.0, seed=4)
    train = np.arange(400) < 300
    config = TrainConfig(solver="lbfgs", l2=lam, lbfgs_tol=1e-6)
    probes = train_probes(x, y, train, config=config)
    mean, std = x[train].mean(0), x[train].std(0) + 1e-6
    xs = (x - mean) / std
    for p in range(y.shape[0]):
        ref = LogisticRegression(C=1 / (lam * train.sum()), tol=1e-10, max_iter=5000)
        ref.fit(xs[train], y[p, train])
        w_ref = ref.coef_[0] / std
        np.testing.assert_allclose(probes.weights[p], w_ref, rtol=1e-3, atol=1e-3)
        b_ref = ref.intercept_[0] - mean @ w_ref
        assert float(probes.bias[p]) == pytest.approx(b_ref, abs=2e-3)
    assert probes.best_epoch.max() < 40  # preconditioning: few iterations
    np.testing.assert_array_equal(probes.failed_epoch, -1)


def test_lbfgs_per_probe_l2_and_masks():
    x, y, _ = make_problem(n=300, d=8, n_probes=3, seed=5)
    yy = np.stack([y[0]] * 3)
    probes = train_probes(
        x, yy, config=TrainConfig(solver="lbfgs", l2=(1e-3, 1e-1, 1.0))
    )
    norms = np.linalg.norm(np.asarray(probes.weights) * probes.feature_scale, axis=1)
    assert norms[0] > norms[1] > norms[2]
    mask = np.zeros((3, 8), bool)
    mask[0, :2] = mask[1, :5] = mask[2, :] = True
    masked = train_probes(
        x, yy, feature_mask=mask, config=TrainConfig(solver="lbfgs", l2=1e-2)
    )
    xs = (x - x.mean(0)) / (x.std(0) + 1e-6)
    for p in range(3):
        k = mask[p].sum()
        ref = LogisticRegression(C=1 / (1e-2 * 300), tol=1e-10, max_iter=5000)
        ref.fit(xs[:, :k], yy[p])
        w = np.asarray(masked.weights[p]) * (x.std(0) + 1e-6)
        np.testing.assert_allclose(w[:k], ref.coef_[0], rtol=2e-3, atol=2e-4)
        assert np.all(w[k:] == 0)


def test_lbfgs_refuses_confidence_loss():
    with pytest.raises(ValueError, match="needs solver='adam'"):
        TrainConfig(solver="lbfgs", l2=1e-2, loss="confidence")
