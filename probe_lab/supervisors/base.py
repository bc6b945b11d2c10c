"""What every supervisor kind is made of: the spec, the Supervisor, what it sees.

A **supervisor kind** (:class:`SupervisorKind`) is a plug-in on the one spec
(:class:`probe_lab.registry.SettingsPlugin`: a name, declared parameters with
ranges, a check): a typed settings dataclass whose fields are its parameters and a
few pure functions, registered in :data:`SUPERVISORS` (its own namespace: a kind is
only ever named by a supervisor's ``kind``, so it may share a name with a method):

* ``label(sup, ctx) -> WeakLabels``: the weak labels of one seed, from what the
  study has made so far (:class:`LabelContext`);
* ``probes(sup) -> (WeakProbe, ...)``: the ground-truth probes it asks stage 1 to
  train on the weak split (a weak model, an M_k);
* ``seed_probes(sup, ask) -> (WeakProbe, ...)``: probes it asks stage 1 to train
  for one seed on the student split, in the ceilings' minibatch order
  (:class:`SeedAsk`; the strong rankings' fold probes);
* ``feature_scale(sup) -> float | None``: the scale of the column it adds to the
  student's features (``WeakLabels.imitation``), None when it adds none;
* ``ranges`` and ``check(values)``: the plug-in spec every plug-in shares
  (:class:`~probe_lab.registry.Plugin`), run on the settings when a
  :class:`Supervisor` is made;
* ``check_study(sup, supervisors)``: refuse what does not fit the study's other
  supervisors when the study is configured (``supervisors`` is empty when the
  :class:`Supervisor` is checked alone);
* ``prepare(sup, data)``: check what it reads from the loaded caches, before
  anything trains;
* ``default_name(sup)``: its name in the results when none is given.

A :class:`Supervisor` is a kind, a name and the kind's settings, parsed from
keyword arguments (or a TOML table) by the one config loader
(:func:`probe_lab.loader.from_mapping`): keys the kind does not take are refused
naming the kind, values of the wrong type naming the key. The study calls these
functions and reads these flags; it never asks which kind a supervisor is.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from probe_lab import metrics
from probe_lab.errors import StudyError
from probe_lab.loader import ConfigError, from_mapping
from probe_lab.registry import Registry, RegistryError, SettingsPlugin

__all__ = [
    "SUPERVISORS",
    "LabelContext",
    "Params",
    "SeedAsk",
    "StudyError",
    "Supervisor",
    "SupervisorKind",
    "WeakLabels",
    "WeakProbe",
    "call_label",
    "paths_in",
    "reference_name",
    "register_supervisor",
    "with_paths_in",
]


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
    weight: np.ndarray | None = dataclasses.field(default=None, compare=False)
    """``(n,)`` row weights (a seed probe's: weight 0 rows give no gradient)."""

    @property
    def source(self) -> tuple[str | None, int | None]:
        """The feature source: ``(cache, layer)``, ``(None, None)`` for the study's."""
        return (self.cache, self.layer)


@dataclasses.dataclass(frozen=True)
class SeedAsk:
    """What a kind sees when it asks stage 1 for probes of one seed."""

    seed: int
    k: int  # the largest ceiling's k (the strong student features)
    study: Any  # the StudyConfig
    data: Any  # the study's loaded data (probe_lab.study.data.StudyData)


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
    proba: np.ndarray | None = None
    """``(n,)`` the supervisor's soft P(label 1) where it has one (a probe, an
    ensemble), whatever the students train on; None for hard labels only. The
    misfit theorem's columns use it (hard labels otherwise)."""


@dataclasses.dataclass(frozen=True)
class LabelContext:
    """What a supervisor kind sees when it labels one seed."""

    seed: int
    truth: np.ndarray  # (n,) int8 ground truth
    labelled: np.ndarray  # (n,) bool: the student split (training and validation)
    test: np.ndarray  # (n,) bool: the test split
    proba: Mapping[str, np.ndarray]  # stage-1 probes of this seed: P(label 1), (n,)
    reference: str  # the probe supervisor whose accuracy synthetic kinds match
    made: Mapping[str, WeakLabels]  # supervisors labelled before this one
    rng: np.random.Generator  # seeded by (seed, supervisor name)
    data: Any  # the study's loaded data (probe_lab.study.data.StudyData)
    study: Any = None  # the StudyConfig

    @property
    def label_rows(self) -> np.ndarray:
        return np.flatnonzero(self.labelled)

    @property
    def test_rows(self) -> np.ndarray:
        return np.flatnonzero(self.test)

    def test_accuracy(self, labels: np.ndarray) -> float:
        """Accuracy of probabilities or hard labels on the test split."""
        return float(metrics.accuracy(labels, self.truth, self.test))


@dataclasses.dataclass(frozen=True, kw_only=True)
class Params:
    """Settings of a kind that declares none: a table its functions read."""

    params: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    """Settings of a researcher's own kind, read by its functions."""


def _no_probes(sup: Supervisor, *_: Any) -> tuple[WeakProbe, ...]:
    del sup
    return ()


def _no_check(sup: Supervisor, supervisors: Sequence[Supervisor]) -> None:
    del sup, supervisors


def _no_prepare(sup: Supervisor, data: Any) -> None:
    del sup, data


def _no_feature(sup: Supervisor) -> float | None:
    del sup
    return None


def call_label(sup: Supervisor, ctx: LabelContext) -> WeakLabels:
    """``sup``'s kind's ``label(sup, ctx)``, checked: what it raises (other than
    a :class:`StudyError`) and what it returns that is not ``(n,)`` finite
    targets in [0, 1], ``(n,)`` hard labels in {0, 1} and a numeric ``weak_acc``
    become a :class:`StudyError` naming the supervisor and its kind."""
    who = f"supervisor {sup.label!r} (kind {sup.kind!r}, seed {ctx.seed})"
    try:
        out = sup.kind_spec.label(sup, ctx)
    except StudyError:
        raise
    except Exception as err:
        raise StudyError(
            f"{who}: its label function raised {type(err).__name__}: {err}"
        ) from err
    if not isinstance(out, WeakLabels):
        raise StudyError(
            f"{who}: its label function returned a {type(out).__name__}; return "
            "WeakLabels(targets=..., hard=..., weak_acc=...) "
            "(probe_lab.supervisors.WeakLabels)"
        )
    n = ctx.truth.shape[0]
    for name in ("targets", "hard", "imitation"):
        _check_column(who, name, getattr(out, name), n)
    if not isinstance(out.weak_acc, int | float | np.number) or isinstance(
        out.weak_acc, bool
    ):
        raise StudyError(
            f"{who}: weak_acc must be a number (the supervisor's test accuracy), "
            f"got {out.weak_acc!r}"
        )
    return out


def _check_column(who: str, name: str, value: Any, n: int) -> None:
    """One ``(n,)`` column of :class:`WeakLabels`: shape, finite, in range."""
    if value is None and name == "imitation":
        return
    array = np.asarray(value)
    if array.shape != (n,) or not (
        np.issubdtype(array.dtype, np.number) or array.dtype == bool
    ):
        raise StudyError(
            f"{who}: {name} must be a numeric array of shape ({n},), one value per "
            f"row of the study, got {type(value).__name__} of shape {array.shape} "
            f"and dtype {array.dtype}"
        )
    bad = ~np.isfinite(array.astype(np.float64))
    if name == "targets":
        bad |= (array < 0) | (array > 1)
    elif name == "hard":
        bad |= ~np.isin(array, (0, 1))
    if bad.any():
        rows = np.flatnonzero(bad)
        shown = ", ".join(f"{i} ({array[i]!r})" for i in rows[:3])
        want = {"targets": "finite, in [0, 1]", "hard": "0 or 1"}.get(name, "finite")
        raise StudyError(
            f"{who}: {name} must be {want}; {rows.size} of {n} rows are not "
            f"(rows {shown})"
        )


def _kind_name(sup: Supervisor) -> str:
    return sup.kind


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False)
class SupervisorKind(SettingsPlugin):
    """A kind of supervisor: its settings, how it labels, and what it needs.

    A :class:`~probe_lab.registry.SettingsPlugin` like an experiment kind: its
    declared parameters are the fields of :attr:`settings`, ``ranges`` bound the
    numeric ones and ``check(values)`` refuses a whole set of values; both run
    when a :class:`Supervisor` is made. What depends on the study's other
    supervisors is :attr:`check_study`.
    """

    what: ClassVar[str] = "supervisor kind"

    label: Callable[[Supervisor, LabelContext], WeakLabels]
    settings: type = Params
    """The typed settings dataclass (frozen, keyword-only, every field with a
    default) its keys parse into."""
    probes: Callable[[Supervisor], tuple[WeakProbe, ...]] = _no_probes
    seed_probes: Callable[[Supervisor, SeedAsk], tuple[WeakProbe, ...]] = _no_probes
    check_study: Callable[[Supervisor, Sequence[Supervisor]], None] = _no_check
    """``check_study(sup, supervisors)``: refuse what does not fit the study's
    other supervisors (``supervisors`` is empty when the supervisor is made)."""
    prepare: Callable[[Supervisor, Any], None] = _no_prepare
    feature_scale: Callable[[Supervisor], float | None] = _no_feature
    default_name: Callable[[Supervisor], str] = _kind_name
    after_others: bool = False
    """Label after every kind without this flag (it reads ``ctx.made``)."""
    reference: bool = False
    """Its accuracy can be the one synthetic structures match (a probe)."""

    def __post_init__(self) -> None:
        for key in ("label", "probes", "seed_probes", "check_study", "prepare"):
            if not callable(getattr(self, key)):
                raise RegistryError(
                    f"supervisor kind {self.name!r}: {key} is not callable"
                )
        super().__post_init__()


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
    name: str, *, overwrite: bool = False, **spec: Any
) -> Callable[[Callable[..., WeakLabels]], SupervisorKind]:
    """Decorator: register ``label(sup, ctx) -> WeakLabels`` as a supervisor kind.

    Args:
        name: the kind's name (``kind = "..."`` in a TOML).
        overwrite: replace a kind of that name.
        **spec: the other :class:`SupervisorKind` fields (``settings``,
            ``probes``, ``check``, ...).

    Returns:
        A decorator returning the registered :class:`SupervisorKind`.
    """

    def wrap(label: Callable[..., WeakLabels]) -> SupervisorKind:
        kind = SupervisorKind(name=name, label=label, **spec)
        return SUPERVISORS.register(name, kind, overwrite=overwrite)

    return wrap


