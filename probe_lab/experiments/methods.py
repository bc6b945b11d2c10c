"""The method leaderboard: student methods ranked by PGR across tasks.

One study per task (the ``[study]`` table on that task's cache), every condition
(``losses`` and ``methods``) against every supervisor structure at matched weak
accuracy, seeds resampling the split. :func:`probe_lab.leaderboard.rank_methods`
ranks them; the run writes ``leaderboard.md``, the Parquet tables and one figure,
and checks the one claim the paper makes about a method here (the confidence loss)
next to what the ranking measured, whichever way it goes.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from activation_cache import TASKS
from probe_lab import plots
from probe_lab.experiments.base import (
    Analysis,
    Context,
    Finding,
    check_tasks,
    fmt,
    judged,
)
from probe_lab.experiments.caches import build_cache
from probe_lab.experiments.config import register_kind
from probe_lab.leaderboard import STOPPING, STOPPING_NAMES, Leaderboard, rank_methods
from probe_lab.study import StudyResult

__all__ = ["CLAIM", "KIND", "Settings", "check", "plot", "run"]

CLAIM = (
    "The auxiliary confidence loss improves weak-to-strong generalization over "
    "plain cross-entropy (Burns et al. 2023, Sec. 4.3); the methods from the "
    "noisy-label literature (bootstrapping, GCE, kNN filtering) are ranked next to "
    "them with no claim made in advance."
)
"""The paper's finding this ranking can check."""


def run(ctx: Context) -> Analysis:
    """One study per task, then the leaderboard over all of them."""
    studies: dict[str, StudyResult] = {}
    caches = {}
    if ctx.cache_given or not ctx.config.settings.tasks:
        caches[ctx.cache.stem] = ctx.cache
    else:
        tasks = (
            TASKS
            if ctx.config.settings.tasks == ("all",)
            else ctx.config.settings.tasks
        )
        for task in tasks:
            spec = dataclasses.replace(ctx.config.cache, task=task)
            caches[task] = build_cache(spec, ctx.cache_dir, progress=ctx.progress)
    for task, cache in caches.items():
        ctx.log(f"ranking methods on {task}")
        studies[task] = ctx.study(cache=cache)
    table = pd.concat(
        [r.table.assign(task=task) for task, r in studies.items()], ignore_index=True
    )
    board = rank_methods(table)
    board.save(ctx.out)
    level = f"{board.confidence:.0%}"
    fig = plot(board, title=f"{ctx.title}; pooled PGR, Fieller {level}")
    return Analysis(studies, check(board), [ctx.save(fig)])


def check(board: Leaderboard) -> list[Finding]:
    """The confidence-loss claim, and the measured ranking as a finding."""
    findings = []
    overall = board.overall.set_index("method")
    if {"confidence", board.baseline} <= set(overall.index):
        conf, base = overall.loc["confidence"], overall.loc[board.baseline]
        findings.append(
            Finding(
                claim="The confidence loss gives more PGR than cross-entropy.",
                measured=f"PGR confidence {fmt(conf.pgr, 2)} [{fmt(conf.pgr_low, 2)}, "
                f"{fmt(conf.pgr_high, 2)}] vs {board.baseline} {fmt(base.pgr, 2)} "
                f"[{fmt(base.pgr_low, 2)}, {fmt(base.pgr_high, 2)}]; wins / ties / "
                f"losses {conf.wins:.0f} / {conf.ties:.0f} / {conf.losses:.0f} of the "
                "cells (paired per cell, Holm); accuracy - "
                f"{board.baseline} {fmt(conf.acc_diff, 4, signed=True)} "
                f"[{fmt(conf.acc_diff_low, 4, signed=True)}, "
                f"{fmt(conf.acc_diff_high, 4, signed=True)}] (paired over seeds); "
                + _survival(board, conf),
                held=judged(
                    conf.wins > conf.losses and conf.pgr > base.pgr, conf.pgr, base.pgr
                ),
            )
        )
    top = board.overall.iloc[0]
    findings.append(
        Finding(
            claim="(No claim in advance) the highest pooled PGR over all kept cells.",
            measured=f"{top.method}: PGR {fmt(top.pgr, 2)} [{fmt(top.pgr_low, 2)}, "
            f"{fmt(top.pgr_high, 2)}], wins / ties / losses vs {board.baseline} "
            f"{top.wins:.0f} / {top.ties:.0f} / {top.losses:.0f}",
            held=None,
        )
    )
    return findings


