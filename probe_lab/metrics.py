"""Accuracy, agreement, PGR, per-row metrics, and the project's intervals and tests.

Intervals (one implementation each, coverage checked by simulation in
tests/test_intervals.py, documented in docs/statistics.md): :func:`t_interval`
(a mean over seeds), :func:`pgr_interval` (PGR of mean performances, Fieller),
:func:`paired_difference` (A vs B on the same seeds); :func:`holm` corrects a family
of paired tests and :func:`minimum_detectable_effect` says what a seed count can
detect. There is no bootstrap: a percentile bootstrap over 3-10 seeds under-covers
(docs/statistics.md).

Every function is vectorized over leading axes: predictions ``(P, n)`` give ``(P,)``
results; ``(n,)`` gives a scalar. Predictions may be probabilities (hardened at 0.5),
logits are not accepted (harden them first).

One rule makes a hard prediction everywhere in probe-lab: label 1 iff ``p >= 0.5``,
i.e. iff ``logit >= 0`` (:func:`positive`; :func:`probe_lab.probes.positive_logit`
for logits, in the trainer, the evaluation and ``Probes.predict``).
"""

from __future__ import annotations

import warnings
from typing import Any, NamedTuple

import numpy as np

from probe_lab.probes import positive

__all__ = [
    "Interval",
    "PGRInterval",
    "PGRWarning",
    "Paired",
    "accuracy",
    "agreement",
    "auroc",
    "correction_rate",
    "corruption_rate",
    "expected_calibration_error",
    "holm",
    "minimum_detectable_effect",
    "misfit_fit",
    "paired_difference",
    "pgr",
    "pgr_interval",
    "pgr_reason",
    "positive",
    "row_metrics",
    "t_interval",
]

NO_GAP = "ceiling <= weak: no performance gap to recover"
SMALL_GAP = 0.02
"""A ceiling - weak gap below this makes PGR swing wildly with small changes."""
TINY_GAP = f"ceiling - weak < {SMALL_GAP}: PGR is unstable"


class PGRWarning(UserWarning):
    """PGR is undefined (NaN) for some entries; the message says why."""


def _hard(values: Any) -> np.ndarray:
    array = np.asarray(values)
    if array.dtype == bool:
        return array
    if np.issubdtype(array.dtype, np.floating):
        if array.size and (np.nanmin(array) < 0 or np.nanmax(array) > 1):
            raise ValueError(
                "predictions must be probabilities in [0, 1] or hard {0, 1} labels; "
                "got values outside [0, 1] (logits? apply a sigmoid first)"
            )
        return positive(array)
    if not ((array == 0) | (array == 1)).all():
        raise ValueError("integer predictions and labels must be 0 or 1")
    return array.astype(bool)


def _masked_mean(hits: np.ndarray, rows: Any) -> np.ndarray:
    if rows is None:
        return hits.mean(axis=-1)
    rows = np.broadcast_to(np.asarray(rows, bool), hits.shape)
    count = rows.sum(axis=-1)
    if np.any(count == 0):
        raise ValueError("rows selects no examples for at least one probe")
    return (hits & rows).sum(axis=-1) / count


def accuracy(pred: Any, labels: Any, rows: Any = None) -> np.ndarray:
    """Share of rows where hardened predictions equal the labels.

    Args:
        pred: ``(..., n)`` probabilities or hard labels.
        labels: ``(n,)`` or ``(..., n)`` labels in {0, 1} (soft labels are hardened
            at 0.5).
        rows: optional bool ``(n,)`` or ``(..., n)``: rows to score.

    Returns:
        ``(...)`` accuracies in [0, 1].
    """
    return _masked_mean(_hard(pred) == _hard(labels), rows)


def agreement(a: Any, b: Any, rows: Any = None) -> np.ndarray:
    """Share of rows where two sets of hardened predictions agree.

    Args:
        a, b: ``(..., n)`` probabilities or hard labels, broadcastable.
        rows: optional bool rows to compare.

    Returns:
        ``(...)`` agreement in [0, 1].
    """
    return _masked_mean(_hard(a) == _hard(b), rows)


