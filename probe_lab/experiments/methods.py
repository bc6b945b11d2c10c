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

import pandas as pd

from activation_cache import TASKS
from probe_lab import plots
from probe_lab.experiments.base import Analysis, Context, Finding, fmt, judged
from probe_lab.experiments.caches import build_cache
from probe_lab.leaderboard import Leaderboard, rank_methods
from probe_lab.study import StudyResult

__all__ = ["CLAIM", "check", "run"]

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
    if ctx.cache_given or not ctx.config.tasks:
        caches[ctx.cache.stem] = ctx.cache
    else:
        tasks = TASKS if ctx.config.tasks == ("all",) else ctx.config.tasks
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
    fig = plots.plot_leaderboard(board, title=ctx.title)
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
                "cells",
                held=judged(
                    conf.wins > conf.losses and conf.pgr > base.pgr, conf.pgr, base.pgr
                ),
            )
        )
    top = board.overall.iloc[0]
    findings.append(
        Finding(
            claim="(No claim in advance) the highest mean PGR over all cells.",
            measured=f"{top.method}: PGR {fmt(top.pgr, 2)} [{fmt(top.pgr_low, 2)}, "
            f"{fmt(top.pgr_high, 2)}], wins / ties / losses vs {board.baseline} "
            f"{top.wins:.0f} / {top.ties:.0f} / {top.losses:.0f}",
            held=None,
        )
    )
    return findings
