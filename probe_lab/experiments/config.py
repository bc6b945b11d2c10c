"""Experiment files: what they hold, where they live and how one is read, and the
registry of experiment kinds.

An experiment file has four tables:

* ``[experiment]``: ``name``, ``figure``, ``kind`` (a registered experiment kind,
  see :data:`KINDS`, or an import path ``"package.module:KIND"``) and the kind's
  own settings (its :class:`ExperimentKind` ``settings`` dataclass: ``references``
  and ``levels`` for ``simulation_difficulty``, ...);
* ``[cache]``: the features to build when no cache is given (:class:`CacheSpec`);
* ``[study]`` with ``[study.train]`` and ``[[study.supervisors]]``: passed to
  :class:`~probe_lab.study.StudyConfig` (the cache is filled in at run time);
* ``[smoke]`` (and optionally ``[demo]``): overrides merged into the tables above
  (tables merge key by key, lists and values replace) for a seconds-long run.

The packaged experiments ship inside this package (``configs/<name>.toml``, read
with :mod:`importlib.resources`), so an installed wheel runs them by name; the
repository's ``experiments/`` folder links to the same files.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.resources
import json
import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, ClassVar

from probe_lab.loader import ConfigError, from_mapping
from probe_lab.registry import NoSettings, Registry, RegistryError, SettingsPlugin
from probe_lab.study import StudyConfig, StudyError, Supervisor
from probe_lab.supervisors import reference_name

__all__ = [
    "KINDS",
    "PRESETS",
    "CacheSpec",
    "ExperimentConfig",
    "ExperimentError",
    "ExperimentKind",
    "NoSettings",
    "experiment_configs",
    "read_experiment",
    "register_kind",
]

PRESETS = ("full", "smoke", "demo")
"""Sizes of an experiment: as written, or with the ``[smoke]`` or ``[demo]`` table
merged in."""

_TABLES = ("experiment", "cache", "study", *PRESETS[1:])


class ExperimentError(ValueError):
    """An experiment file or run that cannot proceed; the message says the fix."""


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False)
class ExperimentKind(SettingsPlugin):
    """An analysis: its settings, its claim, and ``run`` (studies, checks, figure).

    The declared parameters are the fields of :attr:`settings` with their defaults
    (the ``[experiment]`` keys besides name, figure and kind); ``ranges`` and
    ``check`` (:class:`~probe_lab.registry.Plugin`) refuse bad values when a file
    is read. A kind module builds one and registers it with :func:`register_kind`.
    """

    what: ClassVar[str] = "experiment kind"

    claim: str
    """The paper's finding (or what the project expects), in words; the report
    prints it next to what was measured."""

    run: Callable[[Any], Any]
    """``run(ctx: Context) -> Analysis``: run the studies, check the claims, draw
    and save the figure (:mod:`probe_lab.experiments.base`)."""

    settings: type = NoSettings
    """A frozen, keyword-only dataclass of the kind's ``[experiment]`` keys, each
    with a default and a docstring (types are checked when a file is read); the
    default has none."""

    supervisor_sets: Callable[[Any], list[list[Any]]] | None = None
    """For a kind that builds its own supervisors instead of reading
    ``[[study.supervisors]]``: ``supervisor_sets(config)``, the supervisors of each
    study it runs (checked when the file loads)."""

    def __post_init__(self) -> None:
        if not callable(self.run):
            raise RegistryError(f"experiment kind {self.name!r}: run is not callable")
        super().__post_init__()

    def read_settings(self, data: Mapping[str, Any], where: str = "experiment") -> Any:
        """The kind's settings from the ``[experiment]`` keys besides name, figure
        and kind, types and values checked.

        Raises:
            ConfigError: an unknown key or a value of the wrong type.
            ExperimentError: a value the kind refuses.
        """
        settings = from_mapping(self.settings, data, where=where)
        self.check_settings(settings)
        return settings

    def check_settings(self, settings: Any) -> None:
        """Refuse settings outside their ranges or that :attr:`check` refuses.

        Raises:
            ExperimentError: naming the kind and the setting.
        """
        try:
            super().check_settings(settings)
        except ValueError as err:
            raise ExperimentError(str(err)) from None


def _as_kind(item: Any, name: str) -> ExperimentKind:
    if isinstance(item, ExperimentKind):
        return item
    raise RegistryError(
        f"experiment kind {name!r} is a {type(item).__name__}, not an "
        f"ExperimentKind (build one and name it 'package.module:KIND')"
    )


KINDS: Registry[ExperimentKind] = Registry("experiment kind", _as_kind)
"""The analyses, by name: one per paper figure (Fig. 23, 24, 25, 26, 27), the
method leaderboard, Fig. 24's comparison against data size, and the task suite;
each built-in kind is the module of this package with its name, registered when
the package is imported."""


def register_kind(**fields: Any) -> ExperimentKind:
    """Build an :class:`ExperimentKind` and register it under its ``name``.

    Args:
        **fields: the :class:`ExperimentKind` fields (``name``, ``claim``, ``run``,
            ``settings``, ``ranges``, ``check``, ``supervisor_sets``).

    Returns:
        The registered kind.
    """
    kind = ExperimentKind(**fields)
    return KINDS.register(kind.name, kind)


def get_kind(name: str) -> ExperimentKind:
    """A registered experiment kind, or one loaded from ``"module:KIND"``.

    Raises:
        ExperimentError: an unknown name or an import path that does not load.
    """
    try:
        return KINDS.get(name)
    except RegistryError as err:
        if isinstance(name, str) and ":" in name:
            raise ExperimentError(f"[experiment] {err}") from None
        raise ExperimentError(
            f"[experiment] kind {name!r} is unknown; use one of {', '.join(KINDS)}, "
            f"or an import path 'package.module:KIND'"
        ) from None


@dataclasses.dataclass(frozen=True, kw_only=True)
class CacheSpec:
    """The features an experiment builds when it is not given a cache."""

    model: str = "minilm"
    """``minilm`` (the packaged all-MiniLM-L6-v2), a model folder or a cached hub
    id."""

    task: str = "cities"
    """A built-in task (``cities``, ``larger_than``, ``sentiment``) or a
    ``.jsonl``/``.csv`` file (a relative path is the TOML's folder's)."""

    size: int | None = None
    """Rows of the task (None: the task's default)."""

    layers: str | tuple[int, ...] = "all"
    """``all`` or hidden_states indices (0 = embeddings)."""

    position: str = "mean"
    """Token pooled per prompt: ``mean``, ``last`` or ``first``."""

    dtype: str = "float16"
    """Stored dtype: ``float16`` or ``float32``."""

    seed: int = 0
    """Task sampling seed."""

    batch_size: int = 32
    """Prompts per forward pass."""

    def __post_init__(self) -> None:
        if not isinstance(self.layers, str):
            object.__setattr__(self, "layers", tuple(int(x) for x in self.layers))
        elif self.layers != "all":
            raise ExperimentError(
                f"[cache] layers must be 'all' or a list of integers, got "
                f"{self.layers!r}"
            )
        if self.position not in ("mean", "last", "first"):
            raise ExperimentError(
                f"[cache] position must be mean, last or first, got {self.position!r}"
            )
        if self.dtype not in ("float16", "float32"):
            raise ExperimentError(
                f"[cache] dtype must be float16 or float32, got {self.dtype!r}"
            )
        if self.size is not None and self.size < 2:
            raise ExperimentError(f"[cache] size must be >= 2, got {self.size}")

    def filename(self) -> str:
        """A readable file name unique to these settings (same settings, same
        name), e.g. ``minilm-larger_than-n4850-mean-float16-1a2b3c4d.h5``."""
        digest = hashlib.sha256(
            json.dumps(dataclasses.asdict(self), sort_keys=True).encode()
        ).hexdigest()[:8]
        parts = (
            slug(self.model),
            slug(self.task),
            f"n{self.size or 'default'}",
            self.position,
            self.dtype,
            digest,
        )
        return "-".join(parts) + ".h5"

    def arguments(self) -> list[str]:
        """The ``probe-lab extract`` arguments for these settings (without
        ``--out``)."""
        layers = (
            self.layers
            if isinstance(self.layers, str)
            else ",".join(str(x) for x in self.layers)
        )
        args = ["--model", self.model, "--task", self.task, "--layers", layers]
        args += ["--position", self.position, "--dtype", self.dtype]
        args += ["--seed", str(self.seed), "--batch-size", str(self.batch_size)]
        if self.size is not None:
            args += ["--size", str(self.size)]
        return args


@dataclasses.dataclass(frozen=True, kw_only=True)
class ExperimentConfig:
    """One experiment, resolved for one preset (full, smoke or demo)."""

    name: str
    """The experiment's name (output folder and figure file names)."""

    figure: str
    """The paper figure it reproduces, e.g. ``Fig. 24``."""

    kind: str
    """Which analysis and plot: a name in :data:`KINDS` or ``"module:KIND"``."""

    cache: CacheSpec = dataclasses.field(default_factory=CacheSpec)
    """Features to build when the run gets no cache."""

    study: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    """The ``[study]`` table: :class:`StudyConfig` settings without ``cache``."""

    settings: Any = None
    """The kind's own settings (an instance of its ``settings`` dataclass; None:
    its defaults)."""

    preset: str = "full"
    """Which size this is: ``full``, ``smoke`` or ``demo``."""

    source: str = ""
    """The TOML file it was read from."""

    def __post_init__(self) -> None:
        spec = get_kind(self.kind)
        if self.settings is None:
            object.__setattr__(self, "settings", spec.settings())
        spec.check_settings(self.settings)
        if self.preset not in PRESETS:
            raise ExperimentError(f"preset must be one of {PRESETS}")
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", self.name):
            raise ExperimentError(
                f"[experiment] name {self.name!r} must be a plain file name "
                "(letters, digits, _ . -)"
            )

    @property
    def spec(self) -> ExperimentKind:
        """The experiment kind (its claim, ``run`` and settings)."""
        return get_kind(self.kind)

    def to_dict(self) -> dict[str, Any]:
        """Plain data in the file's layout: the ``[experiment]`` keys (the kind's
        settings among them), ``cache``, ``study``, ``preset`` and ``source``."""
        experiment = dict(name=self.name, figure=self.figure, kind=self.kind)
        return dict(
            experiment=experiment | dataclasses.asdict(self.settings),
            cache=dataclasses.asdict(self.cache),
            study=self.study,
            preset=self.preset,
            source=self.source,
        )

    def study_config(
        self, cache: str | Path, supervisors: Sequence[Supervisor] | None = None
    ) -> StudyConfig:
        """The :class:`StudyConfig` of ``[study]`` on ``cache``.

        Args:
            cache: the study's cache file.
            supervisors: replace the configured supervisors (generated kinds).

        Returns:
            The validated study configuration.
        """
        data = dict(self.study)
        data["cache"] = str(cache)
        if supervisors is not None:
            data["supervisors"] = [s.to_dict() for s in supervisors]
            reference = reference_name(supervisors)
            data["reference"] = reference
        source = self.source or "experiment"
        try:
            return StudyConfig.from_dict(data, where="study")
        except ConfigError as err:  # names its key path (study.train.epochs)
            raise ExperimentError(f"{source}: {err}") from err
        except (StudyError, TypeError, ValueError) as err:
            raise ExperimentError(f"{source} [study]: {err}") from err


def slug(text: str) -> str:
    """A file-name-safe short form of a model, task or study label."""
    name = Path(text).stem if ("/" in text or "." in text) else text
    return re.sub(r"[^A-Za-z0-9_]+", "_", name).strip("_") or "x"


def experiment_configs() -> dict[str, Traversable]:
    """The experiment files shipped with the package, by name.

    Returns:
        ``{name: file}``, sorted by name; each file has ``.name`` and
        ``.read_text()``, and :func:`read_experiment` takes it (or its name).
    """
    folder = importlib.resources.files(__package__) / "configs"
    files = sorted(folder.iterdir(), key=lambda f: f.name)
    return {f.name.removesuffix(".toml"): f for f in files if f.name.endswith(".toml")}


def _locate(experiment: str | Path | Traversable) -> Traversable:
    """An existing file, or the packaged experiment named by a bare name."""
    if not isinstance(experiment, str | Path):
        return experiment
    path = Path(experiment)
    if path.is_file():
        return path
    packaged = experiment_configs()
    name = path.name.removesuffix(".toml")
    if path.parent == Path(".") and name in packaged:
        return packaged[name]
    example = name if name in packaged else next(iter(packaged))
    raise ExperimentError(
        f"experiment file {path} does not exist; the experiments are "
        f"{', '.join(packaged)}: run one by name (probe-lab run {example}) or give "
        "the path of your own TOML file"
    )


def _merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """Tables merge key by key; any other value (lists included) replaces."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _apply_preset(data: dict[str, Any], preset: str, source: str) -> dict[str, Any]:
    """The file's tables with the ``[preset]`` overrides merged in."""
    unknown = sorted(set(data) - set(_TABLES))
    if unknown:
        raise ExperimentError(
            f"{source}: unknown table(s) {unknown}; an experiment has {list(_TABLES)}"
        )
    _check_tables(data, source)
    if preset not in PRESETS:
        raise ExperimentError(f"preset must be one of {PRESETS}, got {preset!r}")
    if preset == "full":
        return data
    if preset not in data:
        raise ExperimentError(
            f"{source} has no [{preset}] table; add one with the overrides of a "
            f"{preset} run (e.g. [{preset}.study] seeds = 2)"
        )
    bad = sorted(set(data[preset]) - {"experiment", "cache", "study"})
    if bad:
        raise ExperimentError(
            f"{source}: [{preset}] may override experiment, cache and study, not {bad}"
        )
    merged = _merge(data, data[preset])
    _check_tables(merged, source)
    return merged


def _check_tables(data: Mapping[str, Any], source: str) -> None:
    for name, table in data.items():
        if not isinstance(table, Mapping):
            raise ExperimentError(
                f"{source}: {name} must be a table ([{name}]), got {table!r}"
            )


def _resolve_task(data: dict[str, Any], folder: Path) -> dict[str, Any]:
    """``data`` with a relative ``[cache] task`` file resolved against ``folder``
    (the TOML's), as a study TOML's caches are; built-in task names stay."""
    from activation_cache import TASKS

    cache = data.get("cache")
    task = cache.get("task") if isinstance(cache, Mapping) else None
    if not isinstance(task, str) or task in TASKS or Path(task).is_absolute():
        return data
    return {**data, "cache": {**cache, "task": str((folder / task).resolve())}}


def read_experiment(
    experiment: str | Path | Traversable, *, preset: str = "full"
) -> ExperimentConfig:
    """Read an experiment file and apply one preset's overrides.

    The tables' keys and types are checked here; whether the studies it would run
    are valid is checked by :func:`probe_lab.experiments.load_experiment`.

    Args:
        experiment: a TOML file, or the name of a packaged experiment
            (``error_structures``).
        preset: ``full`` (as written), ``smoke`` or ``demo`` (merge that table).

    Returns:
        The :class:`ExperimentConfig`.
    """
    file = _locate(experiment)
    source = str(file)
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise ExperimentError(f"{source} is not valid TOML: {err}") from err
    if not data:
        raise ExperimentError(
            f"{source} is empty: an experiment needs an [experiment] table with "
            "name, figure and kind (see the packaged experiments/*.toml)"
        )
    data = _apply_preset(data, preset, source)
    if isinstance(file, Path):
        data = _resolve_task(data, file.parent)
    try:
        spec = from_mapping(CacheSpec, data.get("cache", {}), where="cache")
        fixed = dict(cache=spec, study=data.get("study", {}), preset=preset)
        table = dict(data.get("experiment", {}))
        base = {k: table.pop(k) for k in ("name", "figure", "kind") if k in table}
        if isinstance(base.get("kind"), str):
            fixed["settings"] = get_kind(base["kind"]).read_settings(table)
        elif table:
            raise ExperimentError(
                "[experiment] needs kind (its other keys are that kind's settings)"
            )
        return from_mapping(
            ExperimentConfig, base, where="experiment", fixed=dict(fixed, source=source)
        )
    except (ConfigError, ExperimentError) as err:
        raise ExperimentError(f"{source}: {err}") from err