def pgr_reason(weak: Any, ceiling: Any) -> np.ndarray:
    """Why PGR is undefined or unreliable for each entry: ``""`` where the gap is
    at least :data:`SMALL_GAP`, :data:`TINY_GAP` below it, :data:`NO_GAP` where
    there is no gap (PGR NaN)."""
    gap = np.asarray(ceiling, np.float64) - np.asarray(weak, np.float64)
    return np.where(gap <= 0, NO_GAP, np.where(gap < SMALL_GAP, TINY_GAP, ""))


def pgr(weak: Any, student: Any, ceiling: Any, *, warn: bool = True) -> np.ndarray:
    """Performance gap recovered: ``(student - weak) / (ceiling - weak)``.

    Args:
        weak: weak supervisor performance (accuracy), broadcastable.
        student: weak-to-strong student performance.
        ceiling: strong ceiling performance (trained on ground truth).
        warn: emit a :class:`PGRWarning` naming the reason when entries are NaN.

    Returns:
        PGR as float64; NaN where ``ceiling <= weak`` (there is no gap to recover,
        see :func:`pgr_reason`).
    """
    weak, student, ceiling = (
        np.asarray(v, np.float64) for v in np.broadcast_arrays(weak, student, ceiling)
    )
    gap = ceiling - weak
    defined = gap > 0
    out = np.where(defined, (student - weak) / np.where(defined, gap, 1.0), np.nan)
    if warn and not np.all(defined):
        warnings.warn(
            f"PGR is NaN for {int((~defined).sum())} of {defined.size} entries: "
            f"{NO_GAP}",
            PGRWarning,
            stacklevel=2,
        )
    return out


def misfit_fit(gain: Any, misfit: Any) -> dict[str, float]:
    """How a study's gains line up with its misfits, across conditions.

    A descriptive fit, not a test of Charikar et al. (2024). Their theorem is about
    squared loss (Bregman divergences in later work): for a convex student class
    containing the target and a student that is the projection of the weak
    model's soft predictions onto that class, ``gain >= misfit`` in those losses
    (:mod:`probe_lab.theory` computes them). With accuracy (0-1 loss) on the same
    rows, ``acc(s) - acc(w) <= P(s != w)`` always, so ``share_above`` near 0 for
    accuracy gains and disagreement misfits is definitional, not evidence against
    the theorem.

    Args:
        gain: ``(N,)`` gains, one per condition (any loss; say which).
        misfit: ``(N,)`` the matching misfits (same loss).

    Returns:
        ``n`` (finite pairs), Pearson ``correlation``, least-squares ``slope`` and
        ``intercept`` of gain on misfit, and ``share_above`` (share of pairs with
        gain >= misfit); NaN where undefined (fewer than 2 pairs, no spread).
    """
    g = np.asarray(gain, np.float64).reshape(-1)
    m = np.asarray(misfit, np.float64).reshape(-1)
    ok = np.isfinite(g) & np.isfinite(m)
    g, m = g[ok], m[ok]
    nan = float("nan")
    out = dict(n=float(g.size), correlation=nan, slope=nan, intercept=nan)
    out["share_above"] = float((g >= m).mean()) if g.size else nan
    if g.size >= 2 and m.std() > 0:
        slope, intercept = np.polyfit(m, g, 1)
        out.update(slope=float(slope), intercept=float(intercept))
        if g.std() > 0:
            out["correlation"] = float(np.corrcoef(m, g)[0, 1])
    return out


# ----------------------------------------------------------------- intervals
#
# Every interval the project reports comes from the three functions below
# (``t_interval``, ``pgr_interval``, ``paired_difference``); their coverage at 3-10
# seeds is checked by simulation in tests/test_intervals.py and tabled in
# docs/statistics.md (``benchmarks/coverage.py``).


class Interval(NamedTuple):
    """A point estimate with its two-sided interval (arrays over leading axes)."""

    mean: Any
    low: Any
    high: Any


class PGRInterval(NamedTuple):
    """PGR of mean performances with Fieller's interval (:func:`pgr_interval`)."""

    pgr: Any
    """``mean(student - weak) / mean(ceiling - weak)``; NaN where undefined."""
    low: Any
    high: Any
    reason: Any
    """``""`` where defined, else why not (:data:`UNDEFINED`, :data:`NO_GAP`,
    :data:`FEW_SEEDS`)."""


class Paired(NamedTuple):
    """A paired per-seed difference ``a - b`` (:func:`paired_difference`)."""

    mean: Any
    low: Any
    high: Any
    p_value: Any
    """Two-sided p-value of the paired t-test of ``mean(a - b) = 0``."""
    sd: Any
    """Standard deviation (``ddof=1``) of the per-seed differences."""
    seeds: Any
    """Finite pairs used."""


