"""The plug-in spec and registries: declared parameters, ranges, checks, names."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from probe_lab.registry import (
    REQUIRED,
    Namespace,
    Plugin,
    Registry,
    RegistryError,
    SettingsPlugin,
    load_path,
)


def test_resolve_fills_defaults_and_checks_ranges_types_and_the_whole():
    def distinct(values):
        if values["low"] >= values["high"]:
            raise ValueError("low must be below high")

    spec = Plugin(
        name="band",
        params={"low": 0.1, "high": 0.9},
        ranges={"low": (0, 1), "high": (0, 1)},
        check=distinct,
    )
    assert spec.params == (("low", 0.1), ("high", 0.9))
    assert spec.resolve({"low": np.float32(0.5)}) == {"low": 0.5, "high": 0.9}
    assert spec.resolve({"low": [0.2, np.int64(0)]})["low"] == [0.2, 0]
    cases = [
        ({"low": math.nan}, "'band': parameter low must be a number, got NaN"),
        ({"low": 1.5}, r"parameter low must lie in \[0, 1\], got 1.5"),
        ({"low": [0.1, 2]}, r"must lie in \[0, 1\], got \[0.1, 2\]"),
        ({"low": "a"}, "parameter low must be a number or a list of numbers"),
        ({"low": True}, "parameter low must be a number or a list of numbers"),
        ({"width": 1}, r"'band' does not declare parameter\(s\) \['width'\]"),
        ({"low": 0.95}, "plug-in 'band': low must be below high"),
        ({"low": [0.2, 0.95]}, "low must be below high"),  # each grid point
    ]
    for given, message in cases:
        with pytest.raises(ValueError, match=message):
            spec.resolve(given)


@pytest.mark.parametrize(
    ("params", "ranges", "message"),
    [
        ({"g": "two"}, {}, "the default of parameter g must be a finite number"),
        ({"g": None}, {}, "the default of parameter g must be a finite number"),
        ({"g": math.inf}, {}, "the default of parameter g must be a finite number"),
        ([1, 2], {}, r"params must be a mapping .* got \[1, 2\]"),
        ({"not a name": 1.0}, {}, "parameter names must be identifiers"),
        ({"g": 1.0}, {"h": (0, 1)}, r"ranges name undeclared parameters \['h'\]"),
        ({"g": 1.0}, {"g": (1, 0)}, "the range of g must be two numbers low <= high"),
    ],
)
def test_bad_declarations_name_the_plugin(params, ranges, message):
    with pytest.raises(RegistryError, match="plug-in 'p': " + message):
        Plugin(name="p", params=params, ranges=ranges)


def test_settings_plugins_declare_their_dataclass_fields():
    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Settings:
        k: int | None = None
        words: tuple[str, ...] = ("a", "b")

    spec = SettingsPlugin(name="s", settings=Settings, ranges={"k": (1, math.inf)})
    assert spec.defaults == {"k": None, "words": ("a", "b")}
    spec.check_settings(Settings(k=3))
    spec.check_settings(Settings())  # an optional setting left unset
    with pytest.raises(ValueError, match=r"parameter k must lie in \[1, inf\]"):
        spec.check_settings(Settings(k=0))
    with pytest.raises(ValueError, match="takes Settings settings, got int"):
        spec.check_settings(3)

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Required:
        k: int

    with pytest.raises(RegistryError, match="setting k needs a default"):
        SettingsPlugin(name="s", settings=Required)


def test_a_namespace_keeps_a_name_in_one_registry():
    names = Namespace("thing")
    first = Registry("red thing", namespace=names)
    second = Registry("blue thing", namespace=names)
    first.register("x", 1)
    with pytest.raises(RegistryError, match="'x' is already a red thing"):
        second.register("x", 2, overwrite=True)
    first.register("x", 3, overwrite=True)  # within one registry, overwrite works
    first.unregister("x")
    assert second.register("x", 2) == 2 and len(second) == 1
    assert Registry("other").register("x", 4) == 4  # its own namespace


def test_an_import_that_raises_is_one_line(tmp_path, monkeypatch):
    (tmp_path / "raises_on_import.py").write_text("raise RuntimeError('boom')\n")
    (tmp_path / "bad_syntax.py").write_text("def f(:\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for path, message in (
        ("raises_on_import:f", "RuntimeError: boom"),
        ("bad_syntax:f", "SyntaxError"),
        ("no_such_module_here:f", "is its folder on PYTHONPATH"),
    ):
        with pytest.raises(RegistryError, match=message) as info:
            load_path(path, "loss method")
        assert len(str(info.value).splitlines()) == 1
        assert str(info.value).startswith(f"loss method {path!r}")


def test_every_plugin_kind_is_on_the_one_spec():
    from probe_lab.experiments import KINDS
    from probe_lab.label_methods import LABEL_METHODS
    from probe_lab.losses import LOSSES
    from probe_lab.supervisors import SUPERVISORS
    from probe_lab.supervisors.ensemble import EnsembleSettings

    for registry in (LOSSES, LABEL_METHODS, SUPERVISORS, KINDS):
        for name in registry:
            spec = registry.get(name)
            assert isinstance(spec, Plugin) and spec.name == name
    probe = SUPERVISORS.get("probe")
    assert isinstance(probe, SettingsPlugin)
    assert probe.defaults == {"k": None, "cache": None, "layer": None, "soft": False}
    # An ensemble's default members are refused by its own settings: it must give them.
    assert SUPERVISORS.get("ensemble").settings is EnsembleSettings
    assert SUPERVISORS.get("ensemble").defaults["params"] is REQUIRED


def test_supervisor_kinds_take_ranges_and_a_check_of_their_values():
    from probe_lab.study import StudyError, Supervisor
    from probe_lab.supervisors import SUPERVISORS, WeakLabels, register_supervisor

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Settings:
        low: float = 0.1
        high: float = 0.9

    def check(values):
        if values["low"] >= values["high"]:
            raise ValueError("low must be below high")

    def label(sup, ctx):
        return WeakLabels(targets=ctx.truth, hard=ctx.truth, weak_acc=1.0)

    # A supervisor kind is its own namespace: it may take a method's name.
    kind = register_supervisor(
        "gce", settings=Settings, ranges={"low": (0, 1)}, check=check
    )(label)
    try:
        assert SUPERVISORS.get("gce") is kind and kind.defaults["high"] == 0.9
        assert Supervisor(kind="gce", low=0.2).low == 0.2
        with pytest.raises(StudyError, match=r"parameter low must lie in \[0, 1\]"):
            Supervisor(kind="gce", low=-1.0)
        with pytest.raises(StudyError, match="'gce': low must be below high"):
            Supervisor(kind="gce", low=0.95)
        with pytest.raises(RegistryError, match="check_study is not callable"):
            register_supervisor("bad", check_study=3)(label)
    finally:
        SUPERVISORS.unregister("gce")
