"""Supervisor kinds: where a study's weak labels come from.

A :class:`Supervisor` names a kind and its settings. A **supervisor kind** is a name
and a few pure functions, registered in :data:`SUPERVISORS`:

* ``label(sup, ctx) -> WeakLabels``: the weak labels of one seed, from what the
  study has made so far (:class:`LabelContext`: ground truth, the splits, the
  stage-1 ground-truth probes' probabilities, the strong ceiling's out-of-sample
  logits, labels of supervisors made earlier);
* ``probes(sup) -> (WeakProbe, ...)``: the ground-truth probes it needs trained in
  stage 1 on the weak split (a weak model, an M_k);
* ``check(sup, supervisors)``: refuse a bad setting when the study is configured,
  naming the fix, before anything trains (``supervisors`` is empty when the
  :class:`Supervisor` is checked alone, as it is made);
* ``prepare(sup, data)``: check what it reads from the loaded caches, before
  anything trains.

Built-in kinds: ``probe`` (a weak probe's predictions), ``ensemble`` (the mean
probability of several weak probes), ``column`` (weak labels stored in a cache's
extra field), the synthetic structures of Appendix E
(``random``, ``longest``, ``shortest``, ``strong_unconfident``,
``strong_confident_correct``, ``mixture``) at a matched accuracy, and ``imitation``
(another supervisor's labels, also made visible to the student as a feature). A
researcher's own kind is registered the same way (:func:`register_supervisor`) or
named by import path ``"package.module:function"`` in ``kind``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from probe_lab import metrics
from probe_lab.registry import Registry, RegistryError
from probe_lab.weak_labels import MAKERS, make_weak_labels, mixture_labels

__all__ = [
    "SUPERVISORS",
    "LabelContext",
    "StudyError",
    "Supervisor",
    "SupervisorKind",
    "WeakLabels",
    "WeakProbe",
    "register_supervisor",
]

TRUE_WORDS = ("1", "true", "yes", "positive")
FALSE_WORDS = ("0", "false", "no", "negative")


class StudyError(ValueError):
    """A study configuration that cannot run; the message says what to change."""


# ------------------------------------------------------------------ the pieces


@dataclasses.dataclass(frozen=True)
class WeakProbe:
    """A ground-truth probe a supervisor needs: trained in stage 1 on the weak
    split, on the first ``k`` features (None: all) of a feature source."""

    name: str
    k: int | None = None
    cache: str | None = None  # another model's cache (None: the study's)
    layer: int | None = None  # None: the study's layer
    copy: int = 0  # copies > 0 train in their own minibatch order (an ensemble)

    @property
    def source(self) -> tuple[str | None, int | None]:
        """The feature source: ``(cache, layer)``, ``(None, None)`` for the study's."""
        return (self.cache, self.layer)


@dataclasses.dataclass(frozen=True)
class WeakLabels:
    """One supervisor's labels for one seed, on every row of the study."""

    targets: np.ndarray
    """``(n,)`` in [0, 1]: what students train on (hard, or soft probabilities)."""
    hard: np.ndarray
    """``(n,)`` int8 hard weak labels: the reference of student agreement."""
    weak_acc: float
    """The supervisor's accuracy as reported in ``weak_acc``."""
    target_acc: float = math.nan
    """Synthetic structures: the accuracy they were made to match."""
    imitation: np.ndarray | None = None
    """``(n,)`` a column appended to the student's features (trivial imitation)."""


