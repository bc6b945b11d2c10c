"""``strong_unconfident`` and ``strong_confident_correct``: flips where the strong
ceiling is least confident, or most confidently correct.

The ranking is out of fold: stage 1 trains ``strong_folds`` ceiling probes per seed
(:func:`fold_probes`), probe f learning only from the labelled rows outside fold f;
each labelled row is ranked by the probe that never saw it, every other row (test,
weak split) by the mean logit of the fold probes (:func:`ranking`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np

from probe_lab.supervisors.base import (
    LabelContext,
    SeedAsk,
    Supervisor,
    WeakLabels,
    WeakProbe,
    register_supervisor,
)
from probe_lab.supervisors.synthetic import Matched, check_matched, flips

__all__ = ["Ranking", "fold_of", "fold_probes", "ranking"]


@dataclasses.dataclass(frozen=True)
class Ranking:
    """Out-of-fold logits of strong ceiling probes for one seed."""

    logits: np.ndarray  # (n,) the logit that ranks each row
    source: np.ndarray  # (n,) int: the fold probe whose logit it is (-1: mean)
    folds_train: np.ndarray  # (K, n) bool: the rows each fold probe trained on


def fold_of(folds: int, data: Any, seed: int) -> np.ndarray:
    """``(n,)`` the ranking fold of each labelled row of a seed (-1 elsewhere).

    Folds are dealt within the student training rows and within its validation
    rows separately, so each fold keeps the split's train / validation balance."""
    sp = data.splits
    rng = np.random.default_rng([seed, 7])
    fold = np.full(data.n, -1)
    for split in ("student_train", "student_val"):
        order = rng.permutation(np.flatnonzero(sp[split][seed]))
        fold[order] = np.arange(order.size) % folds
    return fold


def fold_probes(sup: Supervisor, ask: SeedAsk) -> tuple[WeakProbe, ...]:
    """The K ceiling probes whose out-of-fold logits rank rows: probe f learns
    only from the labelled rows outside fold f.

    They share the ceilings' row sets and minibatch order, with weight 0 on their
    own fold's rows (no gradient, no say in early stopping), so they train in the
    ceilings' piece: the same products, not pieces of their own."""
    del sup
    folds = ask.study.strong_folds
    fold = fold_of(folds, ask.data, ask.seed)
    return tuple(
        WeakProbe(f"ranking_{f}", ask.k, weight=(fold != f).astype(np.float32))
        for f in range(folds)
    )


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p.astype(np.float64), 1e-12, 1 - 1e-12)
    return np.log(p) - np.log1p(-p)


def ranking(
    folds: int, data: Any, proba: Mapping[str, np.ndarray], seed: int
) -> Ranking:
    """Each labelled row ranked by the fold probe that never saw it; every other
    row (test, weak split) by the mean logit of the fold probes (``proba``: the
    seed's stage-1 probabilities by probe name)."""
    fold = fold_of(folds, data, seed)
    logits = np.stack([_logit(proba[f"ranking_{f}"]) for f in range(folds)])
    source = np.where(fold >= 0, fold, -1)
    picked = logits[np.maximum(source, 0), np.arange(data.n)]
    sp = data.splits
    labelled = sp["student_train"][seed] | sp["student_val"][seed]
    folds_train = np.stack([labelled & (fold != f) for f in range(folds)])
    return Ranking(np.where(source >= 0, picked, logits.mean(0)), source, folds_train)


def label(sup: Supervisor, ctx: LabelContext) -> WeakLabels:
    """Flips ranked by the strong ceiling's out-of-fold logits."""
    found = ranking(ctx.study.strong_folds, ctx.data, ctx.proba, ctx.seed)
    return flips(sup, ctx, found.logits)


for _name in ("strong_unconfident", "strong_confident_correct"):
    register_supervisor(
        _name, settings=Matched, check_study=check_matched, seed_probes=fold_probes
    )(label)
