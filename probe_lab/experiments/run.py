"""Running experiments end to end: one file (:func:`run_experiment`) or the demo
(:func:`run_demo`)."""

from __future__ import annotations

import dataclasses
import importlib.resources
import json
import time
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from importlib.resources.abc import Traversable
from pathlib import Path

import pandas as pd

from activation_cache.output import hold_lock
from probe_lab.experiments import report
from probe_lab.experiments.base import (
    Context,
    ExperimentResult,
    Finding,
    summary_frame,
)
from probe_lab.experiments.caches import build_cache
from probe_lab.experiments.config import ExperimentConfig, ExperimentError, slug
from probe_lab.experiments.kinds import check, load_experiment
from probe_lab.methods import Method
from probe_lab.study import StudyResult
from probe_lab.study.result import ONE_SEED

__all__ = [
    "check_out",
    "default_out",
    "lock_out",
    "one_seed_rule",
    "run_demo",
    "run_experiment",
    "with_methods",
]

DEMO = ("simulation_difficulty", "error_structures")
"""The experiments ``probe-lab demo`` runs."""


def _resolve(
    experiment: str | Path | Traversable | ExperimentConfig, smoke: bool
) -> ExperimentConfig:
    if not isinstance(experiment, ExperimentConfig):
        return load_experiment(experiment, preset="smoke" if smoke else "full")
    if smoke:
        raise ExperimentError(
            "smoke=True needs the TOML path; or load it with "
            "load_experiment(path, preset='smoke')"
        )
    check(experiment)
    return experiment


def default_out(config: ExperimentConfig, methods: Sequence[str] = ()) -> Path:
    """Where an experiment writes without ``out``: ``runs/<name>`` (full size) or
    ``runs/<name>-<preset>`` for a packaged experiment; for your own file, its
    file name instead of ``<name>`` (``runs/mymethods`` for ``mymethods.toml``),
    so a copy of a packaged file never writes into the packaged run's folder.
    Methods added with ``--method`` (``methods``) name the folder too
    (``runs/methods+mylosses_focal``)."""
    name = config.name if _packaged(config.source) else Path(config.source).stem
    suffix = "" if config.preset == "full" else f"-{config.preset}"
    added = "".join(f"+{slug(m.replace(':', '_'))}" for m in methods)
    return Path("runs") / f"{name or config.name}{added}{suffix}"


def with_methods(config: ExperimentConfig, methods: Sequence[str]) -> ExperimentConfig:
    """``config`` with your own student methods added to its ``[study]`` methods
    (``probe-lab run methods --method mylosses:focal``), each a registered name
    or an import path ``"module:function"``, checked now (a name that resolves to
    nothing is refused before any cache is built). On the ``methods`` leaderboard
    they are ranked next to the built-ins."""
    if not methods:
        return config
    given = list(config.study.get("methods", ()))
    names = {m.get("name") if isinstance(m, Mapping) else None for m in given}
    added = []
    for name in methods:
        try:
            Method(name=name)
        except ValueError as err:
            raise ExperimentError(f"--method {name}: {err}") from None
        if name not in names:
            added.append({"name": name})
            names.add(name)
    return dataclasses.replace(
        config, study={**config.study, "methods": [*given, *added]}
    )


def _packaged(source: str) -> bool:
    """Whether ``source`` is one of the packaged experiment files (also through a
    link, such as the repository's ``experiments/*.toml``)."""
    if not source:
        return True  # built in Python: named by its name
    configs = Path(str(importlib.resources.files("probe_lab.experiments"))) / "configs"
    return Path(source).resolve().parent == configs.resolve()


def _recorded_name(found: dict) -> object:
    """The experiment name in an ``experiment.json``'s config (the file's
    layout, ``experiment.name``, or the older flat ``name``)."""
    experiment = found.get("experiment")
    if isinstance(experiment, dict) and "name" in experiment:
        return experiment["name"]
    return found.get("name")


def _same_experiment(found: dict, config: ExperimentConfig) -> bool:
    """Whether an ``experiment.json``'s config is ``config``'s experiment: the
    same name, read from the same file (or a file with the same content)."""
    if _recorded_name(found) != config.name:
        return False
    theirs, ours = Path(str(found.get("source", ""))), Path(config.source)
    if theirs.resolve() == ours.resolve():
        return True
    try:
        return theirs.read_bytes() == ours.read_bytes()
    except OSError:
        return False


