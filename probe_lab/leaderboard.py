"""Rank student methods across tasks, supervisors and seeds.

Input: the per-seed table of one study (one task), or of several stacked with a
``task`` column. A **cell** is one (task, supervisor, student size); a **method** is
a study condition (the table's ``loss`` column: a loss or label method with its
parameters). Every number comes from test rows no probe trained on. The intervals
are :mod:`probe_lab.metrics`' (coverage checked by simulation, docs/statistics.md).

* **Which cells count** (the cell rule; weak and ceiling accuracies per seed):
  the supervisor is better than chance (the t-interval over seeds of its accuracy
  lies above 0.5) and the gap ``ceiling - weak`` is real (its t-interval lies above
  0 and its mean is at least ``min_gap``); where the number of test rows ``n`` is
  known (an ``n_test`` column or argument), also ``weak - 0.5 > 2 sqrt(0.25 / n)``
  and ``gap > 2 sqrt((c (1 - c) + w (1 - w)) / n)``: above two binomial standard
  errors of one seed's test accuracy (difference), so a cell is not kept on seeds
  that share one noisy test set. Other cells are listed with the reason and left
  out of everything below.
* **PGR per method** (and per task): the ratio of summed gains,
  ``sum(student - weak) / sum(ceiling - weak)`` over the kept cells and seeds, a
  gap-weighted mean of per-cell PGRs, so cells with small gaps cannot dominate
  (a mean of per-cell ratios lets a 0.02 gap swing it by its noise / 0.02). Its
  interval is Fieller's (:func:`probe_lab.metrics.pgr_interval`) on the per-seed
  sums; "undefined at this precision" where the summed gap's own interval holds 0.
* **Wins, ties, losses against the baseline** (``xent``): per kept cell, the
  paired per-seed difference in student accuracy and its t-test; Holm's
  correction over the kept cells of each method (family-wise level
  ``1 - confidence``); a win or loss when the adjusted p-value is at most that
  level, by the sign of the mean difference; a tie otherwise.
  ``cells = wins + ties + losses`` for every method but the baseline.
* **Accuracy difference overall**: per seed, the method's mean student accuracy
  over its kept cells minus the baseline's on the same cells, with its paired
  t-interval over seeds.
* **Minimum detectable effect**: the per-cell accuracy difference a paired t-test
  over the study's seeds detects with power 0.8 (alpha 0.05 two-sided, ``mde``;
  at Holm's strictest level ``0.05 / cells``, ``mde_holm``), from the median over
  kept cells of the per-cell SD of the paired differences.
* **Misfit and gain**: the table's means over kept cells and seeds.
* **Early-stopping sensitivity** (``stopping``): the table's ``student_acc`` is
  the student at the paper's early stopping (best validation agreement with the
  weak labels). For each other rule whose column the table has
  (``student_acc_final``: the last epoch; ``student_acc_best_test``: the best
  epoch on test, an upper bound no real run can use), the verdicts are made again
  with the student accuracy read from that column (same cells, same Holm
  families): ``verdict_<rule>`` per cell, and per method ``wins_<rule>``,
  ``ties_<rule>``, ``losses_<rule>``, ``survive_<rule>`` (kept cells whose
  verdict is the same as the main one) and ``pgr_<rule>``. A rule whose column
  is missing is reported as unavailable (NaN counts, verdict ``unavailable``).

Output columns (:class:`Leaderboard`): ``overall``: method, pgr, pgr_low, pgr_high,
pgr_note, seeds, cells, wins, ties, losses, acc_diff, acc_diff_low, acc_diff_high,
mde, mde_holm, misfit, gain, mean_rank, and per other stopping rule
wins_/ties_/losses_/survive_/pgr_<rule>. ``per_task``: task, method, pgr, low, high,
pgr_note, rank. ``cells``: task, supervisor, student, method, weak_acc, gap,
kept, excluded (the reason), pgr, pgr_low, pgr_high, diff, diff_low, diff_high,
p_value, p_holm, sd, verdict (win, tie, loss, baseline, excluded),
verdict_<rule> per stopping rule.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from probe_lab import metrics

__all__ = ["STOPPING", "STOPPING_NAMES", "Leaderboard", "cell_rule", "rank_methods"]

CELL = ["task", "supervisor", "student"]
CHANCE = 0.5
ONE_TASK = "study"
"""The task name given to a table without a ``task`` column."""
NEAR_CHANCE = "supervisor within noise of chance"
NO_REAL_GAP = "ceiling - weak gap within noise"
NO_CELL = "no cell passes the chance and gap rule"
STOPPING = {
    "weak_agreement": "student_acc",
    "final": "student_acc_final",
    "best_test": "student_acc_best_test",
}
"""Early-stopping rules and the table column of the student's test accuracy under
each: the paper's (the epoch of best validation agreement with the weak labels),
the last epoch, and the best epoch on test (an upper bound, not a usable rule)."""
STOPPING_NAMES = {
    "weak_agreement": "early stopping on weak agreement",
    "final": "final epoch",
    "best_test": "best epoch on test (upper bound)",
}
"""How a report names each rule."""
UNAVAILABLE = "unavailable"
"""The verdict under an early-stopping rule whose column the table lacks."""


@dataclasses.dataclass(frozen=True)
class Leaderboard:
    """The ranking tables of :func:`rank_methods` (columns: the module doc)."""

    overall: pd.DataFrame
    """One row per method: pooled PGR with its interval, seeds, kept cells,
    Holm-corrected wins / ties / losses against the baseline, the overall paired
    accuracy difference, the minimum detectable effect, misfit, gain and mean rank
    over tasks; sorted best first."""
    per_task: pd.DataFrame
    """One row per (task, method): pooled PGR with its interval and the rank."""
    cells: pd.DataFrame
    """One row per (cell, method): the cell rule, the cell's PGR, the paired
    accuracy difference to the baseline with its interval and p-values, and the
    verdict."""
    baseline: str
    confidence: float
    excluded_cells: int
    """Cells left out by the cell rule (chance or gap)."""
    seeds: int
    """Seeds per cell (the most any method has): the ``S`` of the MDE."""
    stopping: dict[str, bool] = dataclasses.field(default_factory=dict)
    """Each early-stopping rule compared and whether the table had its column."""
    failed: int = 0
    """Rows of probes that trained to NaN or inf (``failed_epoch`` >= 0), left
    out of everything (a method whose every row failed is not ranked)."""

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
        """The overall table, the per-task ranks and the rules, as Markdown."""
        level = f"{self.confidence:.0%}"
        lines = [
            f"| rank | method | PGR | {level} interval | seeds | cells | "
            f"wins / ties / losses vs {self.baseline} (Holm) | accuracy - "
            f"{self.baseline} [{level}] | MDE | misfit | gain |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for i, row in enumerate(self.overall.itertuples(), start=1):
            interval = (
                f"[{row.pgr_low:.3f}, {row.pgr_high:.3f}]"
                if not row.pgr_note
                else row.pgr_note
            )
            lines.append(
                f"| {i} | {row.method} | {row.pgr:.3f} | {interval} | {row.seeds} | "
                f"{row.cells} | {row.wins} / {row.ties} / {row.losses} | "
                f"{row.acc_diff:+.4f} [{row.acc_diff_low:+.4f}, "
                f"{row.acc_diff_high:+.4f}] | {row.mde:.4f} | {row.misfit:.3f} | "
                f"{row.gain:+.3f} |"
            )
        lines += [*self._ranks(), *self._stopping(), "", self._rules()]
        if self.failed:
            lines += [
                "",
                f"{self.failed} failed probe row(s) (trained to NaN or "
                "inf) are left out of every number above.",
            ]
        return "\n".join(lines) + "\n"

    def _ranks(self) -> list[str]:
        ranks = self.per_task.pivot(index="method", columns="task", values="rank")
        ranks = ranks.loc[self.overall.method]
        lines = ["", "Rank per task (1 = highest PGR):", ""]
        lines.append("| method | " + " | ".join(ranks.columns) + " |")
        lines.append("|---|" + "---|" * len(ranks.columns))
        for method, row in ranks.iterrows():
            lines.append(
                f"| {method} | "
                + " | ".join("n/a" if np.isnan(v) else f"{int(v)}" for v in row.values)
                + " |"
            )
        return lines

    def _stopping(self) -> list[str]:
        """Which verdicts survive under each other early-stopping rule."""
        others = [r for r in self.stopping if r != "weak_agreement"]
        if not others:
            return []
        lines = [
            "",
            "Early-stopping sensitivity: the verdicts (wins / ties / losses) that "
            "stay the same when the student's test accuracy is read at another "
            "epoch:",
            "",
            "| method | " + " | ".join(STOPPING_NAMES[r] for r in others) + " |",
            "|---|" + "---|" * len(others),
        ]
        for row in self.overall.itertuples():
            if row.method == self.baseline:
                continue
            texts = []
            for rule in others:
                if not self.stopping[rule]:
                    texts.append(f"unavailable (no {STOPPING[rule]} column)")
                    continue
                texts.append(
                    f"{getattr(row, f'survive_{rule}')} of {row.cells} "
                    f"({getattr(row, f'wins_{rule}')} / {getattr(row, f'ties_{rule}')}"
                    f" / {getattr(row, f'losses_{rule}')}); PGR "
                    f"{getattr(row, f'pgr_{rule}'):.3f}"
                )
            lines.append(f"| {row.method} | " + " | ".join(texts) + " |")
        return lines

    def _rules(self) -> str:
        level = f"{self.confidence:.0%}"
        alpha = f"{1 - self.confidence:.2g}"
        return (
            f"Cells: a (task, supervisor, student) counts when the supervisor's "
            f"{level} t-interval of test accuracy over seeds lies above 0.5 and the "
            f"ceiling - weak gap's lies above 0, with a mean gap of at least the "
            f"minimum (and, where the test-row count n is known, both above two "
            f"binomial standard errors of one seed's test accuracy); "
            f"{self.excluded_cells} cell(s) failed and are left out. PGR: "
            f"sum(student - weak) / sum(ceiling - weak) over the kept cells and "
            f"seeds (small gaps cannot dominate), with Fieller's {level} interval "
            f"over seeds. Wins / ties / losses: per kept cell, the paired t-test of "
            f"the per-seed test-accuracy difference against {self.baseline}, "
            f"Holm-corrected over each method's cells at family-wise level {alpha}. "
            f"Accuracy - {self.baseline}: per seed, the mean over kept cells, with "
            f"its paired {level} t-interval. MDE: the per-cell difference a paired "
            f"t-test over {self.seeds} seeds detects with power 0.8 (alpha 0.05 "
            f"two-sided), from the median per-cell SD of the paired differences."
        )


def cell_rule(
    table: pd.DataFrame,
    *,
    confidence: float = 0.95,
    min_gap: float = metrics.SMALL_GAP,
    n_test: float | None = None,
) -> pd.DataFrame:
    """Which cells a comparison can use: the leaderboard's rule (module doc), for
    any study table (a summary can warn with it too).

    Args:
        table: per-seed rows with ``supervisor``, ``student``, ``seed``,
            ``weak_acc``, ``ceiling_acc`` (``task`` optional; ``n_test`` used when
            present).
        confidence: coverage of the t-intervals.
        min_gap: the smallest mean ``ceiling - weak`` kept.
        n_test: test rows per seed (overrides the ``n_test`` column).

    Returns:
        One row per cell: ``task, supervisor, student, weak_acc, gap`` (means over
        seeds), ``excluded`` (``""``, :data:`NEAR_CHANCE` or :data:`NO_REAL_GAP`)
        and ``kept``.
    """
    if "task" not in table:
        table = table.assign(task=ONE_TASK)
    columns = ["weak_acc", "ceiling_acc"] + (["n_test"] if "n_test" in table else [])
    seeds = table.groupby([*CELL, "seed"], sort=False)[columns].mean().reset_index()
    rows = []
    for key, group in seeds.groupby(CELL, sort=False):
        weak, ceiling = group.weak_acc.to_numpy(), group.ceiling_acc.to_numpy()
        w, w_low, _ = metrics.t_interval(weak, confidence=confidence)
        gap, gap_low, _ = metrics.t_interval(ceiling - weak, confidence=confidence)
        n = group.n_test.min() if n_test is None and "n_test" in group else n_test
        c = float(np.mean(ceiling))
        chance_ok = w_low > CHANCE
        gap_ok = gap_low > 0 and gap >= min_gap
        if n is not None and np.isfinite(n):
            chance_ok = chance_ok and w - CHANCE > 2 * np.sqrt(0.25 / n)
            gap_ok = gap_ok and gap > 2 * np.sqrt((c * (1 - c) + w * (1 - w)) / n)
        reason = NEAR_CHANCE if not chance_ok else "" if gap_ok else NO_REAL_GAP
        rows.append(
            dict(zip(CELL, key, strict=True), weak_acc=w, gap=gap, excluded=reason)
        )
    cells = pd.DataFrame(rows)
    cells["kept"] = cells.excluded == ""
    return cells


def _paired(
    table: pd.DataFrame, baseline: str, confidence: float, rule: pd.DataFrame
) -> pd.DataFrame:
    """Per cell and method: the cell's PGR, the baseline-paired accuracy
    difference, its p-value, Holm's adjustment within the method, the verdict."""
    base = table[table.loss == baseline][[*CELL, "seed", "student_acc"]]
    merged = table.merge(base, on=[*CELL, "seed"], suffixes=("", "_base"))
    rows = []
    for key, group in merged.groupby([*CELL, "loss"], sort=False):
        diff = metrics.paired_difference(
            group.student_acc, group.student_acc_base, confidence=confidence
        )
        cell_pgr = metrics.pgr_interval(
            group.weak_acc, group.student_acc, group.ceiling_acc, confidence=confidence
        )
        rows.append(
            dict(
                zip([*CELL, "method"], key, strict=True),
                pgr=cell_pgr.pgr,
                pgr_low=cell_pgr.low,
                pgr_high=cell_pgr.high,
                diff=diff.mean,
                diff_low=diff.low,
                diff_high=diff.high,
                p_value=diff.p_value,
                sd=diff.sd,
            )
        )
    cells = rule.merge(pd.DataFrame(rows), on=CELL)
    alpha = 1 - confidence
    cells["p_holm"] = np.nan
    cells["verdict"] = "excluded"
    for method, group in cells[cells.kept].groupby("method", sort=False):
        adjusted = metrics.holm(group.p_value)
        verdict = np.where(
            adjusted <= alpha, np.where(group["diff"] > 0, "win", "loss"), "tie"
        )
        cells.loc[group.index, "p_holm"] = adjusted
        cells.loc[group.index, "verdict"] = (
            "baseline" if method == baseline else verdict
        )
    return cells


