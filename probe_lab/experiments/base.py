"""What every experiment kind builds on: the run context it gets, the analysis it
returns, the result record, and the helpers its claim checks read tables with."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from activation_cache import TASKS
from probe_lab import metrics, plots
from probe_lab.experiments.config import ExperimentConfig
from probe_lab.experiments.saved import load_saved, save_study, study_key
from probe_lab.leaderboard import STOPPING, STOPPING_NAMES
from probe_lab.metrics import Paired
from probe_lab.study import StudyConfig, StudyResult, Supervisor, run_study

__all__ = [
    "STOPPING",
    "STOPPING_NAMES",
    "Analysis",
    "Context",
    "ExperimentResult",
    "Finding",
    "analog",
    "check_tasks",
    "diff_text",
    "fieller_text",
    "fmt",
    "judged",
    "mean",
    "paired",
    "pgr_row",
    "pgr_text",
    "rows_of",
    "seed_pgr",
    "seed_values",
    "shown",
    "stack",
    "strongest",
    "summary_frame",
]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Finding:
    """One of the paper's qualitative claims, checked on the measured numbers."""

    claim: str
    """What the paper found (or what the project expects, where stated)."""

    measured: str
    """The numbers it was checked on."""

    held: bool | None
    """Whether the claim held here (None: not measurable in this run)."""


class Analysis(NamedTuple):
    """What an experiment kind's ``run`` returns."""

    studies: dict[str, StudyResult]
    """Each study by its label (one for most kinds)."""

    findings: list[Finding]
    """The paper's claims and whether they held."""

    figures: list[Path]
    """PNG files written."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Context:
    """One run of an experiment, as its kind's ``run`` sees it."""

    config: ExperimentConfig
    """The resolved experiment."""

    cache: Path
    """The cache its studies read."""

    out: Path
    """The output folder."""

    cache_dir: Path
    """Where built caches live (a kind that re-extracts writes there)."""

    progress: bool
    """Print progress lines and the studies' progress bars."""

    cache_given: bool = False
    """The run was given its cache (``--cache``) instead of building ``[cache]``."""

    fresh: bool = False
    """Run every study, even one saved by an earlier run with the same key."""

    reused: list[Path] = dataclasses.field(default_factory=list)
    """The saved studies this run reused (filled in as it goes)."""

    @property
    def title(self) -> str:
        """The figure title, e.g. ``error structures (Fig. 25 analog) [smoke
        size]``."""
        config = self.config
        suffix = "" if config.preset == "full" else f" [{config.preset} size]"
        covers = (
            "split and minibatch order"
            if config.study.get("resplit", True)
            else "minibatch order only"
        )
        return (
            f"{config.name.replace('_', ' ')} ({analog(config.figure)}){suffix}\n"
            f"intervals over seeds vary the {covers}"
        )

    def log(self, message: str) -> None:
        """Print ``[name] message`` when showing progress."""
        if self.progress:
            print(f"[{self.config.name}] {message}")

    def study(
        self,
        supervisors: Sequence[Supervisor] | None = None,
        *,
        cache: Path | None = None,
    ) -> StudyResult:
        """Run the ``[study]`` table on ``cache`` (default: the run's cache),
        with generated ``supervisors`` in place of the configured ones.

        The study is saved at once in ``<out>/studies/<key>/`` (see
        :mod:`probe_lab.experiments.saved`); a study saved there by an earlier
        run with the same key is read back instead of run (unless ``fresh``).
        """
        return self.run_study(
            self.config.study_config(cache or self.cache, supervisors)
        )

    def run_study(self, config: StudyConfig) -> StudyResult:
        """Run a study saved under its key (or read back the one an earlier run
        saved there), as :meth:`study` does, for a config the kind built."""
        key, _ = study_key(config)
        folder = self.out / "studies" / key[:16]
        saved = None if self.fresh else load_saved(folder, key)
        if saved is not None:
            self.log(f"reusing the study saved in {folder} (same config and caches)")
            self.reused.append(folder)
            return saved
        result = run_study(config, progress=self.progress)
        result.fingerprints["study_key"] = key
        save_study(result, folder, key)
        # The study returns data; its figure is drawn here.
        figure = plots.plot_misfit_theorem(result.table)
        plots.save(figure, folder / "misfit_theorem.png")
        return result

    def save(self, fig: Figure) -> Path:
        """Write the experiment's figure as ``<out>/<name>.png``."""
        return plots.save(fig, self.out / f"{self.config.name}.png")


@dataclasses.dataclass(frozen=True, kw_only=True)
class ExperimentResult:
    """What :func:`~probe_lab.experiments.run_experiment` measured and wrote."""

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

    folders: dict[str, Path] = dataclasses.field(default_factory=dict)
    """Each study's output folder by its label."""

    reused: tuple[Path, ...] = ()
    """The studies read back from an earlier run instead of run."""


def summary_frame(result: StudyResult, **columns: Any) -> pd.DataFrame:
    """``result.summary()`` with constant columns in front (e.g. ``study=``)."""
    frame = result.summary()
    for key, value in columns.items():
        frame.insert(0, key, value)
    return frame


