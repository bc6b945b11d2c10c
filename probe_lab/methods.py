"""A study's student methods: loss methods and label methods, with parameter grids.

A study trains every supervisor x student x **condition** x seed. Its conditions are
its ``losses`` (each a loss method at its defaults) followed by its ``methods``:

    methods = [
        {name = "gce", params = {q = [0.3, 0.7]}},        # a grid: two conditions
        {name = "knn_clean", params = {q = 0.1, k = 10}},  # a label method + xent
        {name = "mypkg.mymod:my_loss"},                    # a researcher's own
    ]

A :class:`Method` names a loss method (:mod:`probe_lab.losses`) or a label method
(:mod:`probe_lab.label_methods`, whose students train with ``loss``); a list value in
``params`` is a grid, one condition per combination. Every condition of a study
trains in the same compiled call (per-probe methods and parameters are data).
Results carry the condition's label in ``loss``, the method's name in ``method`` and
each parameter in a ``param_<name>`` column, so a leaderboard is a group-by.
"""

from __future__ import annotations

import dataclasses
import inspect
import itertools
from collections.abc import Mapping, Sequence
from typing import Any

from probe_lab.label_methods import LABEL_METHODS, LabelMethod, get_label_method
from probe_lab.losses import LOSSES, LossMethod, get_loss
from probe_lab.registry import RegistryError, load_path

__all__ = ["Condition", "Method", "MethodError", "conditions"]

KINDS = ("", "loss", "label")


class MethodError(ValueError):
    """A study method that cannot be resolved or has bad parameters."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Method:
    """One student method of a study, with fixed parameters or a grid."""

    name: str
    """A loss method or label method: registered name or ``"module:function"``."""

    params: Mapping[str, float | Sequence[float]] = dataclasses.field(
        default_factory=dict
    )
    """Values of the method's declared parameters; a list is a grid."""

    kind: str = ""
    """``"loss"`` or ``"label"``; default: found from the name (a registered loss
    method, a registered label method, or what an import path loads: a
    :class:`~probe_lab.label_methods.LabelMethod` is a label method, anything else
    a loss)."""

    loss: str = "xent"
    """Label methods: the loss method their students train with."""

    label: str = ""
    """Name in the results (default: the name, plus the parameters)."""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise MethodError(
                f"method {self.name!r}: kind must be 'loss' or 'label', got "
                f"{self.kind!r}"
            )
        if not isinstance(self.params, Mapping):
            raise MethodError(
                f"method {self.name!r}: params must be a table of parameter values "
                f"(e.g. {{q = 0.5}}), got {self.params!r}"
            )
        spec = self.resolve()
        for key, values in self.params.items():
            if isinstance(values, list | tuple) and not values:
                raise MethodError(
                    f"method {self.name!r}: parameter {key} must be a number or a "
                    f"non-empty list of numbers, got {values!r}"
                )
        try:
            spec.resolve(self.params)
        except ValueError as err:
            raise MethodError(str(err)) from None
        if isinstance(spec, LabelMethod):
            try:
                get_loss(self.loss)
            except RegistryError as err:
                raise MethodError(f"method {self.name!r}: loss {err}") from None

    def resolve(self) -> LossMethod | LabelMethod:
        """The loss method or label method this names."""
        kind = self.kind or self._found_kind()
        try:
            return (
                get_loss(self.name) if kind == "loss" else get_label_method(self.name)
            )
        except RegistryError as err:
            raise MethodError(f"method {self.name!r}: {err}") from None

    def _found_kind(self) -> str:
        """``"loss"`` or ``"label"`` from the name (registered, or what an import
        path loads: a label method, or a function with ``kind = "label"``)."""
        if ":" in self.name:
            try:
                loaded = load_path(self.name, "method")
            except RegistryError as err:
                raise MethodError(str(err)) from None
            if (
                isinstance(loaded, LabelMethod)
                or getattr(loaded, "kind", "") == "label"
            ):
                return "label"
            if _label_signature(loaded):
                raise MethodError(
                    f"method {self.name!r} takes a label method's arguments "
                    f"{LABEL_ARGUMENTS} but does not say it is one: set "
                    f'`{self.name.partition(":")[2]}.kind = "label"` next to it '
                    f'(or kind = "label" in the method\'s table)'
                )
            return "loss"
        if self.name in LOSSES:
            return "loss"
        if self.name in LABEL_METHODS:
            return "label"
        raise MethodError(
            f"unknown method {self.name!r}: loss methods {list(LOSSES.names())}, "
            f"label methods {list(LABEL_METHODS.names())}, or an import path "
            f"'package.module:function'"
        )


