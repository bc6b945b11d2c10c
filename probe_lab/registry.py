"""Registries: names for the pieces a researcher plugs in.

A registry maps a name to an object (a loss method, a label method, a supervisor
kind). Besides registered names, :meth:`Registry.get` accepts an import path
``"package.module:attribute"``, so code in a researcher's own file runs without being
registered in ``probe_lab``. Each registry lives in the module that defines its kind
(``losses.LOSSES``, ``labels.LABEL_METHODS``, ``supervisors.SUPERVISORS``), and the
built-ins register themselves when that module is imported.

This module imports nothing else of the project, so every other module may use it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

__all__ = ["Registry", "RegistryError", "load_path"]

T = TypeVar("T")


class RegistryError(ValueError):
    """An unknown name, an import path that does not load, or a clash."""


class Registry(Generic[T]):
    """Names -> objects of one kind, plus ``"module:attribute"`` import paths.

    Args:
        what: what the registry holds, for messages (e.g. ``"loss method"``).
        check: called on every object registered or loaded by import path; raises
            :class:`RegistryError` (or ``TypeError``) when it is not of the kind.
    """

    def __init__(self, what: str, check: Callable[[Any, str], T] | None = None):
        self.what = what
        self._check = check
        self._items: dict[str, T] = {}
        self._loaded: dict[tuple[str, int], T] = {}

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
    except ImportError as err:
        raise RegistryError(
            f"{what} {path!r}: module {module_name!r} does not import ({err}); is "
            f"its folder on PYTHONPATH?"
        ) from err
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise RegistryError(
                f"{what} {path!r}: module {module_name!r} has no attribute {attr!r}"
            ) from None
    return obj
