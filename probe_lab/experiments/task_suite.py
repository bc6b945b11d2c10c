"""The task suite: weak-to-strong on every built-in task, with weak supervisors that
are genuinely different, weaker models.

One study per task on its MiniLM cache (the task's recommended layer). Supervisors:

* ``bow``: a probe on the task's bag-of-words cache (hashed word and bigram counts
  of exactly the same rows): a different, weaker "model", as in the paper's
  small-model-supervises-large setup;
* the task's rule fields (``rule``, ``rater``), stored at extraction, at their
  natural accuracy;
* ``M_k``: a probe on the first k principal components of MiniLM itself;
* random flips at each one's accuracy (``random@<name>``), so every natural
  supervisor's PGR stands next to unsimulatable errors at the same accuracy.

Students: several sizes k, so the Fig. 23 analog (``linear_probe_w2s``) is re-run
with the bag of words as the weak model on every task. The run writes one summary
figure (PGR per task and supervisor) and table, and checks the paper's findings on
every task where there is a gap to recover.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from activation_cache import TASK_INFO, TASKS, open_cache
from probe_lab import metrics, plots
from probe_lab.experiments.base import (
    Analysis,
    Context,
    Finding,
    check_tasks,
    diff_text,
    fieller_text,
    paired,
    seed_pgr,
    seed_values,
    shown,
    summary_frame,
)
from probe_lab.experiments.caches import bow_cache, build_cache
from probe_lab.experiments.config import register_kind
from probe_lab.metrics import SMALL_GAP
from probe_lab.study import StudyResult, Supervisor

__all__ = [
    "CLAIM",
    "KIND",
    "Settings",
    "check",
    "plot",
    "run",
    "supervisor_sets",
    "supervisors",
]

CLAIM = (
    "Students beat their weak supervisors (PGR > 0) also when the weak model is "
    "genuinely different (a bag-of-words probe supervising MiniLM, Fig. 23); and "
    "natural weak errors (another model's, a rule's) are harder to generalize past "
    "than random flips at the same accuracy (Appendix E)."
)
"""The findings checked on every task with a gap."""


def supervisors(k: int, bow: str | None, rules: tuple[str, ...]) -> list[Supervisor]:
    """The suite's supervisors for one task: ``bow`` (when there is a bag-of-words
    cache), each rule field, ``M_k``, and random flips matched to each."""
    natural = []
    if bow is not None:
        natural.append(Supervisor(kind="probe", cache=bow, name="bow"))
    natural += [Supervisor(kind="column", field=f, name=f) for f in rules]
    natural.append(Supervisor(kind="probe", k=k, name=f"M_{k}"))
    matched = [
        Supervisor(kind="random", match=s.label, name=f"random@{s.label}")
        for s in natural
    ]
    return natural + matched


def supervisor_sets(config) -> list[list[Supervisor]]:
    """The supervisors of a task with a bag of words and a rule (for checking the
    configuration before any cache exists)."""
    return [supervisors(config.settings.k, "<bow>.h5", ("rule",))]


def _rules(task: str, cache: Path) -> tuple[str, ...]:
    """A task's rule fields that its cache holds."""
    fields = set(open_cache(cache).extra)
    if task in TASK_INFO:
        return tuple(f for f in TASK_INFO[task].rules if f in fields)
    return tuple(f for f in ("rule",) if f in fields)


def _task_caches(ctx: Context) -> dict[str, Path]:
    if ctx.cache_given or not ctx.config.settings.tasks:
        task = str(open_cache(ctx.cache).meta.get("task", ctx.cache.stem))
        return {Path(task).stem: ctx.cache}
    tasks = (
        TASKS if ctx.config.settings.tasks == ("all",) else ctx.config.settings.tasks
    )
    return {
        task: build_cache(
            dataclasses.replace(ctx.config.cache, task=task),
            ctx.cache_dir,
            progress=ctx.progress,
        )
        for task in tasks
    }