LABEL_ARGUMENTS = ("features", "weak", "rows", "key", "params")
"""A label method's arguments, in order (:mod:`probe_lab.label_methods`)."""


def _label_signature(fn: Any) -> bool:
    """Whether ``fn``'s positional parameters are named as a label method's."""
    try:
        names = tuple(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return False
    return names[:3] == LABEL_ARGUMENTS[:3]


@dataclasses.dataclass(frozen=True)
class Condition:
    """One point of a method's grid: what a student of it trains with."""

    label: str  # the results' ``loss`` column
    method: str  # the results' ``method`` column
    loss: str  # the loss method
    loss_params: dict[str, float]  # given values of the loss method's parameters
    relabel: str | None = None  # the label method, if any
    relabel_params: dict[str, float] = dataclasses.field(default_factory=dict)

    @property
    def params(self) -> dict[str, float]:
        """The method's own parameters (``param_<name>`` columns)."""
        return self.relabel_params if self.relabel else self.loss_params


def _label(base: str, point: Mapping[str, float], grid: bool) -> str:
    if not point or (not grid and base):
        return base
    return f"{base}({','.join(f'{k}={v:g}' for k, v in point.items())})"


def expand(method: Method) -> list[Condition]:
    """The method's conditions: one per combination of its grid values."""
    keys = list(method.params)
    grids = [v if isinstance(v, list | tuple) else [v] for v in method.params.values()]
    is_grid = any(len(g) > 1 for g in grids)
    spec = method.resolve()
    out = []
    for combo in itertools.product(*grids):
        point = {k: float(v) for k, v in zip(keys, combo, strict=True)}
        if method.label:
            label = _label(method.label, point, is_grid)
        else:
            label = _label(method.name, point, True)
        if isinstance(spec, LabelMethod):
            out.append(
                Condition(label, method.name, method.loss, {}, method.name, point)
            )
        else:
            out.append(Condition(label, method.name, method.name, point))
    return out


def conditions(losses: Sequence[str], methods: Sequence[Method]) -> list[Condition]:
    """A study's conditions: its losses at their defaults, then its methods.

    Raises:
        MethodError: two conditions with one label.
    """
    out = [Condition(loss, loss, loss, {}) for loss in losses]
    for method in methods:
        out += expand(method)
    labels = [c.label for c in out]
    dupes = sorted({lab for lab in labels if labels.count(lab) > 1})
    if dupes:
        raise MethodError(
            f"student conditions must have distinct labels; repeated: {dupes} (give "
            f"a method label=...)"
        )
    return out


def method_from(entry: Any) -> Method:
    """A :class:`Method` from a mapping (a TOML table) or a method name."""
    if isinstance(entry, Method):
        return entry
    if isinstance(entry, str):
        return Method(name=entry)
    if isinstance(entry, Mapping):
        known = {f.name for f in dataclasses.fields(Method)}
        unknown = sorted(set(entry) - known)
        if unknown:
            raise MethodError(
                f"a method has unknown keys {unknown}; known: {sorted(known)}"
            )
        return Method(**entry)
    raise MethodError(f"a method is a name or a table, got {entry!r}")