def _survival(board: Leaderboard, row: pd.Series) -> str:
    """How many of a method's verdicts stay the same under each other
    early-stopping rule (or that the table has no column for it)."""
    texts = []
    for rule, available in board.stopping.items():
        if rule == "weak_agreement":
            continue
        name = STOPPING_NAMES[rule]
        if not available:
            texts.append(f"{name}: unavailable (no {STOPPING[rule]} column)")
            continue
        texts.append(
            f"{name}: {row[f'survive_{rule}']:.0f} of {row.cells:.0f} verdicts "
            f"survive, PGR {fmt(row[f'pgr_{rule}'], 2)}"
        )
    return "; ".join(texts) if texts else "no other stopping rule compared"


def plot(board, *, title: str = "") -> Figure:
    """Pooled PGR per method (summed gains over summed gaps of the kept cells) with
    Fieller's interval over seeds: one panel for all tasks
    (the leaderboard's order, best on top), one per task; the baseline's PGR as a
    dashed line. ``board`` is a :class:`probe_lab.leaderboard.Leaderboard`."""
    methods = list(board.overall.method)
    tasks = list(dict.fromkeys(board.per_task.task))
    panels = [
        (
            "all tasks",
            board.overall.rename(columns={"pgr_low": "low", "pgr_high": "high"}),
        )
    ]
    panels += [(task, board.per_task[board.per_task.task == task]) for task in tasks]
    y = np.arange(len(methods))[::-1]
    cols = min(len(panels), 5)
    rows = -(-len(panels) // cols)
    with plots.style():
        width = max(3.4 * cols + 2.5, 10.5)
        height = rows * (1.0 + 0.45 * len(methods)) + 0.8
        fig = Figure(figsize=(width, height), layout="constrained")
        grid = plots.panels(fig, len(panels), cols, sharey=True).reshape(-1)
        axes = grid[: len(panels)]
        for ax, (name, frame) in zip(axes, panels, strict=True):
            frame = frame.set_index("method").reindex(methods)
            err = np.vstack([frame.pgr - frame.low, frame.high - frame.pgr])
            colors = ["#cc6677" if m == board.baseline else "#4477aa" for m in methods]
            ax.errorbar(
                frame.pgr,
                y,
                xerr=np.nan_to_num(err),
                fmt="none",
                ecolor="0.5",
                capsize=3,
            )
            ax.scatter(frame.pgr, y, c=colors, zorder=3, s=30, label="pooled PGR")
            base = frame.pgr.get(board.baseline, np.nan)
            if np.isfinite(base):
                ax.axvline(
                    base, color="#cc6677", ls="--", lw=1, label=f"{board.baseline}"
                )
            ax.axvline(0, color="0.6", lw=0.8)
            if frame.pgr.isna().all():
                ax.text(
                    0.5,
                    0.5,
                    "no cell kept: the supervisor is\nwithin noise of chance, or the "
                    "gap\nis not above noise (the cell rule)",
                    transform=ax.transAxes,
                    ha="center",
                    va="center",
                )
            ax.set_title(name)
            ax.set_xlabel("PGR")
        axes[0].set_yticks(y, methods)
        for ax in grid[::cols]:
            ax.set_ylabel("method")
        axes[0].legend(loc="lower right")
        level = f"{board.confidence:.0%}"
        fig.suptitle(
            title
            or f"Methods ranked by pooled PGR ({level} Fieller intervals over seeds)"
        )
    return fig


@dataclasses.dataclass(frozen=True, kw_only=True)
class Settings:
    """The ``[experiment]`` keys of ``methods``."""

    tasks: tuple[str, ...] = ()
    """The built-in tasks to rank on (``["all"]``: every one), one cache each
    (``[cache]`` with its task replaced); a run given ``--cache`` ranks on that
    cache alone."""


KIND = register_kind(
    name="methods", claim=CLAIM, run=run, settings=Settings, check=check_tasks
)
"""The experiment kind."""