def run(ctx: Context) -> Analysis:
    """One study per task; the suite's summary, figure and checks."""
    studies: dict[str, StudyResult] = {}
    frames = []
    for task, cache in _task_caches(ctx).items():
        bow = bow_cache(cache, ctx.cache_dir, progress=ctx.progress)
        sups = supervisors(ctx.config.settings.k, str(bow), _rules(task, cache))
        ctx.log(f"{task}: {', '.join(s.label for s in sups)}")
        result = ctx.study(sups, cache=cache)
        studies[task] = result
        frames.append(summary_frame(result, task=task))
    summary = pd.concat(frames, ignore_index=True)
    summary.to_csv(ctx.out / "task_suite.csv", index=False)
    largest = summary[
        summary.student == summary.groupby("task").student.transform("max")
    ]
    fig = plot(largest[largest.loss == "xent"], title=ctx.title)
    table = pd.concat(
        [r.table.assign(task=task) for task, r in studies.items()], ignore_index=True
    )
    return Analysis(studies, check(table), [ctx.save(fig)])


def _informative(xent: pd.DataFrame) -> pd.Series:
    """Rows whose (task, supervisor, student) has something to recover: a mean
    gap below the ceiling, and a supervisor better than chance (a weak model at
    or below 0.5 has no signal to generalize from; "beating" it is trivial)."""
    keys = ["task", "supervisor", "student"]
    means = xent.groupby(keys)[["weak_acc", "ceiling_acc"]].transform("mean")
    return (means.ceiling_acc - means.weak_acc >= SMALL_GAP) & (
        means.weak_acc >= 0.5 + SMALL_GAP
    )


def _holm(diffs: list) -> np.ndarray:
    """Holm-adjusted p-values of paired differences (NaN where there is none)."""
    return metrics.holm([d.p_value for d in diffs])


def _bow_beaten(bow: pd.DataFrame) -> Finding:
    """Per task: student vs bag-of-words accuracy, paired per seed (the mean over
    student sizes), Holm over the tasks."""
    tasks = list(dict.fromkeys(bow.task))
    diffs = [
        paired(
            seed_values(bow, "student_acc", task=t),
            seed_values(bow, "weak_acc", task=t),
        )
        for t in tasks
    ]
    adjusted = _holm(diffs)
    verdicts = [shown(d, a) for d, a in zip(diffs, adjusted, strict=True)]
    judged_ = [v for v in verdicts if v is not None]
    return Finding(
        claim="MiniLM students supervised by a bag-of-words probe beat it (student "
        "- weak accuracy, paired per seed, mean over student sizes, Holm over "
        "tasks), on most tasks where it is better than chance and below the ceiling.",
        measured="student - bow per task: "
        + "; ".join(
            f"{t} {diff_text(d, a)}"
            for t, d, a in zip(tasks, diffs, adjusted, strict=True)
        )
        + f"; shown on {sum(bool(v) for v in judged_)} of {len(tasks)}",
        held=bool(sum(judged_) > len(tasks) / 2) if judged_ else None,
    )


def _natural_vs_random(top: pd.DataFrame, ok: pd.Series) -> Finding | None:
    """Per (task, natural supervisor) with a gap: its gain against random flips at
    its accuracy, paired per seed (largest student), Holm over the pairs."""
    pairs = []
    for task, sup in (
        top[ok][["task", "supervisor"]].drop_duplicates().itertuples(index=False)
    ):
        other = f"random@{sup}"
        if sup.startswith("random@") or other not in set(
            top[top.task == task].supervisor
        ):
            continue
        pgrs = [seed_pgr(top, task=task, supervisor=s) for s in (sup, other)]
        gain = top.assign(gain=top.student_acc - top.weak_acc)
        diff = paired(
            seed_values(gain, "gain", task=task, supervisor=other),
            seed_values(gain, "gain", task=task, supervisor=sup),
        )
        pairs.append((task, sup, pgrs, diff))
    if not pairs:
        return None
    adjusted = _holm([p[3] for p in pairs])
    verdicts = [
        None if any(r.reason for r in p[2]) else shown(p[3], a)
        for p, a in zip(pairs, adjusted, strict=True)
    ]
    judged_ = [v for v in verdicts if v is not None]
    return Finding(
        claim="Natural weak errors are harder to generalize past than random flips "
        "at the same accuracy (random's gain above the natural supervisor's, paired "
        "per seed, Holm over the pairs), largest student, where the supervisor is "
        "better than chance and below the ceiling.",
        measured=f"shown in {sum(bool(v) for v in judged_)} of {len(judged_)} "
        f"(task, supervisor) pairs with both PGRs defined ({len(pairs)} with a "
        "gap); PGR natural vs random and gain random - natural: "
        + "; ".join(
            f"{t}/{s} {fieller_text(p[0])} vs {fieller_text(p[1])}, {diff_text(d, a)}"
            for (t, s, p, d), a in zip(pairs, adjusted, strict=True)
        ),
        held=bool(sum(judged_) > len(pairs) / 2) if judged_ else None,
    )