@dataclasses.dataclass(frozen=True)
class LabelContext:
    """What a supervisor kind sees when it labels one seed."""

    seed: int
    truth: np.ndarray  # (n,) int8 ground truth
    labelled: np.ndarray  # (n,) bool: the student split (training and validation)
    test: np.ndarray  # (n,) bool: the test split
    proba: Mapping[str, np.ndarray]  # stage-1 probes of this seed: P(label 1), (n,)
    strong_logits: np.ndarray  # (n,) out-of-fold logits of strong ceiling probes
    reference: str  # the probe supervisor whose accuracy synthetic kinds match
    made: Mapping[str, WeakLabels]  # supervisors labelled before this one
    rng: np.random.Generator  # seeded by (seed, supervisor name)
    data: Any  # the study's loaded data (probe_lab.study_data.StudyData)

    @property
    def label_rows(self) -> np.ndarray:
        return np.flatnonzero(self.labelled)

    @property
    def test_rows(self) -> np.ndarray:
        return np.flatnonzero(self.test)

    def test_accuracy(self, labels: np.ndarray) -> float:
        """Accuracy of probabilities or hard labels on the test split."""
        return float(metrics.accuracy(labels, self.truth, self.test))

    def target_accuracy(self, sup: Supervisor) -> float:
        """``sup.accuracy``, or the accuracy on the labelled rows of the
        supervisor ``sup.match`` names, or of the reference probe (clipped into
        (0.5, 1])."""
        if sup.accuracy is not None:
            return float(sup.accuracy)
        if sup.match:
            labels = self.made[sup.match].hard
        else:
            labels = self.proba[self.reference]
        acc = float(metrics.accuracy(labels, self.truth, self.labelled))
        return min(max(acc, 0.5 + 1e-9), 1.0)


def _no_probes(sup: Supervisor) -> tuple[WeakProbe, ...]:
    del sup
    return ()


def _no_check(sup: Supervisor, supervisors: Sequence[Supervisor]) -> None:
    del sup, supervisors


def _no_prepare(sup: Supervisor, data: Any) -> None:
    del sup, data


@dataclasses.dataclass(frozen=True, eq=False)
class SupervisorKind:
    """A kind of supervisor: how it labels, and what it needs."""

    name: str
    label: Callable[[Supervisor, LabelContext], WeakLabels]
    probes: Callable[[Supervisor], tuple[WeakProbe, ...]] = _no_probes
    check: Callable[[Supervisor, Sequence[Supervisor]], None] = _no_check
    prepare: Callable[[Supervisor, Any], None] = _no_prepare
    after_others: bool = False
    """Label after every kind without this flag (it reads ``ctx.made``)."""
    matches_reference: bool = False
    """Without ``accuracy=``, it matches the reference probe's accuracy (so the
    study needs a probe supervisor)."""
    strong_ranking: bool = False
    """It reads ``ctx.strong_logits`` (stage 1 then trains the out-of-fold
    ranking probes)."""


def _as_kind(item: Any, name: str) -> SupervisorKind:
    if isinstance(item, SupervisorKind):
        return item
    if callable(item):  # a bare labelling function
        return SupervisorKind(name=name, label=item)
    raise RegistryError(
        f"supervisor kind {name!r} is a {type(item).__name__}, not a function or a "
        f"SupervisorKind"
    )


SUPERVISORS: Registry[SupervisorKind] = Registry("supervisor kind", _as_kind)
"""Every supervisor kind by name."""


def register_supervisor(
    name: str,
    *,
    probes: Callable[[Supervisor], tuple[WeakProbe, ...]] = _no_probes,
    check: Callable[[Supervisor, Sequence[Supervisor]], None] = _no_check,
    prepare: Callable[[Supervisor, Any], None] = _no_prepare,
    after_others: bool = False,
    matches_reference: bool = False,
    strong_ranking: bool = False,
    overwrite: bool = False,
) -> Callable[[Callable[..., WeakLabels]], SupervisorKind]:
    """Decorator: register ``label(sup, ctx) -> WeakLabels`` as a supervisor kind.

    Returns:
        A decorator returning the registered :class:`SupervisorKind`.
    """

    def wrap(label: Callable[..., WeakLabels]) -> SupervisorKind:
        kind = SupervisorKind(
            name=name,
            label=label,
            probes=probes,
            check=check,
            prepare=prepare,
            after_others=after_others,
            matches_reference=matches_reference,
            strong_ranking=strong_ranking,
        )
        return SUPERVISORS.register(name, kind, overwrite=overwrite)

    return wrap


