"""Accuracy, agreement, performance gap recovered (PGR) and bootstrap intervals.

Every function is vectorized over leading axes: predictions ``(P, n)`` give ``(P,)``
results; ``(n,)`` gives a scalar. Predictions may be probabilities (hardened at 0.5),
logits are not accepted (harden them first).

One rule makes a hard prediction everywhere in probe-lab: label 1 iff ``p >= 0.5``,
i.e. iff ``logit >= 0`` (:func:`positive`; :func:`probe_lab.probes.positive_logit`
for logits, in the trainer, the evaluation and ``Probes.predict``).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from probe_lab.probes import positive

__all__ = [
    "PGRWarning",
    "accuracy",
    "agreement",
    "bootstrap_interval",
    "bootstrap_pgr",
    "bootstrap_pgr_samples",
    "misfit_fit",
    "pgr",
    "pgr_reason",
    "positive",
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
    if not np.isin(array, (0, 1)).all():
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


def bootstrap_interval(
    values: Any,
    *,
    statistic: Callable[[np.ndarray], Any] = np.mean,
    confidence: float = 0.95,
    n_boot: int = 10_000,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of a statistic over seeds (axis 0).

    Args:
        values: ``(S,)`` one value per seed (NaNs are dropped).
        statistic: called as ``statistic(resamples, axis=1)`` on the resampled
            ``(n_boot, S)`` array; defaults to the mean.
        confidence: central coverage of the interval.
        n_boot: bootstrap resamples.
        seed: seed of the resampling generator.

    Returns:
        ``(low, high)``; ``(nan, nan)`` with fewer than 2 finite values.
    """
    x = np.asarray(values, np.float64).reshape(-1)
    x = x[np.isfinite(x)]
    if x.size < 2:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, x.size, size=(n_boot, x.size))
    stats = np.asarray(statistic(x[idx], axis=1))
    tail = (1 - confidence) / 2
    low, high = np.quantile(stats, [tail, 1 - tail])
    return float(low), float(high)


def bootstrap_pgr_samples(
    weak: Any,
    student: Any,
    ceiling: Any,
    *,
    n_boot: int = 10_000,
    seed: int = 0,
) -> tuple[np.ndarray, int]:
    """PGR of resampled seeds: each resample draws seeds with replacement and
    takes the PGR of the mean weak, student and ceiling accuracies over them.

    Returns:
        ``(values, dropped)``: the finite PGRs, and how many resamples had no gap
        (ceiling <= weak, PGR undefined) and were dropped.
    """
    w, s, c = (np.asarray(v, np.float64).reshape(-1) for v in (weak, student, ceiling))
    if not w.size == s.size == c.size:
        raise ValueError(
            f"weak, student and ceiling need one value per seed each, got sizes "
            f"{w.size}, {s.size}, {c.size}"
        )
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, w.size, size=(n_boot, w.size))
    values = pgr(w[idx].mean(1), s[idx].mean(1), c[idx].mean(1), warn=False)
    finite = values[np.isfinite(values)]
    return finite, int(values.size - finite.size)


def bootstrap_pgr(
    weak: Any,
    student: Any,
    ceiling: Any,
    *,
    confidence: float = 0.95,
    n_boot: int = 10_000,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of PGR over seeds, resampling seeds jointly
    (the paper's PGR of averaged performances, :func:`bootstrap_pgr_samples`).

    Resamples without a gap are dropped; a :class:`PGRWarning` says how many (the
    interval then covers only resamples where PGR exists).

    Args:
        weak, student, ceiling: ``(S,)`` accuracies per seed.

    Returns:
        ``(low, high)``; NaN bounds when fewer than 2 seeds or no resample has a gap.
    """
    values, dropped = bootstrap_pgr_samples(
        weak, student, ceiling, n_boot=n_boot, seed=seed
    )
    if np.asarray(weak).size < 2 or values.size == 0:
        return (float("nan"), float("nan"))
    if dropped:
        warnings.warn(
            f"{dropped} of {n_boot} bootstrap resamples had no gap (ceiling <= "
            f"weak) and were dropped from the PGR interval",
            PGRWarning,
            stacklevel=2,
        )
    tail = (1 - confidence) / 2
    low, high = np.quantile(values, [tail, 1 - tail])
    return float(low), float(high)


def misfit_fit(gain: Any, misfit: Any) -> dict[str, float]:
    """How a study's gains line up with its misfits (Charikar et al. 2024).

    For a convex student class, the student's gain over its supervisor is at least
    its misfit to the weak labels; across conditions the two should rise together.

    Args:
        gain: ``(N,)`` student accuracy minus weak accuracy, one per condition.
        misfit: ``(N,)`` the student's disagreement with the weak labels.

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


def t_interval(values: Any, *, confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean and Student-t interval over independent repetitions (seeds).

    With the 3-10 seeds of a study, ``1.96`` standard errors is too narrow; the
    t-quantile with ``n - 1`` degrees of freedom is the right width when the
    per-seed values are roughly normal. NaNs are dropped.

    Args:
        values: ``(S,)`` one value per seed.
        confidence: central coverage.

    Returns:
        ``(mean, low, high)``; NaN bounds with fewer than 2 finite values.
    """
    from scipy import stats

    x = np.asarray(values, np.float64).reshape(-1)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return (float("nan"),) * 3
    mean = float(x.mean())
    if x.size < 2:
        return mean, float("nan"), float("nan")
    half = (
        stats.t.ppf(0.5 + confidence / 2, x.size - 1) * x.std(ddof=1) / np.sqrt(x.size)
    )
    return mean, mean - float(half), mean + float(half)
