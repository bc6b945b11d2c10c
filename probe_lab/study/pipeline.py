"""Weak-to-strong studies on cached features, after Burns et al. (2023), App. E.

A study trains, for every seed:

1. **ground-truth probes** (:func:`train_ground_truth`, one compiled call per
   feature source): strong ceilings, one per student feature set, on the student
   split; the probes every supervisor kind asks for (a weak model, the M_k that
   mixtures and bootstrapping start from on the weak split; the strong rankings'
   fold probes on the student split);
2. **weak labels** (:func:`make_labels`) for the student split and the test split,
   one function per supervisor kind (:mod:`probe_lab.supervisors`): a weak probe's
   predictions, a synthetic error structure at a matched accuracy, or a label made
   visible as an extra feature;
3. **students** (:func:`train_students`, one call): every supervisor x student
   feature set x loss x seed, trained on the weak labels with early stopping on
   agreement with them;
4. **bootstrapping** (:func:`train_bootstrap`, one call per step): a chain of
   students of growing k, each trained on the previous one's labels (Section
   4.3.1).

Each stage takes data and returns new data (nothing is changed in place);
:func:`run_study` chains them. The pipeline asks each supervisor's kind what it
needs and how it labels; it never branches on a kind's name.

Choices where the paper is silent, stated here and in the README:

* Splits follow Appendix E.1's proportions (:mod:`probe_lab.study.data`).
* The k-feature family M_k uses the first k principal components (``basis="pca"``,
  fit without labels on the seed-0 training rows), so that k orders strength; raw
  residual-stream coordinates (``basis="raw"``) carry no such order.
* Synthetic labellers label the student split and the test split separately, each
  at the reference's accuracy on those same rows (to the row), so agreement can be
  measured on test and every kind's ``weak_acc`` is its test accuracy: a matched
  structure's equals its reference probe's to within one test row.
* The ``strong_*`` structures rank rows by out-of-fold strong ceilings of the
  largest student k (:mod:`probe_lab.supervisors.strong`).
* The loss grid runs in one call: each probe's loss method is data of the compiled
  trainer (:mod:`probe_lab.losses`), so every method shares one program.
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np
import pandas as pd

from probe_lab import metrics
from probe_lab.errors import StudyError
from probe_lab.label_methods import LabelMethodError, get_label_method
from probe_lab.losses import get_loss
from probe_lab.study.config import StudyConfig
from probe_lab.study.data import StudyData, load_study_data
from probe_lab.study.result import StudyResult
from probe_lab.study.scoring import score_students, training_eval_sets
from probe_lab.study.stage import StageProbe, Trained, train_stage
from probe_lab.supervisors import (
    LabelContext,
    SeedAsk,
    WeakLabels,
    WeakProbe,
    call_label,
)

__all__ = [
    "GroundTruth",
    "Scored",
    "make_labels",
    "mark_failed",
    "run_study",
    "train_bootstrap",
    "train_ground_truth",
    "train_students",
    "weak_probes",
]


@dataclasses.dataclass(frozen=True)
class GroundTruth:
    """Stage 1: ground-truth probes of every seed."""

    proba: dict[tuple[str, int], np.ndarray]  # (name, seed) -> (n,) P(label 1)
    ceiling_acc: dict[tuple[int, int], float]  # (k, seed) -> test accuracy
    records: tuple[dict[str, Any], ...]

    @property
    def ceilings(self) -> dict[tuple[int, int], tuple[float, np.ndarray]]:
        """``(k, seed) -> (test accuracy, probabilities)`` of the ceilings."""
        return {
            (k, s): (acc, self.proba[(f"ceiling_{k}", s)])
            for (k, s), acc in self.ceiling_acc.items()
        }

    def of_seed(self, seed: int) -> dict[str, np.ndarray]:
        """The probabilities of one seed's probes, by probe name."""
        return {name: p for (name, s), p in self.proba.items() if s == seed}


@dataclasses.dataclass(frozen=True)
class Scored:
    """Students of a stage, scored: one table row per probe, dynamics per epoch."""

    table: pd.DataFrame
    dynamics: pd.DataFrame
    records: tuple[dict[str, Any], ...]


