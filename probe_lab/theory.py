"""The misfit theorem of weak-to-strong generalization in its own quantities.

Charikar, Pabbaraju and Shiragur (2024), "Quantifying the gain in weak-to-strong
generalization": let the strong student's class ``F`` be a **convex** set of
functions, let the target ``y`` be **realizable** (``y`` in ``F``), and let the
student ``s`` be the **projection** of the weak model's predictions ``w`` onto
``F`` in squared loss, ``s = argmin_{f in F} ||f - w||^2``. Then

    ||y - w||^2 - ||y - s||^2  >=  ||s - w||^2,    i.e.  gain >= misfit,

with equality when ``F`` is a linear subspace (Pythagoras). The same holds for any
Bregman divergence ``D`` with the Bregman projection ``s = argmin_{f in F}
D(f, w)`` (the generalized Pythagorean inequality; for KL between Bernoulli
probabilities this is Csiszar's I-projection): ``D(y, w) - D(y, s) >= D(s, w)``.

The assumptions matter and are not those of a trained probe: the quantities are
squared (or KL) distances between **soft** probabilities, not accuracies (with
0-1 loss ``acc(s) - acc(w) <= P(s != w)`` holds always, the opposite direction);
a logistic probe's outputs are not a convex set of probability vectors; its
cross-entropy fit is not the squared-loss projection; and the theorem holds on
the rows the projection was fit on (in population, or in-sample), so on held-out
rows the gap ``gain - misfit`` (the **slack**) carries estimation error that
shrinks with the number of fitted rows.

Here: the losses (:func:`squared_misfit`, :func:`squared_gain`,
:func:`kl_misfit`, :func:`kl_gain`), the projection student (least squares, or
ridge, of the weak probabilities on the strong features, closed form in float64:
:func:`projection_student`), and :func:`misfit_theorem`, which fits it on some rows
and reports gain, misfit and slack in-sample and on held-out rows, with the ceiling
probe's probabilities as the (approximately) realizable target.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

import numpy as np
import scipy.linalg
from threadpoolctl import threadpool_limits

__all__ = [
    "TheoremCheck",
    "kl_gain",
    "kl_misfit",
    "least_squares",
    "misfit_theorem",
    "projection_student",
    "squared_gain",
    "squared_misfit",
]

EPS = 1e-12
"""Probabilities are clipped to ``[EPS, 1 - EPS]`` inside the KL divergences."""


def _mean_rows(values: np.ndarray, rows: Any) -> np.ndarray:
    if rows is None:
        return values.mean(axis=-1)
    rows = np.broadcast_to(np.asarray(rows, bool), values.shape)
    count = rows.sum(axis=-1)
    if np.any(count == 0):
        raise ValueError("rows selects no examples for at least one probe")
    return np.where(rows, values, 0.0).sum(axis=-1) / count


def _f64(*arrays: Any) -> list[np.ndarray]:
    return [np.asarray(a, np.float64) for a in arrays]


BLOCK = 64
"""Probes per block in :func:`_row_mean`: a block's float64 temporaries stay in
cache where a ``(2,240, 20,000)`` study's whole arrays would be 358 MB each."""


def _row_mean(fn: Callable[..., np.ndarray], arrays: tuple, rows: Any) -> np.ndarray:
    """``mean over rows of fn(*arrays in float64)``, batched over leading axes.

    For ``(P, n)`` inputs it runs over blocks of :data:`BLOCK` probes: the same
    arithmetic per element and the same sum per probe (so the same bits), with
    temporaries the size of a block.
    """
    shapes = [np.shape(a) for a in arrays] + ([] if rows is None else [np.shape(rows)])
    shape = np.broadcast_shapes(*shapes)
    if len(shape) != 2 or shape[0] <= BLOCK:
        return _mean_rows(fn(*_f64(*arrays)), rows)

    def cut(a: Any, at: slice) -> Any:
        return a[at] if np.ndim(a) == 2 and np.shape(a)[0] == shape[0] else a

    arrays = tuple(np.asarray(a) for a in arrays)
    rows = None if rows is None else np.asarray(rows, bool)
    out = np.empty(shape[0])
    for start in range(0, shape[0], BLOCK):
        at = slice(start, start + BLOCK)
        values = fn(*_f64(*(cut(a, at) for a in arrays)))
        size = min(BLOCK, shape[0] - start)
        values = np.broadcast_to(values, (size, shape[1]))
        out[at] = _mean_rows(values, None if rows is None else cut(rows, at))
    return out


def squared_misfit(student: Any, weak: Any, rows: Any = None) -> np.ndarray:
    """Mean squared distance ``mean_i (s_i - w_i)^2`` between the student's and
    the weak model's soft predictions, over ``rows``; batched over leading axes
    (``(P, n)`` gives ``(P,)``)."""
    return _row_mean(lambda s, w: (s - w) ** 2, (student, weak), rows)


