"""``column``: weak labels stored in a cache's extra field (a rule, a re-extraction
of hinted prompts)."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from probe_lab.supervisors.base import (
    LabelContext,
    StudyError,
    Supervisor,
    WeakLabels,
    register_supervisor,
)

__all__ = ["FALSE_WORDS", "TRUE_WORDS", "ColumnSettings", "column_values"]

TRUE_WORDS = ("1", "true", "yes", "positive")
FALSE_WORDS = ("0", "false", "no", "negative")


@dataclasses.dataclass(frozen=True, kw_only=True)
class ColumnSettings:
    """Which extra field of which cache holds the labels."""

    field: str = ""
    """The extra field holding 0/1 (or true/false) weak labels (required)."""
    cache: str | None = dataclasses.field(default=None, metadata={"path": True})
    """The cache holding the field (default: the study's), joined by example id."""

    def __post_init__(self) -> None:
        if not self.field:
            raise StudyError("a column supervisor needs field= (an extra field name)")


def column_values(sup: Supervisor, data: Any) -> np.ndarray:
    """A column supervisor's field as ``(n,)`` int8 0/1 labels."""
    s = sup.settings
    values = data.field(s.cache, s.field, who=f"supervisor {sup.label}")
    values = np.char.lower(values.astype(str))
    bad = ~np.isin(values, TRUE_WORDS + FALSE_WORDS)
    if bad.any():
        raise StudyError(
            f"supervisor {sup.label}: field {s.field!r} holds {values[bad][0]!r}; "
            f"weak labels must be one of {TRUE_WORDS + FALSE_WORDS}"
        )
    return np.isin(values, TRUE_WORDS).astype(np.int8)


@register_supervisor(
    "column",
    settings=ColumnSettings,
    prepare=column_values,
    default_name=lambda sup: f"column:{sup.settings.field}",
)
def label(sup: Supervisor, ctx: LabelContext) -> WeakLabels:
    """Weak labels stored in a cache's extra field (a rule, a re-extraction)."""
    hard = column_values(sup, ctx.data)
    return WeakLabels(targets=hard, hard=hard, weak_acc=ctx.test_accuracy(hard))
