"""The model ladder: a small real model supervises a larger one (Fig. 23, in its real
form: the paper's linear probes on genuinely different transformers).

For every task chosen, one cache per rung of the offline ladder
(``activation_cache.models.LADDER``: MiniLM-L3, MiniLM-L6, MPNet, SmolLM2) on the
same rows. Each rung's layer is chosen once per task (:func:`choose_layer`), and
its accuracy there is the rung's measured ceiling on the task. The rungs are then
ordered by that ceiling, not by size: a larger model that is not the stronger one
on a task (it happens, see docs/cache.md) supervises the smaller one instead, and
the table says where the size order was inverted.

One study per (task, strong rung) on the strong rung's cache at its layer, with
supervisors:

* ``<weak rung>``: a probe on each weaker rung's cache at its layer, trained on the
  weak split with ground truth and joined to the strong cache by row id;
* ``random@<weak rung>``: random flips at that probe's exact accuracy;
* ``s2s``: the strong-to-strong control, a full-width probe on the strong model's
  own features trained on the weak split.

Seeds resample the split. Per pair (weak, strong): PGR of the largest student with
Fieller's interval over seeds (:func:`probe_lab.metrics.pgr_interval`), the same
for the random flips, and the paired difference natural - random in PGR units
(:func:`probe_lab.metrics.paired_difference`). The run writes the pair table
(``model_ladder.csv`` and ``.md``), the rungs' ceilings and layers
(``model_ladder_rungs.csv``) and the Fig. 23 analog: PGR against strong-model size,
one line per weak model.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from activation_cache import TASKS, open_cache
from activation_cache.models import LADDER
from probe_lab import TrainConfig, metrics, plots, train_probes
from probe_lab.experiments.base import Analysis, Context, Finding, fmt, judged
from probe_lab.experiments.caches import build_cache
from probe_lab.experiments.config import ExperimentError, register_kind
from probe_lab.experiments.report import markdown_table
from probe_lab.metrics import SMALL_GAP
from probe_lab.study import StudyResult, Supervisor

__all__ = [
    "CLAIM",
    "KIND",
    "Settings",
    "check",
    "choose_layer",
    "pair_table",
    "params",
    "plot",
    "run",
    "run_ladder",
    "supervisors",
]

CLAIM = (
    "A weak model's probe supervising a larger model's students is beaten by them "
    "(PGR > 0) for every (weak, strong) pair, and PGR is larger for larger gaps in "
    "size (Fig. 23, linear probes); natural errors of another model are harder to "
    "generalize past than random flips at the same accuracy (Appendix E)."
)
"""The findings checked."""

CONTROL = "s2s"
"""The strong-to-strong control's supervisor name."""

LAYER_L2 = (1e-2, 1.0, 100.0)
"""L2 strengths :func:`choose_layer` tries on every layer."""


def params(rung: str) -> float:
    """A rung's parameter count (``"17M"`` -> 1.7e7)."""
    text = LADDER[rung].params
    scale = {"K": 1e3, "M": 1e6, "B": 1e9}[text[-1]]
    return float(text[:-1]) * scale