def _pooled(rows: pd.DataFrame, confidence: float) -> tuple[metrics.PGRInterval, int]:
    """The ratio of summed gains over cells with Fieller's interval over seeds
    (seeds present in every cell only), and the seed count."""
    cells = rows.groupby(CELL, sort=False).ngroups
    by_seed = rows.assign(
        gain=rows.student_acc - rows.weak_acc, gap=rows.ceiling_acc - rows.weak_acc
    ).groupby("seed")
    sums = by_seed[["gain", "gap"]].sum()[by_seed.size() == cells]
    if cells == 0 or sums.empty:
        return metrics.PGRInterval(np.nan, np.nan, np.nan, NO_CELL), 0
    zero = np.zeros(len(sums))
    out = metrics.pgr_interval(zero, sums.gain, sums.gap, confidence=confidence)
    return out, len(sums)


def _method_row(
    method: str,
    rows: pd.DataFrame,
    base: pd.DataFrame,
    cells: pd.DataFrame,
    confidence: float,
    seeds: int,
) -> dict:
    """One method's overall row (``rows`` and ``base``: its and the baseline's
    table rows on its kept cells)."""
    pooled, n_seeds = _pooled(rows, confidence)
    mine = rows.groupby("seed").student_acc.mean()
    theirs = base.groupby("seed").student_acc.mean().reindex(mine.index)
    diff = metrics.paired_difference(mine, theirs, confidence=confidence)
    verdicts = cells.verdict
    sd = float(np.nanmedian(cells.sd)) if cells.sd.notna().any() else np.nan
    kept = int(len(cells))
    mde = mde_holm = np.nan
    if seeds >= 2 and kept and not (verdicts == "baseline").any():
        mde = float(metrics.minimum_detectable_effect(sd, seeds))
        mde_holm = float(
            metrics.minimum_detectable_effect(sd, seeds, alpha=0.05 / kept)
        )
    return dict(
        method=method,
        pgr=float(pooled.pgr),
        pgr_low=float(pooled.low),
        pgr_high=float(pooled.high),
        pgr_note=str(pooled.reason),
        seeds=n_seeds,
        cells=kept,
        wins=int((verdicts == "win").sum()),
        ties=int((verdicts == "tie").sum()),
        losses=int((verdicts == "loss").sum()),
        acc_diff=float(diff.mean),
        acc_diff_low=float(diff.low),
        acc_diff_high=float(diff.high),
        mde=mde,
        mde_holm=mde_holm,
        misfit=float(rows.misfit.mean()) if "misfit" in rows else np.nan,
        gain=float(rows.gain.mean()) if "gain" in rows else np.nan,
    )


