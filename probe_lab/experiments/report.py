"""What a finished experiment writes for people: ``summary.md`` and
``experiment.json`` in its folder, and a findings table for the terminal."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from probe_lab import metrics
from probe_lab.experiments.base import ExperimentResult, Finding, analog, fmt, strongest

__all__ = [
    "findings_table",
    "markdown_table",
    "strongest_students",
    "write_record",
    "write_summary",
]

_COLUMNS = (
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
"""The summary columns ``summary.md`` shows, where present."""


def markdown_table(frame: pd.DataFrame) -> str:
    """A Markdown table: numbers to 3 decimals (``n/a`` when missing), ``|``
    escaped in text."""

    def cell(value: Any) -> str:
        if isinstance(value, float | np.floating):
            return fmt(float(value))
        return str(value).replace("|", "\\|")

    lines = ["| " + " | ".join(frame.columns) + " |"]
    lines.append("|" + "---|" * len(frame.columns))
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.values]
    return "\n".join(lines)


def _held(finding: Finding) -> str:
    return "n/a" if finding.held is None else "yes" if finding.held else "**no**"


def write_summary(result: ExperimentResult) -> Path:
    """Write ``summary.md``: the paper's claim, whether it held (check by check),
    the numbers and the figure.

    Returns:
        The file written.
    """
    config = result.config
    held = [f.held for f in result.findings if f.held is not None]
    unjudged = len(result.findings) - len(held)
    verdict = (
        "could not be judged"
        if not held
        else "held"
        if all(held)
        else "partly held"
        if any(held)
        else "did NOT hold"
    )
    lines = [
        f"# {config.name}: {analog(config.figure)}",
        "",
        f"Cache `{result.cache}`, {config.preset} size, "
        f"{result.seconds:.0f} s on this machine. Config: `{config.source}`.",
        "",
        f"**The paper's finding** ({config.figure}): {config.spec.claim}",
        "",
        ("**Smoke: not evidence.** " if config.preset == "smoke" else "")
        + f"**Here the finding {verdict}** ("
        + (f"{sum(held)} of {len(held)} checks" if held else "")
        + ("; " if held and unjudged else "")
        + (f"{unjudged} of {len(result.findings)} not judged" if unjudged else "")
        + ").",
        "",
        *_undefined_pgr(result.summary),
    ]
    if config.preset == "smoke":
        lines += [
            "This is a smoke run (tiny sizes): it checks the pipeline; its numbers "
            "are not evidence either way.",
            "",
        ]
    checks = pd.DataFrame(
        [(f.claim, f.measured, _held(f)) for f in result.findings],
        columns=["claim", "measured", "held"],
    )
    lines += [markdown_table(checks), ""]
    lines += ["## Numbers (means over seeds; PGR interval: Fieller over seeds)", ""]
    columns = [
        c
        for c in _COLUMNS
        if c in result.summary and (c != "study" or len(result.studies) > 1)
    ]
    lines += [markdown_table(result.summary[columns]), ""]
    lines += [f"![{p.stem}]({p.name})" for p in result.figures]
    lines += ["", "## Studies", ""]
    for label, folder in result.folders.items():
        again = " (reused: saved by an earlier run)" if folder in result.reused else ""
        lines.append(f"- {label}: `{folder.relative_to(result.out)}/`{again}")
    path = result.out / "summary.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def _undefined_pgr(summary: pd.DataFrame) -> list[str]:
    """A paragraph on the summary rows whose PGR is undefined, and why (none when
    every PGR is defined)."""
    if "pgr" not in summary or not summary.pgr.isna().any():
        return []
    missing = summary[summary.pgr.isna()]
    reasons = pd.Series(metrics.pgr_reason(missing.weak_acc, missing.ceiling_acc))
    why = "; ".join(r or "no gap" for r in reasons.unique())
    if len(missing) == len(summary):
        return [
            f"**Every PGR is undefined** ({why}): the weak supervisors are at "
            "least as accurate as the strong ceiling on this cache, so there is no "
            "gap to recover and the claims about PGR cannot be judged here. A harder "
            "task, weaker supervisors (smaller k, an earlier layer) or more rows "
            "leave a gap.",
            "",
        ]
    return [
        f"PGR is undefined for {len(missing)} of {len(summary)} rows ({why}); the "
        "checks leave them out.",
        "",
    ]


def write_record(result: ExperimentResult) -> Path:
    """Write ``experiment.json``: the resolved experiment, the cache, the wall
    time and the checks.

    Returns:
        The file written.
    """
    record = dict(
        config=result.config.to_dict(),
        cache=str(result.cache),
        seconds=result.seconds,
        findings=[dataclasses.asdict(f) for f in result.findings],
        studies={label: str(folder) for label, folder in result.folders.items()},
        reused=[str(folder) for folder in result.reused],
    )
    path = result.out / "experiment.json"
    path.write_text(json.dumps(record, indent=2, default=str))
    return path


def findings_table(results: Sequence[ExperimentResult]) -> str:
    """A plain-text table of every result's checks, for a terminal.

    Args:
        results: finished experiments.

    Returns:
        One line per finding: experiment, held, claim, measured; a smoke-size
        result's heading says it is not evidence.
    """
    lines = []
    for result in results:
        smoke = (
            " [smoke: not evidence; tiny sizes check the pipeline, not the claims]"
            if result.config.preset == "smoke"
            else ""
        )
        lines.append(f"\n{result.config.name} ({analog(result.config.figure)}){smoke}:")
        for f in result.findings:
            mark = "n/a" if f.held is None else "HELD" if f.held else "NOT HELD"
            lines.append(f"  [{mark:>8}] {f.claim}\n             {f.measured}")
    return "\n".join(lines)


def strongest_students(results: Sequence[ExperimentResult]) -> str:
    """A plain-text table per result of its largest student's numbers, for a
    terminal."""
    cols = ["supervisor", "student", "loss", "weak_acc", "student_acc"]
    cols += ["ceiling_acc", "pgr", "agreement"]
    parts = []
    with pd.option_context("display.width", 160, "display.max_columns", 12):
        for result in results:
            frame = strongest(result.summary)[cols].round(3)
            parts.append(f"\n{result.config.name}, strongest student:")
            parts.append(frame.to_string(index=False))
    return "\n".join(parts)