def choose_layer(path: str | Path, *, seed: int = 0) -> tuple[int, float]:
    """The layer of a cache where a ground-truth probe is most accurate.

    Two-fold cross-fitting over all rows (a fixed random half, ``seed``): L-BFGS
    logistic probes at each of :data:`LAYER_L2` on each stored layer, trained on
    one half and scored on the other, then the other way round.

    Args:
        path: a cache file.
        seed: the halves' permutation seed.

    Returns:
        ``(layer, accuracy)``: the hidden_states index, and its held-out accuracy
        (mean of both folds, best L2): the rung's measured ceiling on the task. It
        is the best of a few layers and L2 values, so slightly optimistic; every
        rung is measured the same way.
    """
    with open_cache(path) as cache:
        y = np.asarray(cache.labels)
        half = np.zeros(cache.n, dtype=bool)
        half[np.random.default_rng(seed).permutation(cache.n)[: cache.n // 2]] = True
        targets = np.tile(y.astype(np.float32), (len(LAYER_L2), 1))
        config = TrainConfig(solver="lbfgs", l2=LAYER_L2, lbfgs_max_iter=200)
        scores = {}
        for layer in cache.layers:
            x = np.asarray(cache.features(layer), np.float32)
            correct = np.zeros(len(LAYER_L2))
            for train in (half, ~half):
                probes = train_probes(x, targets, train_rows=train, config=config)
                pred = np.asarray(probes.predict(x))[:, ~train]
                correct += (pred == y[~train]).sum(axis=1)
            scores[int(layer)] = float(correct.max() / cache.n)
    best = max(scores, key=lambda k: (scores[k], -k))
    return best, scores[best]


def supervisors(weak: Mapping[str, tuple[str, int]]) -> list[Supervisor]:
    """A study's supervisors: a probe on each weaker rung's cache at its layer
    (``weak``: rung -> (cache, layer)), random flips at each one's accuracy, and the
    strong-to-strong control."""
    natural = [
        Supervisor(kind="probe", cache=cache, layer=layer, name=rung)
        for rung, (cache, layer) in weak.items()
    ]
    matched = [
        Supervisor(kind="random", match=rung, name=f"random@{rung}") for rung in weak
    ]
    return natural + matched + [Supervisor(kind="probe", name=CONTROL)]


def supervisor_sets(config) -> list[list[Supervisor]]:
    """The supervisors of the top rung's study (for checking the configuration
    before any cache exists)."""
    rungs = config.settings.rungs
    return [supervisors({r: (f"<{r}>.h5", 0) for r in rungs[:-1]})]


def _caches(ctx: Context) -> dict[str, dict[str, Path]]:
    """Every (task, rung) cache of the run, built or reused."""
    if ctx.cache_given:
        raise ExperimentError(
            "model_ladder builds one cache per task and rung of the ladder; run it "
            "without --cache (its [cache] table sets rows, position and dtype)"
        )
    settings = ctx.config.settings
    return {
        task: {
            rung: build_cache(
                dataclasses.replace(ctx.config.cache, model=rung, task=task),
                ctx.cache_dir,
                progress=ctx.progress,
            )
            for rung in settings.rungs
        }
        for task in settings.tasks
    }


def run(ctx: Context) -> Analysis:
    """Build (or reuse) every rung's cache of every task, then :func:`run_ladder`."""
    return run_ladder(ctx, _caches(ctx))


def _rungs(task: str, caches: Mapping[str, Path]) -> pd.DataFrame:
    """Each rung's layer and ceiling on one task, weakest (lowest ceiling) first."""
    rows = []
    for rung, path in caches.items():
        layer, ceiling = choose_layer(path)
        rows.append(
            dict(
                task=task,
                rung=rung,
                params=params(rung),
                layer=layer,
                ceiling=ceiling,
                cache=str(Path(path).resolve()),
            )
        )
    frame = pd.DataFrame(rows).sort_values(["ceiling", "params"], kind="stable")
    frame["by_ceiling"] = np.arange(1, len(frame) + 1)
    frame["by_size"] = frame.params.rank(method="first").astype(int)
    return frame.reset_index(drop=True)


def run_ladder(ctx: Context, caches: Mapping[str, Mapping[str, Path]]) -> Analysis:
    """One study per (task, strong rung) on given caches; the pair table, the
    rungs' table, the figure and the checks.

    Args:
        ctx: the run.
        caches: task -> rung -> cache file (the same rows in every rung's cache).

    Returns:
        The studies (labelled ``<task>/<strong rung>``), findings and figure.
    """
    studies: dict[str, StudyResult] = {}
    rung_frames, pair_frames = [], []
    for task, by_rung in caches.items():
        rungs = _rungs(task, by_rung)
        rung_frames.append(rungs)
        order = list(rungs.rung)
        ctx.log(
            f"{task}: rungs by measured ceiling, weakest first: "
            + ", ".join(
                f"{r.rung} {r.ceiling:.3f} (layer {r.layer})"
                for r in rungs.itertuples()
            )
        )
        info = rungs.set_index("rung")
        for j, strong in enumerate(order[1:], start=1):
            weak = {r: (info.cache[r], int(info.layer[r])) for r in order[:j]}
            config = ctx.config.study_config(by_rung[strong], supervisors(weak))
            config = dataclasses.replace(config, layer=int(info.layer[strong]))
            result = ctx.run_study(config)
            studies[f"{task}/{strong}"] = result
            pair_frames.append(pair_table(result.table, task, strong, rungs))
    rungs = pd.concat(rung_frames, ignore_index=True)
    pairs = pd.concat(pair_frames, ignore_index=True)
    rungs.drop(columns="cache").to_csv(ctx.out / "model_ladder_rungs.csv", index=False)
    pairs.to_csv(ctx.out / "model_ladder.csv", index=False)
    (ctx.out / "model_ladder.md").write_text(_markdown(pairs, rungs))
    fig = plot(pairs, rungs, title=ctx.title)
    return Analysis(studies, check(pairs, rungs), [ctx.save(fig)])


def _seeded(table: pd.DataFrame, supervisor: str) -> pd.DataFrame:
    """One supervisor's rows of the largest student (first loss), by seed."""
    rows = table[table.supervisor == supervisor]
    rows = rows[rows.loss == rows.loss.iloc[0]]
    rows = rows[rows.student == rows.student.max()]
    return rows.set_index("seed").sort_index()


def pair_table(
    table: pd.DataFrame, task: str, strong: str, rungs: pd.DataFrame
) -> pd.DataFrame:
    """The pairs (weak rung, ``strong``) of one study's per-seed ``table``.

    Returns:
        One row per weak rung: accuracies (means over seeds), PGR with Fieller's
        interval for the weak probe and for random flips at its accuracy, the
        paired difference natural - random in PGR units (each seed's gain over the
        mean gap) with its t-interval and p-value, the strong-to-strong control's
        student accuracy, and whether the pair is in size order.
    """
    info = rungs.set_index("rung")
    control = _seeded(table, CONTROL)
    rows = []
    for sup in dict.fromkeys(table.supervisor):
        if sup == CONTROL or sup.startswith("random@"):
            continue
        nat, rnd = _seeded(table, sup), _seeded(table, f"random@{sup}")
        seeds = nat.index.intersection(rnd.index)
        nat, rnd = nat.loc[seeds], rnd.loc[seeds]
        interval = metrics.pgr_interval(nat.weak_acc, nat.student_acc, nat.ceiling_acc)
        chance = metrics.pgr_interval(rnd.weak_acc, rnd.student_acc, rnd.ceiling_acc)
        gaps = [(f.ceiling_acc - f.weak_acc).mean() for f in (nat, rnd)]
        units = [  # PGR units; without a gap (mean gap <= 0) PGR is undefined
            (f.student_acc - f.weak_acc) / (gap if gap > 0 else np.nan)
            for f, gap in zip((nat, rnd), gaps, strict=True)
        ]
        diff = metrics.paired_difference(*units)
        rows.append(
            dict(
                task=task,
                weak=sup,
                strong=strong,
                weak_params=info.params[sup],
                strong_params=info.params[strong],
                size_order=bool(info.params[sup] < info.params[strong]),
                seeds=len(seeds),
                weak_acc=nat.weak_acc.mean(),
                student_acc=nat.student_acc.mean(),
                ceiling_acc=nat.ceiling_acc.mean(),
                pgr=float(interval.pgr),
                pgr_low=float(interval.low),
                pgr_high=float(interval.high),
                random_pgr=float(chance.pgr),
                random_low=float(chance.low),
                random_high=float(chance.high),
                diff=float(diff.mean),
                diff_low=float(diff.low),
                diff_high=float(diff.high),
                diff_p=float(diff.p_value),
                s2s_student_acc=control.student_acc.mean(),
            )
        )
    return pd.DataFrame(rows)


def _markdown(pairs: pd.DataFrame, rungs: pd.DataFrame) -> str:
    """The rungs' and the pairs' tables in Markdown."""
    shown = rungs[["task", "rung", "params", "layer", "ceiling", "by_size"]].copy()
    shown["params"] = [f"{p / 1e6:.0f}M" for p in shown.params]
    columns = [
        "task", "weak", "strong", "size_order", "seeds", "weak_acc", "student_acc",
        "ceiling_acc", "pgr", "pgr_low", "pgr_high", "random_pgr", "diff",
        "diff_low", "diff_high", "s2s_student_acc",
    ]  # fmt: skip
    return (
        "## Rungs, weakest first per task (ceiling: 2-fold accuracy at the layer)\n\n"
        + markdown_table(shown)
        + "\n\n## Pairs (largest student; PGR: Fieller 95% over seeds; diff: "
        "natural - random in PGR units, paired t 95%)\n\n"
        + markdown_table(pairs[columns])
        + "\n"
    )


def check(pairs: pd.DataFrame, rungs: pd.DataFrame) -> list[Finding]:
    """PGR > 0 per pair, larger for larger gaps; natural vs random; the size order."""
    gap = (pairs.ceiling_acc - pairs.weak_acc >= SMALL_GAP) & (
        pairs.weak_acc >= 0.5 + SMALL_GAP
    )
    judged_pairs = pairs[gap]
    findings = []
    if len(judged_pairs):
        above = judged_pairs[judged_pairs.pgr_low > 0]
        findings.append(
            Finding(
                claim="PGR > 0 for every (weak, strong) pair with a gap (Fig. 23).",
                measured=f"PGR interval above 0 for {len(above)} of "
                f"{len(judged_pairs)} pairs; "
                + "; ".join(
                    f"{r.task} {r.weak}->{r.strong} {fmt(r.pgr, 2)} "
                    f"[{fmt(r.pgr_low, 2)}, {fmt(r.pgr_high, 2)}]"
                    for r in judged_pairs.itertuples()
                ),
                held=judged(
                    bool((judged_pairs.pgr_low > 0).all()), *judged_pairs.pgr_low
                ),
            )
        )
        findings.append(_larger_gaps(judged_pairs))
        findings.append(_natural_vs_random(judged_pairs))
    left = pairs[~gap]
    if len(left):
        findings.append(
            Finding(
                claim=f"(Not a claim) pairs left out: the weak probe is within "
                f"{SMALL_GAP} of chance or of the strong ceiling.",
                measured="; ".join(
                    f"{r.task} {r.weak}->{r.strong} weak {fmt(r.weak_acc)} ceiling "
                    f"{fmt(r.ceiling_acc)}"
                    for r in left.itertuples()
                ),
                held=None,
            )
        )
    findings.append(_size_order(rungs))
    return findings


def _larger_gaps(pairs: pd.DataFrame) -> Finding:
    """Within each weak model, PGR rises with the strong model's size."""
    rises, total = 0, 0
    for _, group in pairs.groupby(["task", "weak"]):
        if len(group) < 2:
            continue
        ordered = group.sort_values("strong_params").pgr.to_numpy()
        if not np.isfinite(ordered).all():
            continue
        steps = np.diff(ordered)
        rises += int((steps > 0).sum())
        total += len(steps)
    return Finding(
        claim="PGR is larger for larger gaps: for each weak model, a larger strong "
        "model recovers more of the gap (Fig. 23).",
        measured=f"point PGR rises in {rises} of {total} steps to the next larger "
        "strong model (same task and weak model; steps with an undefined PGR left "
        "out; separate studies, so no paired test)",
        held=bool(rises > total / 2) if total else None,
    )


def _natural_vs_random(pairs: pd.DataFrame) -> Finding:
    """Natural errors of another model vs random flips at the same accuracy."""
    finite = pairs[np.isfinite(pairs["diff"])]
    lower = finite[finite["diff"] < 0]
    apart = finite[finite.diff_high < 0]
    return Finding(
        claim="Another model's errors are harder to generalize past than random "
        "flips at the same accuracy (natural - random PGR < 0, App. E).",
        measured=f"below 0 in {len(lower)} of {len(finite)} pairs, {len(apart)} "
        "with the paired interval below 0 (held: every pair's interval below 0): "
        + "; ".join(
            f"{r.task} {r.weak}->{r.strong} {fmt(r.diff, 2, signed=True)}"
            for r in finite.itertuples()
        ),
        held=bool(len(apart) == len(finite)) if len(finite) else None,
    )


def _size_order(rungs: pd.DataFrame) -> Finding:
    """Where a larger model is not the stronger one (by measured ceiling)."""
    notes = []
    for task, group in rungs.groupby("task", sort=False):
        if not (group.by_size.to_numpy() == group.by_ceiling.to_numpy()).all():
            notes.append(
                f"{task}: "
                + " < ".join(f"{r.rung} {fmt(r.ceiling)}" for r in group.itertuples())
            )
    return Finding(
        claim="(Not a claim) pairs are ordered by measured ceiling, not size; tasks "
        "where the orders differ.",
        measured="; ".join(notes) if notes else "none: size order held on every task",
        held=None,
    )


def plot(pairs: pd.DataFrame, rungs: pd.DataFrame, *, title: str = "") -> Figure:
    """Fig. 23's layout: PGR against the strong model's size (the strong models in
    size order, evenly spaced: 110M and 135M would overlap on a log axis), one line
    per weak model (solid: its probe; dashed, hollow: random flips at its accuracy),
    Fieller intervals over seeds; one panel per task, titled with the rungs in
    ceiling order. A pair against size order (weak larger than strong) is ringed; a
    panel with no defined PGR says why."""
    tasks = list(dict.fromkeys(pairs.task))
    names = list(LADDER)
    palette = dict(zip(names, plots.colors(len(names), "tab10"), strict=False))
    with plots.style():
        fig = Figure(figsize=(max(5.4 * len(tasks), 7.0), 4.8), layout="constrained")
        axes = plots.panels(fig, len(tasks), len(tasks)).reshape(-1)
        for ax, task in zip(axes, tasks, strict=True):
            frame = pairs[pairs.task == task]
            where = _size_axis(ax, frame)
            frame = frame.assign(x=frame.strong.map(where))
            for weak, group in frame.groupby("weak", sort=False):
                group = group.sort_values("strong_params")
                color = palette.get(weak, "0.3")
                _line(ax, group, "pgr", color, f"weak: {weak}", "-", "o", color)
                _line(ax, group, "random_pgr", color, None, "--", "o", "white")
                swapped = group[~group.size_order]
                ax.scatter(
                    swapped.x, swapped.pgr, s=180, facecolor="none",
                    edgecolor="black", zorder=4,
                )  # fmt: skip
            ax.axhline(0, color="0.5", lw=0.8)
            if frame.pgr.isna().all():
                ax.text(
                    0.5, 0.5, "no pair with a defined PGR: the weak\nprobe is "
                    "within 0.02 of chance, or not\n0.02 below the study's ceiling "
                    "(table)",
                    transform=ax.transAxes, ha="center", va="center", fontsize=9,
                )  # fmt: skip
            ax.set_xlabel("strong model (by parameters)")
            ax.set_ylabel("PGR (largest student)")
            ranked = rungs[rungs.task == task]
            ax.set_title(
                f"{task}\n"
                + " < ".join(f"{r.rung} {r.ceiling:.2f}" for r in ranked.itertuples()),
                fontsize=10,
            )
            ax.legend(loc="best", fontsize=8)
        fig.suptitle(
            (title or "The model ladder")
            + "\nsolid: the weak model's probe; dashed, hollow: random flips at its "
            "accuracy;\nringed: weak larger than strong; bars: 95% Fieller "
            "intervals over seeds",
            fontsize=10,
        )
    return fig


def _size_axis(ax, frame: pd.DataFrame) -> dict[str, int]:
    """The strong models in size order at evenly spaced positions, ticked with
    their names and sizes (limits set here: a panel whose PGRs are all undefined
    has no data to scale by). Returns strong model -> position."""
    sizes = frame.drop_duplicates("strong").sort_values("strong_params")
    where = {name: i for i, name in enumerate(sizes.strong)}
    ax.set_xlim(-0.5, len(where) - 0.5)
    ax.set_xticks(
        list(where.values()),
        [f"{r.strong}\n{r.strong_params / 1e6:.0f}M" for r in sizes.itertuples()],
    )
    ax.minorticks_off()
    return where


def _line(ax, group, column, color, label, style, marker, face) -> None:
    """One weak model's PGR line with its interval bars (NaN bounds: no bar)."""
    low = column.replace("pgr", "low") if column != "pgr" else "pgr_low"
    high = column.replace("pgr", "high") if column != "pgr" else "pgr_high"
    y = group[column].to_numpy()
    err = np.vstack([y - group[low].to_numpy(), group[high].to_numpy() - y])
    ax.errorbar(
        group.x, y, yerr=np.nan_to_num(np.abs(err)), color=color,
        linestyle=style, marker=marker, markerfacecolor=face, capsize=3, label=label,
    )  # fmt: skip


@dataclasses.dataclass(frozen=True, kw_only=True)
class Settings:
    """The ``[experiment]`` keys of ``model_ladder``."""

    tasks: tuple[str, ...] = ("larger_than", "sentiment")
    """Built-in tasks, one cache per rung each (``[cache]`` with its model and task
    replaced)."""

    rungs: tuple[str, ...] = tuple(LADDER)
    """Ladder rungs (``probe-lab models``), at least two."""


def _check(values: Mapping[str, object]) -> None:
    """Built-in tasks; at least two distinct rungs of the ladder."""
    tasks, rungs = list(values["tasks"]), list(values["rungs"])
    unknown = sorted(set(tasks) - set(TASKS))
    if not tasks or unknown:
        raise ValueError(
            f"[experiment] tasks must be built-in tasks ({sorted(TASKS)}); got "
            f"{unknown or tasks}"
        )
    strange = sorted(set(rungs) - set(LADDER))
    if strange or len(set(rungs)) != len(rungs) or len(rungs) < 2:
        raise ValueError(
            f"[experiment] rungs must be at least two distinct rungs of the ladder "
            f"({', '.join(LADDER)}; `probe-lab models` lists them); got {rungs}"
        )


KIND = register_kind(
    name="model_ladder",
    claim=CLAIM,
    run=run,
    settings=Settings,
    ranges={},
    check=_check,
    supervisor_sets=supervisor_sets,
)
"""The experiment kind."""