# ------------------------------------------------------------------ Supervisor


@dataclasses.dataclass(frozen=True, kw_only=True)
class Supervisor:
    """One source of weak labels."""

    kind: str
    """``probe``, ``random``, ``longest``, ``shortest``, ``strong_unconfident``,
    ``strong_confident_correct``, ``mixture``, ``imitation``, ``column`` (weak
    labels stored in a cache's extra field, e.g. a re-extraction's ``hint``), a
    registered kind, or an import path ``"package.module:function"``."""

    name: str = ""
    """Label in the results (default derived from kind and k, e.g. ``M_8``)."""

    k: int | None = None
    """``probe``: train on the first k features (None: all); ``mixture``: the M_k
    whose errors are mixed in (required)."""

    cache: str | None = None
    """``probe``: another model's cache for the weak side; ``column``: the cache
    holding the field. Joined by example id."""

    field: str = ""
    """``column``: the extra field holding 0/1 (or true/false) weak labels."""

    layer: int | None = None
    """``probe``: layer of the weak features (default: the study's layer)."""

    soft: bool = False
    """``probe``: give students soft labels (probabilities) instead of hard ones."""

    accuracy: float | None = None
    """Synthetic structures: target weak accuracy in (0.5, 1]; default: the
    accuracy of ``match`` (or of the reference probe) on the student split, per
    seed."""

    match: str = ""
    """Synthetic structures: the supervisor (by name) whose weak-label accuracy to
    match, e.g. a rule or another model's probe (default: the study's reference
    probe)."""

    level: float = 0.5
    """``mixture``: share of the errors that are random flips."""

    base: str = ""
    """``imitation``: name of the supervisor whose labels become visible (default:
    the reference probe)."""

    scale: float = 1.0
    """``imitation``: the extra column is ``+-1`` times this, relative to the unit
    variance of standardized features."""

    params: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    """Settings of a researcher's own kind, read by its functions."""

    def __post_init__(self) -> None:
        try:
            SUPERVISORS.get(self.kind)
        except RegistryError as err:
            raise StudyError(f"supervisor {self.name or self.kind!r}: {err}") from None
        if self.accuracy is not None and not 0.5 < self.accuracy <= 1:
            raise StudyError(
                f"supervisor {self.label}: accuracy must lie in (0.5, 1], got "
                f"{self.accuracy}"
            )
        if self.k is not None and self.k < 1:
            raise StudyError(f"supervisor {self.label}: k must be >= 1")
        if not 0 <= self.level <= 1:
            raise StudyError(f"supervisor {self.label}: level must lie in [0, 1]")
        if self.scale <= 0:
            raise StudyError(f"supervisor {self.label}: scale must be > 0")
        self.kind_spec.check(self, ())

    @property
    def kind_spec(self) -> SupervisorKind:
        """The registered :class:`SupervisorKind` of ``kind``."""
        return SUPERVISORS.get(self.kind)

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        if self.kind == "probe":
            base = "M_all" if self.k is None else f"M_{self.k}"
            src = []
            if self.cache:
                src.append(Path(self.cache).stem)
            if self.layer is not None:
                src.append(f"L{self.layer}")
            return base + (f"@{'/'.join(src)}" if src else "")
        if self.kind == "mixture":
            return f"mixture(M_{self.k},{self.level:g})"
        if self.kind == "column":
            return f"column:{self.field}"
        return self.kind


# ------------------------------------------------------------- built-in kinds


def _probe_probes(sup: Supervisor) -> tuple[WeakProbe, ...]:
    return (WeakProbe(sup.label, sup.k, sup.cache, sup.layer),)


@register_supervisor("probe", probes=_probe_probes)
def _probe(sup: Supervisor, ctx: LabelContext) -> WeakLabels:
    """A weak probe's predictions (hard, or its probabilities with ``soft``)."""
    proba = ctx.proba[sup.label]
    hard = metrics.positive(proba).astype(np.int8)
    return WeakLabels(
        targets=proba if sup.soft else hard,
        hard=hard,
        weak_acc=ctx.test_accuracy(proba),
    )


