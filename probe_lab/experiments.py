"""Paper-figure experiments (Burns et al. 2023, Fig. 23-27), one TOML file each.

An experiment file (``experiments/<name>.toml``) has four tables:

* ``[experiment]``: ``name``, ``figure``, ``kind`` (one of :data:`KINDS`) and the
  kind's own settings (``references`` and ``levels`` for ``simulation_difficulty``;
  ``hint_k``, ``hint_words``, ``hint_template``, ``scale`` for ``trivial_imitation``);
* ``[cache]``: the features to build when no cache is given (:class:`CacheSpec`:
  model, task, size, layers, position, dtype);
* ``[study]`` with ``[study.train]`` and ``[[study.supervisors]]``: passed to
  :class:`~probe_lab.study.StudyConfig` (the cache is filled in here);
* ``[smoke]`` (and optionally ``[demo]``): overrides merged into the tables above
  (tables merge key by key, lists and values replace) for a seconds-long run.

:func:`run_experiment` builds or reuses the cache, runs the study (or studies),
writes every study's outputs, the plots and ``summary.md`` (measured numbers next to
the paper's claim, and whether the claim held), and returns an
:class:`ExperimentResult`.

This module never imports torch or transformers: a cache that does not exist yet is
built by the extraction CLI in a subprocess, which prints its own progress bar.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from probe_lab import plots
from probe_lab.basis import principal_components
from probe_lab.study import StudyConfig, StudyError, StudyResult, Supervisor, run_study

__all__ = [
    "CLAIMS",
    "KINDS",
    "CacheSpec",
    "ExperimentConfig",
    "ExperimentError",
    "ExperimentResult",
    "Finding",
    "build_cache",
    "findings_table",
    "load_experiment",
    "run_demo",
    "run_experiment",
]

KINDS = (
    "linear_probe_w2s",
    "simulation_difficulty",
    "error_structures",
    "training_dynamics",
    "trivial_imitation",
)
"""The five analyses, one per paper figure (Fig. 23, 24, 25, 26, 27)."""

EXPERIMENTS_DIR = Path(__file__).resolve().parents[1] / "experiments"
"""The repository's ``experiments/`` folder (the demo reads its configs there)."""

_PRESETS = ("full", "smoke", "demo")
_TABLES = ("experiment", "cache", "study", *_PRESETS[1:])
_GENERATED = ("simulation_difficulty", "trivial_imitation")

# Runs the extraction CLI without importing probe_lab (and jax) in the subprocess.
_EXTRACT = (
    "import argparse, sys\n"
    "from activation_cache import cli\n"
    "parser = argparse.ArgumentParser(prog='probe-lab')\n"
    "cli.register(parser.add_subparsers(dest='command', required=True))\n"
    "args = parser.parse_args()\n"
    "sys.exit(args.func(args))\n"
)


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
            _slug(self.model),
            _slug(self.task),
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
    """Features to build when :func:`run_experiment` gets no cache."""

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

    preset: str = "full"
    """Which size this is: ``full``, ``smoke`` or ``demo``."""

    source: str = ""
    """The TOML file it was read from."""

    def __post_init__(self) -> None:
        where = self.source or "experiment"
        object.__setattr__(self, "references", tuple(self.references))
        object.__setattr__(self, "levels", tuple(self.levels))
        object.__setattr__(self, "hint_words", tuple(self.hint_words))
        if self.kind not in KINDS:
            raise ExperimentError(
                f"{where}: [experiment] kind {self.kind!r} is unknown; use one of "
                f"{', '.join(KINDS)}"
            )
        if self.preset not in _PRESETS:
            raise ExperimentError(f"preset must be one of {_PRESETS}")
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", self.name):
            raise ExperimentError(
                f"{where}: [experiment] name {self.name!r} must be a plain file name "
                "(letters, digits, _ . -)"
            )
        if self.kind == "simulation_difficulty":
            if not self.references or any(k < 1 for k in self.references):
                raise ExperimentError(
                    f"{where}: simulation_difficulty needs [experiment] references, "
                    "a list of M_k2 sizes >= 1 (e.g. references = [32, 64])"
                )
            if any(not 0 < lv < 1 for lv in self.levels):
                raise ExperimentError(
                    f"{where}: [experiment] levels must lie in (0, 1) (0 and 1 are "
                    "the simulatable and random supervisors, always included)"
                )
        if self.kind == "trivial_imitation":
            if len(self.hint_words) != 2 or len(set(self.hint_words)) != 2:
                raise ExperimentError(
                    f"{where}: [experiment] hint_words must be two different words, "
                    "for weak label 0 and 1 (e.g. ['false', 'true'])"
                )
            if "{text}" not in self.hint_template or "{hint}" not in self.hint_template:
                raise ExperimentError(
                    f"{where}: [experiment] hint_template must contain {{text}} and "
                    "{hint}"
                )
            if self.scale <= 0:
                raise ExperimentError(f"{where}: [experiment] scale must be > 0")
        if self.kind in _GENERATED and self.study.get("supervisors"):
            raise ExperimentError(
                f"{where}: {self.kind} builds its own supervisors; remove the "
                "[[study.supervisors]] tables"
            )
        for sups in self._supervisor_sets("<cache>"):
            self.study_config("<cache>", sups)

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
            data["supervisors"] = [dataclasses.asdict(s) for s in supervisors]
            reference = next((s.label for s in supervisors if s.kind == "probe"), "")
            data["reference"] = reference
        try:
            return StudyConfig.from_dict(data)
        except (StudyError, TypeError, ValueError) as err:
            raise ExperimentError(
                f"{self.source or 'experiment'} [study]: {err}"
            ) from err

    def _supervisor_sets(self, hinted: str) -> list[Sequence[Supervisor] | None]:
        """Supervisors of each study the kind runs (None: the configured ones)."""
        if self.kind == "simulation_difficulty":
            return [_simulation_supervisors(k, self.levels) for k in self.references]
        if self.kind == "trivial_imitation":
            return [
                _imitation_supervisors(self.hint_k, hinted, self.scale),
                _prompt_supervisors(),
            ]
        return [None]


