"""Fig. 26 analog: how the students' agreement with weak errors develops during
training (Burns et al. 2023, Appendix E.2).

One study with the configured supervisors and per-epoch scoring; the largest
student's agreement on the test rows where the weak label is wrong, epoch by epoch.
"""

from __future__ import annotations

import pandas as pd

from probe_lab import plots
from probe_lab.experiments.base import Analysis, Context, Finding, fmt, judged, mean

__all__ = ["CLAIM", "check", "run"]

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
    fig = plots.plot_dynamics(dyn, title=ctx.title)
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