def _source_name(source: tuple[str | None, int | None]) -> str:
    cache, layer = source
    if source == (None, None):
        return ""
    parts = ([Path(cache).name] if cache else []) + (
        [f"layer {layer}"] if layer is not None else []
    )
    return f" ({', '.join(parts)})"


def weak_probes(config: StudyConfig) -> dict[str, WeakProbe]:
    """Every ground-truth probe the supervisors (and the bootstrap chain) need."""
    out: dict[str, WeakProbe] = {}
    for sup in config.supervisors:
        for probe in sup.kind_spec.probes(sup):
            out.setdefault(probe.name, probe)
    if config.bootstrap:
        out.setdefault(
            f"M_{config.bootstrap[0]}",
            WeakProbe(f"M_{config.bootstrap[0]}", config.bootstrap[0]),
        )
    return out


def train_ground_truth(
    config: StudyConfig, data: StudyData, *, log: Callable[..., None] = print
) -> GroundTruth:
    """Stage 1: ceilings (and the probes kinds ask of each seed, such as the
    strong rankings' fold probes) on the student split, and weak probes on the
    weak split, one compiled call per feature source."""
    d = data.features.shape[1]
    seeds = range(config.seeds)
    sp = data.splits
    ceiling_ks = sorted({d if k is None else k for k in config.students})
    ceiling_ks = sorted(set(ceiling_ks) | set(config.bootstrap[1:]))
    by_source: dict[tuple, list[StageProbe]] = {}
    for seed in seeds:
        for k in ceiling_ks:
            by_source.setdefault((None, None), []).append(
                StageProbe(
                    seed=seed,
                    k=k,
                    targets=data.truth,
                    train=sp["student_train"][seed],
                    val=sp["student_val"][seed],
                    name=f"ceiling_{k}",
                )
            )
        by_source[(None, None)] += _seed_probes(config, data, seed, max(ceiling_ks))
        for probe in weak_probes(config).values():
            width = data.sources[probe.source].shape[1]
            by_source.setdefault(probe.source, []).append(
                StageProbe(
                    seed=seed,
                    k=width if probe.k is None else probe.k,
                    targets=data.truth,
                    train=sp["weak_train"][seed],
                    val=sp["weak_val"][seed],
                    name=probe.name,
                    group=seed + config.seeds * probe.copy,
                )
            )
    proba: dict[tuple[str, int], np.ndarray] = {}
    records: list[dict[str, Any]] = []
    for source, probes in by_source.items():
        stage = train_stage(
            "ground truth" + _source_name(source),
            data.sources[source],
            probes,
            config,
            data,
            basis=data.bases[source],
            log=log,
        )
        records.append(stage.record)
        _refuse_failed_ground_truth(stage, "ground truth" + _source_name(source))
        for p, row in zip(probes, stage.proba, strict=True):
            proba[(p.name, p.seed)] = row
    ceiling_acc = {
        (k, s): float(
            metrics.accuracy(proba[(f"ceiling_{k}", s)], data.truth, sp["test"][s])
        )
        for k in ceiling_ks
        for s in seeds
    }
    return GroundTruth(proba, ceiling_acc, tuple(records))


def _seed_probes(
    config: StudyConfig, data: StudyData, seed: int, k: int
) -> list[StageProbe]:
    """The probes supervisor kinds ask of one seed on the student split (the
    strong rankings' fold probes): in the ceilings' rows and minibatch order, so
    they train in the ceilings' piece."""
    ask = SeedAsk(seed=seed, k=k, study=config, data=data)
    asked: dict[str, WeakProbe] = {}
    for sup in config.supervisors:
        for probe in sup.kind_spec.seed_probes(sup, ask):
            asked.setdefault(probe.name, probe)
    sp = data.splits
    return [
        StageProbe(
            seed=seed,
            k=probe.k,
            targets=data.truth,
            train=sp["student_train"][seed],
            val=sp["student_val"][seed],
            name=probe.name,
            weight=probe.weight,
        )
        for probe in asked.values()
    ]