# ------------------------------------------------------------------ Supervisor


@dataclasses.dataclass(frozen=True, init=False)
class Supervisor:
    """One source of weak labels: a kind, a name and the kind's typed settings.

    ``Supervisor(kind="probe", k=8)``: keyword arguments other than ``kind`` and
    ``name`` are the kind's settings (its settings dataclass's fields), parsed and
    type-checked by the config loader; ``settings=`` passes a settings instance.
    Settings read as attributes: ``sup.k``.
    """

    kind: str
    """``probe``, ``ensemble``, ``column``, ``random``, ``longest``, ``shortest``,
    ``strong_unconfident``, ``strong_confident_correct``, ``mixture``,
    ``imitation``, a registered kind, or an import path
    ``"package.module:function"``."""
    name: str
    """Label in the results (default derived from kind and settings, e.g. ``M_8``)."""
    settings: Any
    """The kind's settings dataclass."""

    def __init__(
        self, *, kind: str, name: str = "", settings: Any = None, **values: Any
    ) -> None:
        who = f"supervisor {name or kind!r}"
        if not isinstance(kind, str) or not isinstance(name, str):
            raise StudyError(f"{who}: kind and name must be strings")
        try:
            spec = SUPERVISORS.get(kind)
        except RegistryError as err:
            raise StudyError(f"{who}: {err}") from None
        if settings is None:
            settings = _parse_settings(spec, values, who, "")
        elif values or not isinstance(settings, spec.settings):
            raise StudyError(
                f"{who}: settings= must be a {spec.settings.__name__}, given alone"
            )
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "settings", settings)
        try:
            spec.check_settings(settings)
            spec.check_study(self, ())
        except StudyError:
            raise
        except ValueError as err:  # a range or the kind's check of its values
            raise StudyError(f"{who}: {err}") from None

    def __getattr__(self, key: str) -> Any:
        if key.startswith("__") or key == "settings":
            raise AttributeError(key)
        try:
            return getattr(self.settings, key)
        except AttributeError:
            raise AttributeError(
                f"supervisor kind {self.kind!r} has no setting {key!r}"
            ) from None

    @property
    def kind_spec(self) -> SupervisorKind:
        """The registered :class:`SupervisorKind` of ``kind``."""
        return SUPERVISORS.get(self.kind)

    @property
    def label(self) -> str:
        return self.name or self.kind_spec.default_name(self)

    def to_dict(self) -> dict[str, Any]:
        """The TOML table of this supervisor: kind, name and settings, flat."""
        out = {"kind": self.kind, "name": self.name}
        return out | dataclasses.asdict(self.settings)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, where: str = "") -> Supervisor:
        """Build from a TOML table (the loader calls this for a ``Supervisor``
        field); ``where`` is the table's key path, e.g. ``supervisors[1]``."""
        if "kind" not in data:
            raise ConfigError(f"{where or 'a supervisor'} needs kind = '...'", where)
        values = {str(k): v for k, v in data.items()}
        kind, name = values.pop("kind"), values.pop("name", "")
        who = where or f"supervisor {name or kind!r}"
        try:
            spec = SUPERVISORS.get(kind)
        except RegistryError as err:
            raise StudyError(f"{who}: {err}", where) from None
        settings = _parse_settings(spec, values, who, where)
        try:
            return cls(kind=kind, name=name, settings=settings)
        except StudyError as err:
            raise StudyError(f"{who}: {err}", where) from None


