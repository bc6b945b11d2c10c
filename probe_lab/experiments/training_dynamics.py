"""Fig. 26 analog: how the students' agreement with weak errors develops during
training (Burns et al. 2023, Appendix E.2).

One study with the configured supervisors and per-epoch scoring; the largest
student's agreement on the test rows where the weak label is wrong, epoch by epoch.
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
    paired,
    seed_values,
    shown,
)
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


def _agreement(frame: pd.DataFrame, supervisor: str | None, loss: str) -> pd.Series:
    """Per-seed agreement on weak-wrong rows of one supervisor (None: the mean
    over all) and loss."""
    where = dict(loss=loss) | ({} if supervisor is None else {"supervisor": supervisor})
    return seed_values(frame, "agreement_weak_wrong", **where)


def check(dyn: pd.DataFrame, ref: str) -> list[Finding]:
    """The claims, on one student's per-epoch rows; ``ref`` names the reference
    probe whose errors are the simulatable ones. Each is a paired per-seed
    difference of the agreement on weak-wrong test rows (the same seeds' curves),
    Holm over the experiment's claims."""
    last = dyn[dyn.epoch == dyn.epoch.max()]
    first = dyn[dyn.epoch == dyn.epoch.min()]
    end = _agreement(last, ref, "xent")
    epochs = f"epoch {int(last.epoch.max())} - epoch {int(first.epoch.min())}"
    tests = [
        (
            "With cross-entropy the student increasingly agrees with the weak "
            f"supervisor's mistakes during training when they are simulatable ({ref}).",
            f"agreement on weak-wrong test rows, {epochs}",
            paired(end, _agreement(first, ref, "xent")),
        )
    ]
    if "random" in set(dyn.supervisor):
        tests.append(
            (
                "Random (unsimulatable) errors are imitated less than simulatable ones "
                "by the end of training.",
                f"final agreement on weak-wrong rows, {ref} - random",
                paired(end, _agreement(last, "random", "xent")),
            )
        )
    if {"xent", "confidence"} <= set(dyn.loss):
        sups = sorted(set(dyn.supervisor))
        tests.append(
            (
                "The confidence loss lowers the student's agreement with weak errors.",
                "final agreement on weak-wrong rows, xent - confidence, mean over "
                f"{len(sups)} structures",
                paired(
                    _agreement(last, None, "xent"), _agreement(last, None, "confidence")
                ),
            )
        )
    adjusted = metrics.holm([t[2].p_value for t in tests])
    return [
        Finding(
            claim=claim,
            measured=f"{measured}: {diff_text(diff, a)}",
            held=shown(diff, a),
        )
        for (claim, measured, diff), a in zip(tests, adjusted, strict=True)
    ]


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
