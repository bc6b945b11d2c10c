"""The one config loader: keys, types and key paths, on made-up and real configs."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from probe_lab import TrainConfig
from probe_lab.experiments import CacheSpec
from probe_lab.loader import ConfigError, from_mapping
from probe_lab.study import StudyConfig, Supervisor


@dataclasses.dataclass(frozen=True, kw_only=True)
class Inner:
    k: int
    name: str = ""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Outer:
    count: int
    rate: float = 0.5
    flag: bool = False
    label: str = ""
    limit: int | None = None
    sizes: tuple[int, ...] = ()
    slots: tuple[int | None, ...] = (None,)
    pair: tuple[str, str] = ("a", "b")
    per_probe: float | Sequence[float] = 1.0
    inner: Inner = Inner(k=1)
    inners: tuple[Inner, ...] = ()
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)


def _sizes(value: Any) -> Any:
    return [None if v == "all" else v for v in value]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Parsed:
    students: tuple[int | None, ...] = dataclasses.field(
        default=(None,), metadata={"parse": _sizes}
    )


ints = st.integers(-(10**6), 10**6)
floats = st.floats(allow_nan=False, allow_infinity=False)
text = st.text(max_size=8)
inner = st.builds(Inner, k=ints, name=text)
outer = st.builds(
    Outer,
    count=ints,
    rate=floats | ints,
    flag=st.booleans(),
    label=text,
    limit=st.none() | ints,
    sizes=st.tuples() | st.lists(ints, max_size=4).map(tuple),
    slots=st.lists(st.none() | ints, max_size=4).map(tuple),
    pair=st.tuples(text, text),
    per_probe=floats | st.lists(floats, max_size=4).map(tuple),
    inner=inner,
    inners=st.lists(inner, max_size=3).map(tuple),
    extra=st.dictionaries(text, ints, max_size=3),
)


def plain(value: Any) -> Any:
    """What a TOML file would give for ``value``: tables and lists."""
    if dataclasses.is_dataclass(value):
        value = dataclasses.asdict(value)
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [plain(v) for v in value]
    return value


@settings(max_examples=60, deadline=None)
@given(outer)
def test_plain_data_reads_back_as_the_config_it_came_from(config):
    assert from_mapping(Outer, plain(config)) == config


@settings(max_examples=60, deadline=None)
@given(
    st.sampled_from(["count", "rate", "flag", "label", "sizes", "pair", "inner"]),
    st.one_of(text, ints, floats, st.booleans(), st.lists(text, min_size=1)),
)
def test_a_value_of_the_wrong_type_names_its_key_and_the_value(key, value):
    number = isinstance(value, int | float) and not isinstance(value, bool)
    accepted = {
        "count": number and isinstance(value, int),
        "rate": number,
        "flag": isinstance(value, bool),
        "label": isinstance(value, str),
        "sizes": False,  # lists of text never fit, nor scalars
        "pair": isinstance(value, list) and len(value) == 2,
        "inner": False,
    }
    data = {"count": 1, key: value}
    if accepted[key]:
        assert plain(getattr(from_mapping(Outer, data, where="t"), key)) == value
        return
    with pytest.raises(ConfigError) as err:
        from_mapping(Outer, data, where="t")
    message, path = str(err.value), err.value.path
    assert message.startswith(f"{path} must be ")
    if path == f"t.{key}":
        assert f"got {repr(value)[:40]}" in message
    else:  # one item of a list is wrong, and named
        assert path.startswith(f"t.{key}[")


@settings(max_examples=40, deadline=None)
@given(st.text(min_size=1, max_size=10))
def test_unknown_keys_are_named_with_the_known_ones(key):
    fields = {f.name for f in dataclasses.fields(Outer)}
    if key in fields:
        return
    with pytest.raises(ConfigError, match="has unknown keys") as err:
        from_mapping(Outer, {"count": 1, key: 0}, where="x.y")
    message = str(err.value)
    assert message.startswith("[x.y] has unknown keys")
    assert repr(key) in message and "known: ['count', 'extra'," in message


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"seeds": "three"}, "study.seeds must be an integer, got 'three' (str)"),
        ({"seeds": True}, "study.seeds must be an integer, got True (bool)"),
        ({"seeds": 2.0}, "study.seeds must be an integer, got 2.0 (float)"),
        (
            {"students": 16},
            "study.students must be a list of integers or None, got 16 (int)",
        ),
        (
            {"losses": "xent"},
            "study.losses must be a list of strings, got 'xent' (str)",
        ),
        ({"dynamics": 1}, "study.dynamics must be true or false, got 1 (int)"),
        (
            {"train": {"epochs": "5"}},
            "study.train.epochs must be an integer, got '5' (str)",
        ),
        (
            {"train": {"lr": [0.1, "fast"]}},
            "study.train.lr[1] must be a number, got 'fast' (str)",
        ),
        (
            {"train": {"lr": "fast"}},
            "study.train.lr must be a number, a list of numbers or an array, got "
            "'fast' (str)",
        ),
        ({"train": 5}, "study.train must be a table, got 5 (int)"),
        (
            {"supervisors": [{"kind": "probe"}, {"kind": "probe", "k": "8"}]},
            "study.supervisors[1].k must be an integer or None, got '8' (str)",
        ),
        (
            {"supervisors": [{"kind": "probe", "kk": 8}]},
            "study.supervisors[0] has unknown keys ['kk'] for kind 'probe'; known: "
            "['cache', 'k', 'kind', 'layer', 'name', 'soft']",
        ),
        ({"supervisors": {"kind": "probe"}}, "study.supervisors must be a list of"),
        ({"seedz": 3}, "[study] has unknown keys ['seedz']; known: ['basis',"),
    ],
)
def test_study_config_errors_name_the_key_path(data, message):
    with pytest.raises(ConfigError) as err:
        from_mapping(StudyConfig, {"cache": "c.h5", **data}, where="study")
    assert str(err.value).startswith(message)


def test_a_study_config_reads_from_plain_data_and_back():
    data = {
        "cache": "c.h5",
        "students": [4, None],
        "losses": ["xent", "confidence"],
        "seeds": 2,
        "test_frac": 1 / 4,
        "supervisors": [{"kind": "probe", "k": 4}, {"kind": "random"}],
        "train": {"epochs": 5, "lr": 0.1, "l2": 0},
    }
    config = from_mapping(StudyConfig, data)
    assert config.students == (4, None) and config.seeds == 2
    assert config.supervisors == (
        Supervisor(kind="probe", k=4),
        Supervisor(kind="random"),
    )
    assert config.train == TrainConfig(epochs=5, lr=0.1, l2=0.0)
    assert isinstance(config.train.l2, float)
    with pytest.raises(ConfigError, match=r"^StudyConfig needs cache = \.\.\. "):
        from_mapping(StudyConfig, {"seeds": 2})


def test_instances_and_fixed_fields_pass_as_given():
    inner = Inner(k=3)
    assert from_mapping(Outer, {"count": 1, "inner": inner}).inner is inner
    array = np.ones(3)
    train = from_mapping(TrainConfig, {"lr": array})
    assert train.lr == (1.0, 1.0, 1.0)  # TrainConfig's own check makes it a tuple
    got = from_mapping(Outer, {"label": "x"}, fixed={"count": 7})
    assert (got.count, got.label) == (7, "x")
    with pytest.raises(ConfigError, match=r"unknown keys \['count'\]"):
        from_mapping(Outer, {"count": 1}, fixed={"count": 7})


def test_fixed_length_tuples_and_nested_lists_check_every_item():
    with pytest.raises(ConfigError, match=r"^pair must be a list of 2 strings"):
        from_mapping(Outer, {"count": 1, "pair": ["a", "b", "c"]})
    with pytest.raises(ConfigError, match=r"^inners\[1\]\.k must be an integer"):
        from_mapping(Outer, {"count": 1, "inners": [{"k": 1}, {"k": None}]})
    with pytest.raises(ConfigError, match=r"^inners\[0\] needs k = \.\.\."):
        from_mapping(Outer, {"count": 1, "inners": [{}]})
    with pytest.raises(ConfigError, match=r"^Outer must be a table, got \[1\]"):
        from_mapping(Outer, [1])


def test_a_field_can_parse_its_plain_form_first():
    assert from_mapping(Parsed, {"students": [4, "all"]}).students == (4, None)
    with pytest.raises(ConfigError, match=r"students\[0\] must be an integer or"):
        from_mapping(Parsed, {"students": ["most"]})


def test_cache_spec_reads_layers_as_all_or_integers():
    assert from_mapping(CacheSpec, {"layers": [0, -1]}).layers == (0, -1)
    assert from_mapping(CacheSpec, {"layers": "all"}).layers == "all"
    with pytest.raises(ConfigError, match=r"cache\.layers\[1\] must be an integer"):
        from_mapping(CacheSpec, {"layers": [0, "last"]}, where="cache")
    with pytest.raises(ConfigError, match=r"cache\.size must be an integer or None"):
        from_mapping(CacheSpec, {"size": "600"}, where="cache")
