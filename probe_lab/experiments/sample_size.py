"""PGR against data size: Fig. 24's comparison as the labelled rows grow.

One study per size (``max_rows`` of the task, split as usual): the simulatable weak
probe M_k and random flips at its exact accuracy supervise the full-width student.
With few weak-labelled rows a wide linear student does not generalize past random
flips (the paper's finding, random errors are easier to generalize past, needs
enough rows); the run finds the size from which it holds here and says so.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Mapping
from typing import Any, NamedTuple

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
    paired,
    seed_pgr,
    seed_values,
    shown,
    strongest,
    summary_frame,
)
from probe_lab.experiments.config import register_kind
from probe_lab.study import StudyResult

__all__ = ["CLAIM", "KIND", "Settings", "check", "check_settings", "plot", "run"]

CLAIM = (
    "Random weak errors are easier to generalize past than the simulatable errors "
    "of a weak probe at the same accuracy (Fig. 24), once there are enough "
    "weak-labelled rows for the student to generalize past the random flips."
)
"""The finding, with the condition this experiment measures."""


def run(ctx: Context) -> Analysis:
    """One study per size (and per size again with the L2-regularized student);
    PGR and agreement of the full-width student by size and by ``n / d``."""
    studies: dict[str, StudyResult] = {}
    frames, tables = [], []
    l2s = [0.0] + ([ctx.config.settings.l2] if ctx.config.settings.l2 > 0 else [])
    for size, l2 in itertools.product(ctx.config.settings.sizes, l2s):
        config = dataclasses.replace(ctx.config.study_config(ctx.cache), max_rows=size)
        if l2 > 0:
            train = dataclasses.replace(config.train, l2=l2)
            config = dataclasses.replace(config, train=train)
        result = ctx.run_study(config)
        rows = result.fingerprints["rows"]
        label = f"{rows} rows" + (f", l2 {l2:g}" if l2 > 0 else "")
        if label in studies:  # sizes beyond the cache: the whole cache, once
            continue
        studies[label] = result
        labelled = _labelled_rows(config, rows)
        ctx.log(f"{label} ({labelled} weak-labelled): {len(result.table)} students")
        d = int(result.table.student.max())
        extra = dict(labelled=labelled, rows=rows, l2=l2, n_over_d=labelled / d)
        frames.append(summary_frame(result, **extra))
        tables.append(strongest(result.table).assign(**extra))
    summary = pd.concat(frames, ignore_index=True)
    summary = summary[summary.student == summary.student.max()]
    summary.to_csv(ctx.out / "sample_size.csv", index=False)
    ref = next(iter(studies.values())).config.reference_name
    fig = plot(summary[summary.loss == "xent"], title=ctx.title)
    table = pd.concat(tables, ignore_index=True)
    return Analysis(studies, check(table, ref), [ctx.save(fig)])


def _labelled_rows(config, rows: int) -> int:
    """Rows of the student split (training and validation) for ``rows`` rows."""
    n_test = round(config.test_frac * rows)
    return rows - n_test - round(config.weak_frac * (rows - n_test))


class _Curve(NamedTuple):
    """Random flips against the simulatable probe at each size of one curve."""

    sizes: list[int]
    """Weak-labelled rows per size."""
    ratio: dict[int, float]
    """``n / d`` per size (``d`` the student's width)."""
    beats: dict[int, bool | None]
    """Random's gain above the simulatable probe's (paired, Holm over sizes);
    None where a PGR is undefined or there is one seed."""
    text: str
    """Each size's paired difference, for the finding."""
    holds_from: int | None
    """The smallest size from which ``beats`` holds at every larger size."""


def _curve(table: pd.DataFrame, ref: str) -> _Curve:
    """Per size: the paired per-seed gain difference random - ``ref`` (xent),
    Holm-corrected over the sizes, and the crossover."""
    xent = table[table.loss == "xent"].assign(gain=table.student_acc - table.weak_acc)
    sizes = sorted(
        set(xent[xent.supervisor == "random"].labelled)
        & set(xent[xent.supervisor == ref].labelled)
    )
    diffs, defined, ratio = {}, {}, {}
    for n in sizes:
        rows = xent[xent.labelled == n]
        ratio[n] = float(rows.n_over_d.iloc[0]) if "n_over_d" in rows else np.nan
        diffs[n] = paired(
            seed_values(rows, "gain", supervisor="random"),
            seed_values(rows, "gain", supervisor=ref),
        )
        pgrs = [seed_pgr(rows, supervisor=s) for s in ("random", ref)]
        defined[n] = not any(p.reason for p in pgrs)
    adjusted = metrics.holm([diffs[n].p_value for n in sizes])
    beats = {
        n: shown(diffs[n], a) if defined[n] else None
        for n, a in zip(sizes, adjusted, strict=True)
    }
    judgeable = [n for n in sizes if beats[n] is not None]
    holds_from = next(
        (n for i, n in enumerate(judgeable) if all(beats[t] for t in judgeable[i:])),
        None,
    )
    text = "; ".join(
        f"{n} (n/d {fmt(ratio[n], 2)}): {diff_text(diffs[n], a)}"
        for n, a in zip(sizes, adjusted, strict=True)
    )
    return _Curve(sizes, ratio, beats, text, holds_from)


def _crossover(curve: _Curve, ref: str, student: str) -> Finding:
    judgeable = any(v is not None for v in curve.beats.values())
    n = curve.holds_from
    return Finding(
        claim=f"With enough weak-labelled rows, random flips give more PGR than "
        f"the simulatable {ref} at the same accuracy ({student}; paired per-seed "
        "gain difference, Holm over sizes), at every larger size too.",
        measured=(
            f"holds from {n} weak-labelled rows (n/d {fmt(curve.ratio[n], 2)})"
            if n is not None
            else "does not hold at any size measured"
            if judgeable
            else "not judged at any size (PGR undefined: no gap between weak and "
            "ceiling accuracy, or one seed)"
        )
        + f". Gain random - {ref} (xent) by weak-labelled rows: {curve.text}",
        held=(n is not None) if judgeable else None,
    )


def check(table: pd.DataFrame, ref: str) -> list[Finding]:
    """Where random flips start to beat the simulatable probe, as a paired
    per-seed test at each size, by weak-labelled rows and by ``n / d``; the same
    for the L2-regularized student where the table has one (an ``l2`` column).

    Args:
        table: per-seed rows of the full-width student with ``labelled`` (rows the
            students learn from) and, optionally, ``n_over_d`` and ``l2``.
        ref: the simulatable weak probe's name.
    """
    if "l2" not in table:
        table = table.assign(l2=0.0)
    plain = table[table.l2 == 0]
    curve = _curve(plain, ref)
    if not curve.sizes:
        return []
    findings = [_crossover(curve, ref, "unregularized student")]
    last, first = curve.sizes[-1], curve.sizes[0]
    rnd = {n: seed_pgr(plain[plain.labelled == n], supervisor="random", loss="xent")
           for n in (first, last)}  # fmt: skip
    top = rnd[last]
    findings.append(
        Finding(
            claim="At the largest size, random flips give PGR above 0 (Fieller "
            "interval).",
            measured=f"PGR random {fieller_text(top)} at {last} weak-labelled rows",
            held=None if top.reason else bool(top.low > 0),
        )
    )
    if first != last and not (rnd[first].reason or rnd[last].reason):
        findings.append(
            Finding(
                claim="With few rows, random flips are not generalized past: their "
                "PGR at the smallest size is below that at the largest.",
                measured=f"PGR random {fieller_text(rnd[first])} at {first} rows, "
                f"{fieller_text(rnd[last])} at {last} (separate studies, point "
                "estimates compared; the sizes share no split to pair on)",
                held=bool(rnd[first].pgr <= rnd[last].pgr),
            )
        )
    for l2 in sorted(set(table.l2) - {0.0}):
        reg = _curve(table[table.l2 == l2], ref)
        finding = _crossover(reg, ref, f"student with l2 = {l2:g}")
        base = curve.holds_from
        findings.append(
            dataclasses.replace(
                finding,
                claim="(No claim in advance) " + finding.claim,
                measured=finding.measured
                + "; unregularized: "
                + (
                    f"from {base} rows (n/d {fmt(curve.ratio[base], 2)})"
                    if base is not None
                    else "never"
                ),
                held=None,
            )
        )
    return findings


def plot(summary: pd.DataFrame, *, title: str = "") -> Figure:
    """PGR (left) and agreement with the weak labels (right) against the number of
    weak-labelled training rows per student feature, ``n / d`` (the rows where
    there is no ``n_over_d`` column), one line per supervisor (the simulatable M_k
    and random flips at its accuracy), dashed for the L2-regularized student (an
    ``l2`` column above 0), with Fieller intervals over seeds.

    Args:
        summary: ``StudyResult.summary()`` rows with a ``labelled`` column (rows
            the students learn from) for each study size.
    """
    summary = summary.assign(
        x=summary.n_over_d if "n_over_d" in summary else summary.labelled,
        l2=summary.l2 if "l2" in summary else 0.0,
    )
    sups = list(dict.fromkeys(summary.supervisor))
    with plots.style():
        fig = Figure(figsize=(12.0, 5.0), layout="constrained")
        left, right = fig.subplots(1, 2)
        for sup, color in zip(sups, plots.colors(len(sups), "tab10"), strict=True):
            for l2 in sorted(set(summary.l2)):
                rows = summary[(summary.supervisor == sup) & (summary.l2 == l2)]
                _lines(left, right, rows.sort_values("x"), color, sup, l2)
        left.axhline(0, color="0.5", lw=0.8)
        span = summary.x.min() / 1.3, summary.x.max() * 1.3
        ticks = sorted(set(zip(summary.x, summary.labelled, strict=True)))
        for ax in (left, right):
            ax.set_xscale("log")
            ax.set_xlim(*span)  # also where every PGR is NaN (no data to scale)
            ax.set_xticks(
                [x for x, _ in ticks],
                [f"{x:.2g}\n({int(n)})" if "n_over_d" in summary else str(int(n))
                 for x, n in ticks],
            )  # fmt: skip
            ax.minorticks_off()
            ax.set_xlabel(
                "weak-labelled rows per student feature, n / d (rows)"
                if "n_over_d" in summary
                else "weak-labelled training rows (student split)"
            )
        left.set_ylabel("PGR")
        low = summary.pgr_low.min() if summary.pgr_low.notna().any() else 0.0
        cut = " (axis cut at -1.5)" if low < -1.5 else ""
        if cut:
            left.set_ylim(bottom=-1.55)
        left.set_title(
            f"PGR (95% Fieller interval over seeds){cut}"
            if summary.pgr.notna().any()
            else "PGR undefined: the ceiling is not above the weak accuracy"
        )
        right.set_ylabel("student agrees with the weak labels (test)")
        right.set_title("imitation of the weak labels")
        left.legend(loc="best")
        fig.suptitle(title or "PGR against data size")
    return fig


def _lines(left, right, rows: pd.DataFrame, color, sup: str, l2: float) -> None:
    """One supervisor's PGR and agreement curves for one L2 setting."""
    style = dict(
        marker="o",
        color=color,
        linestyle="--" if l2 > 0 else "-",
        label=sup + (f" (l2 {l2:g})" if l2 > 0 else ""),
    )
    err = np.vstack([rows.pgr - rows.pgr_low, rows.pgr_high - rows.pgr])
    left.errorbar(rows.x, rows.pgr, yerr=np.nan_to_num(err), capsize=3, **style)
    right.plot(rows.x, rows.agreement, **style)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Settings:
    """The ``[experiment]`` keys of ``sample_size``."""

    sizes: tuple[int, ...] = ()
    """Rows of the task per study (``max_rows``), smallest first; sizes beyond the
    cache use the whole cache."""

    l2: float = 0.0
    """Above 0: every size is run again with the student's ``train.l2`` set to
    this (the L2-regularized curve); 0: the configured student only."""


def check_settings(values: Mapping[str, Any]) -> None:
    """An increasing, non-empty list of sizes."""
    sizes = list(values["sizes"])
    if not sizes or sizes != sorted(set(sizes)):
        raise ValueError(
            "sample_size needs [experiment] sizes, an increasing list of row "
            "counts (e.g. sizes = [500, 1000, 2000, 4850])"
        )


KIND = register_kind(
    name="sample_size",
    claim=CLAIM,
    run=run,
    settings=Settings,
    ranges={"sizes": (2, math.inf), "l2": (0.0, math.inf)},
    check=check_settings,
)
"""The experiment kind."""
