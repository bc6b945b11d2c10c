"""Synthetic structures: weak labels with a chosen error structure at an exact
accuracy, and the supervisor kinds ``random``, ``longest`` and ``shortest``
(``strong_*`` in :mod:`~probe_lab.supervisors.strong`, ``mixture`` in
:mod:`~probe_lab.supervisors.mixture`).

Burns et al. (2023), Appendix E.2, compare weak supervisors whose errors have
different structure at the SAME weak accuracy. Every maker here starts from the
ground truth on a set of rows and flips exactly ``round((1 - accuracy) * m)`` of the
``m`` rows, choosing them by a priority that defines the structure:

* ``random``: uniformly at random (unsimulatable noise);
* ``longest`` / ``shortest``: the longest / shortest prompts (in characters);
* ``strong_unconfident``: where the strong ceiling's logit is closest to 0;
* ``strong_confident_correct``: where the strong ceiling is correct with the largest
  margin (the errors hide where the strong model is surest);
* ``mixture``: a share ``level`` of the errors are random flips of rows a simulatable
  supervisor (an M_k probe) got right, the rest are a random subset of that
  supervisor's own errors: ``level = 0`` reproduces the simulatable labels (at their
  accuracy), ``level = 1`` is pure random noise.

Ties in a priority are broken at random with the given generator, so two rows of
equal length are equally likely to be flipped.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from probe_lab import metrics
from probe_lab.supervisors.base import (
    LabelContext,
    StudyError,
    Supervisor,
    WeakLabels,
    reference_name,
    register_supervisor,
)

__all__ = [
    "MAKERS",
    "PRIORITY",
    "Matched",
    "check_matched",
    "flip_by_priority",
    "flips",
    "make_weak_labels",
    "mixture_labels",
    "n_flips",
    "synthetic",
    "target_accuracy",
]

MAKERS = (
    "random",
    "longest",
    "shortest",
    "strong_unconfident",
    "strong_confident_correct",
)


def n_flips(accuracy: float, m: int) -> int:
    """Rows to flip so that ``m`` rows reach ``accuracy`` exactly (to the row)."""
    if not 0.5 < accuracy <= 1.0:
        raise ValueError(
            f"target weak accuracy must lie in (0.5, 1], got {accuracy}: below 0.5 "
            f"a weak supervisor is worse than its own negation"
        )
    return int(round((1.0 - accuracy) * m))


def flip_by_priority(
    truth: np.ndarray,
    rows: np.ndarray,
    priority: np.ndarray,
    accuracy: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Flip the highest-priority rows of ``rows`` to reach ``accuracy`` exactly.

    Args:
        truth: ``(n,)`` labels in {0, 1}.
        rows: ``(m,)`` integer indices of the rows being labelled.
        priority: ``(n,)`` flip priority (higher flips first); ties broken at random.
        accuracy: target accuracy on ``rows``.
        rng: generator for tie-breaking.

    Returns:
        ``(n,)`` int8 labels: ``truth`` with the chosen rows flipped.
    """
    labels = truth.astype(np.int8).copy()
    k = n_flips(accuracy, rows.size)
    tie = rng.random(rows.size)
    order = np.lexsort((tie, -priority[rows]))  # by priority desc, then random
    flipped = rows[order[:k]]
    labels[flipped] = 1 - labels[flipped]
    return labels


def _random(truth, rng, n_chars, strong_logits):
    return rng.random(truth.size)


def _longest(truth, rng, n_chars, strong_logits):
    return n_chars.astype(np.float64)


def _shortest(truth, rng, n_chars, strong_logits):
    return -n_chars.astype(np.float64)


def _strong_unconfident(truth, rng, n_chars, strong_logits):
    return -np.abs(strong_logits)


def _strong_confident_correct(truth, rng, n_chars, strong_logits):
    return strong_logits * (2.0 * truth - 1.0)  # > 0 where the ceiling is right


PRIORITY = {
    "random": (_random, None),
    "longest": (_longest, "n_chars"),
    "shortest": (_shortest, "n_chars"),
    "strong_unconfident": (_strong_unconfident, "strong_logits"),
    "strong_confident_correct": (_strong_confident_correct, "strong_logits"),
}
"""Each structure's flip priority (higher flips first) and what it reads."""


def make_weak_labels(
    kind: str,
    truth: np.ndarray,
    rows: np.ndarray,
    accuracy: float,
    rng: np.random.Generator,
    *,
    n_chars: np.ndarray | None = None,
    strong_logits: np.ndarray | None = None,
) -> np.ndarray:
    """Weak labels of one of the :data:`MAKERS` structures on ``rows``.

    Args:
        kind: one of :data:`MAKERS`.
        truth: ``(n,)`` ground-truth labels.
        rows: indices of the rows to label (other rows keep the truth).
        accuracy: exact target accuracy on ``rows``.
        rng: generator (random flips, tie-breaking).
        n_chars: ``(n,)`` prompt lengths, for ``longest`` / ``shortest``.
        strong_logits: ``(n,)`` the strong ceiling's logits, for the ``strong_*``
            structures.

    Returns:
        ``(n,)`` int8 weak labels.
    """
    if kind not in PRIORITY:
        raise ValueError(f"unknown weak-label structure {kind!r}; one of {MAKERS}")
    priority, needs = PRIORITY[kind]
    given = dict(n_chars=n_chars, strong_logits=strong_logits)
    if needs is not None and given[needs] is None:
        what = (
            "prompt lengths (n_chars)"
            if needs == "n_chars"
            else ("the strong ceiling's logits")
        )
        raise ValueError(f"weak labels {kind!r} need {what}")
    order = priority(truth, rng, n_chars, strong_logits)
    return flip_by_priority(truth, rows, order, accuracy, rng)


