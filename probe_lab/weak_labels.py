"""Synthetic weak labels with a chosen error structure at an exact accuracy.

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

import numpy as np

__all__ = [
    "MAKERS",
    "flip_by_priority",
    "make_weak_labels",
    "mixture_labels",
    "n_flips",
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
    if kind == "random":
        priority = rng.random(truth.size)
    elif kind in ("longest", "shortest"):
        if n_chars is None:
            raise ValueError(f"weak labels {kind!r} need prompt lengths (n_chars)")
        priority = n_chars.astype(np.float64) * (1 if kind == "longest" else -1)
    elif kind in ("strong_unconfident", "strong_confident_correct"):
        if strong_logits is None:
            raise ValueError(f"weak labels {kind!r} need the strong ceiling's logits")
        margin = strong_logits * (2.0 * truth - 1.0)  # > 0 where the ceiling is right
        priority = -np.abs(strong_logits) if kind == "strong_unconfident" else margin
    else:
        raise ValueError(f"unknown weak-label structure {kind!r}; one of {MAKERS}")
    return flip_by_priority(truth, rows, priority, accuracy, rng)


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
