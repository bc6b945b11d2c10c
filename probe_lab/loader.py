"""One loader for config dataclasses from plain data (a parsed TOML file).

:func:`from_mapping` builds a frozen, keyword-only dataclass from a mapping. It names
unknown keys (listing the known ones) and missing ones, checks every value against
its field's annotation, and converts the plain forms TOML gives: lists become tuples,
integers become floats where a float is wanted, tables become nested dataclasses.
The dataclass's ``__post_init__`` then checks the values themselves (ranges,
choices), as it does for a config built in Python.

Annotations it understands (string annotations are resolved with
:func:`typing.get_type_hints`): ``int`` (not ``bool``), ``float`` (integers
accepted), ``bool`` (not integers), ``str``, ``X | Y`` and ``X | None``,
``tuple[X, ...]``, ``tuple[X, Y]``, ``Sequence[X]``, ``Mapping[str, Any]`` (passed
through), ``Any``, a nested dataclass (from a table, or an instance as is), and
any other class (an instance as is, e.g. ``np.ndarray``).

A field whose plain form differs from its Python value names a function in its
metadata, ``dataclasses.field(..., metadata={"parse": fn})``: ``fn`` maps the plain
value first (e.g. ``"all"`` to ``None`` in a list of sizes), then the type check runs.

Every error is a :class:`ConfigError` naming the key path, the type wanted and the
value got: ``study.seeds must be an integer, got 'three' (str)``.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["ConfigError", "check_fields", "from_mapping"]

_T = typing.TypeVar("_T")


class ConfigError(ValueError):
    """Plain data that does not fit a config dataclass.

    Attributes:
        path: the key path of the offending value, e.g. ``study.train.epochs``
            (empty for the top-level table).
    """

    def __init__(self, message: str, path: str = "") -> None:
        super().__init__(message)
        self.path = path


def from_mapping(
    cls: type[_T],
    data: Any,
    *,
    where: str = "",
    fixed: Mapping[str, Any] | None = None,
) -> _T:
    """Build the dataclass ``cls`` from plain data, checking keys and types.

    Args:
        cls: a dataclass (by this project's convention frozen and keyword-only).
        data: a mapping of field names to plain values (a parsed TOML table).
        where: the key path of ``data`` in its file (``study``, ``study.train``),
            prefixed to every key in messages; empty for the top level.
        fixed: fields the caller sets rather than ``data`` (passed as given, not
            type-checked); a key of ``data`` naming one of them is unknown.

    Returns:
        ``cls(**converted data, **fixed)``; fields absent from both keep their
        defaults.

    Raises:
        ConfigError: ``data`` is not a mapping, has unknown keys, lacks a required
            field, or holds a value of the wrong type.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"{_table(cls, where)} must be a table, got {_shown(data)}", where
        )
    fixed = dict(fixed or {})
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    known = sorted(set(fields) - set(fixed))
    unknown = sorted(set(data) - set(known), key=str)
    if unknown:
        raise ConfigError(
            f"{_table(cls, where)} has unknown keys {unknown}; known: {known}", where
        )
    for name in known:
        field = fields[name]
        required = (
            field.default is dataclasses.MISSING
            and field.default_factory is dataclasses.MISSING
        )
        if required and name not in data:
            raise ConfigError(
                f"{_table(cls, where)} needs {name} = ... ({_describe(hints[name])})",
                where,
            )
    values = {}
    for name, value in data.items():
        parse = fields[name].metadata.get("parse")
        if parse is not None:
            value = parse(value)
        values[name] = _convert(hints[name], value, _key(where, name))
    return cls(**values, **fixed)


def check_fields(obj: Any, *, skip: Sequence[str] = ()) -> None:
    """Type-check a dataclass built in Python as :func:`from_mapping` checks plain
    data, and store the converted values (lists as tuples, integers as floats);
    for a frozen dataclass's ``__post_init__``.

    Args:
        obj: the dataclass instance.
        skip: fields left as given (their own ``__post_init__`` code parses them).

    Raises:
        ConfigError: naming the field, the type wanted and the value got.
    """
    hints = typing.get_type_hints(type(obj))
    for field in dataclasses.fields(obj):
        if field.name in skip or not field.init:
            continue
        value = _convert(hints[field.name], getattr(obj, field.name), field.name)
        object.__setattr__(obj, field.name, value)