def mixture_labels(
    truth: np.ndarray,
    simulatable: np.ndarray,
    rows: np.ndarray,
    accuracy: float,
    level: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Mix a simulatable supervisor's errors with random flips at an exact accuracy.

    Args:
        truth: ``(n,)`` ground truth.
        simulatable: ``(n,)`` hard labels of a simulatable supervisor (an M_k probe).
        rows: rows to label.
        accuracy: exact target accuracy on ``rows``.
        level: share of the errors that are random flips (0: all errors are the
            supervisor's own, 1: all random).
        rng: generator.

    Returns:
        ``(n,)`` int8 labels with exactly ``n_flips(accuracy, len(rows))`` errors on
        ``rows``.
    """
    if not 0.0 <= level <= 1.0:
        raise ValueError(f"mixture level must lie in [0, 1], got {level}")
    total = n_flips(accuracy, rows.size)
    n_random = int(round(level * total))
    n_own = total - n_random
    wrong = rows[simulatable[rows] != truth[rows]]
    right = rows[simulatable[rows] == truth[rows]]
    if n_own > wrong.size:
        raise ValueError(
            f"mixture at accuracy {accuracy:.4f} and level {level} needs {n_own} of "
            f"the simulatable supervisor's errors but it makes only {wrong.size} on "
            f"these rows: raise the level, the target accuracy, or use a weaker M_k"
        )
    labels = truth.astype(np.int8).copy()
    flipped = np.concatenate(
        [
            rng.choice(wrong, n_own, replace=False),
            rng.choice(right, n_random, replace=False),
        ]
    )
    labels[flipped] = 1 - labels[flipped]
    return labels


# ------------------------------------------------------------- the kinds


@dataclasses.dataclass(frozen=True, kw_only=True)
class Matched:
    """The accuracy a synthetic structure is made at."""

    accuracy: float | None = None
    """Target weak accuracy in (0.5, 1]; default: the accuracy of ``match`` (or of
    the reference probe) on the student split, per seed."""
    match: str = ""
    """The supervisor (by name) whose weak-label accuracy to match, e.g. a rule or
    another model's probe (default: the study's reference probe)."""

    def __post_init__(self) -> None:
        if self.accuracy is not None and not 0.5 < self.accuracy <= 1:
            raise StudyError(f"accuracy must lie in (0.5, 1], got {self.accuracy}")


def check_matched(sup: Supervisor, supervisors: Sequence[Supervisor]) -> None:
    """``match`` names another supervisor that matches none itself; without
    ``accuracy`` or ``match`` the study needs a reference probe."""
    s = sup.settings
    if not supervisors:
        return
    names = [t.label for t in supervisors]
    if s.match and s.match not in names:
        raise StudyError(
            f"supervisor {sup.label}: match {s.match!r} is not a supervisor "
            f"name ({sorted(names)})"
        )
    if s.match:
        target = next(t for t in supervisors if t.label == s.match)
        if getattr(target.settings, "match", ""):
            raise StudyError(
                f"supervisor {sup.label}: match {s.match!r} itself matches "
                f"another supervisor; match that one"
            )
    if s.accuracy is None and not s.match and not reference_name(supervisors):
        raise StudyError(
            f"supervisor {sup.label} matches a reference probe's accuracy but "
            f"there is no probe supervisor: add one or set accuracy= on it"
        )


def target_accuracy(
    sup: Supervisor, ctx: LabelContext, rows: np.ndarray | None = None
) -> float:
    """``accuracy``, or the accuracy on ``rows`` (bool, default the labelled rows)
    of the supervisor ``match`` names, or of the reference probe (clipped into
    (0.5, 1]).

    The matching rule: a structure matched to another supervisor reaches that
    supervisor's accuracy on each row set it labels, measured on the same rows:
    on the labelled rows its labelled-row accuracy, on the test rows its test
    accuracy (each to the row, :func:`flips`), so ``weak_acc`` (the test accuracy,
    for every kind) of a matched structure equals its reference's to one row.
    """
    s = sup.settings
    if s.accuracy is not None:
        return float(s.accuracy)
    labels = ctx.made[s.match].hard if s.match else ctx.proba[ctx.reference]
    rows = ctx.labelled if rows is None else rows
    acc = float(metrics.accuracy(labels, ctx.truth, rows))
    return min(max(acc, 0.5 + 1e-9), 1.0)


def synthetic(hard: np.ndarray, target: float, ctx: LabelContext) -> WeakLabels:
    """Hard labels made at a target accuracy; ``weak_acc`` is their accuracy on
    the test rows (the test target, to the row), as for every other kind;
    ``target_acc`` the test-row target."""
    return WeakLabels(
        targets=hard,
        hard=hard,
        weak_acc=ctx.test_accuracy(hard),
        target_acc=target,
    )


def flips(
    sup: Supervisor, ctx: LabelContext, strong_logits: np.ndarray | None = None
) -> WeakLabels:
    """Ground truth with exactly the flips of a structure, on the labelled rows and
    on the test rows separately (so agreement is measured on test), each at the
    target accuracy on those rows (:func:`target_accuracy`)."""
    hard = ctx.truth.copy()
    for mask, rows in ((ctx.labelled, ctx.label_rows), (ctx.test, ctx.test_rows)):
        target = target_accuracy(sup, ctx, mask)
        made = make_weak_labels(
            sup.kind,
            ctx.truth,
            rows,
            target,
            ctx.rng,
            n_chars=ctx.data.n_chars,
            strong_logits=strong_logits,
        )
        hard[rows] = made[rows]
    return synthetic(hard, target, ctx)


for _name in ("random", "longest", "shortest"):
    register_supervisor(_name, settings=Matched, check_study=check_matched)(flips)
