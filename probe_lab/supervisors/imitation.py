"""``imitation``: another supervisor's labels, also made visible to the student as
an extra feature (the paper's trivial imitation, Appendix E)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from probe_lab.supervisors.base import (
    LabelContext,
    StudyError,
    Supervisor,
    WeakLabels,
    reference_name,
    register_supervisor,
)

__all__ = ["ImitationSettings"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class ImitationSettings:
    """Whose labels become visible, and how loud the column is."""

    base: str = ""
    """Name of the supervisor whose labels become visible (default: the
    reference probe)."""
    scale: float = 1.0
    """The extra column is ``+-1`` times this, relative to the unit variance of
    standardized features."""

    def __post_init__(self) -> None:
        if self.scale <= 0:
            raise StudyError("scale must be > 0")


def _check(sup: Supervisor, supervisors: Sequence[Supervisor]) -> None:
    base = sup.settings.base
    if base == sup.label:
        raise StudyError("an imitation supervisor cannot imitate itself")
    if not supervisors:  # checked alone, when the Supervisor is made
        return
    labels = sorted(s.label for s in supervisors)
    if base and base not in labels:
        raise StudyError(
            f"imitation supervisor {sup.label}: base {base!r} is not a "
            f"supervisor name ({labels})"
        )
    if not base and not reference_name(supervisors):
        raise StudyError(
            f"imitation supervisor {sup.label} has no base and the study has no "
            f"probe supervisor to default to: set base = '<supervisor name>' or add "
            f"a probe supervisor"
        )
    if base and next(s for s in supervisors if s.label == base).kind_spec.after_others:
        raise StudyError(
            f"imitation supervisor {sup.label}: base {base!r} is itself "
            f"an imitation; imitate the supervisor it imitates"
        )


@register_supervisor(
    "imitation",
    settings=ImitationSettings,
    check_study=_check,
    feature_scale=lambda sup: sup.settings.scale,
    after_others=True,
)
def label(sup: Supervisor, ctx: LabelContext) -> WeakLabels:
    """Another supervisor's labels, also appended to the student's features."""
    base = ctx.made[sup.settings.base or ctx.reference]
    column = (2.0 * base.hard - 1.0).astype(np.float32)
    return dataclasses.replace(base, imitation=column)