def _key(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _table(cls: type, where: str) -> str:
    """How messages name the table at ``where``: ``[study.train]``, or
    ``study.supervisors[2]`` for an entry of an array of tables."""
    if not where:
        return cls.__name__
    return where if where.endswith("]") else f"[{where}]"


def _shown(value: Any) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} ({type(value).__name__})"


def _mismatch(tp: Any, value: Any, path: str) -> ConfigError:
    return ConfigError(f"{path} must be {_describe(tp)}, got {_shown(value)}", path)


def _args(tp: Any) -> tuple[Any, ...]:
    return typing.get_args(tp)


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType)


def _is_sequence(tp: Any) -> bool:
    origin = typing.get_origin(tp)
    return origin is tuple or origin is Sequence or origin is list


def _is_mapping(tp: Any) -> bool:
    return typing.get_origin(tp) in (dict, Mapping) or tp in (dict, Mapping)


def _convert(tp: Any, value: Any, path: str) -> Any:
    """``value`` as field type ``tp`` (lists to tuples, ints to floats, tables to
    dataclasses), or a :class:`ConfigError` naming ``path``."""
    if tp is Any:
        return value
    if _is_union(tp):
        return _convert_union(tp, value, path)
    if isinstance(tp, type) and hasattr(tp, "from_mapping"):
        # A class that builds itself from a table (a Supervisor: its keys
        # depend on its kind).
        if isinstance(value, tp):
            return value
        if isinstance(value, Mapping):
            return tp.from_mapping(value, where=path)
    elif dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if isinstance(value, Mapping):
            return from_mapping(tp, value, where=path)
    elif _is_sequence(tp):
        if isinstance(value, list | tuple):
            return _convert_items(tp, value, path)
    elif _is_mapping(tp):
        if isinstance(value, Mapping):
            return value
    elif tp is bool:
        if isinstance(value, bool | np.bool_):
            return bool(value)
    elif tp is int:
        if isinstance(value, int | np.integer) and not isinstance(value, bool):
            return int(value)
    elif tp is float:
        if isinstance(value, int | float | np.integer | np.floating) and not (
            isinstance(value, bool)
        ):
            return float(value)
    elif tp is type(None):
        if value is None:
            return value
    elif isinstance(tp, type) and isinstance(value, tp):
        return value
    raise _mismatch(tp, value, path)


def _convert_union(tp: Any, value: Any, path: str) -> Any:
    """The first member of the union that takes ``value``. A member that takes
    its shape but fails deeper (a list with one bad item) gives the error."""
    deeper = None
    for member in _args(tp):
        try:
            return _convert(member, value, path)
        except ConfigError as err:
            if err.path != path and deeper is None:
                deeper = err
    raise deeper or _mismatch(tp, value, path)


def _convert_items(tp: Any, value: list | tuple, path: str) -> tuple:
    args = _args(tp)
    if typing.get_origin(tp) is tuple and not (len(args) == 2 and args[1] is ...):
        if len(value) != len(args):
            raise _mismatch(tp, value, path)
        items = args
    else:
        items = (args[0] if args else Any,) * len(value)
    return tuple(
        _convert(item, v, f"{path}[{i}]")
        for i, (item, v) in enumerate(zip(items, value, strict=True))
    )


_NOUNS = {
    int: ("an integer", "integers"),
    float: ("a number", "numbers"),
    bool: ("true or false", "booleans"),
    str: ("a string", "strings"),
    type(None): ("None", "None"),
    np.ndarray: ("an array", "arrays"),
}


def _describe(tp: Any, *, plural: bool = False) -> str:
    """``tp`` in words for messages: ``a list of integers or None``."""
    if tp is Any:
        return "values" if plural else "any value"
    if _is_union(tp):
        parts = [_describe(member, plural=plural) for member in _args(tp)]
        return ", ".join(parts[:-1]) + " or " + parts[-1]
    if tp in _NOUNS:
        return _NOUNS[tp][plural]
    if dataclasses.is_dataclass(tp) or _is_mapping(tp):
        return "tables" if plural else "a table"
    if _is_sequence(tp):
        args = _args(tp)
        if typing.get_origin(tp) is tuple and not (len(args) == 2 and args[1] is ...):
            if len(set(args)) == 1:
                inner = f"{len(args)} {_describe(args[0], plural=True)}"
            else:
                inner = ", ".join(_describe(a) for a in args)
        else:
            inner = _describe(args[0] if args else Any, plural=True)
        return ("lists of " if plural else "a list of ") + inner
    name = getattr(tp, "__name__", str(tp))
    return f"{name} values" if plural else f"a {name}"
