"""Predictors of weak-to-strong gain, computed before any student trains.

A **predictor** maps what exists before a student trains to one number per
condition (a supervisor, a student width k, a seed): the weak labels on the
student's labelled rows, the strong features of those rows, the student's width,
optionally the weak model's own features of the same rows, and, for predictors
that declare ``reads_truth``, the ground truth of the labelled rows (a diagnostic a
sandbox can afford; a deployed method could not). **Test rows never reach a
predictor**: :class:`PredictorInput` holds the labelled rows only, so nothing a
predictor computes can read them.

Predictors are plug-ins on the project's spec (:class:`~probe_lab.registry.Plugin`:
a name, declared numeric parameters with defaults and ranges); :data:`PREDICTORS`
maps names to them, and a TOML names a researcher's own function by import path
(``"my_module:my_predictor"``): a function ``fn(inputs, params) -> float`` (its
``reads_truth`` attribute, default False, says whether it sees the truth).

Built-ins (docs/predictors.md gives the formulas):

* ``simulatability`` (reads truth): cross-fitted held-out AUROC, on the labelled
  rows, of a ridge probe on the student's k strong features predicting the weak
  error indicator ``w != y`` (Burns et al., App. E's conjecture; chance is 0.5
  at every error rate);
* ``projection_misfit``: held-out squared-loss misfit ``mean (s - w)^2`` of the
  cross-fitted projection student (:func:`probe_lab.theory.projection_student`);
* ``weak_accuracy`` and ``flip_rate`` (read truth): the weak labels' accuracy on
  the labelled rows and their balanced flip rate ``(rho_0 + rho_1) / 2``;
* ``n_over_d`` and ``width``: labelled rows per strong feature, the student's k;
* ``cka``: linear CKA between the weak model's and the strong model's features
  on the labelled rows (NaN for a supervisor without features of its own);
* ``weak_probe_accuracy`` (reads truth): the cross-fitted accuracy, on the
  labelled rows, of a ridge probe on the weak model's own features predicting the
  ground truth (the weak model's linear-probe quality on the task; NaN for a
  supervisor without features of its own: synthetic flips, rule fields);
* ``noise_theory`` (reads truth): ``n (1 - 2 rho)^2 / k``, the condition's
  distance past the symmetric-flip crossover ``n* = c k / (1 - 2 rho)^2``
  (:func:`crossover`).

:func:`evaluate` scores predictors out of sample (leave one task out, Spearman
rank correlation with a bootstrap over tasks) and a ridge model on their ranks.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from probe_lab import metrics, theory
from probe_lab.registry import Plugin, Registry, RegistryError

__all__ = [
    "PREDICTORS",
    "WEAK_PROBE_L2",
    "Predictor",
    "PredictorInput",
    "compute",
    "crossover",
    "evaluate",
    "get_predictor",
    "held_out",
    "linear_cka",
    "register_predictor",
    "spearman",
    "weak_probe_predictions",
]


@dataclasses.dataclass(frozen=True, kw_only=True)
class PredictorInput:
    """What a predictor may read about one condition: the labelled rows only."""

    features: np.ndarray
    """``(n, d)`` the strong model's features of the labelled rows (the study's
    basis: the first k are the student's)."""
    weak: np.ndarray
    """``(n,)`` the weak targets the student would train on (hard or soft)."""
    hard: np.ndarray
    """``(n,)`` int8 hard weak labels."""
    k: int
    """The student's width (first k features)."""
    truth: np.ndarray | None = None
    """``(n,)`` ground truth of the labelled rows; None for a predictor that does
    not declare ``reads_truth``."""
    weak_features: np.ndarray | None = None
    """``(n, d_w)`` the weak model's own features of the same rows, or None."""
    seed: int = 0
    """Seeds the folds of cross-fitted predictors."""

    @property
    def n(self) -> int:
        return int(self.hard.size)


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False)
class Predictor(Plugin):
    """A predictor: ``fn(inputs, params) -> float`` with declared parameters."""

    what: ClassVar[str] = "predictor"

    fn: Callable[[PredictorInput, Mapping[str, float]], float]
    """Computes the predictor of one condition."""
    reads_truth: bool = False
    """Whether it reads the labelled rows' ground truth (stated in every table)."""

    def __call__(self, inputs: PredictorInput, **given: float) -> float:
        params = self.resolve(given)
        if not self.reads_truth:
            inputs = dataclasses.replace(inputs, truth=None)
        elif inputs.truth is None:
            raise ValueError(f"predictor {self.name!r} reads truth; none was given")
        return float(self.fn(inputs, params))


