"""``ensemble``: the mean probability of several weak probes."""

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

__all__ = ["EnsembleParams", "EnsembleSettings", "Member"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Member:
    """One member probe: the first k features (None: all) of a cache's layer."""

    k: int | None = None
    cache: str | None = dataclasses.field(default=None, metadata={"path": True})
    layer: int | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class EnsembleParams:
    """The members, and how many minibatch orders each trains in."""

    members: tuple[Member, ...] = (Member(),)
    copies: int = 1

    def __post_init__(self) -> None:
        if self.copies < 1:
            raise StudyError(f"copies must be an integer >= 1, got {self.copies!r}")
        if len(self.members) * self.copies < 2:
            raise StudyError(
                "an ensemble has one member: give several members (other k, "
                "layers or caches) or copies >= 2"
            )


@dataclasses.dataclass(frozen=True, kw_only=True)
class EnsembleSettings:
    """``params.members`` (tables of k, cache, layer), ``params.copies``, ``soft``."""

    params: EnsembleParams = dataclasses.field(default_factory=EnsembleParams)
    soft: bool = False
    """Give students the mean probability instead of its hard label."""


def _probes(sup: Supervisor) -> tuple[WeakProbe, ...]:
    params = sup.settings.params
    return tuple(
        WeakProbe(f"{sup.label}[{i}.{c}]", k=m.k, cache=m.cache, layer=m.layer, copy=c)
        for i, m in enumerate(params.members)
        for c in range(params.copies)
    )


@register_supervisor("ensemble", settings=EnsembleSettings, probes=_probes)
def label(sup: Supervisor, ctx: LabelContext) -> WeakLabels:
    """The mean probability of several weak probes (``params.members``: other k,
    layers or caches; ``params.copies``: each trained in that many minibatch
    orders); students get it soft with ``soft``, else hardened at 0.5."""
    mean = np.mean([ctx.proba[p.name] for p in _probes(sup)], axis=0)
    hard = metrics.positive(mean).astype(np.int8)
    return WeakLabels(
        targets=mean if sup.settings.soft else hard,
        hard=hard,
        weak_acc=ctx.test_accuracy(mean),
        proba=mean,
    )