def _column_check(sup: Supervisor, supervisors: Sequence[Supervisor]) -> None:
    del supervisors
    if not sup.field:
        raise StudyError("a column supervisor needs field= (an extra field name)")


def column_values(sup: Supervisor, data: Any) -> np.ndarray:
    """A column supervisor's field as ``(n,)`` int8 0/1 labels."""
    values = data.field(sup.cache, sup.field, who=f"supervisor {sup.label}")
    values = np.char.lower(values.astype(str))
    bad = ~np.isin(values, TRUE_WORDS + FALSE_WORDS)
    if bad.any():
        raise StudyError(
            f"supervisor {sup.label}: field {sup.field!r} holds {values[bad][0]!r}; "
            f"weak labels must be one of {TRUE_WORDS + FALSE_WORDS}"
        )
    return np.isin(values, TRUE_WORDS).astype(np.int8)


@register_supervisor("column", check=_column_check, prepare=column_values)
def _column(sup: Supervisor, ctx: LabelContext) -> WeakLabels:
    """Weak labels stored in a cache's extra field (a rule, a re-extraction)."""
    hard = column_values(sup, ctx.data)
    return WeakLabels(targets=hard, hard=hard, weak_acc=ctx.test_accuracy(hard))


def _flips(sup: Supervisor, ctx: LabelContext) -> WeakLabels:
    """Ground truth with exactly the flips of a structure, on the labelled rows and
    on the test rows separately (so agreement is measured on test)."""
    target = ctx.target_accuracy(sup)
    hard = ctx.truth.copy()
    for rows in (ctx.label_rows, ctx.test_rows):
        made = make_weak_labels(
            sup.kind,
            ctx.truth,
            rows,
            target,
            ctx.rng,
            n_chars=ctx.data.n_chars,
            strong_logits=ctx.strong_logits,
        )
        hard[rows] = made[rows]
    return _synthetic(hard, target, ctx)


def _synthetic(hard: np.ndarray, target: float, ctx: LabelContext) -> WeakLabels:
    """Hard labels made at a target accuracy; ``weak_acc`` is the accuracy they
    reached on the labelled rows (the target, to the row)."""
    return WeakLabels(
        targets=hard,
        hard=hard,
        weak_acc=float(metrics.accuracy(hard, ctx.truth, ctx.labelled)),
        target_acc=target,
    )


for _name in MAKERS:
    register_supervisor(
        _name, matches_reference=True, strong_ranking=_name.startswith("strong_")
    )(_flips)


def _mixture_probes(sup: Supervisor) -> tuple[WeakProbe, ...]:
    return (WeakProbe(f"M_{sup.k}", sup.k),)


def _mixture_check(sup: Supervisor, supervisors: Sequence[Supervisor]) -> None:
    del supervisors
    if sup.k is None:
        raise StudyError("a mixture supervisor needs k (its simulatable M_k)")


@register_supervisor(
    "mixture", probes=_mixture_probes, check=_mixture_check, matches_reference=True
)
def _mixture(sup: Supervisor, ctx: LabelContext) -> WeakLabels:
    """A share ``level`` of random flips, the rest the M_k probe's own errors."""
    target = ctx.target_accuracy(sup)
    simulatable = metrics.positive(ctx.proba[f"M_{sup.k}"]).astype(np.int8)
    hard = ctx.truth.copy()
    for rows in (ctx.label_rows, ctx.test_rows):
        made = mixture_labels(ctx.truth, simulatable, rows, target, sup.level, ctx.rng)
        hard[rows] = made[rows]
    return _synthetic(hard, target, ctx)