def _slug(text: str) -> str:
    name = Path(text).stem if ("/" in text or "." in text) else text
    return re.sub(r"[^A-Za-z0-9_]+", "_", name).strip("_") or "x"


def _merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """Tables merge key by key; any other value (lists included) replaces."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def load_experiment(path: str | Path, *, preset: str = "full") -> ExperimentConfig:
    """Read an experiment TOML file and apply one preset's overrides.

    Args:
        path: ``experiments/<name>.toml``.
        preset: ``full`` (as written), ``smoke`` or ``demo`` (merge that table).

    Returns:
        The validated :class:`ExperimentConfig`.
    """
    path = Path(path)
    if not path.is_file():
        raise ExperimentError(
            f"experiment file {path} does not exist; the experiments are "
            f"{', '.join(sorted(p.stem for p in EXPERIMENTS_DIR.glob('*.toml')))} "
            f"in {EXPERIMENTS_DIR}"
        )
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except tomllib.TOMLDecodeError as err:
        raise ExperimentError(f"{path} is not valid TOML: {err}") from err
    unknown = sorted(set(data) - set(_TABLES))
    if unknown:
        raise ExperimentError(
            f"{path}: unknown table(s) {unknown}; an experiment has {list(_TABLES)}"
        )
    if preset not in _PRESETS:
        raise ExperimentError(f"preset must be one of {_PRESETS}, got {preset!r}")
    if preset != "full":
        if preset not in data:
            raise ExperimentError(
                f"{path} has no [{preset}] table; add one with the overrides of a "
                f"{preset} run (e.g. [{preset}.study] seeds = 2)"
            )
        over = data[preset]
        bad = sorted(set(over) - {"experiment", "cache", "study"})
        if bad:
            raise ExperimentError(
                f"{path}: [{preset}] may override experiment, cache and study, not "
                f"{bad}"
            )
        data = _merge(data, over)
    exp = dict(data.get("experiment", {}))
    for key in ("name", "figure", "kind"):
        if key not in exp:
            raise ExperimentError(f"{path}: [experiment] needs {key} = ...")
    known = {f.name for f in dataclasses.fields(ExperimentConfig)} - {
        "cache",
        "study",
        "preset",
        "source",
    }
    bad = sorted(set(exp) - known)
    if bad:
        raise ExperimentError(
            f"{path}: [experiment] has unknown keys {bad}; known: {sorted(known)}"
        )
    cache = dict(data.get("cache", {}))
    cache_keys = {f.name for f in dataclasses.fields(CacheSpec)}
    bad = sorted(set(cache) - cache_keys)
    if bad:
        raise ExperimentError(
            f"{path}: [cache] has unknown keys {bad}; known: {sorted(cache_keys)}"
        )
    try:
        spec = CacheSpec(**cache)
    except ExperimentError as err:
        raise ExperimentError(f"{path}: {err}") from err
    return ExperimentConfig(
        **exp,
        cache=spec,
        study=data.get("study", {}),
        preset=preset,
        source=str(path),
    )


# ----------------------------------------------------------------------- caches


def _complete(path: Path) -> bool:
    from activation_cache import CacheError, open_cache

    if not path.is_file():
        return False
    try:
        return open_cache(path, allow_partial=True).complete
    except CacheError:
        return False


def _extract(args: Sequence[str], out: Path, *, progress: bool) -> Path:
    """Run ``probe-lab extract`` in a subprocess (torch stays out of this one)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-c", _EXTRACT, "extract", *args, "--out", str(out)]
    if not progress:
        command.append("--quiet")
    done = subprocess.run(command, check=False)
    if done.returncode != 0:
        shown = " ".join(repr(a) if " " in a else a for a in command[3:])
        raise ExperimentError(
            f"building the cache {out} failed (exit {done.returncode}; its error is "
            f"above). Run it by hand to see it again: probe-lab {shown}"
        )
    return out


