"""The misfit theorem's quantities: the Pythagorean identity of a least-squares
projection student, its match with scikit-learn, the KL (Bregman) inequality, and
the held-out slack."""

from __future__ import annotations

import numpy as np
import pytest

from probe_lab import theory


def realizable(rng, n: int = 200, d: int = 6, probes: int = 3):
    """Features, a target inside their affine span, and weak predictions that
    are the target plus off-span noise and on-span error."""
    x = rng.standard_normal((n, d))
    y = 0.5 + 0.1 * (x @ rng.standard_normal(d))
    w = y + 0.2 * rng.standard_normal((probes, n))
    return x, y, w


def test_in_sample_pythagorean_identity():
    """gain = misfit exactly: ||y - w||^2 - ||y - s||^2 = ||s - w||^2 when s is
    the projection of w onto a subspace containing y."""
    x, y, w = realizable(np.random.default_rng(0))
    s = theory.projection_student(x, w)
    gain = theory.squared_gain(s, w, y)
    misfit = theory.squared_misfit(s, w)
    np.testing.assert_allclose(gain, misfit, rtol=0, atol=1e-10)
    assert np.all(misfit > 1e-3)  # not trivially 0 = 0
    check = theory.misfit_theorem(
        x, w, y, fit_rows=np.ones(200, bool), test_rows=np.ones(200, bool)
    )
    np.testing.assert_allclose(check.slack_fit, 0.0, atol=1e-10)


def test_projection_matches_sklearn_least_squares_and_ridge():
    from sklearn.linear_model import LinearRegression, Ridge

    rng = np.random.default_rng(1)
    x, _, w = realizable(rng, n=80, d=5, probes=2)
    rows = rng.random(80) < 0.6
    s = theory.projection_student(x, w, fit_rows=rows)
    ref = LinearRegression().fit(x[rows], w[0, rows]).predict(x)
    np.testing.assert_allclose(s[0], ref, atol=1e-10)
    s = theory.projection_student(x, w[1], fit_rows=rows, ridge=3.0)
    ref = Ridge(alpha=3.0).fit(x[rows], w[1, rows]).predict(x)
    np.testing.assert_allclose(s, ref, atol=1e-10)
    # per-probe row sets: each probe fits only its own rows
    masks = np.stack([rows, ~rows])
    both = theory.projection_student(x, w, fit_rows=masks)
    ref = LinearRegression().fit(x[~rows], w[1, ~rows]).predict(x)
    np.testing.assert_allclose(both[1], ref, atol=1e-10)
    with pytest.raises(ValueError, match="same n"):
        theory.projection_student(x, w[:, :10])


def test_ridge_student_keeps_gain_at_least_misfit_for_targets_in_its_ball():
    """The ridge fit s = X b + c is the projection onto the convex set
    {X b' + c' : ||b'|| <= ||b||}; y = 0.5 s + const has weights 0.5 b, inside it."""
    rng = np.random.default_rng(2)
    x, _, w = realizable(rng, n=150, d=4, probes=1)
    s = theory.projection_student(x, w[0], ridge=50.0)
    y = theory.projection_student(x, 0.5 * s + 0.5 * s.mean(), ridge=0.0)
    assert theory.squared_gain(s, w[0], y) >= theory.squared_misfit(s, w[0]) - 1e-12


def test_kl_quantities_by_hand_and_the_bregman_inequality():
    s, w, y = np.array([0.7]), np.array([0.4]), np.array([0.9])

    def kl(p, q):
        return p * np.log(p / q) + (1 - p) * np.log((1 - p) / (1 - q))

    assert theory.kl_misfit(s, w) == pytest.approx(kl(0.7, 0.4))
    assert theory.kl_gain(s, w, y) == pytest.approx(kl(0.9, 0.4) - kl(0.9, 0.7))
    # I-projection onto the convex set {p : p >= 0.6} (per row) of w's below it
    # is the boundary point 0.6; every y in the set then has gain >= misfit.
    rng = np.random.default_rng(3)
    w = rng.uniform(0.05, 0.55, 500)
    s = np.full(500, 0.6)
    y = rng.uniform(0.6, 0.99, 500)
    assert np.all(
        theory.kl_gain(s[:, None], w[:, None], y[:, None])
        >= theory.kl_misfit(s[:, None], w[:, None]) - 1e-12
    )


def test_held_out_slack_shrinks_with_fitted_rows():
    """Out of sample the identity holds only up to estimation error: the mean
    |slack| on held-out rows falls as the projection sees more rows."""
    rng = np.random.default_rng(4)
    slack = []
    for n in (40, 400, 4000):
        x, y, w = realizable(rng, n=n + 2000, d=8, probes=8)
        fit = np.zeros(n + 2000, bool)
        fit[:n] = True
        check = theory.misfit_theorem(x, w, y, fit_rows=fit, test_rows=~fit)
        np.testing.assert_allclose(check.slack_fit, 0.0, atol=1e-10)
        slack.append(np.abs(check.slack_test).mean())
    assert slack[0] > slack[1] > slack[2]
    assert slack[2] < 0.1 * slack[0]


def test_least_squares_matches_lstsq_and_falls_back_when_ill_conditioned():
    """The Cholesky path agrees with the SVD-based lstsq to rounding on columns of
    very different scales; a rank-deficient or nearly collinear design takes
    lstsq's own (minimum-norm) solution."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((500, 12)) * np.logspace(0, -4, 12)
    design = np.concatenate([x, np.ones((500, 1))], axis=1)
    rhs = rng.random((500, 3))
    ref = np.linalg.lstsq(design, rhs, rcond=None)[0]
    got = theory.least_squares(design, rhs)
    np.testing.assert_allclose(design @ got, design @ ref, rtol=0, atol=1e-12)
    np.testing.assert_allclose(got, ref, rtol=1e-9)
    for second in (design[:, 0], design[:, 0] + 1e-7 * rng.standard_normal(500)):
        bad = design.copy()
        bad[:, 1] = second
        np.testing.assert_array_equal(
            theory.least_squares(bad, rhs), np.linalg.lstsq(bad, rhs, rcond=None)[0]
        )