def _parse_settings(
    spec: SupervisorKind, values: Mapping[str, Any], who: str, where: str
) -> Any:
    """``values`` as the kind's settings dataclass, or a :class:`StudyError`
    naming the kind and the key (``where``: the table's key path in a file)."""
    known = sorted(f.name for f in dataclasses.fields(spec.settings) if f.init)
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise StudyError(
            f"{who} has unknown keys {unknown} for kind {spec.name!r}; known: "
            f"{sorted([*known, 'kind', 'name'])}",
            where,
        )
    try:
        return from_mapping(spec.settings, values, where=where or spec.name)
    except StudyError as err:  # a value check of the settings' own
        raise StudyError(f"{who}: {err}", where) from None
    except ConfigError as err:  # the loader's: names the key path
        raise StudyError(str(err) if where else f"{who}: {err}", err.path) from None


def reference_name(supervisors: Sequence[Supervisor], reference: str = "") -> str:
    """The supervisor synthetic structures match: ``reference``, else the first
    whose kind can be a reference (a probe); empty when there is none."""
    if reference:
        return reference
    found = [s.label for s in supervisors if s.kind_spec.reference]
    return found[0] if found else ""


def paths_in(value: Any) -> list[str]:
    """Every path a settings dataclass names (fields with ``metadata={"path":
    True}``, nested dataclasses and tuples of them included), in field order."""
    if isinstance(value, tuple):
        return [p for v in value for p in paths_in(v)]
    if not dataclasses.is_dataclass(value) or isinstance(value, type):
        return []
    out = []
    for field in dataclasses.fields(value):
        current = getattr(value, field.name)
        if field.metadata.get("path"):
            out += [current] if current else []
        else:
            out += paths_in(current)
    return out


def with_paths_in(value: Any, folder: Path) -> Any:
    """``value`` (a settings dataclass, nested) with every relative path field
    (``metadata={"path": True}``) resolved against ``folder``."""
    if isinstance(value, tuple):
        return tuple(with_paths_in(v, folder) for v in value)
    if not dataclasses.is_dataclass(value) or isinstance(value, type):
        return value
    changes = {}
    for field in dataclasses.fields(value):
        current = getattr(value, field.name)
        if field.metadata.get("path"):
            if isinstance(current, str) and not Path(current).is_absolute():
                changes[field.name] = str((folder / current).resolve())
        elif isinstance(current, tuple) or dataclasses.is_dataclass(current):
            changes[field.name] = with_paths_in(current, folder)
    return dataclasses.replace(value, **changes) if changes else value
