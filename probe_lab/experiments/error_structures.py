"""Fig. 25 analog: the structure of the weak errors at matched weak accuracy
(Burns et al. 2023, Appendix E.2).

The configured supervisors (the reference probe, random flips, prompt length, the
strong ceiling's confidence, mixtures) all hit the reference probe's accuracy; the
largest student learns from each, with cross-entropy and the confidence loss.
"""

from __future__ import annotations

import itertools
from typing import NamedTuple

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from probe_lab import metrics, plots
from probe_lab.experiments.base import (
    STOPPING,
    STOPPING_NAMES,
    Analysis,
    Context,
    Finding,
    diff_text,
    fieller_text,
    paired,
    seed_pgr,
    seed_values,
    shown,
    strongest,
)
from probe_lab.experiments.config import register_kind
from probe_lab.metrics import Paired

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
    findings = check(strongest(result.table), result.config.reference_name)
    fig = plot(summary, title=ctx.title)
    return Analysis({"study": result}, findings, [ctx.save(fig)])


class _Test(NamedTuple):
    """One directional claim's paired test under one stopping rule."""

    claim: str
    measured: str
    diff: Paired | None
    """The paired difference claimed positive (None: not measurable)."""
    defined: bool
    """Every PGR the claim is about is defined (a gap to recover)."""


def _tests(table: pd.DataFrame, ref: str, column: str) -> list[_Test]:
    """The claims as paired per-seed tests, the student's accuracy read from
    ``column``. Compared per seed: the gain ``student - weak`` (the PGR numerator;
    the ceiling is shared within a seed, so this is the PGR difference times the
    gap), and for the confidence loss the student-accuracy change against xent on
    the same weak labels."""
    table = table.assign(gain=table[column] - table.weak_acc)
    sups = set(table.supervisor)
    tests = []
    if {"random", ref} <= sups:
        rnd, sim = (
            seed_pgr(table, column, supervisor=s, loss="xent") for s in ("random", ref)
        )
        diff = paired(
            seed_values(table, "gain", supervisor="random", loss="xent"),
            seed_values(table, "gain", supervisor=ref, loss="xent"),
        )
        tests.append(
            _Test(
                claim="At matched weak accuracy, unsimulatable random errors give "
                f"more PGR than the simulatable errors of the weak probe {ref}.",
                measured=f"PGR (xent) random {fieller_text(rnd)} vs {ref} "
                f"{fieller_text(sim)} (Fieller); paired gain difference random - "
                f"{ref}",
                diff=diff,
                defined=not (rnd.reason or sim.reason),
            )
        )
    if {"random", ref} <= sups and "confidence" in set(table.loss):
        change = {
            s: seed_values(table, column, supervisor=s, loss="confidence")
            - seed_values(table, column, supervisor=s, loss="xent")
            for s in ("random", ref)
        }
        pgrs = [
            seed_pgr(table, column, supervisor=s, loss=loss)
            for s in ("random", ref)
            for loss in ("xent", "confidence")
        ]
        defined = not any(p.reason for p in pgrs)
        zero = pd.Series(0.0, index=change["random"].index)
        tests.append(
            _Test(
                claim="The confidence loss helps against unsimulatable (random) "
                "errors: student accuracy confidence - xent on random flips.",
                measured="paired accuracy difference confidence - xent (random)",
                diff=paired(change["random"], zero),
                defined=defined,
            )
        )
        tests.append(
            _Test(
                claim="The confidence loss helps more against random errors than "
                f"against the simulatable errors of {ref}.",
                measured="paired difference of the confidence - xent changes, "
                f"random minus {ref}",
                diff=paired(change["random"], change[ref]),
                defined=defined,
            )
        )
    return tests


def _verdicts(tests: list[_Test]) -> tuple[np.ndarray, list[bool | None]]:
    """Holm over the family of the experiment's directional tests; each held,
    not shown, or None (undefined PGR, or no interval)."""
    adjusted = metrics.holm([t.diff.p_value for t in tests])
    held = [
        shown(t.diff, a) if t.defined else None
        for t, a in zip(tests, adjusted, strict=True)
    ]
    return adjusted, held


def check(table: pd.DataFrame, ref: str) -> list[Finding]:
    """The claims, on the largest student's per-seed table rows; ``ref`` names
    the reference probe whose errors are the simulatable ones. Every "A vs B" is a
    paired per-seed difference, Holm-corrected over the experiment's directional
    claims; each is re-judged under the other early-stopping rules where the
    table has their columns. A claim whose PGRs are undefined (no gap between weak
    and ceiling accuracy) is not judged."""
    tests = _tests(table, ref, "student_acc")
    adjusted, held = _verdicts(tests)
    others = {}
    for rule, column in STOPPING.items():
        if rule == "weak_agreement":
            continue
        if column in table and table[column].notna().any():
            others[rule] = _verdicts(_tests(table, ref, column))[1]
        else:
            others[rule] = None
    findings = []
    for i, test in enumerate(tests):
        survive = "; ".join(
            f"{STOPPING_NAMES[rule]}: "
            + ("unavailable (column missing)" if v is None else _word(v[i]))
            for rule, v in others.items()
        )
        findings.append(
            Finding(
                claim=test.claim,
                measured=f"{test.measured} {diff_text(test.diff, adjusted[i])}; "
                f"held under {survive}",
                held=held[i],
            )
        )
    xent = table[table.loss == "xent"]
    if xent.supervisor.nunique() > 1:
        findings.append(_spread(xent))
    return findings


def _word(held: bool | None) -> str:
    return {None: "not judged", True: "yes", False: "no"}[held]


def _spread(xent: pd.DataFrame) -> Finding:
    """Whether the structures' PGRs differ: paired per-seed gain differences of
    every pair of structures, Holm-corrected over the pairs."""
    claim = (
        "The structure of the weak errors changes PGR a lot even at the same weak "
        "accuracy."
    )
    sups = list(dict.fromkeys(xent.supervisor))
    pgrs = {s: seed_pgr(xent, supervisor=s) for s in sups}
    defined = [s for s in sups if not pgrs[s].reason]
    if len(defined) < 2:
        return Finding(
            claim=claim,
            measured=f"PGR (xent) is undefined for {len(sups) - len(defined)} of "
            f"{len(sups)} structures (the gap's interval includes 0)",
            held=None,
        )
    gain = xent.assign(gain=xent.student_acc - xent.weak_acc)
    pairs = list(itertools.combinations(defined, 2))
    diffs = [
        paired(
            seed_values(gain, "gain", supervisor=a),
            seed_values(gain, "gain", supervisor=b),
        )
        for a, b in pairs
    ]
    p = np.array([d.p_value for d in diffs], np.float64)
    if not np.isfinite(p).all():
        return Finding(claim=claim, measured="one seed: no paired interval", held=None)
    adjusted = metrics.holm(p)
    differ = adjusted <= 0.05
    top = int(np.argmax(np.abs([d.mean for d in diffs])))
    a, b = pairs[top]
    best = max(defined, key=lambda s: pgrs[s].pgr)
    worst = min(defined, key=lambda s: pgrs[s].pgr)
    return Finding(
        claim=claim,
        measured=f"PGR (xent) from {fieller_text(pgrs[worst])} ({worst}) to "
        f"{fieller_text(pgrs[best])} ({best}); {int(differ.sum())} of {len(pairs)} "
        f"pairs of structures differ (paired gain differences, Holm); largest "
        f"{a} - {b} {diff_text(diffs[top], adjusted[top])}",
        held=bool(differ.any()),
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
