"""PGR against data size: Fig. 24's comparison as the labelled rows grow.

One study per size (``max_rows`` of the task, split as usual): the simulatable weak
probe M_k and random flips at its exact accuracy supervise the full-width student.
With few weak-labelled rows a wide linear student does not generalize past random
flips (the paper's finding, random errors are easier to generalize past, needs
enough rows); the run finds the size from which it holds here and says so.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from probe_lab import plots
from probe_lab.experiments.base import (
    Analysis,
    Context,
    Finding,
    fmt,
    judged,
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
    """One study per size; PGR and agreement of the full-width student by size."""
    studies: dict[str, StudyResult] = {}
    frames = []
    for size in ctx.config.settings.sizes:
        config = dataclasses.replace(ctx.config.study_config(ctx.cache), max_rows=size)
        result = ctx.run_study(config)
        rows = result.fingerprints["rows"]
        label = f"{rows} rows"
        if label in studies:  # sizes beyond the cache: the whole cache, once
            continue
        studies[label] = result
        labelled = _labelled_rows(config, rows)
        ctx.log(f"{rows} rows ({labelled} weak-labelled): {len(result.table)} students")
        frames.append(summary_frame(result, labelled=labelled, rows=rows))
    summary = pd.concat(frames, ignore_index=True)
    summary = summary[summary.student == summary.student.max()]
    ref = next(iter(studies.values())).config.reference_name
    fig = plot(summary[summary.loss == "xent"], title=ctx.title)
    return Analysis(studies, check(summary, ref), [ctx.save(fig)])


def _labelled_rows(config, rows: int) -> int:
    """Rows of the student split (training and validation) for ``rows`` rows."""
    n_test = round(config.test_frac * rows)
    return rows - n_test - round(config.weak_frac * (rows - n_test))


def check(summary: pd.DataFrame, ref: str) -> list[Finding]:
    """Where random flips start to beat the simulatable probe, by interval."""
    xent = summary[summary.loss == "xent"]
    rnd = xent[xent.supervisor == "random"].set_index("labelled").sort_index()
    sim = xent[xent.supervisor == ref].set_index("labelled").sort_index()
    sizes = [s for s in rnd.index if s in sim.index]
    if not sizes:
        return []
    # None where PGR (or its interval) is undefined: no gap, or one seed
    beats = {
        s: judged(rnd.pgr_low[s] > sim.pgr_high[s], rnd.pgr_low[s], sim.pgr_high[s])
        for s in sizes
    }
    positive = {s: judged(rnd.pgr_low[s] > 0, rnd.pgr_low[s]) for s in sizes}
    judgeable = [s for s in sizes if beats[s] is not None]
    holds_from = next(
        (s for i, s in enumerate(judgeable) if all(beats[t] for t in judgeable[i:])),
        None,
    )
    each = "; ".join(
        f"{s}: random {fmt(rnd.pgr[s], 2)} vs {ref} {fmt(sim.pgr[s], 2)}" for s in sizes
    )
    findings = [
        Finding(
            claim="With enough weak-labelled rows, random flips give more PGR than "
            f"the simulatable {ref} at the same accuracy (intervals apart), at every "
            "larger size too.",
            measured=(
                f"holds from {holds_from} weak-labelled rows"
                if holds_from is not None
                else "does not hold at any size measured"
                if judgeable
                else "PGR intervals are undefined at every size (no gap between "
                "weak and ceiling accuracy, or one seed)"
            )
            + f". PGR (xent) by weak-labelled rows: {each}",
            held=(holds_from is not None) if judgeable else None,
        ),
        Finding(
            claim="At the largest size, random flips give PGR above 0 (interval).",
            measured=f"PGR random {fmt(rnd.pgr[sizes[-1]], 2)} "
            f"[{fmt(rnd.pgr_low[sizes[-1]], 2)}, {fmt(rnd.pgr_high[sizes[-1]], 2)}] "
            f"at {sizes[-1]} rows; above 0 at sizes "
            f"{[s for s in sizes if positive[s]] or 'none'}",
            held=positive[sizes[-1]],
        ),
    ]
    first, last = rnd.pgr[sizes[0]], rnd.pgr[sizes[-1]]
    if np.isfinite(first):
        findings.append(
            Finding(
                claim="With few rows, random flips are not generalized past: their "
                "PGR at the smallest size is below that at the largest.",
                measured=f"PGR random {fmt(rnd.pgr[sizes[0]], 2)} at {sizes[0]} rows, "
                f"{fmt(rnd.pgr[sizes[-1]], 2)} at {sizes[-1]}",
                held=judged(first <= last, first, last),
            )
        )
    return findings


def plot(summary: pd.DataFrame, *, title: str = "") -> Figure:
    """PGR (left) and agreement with the weak labels (right) against the number of
    weak-labelled training rows, one line per supervisor (the simulatable M_k and
    random flips at its accuracy), with Fieller intervals over seeds.

    Args:
        summary: ``StudyResult.summary()`` rows with a ``labelled`` column (rows
            the students learn from) for each study size.
    """
    sups = list(dict.fromkeys(summary.supervisor))
    with plots.style():
        fig = Figure(figsize=(12.0, 5.0), layout="constrained")
        left, right = fig.subplots(1, 2)
        for sup, color in zip(sups, plots.colors(len(sups), "tab10"), strict=True):
            rows = summary[summary.supervisor == sup].sort_values("labelled")
            err = np.vstack([rows.pgr - rows.pgr_low, rows.pgr_high - rows.pgr])
            left.errorbar(
                rows.labelled,
                rows.pgr,
                yerr=np.nan_to_num(err),
                marker="o",
                color=color,
                capsize=3,
                label=sup,
            )
            right.plot(
                rows.labelled, rows.agreement, marker="o", color=color, label=sup
            )
        left.axhline(0, color="0.5", lw=0.8)
        span = summary.labelled.min() / 1.3, summary.labelled.max() * 1.3
        sizes = sorted({int(v) for v in summary.labelled})
        for ax in (left, right):
            ax.set_xscale("log")
            ax.set_xlim(*span)  # also where every PGR is NaN (no data to scale)
            ax.set_xticks(sizes, [str(v) for v in sizes])
            ax.minorticks_off()
            ax.set_xlabel("weak-labelled training rows (student split)")
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


@dataclasses.dataclass(frozen=True, kw_only=True)
class Settings:
    """The ``[experiment]`` keys of ``sample_size``."""

    sizes: tuple[int, ...] = ()
    """Rows of the task per study (``max_rows``), smallest first; sizes beyond the
    cache use the whole cache."""


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
    ranges={"sizes": (2, math.inf)},
    check=check_settings,
)
"""The experiment kind."""
