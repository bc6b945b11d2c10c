"""Fig. 23 analog: linear probes on weak representations supervise probes on strong
ones (Burns et al. 2023, Appendix D.2).

The configured supervisors (weak layers, few principal components) label the
student split; students on the strong layer's first k principal components learn
from them with cross-entropy and with the confidence loss.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from probe_lab import plots
from probe_lab.experiments.base import Analysis, Context, Finding, fmt, judged, mean
from probe_lab.experiments.config import register_kind

__all__ = ["CLAIM", "KIND", "check", "plot", "run"]

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
    fig = plot(result.table, title=ctx.title)
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


def plot(table: pd.DataFrame, *, title: str = "") -> Figure:
    """Fig. 23 analog: test accuracy against student size, one line per weak
    supervisor (its own accuracy dashed), the ground-truth ceiling in black; one
    panel per loss.

    Args:
        table: a study's per-seed table (``StudyResult.table``).
        title: figure title.

    Returns:
        The figure.
    """
    losses = [loss for loss in plots.LOSS_NAMES if loss in set(table.loss)]
    sups = list(dict.fromkeys(table.supervisor))
    colors = dict(zip(sups, plots.colors(len(sups), "plasma"), strict=True))
    ks = sorted(set(table.student))
    with plots.style():
        fig = Figure(figsize=(5.2 * len(losses), 5.0), layout="constrained")
        axes = fig.subplots(1, len(losses), sharey=True, squeeze=False)[0]
        for ax, loss in zip(axes, losses, strict=True):
            rows = table[table.loss == loss]
            plots.line(ax, plots.ceiling(rows), "student", color="black", lw=2.2)
            ax.lines[-1].set_label("strong ceiling (ground truth)")
            for sup in sups:
                sub = rows[rows.supervisor == sup]
                weak = sub.drop_duplicates("seed").weak_acc.mean()
                plots.line(
                    ax,
                    plots.band(sub, "student", "student_acc"),
                    "student",
                    color=colors[sup],
                )
                ax.lines[-1].set_label(f"weak {sup} (acc {weak:.2f})")
                ax.axhline(weak, color=colors[sup], ls=":", lw=1.5)
            ax.set_title(f"students trained with {plots.LOSS_NAMES[loss]}")
            ax.set_ylabel("test accuracy")
            plots.k_axis(ax, ks)
        handles, labels = axes[0].get_legend_handles_labels()
        fig.legend(
            handles,
            labels,
            loc="outside lower center",
            ncols=min(3, len(labels)),
            title="dotted: the weak supervisor's own test accuracy",
        )
        fig.suptitle(title or "Weak-to-strong generalization with linear probes")
    return fig


KIND = register_kind(name="linear_probe_w2s", claim=CLAIM, run=run)
"""The experiment kind (no settings of its own)."""
