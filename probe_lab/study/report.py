"""What ``probe-lab study`` writes beside a study's tables: ``summary.md``, and the
numbers of its method-comparison figure (:func:`method_pgr`: PGR by method and
supervisor with Fieller's interval over seeds, :func:`probe_lab.metrics.pgr_interval`;
the figure is :func:`probe_lab.plots.plot_method_pgr`, the study draws nothing).

Probes that trained to NaN or inf are left out of every number here and counted
(``failed``); with one seed there is no interval (``1 seed: no interval``) and
nothing is judged on one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from probe_lab.study.result import ONE_SEED, StudyResult, failed_rows

__all__ = ["method_pgr", "summary_markdown", "write_summary"]

KEYS = ["supervisor", "student", "loss"]


def method_pgr(result: StudyResult, *, confidence: float = 0.95) -> pd.DataFrame:
    """One row per (supervisor, student, method): mean accuracies over the seeds
    that trained finitely, PGR with Fieller's interval (``pgr_low``,
    ``pgr_high``; ``note`` says why an interval is missing), ``seeds`` and
    ``failed`` (probes left out). The numbers are the study summary's
    (:meth:`StudyResult.summary`), with each condition's method name."""
    summary = result.summary(confidence=confidence)
    table = result.table
    if "method" in table:
        methods = table.groupby(KEYS, sort=False)["method"].first().reset_index()
        summary = summary.merge(methods, on=KEYS, how="left", sort=False)
    else:
        summary["method"] = summary["loss"]
    # With fewer than two seeds the summary's ``interval`` says why there is none.
    summary["note"] = summary.pgr_note.where(summary.seeds > 1, summary.interval)
    columns = [*KEYS, "method", "seeds", "failed", "weak_acc", "student_acc"]
    columns += ["ceiling_acc", "pgr", "pgr_low", "pgr_high", "note"]
    return summary[columns]


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


def write_summary(result: StudyResult, out: str | Path) -> Path:
    """Write ``summary.md`` into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "summary.md"
    path.write_text(summary_markdown(result))
    return path
