"""Fig. 24 a-f analog: how hard the weak errors are to simulate (Burns et al. 2023,
Appendix E.1).

One study per reference M_k2 (``[experiment] references``), each with the probe
M_k2 itself (perfectly simulatable for students k1 >= k2), random flips at its exact
accuracy (unsimulatable) and mixtures of the two (``levels``: share of random
errors). A study matches one reference accuracy, hence one study per reference.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from probe_lab import metrics, plots
from probe_lab.experiments.base import (
    Analysis,
    Context,
    Finding,
    diff_text,
    fieller_text,
    fmt,
    judged,
    paired,
    seed_pgr,
    shown,
    stack,
)
from probe_lab.experiments.config import ExperimentConfig, register_kind
from probe_lab.metrics import Paired
from probe_lab.study import Supervisor

__all__ = [
    "CLAIM",
    "KIND",
    "Settings",
    "check",
    "check_settings",
    "plot",
    "run",
    "supervisor_sets",
    "supervisors",
]

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
    settings = config.settings
    return [supervisors(k, settings.levels) for k in settings.references]


def run(ctx: Context) -> Analysis:
    """One study per reference; agreement and PGR by student size and structure."""
    studies, settings = {}, ctx.config.settings
    for k in settings.references:
        ctx.log(f"study with weak supervisor M_{k}")
        studies[f"M_{k}"] = ctx.study(supervisors(k, settings.levels))
    table = stack(studies, "table")
    table["reference"] = table.study.str.slice(2).astype(int)
    fig = plot(table, title=ctx.title)
    findings = check(table, mixtures=bool(settings.levels))
    return Analysis(studies, findings, [ctx.save(fig)])


def _sim_vs_random(regime: pd.DataFrame, column: str) -> Paired:
    """Simulatable minus random ``column``, paired within each (reference,
    student, seed), averaged per seed, with its t-interval over seeds."""
    if "seed" not in regime:
        regime = regime.assign(seed=0)
    keys = ["reference", "student", "seed"]
    sim = regime[regime.kind == "probe"].groupby(keys)[column].mean()
    rnd = regime[regime.kind == "random"].groupby(keys)[column].mean()
    both = pd.concat({"sim": sim, "rnd": rnd}, axis=1, join="inner")
    per_seed = both.groupby(level="seed").mean()
    return paired(per_seed.sim, per_seed.rnd)


def check(table: pd.DataFrame, *, mixtures: bool) -> list[Finding]:
    """The claims, on the per-seed rows of cross-entropy students that can
    simulate their reference (k1 >= k2); ``mixtures``: also check the trend over
    mixture levels. Both comparisons are paired per seed (simulatable vs random
    in the same study, seed and student), Holm over the two."""
    regime = table[(table.student >= table.reference) & (table.loss == "xent")]
    regime = regime.assign(gain=regime.student_acc - regime.weak_acc)
    agree = _sim_vs_random(regime, "agreement")
    gain = _sim_vs_random(regime, "gain")
    pgrs = [seed_pgr(regime, kind=k) for k in ("probe", "random")]
    adjusted = metrics.holm([agree.p_value, gain.p_value])
    lower = gain._replace(mean=-gain.mean, low=-gain.high, high=-gain.low)
    findings = [
        Finding(
            claim="A student that can simulate its supervisor (M_k1 on M_k2 labels, "
            "k1 >= k2) agrees with the weak labels more than one given random "
            "errors at the same accuracy.",
            measured="agreement simulatable - random, paired per seed (mean over "
            f"k1 >= k2): {diff_text(agree, adjusted[0])}",
            held=shown(agree, adjusted[0]),
        ),
        Finding(
            claim="Simulatable errors give less weak-to-strong generalization (lower "
            "PGR) than unsimulatable random errors at matched accuracy.",
            measured=f"PGR {fieller_text(pgrs[0])} (simulatable) vs "
            f"{fieller_text(pgrs[1])} (random), pooled over k1 >= k2; gain random - "
            f"simulatable, paired per seed: {diff_text(lower, adjusted[1])}",
            held=None if any(r.reason for r in pgrs) else shown(lower, adjusted[1]),
        ),
    ]
    if mixtures:
        findings.append(_mixture_trend(regime))
    return findings


def _mixture_trend(regime: pd.DataFrame) -> Finding:
    level = {"probe": 0.0, "random": 1.0}
    share = regime.kind.map(level).fillna(regime.supervisor.map(_level))
    rows = regime.assign(level=share, gap=regime.ceiling_acc - regime.weak_acc)
    sums = rows.groupby("level")[["gain", "gap"]].sum()
    by_level = (sums.gain / sums.gap).where(sums.gap > 0).dropna()
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
        measured="PGR (summed gains / summed gaps) by share of random errors: "
        + ", ".join(f"{lv:g}: {fmt(p, 2)}" for lv, p in by_level.items())
        + f" (Spearman {fmt(rho, 2)}; levels without a gap left out; a trend over "
        "levels, not a paired test)",
        held=judged(rho >= 0.8, rho),
    )


def _level(name: str) -> float:
    """The share of random errors of a ``mixture <level>`` supervisor."""
    return float(name.split()[-1]) if name.startswith("mixture ") else np.nan


def plot(table: pd.DataFrame, *, title: str = "") -> Figure:
    """Fig. 24 analog: (a) simulatable M_k2 labels, (b) random errors at M_k2's
    accuracy, (c) mixtures at one M_k2; test accuracy (top) and agreement with the
    weak labels (bottom) against student size. Cross-entropy students.

    Args:
        table: the simulation studies' per-seed tables, concatenated, with a
            ``reference`` column (k2).
        title: figure title.

    Returns:
        The figure.
    """
    table = table[table.loss == "xent"]
    refs = sorted(set(table.reference))
    mid = refs[len(refs) // 2]
    ref_colors = dict(zip(refs, plots.colors(len(refs)), strict=True))
    ks = sorted(set(table.student))
    mix = table[table.reference == mid]
    order = (
        [s for s in mix.supervisor.unique() if s.startswith("M_")]
        + sorted(s for s in mix.supervisor.unique() if s.startswith("mixture"))
        + ["random"]
    )
    share = {s: 0.0 for s in order if s.startswith("M_")} | {"random": 1.0}
    share |= {s: float(s.split()[-1]) for s in order if s.startswith("mixture")}
    mix_colors = dict(zip(order, plots.colors(len(order), "plasma"), strict=True))
    panels = (
        ("(a) perfectly simulatable: weak = M_k2", "probe", False),
        ("(b) unsimulatable: random errors\nat M_k2's accuracy", "random", False),
        (f"(c) mixture at M_{mid}'s accuracy", "mixture", True),
    )
    with plots.style():
        fig = Figure(figsize=(14, 8.2), layout="constrained")
        axes = fig.subplots(2, 3, sharex=True, sharey="row")
        for col, (name, rows_kind, mixed) in enumerate(panels):
            top, bottom = axes[0, col], axes[1, col]
            if mixed:
                groups = [(s, mix[mix.supervisor == s], mix_colors[s]) for s in order]
                label = lambda s: f"{share[s]:.0%} random"  # noqa: E731
            else:
                groups = [
                    (
                        r,
                        table[(table.reference == r) & (table.kind == rows_kind)],
                        ref_colors[r],
                    )
                    for r in refs
                ]
                label = lambda r: f"k2 = {r}"  # noqa: E731
            plots.line(top, plots.ceiling(table), "student", color="black", lw=2.2)
            top.lines[-1].set_label("strong ceiling")
            for key, rows, color in groups:
                weak = rows.drop_duplicates("seed").weak_acc.mean()
                for ax, column in ((top, "student_acc"), (bottom, "agreement")):
                    stats = plots.band(rows, "student", column)
                    plots.line(ax, stats, "student", color=color)
                top.lines[-1].set_label(f"{label(key)} (weak acc {weak:.2f})")
                top.axhline(weak, color=color, ls=":", lw=1.3)
            top.set_title(name)
            top.set_ylabel("test accuracy")
            top.legend(loc="lower right")
            bottom.set_ylabel("agreement with weak labels (test)")
            bottom.set_ylim(0.45, 1.02)
            plots.k_axis(bottom, ks)
            top.tick_params(labelbottom=True)
        fig.suptitle(
            (title or "Simulation difficulty")
            + "\nweak M_k2 = probe on the first k2 principal components; dotted: "
            "weak accuracy"
        )
    return fig


@dataclasses.dataclass(frozen=True, kw_only=True)
class Settings:
    """The ``[experiment]`` keys of ``simulation_difficulty``."""

    references: tuple[int, ...] = ()
    """The weak M_k2 supervisors, one study each."""

    levels: tuple[float, ...] = ()
    """Mixture levels (share of random errors), each in (0, 1)."""


def check_settings(values: Mapping[str, Any]) -> None:
    """At least one reference; mixture levels strictly between 0 and 1."""
    if not values["references"]:
        raise ValueError(
            "needs [experiment] references, a list of M_k2 sizes >= 1 (e.g. "
            "references = [32, 64])"
        )
    if any(not 0 < lv < 1 for lv in values["levels"]):
        raise ValueError(
            "[experiment] levels must lie in (0, 1) (0 and 1 are the simulatable "
            "and random supervisors, always included)"
        )


KIND = register_kind(
    name="simulation_difficulty",
    claim=CLAIM,
    run=run,
    settings=Settings,
    ranges={"references": (1, math.inf)},
    check=check_settings,
    supervisor_sets=supervisor_sets,
)
"""The experiment kind."""
