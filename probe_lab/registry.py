"""Registries and the plug-in spec: names for the pieces a researcher plugs in.

Every piece a researcher plugs in (a loss method, a label method, a supervisor kind,
an experiment kind) is a :class:`Plugin`: a **name**, **declared parameters** with
defaults, closed **ranges** some of them must lie in, and a **check** of a whole set
of values (what no single range says, e.g. "sizes increase"). Each kind of plug-in
subclasses it with what it runs (a loss function, a relabel function, an
experiment's ``run``).

A :class:`Registry` maps names to plug-ins of one kind. Besides registered names,
:meth:`Registry.get` accepts an import path ``"package.module:attribute"``, so code
in a researcher's own file runs without being registered in ``probe_lab`` (a study
or experiment TOML that names one imports and runs that code). Each registry lives
in the module that defines its kind (``losses.LOSSES``,
``label_methods.LABEL_METHODS``, ``experiments.KINDS``), and the built-ins register
themselves when that module is imported. Registries that share a
:class:`Namespace` (the loss and label methods share :data:`METHOD_NAMES`) refuse a
name another of them holds, so a name means one thing wherever it is written.

This module imports nothing else of the project, so every other module may use it.
"""

from __future__ import annotations

import dataclasses
import importlib
import itertools
import math
import numbers
from collections.abc import Callable, Iterator, Mapping
from typing import Any, ClassVar, Generic, TypeVar

import numpy as np

__all__ = [
    "METHOD_NAMES",
    "REQUIRED",
    "Namespace",
    "NoSettings",
    "Plugin",
    "Registry",
    "RegistryError",
    "SettingsPlugin",
    "is_number",
    "load_path",
]

T = TypeVar("T")


class RegistryError(ValueError):
    """An unknown name, an import path that does not load, a clash, or a plug-in
    whose declared parameters or values are wrong; the message names it."""


def is_number(value: Any) -> bool:
    """A real number: Python or NumPy ints and floats, not bools."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool | np.bool_)


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False)
class Plugin:
    """The spec every plug-in shares: name, declared parameters, ranges, check.

    Instances hash by identity, so compiled code that specializes on a plug-in is
    reused exactly as long as the same object is. Subclasses set :attr:`what` (for
    messages) and :attr:`numeric` (whether every parameter is a number).
    """

    what: ClassVar[str] = "plug-in"
    """What it is, for messages (``"loss method"``)."""

    numeric: ClassVar[bool] = True
    """Every declared parameter is a real number (methods: a parameter arrives in
    the compiled step as a ``(P,)`` array); else only ranged ones are."""

    name: str
    """The registered name (or the import path it was loaded from)."""

    params: Any = ()
    """Declared parameters and their defaults: a mapping ``{name: default}`` or
    ``(name, default)`` pairs, kept as pairs in order."""

    ranges: Any = ()
    """Closed intervals values must lie in: ``{name: (low, high)}`` or
    ``(name, low, high)`` triples, kept as triples (``math.nextafter`` gives an
    open end; a list value is checked element by element)."""

    check: Callable[[Mapping[str, Any]], None] | None = None
    """``check(values)`` raises ``ValueError`` naming what is wrong with a whole set
    of values (each within its range), e.g. two that must differ; for a numeric
    plug-in given a grid, it sees each point of the grid."""

    def __post_init__(self) -> None:
        where = f"{self.what} {self.name!r}"
        params = _declared(self.params, where)
        for key, default in params:
            if self.numeric and not _finite_number(default):
                raise RegistryError(
                    f"{where}: the default of parameter {key} must be a finite "
                    f"number, got {default!r}"
                )
        if self.numeric:
            params = tuple((key, float(default)) for key, default in params)
        object.__setattr__(self, "params", params)
        object.__setattr__(self, "ranges", _ranges(self.ranges, where))
        undeclared = sorted({k for k, _, _ in self.ranges} - set(self.defaults))
        if undeclared:
            raise RegistryError(
                f"{where}: ranges name undeclared parameters {undeclared}; it "
                f"declares {sorted(self.defaults)}"
            )
        if self.check is not None and not callable(self.check):
            raise RegistryError(f"{where}: check is not callable")

    @property
    def defaults(self) -> dict[str, Any]:
        """``{parameter: default}``."""
        return dict(self.params)

    def check_values(self, name: str, values: Any) -> None:
        """Refuse values of one parameter (a value or a list of them, a grid) that
        are not numbers where numbers are wanted, NaN, or outside the range.

        Raises:
            ValueError: naming the plug-in, the parameter and the values.
        """
        where = f"{self.what} {self.name!r}: parameter {name}"
        bounds = [(lo, hi) for k, lo, hi in self.ranges if k == name]
        if not (self.numeric or bounds):
            return
        items = list(values) if isinstance(values, list | tuple) else [values]
        if not self.numeric:  # an optional setting left unset
            items = [v for v in items if v is not None]
        if not all(is_number(v) for v in items):
            raise ValueError(
                f"{where} must be a number or a list of numbers, got {values!r}"
            )
        array = np.asarray(items, np.float64)
        if np.isnan(array).any():
            raise ValueError(f"{where} must be a number, got NaN ({values!r})")
        for low, high in bounds:
            if np.any((array < low) | (array > high)):
                raise ValueError(
                    f"{where} must lie in [{low:g}, {high:g}], got {values!r}"
                )

    def resolve(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """The defaults with ``given`` values in their place, every one checked.

        Raises:
            ValueError: an undeclared parameter, a value outside its range, or what
                :attr:`check` refuses; the message names the plug-in.
        """
        unknown = sorted(set(given) - set(self.defaults))
        if unknown:
            raise ValueError(
                f"{self.what} {self.name!r} does not declare parameter(s) "
                f"{unknown}; it declares {sorted(self.defaults)}"
            )
        values = self.defaults | dict(given)
        for key, value in values.items():
            self.check_values(key, value)
        if self.check is not None:
            for point in _grid_points(values) if self.numeric else [values]:
                try:
                    self.check(point)
                except ValueError as err:
                    raise ValueError(f"{self.what} {self.name!r}: {err}") from None
        return values


def _grid_points(values: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every combination of a grid's values (a list value is a grid axis)."""
    axes = [v if isinstance(v, list | tuple) else [v] for v in values.values()]
    return [dict(zip(values, p, strict=True)) for p in itertools.product(*axes)]


