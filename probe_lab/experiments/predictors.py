"""Predicting weak-to-strong gain before the student trains.

Conditions: tasks x supervisors x sizes x student widths x seeds. Per task and
size, one study (the study's own stages: ground truth, weak labels, students, in
batched calls) whose supervisors are synthetic flips at several accuracies, random
(unsimulatable) and structured (``longest``), and natural ones: an M_k probe of
the strong model itself, the task's rule fields, a bag-of-words probe and, with
``ladder``, each named model-ladder rung's best-layer probe (another real model's
features of the same rows, :func:`probe_lab.experiments.model_ladder.choose_layer`).
Between the weak labels and the students, every predictor of
:mod:`probe_lab.predictors` is computed from the labelled rows alone (never test
rows). Then, per predictor, the Spearman rank correlation with PGR and with gain
out of sample (leave one task out, bootstrap over tasks), a ridge model on the
predictors' ranks evaluated the same way, a figure per predictor and a summary
table.

The noise-rate sweep is the synthetic part of the same studies: accuracy and
structure (supervisors), n (sizes) and k (widths) vary; the measured crossover
(the labelled rows past which the student beats its supervisor) is drawn over the
symmetric-flip theory's ``n* = c k / (1 - 2 rho)^2``.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from activation_cache import TASK_INFO, TASKS, open_cache
from activation_cache.models import LADDER
from probe_lab import metrics, plots
from probe_lab import predictors as pred
from probe_lab.experiments.base import Analysis, Context, Finding, fmt, judged
from probe_lab.experiments.caches import bow_cache, build_cache, is_complete
from probe_lab.experiments.config import ExperimentError, register_kind
from probe_lab.experiments.model_ladder import choose_layer
from probe_lab.experiments.saved import load_saved, save_study, study_key
from probe_lab.study import (
    StudyConfig,
    StudyResult,
    Supervisor,
    make_labels,
    train_ground_truth,
    train_students,
    weak_probes,
)
from probe_lab.study.data import load_study_data
from probe_lab.study.stage import training_flops

__all__ = [
    "CLAIM",
    "KIND",
    "Settings",
    "check",
    "crossovers",
    "plot_crossover",
    "plot_predictor",
    "predictor_frame",
    "run",
    "score",
    "supervisors",
]

CLAIM = (
    "How easily the strong model can imitate the weak labels' errors drives PGR "
    "(Burns et al., App. E's conjecture): the simulatability index ranks "
    "conditions' PGR out of sample (more simulatable errors, lower PGR); and "
    "random flips at rate rho stop hurting past n* proportional to "
    "k / (1 - 2 rho)^2 labelled rows."
)


def supervisors(
    settings: Settings,
    *,
    bow: str | None,
    rules: tuple[str, ...],
    ladder: Mapping[str, tuple[str, int]] | None = None,
) -> list[Supervisor]:
    """Synthetic flips (each structure at each accuracy, named
    ``<structure>@<accuracy>``) and the natural supervisors of one task
    (``ladder``: rung -> (its cache, its layer), each a probe named by the
    rung)."""
    out = [
        Supervisor(kind=structure, accuracy=acc, name=f"{structure}@{acc:.2f}")
        for structure in settings.structures
        for acc in settings.accuracies
    ]
    out.append(Supervisor(kind="probe", k=settings.weak_k, name=f"M_{settings.weak_k}"))
    out += [Supervisor(kind="column", field=f, name=f) for f in rules]
    if bow is not None:
        out.append(Supervisor(kind="probe", cache=bow, name="bow"))
    out += [
        Supervisor(kind="probe", cache=cache, layer=layer, name=rung)
        for rung, (cache, layer) in (ladder or {}).items()
    ]
    return out


def _ladder(ctx: Context, task: str) -> tuple[dict[str, tuple[str, int]], list]:
    """Each ``ladder`` rung's cache of the task's rows (``[cache]`` with the model
    replaced, so the ids join) and its best layer (:func:`choose_layer`: 2-fold
    ground-truth probes on every stored layer); a missing cache is extracted for
    a rung in ``ladder_build``, else the rung is skipped on this task. Returns
    ``{rung: (cache, layer)}`` and one record per rung (layer, ceiling, or why
    it was skipped)."""
    settings, spec = ctx.config.settings, ctx.config.cache
    found, records = {}, []
    for rung in settings.ladder:
        if rung == spec.model:
            raise ExperimentError(
                f"[experiment] ladder names {rung!r}, the strong model itself; name "
                "other rungs (its own probe is M_k)"
            )
        if ctx.cache_given:
            records.append(dict(task=task, rung=rung, skipped="--cache given"))
            continue
        # Without [experiment] tasks the study's cache is [cache]'s own task.
        source = task if settings.tasks else spec.task
        rung_spec = dataclasses.replace(spec, model=rung, task=source)
        path = Path(ctx.cache_dir) / rung_spec.filename()
        if rung not in settings.ladder_build and not is_complete(path):
            ctx.log(f"{task}: ladder rung {rung} skipped (no complete {path})")
            records.append(dict(task=task, rung=rung, skipped=f"no {path.name}"))
            continue
        path = build_cache(rung_spec, ctx.cache_dir, progress=ctx.progress)
        layer, ceiling = choose_layer(path)
        ctx.log(f"{task}: ladder rung {rung}, layer {layer}, 2-fold {ceiling:.3f}")
        found[rung] = (str(path), layer)
        records.append(
            dict(task=task, rung=rung, layer=layer, ceiling=ceiling, cache=path.name)
        )
    return found, records


def _rules(task: str, cache: Path) -> tuple[str, ...]:
    fields = set(open_cache(cache).extra)
    names = TASK_INFO[task].rules if task in TASK_INFO else ("rule",)
    return tuple(f for f in names if f in fields)


def _task_caches(ctx: Context) -> dict[str, Path]:
    tasks = ctx.config.settings.tasks
    if ctx.cache_given or not tasks:
        task = str(open_cache(ctx.cache).meta.get("task", ctx.cache.stem))
        return {Path(task).stem: ctx.cache}
    names = TASKS if tasks == ("all",) else tasks
    spec = ctx.config.cache
    return {
        t: build_cache(
            dataclasses.replace(spec, task=t), ctx.cache_dir, progress=ctx.progress
        )
        for t in names
    }


def _weak_features(sup: Supervisor, data, labelled: np.ndarray):
    """The weak model's features of the labelled rows: a probe supervisor's
    (the kind a reference can be) first k features of its source; else None."""
    if not sup.kind_spec.reference:
        return None
    probe = sup.kind_spec.probes(sup)[0]
    source = data.sources[probe.source]
    return source[labelled][:, : probe.k or source.shape[1]]


def predictor_frame(
    config: StudyConfig, data, labels, names: tuple[str, ...]
) -> pd.DataFrame:
    """Every predictor of every (supervisor, student width, seed), from the
    labelled rows of each seed only."""
    d = data.features.shape[1]
    sp, rows = data.splits, []
    for seed in range(config.seeds):
        labelled = sp["student_train"][seed] | sp["student_val"][seed]
        x = data.features[labelled]
        for sup in config.supervisors:
            made = labels[(sup.label, seed)]
            weak_features = _weak_features(sup, data, labelled)
            for k in config.students:
                inputs = pred.PredictorInput(
                    features=x,
                    weak=made.targets[labelled],
                    hard=made.hard[labelled],
                    k=d if k is None else k,
                    truth=data.truth[labelled],
                    weak_features=weak_features,
                    seed=seed,
                )
                rows.append(
                    dict(
                        supervisor=sup.label,
                        student=inputs.k,
                        seed=seed,
                        labelled=inputs.n,
                        **pred.compute(names, inputs),
                    )
                )
    return pd.DataFrame(rows)


def _study(ctx: Context, config: StudyConfig) -> tuple[StudyResult, pd.DataFrame, dict]:
    """One study run stage by stage (the study's own functions), with the
    predictors computed between the weak labels and the students; saved (and
    reused) as :meth:`Context.run_study` does, predictors beside it. Also
    returns the study's times (wall, predictors; NaN when reused)."""
    names = ctx.config.settings.predictors
    key, _ = study_key(config)
    folder = ctx.out / "studies" / key[:16]
    saved = None if ctx.fresh else load_saved(folder, key)
    if saved is not None and (folder / "predictors.csv").is_file():
        ctx.reused.append(folder)
        times = dict(study=key[:16], wall_s=math.nan, predictors_s=math.nan)
        return saved, pd.read_csv(folder / "predictors.csv"), times
    begin = time.perf_counter()
    log = print if ctx.progress else (lambda *_a, **_k: None)
    data = load_study_data(config, weak_probes(config).values(), config.other_caches)
    for sup in config.supervisors:
        sup.kind_spec.prepare(sup, data)
    truth = train_ground_truth(config, data, log=log)
    labels = make_labels(config, data, truth)
    start = time.perf_counter()
    frame = predictor_frame(config, data, labels, names)
    predictors_s = time.perf_counter() - start
    ctx.log(f"predictors: {len(frame)} conditions in {predictors_s:.1f}s")
    scored = train_students(config, data, truth, labels, log=log)
    table = scored.table
    table["pgr"] = metrics.pgr(
        table.weak_acc, table.student_acc, table.ceiling_acc, warn=False
    )
    table["pgr_note"] = metrics.pgr_reason(table.weak_acc, table.ceiling_acc)
    table["gain"] = table.student_acc - table.weak_acc
    result = StudyResult(
        table=table,
        dynamics=scored.dynamics,
        config=config,
        fingerprints=data.fingerprints | {"study_key": key},
        stages=[*truth.records, *scored.records],
    )
    save_study(result, folder, key)
    frame.to_csv(folder / "predictors.csv", index=False)
    times = dict(
        study=key[:16],
        wall_s=time.perf_counter() - begin,
        predictors_s=predictors_s,
    )
    return result, frame, times


def _runtime(result: StudyResult, task: str, rows: int, times: dict) -> dict:
    """One study's runtime row: its students, its wall time, the predictors' and
    the training stages' seconds, and the students' training work in flops
    (:func:`~probe_lab.study.stage.training_flops` of each student stage;
    ``benchmarks/bench_predictors.py`` turns it into a floor for a run)."""
    stages = result.stages
    students = [s for s in stages if s["stage"].startswith("students")]
    return dict(
        task=task,
        rows=rows,
        **times,
        students=len(result.table),
        training_s=sum(s["seconds"] for s in stages),
        students_s=sum(s["seconds"] for s in students),
        student_flops=sum(training_flops(s) for s in students),
    )


def conditions(tables: pd.DataFrame, frames: pd.DataFrame) -> pd.DataFrame:
    """One row per condition (task, rows, supervisor, student): PGR from the
    seeds' mean accuracies, mean gain and the predictors' means over seeds."""
    keys = ["task", "rows", "supervisor", "student"]
    xent = tables[tables.loss == "xent"]
    acc = xent.groupby(keys, sort=False)[
        ["weak_acc", "student_acc", "ceiling_acc", "gain", "target_acc"]
    ].mean()
    acc["kind"] = xent.groupby(keys, sort=False).kind.first()
    acc["pgr"] = metrics.pgr(acc.weak_acc, acc.student_acc, acc.ceiling_acc, warn=False)
    gap = (acc.ceiling_acc - acc.weak_acc >= metrics.SMALL_GAP) & (
        acc.weak_acc >= 0.5 + metrics.SMALL_GAP
    )
    acc.loc[~gap, "pgr"] = math.nan  # no gap to recover: PGR is not defined
    values = frames.drop(columns="seed").groupby(keys, sort=False).mean()
    return acc.join(values).reset_index()


def run(ctx: Context) -> Analysis:
    """Every (task, size) study; predictors scored; figures and table written."""
    settings = ctx.config.settings
    studies: dict[str, StudyResult] = {}
    tables, frames, rungs, runtime = [], [], [], []
    for task, cache in _task_caches(ctx).items():
        bow = None
        if settings.bow:
            bow = str(bow_cache(cache, ctx.cache_dir, progress=ctx.progress))
        ladder, records = _ladder(ctx, task)
        rungs += records
        sups = supervisors(settings, bow=bow, rules=_rules(task, cache), ladder=ladder)
        for size in settings.sizes:
            config = dataclasses.replace(
                ctx.config.study_config(cache, sups), max_rows=size
            )
            result, frame, times = _study(ctx, config)
            rows = result.fingerprints["rows"]
            label = f"{task}, {rows} rows"
            if label in studies:  # a size beyond the cache: the whole cache, once
                continue
            ctx.log(f"{label}: {len(result.table)} students")
            studies[label] = result
            runtime.append(_runtime(result, task, rows, times))
            tables.append(result.table.assign(task=task, rows=rows))
            frames.append(frame.assign(task=task, rows=rows))
    frame = conditions(pd.concat(tables), pd.concat(frames))
    frame.to_csv(ctx.out / "conditions.csv", index=False)
    if rungs:
        pd.DataFrame(rungs).to_csv(ctx.out / "ladder_rungs.csv", index=False)
    pd.DataFrame(runtime).to_csv(ctx.out / "runtime.csv", index=False)
    group = "task" if frame.task.nunique() > 1 else "rows"
    names = list(settings.predictors)
    table = score(frame, names, group)
    table.to_csv(ctx.out / "predictor_table.csv", index=False)
    (ctx.out / "predictor_table.md").write_text(_markdown(table, group))
    sweep = crossovers(frame, settings.structures)
    sweep.to_csv(ctx.out / "crossovers.csv", index=False)
    figures = [ctx.save(plot_crossover(sweep, title=ctx.title))]
    for name in [*names, "combined"]:
        fig = plot_predictor(frame, name, title=ctx.title)
        figures.append(plots.save(fig, ctx.out / "figures" / f"{name}.png"))
    return Analysis(studies, check(table, sweep, group), figures)


def score(frame: pd.DataFrame, names: list[str], group: str) -> pd.DataFrame:
    """The summary table (an empty one when there is one group only), and the
    held-out combined score of every condition (column ``combined``)."""
    if frame[group].nunique() < 2:
        frame["combined"] = math.nan
        return pd.DataFrame(columns=["target", "predictor", "spearman"])
    _, frame["combined"] = pred.held_out(
        frame[np.isfinite(frame.pgr)], names, "pgr", group
    )
    table = pred.evaluate(frame, names, group=group)
    table["reads_truth"] = [
        pred.get_predictor(n).reads_truth if n in names else "via its inputs"
        for n in table.predictor
    ]
    return table


def _markdown(table: pd.DataFrame, group: str) -> str:
    group = "task" if group == "task" else "size"
    lines = [
        f"Out-of-sample Spearman correlation (leave one {group} out; mean over "
        f"held-out {group}s, 95% bootstrap interval over {group}s). direction: the "
        "sign the predictor's correlation takes (learned on the training "
        f"{group}s for each held-out one). conditions: those where the predictor "
        "is defined and the target finite (NaN, e.g. CKA of a synthetic "
        "supervisor: left out of its correlations; the combined model counts it "
        "at its median rank).",
        "",
        "| target | predictor | reads truth | direction | Spearman | 95% interval "
        f"| {group}s | conditions |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in table.itertuples():
        lines.append(
            f"| {r.target} | {r.predictor} | {r.reads_truth} "
            f"| {fmt(r.direction, 0, signed=True)} | {fmt(r.spearman, 2)} "
            f"| [{fmt(r.low, 2)}, {fmt(r.high, 2)}] | {r.tasks} | {r.conditions} |"
        )
    return "\n".join(lines) + "\n"


def crossovers(frame: pd.DataFrame, structures: tuple[str, ...]) -> pd.DataFrame:
    """The measured crossover of every synthetic (task, structure, accuracy, k):
    the labelled rows where the mean gain over seeds turns positive
    (log-interpolated between sizes; ``censored`` says when it is at or below
    the smallest size, ``below``, or past the largest, ``above``); and the
    theory's ``k / (1 - 2 rho)^2`` with rho = 1 - accuracy."""
    rows = []
    synthetic = frame[frame.supervisor.str.split("@").str[0].isin(structures)]
    keys = ["task", "supervisor", "student"]
    for (task, sup, k), g in synthetic.groupby(keys, sort=False):
        g = g.sort_values("labelled")
        n, gain = g.labelled.to_numpy(float), g.gain.to_numpy(float)
        acc = float(g.target_acc.mean())
        positive = np.flatnonzero(gain > 0)
        censored, nstar = "", math.nan
        if positive.size == 0:
            censored, nstar = "above", n[-1]
        elif positive[0] == 0:
            censored, nstar = "below", n[0]
        else:
            i = positive[0]
            t = -gain[i - 1] / (gain[i] - gain[i - 1])
            nstar = float(np.exp(np.log(n[i - 1]) + t * np.log(n[i] / n[i - 1])))
        rows.append(
            dict(
                task=task,
                structure=sup.split("@")[0],
                accuracy=acc,
                student=k,
                theory_x=float(pred.crossover(k, 1 - acc)),
                measured=nstar,
                censored=censored,
            )
        )
    out = pd.DataFrame(rows)
    if len(out):
        exact = out[(out.censored == "") & (out.structure == structures[0])]
        ratio = exact.measured / exact.theory_x
        out["c"] = float(np.median(ratio)) if len(exact) else math.nan
    return out


def check(table: pd.DataFrame, sweep: pd.DataFrame, group: str) -> list[Finding]:
    """The conjecture (simulatability predicts PGR, negatively) and the theory's
    crossover (measured against predicted)."""
    findings = []
    row = table[(table.target == "pgr") & (table.predictor == "simulatability")]
    if len(row):
        r = row.iloc[0]
        findings.append(
            Finding(
                claim="The simulatability index ranks PGR out of sample, with more "
                "simulatable weak errors giving lower PGR (direction -1, interval "
                "above 0).",
                measured=f"direction {fmt(r.direction, 0, signed=True)}, held-out "
                f"Spearman {fmt(r.spearman, 2)} [{fmt(r.low, 2)}, {fmt(r.high, 2)}] "
                f"over {r.tasks} held-out {'tasks' if group == 'task' else 'sizes'}",
                held=judged(r.direction < 0 and r.low > 0, r.low, r.direction),
            )
        )
    best = table[table.target == "pgr"].sort_values("spearman", ascending=False)
    if len(best):
        findings.append(
            Finding(
                claim="(Not a claim) predictors ranked by held-out Spearman with PGR.",
                measured="; ".join(
                    f"{r.predictor} {fmt(r.spearman, 2)}" for r in best.itertuples()
                ),
                held=None,
            )
        )
    exact = sweep[sweep.censored == ""] if len(sweep) else sweep
    if len(exact) >= 3:
        rho = pred.spearman(exact.theory_x, exact.measured)
        findings.append(
            Finding(
                claim="The measured crossover n* grows with k / (1 - 2 rho)^2 (the "
                "symmetric-flip theory), over the cells where it lies inside the "
                "sizes run.",
                measured=f"Spearman {fmt(rho, 2)} over {len(exact)} cells "
                f"({len(sweep) - len(exact)} censored); c = {fmt(sweep.c.iloc[0], 1)}",
                held=judged(rho > 0.5, rho),
            )
        )
    return findings


def plot_predictor(frame: pd.DataFrame, name: str, *, title: str = "") -> Figure:
    """Predictor value (``combined``: its held-out score) against measured PGR,
    one colour per task, one marker per student width."""
    tasks = list(dict.fromkeys(frame.task))
    palette = plots.colors(max(len(tasks), 2), "tab10")
    with plots.style():
        fig = Figure(figsize=(7.5, 5.5), layout="constrained")
        ax = fig.subplots()
        markers = dict(zip(sorted(set(frame.student)), "osD^vP*X", strict=False))
        for color, task in zip(palette, tasks, strict=False):
            part = frame[frame.task == task]
            for k, sub in part.groupby("student"):
                ax.scatter(
                    sub[name],
                    sub.pgr,
                    color=color,
                    marker=markers.get(k, "o"),
                    alpha=0.75,
                    label=f"{task}, k={k}",
                )
        ax.axhline(0, color="0.5", lw=0.8)
        ax.set_xlabel(name + (" (held-out score)" if name == "combined" else ""))
        ax.set_ylabel("measured PGR (mean over seeds)")
        if frame[name].notna().sum() == 0:
            ax.text(0.5, 0.5, "n/a for these conditions", transform=ax.transAxes)
        ax.legend(loc="best", fontsize=8, ncol=2)
        fig.suptitle((title or "predictors") + f"\n{name} against PGR")
    return fig


def plot_crossover(sweep: pd.DataFrame, *, title: str = "") -> Figure:
    """Measured crossover n* against k / (1 - 2 rho)^2 (log-log), with the
    theory's line ``n* = c k / (1 - 2 rho)^2`` (c fit on random flips);
    triangles mark censored cells (n* at or below the smallest, or past the
    largest, size run)."""
    with plots.style():
        fig = Figure(figsize=(7.5, 5.5), layout="constrained")
        ax = fig.subplots()
        structures = list(dict.fromkeys(sweep.structure)) if len(sweep) else []
        for color, s in zip(
            plots.colors(max(len(structures), 2), "tab10"), structures, strict=False
        ):
            part = sweep[sweep.structure == s]
            for censored, marker in (("", "o"), ("below", "v"), ("above", "^")):
                cells = part[part.censored == censored]
                ax.scatter(
                    cells.theory_x,
                    cells.measured,
                    color=color,
                    marker=marker,
                    label=f"{s}" + (f" (n* {censored})" if censored else ""),
                )
        if len(sweep) and np.isfinite(sweep.c.iloc[0]):
            x = np.geomspace(sweep.theory_x.min(), sweep.theory_x.max(), 50)
            ax.plot(
                x,
                sweep.c.iloc[0] * x,
                "k--",
                label=f"theory, c = {sweep.c.iloc[0]:.2g}",
            )
        else:
            ax.text(0.5, 0.5, "no crossover inside the sizes", transform=ax.transAxes)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("k / (1 - 2 rho)^2")
        ax.set_ylabel("measured crossover n* (labelled rows)")
        ax.legend(loc="best", fontsize=8)
        fig.suptitle((title or "predictors") + "\nnoise-rate sweep: crossover")
    return fig


@dataclasses.dataclass(frozen=True, kw_only=True)
class Settings:
    """The ``[experiment]`` keys of ``predictors``."""

    tasks: tuple[str, ...] = ()
    """Built-in tasks (``["all"]``: every one), one cache each; a run given
    ``--cache`` runs on that cache alone (held out by size instead of task)."""

    sizes: tuple[int, ...] = (600, 800, 1000)
    """Rows per study (``max_rows``), one study per task and size."""

    accuracies: tuple[float, ...] = (0.6, 0.7, 0.8, 0.9, 0.95)
    """Accuracies of the synthetic supervisors."""

    structures: tuple[str, ...] = ("random", "longest")
    """Synthetic flip structures (random first: the theory's crossover is fit on
    it)."""

    weak_k: int = 8
    """The M_k probe supervisor (first k principal components of the strong
    model)."""

    bow: bool = True
    """Add a bag-of-words probe supervisor (a cache built from the task's texts)."""

    ladder: tuple[str, ...] = ()
    """Model-ladder rungs (``probe-lab models``) whose best-layer probe is a
    natural supervisor of the strong model (``[cache]``'s): per task, the rung's
    cache of the same rows (``[cache]`` with the model replaced) and the layer
    where its 2-fold ground-truth probe is most accurate; named by the rung.
    Skipped with ``--cache`` (no cache of those rows to build from)."""

    ladder_build: tuple[str, ...] = ("minilm-l3",)
    """The ``ladder`` rungs whose missing caches are extracted (MiniLM-L3: about
    a minute per 1,000-row task on 2 cores); every other rung supervises only on
    the tasks whose cache is already complete in the cache folder (a skip is
    logged and listed in ``ladder_rungs.csv``)."""

    predictors: tuple[str, ...] = tuple(pred.PREDICTORS.names())
    """Predictor names or import paths ``"module:function"``."""


def _check_settings(values) -> None:
    for name in values["predictors"]:
        try:
            pred.get_predictor(name)
        except ValueError as err:
            raise ValueError(f"[experiment] predictors: {err}") from None
    if list(values["sizes"]) != sorted(set(values["sizes"])):
        raise ValueError("[experiment] sizes must increase")
    for acc in values["accuracies"]:
        if not 0.5 < acc <= 1:
            raise ValueError(f"[experiment] accuracies must lie in (0.5, 1], got {acc}")
    for key in ("ladder", "ladder_build"):
        rungs = list(values[key])
        if sorted(set(rungs) - set(LADDER)) or len(set(rungs)) != len(rungs):
            raise ValueError(
                f"[experiment] {key} must name distinct rungs of the model ladder "
                f"({', '.join(LADDER)}; `probe-lab models` lists them); got {rungs}"
            )
    if values["tasks"] and list(values["tasks"]) != ["all"]:
        unknown = sorted(set(values["tasks"]) - set(TASKS))
        if unknown:
            raise ValueError(f"[experiment] tasks {unknown} are not built-in tasks")


KIND = register_kind(
    name="predictors",
    claim=CLAIM,
    run=run,
    settings=Settings,
    ranges={"weak_k": (1, math.inf), "sizes": (50, math.inf)},
    check=_check_settings,
    supervisor_sets=lambda config: [
        supervisors(
            config.settings,
            bow="<bow>.h5",
            rules=("rule",),
            ladder={r: (f"<{r}>.h5", 0) for r in config.settings.ladder},
        )
    ],
)
"""The experiment kind."""
