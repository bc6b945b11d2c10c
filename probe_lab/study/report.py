"""What ``probe-lab study`` writes beside a study's tables: ``summary.md`` and a
method-comparison figure, PGR by method and supervisor with Fieller's interval
over seeds (:func:`probe_lab.metrics.pgr_interval`).

Probes that trained to NaN or inf are left out of every number here and counted
(``failed``); with one seed there is no interval (``1 seed: no interval``) and
nothing is judged on one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from probe_lab import metrics, plots
from probe_lab.study.result import ONE_SEED, StudyResult, failed_rows

__all__ = ["method_pgr", "plot_methods", "summary_markdown", "write_report"]

KEYS = ["supervisor", "student", "loss"]


def method_pgr(result: StudyResult, *, confidence: float = 0.95) -> pd.DataFrame:
    """One row per (supervisor, student, method): mean accuracies over the seeds
    that trained finitely, PGR with Fieller's interval (``pgr_low``,
    ``pgr_high``; ``note`` says why an interval is missing), ``seeds`` and
    ``failed`` (probes left out)."""
    table = result.table
    failed = failed_rows(table)
    rows = []
    for key, every in table.groupby(KEYS, sort=False):
        group = every[~failed.loc[every.index]]
        fit = metrics.pgr_interval(
            group.weak_acc.to_numpy(float),
            group.student_acc.to_numpy(float),
            group.ceiling_acc.to_numpy(float),
            confidence=confidence,
        )
        note = str(fit.reason)
        if len(group) == 1:
            note = ONE_SEED
        elif len(group) == 0:
            note = "every seed failed"
        rows.append(
            dict(
                zip(KEYS, key, strict=True),
                method=every["method"].iloc[0] if "method" in every else key[2],
                seeds=len(group),
                failed=int(len(every) - len(group)),
                weak_acc=group.weak_acc.mean(),
                student_acc=group.student_acc.mean(),
                ceiling_acc=group.ceiling_acc.mean(),
                pgr=float(fit.pgr),
                pgr_low=float(fit.low),
                pgr_high=float(fit.high),
                note=note,
            )
        )
    return pd.DataFrame(rows)


def _number(value: float, digits: int = 3) -> str:
    return f"{value:.{digits}f}" if np.isfinite(value) else "n/a"


def summary_markdown(result: StudyResult, *, confidence: float = 0.95) -> str:
    """``summary.md``: what the study read, then PGR per supervisor, student and
    method with its interval, and the probes left out as failed."""
    frame = method_pgr(result, confidence=confidence)
    level = f"{confidence:.0%}"
    config = result.config
    lines = [
        "# Study summary",
        "",
        f"Cache `{config.cache}`, layer {config.layer}; {config.seeds} seed(s) "
        f"varying the {result.interval_covers}. PGR = (student - weak) / "
        f"(ceiling - weak) of the means over seeds, with Fieller's {level} "
        "interval over seeds (probe_lab.metrics.pgr_interval).",
        "",
        f"| supervisor | student k | method | seeds | weak | student | ceiling | "
        f"PGR | {level} interval | failed |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in frame.itertuples():
        interval = (
            f"[{_number(row.pgr_low)}, {_number(row.pgr_high)}]"
            if not row.note
            else row.note
        )
        lines.append(
            f"| {row.supervisor} | {row.student} | {row.loss} | {row.seeds} | "
            f"{_number(row.weak_acc)} | {_number(row.student_acc)} | "
            f"{_number(row.ceiling_acc)} | {_number(row.pgr)} | {interval} | "
            f"{row.failed} |"
        )
    failed = result.table[failed_rows(result.table)]
    if len(failed):
        lines += [
            "",
            f"{len(failed)} probe(s) trained to NaN or inf and are left out of "
            "every number above (their rows in table.parquet have failed_epoch >= "
            "1 and NaN accuracies):",
            "",
        ]
        for row in failed.itertuples():
            lines.append(
                f"- {row.loss} on {row.supervisor}, student k={row.student}, seed "
                f"{row.seed}: non-finite from epoch {int(row.failed_epoch)}"
            )
    if config.seeds == 1:
        lines += ["", f"{ONE_SEED}: no difference here is judged."]
    return "\n".join(lines) + "\n"


def plot_methods(result: StudyResult, *, confidence: float = 0.95) -> Figure:
    """PGR by method (rows) in one panel per supervisor, one marker per student
    size, with Fieller's interval over seeds; n/a where PGR is undefined."""
    frame = method_pgr(result, confidence=confidence)
    supervisors = list(dict.fromkeys(frame.supervisor))
    methods = list(dict.fromkeys(frame.loss))
    students = sorted(set(frame.student))
    y = np.arange(len(methods))[::-1]
    cols = min(len(supervisors), 4)
    rows = -(-len(supervisors) // cols)
    with plots.style():
        fig = Figure(
            figsize=(3.6 * cols + 2.0, rows * (1.2 + 0.45 * len(methods)) + 0.8),
            layout="constrained",
        )
        grid = plots.panels(fig, len(supervisors), cols, sharey=True).reshape(-1)
        colors = plots.colors(len(students))
        for ax, sup in zip(grid, supervisors, strict=False):
            for j, (k, color) in enumerate(zip(students, colors, strict=True)):
                part = frame[(frame.supervisor == sup) & (frame.student == k)]
                part = part.set_index("loss").reindex(methods)
                at = y + (j - (len(students) - 1) / 2) * 0.8 / len(students)
                err = np.vstack([part.pgr - part.pgr_low, part.pgr_high - part.pgr])
                ax.errorbar(
                    part.pgr,
                    at,
                    xerr=np.clip(np.nan_to_num(err), 0, None),
                    fmt="o",
                    color=color,
                    capsize=3,
                    label=f"student k={k}",
                )
                for pos in at[~np.isfinite(part.pgr.to_numpy(float))]:
                    ax.text(0, pos, "n/a", va="center", fontsize=8, color=color)
            ax.axvline(0, color="0.6", lw=0.8)
            ax.set_title(plots.pretty(sup))
            ax.set_xlabel("PGR")
        grid[0].set_yticks(y, methods)
        grid[0].legend(loc="lower right", fontsize=8)
        fig.suptitle(
            f"PGR by method and supervisor ({confidence:.0%} Fieller intervals "
            f"over {result.config.seeds} seed(s))"
        )
    return fig


def write_report(result: StudyResult, out: str | Path) -> list[Path]:
    """Write ``summary.md`` and ``methods.png`` into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "summary.md"
    path.write_text(summary_markdown(result))
    return [path, plots.save(plot_methods(result), out / "methods.png")]