def _imitation_check(sup: Supervisor, supervisors: Sequence[Supervisor]) -> None:
    if sup.base == sup.label:
        raise StudyError("an imitation supervisor cannot imitate itself")
    if not supervisors:  # checked alone, when the Supervisor is made
        return
    labels = sorted(s.label for s in supervisors)
    if sup.base and sup.base not in labels:
        raise StudyError(
            f"imitation supervisor {sup.label}: base {sup.base!r} is not a "
            f"supervisor name ({labels})"
        )
    if not sup.base and not any(s.kind == "probe" for s in supervisors):
        raise StudyError(
            f"imitation supervisor {sup.label} has no base and the study has no "
            f"probe supervisor to default to: set base = '<supervisor name>' or add "
            f"a probe supervisor"
        )
    if sup.base:
        base = next(s for s in supervisors if s.label == sup.base)
        if base.kind_spec.after_others:
            raise StudyError(
                f"imitation supervisor {sup.label}: base {sup.base!r} is itself "
                f"an imitation; imitate the supervisor it imitates"
            )


@register_supervisor("imitation", check=_imitation_check, after_others=True)
def _imitation(sup: Supervisor, ctx: LabelContext) -> WeakLabels:
    """Another supervisor's labels, also appended to the student's features."""
    base = ctx.made[sup.base or ctx.reference]
    column = (2.0 * base.hard - 1.0).astype(np.float32)
    return dataclasses.replace(base, imitation=column)


_MEMBER_KEYS = {"k", "cache", "layer"}


def _ensemble_members(sup: Supervisor) -> list[dict[str, Any]]:
    members = sup.params.get("members", [{}])
    if not isinstance(members, list | tuple) or not all(
        isinstance(m, Mapping) for m in members
    ):
        raise StudyError(
            f"ensemble supervisor {sup.label}: params.members must be a list of "
            f"tables with keys {sorted(_MEMBER_KEYS)}, got {members!r}"
        )
    return [dict(m) for m in members]


def _ensemble_probes(sup: Supervisor) -> tuple[WeakProbe, ...]:
    copies = int(sup.params.get("copies", 1))
    return tuple(
        WeakProbe(
            f"{sup.label}[{i}.{c}]",
            k=m.get("k"),
            cache=m.get("cache"),
            layer=m.get("layer"),
            copy=c,
        )
        for i, m in enumerate(_ensemble_members(sup))
        for c in range(copies)
    )


def _ensemble_check(sup: Supervisor, supervisors: Sequence[Supervisor]) -> None:
    del supervisors
    unknown = sorted(set(sup.params) - {"members", "copies"})
    if unknown:
        raise StudyError(
            f"ensemble supervisor {sup.label}: unknown params {unknown}; it takes "
            f"members (a list of {{k, cache, layer}} tables) and copies"
        )
    for member in _ensemble_members(sup):
        bad = sorted(set(member) - _MEMBER_KEYS)
        if bad:
            raise StudyError(
                f"ensemble supervisor {sup.label}: a member has unknown keys {bad}; "
                f"members take {sorted(_MEMBER_KEYS)}"
            )
    copies = sup.params.get("copies", 1)
    if not isinstance(copies, int) or isinstance(copies, bool) or copies < 1:
        raise StudyError(
            f"ensemble supervisor {sup.label}: copies must be an integer >= 1, got "
            f"{copies!r}"
        )
    if len(_ensemble_probes(sup)) < 2:
        raise StudyError(
            f"ensemble supervisor {sup.label} has one member: give several members "
            f"(other k, layers or caches) or copies >= 2"
        )


@register_supervisor("ensemble", probes=_ensemble_probes, check=_ensemble_check)
def _ensemble(sup: Supervisor, ctx: LabelContext) -> WeakLabels:
    """The mean probability of several weak probes (``params.members``: other k,
    layers or caches; ``params.copies``: each trained in that many minibatch
    orders); students get it soft with ``soft``, else hardened at 0.5."""
    mean = np.mean([ctx.proba[p.name] for p in _ensemble_probes(sup)], axis=0)
    hard = metrics.positive(mean).astype(np.int8)
    return WeakLabels(
        targets=mean if sup.soft else hard, hard=hard, weak_acc=ctx.test_accuracy(mean)
    )
