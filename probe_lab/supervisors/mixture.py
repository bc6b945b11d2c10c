"""``mixture``: a share of random flips, the rest a simulatable M_k probe's own
errors, at a matched accuracy (Appendix E's noise on simulatable labels)."""

from __future__ import annotations

import dataclasses

import numpy as np

from probe_lab import metrics
from probe_lab.supervisors.base import (
    LabelContext,
    StudyError,
    Supervisor,
    WeakLabels,
    WeakProbe,
    register_supervisor,
)
from probe_lab.supervisors.synthetic import (
    Matched,
    check_matched,
    mixture_labels,
    synthetic,
    target_accuracy,
)

__all__ = ["MixtureSettings"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class MixtureSettings(Matched):
    """The M_k whose errors are mixed in, and the share of random flips."""

    k: int | None = None
    """The simulatable M_k whose errors are mixed in (required)."""
    level: float = 0.5
    """Share of the errors that are random flips."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.k is None:
            raise StudyError("a mixture supervisor needs k (its simulatable M_k)")
        if self.k < 1:
            raise StudyError("k must be >= 1")
        if not 0 <= self.level <= 1:
            raise StudyError("level must lie in [0, 1]")


def _probes(sup: Supervisor) -> tuple[WeakProbe, ...]:
    return (WeakProbe(f"M_{sup.settings.k}", sup.settings.k),)


@register_supervisor(
    "mixture",
    settings=MixtureSettings,
    probes=_probes,
    check_study=check_matched,
    default_name=lambda sup: f"mixture(M_{sup.settings.k},{sup.settings.level:g})",
)
def label(sup: Supervisor, ctx: LabelContext) -> WeakLabels:
    """A share ``level`` of random flips, the rest the M_k probe's own errors."""
    s = sup.settings
    simulatable = metrics.positive(ctx.proba[f"M_{s.k}"]).astype(np.int8)
    hard = ctx.truth.copy()
    for mask, rows in ((ctx.labelled, ctx.label_rows), (ctx.test, ctx.test_rows)):
        target = target_accuracy(sup, ctx, mask)  # the same rows' accuracy
        made = mixture_labels(ctx.truth, simulatable, rows, target, s.level, ctx.rng)
        hard[rows] = made[rows]
    return synthetic(hard, target, ctx)