def make_labels(
    config: StudyConfig, data: StudyData, truth: GroundTruth
) -> dict[tuple[str, int], WeakLabels]:
    """Stage 2: every supervisor's weak labels for every seed, one function per
    kind (imitation-like kinds after the others, whose labels they read)."""
    order = sorted(  # those reading others' labels (a match) after them
        config.supervisors,
        key=lambda s: (
            s.kind_spec.after_others,
            bool(getattr(s.settings, "match", "")),
        ),
    )
    labels: dict[tuple[str, int], WeakLabels] = {}
    sp = data.splits
    for seed in range(config.seeds):
        proba = truth.of_seed(seed)
        made: dict[str, WeakLabels] = {}
        for sup in order:
            ctx = LabelContext(
                seed=seed,
                truth=data.truth,
                labelled=sp["student_train"][seed] | sp["student_val"][seed],
                test=sp["test"][seed],
                proba=proba,
                reference=config.reference_name,
                made=made,
                rng=np.random.default_rng([seed, zlib.crc32(sup.label.encode())]),
                data=data,
                study=config,
            )
            made[sup.label] = call_label(sup, ctx)
            labels[(sup.label, seed)] = made[sup.label]
    return labels


def train_students(
    config: StudyConfig,
    data: StudyData,
    truth: GroundTruth,
    labels: Mapping[tuple[str, int], WeakLabels],
    *,
    log: Callable[..., None] = print,
) -> Scored:
    """Stage 3: every supervisor x student k x condition x seed, in one call
    (label methods run first, once per condition and supervisor)."""
    d = data.features.shape[1]
    sp = data.splits
    students = [
        StageProbe(
            seed=seed,
            k=d if k is None else k,
            targets=labels[(sup.label, seed)].targets,
            train=sp["student_train"][seed],
            val=sp["student_val"][seed],
            name=sup.label,
            loss=cond.loss,
            condition=cond,
            imitation=labels[(sup.label, seed)].imitation,
            reference=labels[(sup.label, seed)].hard,
            weak=labels[(sup.label, seed)].targets,
        )
        for sup in config.supervisors
        for k in config.students
        for cond in config.conditions
        for seed in range(config.seeds)
    ]
    students = relabel(students, data)
    stage = train_stage(
        "students",
        data.features,
        students,
        config,
        data,
        gain=config.feature_scale,
        eval_sets=training_eval_sets(students, data, dynamics=config.dynamics),
        log=log,
    )
    weak = {
        key: dict(weak_acc=e.weak_acc, target_acc=e.target_acc, proba=e.proba)
        for key, e in labels.items()
    }
    kinds = {s.label: s.kind for s in config.supervisors}
    table, dynamics = score_students(stage, weak, kinds, truth.ceilings, data)
    table = mark_failed(table, stage, "students", log)
    return Scored(table, dynamics, (stage.record,))


FAILED_NUMBERS = (
    "student_acc",
    "agreement",
    "agreement_weak_wrong",
    "agreement_weak_right",
    "misfit",
    "misfit_xent",
    "student_acc_final",
    "student_acc_best_test",
    "correction",
    "corruption",
    "auroc",
    "ece",
    "student_sq_gain_test",
    "student_sq_misfit_test",
)
"""The table's numbers of a student that a failed probe never reports (NaN);
``pgr`` and ``gain``, computed from ``student_acc``, follow."""
FAILED_NOTE = "failed: trained to NaN or inf"
"""The ``pgr_note`` of a failed probe's row."""


def mark_failed(
    table: pd.DataFrame,
    stage: Trained,
    name: str,
    log: Callable[..., None] = print,
    *,
    failed_epoch: np.ndarray | None = None,
) -> pd.DataFrame:
    """A students' table with a ``failed_epoch`` column (the first epoch whose
    loss, gradient or weights went NaN or inf; -1 when finite; default the
    stage's) and the failed rows' numbers NaN, and one printed line per failed
    (supervisor, student, condition) naming the method, the parameters it trained
    with, the seeds and the epochs."""
    probes = stage.probes
    if failed_epoch is None:
        failed_epoch = stage.failed_epoch
    failed_epoch = np.asarray(failed_epoch, np.int64)
    table = table.assign(failed_epoch=failed_epoch)
    bad = failed_epoch >= 0
    table.loc[bad, [c for c in FAILED_NUMBERS if c in table]] = np.nan
    groups: dict[tuple[str, int, str], list[int]] = {}
    for i in np.flatnonzero(bad):
        p = probes[i]
        groups.setdefault((p.name, p.k, p.label), []).append(i)
    for (sup, k, label), index in groups.items():
        cond = probes[index[0]].condition
        method = cond.method if cond else label
        params = _trained_params(stage, index[0])
        seeds = ", ".join(f"{probes[i].seed} (epoch {failed_epoch[i]})" for i in index)
        log(
            f"[study] FAILED {name}: method {method!r} "
            f"({'parameters ' + params if params else 'no parameters'}; condition "
            f"{label!r}), supervisor {sup!r}, student k={k}: seeds {seeds} trained "
            f"to NaN or inf; their accuracies, PGR and agreement are NaN and "
            f"summaries leave them out"
        )
    return table