UNDEFINED = "the gap's t-interval includes 0: PGR undefined at this precision"
FEW_SEEDS = "fewer than 2 seeds: no interval"


def _t_quantile(confidence: float, dof: Any) -> np.ndarray:
    from scipy import stats

    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    dof = np.asarray(dof, np.float64)
    safe = np.where(dof >= 1, dof, 1.0)
    return np.where(dof >= 1, stats.t.ppf(0.5 + confidence / 2, safe), np.nan)


def _seed_moments(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Count, mean and variance (``ddof=1``) of the finite values along the last
    axis; NaN mean without values, NaN variance with fewer than 2."""
    finite = np.isfinite(x)
    n = finite.sum(axis=-1)
    z = np.where(finite, x, 0.0)
    mean = np.where(n > 0, z.sum(axis=-1) / np.maximum(n, 1), np.nan)
    dev = np.where(finite, x - mean[..., None], 0.0)
    var = np.where(n > 1, (dev**2).sum(axis=-1) / np.maximum(n - 1, 1), np.nan)
    return n, mean, var


def _out(value: np.ndarray) -> Any:
    """Numpy scalar (a ``float``) for 0-d results, the array otherwise."""
    return value[()] if value.ndim == 0 else value


def t_interval(values: Any, *, confidence: float = 0.95) -> Interval:
    """Mean and Student-t interval over independent repetitions (seeds).

    ``mean +- t_{S-1} * sd / sqrt(S)``: exact coverage for normal per-seed values
    at any seed count; with 3-10 seeds ``1.96`` standard errors (or a percentile
    bootstrap) is too narrow (at 5 seeds the bootstrap covers 0.78-0.85 for a
    claimed 95%). Simulated coverage, normal and skewed: docs/statistics.md.

    Args:
        values: ``(..., S)`` one value per seed along the last axis (NaNs dropped).
        confidence: central coverage.

    Returns:
        :class:`Interval` ``(mean, low, high)`` of shape ``(...)`` (floats for
        ``(S,)``); NaN bounds with fewer than 2 finite values, NaN mean with none.
    """
    x = np.asarray(values, np.float64)
    n, mean, var = _seed_moments(x)
    half = _t_quantile(confidence, n - 1) * np.sqrt(var / np.maximum(n, 1))
    return Interval(_out(mean), _out(mean - half), _out(mean + half))


def paired_difference(a: Any, b: Any, *, confidence: float = 0.95) -> Paired:
    """The paired per-seed difference ``a - b`` with its t-interval and p-value.

    Pairing removes what the two conditions share within a seed (split, weak
    labels, minibatch order), so it is the test for "A beats B" whenever both ran
    on the same seeds; seeds where either value is NaN are dropped.

    Args:
        a, b: ``(..., S)`` one value per seed along the last axis, same seeds.
        confidence: central coverage of the interval.

    Returns:
        :class:`Paired` ``(mean, low, high, p_value, sd, seeds)``; the interval is
        :func:`t_interval` of the differences; the p-value is the two-sided paired
        t-test's (0 or 1 where all differences are equal: no spread).
    """
    from scipy import stats

    a, b = np.broadcast_arrays(np.asarray(a, np.float64), np.asarray(b, np.float64))
    diff = a - b
    n, _, var = _seed_moments(diff)
    mean, low, high = t_interval(diff, confidence=confidence)
    mean = np.asarray(mean)
    sd = np.sqrt(var)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = mean / (sd / np.sqrt(n))
        t = np.where(sd > 0, t, np.where(mean == 0, 0.0, np.inf))
    dof = np.where(n > 1, n - 1, 1)
    p = np.where(n > 1, 2 * stats.t.sf(np.abs(t), dof), np.nan)
    return Paired(_out(mean), low, high, _out(p), _out(sd), _out(n))


def pgr_interval(
    weak: Any, student: Any, ceiling: Any, *, confidence: float = 0.95
) -> PGRInterval:
    """PGR of mean performances over seeds with Fieller's interval.

    The estimand is the paper's PGR of averaged performances,
    ``rho = E[student - weak] / E[ceiling - weak]``, estimated by the ratio of the
    mean per-seed gain to the mean per-seed gap (paired within each seed). Why
    Fieller's interval: it inverts the t-test of ``E[gain] - rho * E[gap] = 0``,
    whose per-seed values ``gain - rho * gap`` are a paired difference, so its
    coverage is exact for normal per-seed values at any seed count (no
    linearization as in the delta method, no resampling that needs many seeds as
    the bootstrap does). The set is a bounded interval exactly when the gap's own
    t-interval excludes 0; otherwise it is unbounded, and the result says
    :data:`UNDEFINED` with NaN bounds instead of dropping anything. A mean PGR of
    per-seed ratios is not used: seeds with small gaps dominate it.

    Args:
        weak, student, ceiling: ``(..., S)`` accuracies per seed (last axis),
            paired: entry ``s`` of each comes from seed ``s``.
        confidence: central coverage.

    Returns:
        :class:`PGRInterval` ``(pgr, low, high, reason)`` of shape ``(...)``:
        NaN bounds (and NaN ``pgr`` where the mean gap is not positive) with the
        reason where PGR is undefined.
    """
    w, s, c = (np.asarray(v, np.float64) for v in (weak, student, ceiling))
    w, s, c = np.broadcast_arrays(w, s, c)
    gain, gap = s - w, c - w
    ok = np.isfinite(gain) & np.isfinite(gap)
    gain, gap = np.where(ok, gain, np.nan), np.where(ok, gap, np.nan)
    n, a, v11 = _seed_moments(gain)
    _, b, v22 = _seed_moments(gap)
    dev = (np.nan_to_num(gain - a[..., None])) * np.nan_to_num(gap - b[..., None])
    v12 = dev.sum(axis=-1) / np.maximum(n - 1, 1)
    t2 = _t_quantile(confidence, n - 1) ** 2
    m = np.maximum(n, 1)
    v11, v22, v12 = v11 / m, v22 / m, v12 / m
    lead = b**2 - t2 * v22  # > 0 iff the gap's t-interval excludes 0
    mid = a * b - t2 * v12
    with np.errstate(invalid="ignore", divide="ignore"):
        root = np.sqrt(np.maximum(mid**2 - lead * (a**2 - t2 * v11), 0.0))
        low, high = (mid - root) / lead, (mid + root) / lead
        point = np.where(b > 0, a / b, np.nan)
    reason = np.where(
        n < 2,
        FEW_SEEDS,
        np.where(b <= 0, NO_GAP, np.where((lead > 0) & (b > 0), "", UNDEFINED)),
    )
    defined = reason == ""
    low, high = np.where(defined, low, np.nan), np.where(defined, high, np.nan)
    return PGRInterval(_out(point), _out(low), _out(high), _out(reason))


def holm(p_values: Any) -> np.ndarray:
    """Holm's step-down adjusted p-values over one family of tests.

    Sort the ``m`` p-values ascending; the ``i``-th smallest (from 0) is multiplied
    by ``m - i``, then made non-decreasing along the order and capped at 1. A test
    is rejected at family-wise error ``alpha`` when its adjusted p-value is at
    most ``alpha``: this controls the chance of any false rejection in the family
    under any dependence between the tests. NaN p-values stay NaN and are not
    counted in ``m``.

    Args:
        p_values: ``(m,)`` p-values of one family.

    Returns:
        ``(m,)`` adjusted p-values, in the input order.
    """
    p = np.asarray(p_values, np.float64).reshape(-1)
    finite = np.flatnonzero(np.isfinite(p))
    out = np.full(p.shape, np.nan)
    order = finite[np.argsort(p[finite], kind="stable")]
    m = order.size
    scaled = p[order] * (m - np.arange(m))
    out[order] = np.minimum(np.maximum.accumulate(scaled), 1.0)
    return out


def minimum_detectable_effect(
    sd: Any, seeds: int, *, alpha: float = 0.05, power: float = 0.8
) -> Any:
    """The smallest true mean paired difference a two-sided paired t-test over
    ``seeds`` seeds detects with the given power at level ``alpha``.

    Solves ``P(|T| > t_{1-alpha/2, S-1}) = power`` for the noncentral t
    distribution with ``S - 1`` degrees of freedom and noncentrality
    ``effect * sqrt(S) / sd``; for many seeds it tends to
    ``(z_{1-alpha/2} + z_{power}) * sd / sqrt(S)`` (2.80 sd / sqrt(S) at the
    defaults).

    Args:
        sd: standard deviation of the per-seed paired differences (array allowed).
        seeds: seed count ``S >= 2``.
        alpha: two-sided level (pass ``alpha / m`` for the strictest step of
            Holm's correction over ``m`` tests).
        power: probability of detection.

    Returns:
        The effect in the units of ``sd`` (NaN where ``sd`` is NaN).
    """
    from scipy import optimize, stats

    if seeds < 2:
        raise ValueError(f"the minimum detectable effect needs seeds >= 2, got {seeds}")
    dof = seeds - 1
    crit = stats.t.ppf(1 - alpha / 2, dof)

    def gap(delta: float) -> float:
        # the far lower tail can come back NaN where it underflows: it is 0 there
        lower = np.nan_to_num(stats.nct.cdf(-crit, dof, delta))
        return stats.nct.sf(crit, dof, delta) + lower - power

    high = crit + 4.0
    while gap(high) < 0:  # power rises with the noncentrality
        high *= 2
    delta = optimize.brentq(gap, 0.0, high)
    return np.asarray(sd, np.float64) * delta / np.sqrt(seeds)


# ------------------------------------------------------------ per-row metrics


def _conditional_rate(hits: np.ndarray, given: np.ndarray) -> np.ndarray:
    count = given.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, (hits & given).sum(axis=-1) / count, np.nan)


def _rows(rows: Any, shape: tuple[int, ...]) -> np.ndarray:
    if rows is None:
        return np.ones(shape, bool)
    return np.broadcast_to(np.asarray(rows, bool), shape)


def correction_rate(student: Any, weak: Any, labels: Any, rows: Any = None) -> Any:
    """Share of the rows the weak labels got wrong that the student gets right.

    With :func:`corruption_rate` it splits the gain exactly:
    ``acc(student) - acc(weak) = correction * (1 - acc(weak)) - corruption *
    acc(weak)`` on the same rows.

    Args:
        student, weak: ``(..., n)`` probabilities or hard labels (hardened at 0.5).
        labels: ``(n,)`` or ``(..., n)`` ground truth in {0, 1}.
        rows: optional bool rows to score.

    Returns:
        ``(...)`` rates in [0, 1]; NaN where the weak labels make no error.
    """
    truth = _hard(labels)
    student_right = _hard(student) == truth
    weak_wrong = _hard(weak) != truth
    shape = np.broadcast_shapes(student_right.shape, weak_wrong.shape)
    given = np.broadcast_to(weak_wrong, shape) & _rows(rows, shape)
    return _out(_conditional_rate(np.broadcast_to(student_right, shape), given))


def corruption_rate(student: Any, weak: Any, labels: Any, rows: Any = None) -> Any:
    """Share of the rows the weak labels got right that the student gets wrong.

    Args and returns as :func:`correction_rate` (NaN where the weak labels make no
    correct prediction).
    """
    truth = _hard(labels)
    student_wrong = _hard(student) != truth
    weak_right = _hard(weak) == truth
    shape = np.broadcast_shapes(student_wrong.shape, weak_right.shape)
    given = np.broadcast_to(weak_right, shape) & _rows(rows, shape)
    return _out(_conditional_rate(np.broadcast_to(student_wrong, shape), given))


def auroc(scores: Any, labels: Any, rows: Any = None) -> Any:
    """Area under the ROC curve of scores against binary labels, batched.

    The Mann-Whitney form: the probability that a random positive row scores
    above a random negative one, ties counted one half (mid-ranks), which equals
    ``sklearn.metrics.roc_auc_score``.

    Args:
        scores: ``(..., n)`` probabilities or logits (any monotone score).
        labels: ``(n,)`` or ``(..., n)`` labels in {0, 1}.
        rows: optional bool rows to score.

    Returns:
        ``(...)`` AUROC in [0, 1]; NaN where the rows hold one class only.
    """
    from scipy import stats

    s = np.asarray(scores, np.float64)
    y = _hard(labels)
    shape = np.broadcast_shapes(s.shape, y.shape)
    use = _rows(rows, shape) & np.isfinite(np.broadcast_to(s, shape))
    pos = np.broadcast_to(y, shape) & use
    n1, n0 = pos.sum(axis=-1), (use & ~pos).sum(axis=-1)
    # Ranked only among each score vector's used rows: vectors that use the same
    # rows (a seed's test rows) are ranked together on those columns alone.
    n = shape[-1] if shape else 1
    s2 = np.broadcast_to(s, shape).reshape(-1, n)
    use2, pos2 = use.reshape(-1, n), pos.reshape(-1, n)
    _, first, which = np.unique(
        np.packbits(use2, axis=1), axis=0, return_index=True, return_inverse=True
    )
    rank_sum = np.zeros(s2.shape[0])
    for i, row in enumerate(first):
        members = np.flatnonzero(which.reshape(-1) == i)
        cols = np.flatnonzero(use2[row])
        ranks = stats.rankdata(s2[members][:, cols], axis=-1)
        rank_sum[members] = (ranks * pos2[members][:, cols]).sum(axis=-1)
    rank_sum = rank_sum.reshape(shape[:-1])
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (rank_sum - n1 * (n1 + 1) / 2) / (n1 * n0)
    return _out(np.where((n1 > 0) & (n0 > 0), out, np.nan))


def expected_calibration_error(
    proba: Any, labels: Any, rows: Any = None, *, bins: int = 10
) -> Any:
    """Expected calibration error of predicted probabilities of class 1.

    Binning: ``bins`` equal-width bins of the predicted probability ``p`` of
    class 1 on [0, 1] (bin ``min(floor(p * bins), bins - 1)``, so ``p = 1`` falls
    in the last); ECE is the row-weighted mean over non-empty bins of
    ``|share of label 1 - mean p|``. (Class-1 binning, not top-label confidence.)

    Args:
        proba: ``(..., n)`` probabilities in [0, 1].
        labels: ``(n,)`` or ``(..., n)`` labels in {0, 1}.
        rows: optional bool rows to score.
        bins: number of bins.

    Returns:
        ``(...)`` ECE in [0, 1].
    """
    p = np.asarray(proba, np.float64)
    if p.size and (np.nanmin(p) < 0 or np.nanmax(p) > 1):
        raise ValueError("proba must be probabilities in [0, 1] (apply a sigmoid)")
    if bins < 1:
        raise ValueError(f"bins must be at least 1, got {bins}")
    y = _hard(labels).astype(np.float64)
    shape = np.broadcast_shapes(p.shape, y.shape)
    use = _rows(rows, shape)
    p, y = np.broadcast_to(p, shape), np.broadcast_to(y, shape)
    lost = (np.isnan(p) & use).any(axis=-1)  # a NaN probability: no ECE
    # Per score vector and bin: the used rows' count and summed (label - p), one
    # bincount over (vector, bin) indices of the used entries alone.
    n = shape[-1] if shape else 1
    vectors = int(np.prod(shape[:-1], dtype=np.int64))
    vector, row = np.nonzero(use.reshape(-1, n))
    p_used = np.nan_to_num(p.reshape(-1, n)[vector, row])
    y_used = y.reshape(-1, n)[vector, row]
    index = vector * bins + np.minimum((p_used * bins).astype(np.int64), bins - 1)

    def per_bin(weights: np.ndarray | None) -> np.ndarray:
        total = np.bincount(index, weights, minlength=vectors * bins)
        return total.reshape((*shape[:-1], bins))

    count = per_bin(None)
    gap = np.abs(per_bin(y_used - p_used))
    ece = gap.sum(axis=-1) / np.maximum(count.sum(axis=-1), 1)
    return _out(np.where(lost, np.nan, ece))


def row_metrics(
    student: Any, weak: Any, labels: Any, rows: Any = None, *, bins: int = 10
) -> dict[str, Any]:
    """The per-row columns of a student table in one call.

    Args:
        student: ``(..., n)`` the students' probabilities.
        weak: ``(..., n)`` their weak labels (probabilities or hard).
        labels: ``(n,)`` or ``(..., n)`` ground truth.
        rows: optional bool rows to score (the test rows).
        bins: bins of :func:`expected_calibration_error`.

    Returns:
        ``correction``, ``corruption`` (:func:`correction_rate`,
        :func:`corruption_rate`), ``auroc`` and ``ece`` of the students, each
        ``(...)``.
    """
    return dict(
        correction=correction_rate(student, weak, labels, rows),
        corruption=corruption_rate(student, weak, labels, rows),
        auroc=auroc(student, labels, rows),
        ece=expected_calibration_error(student, labels, rows, bins=bins),
    )