def _per_task(
    usable: pd.DataFrame, tasks: list[str], methods: list[str], confidence: float
) -> pd.DataFrame:
    """Pooled PGR per (task, method) and the rank within each task."""
    rows = []
    for task in tasks:
        for method in methods:
            part = usable[(usable.task == task) & (usable.loss == method)]
            pooled, _ = _pooled(part, confidence)
            rows.append(
                dict(
                    task=task,
                    method=method,
                    pgr=float(pooled.pgr),
                    low=float(pooled.low),
                    high=float(pooled.high),
                    pgr_note=str(pooled.reason),
                )
            )
    per_task = pd.DataFrame(rows)
    per_task["rank"] = per_task.groupby("task").pgr.rank(ascending=False, method="min")
    return per_task


def _stopping_rules(stopping: Sequence[str]) -> list[str]:
    rules = list(dict.fromkeys(stopping))
    if unknown := sorted(set(rules) - set(STOPPING)):
        raise ValueError(
            f"rank_methods(stopping=...) got unknown rules {unknown}; use some of "
            f"{list(STOPPING)}"
        )
    return rules


def _other_stopping(
    table: pd.DataFrame,
    baseline: str,
    confidence: float,
    rule: pd.DataFrame,
    cells: pd.DataFrame,
    rules: list[str],
) -> tuple[pd.DataFrame, dict[str, bool]]:
    """Each rule's verdict per (cell, method), the student accuracy read from
    the rule's column (the cell rule does not depend on it); whether each rule's
    column is in the table. The main verdict is ``weak_agreement``'s."""
    available = {}
    for name in rules:
        column = STOPPING[name]
        available[name] = column in table and bool(table[column].notna().any())
        if name == "weak_agreement":
            cells[f"verdict_{name}"] = cells.verdict
            continue
        if not available[name]:
            cells[f"verdict_{name}"] = UNAVAILABLE
            continue
        other = _paired(
            table.assign(student_acc=table[column]), baseline, confidence, rule
        )
        keys = [*CELL, "method"]
        other = other[[*keys, "verdict"]].rename(columns={"verdict": f"verdict_{name}"})
        cells = cells.merge(other, on=keys, how="left")
    return cells, available