def _check(item: Any, name: str) -> Predictor:
    if isinstance(item, Predictor):
        return item
    if callable(item):
        return Predictor(
            name=name,
            fn=item,
            params=getattr(item, "params", {}),
            reads_truth=bool(getattr(item, "reads_truth", False)),
        )
    raise RegistryError(
        f"predictor {name!r} must be a function fn(inputs, params) -> float, got "
        f"{type(item).__name__}"
    )


PREDICTORS: Registry[Predictor] = Registry("predictor", _check)
"""Predictor names -> :class:`Predictor` (or ``"module:function"`` paths)."""


def register_predictor(
    name: str,
    *,
    params: Mapping[str, float] | None = None,
    ranges: Mapping[str, tuple[float, float]] | None = None,
    reads_truth: bool = False,
) -> Callable[[Callable], Predictor]:
    """Decorator: register ``fn(inputs, params) -> float`` as predictor ``name``."""

    def wrap(fn: Callable) -> Predictor:
        spec = Predictor(
            name=name,
            fn=fn,
            params=dict(params or {}),
            ranges=dict(ranges or {}),
            reads_truth=reads_truth,
        )
        return PREDICTORS.register(name, spec)

    return wrap


def get_predictor(name: str) -> Predictor:
    """A registered predictor, or one loaded from ``"module:function"``."""
    return PREDICTORS.get(name)


def compute(names: Sequence[str], inputs: PredictorInput) -> dict[str, float]:
    """Every named predictor of one condition (``{name: value}``)."""
    return {name: get_predictor(name)(inputs) for name in names}


# -- the built-ins -----------------------------------------------------------