def check(table: pd.DataFrame) -> list[Finding]:
    """Fig. 23 with the bag of words as the weak model; natural vs random errors;
    on the per-seed rows of every task's study (a ``task`` column)."""
    xent = table[table.loss == "xent"]
    gap = _informative(xent)
    findings = []
    bow = xent[(xent.supervisor == "bow") & gap]
    if len(bow):
        findings.append(_bow_beaten(bow))
    largest = xent.student == xent.groupby("task").student.transform("max")
    natural = _natural_vs_random(xent[largest], gap[largest])
    if natural is not None:
        findings.append(natural)
    no_gap = sorted(set(xent.task) - set(xent[gap].task))
    if no_gap:
        findings.append(
            Finding(
                claim="(Not a claim) tasks left out: no supervisor is both better "
                f"than chance by {SMALL_GAP} and {SMALL_GAP} below the MiniLM "
                "ceiling.",
                measured=", ".join(no_gap),
                held=None,
            )
        )
    return findings


def plot(summary: pd.DataFrame, *, title: str = "") -> Figure:
    """PGR per supervisor on every task (largest student), one panel per task:
    each natural supervisor (a bag-of-words probe, a rule, M_k) in color and the
    random flips at its accuracy hatched beside it, with Fieller intervals;
    each panel's title gives the MiniLM ceiling. Tasks with no gap show n/a."""
    tasks = list(dict.fromkeys(summary.task))
    cols = min(3, len(tasks))
    rows = -(-len(tasks) // cols)
    with plots.style():
        width = max(5.2 * cols, 10.5)
        fig = Figure(figsize=(width, 3.6 * rows + 1.2), layout="constrained")
        axes = plots.panels(fig, len(tasks), cols).reshape(-1)
        for ax, task in zip(axes, tasks, strict=False):
            frame = summary[summary.task == task]
            natural = [s for s in dict.fromkeys(frame.supervisor) if "@" not in s]
            x = np.arange(len(natural))
            for offset, prefix, hatch in ((-0.2, "", None), (0.2, "random@", "//")):
                rows_ = frame.set_index("supervisor").reindex(
                    [prefix + s for s in natural]
                )
                err = np.vstack([rows_.pgr - rows_.pgr_low, rows_.pgr_high - rows_.pgr])
                ax.bar(
                    x + offset,
                    rows_.pgr.fillna(0.0),
                    width=0.4,
                    yerr=np.nan_to_num(err),
                    color=plots.colors(len(natural), "tab10")[: len(natural)],
                    hatch=hatch,
                    edgecolor="0.3",
                    capsize=3,
                    label="random flips at its accuracy" if prefix else "supervisor",
                )
                for xi, value in zip(x + offset, rows_.pgr, strict=True):
                    if not np.isfinite(value):
                        ax.text(xi, 0, "n/a", ha="center", va="bottom", fontsize=10)
            ax.axhline(0, color="0.5", lw=0.8)
            ax.set_xticks(x, natural)
            ax.set_ylabel("PGR")
            ceiling = frame.ceiling_acc.mean()
            ax.set_title(f"{task} (ceiling {ceiling:.2f})")
        axes[0].legend(loc="best")
        fig.suptitle(
            (title or "The task suite")
            + "\nPGR of the largest student (xent), 95% Fieller intervals over seeds"
        )
    return fig


@dataclasses.dataclass(frozen=True, kw_only=True)
class Settings:
    """The ``[experiment]`` keys of ``task_suite``."""

    tasks: tuple[str, ...] = ()
    """The built-in tasks to run on (``["all"]``: every one), one cache each
    (``[cache]`` with its task replaced); a run given ``--cache`` runs on that
    cache alone."""

    k: int = 32
    """The M_k probe supervisor (first k principal components)."""


KIND = register_kind(
    name="task_suite",
    claim=CLAIM,
    run=run,
    settings=Settings,
    ranges={"k": (1, math.inf)},
    check=check_tasks,
    supervisor_sets=supervisor_sets,
)
"""The experiment kind."""