def _survival(
    mine: pd.DataFrame,
    rows: pd.DataFrame,
    rules: list[str],
    available: dict[str, bool],
    confidence: float,
) -> dict[str, float]:
    """Per rule: wins / ties / losses on the method's kept cells, how many equal
    the main verdict (NaN where the rule is unavailable), and the pooled PGR."""
    out: dict[str, float] = {}
    for name in rules:
        if name == "weak_agreement":
            continue
        verdicts = mine[f"verdict_{name}"]
        ok = available[name]
        for verdict, column in (("win", "wins"), ("tie", "ties"), ("loss", "losses")):
            out[f"{column}_{name}"] = int((verdicts == verdict).sum()) if ok else np.nan
        same = (verdicts == mine.verdict) & (mine.verdict != "baseline")
        out[f"survive_{name}"] = int(same.sum()) if ok else np.nan
        pooled = (
            _pooled(rows.assign(student_acc=rows[STOPPING[name]]), confidence)[0].pgr
            if ok
            else np.nan
        )
        out[f"pgr_{name}"] = float(pooled)
    return out


def _check(table: pd.DataFrame, baseline: str) -> pd.DataFrame:
    need = {"supervisor", "student", "loss", "seed"}
    need |= {"weak_acc", "student_acc", "ceiling_acc"}
    if missing := sorted(need - set(table.columns)):
        raise ValueError(
            f"rank_methods needs the study table's columns {missing} (pass "
            f"StudyResult.table, or several stacked with a 'task' column)"
        )
    if baseline not in set(table.loss):
        raise ValueError(
            f"the baseline method {baseline!r} is not in the table's methods "
            f"{sorted(set(table.loss))}"
        )
    table = table if "task" in table else table.assign(task=ONE_TASK)
    if table.duplicated([*CELL, "loss", "seed"]).any():
        raise ValueError(
            "the table has several rows per (task, supervisor, student, loss, seed); "
            "stack several studies with a 'task' column naming each"
        )
    return table