def build_cache(
    spec: CacheSpec, cache_dir: str | Path = "runs/caches", *, progress: bool = True
) -> Path:
    """Reuse or build the cache of ``spec`` under ``cache_dir``.

    Args:
        spec: model, task and extraction settings.
        cache_dir: where caches live; the same settings give the same file.
        progress: show the extractor's progress bar.

    Returns:
        The complete cache file (an interrupted one is resumed).
    """
    path = Path(cache_dir) / spec.filename()
    if _complete(path):
        if progress:
            print(f"[cache] reusing {path}")
        return path
    if progress:
        print(f"[cache] extracting {spec.model} on {spec.task} into {path}")
    return _extract(spec.arguments(), path, progress=progress)


# --------------------------------------------------------------------- results


@dataclasses.dataclass(frozen=True, kw_only=True)
class Finding:
    """One of the paper's qualitative claims, checked on the measured numbers."""

    claim: str
    """What the paper found (or what the project expects, where stated)."""

    measured: str
    """The numbers it was checked on."""

    held: bool | None
    """Whether the claim held here (None: not measurable in this run)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class ExperimentResult:
    """What :func:`run_experiment` measured and wrote."""

    config: ExperimentConfig
    """The resolved experiment."""

    cache: Path
    """The cache the studies read."""

    studies: dict[str, StudyResult]
    """Each study by its label (one for most kinds)."""

    summary: pd.DataFrame
    """Every study's :meth:`StudyResult.summary`, with a ``study`` column."""

    findings: list[Finding]
    """The paper's claims and whether they held."""

    figures: list[Path]
    """PNG files written."""

    out: Path
    """The output folder."""

    seconds: float
    """Wall time of the run, cache building included."""


# ------------------------------------------------------------------- studies


def _simulation_supervisors(k: int, levels: Sequence[float]) -> list[Supervisor]:
    sups = [Supervisor(kind="probe", k=k), Supervisor(kind="random")]
    sups += [
        Supervisor(kind="mixture", k=k, level=lv, name=f"mixture {lv:g}")
        for lv in levels
    ]
    return sups


def _imitation_supervisors(k: int | None, hinted: str, scale: float) -> list:
    return [
        Supervisor(kind="probe", k=k),
        Supervisor(kind="column", field="weak", cache=hinted, name="weak"),
        Supervisor(kind="imitation", base="weak", scale=scale, name="weak as feature"),
        Supervisor(kind="random", name="random"),
        Supervisor(
            kind="imitation", base="random", scale=scale, name="random as feature"
        ),
    ]


def _prompt_supervisors() -> list[Supervisor]:
    return [Supervisor(kind="column", field="weak", name="weak in prompt")]


def _summary(result: StudyResult, **columns: Any) -> pd.DataFrame:
    frame = result.summary()
    for key, value in columns.items():
        frame.insert(0, key, value)
    return frame


def _tables(studies: Mapping[str, StudyResult], attr: str) -> pd.DataFrame:
    frames = []
    for label, result in studies.items():
        frame = getattr(result, attr).copy()
        frame.insert(0, "study", label)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def _fmt(value: float, digits: int = 3) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"