class _Required:
    """The declared default of a setting that must be given: its dataclass's
    default factory builds a value its own checks refuse (an ensemble's members)."""

    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED = _Required()
"""The default :class:`SettingsPlugin` declares for a setting that must be given."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class NoSettings:
    """The settings of a kind that has none of its own."""


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False)
class SettingsPlugin(Plugin):
    """A plug-in whose parameters are the fields of a settings dataclass.

    For kinds with typed settings of any type (an experiment kind's
    ``[experiment]`` keys, a supervisor kind's settings): the declared parameters
    are the fields of :attr:`settings` with their defaults (each field needs one;
    a default factory whose value the dataclass refuses declares :data:`REQUIRED`),
    so ``params`` is not given; ``ranges`` apply to the numeric ones and ``check``
    to a whole set of values, as for any :class:`Plugin`.
    """

    numeric: ClassVar[bool] = False

    settings: type = NoSettings
    """A frozen, keyword-only dataclass: one field per setting, with a default."""

    def __post_init__(self) -> None:
        where = f"{self.what} {self.name!r}"
        if not dataclasses.is_dataclass(self.settings):
            raise RegistryError(
                f"{where}: settings must be a dataclass, got {self.settings!r}"
            )
        if self.params:
            raise RegistryError(
                f"{where}: declare its parameters as fields of its settings "
                f"dataclass, not as params"
            )
        declared = {}
        for field in dataclasses.fields(self.settings):
            if field.default is not dataclasses.MISSING:
                declared[field.name] = field.default
            elif field.default_factory is not dataclasses.MISSING:
                try:
                    declared[field.name] = field.default_factory()
                except ValueError:  # a default that its own checks refuse
                    declared[field.name] = REQUIRED
            else:
                raise RegistryError(f"{where}: setting {field.name} needs a default")
        object.__setattr__(self, "params", declared)
        super().__post_init__()

    def check_settings(self, settings: Any) -> None:
        """Refuse settings of another class, outside their ranges, or that
        :attr:`check` refuses.

        Raises:
            ValueError: naming the plug-in and the setting.
        """
        if not isinstance(settings, self.settings):
            raise ValueError(
                f"{self.what} {self.name!r} takes {self.settings.__name__} settings, "
                f"got {type(settings).__name__}"
            )
        fields = dataclasses.fields(settings)
        self.resolve({f.name: getattr(settings, f.name) for f in fields})


def _finite_number(value: Any) -> bool:
    return is_number(value) and math.isfinite(float(value))


def _declared(params: Any, where: str) -> tuple[tuple[str, Any], ...]:
    """``params`` as ``(name, default)`` pairs, refusing any other shape."""
    if isinstance(params, Mapping):
        pairs = list(params.items())
    elif isinstance(params, tuple) and all(
        isinstance(p, tuple) and len(p) == 2 for p in params
    ):
        pairs = list(params)
    else:
        raise RegistryError(
            f"{where}: params must be a mapping of parameter names to default "
            f"values (e.g. {{'gamma': 2.0}}), got {params!r}"
        )
    for key, _ in pairs:
        if not isinstance(key, str) or not key.isidentifier():
            raise RegistryError(
                f"{where}: parameter names must be identifiers, got {key!r}"
            )
    return tuple(pairs)


def _ranges(ranges: Any, where: str) -> tuple[tuple[str, float, float], ...]:
    """``ranges`` as ``(name, low, high)`` triples of finite-or-infinite bounds."""
    items = ranges.items() if isinstance(ranges, Mapping) else ranges
    out = []
    for item in items:
        key, bounds = (item[0], item[1:]) if len(item) == 3 else item
        low, high = bounds
        if not (is_number(low) and is_number(high)) or not low <= high:
            raise RegistryError(
                f"{where}: the range of {key} must be two numbers low <= high, got "
                f"{tuple(bounds)!r}"
            )
        out.append((str(key), float(low), float(high)))
    return tuple(out)


class Namespace:
    """Names shared by several registries: a name one holds, the others refuse."""

    def __init__(self, what: str):
        self.what = what
        self.registries: list[Registry[Any]] = []

    def holder(self, name: str, asking: Registry[Any]) -> Registry[Any] | None:
        """The other registry of this namespace that holds ``name``, if any."""
        for registry in self.registries:
            if registry is not asking and name in registry:
                return registry
        return None


METHOD_NAMES = Namespace("method")
"""The loss and label methods' names: a study's ``methods`` names either kind."""


class Registry(Generic[T]):
    """Names -> objects of one kind, plus ``"module:attribute"`` import paths.

    Args:
        what: what the registry holds, for messages (e.g. ``"loss method"``).
        check: called on every object registered or loaded by import path; raises
            :class:`RegistryError` (or ``TypeError``) when it is not of the kind.
        namespace: names this registry shares with others (a name registered in
            one is refused by the others); default: its own.
    """

    def __init__(
        self,
        what: str,
        check: Callable[[Any, str], T] | None = None,
        *,
        namespace: Namespace | None = None,
    ):
        self.what = what
        self._check = check
        self._items: dict[str, T] = {}
        self._loaded: dict[tuple[str, int], T] = {}
        self.namespace = namespace or Namespace(what)
        self.namespace.registries.append(self)

    def register(self, name: str, item: Any, *, overwrite: bool = False) -> T:
        """Register ``item`` under ``name`` and return it (after the kind check).

        Raises:
            RegistryError: the name is taken and ``overwrite`` is False, or the
                name is not a plain identifier-like string.
        """
        if not isinstance(name, str) or not name or ":" in name:
            raise RegistryError(
                f"a {self.what} name must be a non-empty string without ':', got "
                f"{name!r}"
            )
        other = self.namespace.holder(name, self)
        if other is not None:
            raise RegistryError(
                f"{name!r} is already a {other.what}; a {self.namespace.what} name "
                f"means one thing wherever a config writes it, so a {self.what} "
                f"cannot take it: pick another name"
            )
        if name in self._items and not overwrite:
            raise RegistryError(
                f"a {self.what} named {name!r} is already registered; pick another "
                f"name or pass overwrite=True"
            )
        checked = self._check(item, name) if self._check else item
        self._items[name] = checked
        return checked

    def unregister(self, name: str) -> None:
        """Remove a registered name (tests and notebooks re-defining a method)."""
        self._items.pop(name, None)

    def get(self, name: str) -> T:
        """The object registered as ``name``, or loaded from ``"module:attr"``.

        Raises:
            RegistryError: naming the registered choices, or why the import failed.
        """
        if not isinstance(name, str):
            raise RegistryError(f"a {self.what} is named by a string, got {name!r}")
        if name in self._items:
            return self._items[name]
        if ":" not in name:
            raise RegistryError(
                f"unknown {self.what} {name!r}; registered: {sorted(self._items)}, "
                f"or give an import path 'package.module:function'"
            )
        item = load_path(name, self.what)
        # The same loaded object gives the same checked object, so the compiled
        # trainer (which specializes on it) is reused across calls.
        key = (name, id(item))
        if key not in self._loaded:
            self._loaded[key] = self._check(item, name) if self._check else item
        return self._loaded[key]

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))

    def __len__(self) -> int:
        return len(self._items)

    def names(self) -> tuple[str, ...]:
        """The registered names, sorted."""
        return tuple(sorted(self._items))


def load_path(path: str, what: str = "object") -> Any:
    """Import ``"package.module:attribute"`` (dots allowed in the attribute).

    Raises:
        RegistryError: the module does not import or has no such attribute.
    """
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise RegistryError(
            f"{what} import path {path!r} must look like 'package.module:function'"
        )
    try:
        obj: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        raise RegistryError(
            f"{what} {path!r}: module {module_name!r} does not import ({err}); is "
            f"its folder on PYTHONPATH?"
        ) from err
    except Exception as err:  # the module's own code failed: a SyntaxError, ...
        raise RegistryError(
            f"{what} {path!r}: importing module {module_name!r} failed: "
            f"{type(err).__name__}: {err}"
        ) from err
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise RegistryError(
                f"{what} {path!r}: module {module_name!r} has no attribute {attr!r}"
            ) from None
    return obj
