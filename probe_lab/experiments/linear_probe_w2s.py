"""Fig. 23 analog: linear probes on weak representations supervise probes on strong
ones (Burns et al. 2023, Appendix D.2).

The configured supervisors (weak layers, few principal components) label the
student split; students on the strong layer's first k principal components learn
from them with cross-entropy and with the confidence loss.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from probe_lab import plots
from probe_lab.experiments.base import Analysis, Context, Finding, fmt, judged, mean

__all__ = ["CLAIM", "check", "run"]

CLAIM = (
    "Linear probes on weak representations (earlier layers, few principal "
    "components) supervise probes on strong ones; the students beat their "
    "supervisors but stay below the ground-truth ceiling (black), and the confidence "
    "loss closes more of the gap."
)
"""The paper's finding."""


def run(ctx: Context) -> Analysis:
    """One study with the configured supervisors; the PGR grid figure."""
    result = ctx.study()
    fig = plots.plot_weak_to_strong(result.table, title=ctx.title)
    return Analysis({"study": result}, check(result.summary()), [ctx.save(fig)])


def check(summary: pd.DataFrame) -> list[Finding]:
    """The claims, on the (supervisor, student) pairs whose ceiling is more than
    2 points above the weak accuracy (PGR is noise without a gap)."""
    gap = summary[summary.ceiling_acc > summary.weak_acc + 0.02]
    findings = []
    xent = gap[gap.loss == "xent"]
    claim = (
        "Students trained on weak labels beat their weak supervisors (PGR > 0) "
        "across weak and strong sizes."
    )
    if not len(xent):
        pairs = int((summary.loss == "xent").sum())
        findings.append(
            Finding(
                claim=claim,
                measured=f"none of the {pairs} (supervisor, student) pairs has a "
                "ceiling more than 2 points above the weak accuracy: PGR is "
                "undefined or noise here",
                held=None,
            )
        )
    else:
        median = float(np.nanmedian(xent.pgr))
        share = float((xent.pgr > 0).mean())
        each = xent.groupby("supervisor", sort=False).pgr.median()
        per = "; ".join(f"{sup} {fmt(p, 2)}" for sup, p in each.items())
        findings.append(
            Finding(
                claim=claim,
                measured=f"median PGR {fmt(median, 2)} over {len(xent)} "
                f"(supervisor, student) pairs with a gap; {share:.0%} of them > 0. "
                f"Median per supervisor: {per}",
                held=bool(median > 0),
            )
        )
    if {"xent", "confidence"} <= set(gap.loss) and len(xent):
        keys = ["supervisor", "student"]
        paired = gap[gap.loss == "xent"].merge(
            gap[gap.loss == "confidence"], on=keys, suffixes=("_x", "_c")
        )
        gain = mean(paired.pgr_c - paired.pgr_x)
        findings.append(
            Finding(
                claim="The auxiliary confidence loss raises PGR over plain "
                "cross-entropy.",
                measured="mean PGR change (confidence - xent) "
                f"{fmt(gain, 2, signed=True)} over {len(paired)} pairs",
                held=judged(gain > 0, gain),
            )
        )
    return findings