def _strongest(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[frame.student == frame.student.max()]


def _pgr_row(frame: pd.DataFrame, supervisor: str, loss: str) -> pd.Series | None:
    rows = frame[(frame.supervisor == supervisor) & (frame.loss == loss)]
    return None if rows.empty else rows.iloc[0]


def _pgr_text(row: pd.Series | None) -> str:
    if row is None:
        return "n/a"
    return f"{_fmt(row.pgr, 2)} [{_fmt(row.pgr_low, 2)}, {_fmt(row.pgr_high, 2)}]"


# --------------------------------------------------------- the five analyses

_Runner = Callable[..., tuple[dict[str, StudyResult], list[Finding], list[Path]]]


def _run_w2s(config, cache, out, log):
    result = run_study(config.study_config(cache), progress=log is print)
    summary = result.summary()
    gap = summary[summary.ceiling_acc > summary.weak_acc + 0.02]
    findings = []
    xent = gap[gap.loss == "xent"]
    if len(xent):
        median = float(np.nanmedian(xent.pgr))
        share = float((xent.pgr > 0).mean())
        each = xent.groupby("supervisor", sort=False).pgr.median()
        per = "; ".join(f"{sup} {_fmt(p, 2)}" for sup, p in each.items())
        findings.append(
            Finding(
                claim="Students trained on weak labels beat their weak supervisors "
                "(PGR > 0) across weak and strong sizes.",
                measured=f"median PGR {_fmt(median, 2)} over {len(xent)} "
                f"(supervisor, student) pairs with a gap; {share:.0%} of them > 0. "
                f"Median per supervisor: {per}",
                held=bool(median > 0),
            )
        )
    if {"xent", "confidence"} <= set(gap.loss):
        keys = ["supervisor", "student"]
        paired = gap[gap.loss == "xent"].merge(
            gap[gap.loss == "confidence"], on=keys, suffixes=("_x", "_c")
        )
        gain = float(np.nanmean(paired.pgr_c - paired.pgr_x))
        findings.append(
            Finding(
                claim="The auxiliary confidence loss raises PGR over plain "
                "cross-entropy.",
                measured=f"mean PGR change (confidence - xent) {gain:+.2f} over "
                f"{len(paired)} pairs",
                held=bool(gain > 0),
            )
        )
    fig = plots.plot_weak_to_strong(result.table, title=_title(config))
    return {"study": result}, findings, [plots.save(fig, out / f"{config.name}.png")]


def _run_simulation(config, cache, out, log):
    studies = {}
    for k in config.references:
        log(f"[{config.name}] study with weak supervisor M_{k}")
        sups = _simulation_supervisors(k, config.levels)
        studies[f"M_{k}"] = run_study(
            config.study_config(cache, sups), progress=log is print
        )
    table = _tables(studies, "table")
    table["reference"] = table.study.str.slice(2).astype(int)
    summary = pd.concat(
        [_summary(r, reference=int(label[2:])) for label, r in studies.items()],
        ignore_index=True,
    )
    regime = summary[(summary.student >= summary.reference) & (summary.loss == "xent")]
    sim, rnd = regime[regime.kind == "probe"], regime[regime.kind == "random"]
    findings = [
        Finding(
            claim="A student that can simulate its supervisor (M_k1 on M_k2 labels, "
            "k1 >= k2) agrees with the weak labels more than one given random "
            "errors at the same accuracy.",
            measured=f"agreement {_fmt(sim.agreement.mean())} (simulatable) vs "
            f"{_fmt(rnd.agreement.mean())} (random), mean over k1 >= k2",
            held=bool(sim.agreement.mean() > rnd.agreement.mean()),
        ),
        Finding(
            claim="Simulatable errors give less weak-to-strong generalization (lower "
            "PGR) than unsimulatable random errors at matched accuracy.",
            measured=f"PGR {_fmt(np.nanmean(sim.pgr), 2)} (simulatable) vs "
            f"{_fmt(np.nanmean(rnd.pgr), 2)} (random), mean over k1 >= k2",
            held=bool(np.nanmean(sim.pgr) < np.nanmean(rnd.pgr)),
        ),
    ]
    if config.levels:
        level = {"probe": 0.0, "random": 1.0}
        share = regime.kind.map(level).fillna(regime.supervisor.map(_level))
        by_level = regime.assign(level=share).groupby("level").pgr.mean()
        rho = pd.Series(by_level.index).corr(
            pd.Series(by_level.to_numpy()), method="spearman"
        )
        findings.append(
            Finding(
                claim="Mixing random errors into simulatable ones raises PGR with "
                "the share of random errors (Spearman >= 0.8 counts as held).",
                measured="PGR by share of random errors: "
                + ", ".join(f"{lv:g}: {_fmt(p, 2)}" for lv, p in by_level.items())
                + f" (Spearman {_fmt(rho, 2)})",
                held=bool(rho >= 0.8),
            )
        )
    fig = plots.plot_simulation(table, title=_title(config))
    return studies, findings, [plots.save(fig, out / f"{config.name}.png")]


def _level(name: str) -> float:
    return float(name.split()[-1]) if name.startswith("mixture ") else np.nan


def _run_structures(config, cache, out, log):
    result = run_study(config.study_config(cache), progress=log is print)
    summary = _strongest(result.summary())
    ref = result.config.reference_name
    findings = _structure_findings(summary, ref)
    fig = plots.plot_error_structures(summary, title=_title(config))
    return {"study": result}, findings, [plots.save(fig, out / f"{config.name}.png")]


def _structure_findings(summary: pd.DataFrame, ref: str) -> list[Finding]:
    findings = []
    xent = summary[summary.loss == "xent"]
    rnd, sim = _pgr_row(summary, "random", "xent"), _pgr_row(summary, ref, "xent")
    if rnd is not None and sim is not None:
        findings.append(
            Finding(
                claim="At matched weak accuracy, unsimulatable random errors give "
                f"more PGR than the simulatable errors of the weak probe {ref}.",
                measured=f"PGR (xent) random {_pgr_text(rnd)} vs {ref} "
                f"{_pgr_text(sim)}",
                held=bool(rnd.pgr > sim.pgr),
            )
        )
    if len(xent) > 1:
        best, worst = xent.loc[xent.pgr.idxmax()], xent.loc[xent.pgr.idxmin()]
        findings.append(
            Finding(
                claim="The structure of the weak errors changes PGR a lot even at "
                "the same weak accuracy.",
                measured=f"PGR (xent) from {_fmt(worst.pgr, 2)} ({worst.supervisor}) "
                f"to {_fmt(best.pgr, 2)} ({best.supervisor}); intervals "
                + ("do not overlap" if worst.pgr_high < best.pgr_low else "overlap"),
                held=bool(worst.pgr_high < best.pgr_low),
            )
        )
    rnd_c, sim_c = (
        _pgr_row(summary, "random", "confidence"),
        _pgr_row(summary, ref, "confidence"),
    )
    if all(r is not None for r in (rnd, sim, rnd_c, sim_c)):
        gain_rnd, gain_sim = rnd_c.pgr - rnd.pgr, sim_c.pgr - sim.pgr
        findings.append(
            Finding(
                claim="The confidence loss helps against unsimulatable (random) "
                "errors, and more than against simulatable ones.",
                measured=f"PGR change (confidence - xent): random {gain_rnd:+.2f}, "
                f"{ref} {gain_sim:+.2f}",
                held=bool(gain_rnd > max(gain_sim, 0.0)),
            )
        )
    return findings


def _run_dynamics(config, cache, out, log):
    result = run_study(config.study_config(cache), progress=log is print)
    dyn = result.dynamics
    dyn = dyn[dyn.student == dyn.student.max()]
    ref = result.config.reference_name
    last = dyn[dyn.epoch == dyn.epoch.max()]
    first = dyn[dyn.epoch == dyn.epoch.min()]

    def mean(frame, sup, loss, col="agreement_weak_wrong"):
        rows = frame[(frame.supervisor == sup) & (frame.loss == loss)]
        return float(rows[col].mean()) if len(rows) else np.nan

    findings = []
    rise = mean(last, ref, "xent") - mean(first, ref, "xent")
    findings.append(
        Finding(
            claim="With cross-entropy the student increasingly agrees with the weak "
            f"supervisor's mistakes during training when they are simulatable ({ref}).",
            measured=f"agreement on weak-wrong test rows, epoch "
            f"{int(first.epoch.min())}: {_fmt(mean(first, ref, 'xent'))} -> epoch "
            f"{int(last.epoch.max())}: {_fmt(mean(last, ref, 'xent'))}",
            held=bool(rise > 0),
        )
    )
    if "random" in set(dyn.supervisor):
        findings.append(
            Finding(
                claim="Random (unsimulatable) errors are imitated less than "
                "simulatable ones by the end of training.",
                measured=f"final agreement on weak-wrong rows: random "
                f"{_fmt(mean(last, 'random', 'xent'))} vs {ref} "
                f"{_fmt(mean(last, ref, 'xent'))}",
                held=bool(mean(last, "random", "xent") < mean(last, ref, "xent")),
            )
        )
    if {"xent", "confidence"} <= set(dyn.loss):
        sups = sorted(set(dyn.supervisor))
        gap = np.nanmean(
            [mean(last, s, "confidence") - mean(last, s, "xent") for s in sups]
        )
        findings.append(
            Finding(
                claim="The confidence loss lowers the student's agreement with weak "
                "errors.",
                measured=f"final agreement on weak-wrong rows, confidence - xent, "
                f"mean over {len(sups)} structures: {gap:+.3f}",
                held=bool(gap < 0),
            )
        )
    fig = plots.plot_dynamics(dyn, title=_title(config))
    return {"study": result}, findings, [plots.save(fig, out / f"{config.name}.png")]


def _hint_labels(config: ExperimentConfig, cache: Path) -> tuple[np.ndarray, float]:
    """Out-of-fold predictions of the weak probe M_k: two folds, each labelled by a
    probe trained (with the study's protocol) on the other one.

    Returns:
        ``(n,)`` int8 weak labels and their accuracy.
    """
    from activation_cache import open_cache
    from probe_lab.train import train_probes

    study = config.study_config(cache)
    opened = open_cache(cache)
    x = principal_components(opened.features(study.layer))
    truth = np.asarray(opened.labels, np.int8)
    n, d = x.shape
    k = d if config.hint_k is None else config.hint_k
    if k > d:
        raise ExperimentError(
            f"{config.source}: hint_k = {k} exceeds the {d} features of {cache}"
        )
    rng = np.random.default_rng(0)
    fold = rng.permutation(n) % 2
    val = rng.random(n) < study.val_frac
    train = np.stack([(fold == f) & ~val for f in (0, 1)])
    mask = np.zeros((2, d), bool)
    mask[:, :k] = True
    probes = train_probes(
        x,
        np.stack([truth, truth]).astype(np.float32),
        train,
        np.stack([(fold == f) & val for f in (0, 1)]),
        feature_mask=mask,
        config=dataclasses.replace(study.train, loss="xent"),
        key=0,
    )
    proba = np.asarray(probes.predict_proba(x))
    weak = (np.where(fold == 0, proba[1], proba[0]) >= 0.5).astype(np.int8)
    return weak, float((weak == truth).mean())


def _hinted_cache(
    config: ExperimentConfig, cache: Path, cache_dir: Path, weak: np.ndarray, log
) -> Path:
    """Re-extract ``cache``'s model with the weak label written into each prompt."""
    from activation_cache import open_cache

    opened = open_cache(cache)
    meta = opened.meta
    template = config.hint_template.replace("{text}", str(meta.get("template")))
    words = np.asarray(config.hint_words, dtype=object)[weak]
    digest = hashlib.sha256(
        weak.tobytes() + json.dumps([template, *config.hint_words]).encode()
    ).hexdigest()[:8]
    path = cache_dir / f"{cache.stem}-hint-{digest}.h5"
    if _complete(path):
        log(f"[{config.name}] reusing the hinted cache {path}")
        return path
    task = path.with_suffix(".jsonl")
    extra = {k: v for k, v in opened.extra.items() if k not in ("weak", "hint")}
    task.parent.mkdir(parents=True, exist_ok=True)
    with task.open("w", encoding="utf-8") as f:
        for i in range(opened.n):
            row = dict(
                id=str(opened.ids[i]),
                text=str(opened.texts[i]),
                label=int(opened.labels[i]),
                hint=str(words[i]),
                weak=str(int(weak[i])),
                **{k: str(v[i]) for k, v in extra.items()},
            )
            f.write(json.dumps(row) + "\n")
    model_path = str(meta.get("model_path", ""))
    model = model_path if Path(model_path).is_dir() else str(meta.get("model"))
    args = ["--model", model, "--task", str(task), "--template", template]
    args += ["--layers", ",".join(str(x) for x in opened.layers)]
    args += ["--position", str(meta.get("position")), "--dtype", str(meta["dtype"])]
    args += ["--padding-side", str(meta.get("padding_side", "right"))]
    if meta.get("max_length"):
        args += ["--max-length", str(meta["max_length"])]
    log(f"[{config.name}] re-extracting {model} with the weak label in each prompt")
    try:
        return _extract(args, path, progress=log is print)
    except ExperimentError as err:
        raise ExperimentError(
            f"{err}\nThe trivial_imitation experiment re-runs the cache's model "
            f"({model!r}), which must load offline here; a cache without a loadable "
            "model can run every other experiment."
        ) from err


def _run_imitation(config, cache, out, log, cache_dir):
    log(f"[{config.name}] training the weak probe that writes the hints")
    weak, acc = _hint_labels(config, cache)
    log(f"[{config.name}] hint accuracy {acc:.3f} (out-of-fold M_{config.hint_k})")
    hinted = _hinted_cache(config, cache, Path(cache_dir), weak, log)
    sups = _imitation_supervisors(config.hint_k, str(hinted), config.scale)
    studies = {
        "original": run_study(config.study_config(cache, sups), progress=log is print),
        "in prompt": run_study(
            config.study_config(hinted, _prompt_supervisors()), progress=log is print
        ),
    }
    summary = pd.concat(
        [_strongest(_summary(r, study=s)) for s, r in studies.items()],
        ignore_index=True,
    )
    row = lambda sup, loss: _pgr_row(summary, sup, loss)  # noqa: E731
    findings = []
    for shown in ("weak as feature", "weak in prompt"):
        hidden, visible = row("weak", "xent"), row(shown, "xent")
        findings.append(
            Finding(
                claim=f"Cross-entropy students imitate a visible weak label "
                f"({shown}): PGR falls and agreement rises against the same labels "
                "hidden.",
                measured=f"PGR {_pgr_text(visible)} vs hidden {_pgr_text(hidden)}; "
                f"agreement {_fmt(visible.agreement)} vs {_fmt(hidden.agreement)}",
                held=bool(visible.pgr < hidden.pgr),
            )
        )
    for shown in ("weak as feature", "weak in prompt", "random as feature"):
        x, c = row(shown, "xent"), row(shown, "confidence")
        if x is None or c is None:
            continue
        findings.append(
            Finding(
                claim=f"The confidence loss resists imitation ({shown}): higher PGR "
                "than cross-entropy.",
                measured=f"PGR confidence {_pgr_text(c)} vs xent {_pgr_text(x)}",
                held=bool(c.pgr > x.pgr),
            )
        )
    fig = plots.plot_imitation(summary, title=_title(config))
    return studies, findings, [plots.save(fig, out / f"{config.name}.png")]


_RUNNERS: dict[str, _Runner] = {
    "linear_probe_w2s": _run_w2s,
    "simulation_difficulty": _run_simulation,
    "error_structures": _run_structures,
    "training_dynamics": _run_dynamics,
    "trivial_imitation": _run_imitation,
}

CLAIMS = {
    "linear_probe_w2s": "Linear probes on weak representations (earlier layers, few "
    "principal components) supervise probes on strong ones; the students beat their "
    "supervisors but stay below the ground-truth ceiling (black), and the confidence "
    "loss closes more of the gap.",
    "simulation_difficulty": "Perfectly simulatable weak errors (M_k2 labels for a "
    "student M_k1, k1 >= k2) are imitated: high agreement, little PGR. Random errors "
    "at the same accuracy cannot be simulated and are largely ignored: low agreement, "
    "high PGR. Mixtures lie in between.",
    "error_structures": "At matched weak accuracy, PGR depends strongly on how the "
    "weak errors are structured; unsimulatable random errors are easier to "
    "generalize past than the weak model's own (simulatable) errors, and the "
    "confidence loss helps most where the errors are hard to simulate.",
    "training_dynamics": "Through training, students come to agree with the weak "
    "supervisor's mistakes when those mistakes are learnable; the confidence loss "
    "keeps that agreement lower.",
    "trivial_imitation": "When the weak label is trivially visible to the student, "
    "cross-entropy students copy it (PGR falls towards 0); the confidence loss "
    "resists the imitation.",
}
"""The paper's qualitative finding per kind (Burns et al. 2023, Fig. 23-27)."""


def _title(config: ExperimentConfig) -> str:
    suffix = "" if config.preset == "full" else f" [{config.preset} size]"
    return f"{config.name.replace('_', ' ')} ({config.figure} analog){suffix}"


# ------------------------------------------------------------------- the run


def _markdown_table(frame: pd.DataFrame) -> str:
    def cell(value: Any) -> str:
        if isinstance(value, float | np.floating):
            return _fmt(float(value))
        return str(value).replace("|", "\\|")

    lines = ["| " + " | ".join(frame.columns) + " |"]
    lines.append("|" + "---|" * len(frame.columns))
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.values]
    return "\n".join(lines)