def _trained_params(stage: Trained, i: int) -> str:
    """``gamma=2.0, ...``: the parameters probe ``i`` trained with (its loss
    method's, and its label method's)."""
    p = stage.probes[i]
    declared = dict(get_loss(p.loss).params)
    values = {
        n: np.broadcast_to(v, len(stage.probes))[i]
        for n, v in stage.trained.config.loss_params
        if n in declared
    }
    if p.condition is not None and p.condition.relabel:
        values |= p.condition.relabel_params
    return ", ".join(f"{n}={float(v):g}" for n, v in values.items())


def _refuse_failed_ground_truth(stage: Trained, name: str) -> None:
    """A ground-truth, weak or ceiling probe that trained to NaN or inf leaves
    every number built on it undefined: refuse, naming them."""
    bad = np.flatnonzero(stage.failed_epoch >= 0)
    if bad.size:
        shown = ", ".join(
            f"{stage.probes[i].name} (seed {stage.probes[i].seed}, k="
            f"{stage.probes[i].k}, epoch {stage.failed_epoch[i]})"
            for i in bad[:8]
        )
        more = f" and {bad.size - 8} more" if bad.size > 8 else ""
        raise StudyError(
            f"{name}: {bad.size} probe(s) trained on the ground truth went NaN or "
            f"inf: {shown}{more}. Every weak label and ceiling is built on them; "
            "lower [study.train] lr, or check the features for huge values "
            "(probe-lab info --validate)"
        )


def relabel(probes: list[StageProbe], data: StudyData) -> list[StageProbe]:
    """Run each condition's label method on its probes, one call per (condition,
    supervisor); the probes with the new targets and row weights (new objects:
    nothing is changed in place)."""
    groups: dict[tuple[str, str], list[int]] = {}
    for i, p in enumerate(probes):
        if p.condition is not None and p.condition.relabel:
            groups.setdefault((p.condition.label, p.name), []).append(i)
    out = list(probes)
    for (label, sup), index in groups.items():
        members = [probes[i] for i in index]
        cond = members[0].condition
        method = get_label_method(cond.relabel)
        params = {
            name: np.full(len(members), cond.relabel_params.get(name, default))
            for name, default in method.params
        }
        rows = np.stack([p.train | p.val for p in members])
        key = jax.random.key(zlib.crc32(f"{label}|{sup}".encode()))
        try:
            targets, weights = method(
                data.features,
                np.stack([p.targets for p in members]).astype(np.float32),
                rows,
                key,
                params,
            )
        except LabelMethodError as err:
            raise StudyError(
                f"students of supervisor {sup!r}, {label}: {err}"
            ) from None
        for i, target, weight in zip(index, targets, weights, strict=True):
            out[i] = dataclasses.replace(probes[i], targets=target, weight=weight)
    return out


