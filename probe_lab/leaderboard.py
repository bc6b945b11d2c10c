"""Rank student methods across tasks, supervisors and seeds.

Input: the per-seed tables of one or more studies (one per task), stacked with a
``task`` column. A **cell** is one (task, supervisor, student size); a **method** is
a study condition (the table's ``loss`` column: a loss or label method with its
parameters). Every number comes from test rows no probe trained on.

* **PGR per method**: for each seed, the mean PGR over the cells where the gap
  ``ceiling - weak`` (mean over seeds) is at least ``min_gap`` (tiny gaps make PGR
  explode; the excluded cells are counted); then the mean over seeds with a
  Student-t interval. Seeds resample the data split when the studies ``resplit``
  (the default), so the interval covers split and minibatch-order noise.
* **Rank per task**: methods ordered by their mean PGR on that task (1 = best).
* **Wins, ties, losses against the baseline** (``xent``): per cell, the paired
  per-seed difference in student accuracy, with its t-interval: a win when the
  interval lies above 0, a loss when below, a tie otherwise.
* **Misfit and gain**: means over cells and seeds (Charikar et al. 2024).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd

from probe_lab import metrics

__all__ = ["Leaderboard", "rank_methods"]

CELL = ["task", "supervisor", "student"]


@dataclasses.dataclass(frozen=True)
class Leaderboard:
    """The ranking tables of :func:`rank_methods`."""

    overall: pd.DataFrame
    """One row per method: PGR with its interval, seeds, cells, wins / ties /
    losses against the baseline, misfit, gain and mean rank over tasks; sorted
    best first."""
    per_task: pd.DataFrame
    """One row per (task, method): PGR with its interval and the rank."""
    cells: pd.DataFrame
    """One row per (cell, method): mean PGR, the paired accuracy difference to the
    baseline with its interval, and the verdict (win, tie, loss)."""
    baseline: str
    confidence: float
    excluded_cells: int
    """Cells left out of the PGR averages for a gap below ``min_gap``."""

    def save(self, out: str | Path) -> list[Path]:
        """Write ``leaderboard.md`` and the three tables as Parquet into ``out``."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        paths = []
        for name in ("overall", "per_task", "cells"):
            path = out / f"leaderboard_{name}.parquet"
            getattr(self, name).to_parquet(path, index=False)
            paths.append(path)
        path = out / "leaderboard.md"
        path.write_text(self.markdown())
        return [path, *paths]

    def markdown(self) -> str:
        """The overall table and the per-task ranks, as Markdown."""
        level = f"{self.confidence:.0%}"
        lines = [
            "| rank | method | PGR | " + level + " interval | seeds | cells | "
            f"wins / ties / losses vs {self.baseline} | misfit | gain |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for i, row in enumerate(self.overall.itertuples(), start=1):
            lines.append(
                f"| {i} | {row.method} | {row.pgr:.3f} | [{row.pgr_low:.3f}, "
                f"{row.pgr_high:.3f}] | {row.seeds} | {row.cells} | {row.wins} / "
                f"{row.ties} / {row.losses} | {row.misfit:.3f} | {row.gain:+.3f} |"
            )
        ranks = self.per_task.pivot(index="method", columns="task", values="rank")
        ranks = ranks.loc[self.overall.method]
        lines += ["", "Rank per task (1 = highest mean PGR):", ""]
        lines.append("| method | " + " | ".join(ranks.columns) + " |")
        lines.append("|---|" + "---|" * len(ranks.columns))
        for method, row in ranks.iterrows():
            lines.append(
                f"| {method} | "
                + " | ".join("n/a" if np.isnan(v) else f"{int(v)}" for v in row.values)
                + " |"
            )
        lines += [
            "",
            f"PGR: per seed, the mean over cells (task x supervisor x student) of "
            f"(student - weak) / (ceiling - weak) on test rows; then the mean over "
            f"seeds and a {level} Student-t interval over seeds. "
            f"{self.excluded_cells} cell(s) with a ceiling - weak gap below "
            f"{metrics.SMALL_GAP} are left out of PGR. Wins / ties / losses: per "
            f"cell, the {level} t-interval of the paired per-seed difference in "
            f"test accuracy against {self.baseline} lies above 0 / contains 0 / "
            f"lies below 0.",
        ]
        return "\n".join(lines) + "\n"


def _paired(cells: pd.DataFrame, baseline: str, confidence: float) -> pd.DataFrame:
    """Per cell and method: the baseline-paired accuracy difference and verdict."""
    base = cells[cells.loss == baseline][[*CELL, "seed", "student_acc"]]
    merged = cells.merge(base, on=[*CELL, "seed"], suffixes=("", "_base"))
    merged["diff"] = merged.student_acc - merged.student_acc_base
    rows = []
    for key, group in merged.groupby([*CELL, "loss"], sort=False):
        mean, low, high = metrics.t_interval(group["diff"], confidence=confidence)
        verdict = "win" if low > 0 else "loss" if high < 0 else "tie"
        if key[-1] == baseline:
            verdict = "baseline"
        rows.append(
            dict(
                zip([*CELL, "method"], key, strict=True),
                pgr=group.pgr.mean(),
                gap=(group.ceiling_acc - group.weak_acc).mean(),
                diff=mean,
                diff_low=low,
                diff_high=high,
                verdict=verdict,
            )
        )
    return pd.DataFrame(rows)


def rank_methods(
    table: pd.DataFrame,
    *,
    baseline: str = "xent",
    confidence: float = 0.95,
    min_gap: float = metrics.SMALL_GAP,
) -> Leaderboard:
    """Rank the methods (the ``loss`` column) of stacked study tables.

    Args:
        table: per-seed study rows with a ``task`` column (one study per task).
        baseline: the method wins and losses are counted against.
        confidence: coverage of every interval.
        min_gap: cells whose mean ``ceiling - weak`` is below this are left out of
            PGR averages.

    Returns:
        The :class:`Leaderboard`.
    """
    if "task" not in table:
        raise ValueError("rank_methods needs a 'task' column (one study per task)")
    if baseline not in set(table.loss):
        raise ValueError(
            f"the baseline method {baseline!r} is not in the table's methods "
            f"{sorted(set(table.loss))}"
        )
    cells = _paired(table, baseline, confidence)
    kept = cells[cells.gap >= min_gap][CELL].drop_duplicates()
    usable = table.merge(kept, on=CELL)
    excluded = len(cells[CELL].drop_duplicates()) - len(kept)
    per_seed = usable.groupby(["loss", "seed"], sort=False).pgr.mean()
    task_seed = usable.groupby(["task", "loss", "seed"], sort=False).pgr.mean()
    per_task = []
    for (task, method), group in task_seed.groupby(level=[0, 1], sort=False):
        mean, low, high = metrics.t_interval(group.values, confidence=confidence)
        per_task.append(dict(task=task, method=method, pgr=mean, low=low, high=high))
    # every (task, method), PGR NaN where no cell of the task has a gap
    methods = list(dict.fromkeys(table.loss))
    every = pd.MultiIndex.from_product(
        [list(dict.fromkeys(table.task)), methods], names=["task", "method"]
    )
    columns = ["task", "method", "pgr", "low", "high"]
    per_task = pd.DataFrame(per_task, columns=columns).set_index(["task", "method"])
    per_task = per_task.reindex(every).reset_index()
    per_task["rank"] = per_task.groupby("task").pgr.rank(ascending=False, method="min")
    overall = []
    for method in methods:
        group = per_seed[per_seed.index.get_level_values(0) == method]
        mean, low, high = metrics.t_interval(group.values, confidence=confidence)
        verdicts = cells[cells.method == method].verdict
        rows = table[table.loss == method]
        overall.append(
            dict(
                method=method,
                pgr=mean,
                pgr_low=low,
                pgr_high=high,
                seeds=int(group.size),
                cells=int(len(kept)),
                wins=int((verdicts == "win").sum()),
                ties=int((verdicts == "tie").sum()),
                losses=int((verdicts == "loss").sum()),
                misfit=float(rows.misfit.mean()) if "misfit" in rows else np.nan,
                gain=float(rows.gain.mean()) if "gain" in rows else np.nan,
                mean_rank=float(per_task[per_task.method == method]["rank"].mean()),
            )
        )
    overall = pd.DataFrame(overall).sort_values("pgr", ascending=False)
    return Leaderboard(
        overall=overall.reset_index(drop=True),
        per_task=per_task,
        cells=cells,
        baseline=baseline,
        confidence=confidence,
        excluded_cells=excluded,
    )