def stack(studies: Mapping[str, StudyResult], attr: str) -> pd.DataFrame:
    """One table (``table`` or ``dynamics``) of several studies, with a ``study``
    column."""
    frames = []
    for label, result in studies.items():
        frame = getattr(result, attr).copy()
        frame.insert(0, "study", label)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def analog(figure: str) -> str:
    """How a report names what an experiment reproduces: ``Fig. 25 analog`` for a
    paper figure, the text itself otherwise (``leaderboard``)."""
    return f"{figure} analog" if figure.startswith("Fig.") else figure


def fmt(value: float | None, digits: int = 3, *, signed: bool = False) -> str:
    """A number for a report: fixed digits (a sign with ``signed``), ``n/a`` when
    missing."""
    if value is None or not np.isfinite(value):
        return "n/a"
    return f"{value:{'+' if signed else ''}.{digits}f}"


def judged(held: Any, *values: Any) -> bool | None:
    """A check's verdict: ``held``, or None (cannot be judged here) when any value
    it compares is missing or NaN (e.g. PGR without a gap between weak and
    ceiling accuracy)."""
    for value in values:
        if value is None or not np.isfinite(value):
            return None
    return bool(held)


def mean(values: Any) -> float:
    """The mean of the finite values; NaN (without a warning) when there are
    none."""
    array = np.asarray(values, np.float64)
    array = array[np.isfinite(array)]
    return float(array.mean()) if array.size else float("nan")


def strongest(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows of the largest student."""
    return frame[frame.student == frame.student.max()]


def pgr_row(frame: pd.DataFrame, supervisor: str, loss: str) -> pd.Series | None:
    """The first summary row of ``supervisor`` and ``loss`` (None: no such row)."""
    rows = frame[(frame.supervisor == supervisor) & (frame.loss == loss)]
    return None if rows.empty else rows.iloc[0]


def pgr_text(row: pd.Series | None) -> str:
    """``0.12 [0.08, 0.16]``: PGR and its interval."""
    if row is None:
        return "n/a"
    return f"{fmt(row.pgr, 2)} [{fmt(row.pgr_low, 2)}, {fmt(row.pgr_high, 2)}]"


def check_tasks(values: Mapping[str, Any]) -> None:
    """Built-in task names, or ``["all"]``, known before any cache is built."""
    tasks = list(values["tasks"])
    unknown = sorted(set(tasks) - set(TASKS))
    if tasks != ["all"] and unknown:
        raise ValueError(
            f"[experiment] tasks {unknown} are not built-in tasks; use some of "
            f"{sorted(TASKS)}, or ['all']"
        )


# ------------------------------------------------- paired verdicts from seed tables


def rows_of(table: pd.DataFrame, **where: Any) -> pd.DataFrame:
    """The rows of ``table`` whose columns equal the given values."""
    mask = np.ones(len(table), bool)
    for column, value in where.items():
        mask &= (table[column] == value).to_numpy()
    return table[mask]


def seed_values(table: pd.DataFrame, column: str, **where: Any) -> pd.Series:
    """Per-seed values of ``column`` on the rows matching ``where`` (mean over
    rows sharing a seed; a table without a ``seed`` column is one seed)."""
    rows = rows_of(table, **where)
    if "seed" not in rows:
        rows = rows.assign(seed=0)
    return rows.groupby("seed")[column].mean()


def paired(a: pd.Series, b: pd.Series, *, confidence: float = 0.95) -> Paired:
    """``metrics.paired_difference`` of two per-seed series on the seeds both have."""
    seeds = a.index.intersection(b.index)
    return metrics.paired_difference(
        a[seeds].to_numpy(), b[seeds].to_numpy(), confidence=confidence
    )


def seed_pgr(
    table: pd.DataFrame, column: str = "student_acc", **where: Any
) -> metrics.PGRInterval:
    """PGR of mean accuracies over seeds with Fieller's interval, for the rows
    matching ``where``, the student's accuracy read from ``column``."""
    values = [
        seed_values(table, c, **where) for c in ("weak_acc", column, "ceiling_acc")
    ]
    seeds = values[0].index.intersection(values[1].index)
    return metrics.pgr_interval(*(v[seeds].to_numpy() for v in values))


def fieller_text(result: metrics.PGRInterval) -> str:
    """``0.12 [0.08, 0.16]`` (Fieller), or the PGR with why it has no interval."""
    if result.reason:
        return f"{fmt(result.pgr, 2)} ({result.reason})"
    return f"{fmt(result.pgr, 2)} [{fmt(result.low, 2)}, {fmt(result.high, 2)}]"


def diff_text(diff: Paired, p_holm: float | None = None) -> str:
    """``+0.031 [+0.010, +0.052] (p 0.012, Holm 0.036; 5 seeds)``."""
    holm = "" if p_holm is None else f", Holm {fmt(p_holm, 3)}"
    return (
        f"{fmt(diff.mean, 3, signed=True)} [{fmt(diff.low, 3, signed=True)}, "
        f"{fmt(diff.high, 3, signed=True)}] (p {fmt(diff.p_value, 3)}{holm}; "
        f"{int(diff.seeds)} seeds)"
    )


def shown(diff: Paired, p: float | None = None, alpha: float = 0.05) -> bool | None:
    """A directional claim ``A > B`` on a paired difference: True when the
    (Holm-adjusted, if given) p-value is at most ``alpha`` with a positive mean;
    None when there is no interval (fewer than 2 seeds)."""
    p = diff.p_value if p is None else p
    if not np.isfinite(diff.low) or p is None or not np.isfinite(p):
        return None
    return bool(p <= alpha and diff.mean > 0)
