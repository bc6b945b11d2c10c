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

from probe_lab import metrics, plots
from probe_lab.experiments.base import (
    Analysis,
    Context,
    Finding,
    diff_text,
    fmt,
    paired,
    seed_values,
    shown,
)
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
    return Analysis({"study": result}, check(result.table), [ctx.save(fig)])


def check(table: pd.DataFrame) -> list[Finding]:
    """The claims, on the per-seed rows of the (supervisor, student) pairs whose
    mean ceiling is more than 2 points above the weak accuracy (PGR is noise
    without a gap). "Beats" is the paired per-seed difference student - weak
    accuracy per pair, Holm over the pairs; the confidence loss is the paired
    per-seed accuracy difference to xent, averaged over the pairs."""
    keys = ["supervisor", "student"]
    means = table.groupby(keys)[["weak_acc", "ceiling_acc"]].transform("mean")
    gap = table[means.ceiling_acc > means.weak_acc + 0.02]
    findings = []
    xent = gap[gap.loss == "xent"]
    claim = (
        "Students trained on weak labels beat their weak supervisors (student - "
        "weak accuracy, paired per seed, Holm over the pairs) across weak and "
        "strong sizes."
    )
    if not len(xent):
        pairs = table[table.loss == "xent"].groupby(keys).ngroups
        return [
            Finding(
                claim=claim,
                measured=f"none of the {pairs} (supervisor, student) pairs has a "
                "ceiling more than 2 points above the weak accuracy: PGR is "
                "undefined or noise here",
                held=None,
            )
        ]
    pairs = list(xent.groupby(keys, sort=False).groups)
    diffs = [
        paired(
            seed_values(xent, "student_acc", supervisor=sup, student=k),
            seed_values(xent, "weak_acc", supervisor=sup, student=k),
        )
        for sup, k in pairs
    ]
    p = np.array([d.p_value for d in diffs], np.float64)
    verdicts = (
        [shown(d, a) for d, a in zip(diffs, metrics.holm(p), strict=True)]
        if np.isfinite(p).all()
        else [None] * len(diffs)
    )
    beaten = sum(bool(v) for v in verdicts)
    median = float(np.median([d.mean for d in diffs]))
    findings.append(
        Finding(
            claim=claim,
            measured=f"student above weak in {beaten} of {len(pairs)} (supervisor, "
            f"student) pairs with a gap (Holm); median gain "
            f"{fmt(median, 3, signed=True)}",
            held=None if None in verdicts else bool(beaten > len(pairs) / 2),
        )
    )
    if {"xent", "confidence"} <= set(gap.loss):
        diff = paired(
            seed_values(gap, "student_acc", loss="confidence"),
            seed_values(gap, "student_acc", loss="xent"),
        )
        findings.append(
            Finding(
                claim="The auxiliary confidence loss raises the student's accuracy "
                "(and so PGR) over plain cross-entropy.",
                measured="accuracy confidence - xent, paired per seed (mean over "
                f"{len(pairs)} pairs): {diff_text(diff)}",
                held=shown(diff),
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
