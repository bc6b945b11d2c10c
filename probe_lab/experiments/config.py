"""Experiment files: what they hold, where they live and how one is read.

An experiment file has four tables:

* ``[experiment]``: ``name``, ``figure``, ``kind`` (one of :data:`KINDS`) and the
  kind's own settings (``references`` and ``levels`` for ``simulation_difficulty``;
  ``hint_k``, ``hint_words``, ``hint_template``, ``scale`` for ``trivial_imitation``);
* ``[cache]``: the features to build when no cache is given (:class:`CacheSpec`);
* ``[study]`` with ``[study.train]`` and ``[[study.supervisors]]``: passed to
  :class:`~probe_lab.study.StudyConfig` (the cache is filled in at run time);
* ``[smoke]`` (and optionally ``[demo]``): overrides merged into the tables above
  (tables merge key by key, lists and values replace) for a seconds-long run.

The five experiments ship inside this package (``configs/<name>.toml``, read with
:mod:`importlib.resources`), so an installed wheel runs them by name; the
repository's ``experiments/`` folder links to the same files.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.resources
import json
import re
import tomllib
from collections.abc import Mapping, Sequence
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

from probe_lab.loader import ConfigError, from_mapping
from probe_lab.study import StudyConfig, StudyError, Supervisor
from probe_lab.supervisors import reference_name

__all__ = [
    "KINDS",
    "PRESETS",
    "CacheSpec",
    "ExperimentConfig",
    "ExperimentError",
    "experiment_configs",
    "read_experiment",
]

KINDS = (
    "linear_probe_w2s",
    "simulation_difficulty",
    "error_structures",
    "training_dynamics",
    "trivial_imitation",
    "methods",
    "sample_size",
    "task_suite",
)
"""The analyses: one per paper figure (Fig. 23, 24, 25, 26, 27), the method
leaderboard, Fig. 24's comparison against data size, and the task suite; each is
the module of this package with its name."""

PRESETS = ("full", "smoke", "demo")
"""Sizes of an experiment: as written, or with the ``[smoke]`` or ``[demo]`` table
merged in."""

_TABLES = ("experiment", "cache", "study", *PRESETS[1:])


class ExperimentError(ValueError):
    """An experiment file or run that cannot proceed; the message says the fix."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class CacheSpec:
    """The features an experiment builds when it is not given a cache."""

    model: str = "minilm"
    """``minilm`` (the packaged all-MiniLM-L6-v2), a model folder or a cached hub
    id."""

    task: str = "cities"
    """A built-in task (``cities``, ``larger_than``, ``sentiment``) or a
    ``.jsonl``/``.csv`` file."""

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
    """Which analysis and plot: one of :data:`KINDS`."""

    cache: CacheSpec = dataclasses.field(default_factory=CacheSpec)
    """Features to build when the run gets no cache."""

    study: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    """The ``[study]`` table: :class:`StudyConfig` settings without ``cache``."""

    references: tuple[int, ...] = ()
    """``simulation_difficulty``: the weak M_k2 supervisors, one study each."""

    levels: tuple[float, ...] = ()
    """``simulation_difficulty``: mixture levels (share of random errors)."""

    hint_k: int | None = None
    """``trivial_imitation``: the weak probe whose prediction becomes the hint
    (first k principal components; None: all features)."""

    hint_words: tuple[str, str] = ("false", "true")
    """``trivial_imitation``: how the hint reads for weak label 0 and 1."""

    hint_template: str = "{text} I think this is {hint}. What do you think?"
    """``trivial_imitation``: prompt of the re-extraction (``{text}`` is the
    original prompt)."""

    scale: float = 1.0
    """``trivial_imitation``: size of the weak label as an extra feature (in units
    of the standardized features)."""

    sizes: tuple[int, ...] = ()
    """``sample_size``: rows of the task per study (``max_rows``), smallest first;
    sizes beyond the cache use the whole cache."""

    tasks: tuple[str, ...] = ()
    """``methods``, ``task_suite``: the built-in tasks to run on (``["all"]``: every
    one), one cache each (``[cache]`` with its task replaced); a run given
    ``--cache`` runs on that cache alone."""

    k: int = 32
    """``task_suite``: the M_k probe supervisor (first k principal components)."""

    preset: str = "full"
    """Which size this is: ``full``, ``smoke`` or ``demo``."""

    source: str = ""
    """The TOML file it was read from."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "references", tuple(self.references))
        object.__setattr__(self, "levels", tuple(self.levels))
        object.__setattr__(self, "hint_words", tuple(self.hint_words))
        object.__setattr__(self, "tasks", tuple(self.tasks))
        object.__setattr__(self, "sizes", tuple(self.sizes))
        if self.kind not in KINDS:
            raise ExperimentError(
                f"[experiment] kind {self.kind!r} is unknown; use one of "
                f"{', '.join(KINDS)}"
            )
        if self.preset not in PRESETS:
            raise ExperimentError(f"preset must be one of {PRESETS}")
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", self.name):
            raise ExperimentError(
                f"[experiment] name {self.name!r} must be a plain file name "
                "(letters, digits, _ . -)"
            )
        if self.kind == "simulation_difficulty":
            self._check_simulation()
        if self.kind == "trivial_imitation":
            self._check_imitation()
        if self.kind == "sample_size" and (
            not self.sizes or list(self.sizes) != sorted(set(self.sizes))
        ):
            raise ExperimentError(
                "sample_size needs [experiment] sizes, an increasing list of row "
                "counts (e.g. sizes = [500, 1000, 2000, 4850])"
            )

    def _check_simulation(self) -> None:
        if not self.references or any(k < 1 for k in self.references):
            raise ExperimentError(
                "simulation_difficulty needs [experiment] references, a list of "
                "M_k2 sizes >= 1 (e.g. references = [32, 64])"
            )
        if any(not 0 < lv < 1 for lv in self.levels):
            raise ExperimentError(
                "[experiment] levels must lie in (0, 1) (0 and 1 are the "
                "simulatable and random supervisors, always included)"
            )

    def _check_imitation(self) -> None:
        if len(set(self.hint_words)) != 2:
            raise ExperimentError(
                "[experiment] hint_words must be two different words, for weak "
                "label 0 and 1 (e.g. ['false', 'true'])"
            )
        if "{text}" not in self.hint_template or "{hint}" not in self.hint_template:
            raise ExperimentError(
                "[experiment] hint_template must contain {text} and {hint}"
            )
        if self.scale <= 0:
            raise ExperimentError("[experiment] scale must be > 0")

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
    try:
        spec = from_mapping(CacheSpec, data.get("cache", {}), where="cache")
        fixed = dict(cache=spec, study=data.get("study", {}), preset=preset)
        return from_mapping(
            ExperimentConfig,
            data.get("experiment", {}),
            where="experiment",
            fixed=dict(fixed, source=source),
        )
    except (ConfigError, ExperimentError) as err:
        raise ExperimentError(f"{source}: {err}") from err