def _standardized(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    x = x - x.mean(axis=0)
    scale = x.std(axis=0)
    return x / np.where(scale > 0, scale, 1.0)


def _folds(n: int, folds: int, seed: int) -> np.ndarray:
    """``(folds, n)`` bool: each fold's FIT rows (every row held out once)."""
    which = np.random.default_rng(seed).permutation(n) % folds
    return np.stack([which != f for f in range(folds)])


def _crossfit(x: np.ndarray, y: np.ndarray, folds: int, ridge: float, seed: int):
    """Held-out predictions of the projection student of ``y`` on ``x`` (least
    squares with an unpenalized intercept and an L2 penalty ``ridge`` on the
    weights, the fit of :func:`probe_lab.theory.projection_student`): every row
    predicted by the fit that left its fold out. Closed form through the
    ``(d, d)`` normal equations, so a wide student costs ``n d^2``."""
    out = np.empty(y.size)
    for fit in _folds(y.size, folds, seed):
        mean_x, mean_y = x[fit].mean(axis=0), y[fit].mean()
        xc, yc = x[fit] - mean_x, y[fit] - mean_y
        if ridge > 0:
            gram = xc.T @ xc + ridge * np.eye(x.shape[1])
            coef = np.linalg.solve(gram, xc.T @ yc)
        else:
            coef = theory.least_squares(xc, yc[:, None])[:, 0]
        out[~fit] = (x[~fit] - mean_x) @ coef + mean_y
    return out


_CROSSFIT = {"folds": 3.0, "ridge": 1.0}
_CROSSFIT_RANGES = {"folds": (2, 20), "ridge": (0, math.inf)}


@register_predictor(
    "simulatability", params=_CROSSFIT, ranges=_CROSSFIT_RANGES, reads_truth=True
)
def simulatability(inputs: PredictorInput, params: Mapping[str, float]) -> float:
    """Cross-fitted AUROC of a ridge probe on the student's k strong features
    predicting the weak error ``w != y`` on the labelled rows (0.5: unsimulatable;
    NaN when the weak labels make no error or only errors)."""
    errors = (inputs.hard != inputs.truth).astype(np.float64)
    if errors.min() == errors.max():
        return math.nan
    x = _standardized(inputs.features[:, : inputs.k])
    score = _crossfit(x, errors, int(params["folds"]), params["ridge"], inputs.seed)
    return float(metrics.auroc(score, errors.astype(np.int8)))


@register_predictor("projection_misfit", params=_CROSSFIT, ranges=_CROSSFIT_RANGES)
def projection_misfit(inputs: PredictorInput, params: Mapping[str, float]) -> float:
    """Held-out ``mean (s - w)^2`` of the cross-fitted projection student ``s`` of
    the weak targets ``w`` on the student's k features (the misfit theorem's
    misfit, measured on rows the fit did not see)."""
    x = _standardized(inputs.features[:, : inputs.k])
    w = np.asarray(inputs.weak, np.float64)
    s = _crossfit(x, w, int(params["folds"]), params["ridge"], inputs.seed)
    return float(theory.squared_misfit(s, w))


@register_predictor("weak_accuracy", reads_truth=True)
def weak_accuracy(inputs: PredictorInput, params: Mapping[str, float]) -> float:
    """The hard weak labels' accuracy on the labelled rows."""
    return float(np.mean(inputs.hard == inputs.truth))


def balanced_flip_rate(hard: np.ndarray, truth: np.ndarray) -> float:
    """``(P(w=1 | y=0) + P(w=0 | y=1)) / 2``: the symmetric-flip rate rho that
    gives these class-conditional errors on balanced classes."""
    rates = [np.mean(hard[truth == c] != c) for c in (0, 1) if np.any(truth == c)]
    return float(np.mean(rates))


@register_predictor("flip_rate", reads_truth=True)
def flip_rate(inputs: PredictorInput, params: Mapping[str, float]) -> float:
    """The weak labels' balanced flip rate on the labelled rows."""
    return balanced_flip_rate(inputs.hard, inputs.truth)


@register_predictor("n_over_d")
def n_over_d(inputs: PredictorInput, params: Mapping[str, float]) -> float:
    """Labelled rows per strong feature."""
    return inputs.n / inputs.features.shape[1]


@register_predictor("width")
def width(inputs: PredictorInput, params: Mapping[str, float]) -> float:
    """The student's k."""
    return float(inputs.k)


def linear_cka(x: Any, y: Any) -> float:
    """Linear CKA (Kornblith et al. 2019) of two ``(n, d)`` feature sets of the
    same rows: ``||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)`` on centred
    columns; 1 for a rotation or isotropic scaling of the same features. Wide
    features (``d > n``, e.g. a bag of words) use the equal ``n x n`` Gram form."""
    xc = np.asarray(x, np.float64) - np.mean(x, axis=0)
    yc = np.asarray(y, np.float64) - np.mean(y, axis=0)
    if max(xc.shape[1], yc.shape[1]) > xc.shape[0]:
        gx, gy = xc @ xc.T, yc @ yc.T
        cross, norm = np.sum(gx * gy), np.linalg.norm(gx) * np.linalg.norm(gy)
    else:
        cross = np.linalg.norm(yc.T @ xc) ** 2
        norm = np.linalg.norm(xc.T @ xc) * np.linalg.norm(yc.T @ yc)
    return float(cross / norm) if norm > 0 else math.nan


@register_predictor("cka")
def cka(inputs: PredictorInput, params: Mapping[str, float]) -> float:
    """Linear CKA of the weak model's and the strong model's features on the
    labelled rows; NaN for a supervisor without features of its own."""
    if inputs.weak_features is None:
        return math.nan
    return linear_cka(inputs.weak_features, inputs.features)


WEAK_PROBE_L2 = tuple(float(x) for x in np.geomspace(1e-2, 1e5, 15))
"""The L2 strengths :func:`weak_probe_predictions` chooses among (on z-scored
features, whose Gram matrix has eigenvalues of order the number of rows)."""


def weak_probe_predictions(
    x: np.ndarray, y: np.ndarray, *, folds: int, seed: int, l2=WEAK_PROBE_L2
) -> np.ndarray:
    """Held-out 0/1 predictions of a cross-fitted ridge classifier of ``y`` on
    ``x``: on each fold's fit rows, least squares of the +-1 targets with an
    unpenalized intercept, its L2 strength chosen from ``l2`` by the exact
    leave-one-out squared error on those rows alone (scikit-learn's
    ``RidgeClassifierCV`` with ``cv=None``); each row predicted by the fit that
    left its fold out.

    One decomposition of the centred fit rows, ``Xc = U S V^T``, serves every L2
    value: the fitted values are ``mean + U diag(s^2 / (s^2 + l2)) U^T yc`` and
    the hat matrix's diagonal ``1/n + sum_j U_ij^2 s_j^2 / (s_j^2 + l2)``, so the
    leave-one-out residual is ``(y_i - fitted_i) / (1 - H_ii)``. Wide features
    (``d > n``, a bag of words, a larger model) take ``U`` and ``s^2`` from the
    eigendecomposition of the ``n x n`` Gram matrix ``Xc Xc^T`` and predict
    through it (``Xc^T U diag(1 / (s^2 + l2)) U^T yc`` is the weight vector).

    Args:
        x: ``(n, d)`` features.
        y: ``(n,)`` 0/1 targets.
        folds: cross-fitting folds (each row held out once).
        seed: the folds' permutation seed.
        l2: the L2 strengths tried.

    Returns:
        ``(n,)`` int8 held-out predictions.
    """
    x = np.asarray(x, np.float64)
    target = 2.0 * np.asarray(y, np.float64) - 1.0
    grid = np.asarray(l2, np.float64)
    out = np.empty(target.size, np.int8)
    for fit in _folds(target.size, folds, seed):
        mean_x, mean_y = x[fit].mean(axis=0), target[fit].mean()
        xc, yc = x[fit] - mean_x, target[fit] - mean_y
        if xc.shape[1] > xc.shape[0]:
            s2, u = np.linalg.eigh(xc @ xc.T)
            keep = s2 > s2.max() * 1e-10  # centring leaves one zero direction
            s2, u = s2[keep], u[:, keep]
        else:
            u, s, _ = np.linalg.svd(xc, full_matrices=False)
            s2 = s**2
        shrink = s2 / (s2 + grid[:, None])  # (L, r)
        uy = u.T @ yc
        fitted = mean_y + (shrink * uy) @ u.T  # (L, n_fit)
        hat = 1.0 / fit.sum() + shrink @ (u**2).T  # (L, n_fit)
        with np.errstate(divide="ignore", invalid="ignore"):
            loo = (target[fit] - fitted) / (1.0 - hat)
        error = np.where(hat < 1.0 - 1e-12, loo**2, np.inf).mean(axis=1)
        best = int(np.argmin(error))
        coef = xc.T @ (u @ (uy / (s2 + grid[best])))
        out[~fit] = ((x[~fit] - mean_x) @ coef + mean_y > 0).astype(np.int8)
    return out


@register_predictor(
    "weak_probe_accuracy",
    params={"folds": 3.0},
    ranges={"folds": (2, 20)},
    reads_truth=True,
)
def weak_probe_accuracy(inputs: PredictorInput, params: Mapping[str, float]) -> float:
    """The weak model's linear-probe quality on the task: the cross-fitted
    accuracy, on the labelled rows, of a ridge classifier on the weak model's own
    (z-scored) features predicting the ground truth
    (:func:`weak_probe_predictions`, L2 chosen by leave-one-out inside each fold).
    NaN for a supervisor without features of its own (synthetic flips, rule
    fields) or a labelled set of one class."""
    if inputs.weak_features is None or np.all(inputs.truth == inputs.truth[0]):
        return math.nan
    x = _standardized(inputs.weak_features)
    held = weak_probe_predictions(
        x, inputs.truth, folds=int(params["folds"]), seed=inputs.seed
    )
    return float(np.mean(held == inputs.truth))


def crossover(k: Any, rho: Any, c: float = 1.0) -> np.ndarray:
    """The symmetric-flip theory's crossover ``n* = c k / (1 - 2 rho)^2``: the
    labelled rows past which a k-feature student of labels flipped at rate rho
    beats its supervisor (inf at rho >= 0.5)."""
    k, rho = np.asarray(k, np.float64), np.asarray(rho, np.float64)
    margin = np.clip(1 - 2 * rho, 0.0, None)
    with np.errstate(divide="ignore"):
        return c * k / margin**2


@register_predictor("noise_theory", reads_truth=True)
def noise_theory(inputs: PredictorInput, params: Mapping[str, float]) -> float:
    """``n / n*`` with ``c = 1``: ``n (1 - 2 rho)^2 / k``, rho the balanced flip
    rate (larger: further past the crossover, so more gain expected)."""
    rho = balanced_flip_rate(inputs.hard, inputs.truth)
    return float(inputs.n / crossover(inputs.k, rho))


# -- evaluation --------------------------------------------------------------


def spearman(a: Any, b: Any) -> float:
    """Spearman rank correlation over the pairs where both are finite (NaN with
    fewer than 3 pairs or a constant side)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3:
        return math.nan
    ra, rb = pd.Series(a[ok]).rank().to_numpy(), pd.Series(b[ok]).rank().to_numpy()
    if ra.std() == 0 or rb.std() == 0:
        return math.nan
    return float(np.corrcoef(ra, rb)[0, 1])


def _ranks(frame: pd.DataFrame, names: Sequence[str]) -> np.ndarray:
    """Each predictor's rank within the frame scaled to [0, 1] (NaN: 0.5)."""
    ranks = frame[list(names)].rank(pct=True)
    return ranks.fillna(0.5).to_numpy(np.float64)


def combined_scores(
    train: pd.DataFrame,
    test: pd.DataFrame,
    names: Sequence[str],
    target: str,
    *,
    group: str = "task",
    ridge: float = 1.0,
) -> np.ndarray:
    """A ridge regression of the target's ranks on the predictors' ranks (ranks
    taken within each task), fit on ``train`` and applied to ``test``."""
    x = np.concatenate([_ranks(g, names) for _, g in train.groupby(group)])
    y = np.concatenate(
        [g[target].rank(pct=True).to_numpy() for _, g in train.groupby(group)]
    )
    xc, yc = x - x.mean(axis=0), y - y.mean()
    coef = np.linalg.solve(xc.T @ xc + ridge * np.eye(len(names)), xc.T @ yc)
    return _ranks(test, names) @ coef


def _direction(train: pd.DataFrame, name: str, target: str, group: str) -> float:
    """+1 or -1: the sign of the mean within-task correlation on ``train`` (NaN
    when it has none)."""
    values = [spearman(g[name], g[target]) for _, g in train.groupby(group)]
    values = [v for v in values if np.isfinite(v)]
    sign = float(np.sign(np.mean(values))) if values else math.nan
    return sign if sign != 0 else math.nan


def held_out(
    frame: pd.DataFrame, names: Sequence[str], target: str, group: str = "task"
) -> tuple[dict[str, dict[str, float]], pd.Series]:
    """Per predictor (and ``combined``), the Spearman correlation on each held-out
    group (task): a single predictor's direction is learned on the other groups
    (the sign of the mean within-group correlation there), the combined model is
    fit there. Also returns each row's held-out combined score."""
    tasks = list(dict.fromkeys(frame[group]))
    out: dict[str, dict[str, float]] = {name: {} for name in [*names, "combined"]}
    combined = pd.Series(np.nan, index=frame.index)
    for task in tasks:
        test, train = frame[frame[group] == task], frame[frame[group] != task]
        for name in names:
            sign = _direction(train, name, target, group)
            out[name][task] = spearman(sign * test[name], test[target])
        usable = [n for n in names if train[n].notna().any()]
        if usable:
            scores = combined_scores(train, test, usable, target, group=group)
            combined[test.index] = scores
            out["combined"][task] = spearman(scores, test[target])
        else:
            out["combined"][task] = math.nan
    return out, combined


def _bootstrap(
    values: np.ndarray, draws: np.ndarray, confidence: float
) -> tuple[float, float]:
    """Percentile interval of the mean over resampled tasks (NaN tasks skipped)."""
    with warnings.catch_warnings():  # a resample of NaN tasks only is NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        boot = np.nanmean(values[draws], axis=1)
    boot = boot[np.isfinite(boot)]
    if not boot.size:
        return math.nan, math.nan
    tail = (1 - confidence) / 2
    low, high = np.quantile(boot, [tail, 1 - tail])
    return float(low), float(high)


def evaluate(
    frame: pd.DataFrame,
    names: Sequence[str],
    *,
    targets: Sequence[str] = ("pgr", "gain"),
    group: str = "task",
    resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """Out-of-sample rank correlation of every predictor with each target.

    Leave one task out: each task's conditions are predicted from the other
    tasks only (a single predictor's direction, the combined model's weights),
    and scored by the Spearman correlation within that task. The table gives the
    mean over held-out tasks with a percentile bootstrap interval over tasks
    (the same task resamples for every predictor, so differences are paired).

    Args:
        frame: one row per condition: ``task``, the targets and the predictors.
        names: predictor columns.
        targets: measured columns to predict.
        group: the column whose values are held out in turn (``task``).

    Returns:
        One row per (target, predictor): ``spearman``, ``low``, ``high``, the
        number of tasks scored, the conditions where the predictor is defined
        (and the target finite) and the per-task values.
    """
    if frame[group].nunique() < 2:
        raise ValueError(
            f"leave-one-{group}-out needs conditions from at least 2 values of "
            f"{group}; got {sorted(set(frame[group]))}"
        )
    rng = np.random.default_rng(seed)
    tasks = list(dict.fromkeys(frame[group]))
    draws = rng.integers(0, len(tasks), size=(resamples, len(tasks)))
    rows = []
    for target in targets:
        usable = frame[np.isfinite(frame[target].astype(float))]
        per, _ = held_out(usable, names, target, group)
        for name, values in per.items():
            v = np.array([values.get(t, math.nan) for t in tasks])
            low, high = _bootstrap(v, draws, confidence)
            rows.append(
                dict(
                    target=target,
                    predictor=name,
                    direction=_direction(usable, name, target, group)
                    if name in names
                    else 1.0,
                    spearman=float(np.nanmean(v)) if np.isfinite(v).any() else math.nan,
                    low=float(low),
                    high=float(high),
                    tasks=int(np.isfinite(v).sum()),
                    conditions=int(
                        usable[name].notna().sum() if name in names else len(usable)
                    ),
                    per_task="; ".join(
                        f"{t} {x:+.2f}" for t, x in zip(tasks, v, strict=True)
                    ),
                )
            )
    return pd.DataFrame(rows)