def squared_gain(student: Any, weak: Any, target: Any, rows: Any = None) -> np.ndarray:
    """``mean (y - w)^2 - mean (y - s)^2``: how much closer to the target ``y`` the
    student is than the weak model, in squared loss, over ``rows`` (batched)."""
    return _row_mean(
        lambda s, w, y: (y - w) ** 2 - (y - s) ** 2, (student, weak, target), rows
    )


def _kl(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """KL(Bernoulli(p) || Bernoulli(q)) elementwise, clipped to avoid log 0."""
    p, q = np.clip(p, EPS, 1 - EPS), np.clip(q, EPS, 1 - EPS)
    return p * np.log(p / q) + (1 - p) * np.log((1 - p) / (1 - q))


def kl_misfit(student: Any, weak: Any, rows: Any = None) -> np.ndarray:
    """Mean ``KL(Bern(s_i) || Bern(w_i))``: the Bregman misfit for the
    I-projection ``s = argmin_f KL(f || w)`` (batched; probabilities in [0, 1])."""
    return _row_mean(_kl, (student, weak), rows)


def kl_gain(student: Any, weak: Any, target: Any, rows: Any = None) -> np.ndarray:
    """``mean KL(y || w) - mean KL(y || s)`` over ``rows`` (batched)."""
    return _row_mean(
        lambda s, w, y: _kl(y, w) - _kl(y, s), (student, weak, target), rows
    )


def _design(features: np.ndarray) -> np.ndarray:
    return np.concatenate([features, np.ones((features.shape[0], 1))], axis=1)


MIN_RCOND = 1e-8
"""The least reciprocal condition number (LAPACK's 1-norm estimate) of the scaled
normal matrix :func:`least_squares` solves by Cholesky: the scaled design's own
condition number is then at most about 1e4, where one step of refinement gives
the least-squares solution to rounding; a worse one goes to ``lstsq``."""


def least_squares(lhs: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """``argmin_c ||lhs @ c - rhs||`` for ``lhs (m, p)``, ``rhs (m, r)``, float64.

    By the corrected semi-normal equations: the columns of ``lhs`` scaled to unit
    norm, a Cholesky factor of the scaled ``lhs^T lhs``, and one refinement step on
    the residual. With well-conditioned scaled columns (the study's principal
    component scores are uncorrelated, so nearly orthogonal) this agrees with
    ``np.linalg.lstsq`` to rounding in about a third of its time (one ``(8,139,
    385)`` design: 0.06 s against 0.18 s for the SVD-based ``lstsq``, measured
    single-threaded on a 2-core AMD EPYC). A rank-deficient or ill-conditioned
    design (reciprocal condition number below :data:`MIN_RCOND`) falls back to
    ``lstsq``, whose minimum-norm solution it then returns.
    """
    norms = np.sqrt(np.einsum("ij,ij->j", lhs, lhs))
    if np.all(norms > 0):
        scaled = lhs / norms
        gram = scaled.T @ scaled
        try:
            factor = scipy.linalg.cho_factor(gram, lower=False, check_finite=False)
        except np.linalg.LinAlgError:
            factor = None
        if factor is not None:
            anorm = np.abs(gram).sum(axis=0).max()
            rcond, _ = scipy.linalg.lapack.dpocon(factor[0], anorm)
            if rcond >= MIN_RCOND:
                coef = scipy.linalg.cho_solve(factor, scaled.T @ rhs)
                residual = rhs - scaled @ coef
                coef += scipy.linalg.cho_solve(factor, scaled.T @ residual)
                return coef / norms[:, None]
    return np.linalg.lstsq(lhs, rhs, rcond=None)[0]


def projection_student(
    features: Any,
    weak: Any,
    *,
    fit_rows: Any = None,
    ridge: float = 0.0,
) -> np.ndarray:
    """Least-squares (optionally ridge) fit of soft weak predictions on strong
    features, in closed form and float64, predicted on every row.

    With ``ridge = 0`` this is the Euclidean projection of ``w`` (on the fitted
    rows) onto the linear span of the features and a constant: the unconstrained
    linear student of the theorem. With ``ridge > 0`` (no penalty on the
    intercept) it is the projection onto a ball ``{X b : ||b|| <= r}`` for some
    radius ``r`` set by ``ridge``: still convex, so ``gain >= misfit`` holds for
    targets inside that ball. Standardize the features first if a ridge should
    treat them alike. The predictions are not clipped to [0, 1].

    Args:
        features: ``(n, d)`` strong features.
        weak: ``(n,)`` or ``(P, n)`` weak probabilities (soft labels).
        fit_rows: optional bool ``(n,)`` or ``(P, n)``: the rows each fit uses
            (all rows by default). Probes sharing a row set share one solve.
        ridge: L2 penalty ``lambda`` on the weights: the fit minimizes
            ``||X b + c - w||^2 + lambda ||b||^2`` over the fitted rows.

    Returns:
        ``(n,)`` or ``(P, n)`` float64 predictions on all rows.
    """
    x = np.asarray(features, np.float64)
    w = np.asarray(weak, np.float64)
    if x.ndim != 2 or w.shape[-1] != x.shape[0]:
        raise ValueError(
            f"features must be (n, d) and weak (n,) or (P, n) with the same n; got "
            f"{x.shape} and {w.shape}"
        )
    if ridge < 0:
        raise ValueError(f"ridge must be >= 0, got {ridge}")
    single = w.ndim == 1
    w2 = w.reshape(-1, x.shape[0])
    rows = np.ones(w2.shape, bool) if fit_rows is None else fit_rows
    rows = np.broadcast_to(np.asarray(rows, bool), w2.shape)
    design = _design(x)
    penalty = np.sqrt(ridge) * np.eye(x.shape[1], x.shape[1] + 1)
    out = np.empty_like(w2)
    # Unique row sets, compared as packed bits (a sort of the bool rows
    # themselves compares them byte by byte: seconds at (2,000, 20,000)).
    _, first, which = np.unique(
        np.packbits(rows, axis=1), axis=0, return_index=True, return_inverse=True
    )
    patterns = rows[first]

    def solve(i: int) -> None:
        probes = np.flatnonzero(which.reshape(-1) == i)
        lhs, rhs = design[patterns[i]], w2[probes][:, patterns[i]].T
        if ridge > 0:
            lhs = np.concatenate([lhs, penalty])
            rhs = np.concatenate([rhs, np.zeros((x.shape[1], probes.size))])
        out[probes] = (design @ least_squares(lhs, rhs)).T

    # One solve per row set, in parallel threads of one BLAS thread each: the
    # solves are independent, while a multithreaded BLAS synchronizes its threads
    # inside every solve (on cores shared with other jobs, 20x slower per solve).
    with (
        threadpool_limits(limits=1, user_api="blas"),
        ThreadPoolExecutor(max_workers=min(len(patterns), os.cpu_count() or 1)) as pool,
    ):
        list(pool.map(solve, range(len(patterns))))
    return out[0] if single else out


class TheoremCheck(NamedTuple):
    """Squared-loss gain, misfit and slack ``gain - misfit`` (arrays ``(P,)``)."""

    gain_fit: np.ndarray
    """On the rows the projection was fit on (in-sample)."""
    misfit_fit: np.ndarray
    slack_fit: np.ndarray
    """``gain - misfit`` in-sample: 0 for a realizable target and ``ridge = 0``;
    otherwise ``2 <y - s, s - w>``, which measures the target's distance from
    the student class."""
    gain_test: np.ndarray
    """On held-out rows."""
    misfit_test: np.ndarray
    slack_test: np.ndarray
    """``gain - misfit`` on held-out rows: the theorem predicts ``>= 0`` only up
    to estimation error, which shrinks as the fitted rows grow."""


def misfit_theorem(
    features: Any,
    weak: Any,
    target: Any,
    *,
    fit_rows: Any,
    test_rows: Any,
    ridge: float = 0.0,
) -> TheoremCheck:
    """Gain and misfit of the projection student, in-sample and held out.

    The study's use: ``weak`` the supervisor's soft probabilities on every row,
    ``target`` the ceiling probe's probabilities (realizable up to the sigmoid:
    the ceiling is a linear probe on the same features), ``fit_rows`` the
    student's labelled rows and ``test_rows`` the test rows of each seed.

    Args:
        features: ``(n, d)`` strong features.
        weak: ``(n,)`` or ``(P, n)`` weak probabilities.
        target: ``(n,)`` or ``(P, n)`` target probabilities (or labels).
        fit_rows, test_rows: bool ``(n,)`` or ``(P, n)``.
        ridge: see :func:`projection_student`.

    Returns:
        :class:`TheoremCheck` of ``(P,)`` arrays (0-d for ``(n,)`` weak labels).
    """
    w = np.asarray(weak, np.float64)
    s = projection_student(features, w, fit_rows=fit_rows, ridge=ridge)
    y = np.broadcast_to(np.asarray(target, np.float64), s.shape)
    out = []
    for rows in (fit_rows, test_rows):
        gain = squared_gain(s, w, y, rows)
        misfit = squared_misfit(s, w, rows)
        out += [gain, misfit, gain - misfit]
    return TheoremCheck(*out)