def check_out(out: Path, config: ExperimentConfig) -> None:
    """Refuse an output folder holding another experiment's results (its
    ``experiment.json`` names another experiment or file) or a study's.

    Raises:
        ExperimentError: naming both experiments and what to give instead.
    """
    record = out / "experiment.json"
    if not record.is_file():
        if (out / "config.json").is_file() and (out / "fingerprints.json").is_file():
            raise ExperimentError(
                f"--out {out} holds the results of a study (probe-lab study), "
                "which this run's summary.csv would replace; give another --out"
            )
        return
    try:
        found = json.loads(record.read_text(encoding="utf-8"))["config"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ExperimentError(
            f"--out {out} holds an unreadable experiment.json ({err}); give "
            "another --out, or delete the folder to replace it"
        ) from None
    if not _same_experiment(found, config):
        raise ExperimentError(
            f"--out {out} holds the results of another experiment "
            f"({_recorded_name(found)!r} from {found.get('source')}), not "
            f"{config.name!r} from {config.source}; give another --out (or delete "
            f"{out} to replace them)"
        )


def lock_out(out: Path) -> AbstractContextManager[Path]:
    """Hold the exclusive lock of the output folder ``out`` (``out/.lock``,
    the same lock as ``probe-lab extract`` takes on its file) for a block, so two
    runs never write one folder at once.

    Raises:
        ExperimentError: another live run holds it; names its process.
    """
    lock = out / ".lock"
    return hold_lock(
        lock,
        busy=lambda holder: ExperimentError(
            f"--out {out} is being written by another run ({holder} holds {lock}); "
            "wait for it to finish (the same command then reuses the studies it "
            "saved), or give another --out"
        ),
        unusable=lambda reason: ExperimentError(
            f"cannot create or lock {lock} ({reason}); give an --out you can write"
        ),
    )


def run_experiment(
    experiment: str | Path | Traversable | ExperimentConfig,
    *,
    smoke: bool = False,
    out: str | Path | None = None,
    cache: str | Path | None = None,
    cache_dir: str | Path = "runs/caches",
    progress: bool = True,
    fresh: bool = False,
) -> ExperimentResult:
    """Run one paper-figure experiment end to end.

    Args:
        experiment: a TOML file (``experiments/<name>.toml``), the name of a
            packaged experiment (``error_structures``) or a loaded config.
        smoke: apply the file's ``[smoke]`` overrides (a file or name only).
        out: output folder (default: :func:`default_out`). It is locked for the
            run (a second run into it is refused), and a folder holding another
            experiment's results is refused.
        cache: an existing cache to use instead of building ``[cache]`` (any
            model's; ``trivial_imitation`` re-runs its model on hinted prompts).
        cache_dir: where built caches live; the same settings reuse one file.
        progress: print progress lines and the extractor's progress bar.
        fresh: run every study, even those an earlier run saved in ``out`` with
            the same config and caches (by default they are read back, so an
            interrupted run resumes where it stopped).

    Returns:
        An :class:`ExperimentResult`; ``out`` holds each study's outputs as soon
        as it finishes (``studies/<key>/``, see
        :mod:`probe_lab.experiments.saved`), then ``summary.csv``, ``summary.md``,
        the PNG figure and ``experiment.json`` (which names each study's folder).
    """
    config = _resolve(experiment, smoke)
    out = Path(out) if out is not None else default_out(config)
    out.mkdir(parents=True, exist_ok=True)
    with lock_out(out):
        check_out(out, config)
        return _run_locked(config, out, cache, Path(cache_dir), progress, fresh)


def _run_locked(
    config: ExperimentConfig,
    out: Path,
    cache: str | Path | None,
    cache_dir: Path,
    progress: bool,
    fresh: bool,
) -> ExperimentResult:
    """:func:`run_experiment` once ``out`` is locked and checked."""
    start = time.perf_counter()
    ctx = Context(
        config=config,
        cache=_cache(config, cache, cache_dir, progress),
        out=out,
        cache_dir=cache_dir,
        progress=progress,
        cache_given=cache is not None,
        fresh=fresh,
    )
    ctx.log(f"{config.kind} on {ctx.cache} ({config.preset} size)")
    studies, findings, figures = config.spec.run(ctx)
    findings = one_seed_rule(studies, findings)
    folders = _save_studies(studies, out)
    result = ExperimentResult(
        config=config,
        cache=ctx.cache,
        studies=studies,
        summary=_summary(studies, out),
        findings=findings,
        figures=figures,
        out=out,
        seconds=time.perf_counter() - start,
        folders=folders,
        reused=tuple(ctx.reused),
    )
    report.write_record(result)
    report.write_summary(result)
    if result.reused:
        ctx.log(
            f"reused {len(result.reused)} of {len(studies)} studies saved by an "
            f"earlier run: {', '.join(str(p) for p in result.reused)} (--fresh "
            "reruns them)"
        )
    ctx.log(f"done in {result.seconds:.0f} s; wrote {out}/")
    return result


def one_seed_rule(
    studies: Mapping[str, StudyResult], findings: list[Finding]
) -> list[Finding]:
    """The one rule for a run with a study of fewer than 2 seeds: no interval
    exists, so no finding is judged (``held`` None) and each says ``1 seed: no
    interval``, as every summary row does."""
    if min((r.config.seeds for r in studies.values()), default=2) >= 2:
        return findings
    return [
        dataclasses.replace(f, held=None, measured=f"{f.measured} ({ONE_SEED})")
        for f in findings
    ]


def _cache(
    config: ExperimentConfig,
    cache: str | Path | None,
    cache_dir: str | Path,
    progress: bool,
) -> Path:
    """The cache given, or the one ``[cache]`` describes (built if needed)."""
    if cache is None:
        return build_cache(config.cache, cache_dir, progress=progress)
    if Path(cache).is_dir():
        raise ExperimentError(
            f"--cache {cache} is a folder, not a cache file; give the path of the "
            ".h5 file itself (e.g. one of the *.h5 files in it)"
        )
    if not Path(cache).is_file():
        raise ExperimentError(f"cache {cache} does not exist")
    return Path(cache)


def _save_studies(studies: dict[str, StudyResult], out: Path) -> dict[str, Path]:
    """Each study's folder by label: ``out/studies/<key>/``, where
    :meth:`Context.study` saved it, or ``out/studies/<label>/`` (saved here) for
    a study it did not run."""
    folders = {}
    for label, study in studies.items():
        key = study.fingerprints.get("study_key")
        if key:
            folders[label] = out / "studies" / key[:16]
        else:
            folders[label] = study.save(out / "studies" / slug(label))
    return folders


def _summary(studies: dict[str, StudyResult], out: Path) -> pd.DataFrame:
    """Every study's summary with a ``study`` column, also saved as
    ``out/summary.csv``."""
    summary = pd.concat(
        [summary_frame(r, study=label) for label, r in studies.items()],
        ignore_index=True,
    )
    summary.to_csv(out / "summary.csv", index=False)
    return summary


def run_demo(
    *,
    smoke: bool = False,
    out: str | Path | None = None,
    cache_dir: str | Path = "runs/caches",
    experiments_dir: str | Path | None = None,
    progress: bool = True,
    fresh: bool = False,
) -> list[ExperimentResult]:
    """The README's first command: ``simulation_difficulty`` and
    ``error_structures`` at their ``[demo]`` size on the packaged MiniLM.

    Args:
        smoke: their ``[smoke]`` size instead (seconds; checks an installation).
        out: folder for both experiments' outputs, one sub-folder each (default
            ``runs/demo`` or ``runs/demo-smoke``).
        cache_dir: where the demo cache is built once and reused.
        experiments_dir: a folder with the two TOML files (default: the packaged
            ones).
        progress: print progress lines.
        fresh: run every study, even those an earlier demo saved in ``out``.

    Returns:
        Both :class:`ExperimentResult`; their checks are printed as a table.
    """
    start = time.perf_counter()
    preset = "smoke" if smoke else "demo"
    default = Path("runs") / ("demo-smoke" if smoke else "demo")
    out = Path(out) if out is not None else default
    results = []
    for name in DEMO:
        source = Path(experiments_dir) / f"{name}.toml" if experiments_dir else name
        config = load_experiment(source, preset=preset)
        results.append(
            run_experiment(
                config,
                out=out / name,
                cache_dir=cache_dir,
                progress=progress,
                fresh=fresh,
            )
        )
    print(report.findings_table(results))
    print(report.strongest_students(results))
    figures = [str(p) for r in results for p in r.figures]
    seconds = time.perf_counter() - start
    print(f"\ndemo done in {seconds:.0f} s; figures: {', '.join(figures)}")
    return results
