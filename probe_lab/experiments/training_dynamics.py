"""Fig. 26 analog: how the students' agreement with weak errors develops during
training (Burns et al. 2023, Appendix E.2).

One study with the configured supervisors and per-epoch scoring; the largest
student's agreement on the test rows where the weak label is wrong, epoch by epoch.
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
    "Through training, students come to agree with the weak supervisor's mistakes "
    "when those mistakes are learnable; the confidence loss keeps that agreement "
    "lower."
)
"""The paper's finding."""


def run(ctx: Context) -> Analysis:
    """One study; agreement curves of the largest student."""
    result = ctx.study()
    dyn = result.dynamics
    dyn = dyn[dyn.student == dyn.student.max()]
    findings = check(dyn, result.config.reference_name)
    fig = plot(dyn, title=ctx.title)
    return Analysis({"study": result}, findings, [ctx.save(fig)])


def _agreement(frame: pd.DataFrame, supervisor: str, loss: str) -> float:
    """Mean agreement on weak-wrong rows of one supervisor and loss (NaN: none)."""
    rows = frame[(frame.supervisor == supervisor) & (frame.loss == loss)]
    return mean(rows.agreement_weak_wrong)


def check(dyn: pd.DataFrame, ref: str) -> list[Finding]:
    """The claims, on one student's per-epoch rows; ``ref`` names the reference
    probe whose errors are the simulatable ones."""
    last = dyn[dyn.epoch == dyn.epoch.max()]
    first = dyn[dyn.epoch == dyn.epoch.min()]
    start, end = _agreement(first, ref, "xent"), _agreement(last, ref, "xent")
    findings = [
        Finding(
            claim="With cross-entropy the student increasingly agrees with the weak "
            f"supervisor's mistakes during training when they are simulatable ({ref}).",
            measured=f"agreement on weak-wrong test rows, epoch "
            f"{int(first.epoch.min())}: {fmt(start)} -> epoch "
            f"{int(last.epoch.max())}: {fmt(end)}",
            held=judged(end - start > 0, start, end),
        )
    ]
    if "random" in set(dyn.supervisor):
        rnd = _agreement(last, "random", "xent")
        findings.append(
            Finding(
                claim="Random (unsimulatable) errors are imitated less than "
                "simulatable ones by the end of training.",
                measured=f"final agreement on weak-wrong rows: random {fmt(rnd)} vs "
                f"{ref} {fmt(end)}",
                held=judged(rnd < end, rnd, end),
            )
        )
    if {"xent", "confidence"} <= set(dyn.loss):
        sups = sorted(set(dyn.supervisor))
        gap = mean(
            [
                _agreement(last, s, "confidence") - _agreement(last, s, "xent")
                for s in sups
            ]
        )
        findings.append(
            Finding(
                claim="The confidence loss lowers the student's agreement with weak "
                "errors.",
                measured=f"final agreement on weak-wrong rows, confidence - xent, "
                f"mean over {len(sups)} structures: {fmt(gap, signed=True)}",
                held=judged(gap < 0, gap),
            )
        )
    return findings


def plot(dynamics: pd.DataFrame, *, title: str = "") -> Figure:
    """Fig. 26 analog: student-supervisor agreement through training, on test rows
    where the weak label is wrong (solid) and right (dashed), per structure and
    loss.

    Args:
        dynamics: ``StudyResult.dynamics`` rows of one student size.
        title: figure title.

    Returns:
        The figure.
    """
    sups = list(dict.fromkeys(dynamics.supervisor))
    losses = [loss for loss in plots.LOSS_NAMES if loss in set(dynamics.loss)]
    cols = len(sups) if len(sups) <= 3 else min(4, -(-len(sups) // 2))
    rows_n = int(np.ceil(len(sups) / cols))
    with plots.style():
        fig = Figure(figsize=(3.6 * cols, 3.2 * rows_n + 0.9), layout="constrained")
        axes = plots.panels(fig, len(sups), cols, sharex=True, sharey=True)
        for ax, sup in zip(axes.flat, sups, strict=False):
            sub = dynamics[dynamics.supervisor == sup]
            for loss in losses:
                rows = sub[sub.loss == loss]
                color = plots.LOSS_COLORS[loss]
                plots.line(
                    ax,
                    plots.band(rows, "epoch", "agreement_weak_wrong"),
                    "epoch",
                    color=color,
                    marker=None,
                    label=f"{plots.LOSS_NAMES[loss]}: weak label wrong",
                )
                plots.line(
                    ax,
                    plots.band(rows, "epoch", "agreement_weak_right"),
                    "epoch",
                    color=color,
                    ls="--",
                    marker=None,
                    label=f"{plots.LOSS_NAMES[loss]}: weak label right",
                )
            ax.set_title(plots.pretty(sup))
            ax.set_ylim(0, 1.02)
        for ax in axes.flat[max(0, len(sups) - cols) : len(sups)]:
            ax.tick_params(labelbottom=True)  # lowest panel of its column
            ax.set_xlabel("training epoch")
        for ax in axes[:, 0]:
            ax.set_ylabel("agreement with weak labels")
        handles, labels = axes.flat[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside lower center", ncols=2)
        student = int(dynamics.student.iloc[0])
        fig.suptitle(
            (title or "Training dynamics") + f"\nstudent k = {student}; test rows"
        )
    return fig


KIND = register_kind(name="training_dynamics", claim=CLAIM, run=run)
"""The experiment kind (no settings of its own)."""