def train_bootstrap(
    config: StudyConfig,
    data: StudyData,
    truth: GroundTruth,
    *,
    log: Callable[..., None] = print,
) -> Scored:
    """Stage 4: a chain k0 < k1 < ...: M_k0's labels supervise k1, whose labels
    supervise k2, ... (one call per step, every loss and seed at once)."""
    chain, seeds, sp = config.bootstrap, range(config.seeds), data.splits
    first = f"M_{chain[0]}"
    conds = [c for c in config.conditions if c.relabel is None]
    prev = {
        (c.label, s): metrics.positive(truth.proba[(first, s)]).astype(np.int8)
        for c in conds
        for s in seeds
    }
    weak_acc = {
        s: float(metrics.accuracy(truth.proba[(first, s)], data.truth, sp["test"][s]))
        for s in seeds
    }
    tables, dynamics, records = [], [], []
    failed = {key: -1 for key in prev}  # a failed link fails the rest of its chain
    for step, k in enumerate(chain[1:], start=1):
        name = "bootstrap:" + ">".join(str(c) for c in chain[:step])
        probes = [
            StageProbe(
                seed=s,
                k=k,
                targets=prev[(c.label, s)],
                train=sp["student_train"][s],
                val=sp["student_val"][s],
                name=name,
                loss=c.loss,
                condition=c,
                reference=prev[(c.label, s)],
                weak=prev[(c.label, s)],
            )
            for c in conds
            for s in seeds
        ]
        stage = train_stage(
            f"bootstrap {step}",
            data.features,
            probes,
            config,
            data,
            eval_sets=training_eval_sets(probes, data, dynamics=config.dynamics),
            log=log,
        )
        # each condition's chain has its own labels: the theorem's w is the hard
        # labels the step trained on (StageProbe.reference)
        weak = {(name, s): dict(weak_acc=weak_acc[s]) for s in seeds}
        table, dyn = score_students(
            stage, weak, {name: "bootstrap"}, truth.ceilings, data
        )
        epochs = np.array([failed[(p.label, p.seed)] for p in probes])
        epochs = np.where(epochs >= 0, epochs, stage.failed_epoch)
        failed = {
            (p.label, p.seed): int(e) for p, e in zip(probes, epochs, strict=True)
        }
        table = mark_failed(table, stage, f"bootstrap {step}", log, failed_epoch=epochs)
        tables.append(table)
        dynamics.append(dyn)
        records.append(stage.record)
        prev = {
            (p.label, p.seed): metrics.positive(row).astype(np.int8)
            for p, row in zip(probes, stage.proba, strict=True)
        }
    return Scored(
        pd.concat(tables, ignore_index=True),
        pd.concat(dynamics, ignore_index=True),
        tuple(records),
    )


def run_study(config: StudyConfig, *, progress: bool = True) -> StudyResult:
    """Run a weak-to-strong study: ceilings and weak probes, weak labels, students
    and bootstrap chains, each stage one compiled ``train_probes`` call.

    Args:
        config: the study.
        progress: print a line per stage.

    Returns:
        A :class:`StudyResult` with the per-run table and per-epoch dynamics.
    """
    log = print if progress else (lambda *_a, **_k: None)
    probes = weak_probes(config)
    data = load_study_data(config, probes.values(), config.other_caches)
    _check_widths(config, data, probes.values())
    for sup in config.supervisors:
        sup.kind_spec.prepare(sup, data)
    truth = train_ground_truth(config, data, log=log)
    labels = make_labels(config, data, truth)
    parts = [train_students(config, data, truth, labels, log=log)]
    if config.bootstrap:
        parts.append(train_bootstrap(config, data, truth, log=log))
    table = pd.concat([p.table for p in parts], ignore_index=True)
    table["pgr"] = metrics.pgr(
        table.weak_acc, table.student_acc, table.ceiling_acc, warn=False
    )
    table["pgr_note"] = metrics.pgr_reason(table.weak_acc, table.ceiling_acc)
    table.loc[table.failed_epoch >= 0, "pgr_note"] = FAILED_NOTE
    table["gain"] = table.student_acc - table.weak_acc
    return StudyResult(
        table=table,
        dynamics=pd.concat([p.dynamics for p in parts], ignore_index=True),
        config=config,
        fingerprints=data.fingerprints,
        stages=[*truth.records, *(r for p in parts for r in p.records)],
    )


def _check_widths(
    config: StudyConfig, data: StudyData, probes: Iterable[WeakProbe]
) -> None:
    d = data.features.shape[1]
    too_wide = [k for k in (*config.students, *config.bootstrap) if k and k > d]
    too_wide += [p.k for p in probes if p.k and p.k > data.sources[p.source].shape[1]]
    if too_wide:
        raise StudyError(
            f"k = {max(too_wide)} exceeds the {d} features of the study's layer "
            f"in {config.cache}"
        )
