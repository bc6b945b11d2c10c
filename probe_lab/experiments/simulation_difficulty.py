"""Fig. 24 a-f analog: how hard the weak errors are to simulate (Burns et al. 2023,
Appendix E.1).

One study per reference M_k2 (``[experiment] references``), each with the probe
M_k2 itself (perfectly simulatable for students k1 >= k2), random flips at its exact
accuracy (unsimulatable) and mixtures of the two (``levels``: share of random
errors). A study matches one reference accuracy, hence one study per reference.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from probe_lab import plots
from probe_lab.experiments.base import (
    Analysis,
    Context,
    Finding,
    fmt,
    judged,
    mean,
    stack,
    summary_frame,
)
from probe_lab.experiments.config import ExperimentConfig
from probe_lab.study import Supervisor

__all__ = ["CLAIM", "check", "run", "supervisor_sets", "supervisors"]

CLAIM = (
    "Perfectly simulatable weak errors (M_k2 labels for a student M_k1, k1 >= k2) "
    "are imitated: high agreement, little PGR. Random errors at the same accuracy "
    "cannot be simulated and are largely ignored: low agreement, high PGR. Mixtures "
    "lie in between."
)
"""The paper's finding."""


def supervisors(k: int, levels: Sequence[float]) -> list[Supervisor]:
    """The probe M_k, random flips at its accuracy, and one mixture per level."""
    sups = [Supervisor(kind="probe", k=k), Supervisor(kind="random")]
    sups += [
        Supervisor(kind="mixture", k=k, level=lv, name=f"mixture {lv:g}")
        for lv in levels
    ]
    return sups


def supervisor_sets(config: ExperimentConfig) -> list[list[Supervisor]]:
    """The supervisors of each study: one per reference."""
    return [supervisors(k, config.levels) for k in config.references]


def run(ctx: Context) -> Analysis:
    """One study per reference; agreement and PGR by student size and structure."""
    studies = {}
    for k in ctx.config.references:
        ctx.log(f"study with weak supervisor M_{k}")
        studies[f"M_{k}"] = ctx.study(supervisors(k, ctx.config.levels))
    table = stack(studies, "table")
    table["reference"] = table.study.str.slice(2).astype(int)
    summary = pd.concat(
        [summary_frame(r, reference=int(label[2:])) for label, r in studies.items()],
        ignore_index=True,
    )
    fig = plots.plot_simulation(table, title=ctx.title)
    findings = check(summary, mixtures=bool(ctx.config.levels))
    return Analysis(studies, findings, [ctx.save(fig)])


def check(summary: pd.DataFrame, *, mixtures: bool) -> list[Finding]:
    """The claims, on cross-entropy students that can simulate their reference
    (k1 >= k2); ``mixtures``: also check the trend over mixture levels."""
    regime = summary[(summary.student >= summary.reference) & (summary.loss == "xent")]
    sim, rnd = regime[regime.kind == "probe"], regime[regime.kind == "random"]
    agree = mean(sim.agreement), mean(rnd.agreement)
    pgr = mean(sim.pgr), mean(rnd.pgr)  # PGR is NaN where there is no gap
    findings = [
        Finding(
            claim="A student that can simulate its supervisor (M_k1 on M_k2 labels, "
            "k1 >= k2) agrees with the weak labels more than one given random "
            "errors at the same accuracy.",
            measured=f"agreement {fmt(agree[0])} (simulatable) vs "
            f"{fmt(agree[1])} (random), mean over k1 >= k2",
            held=judged(agree[0] > agree[1], *agree),
        ),
        Finding(
            claim="Simulatable errors give less weak-to-strong generalization (lower "
            "PGR) than unsimulatable random errors at matched accuracy.",
            measured=f"PGR {fmt(pgr[0], 2)} (simulatable) vs "
            f"{fmt(pgr[1], 2)} (random), mean over k1 >= k2 where defined",
            held=judged(pgr[0] < pgr[1], *pgr),
        ),
    ]
    if mixtures:
        findings.append(_mixture_trend(regime))
    return findings


def _mixture_trend(regime: pd.DataFrame) -> Finding:
    level = {"probe": 0.0, "random": 1.0}
    share = regime.kind.map(level).fillna(regime.supervisor.map(_level))
    by_level = regime.assign(level=share).groupby("level").pgr.mean().dropna()
    rho = (
        pd.Series(by_level.index).corr(
            pd.Series(by_level.to_numpy()), method="spearman"
        )
        if len(by_level) > 2
        else np.nan
    )
    return Finding(
        claim="Mixing random errors into simulatable ones raises PGR with "
        "the share of random errors (Spearman >= 0.8 counts as held).",
        measured="PGR by share of random errors: "
        + ", ".join(f"{lv:g}: {fmt(p, 2)}" for lv, p in by_level.items())
        + f" (Spearman {fmt(rho, 2)}; levels without a gap left out)",
        held=judged(rho >= 0.8, rho),
    )


def _level(name: str) -> float:
    """The share of random errors of a ``mixture <level>`` supervisor."""
    return float(name.split()[-1]) if name.startswith("mixture ") else np.nan