def _write_summary(result: ExperimentResult) -> Path:
    config = result.config
    held = [f.held for f in result.findings if f.held is not None]
    verdict = (
        "held" if held and all(held) else "partly held" if any(held) else "did NOT hold"
    )
    lines = [
        f"# {config.name}: {config.figure} analog",
        "",
        f"Cache `{result.cache}`, {config.preset} size, "
        f"{result.seconds:.0f} s on this machine. Config: `{config.source}`.",
        "",
        f"**The paper's finding** ({config.figure}): {CLAIMS[config.kind]}",
        "",
        f"**Here the finding {verdict}** ({sum(held)} of {len(held)} checks).",
        "",
    ]
    if config.preset == "smoke":
        lines += [
            "This is a smoke run (tiny sizes): it checks the pipeline; its numbers "
            "are not evidence either way.",
            "",
        ]
    lines += [
        "| claim | measured | held |",
        "|---|---|---|",
        *(
            f"| {f.claim} | {f.measured} | "
            f"{'n/a' if f.held is None else 'yes' if f.held else '**no**'} |"
            for f in result.findings
        ),
        "",
        "## Numbers (means over seeds; PGR interval: bootstrap over seeds)",
        "",
    ]
    columns = [
        c
        for c in (
            "study",
            "reference",
            "supervisor",
            "student",
            "loss",
            "weak_acc",
            "student_acc",
            "ceiling_acc",
            "pgr",
            "pgr_low",
            "pgr_high",
            "agreement",
            "agreement_weak_wrong",
        )
        if c in result.summary and (c != "study" or len(result.studies) > 1)
    ]
    lines += [_markdown_table(result.summary[columns]), ""]
    lines += [f"![{p.stem}]({p.name})" for p in result.figures]
    path = result.out / "summary.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def run_experiment(
    experiment: str | Path | ExperimentConfig,
    *,
    smoke: bool = False,
    out: str | Path | None = None,
    cache: str | Path | None = None,
    cache_dir: str | Path = "runs/caches",
    progress: bool = True,
) -> ExperimentResult:
    """Run one paper-figure experiment end to end.

    Args:
        experiment: an ``experiments/<name>.toml`` path or a loaded config.
        smoke: apply the file's ``[smoke]`` overrides (a path only).
        out: output folder (default ``runs/<name>`` or ``runs/<name>-smoke``).
        cache: an existing cache to use instead of building ``[cache]`` (any
            model's; ``trivial_imitation`` re-runs its model on hinted prompts).
        cache_dir: where built caches live; the same settings reuse one file.
        progress: print progress lines and the extractor's progress bar.

    Returns:
        An :class:`ExperimentResult`; ``out`` holds each study's outputs
        (``studies/<label>/``), ``summary.csv``, ``summary.md``, the PNG figure and
        ``experiment.json``.
    """
    if isinstance(experiment, ExperimentConfig):
        if smoke:
            raise ExperimentError(
                "smoke=True needs the TOML path; or load it with "
                "load_experiment(path, preset='smoke')"
            )
        config = experiment
    else:
        config = load_experiment(experiment, preset="smoke" if smoke else "full")
    start = time.perf_counter()
    log = print if progress else (lambda *_a, **_k: None)
    suffix = "" if config.preset == "full" else f"-{config.preset}"
    out = Path(out) if out is not None else Path("runs") / f"{config.name}{suffix}"
    out.mkdir(parents=True, exist_ok=True)
    if cache is not None:
        cache_path = Path(cache)
        if not cache_path.is_file():
            raise ExperimentError(f"cache {cache_path} does not exist")
    else:
        cache_path = build_cache(config.cache, cache_dir, progress=progress)
    log(f"[{config.name}] {config.kind} on {cache_path} ({config.preset} size)")
    runner = _RUNNERS[config.kind]
    extra = {"cache_dir": cache_dir} if config.kind == "trivial_imitation" else {}
    studies, findings, figures = runner(config, cache_path, out, log, **extra)
    for label, study in studies.items():
        study.save(out / "studies" / _slug(label))
    summary = pd.concat(
        [_summary(r, study=label) for label, r in studies.items()], ignore_index=True
    )
    summary.to_csv(out / "summary.csv", index=False)
    result = ExperimentResult(
        config=config,
        cache=cache_path,
        studies=studies,
        summary=summary,
        findings=findings,
        figures=figures,
        out=out,
        seconds=time.perf_counter() - start,
    )
    (out / "experiment.json").write_text(
        json.dumps(
            dict(
                config=dataclasses.asdict(config),
                cache=str(cache_path),
                seconds=result.seconds,
                findings=[dataclasses.asdict(f) for f in findings],
            ),
            indent=2,
            default=str,
        )
    )
    _write_summary(result)
    log(f"[{config.name}] done in {result.seconds:.0f} s; wrote {out}/")
    return result