def rank_methods(
    table: pd.DataFrame,
    *,
    baseline: str = "xent",
    confidence: float = 0.95,
    min_gap: float = metrics.SMALL_GAP,
    n_test: float | None = None,
    stopping: Sequence[str] = tuple(STOPPING),
) -> Leaderboard:
    """Rank the methods (the ``loss`` column) of study tables (rules: module doc).

    Args:
        table: per-seed study rows: one study's table, or several stacked with a
            ``task`` column (one study per task).
        baseline: the method wins and losses are counted against.
        confidence: coverage of every interval; ``1 - confidence`` is the
            family-wise level of Holm's correction.
        min_gap: cells whose mean ``ceiling - weak`` is below this are left out.
        n_test: test rows per seed, for the binomial part of the cell rule
            (default: the table's ``n_test`` column, else that part is skipped).
        stopping: early-stopping rules (keys of :data:`STOPPING`) whose verdicts
            are reported next to the main one (the table's ``student_acc``, the
            paper's early stopping on weak agreement): per cell a ``verdict_<rule>``
            column, per method how many verdicts survive (``survive_<rule>``). A
            rule whose column the table lacks is reported as unavailable.

    Returns:
        The :class:`Leaderboard`.
    """
    table = _check(table, baseline)
    failed = table.failed_epoch.fillna(-1) >= 0 if "failed_epoch" in table else None
    if failed is not None and failed.any():  # never a failed probe's numbers
        table = table[~failed]
        _check(table, baseline)
    rules = _stopping_rules(stopping)
    rule = cell_rule(table, confidence=confidence, min_gap=min_gap, n_test=n_test)
    cells = _paired(table, baseline, confidence, rule)
    cells, available = _other_stopping(table, baseline, confidence, rule, cells, rules)
    kept = cells[cells.kept]
    usable = table.merge(rule[rule.kept][CELL], on=CELL)
    seeds = int(table.groupby([*CELL, "loss"]).seed.nunique().max())
    methods = list(dict.fromkeys(table.loss))
    tasks = list(dict.fromkeys(table.task))
    per_task = _per_task(usable, tasks, methods, confidence)
    overall = []
    for method in methods:
        mine = kept[kept.method == method]
        rows = usable[usable.loss == method].merge(mine[CELL], on=CELL)
        base = usable[usable.loss == baseline].merge(mine[CELL], on=CELL)
        row = _method_row(method, rows, base, mine, confidence, seeds)
        row["mean_rank"] = float(per_task[per_task.method == method]["rank"].mean())
        row |= _survival(mine, rows, rules, available, confidence)
        overall.append(row)
    overall = pd.DataFrame(overall).sort_values("pgr", ascending=False)
    return Leaderboard(
        overall=overall.reset_index(drop=True),
        per_task=per_task,
        cells=cells,
        baseline=baseline,
        confidence=confidence,
        excluded_cells=int((~rule.kept).sum()),
        seeds=seeds,
        stopping={r: available[r] for r in rules},
        failed=0 if failed is None else int(failed.sum()),
    )
