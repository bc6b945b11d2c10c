"""``probe``: a weak probe's predictions (the paper's weak supervisor)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

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

__all__ = ["ProbeSettings"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class ProbeSettings:
    """A ground-truth probe on the weak split, whose predictions are the labels."""

    k: int | None = None
    """Train on the first k features (None: all)."""
    cache: str | None = dataclasses.field(default=None, metadata={"path": True})
    """Another model's cache for the weak side (joined by example id)."""
    layer: int | None = None
    """Layer of the weak features (default: the study's layer)."""
    soft: bool = False
    """Give students soft labels (probabilities) instead of hard ones."""

    def __post_init__(self) -> None:
        if self.k is not None and self.k < 1:
            raise StudyError("k must be >= 1")


def _name(sup: Supervisor) -> str:
    s = sup.settings
    base = "M_all" if s.k is None else f"M_{s.k}"
    src = ([Path(s.cache).stem] if s.cache else []) + (
        [f"L{s.layer}"] if s.layer is not None else []
    )
    return base + (f"@{'/'.join(src)}" if src else "")


def _probes(sup: Supervisor) -> tuple[WeakProbe, ...]:
    s = sup.settings
    return (WeakProbe(sup.label, s.k, s.cache, s.layer),)


@register_supervisor(
    "probe",
    settings=ProbeSettings,
    probes=_probes,
    default_name=_name,
    reference=True,
)
def label(sup: Supervisor, ctx: LabelContext) -> WeakLabels:
    """A weak probe's predictions (hard, or its probabilities with ``soft``)."""
    proba = ctx.proba[sup.label]
    hard = metrics.positive(proba).astype(np.int8)
    return WeakLabels(
        targets=proba if sup.settings.soft else hard,
        hard=hard,
        weak_acc=ctx.test_accuracy(proba),
        proba=proba,
    )
