"""Fig. 25 analog: the structure of the weak errors at matched weak accuracy
(Burns et al. 2023, Appendix E.2).

The configured supervisors (the reference probe, random flips, prompt length, the
strong ceiling's confidence, mixtures) all hit the reference probe's accuracy; the
largest student learns from each, with cross-entropy and the confidence loss.
"""

from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure

from probe_lab import plots
from probe_lab.experiments.base import (
    Analysis,
    Context,
    Finding,
    fmt,
    judged,
    pgr_row,
    pgr_text,
    strongest,
)
from probe_lab.experiments.config import register_kind

__all__ = ["CLAIM", "KIND", "check", "plot", "run"]

CLAIM = (
    "At matched weak accuracy, PGR depends strongly on how the weak errors are "
    "structured; unsimulatable random errors are easier to generalize past than the "
    "weak model's own (simulatable) errors, and the confidence loss helps most where "
    "the errors are hard to simulate."
)
"""The paper's finding."""


def run(ctx: Context) -> Analysis:
    """One study; PGR and agreement of the largest student per structure."""
    result = ctx.study()
    summary = strongest(result.summary())
    findings = check(summary, result.config.reference_name)
    fig = plot(summary, title=ctx.title)
    return Analysis({"study": result}, findings, [ctx.save(fig)])


def check(summary: pd.DataFrame, ref: str) -> list[Finding]:
    """The claims, on the largest student's summary rows; ``ref`` names the
    reference probe whose errors are the simulatable ones. A claim whose PGRs are
    undefined (no gap between weak and ceiling accuracy) is not judged."""
    findings = []
    rnd, sim = pgr_row(summary, "random", "xent"), pgr_row(summary, ref, "xent")
    if rnd is not None and sim is not None:
        findings.append(
            Finding(
                claim="At matched weak accuracy, unsimulatable random errors give "
                f"more PGR than the simulatable errors of the weak probe {ref}.",
                measured=f"PGR (xent) random {pgr_text(rnd)} vs {ref} {pgr_text(sim)}",
                held=judged(rnd.pgr > sim.pgr, rnd.pgr, sim.pgr),
            )
        )
    xent = summary[summary.loss == "xent"]
    if len(xent) > 1:
        findings.append(_spread(xent))
    rnd_c = pgr_row(summary, "random", "confidence")
    sim_c = pgr_row(summary, ref, "confidence")
    if all(r is not None for r in (rnd, sim, rnd_c, sim_c)):
        gain_rnd, gain_sim = rnd_c.pgr - rnd.pgr, sim_c.pgr - sim.pgr
        findings.append(
            Finding(
                claim="The confidence loss helps against unsimulatable (random) "
                "errors, and more than against simulatable ones.",
                measured="PGR change (confidence - xent): random "
                f"{fmt(gain_rnd, 2, signed=True)}, "
                f"{ref} {fmt(gain_sim, 2, signed=True)}",
                held=judged(gain_rnd > max(gain_sim, 0.0), gain_rnd, gain_sim),
            )
        )
    return findings


def _spread(xent: pd.DataFrame) -> Finding:
    """How far apart the structures' PGRs are (cross-entropy rows)."""
    claim = (
        "The structure of the weak errors changes PGR a lot even at the same weak "
        "accuracy."
    )
    defined = xent[xent.pgr.notna()]
    if len(defined) < 2:
        return Finding(
            claim=claim,
            measured=f"PGR (xent) is undefined for {len(xent) - len(defined)} of "
            f"{len(xent)} structures (ceiling accuracy not above the weak one)",
            held=None,
        )
    best = defined.loc[defined.pgr.idxmax()]
    worst = defined.loc[defined.pgr.idxmin()]
    apart = judged(worst.pgr_high < best.pgr_low, worst.pgr_high, best.pgr_low)
    overlap = {None: "undefined", True: "do not overlap", False: "overlap"}[apart]
    return Finding(
        claim=claim,
        measured=f"PGR (xent) from {fmt(worst.pgr, 2)} ({worst.supervisor}) "
        f"to {fmt(best.pgr, 2)} ({best.supervisor}); intervals {overlap}",
        held=apart,
    )


def plot(summary: pd.DataFrame, *, title: str = "") -> Figure:
    """Fig. 25 analog: PGR per weak-error structure at matched weak accuracy, for
    each loss, with Fieller intervals; and how much the student agrees with the
    weak labels where they are wrong.

    Args:
        summary: ``StudyResult.summary()`` rows of one student size.
        title: figure title.

    Returns:
        The figure.
    """
    order = list(dict.fromkeys(summary.supervisor))
    weak = summary.groupby("supervisor", sort=False).weak_acc.mean()
    student = int(summary.student.iloc[0])
    with plots.style():
        fig = plots.pgr_and_agreement(
            summary,
            order,
            "agreement_weak_wrong",
            titles=(
                "PGR per error structure (95% Fieller interval over seeds)",
                "imitation of the weak errors",
            ),
            agreement_label=(
                "student agrees with the weak label\nwhere it is wrong (test)"
            ),
            top=1.0,
        )
        fig.suptitle(
            (title or "Weak-error structures")
            + f"\nweak accuracy {weak.min():.2f}-{weak.max():.2f} (matched); "
            f"student k = {student}"
        )
    return fig


KIND = register_kind(name="error_structures", claim=CLAIM, run=run)
"""The experiment kind (no settings of its own)."""