def findings_table(results: Sequence[ExperimentResult]) -> str:
    """A plain-text table of every result's checks, for a terminal.

    Args:
        results: finished experiments.

    Returns:
        One line per finding: experiment, held, claim, measured.
    """
    lines = []
    for result in results:
        lines.append(f"\n{result.config.name} ({result.config.figure} analog):")
        for f in result.findings:
            mark = "n/a" if f.held is None else "HELD" if f.held else "NOT HELD"
            lines.append(f"  [{mark:>8}] {f.claim}\n             {f.measured}")
    return "\n".join(lines)


def run_demo(
    *,
    out: str | Path = "runs/demo",
    cache_dir: str | Path = "runs/caches",
    experiments_dir: str | Path = EXPERIMENTS_DIR,
    progress: bool = True,
) -> list[ExperimentResult]:
    """The README's first command: ``simulation_difficulty`` and
    ``error_structures`` at their ``[demo]`` size on the packaged MiniLM.

    Args:
        out: folder for both experiments' outputs (one sub-folder each).
        cache_dir: where the demo cache is built once and reused.
        experiments_dir: the folder holding the experiment TOML files.
        progress: print progress lines.

    Returns:
        Both :class:`ExperimentResult`; their checks are printed as a table.
    """
    start = time.perf_counter()
    experiments_dir = Path(experiments_dir)
    results = []
    for name in ("simulation_difficulty", "error_structures"):
        config = load_experiment(experiments_dir / f"{name}.toml", preset="demo")
        results.append(
            run_experiment(
                config, out=Path(out) / name, cache_dir=cache_dir, progress=progress
            )
        )
    seconds = time.perf_counter() - start
    print(findings_table(results))
    with pd.option_context("display.width", 160, "display.max_columns", 12):
        for result in results:
            cols = ["supervisor", "student", "loss", "weak_acc", "student_acc"]
            cols += ["ceiling_acc", "pgr", "agreement"]
            frame = _strongest(result.summary)[cols]
            print(f"\n{result.config.name}, strongest student:")
            print(frame.round(3).to_string(index=False))
    figures = [str(p) for r in results for p in r.figures]
    print(f"\ndemo done in {seconds:.0f} s; figures: {', '.join(figures)}")
    return results
