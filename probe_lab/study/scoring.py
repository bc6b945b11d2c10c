"""Scoring students: one builder of the four evaluation sets, the per-epoch curves
and the table rows (accuracies, agreements, per-row metrics, early-stopping
sensitivity, and the misfit theorem's squared-loss quantities).

The four sets (:func:`eval_sets`): test accuracy, agreement with the supervisor's
hard labels on test, and that agreement on the test rows where the supervisor is
wrong and where it is right. The trainer scores them every epoch
(:func:`training_eval_sets`); :func:`curves` reads them back, or scores the kept
parameters once when no per-epoch record was kept.
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pandas as pd

from probe_lab import metrics
from probe_lab.study.data import StudyData
from probe_lab.study.stage import StageProbe, Trained

__all__ = ["curves", "eval_sets", "score_students", "training_eval_sets"]


def eval_sets(
    probes: list[StageProbe], data: StudyData
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The four evaluation sets of students: name -> ``(rows, labels)``, each
    ``(P, n)``: ``test`` (rows and ground truth), ``agreement`` (test rows, the
    supervisor's hard labels), ``agreement_weak_wrong`` / ``_right`` (the test rows
    where those labels are wrong / right)."""
    test = data.splits["test"][[p.seed for p in probes]]
    ref = np.stack([p.reference for p in probes]).astype(bool)
    wrong = ref != data.truth.astype(bool)
    return {
        "test": (test, np.stack([data.truth] * len(probes))),
        "agreement": (test, ref),
        "agreement_weak_wrong": (test & wrong, ref),
        "agreement_weak_right": (test & ~wrong, ref),
    }


def training_eval_sets(
    probes: list[StageProbe], data: StudyData, *, dynamics: bool = True
) -> dict[str, Any]:
    """:func:`eval_sets` as the trainer scores them every epoch: all four with
    ``dynamics``, else the test accuracy alone (one product over the test rows per
    epoch, for ``student_acc_final`` and ``student_acc_best_test``)."""
    sets = eval_sets(probes, data)
    if not dynamics:
        return {"test": sets["test"]}
    test = sets["test"][0]
    for name in ("agreement_weak_wrong", "agreement_weak_right"):
        # A supervisor with no wrong (or no right) test labels leaves that
        # agreement undefined: score it on all test rows here and report NaN.
        rows, labels = sets[name]
        sets[name] = (np.where(rows.any(axis=1)[:, None], rows, test), labels)
    return sets


def _curve_name(name: str) -> str:
    return "test_acc" if name == "test" else name


def curves(stage: Trained, data: StudyData) -> dict[str, np.ndarray]:
    """Per-epoch ``(E, P)`` test accuracy and agreements of a student stage.

    A set without a per-epoch record (the agreements with ``dynamics=False``) is
    scored once with the kept parameters, at their best epoch; its other epochs
    are NaN.
    """
    probes, hist = stage.probes, stage.trained.history
    n_probes, epochs = len(probes), hist["val_agreement"].shape[0]
    best = np.asarray(stage.trained.best_epoch, np.int64) - 1
    scored = eval_sets(probes, data)
    pred = metrics.positive(stage.proba)
    out = {}
    for name, (rows, labels) in scored.items():
        if f"{name}_acc" in hist:
            out[_curve_name(name)] = np.array(hist[f"{name}_acc"], np.float64)
            continue
        hits = ((pred == labels.astype(bool)) & rows).sum(axis=1)
        curve = np.full((epochs, n_probes), np.nan)
        curve[best, np.arange(n_probes)] = hits / np.maximum(rows.sum(axis=1), 1)
        out[_curve_name(name)] = curve
    for name in ("agreement_weak_wrong", "agreement_weak_right"):
        out[name][:, ~scored[name][0].any(axis=1)] = np.nan
    return out


FIT_BLOCK = 64
"""Probes per block in :func:`_fit_columns`."""


def _fit_columns(stage: Trained, labelled: np.ndarray) -> pd.DataFrame:
    """Method parameters, kept rows, and the student's misfit to its weak labels.

    ``misfit`` is the share of labelled rows where the student's prediction
    disagrees with the supervisor's hard label, ``misfit_xent`` the mean
    cross-entropy of the student's probabilities against the supervisor's labels
    (Charikar et al. 2024: for convex students the gain over the supervisor is at
    least this misfit); both at the kept epoch. ``kept`` is the mean row weight a
    label method left on the labelled rows (1 without one).
    """
    probes = stage.probes
    count = np.maximum(labelled.sum(axis=1), 1)
    wrong, xent, kept = (np.zeros(len(probes)) for _ in range(3))
    # Blocks of probes keep the temporaries in cache; per probe the sums run over
    # the same entries in the same order as on the whole array.
    for start in range(0, len(probes), FIT_BLOCK):
        at = slice(start, start + FIT_BLOCK)
        part, rows, proba = probes[at], labelled[at], stage.proba[at]
        ref = np.stack([p.reference for p in part]).astype(bool)
        wrong[at] = ((metrics.positive(proba) != ref) & rows).sum(axis=1)
        # The cross-entropy on the labelled entries alone, summed per probe.
        probe, row = np.nonzero(rows)
        p1 = np.clip(proba[probe, row].astype(np.float64), 1e-7, 1 - 1e-7)
        weak = np.stack([p.weak for p in part])[probe, row].astype(np.float64)
        entries = -(weak * np.log(p1) + (1 - weak) * np.log1p(-p1))
        xent[at] = np.bincount(probe, entries, minlength=len(part))
        for i, p in enumerate(part):
            weight = 1.0 if p.weight is None else np.asarray(p.weight, np.float64)
            kept[start + i] = (weight * rows[i]).sum()
    out = dict(misfit=wrong / count, misfit_xent=xent / count, kept=kept / count)
    names = sorted({k for p in probes if p.condition for k in p.condition.params})
    for name in names:
        out[f"param_{name}"] = [
            p.condition.params.get(name, np.nan) if p.condition else np.nan
            for p in probes
        ]
    return pd.DataFrame(out)


def _test_columns(
    stage: Trained, data: StudyData, test: np.ndarray, test_curve: np.ndarray
) -> pd.DataFrame:
    """Per-row metrics of the kept students on each seed's test rows, and the
    early-stopping sensitivity of their test accuracy.

    ``n_test``: test rows of the seed; ``correction`` / ``corruption``: share of
    the test rows the supervisor's hard labels got wrong that the student gets
    right / got right that the student gets wrong; ``auroc`` and ``ece`` (10
    equal-width bins of P(label 1)) of the student's probabilities against the
    truth (:func:`probe_lab.metrics.row_metrics`). ``student_acc_final``: test
    accuracy at the last epoch (no early stopping); ``student_acc_best_test``: the
    best test accuracy over epochs, an UPPER BOUND (it picks the epoch on the test
    rows themselves), never an estimate.
    """
    ref = np.stack([p.reference for p in stage.probes]).astype(bool)
    out = dict(n_test=test.sum(axis=1))
    out |= metrics.row_metrics(stage.proba, ref, data.truth, test)
    out["student_acc_final"] = test_curve[-1]
    scored = ~np.isnan(test_curve).all(axis=0)  # a failed probe has no epoch
    best = np.where(np.isnan(test_curve), -np.inf, test_curve).max(axis=0)
    out["student_acc_best_test"] = np.where(scored, best, np.nan)
    return pd.DataFrame(out)


def _theorem_columns(
    stage: Trained,
    entries: list[Mapping[str, Any]],
    ceiling: Mapping[tuple[int, int], tuple[float, np.ndarray]],
    data: StudyData,
    rows: tuple[np.ndarray, np.ndarray],
) -> pd.DataFrame:
    """The misfit theorem in its own quantities (:mod:`probe_lab.theory`).

    ``weak_probs`` says what ``w`` is: the supervisor's soft probabilities
    (``soft``) where it has them, else its hard labels (``hard``); ``y`` is the
    ceiling probe's probabilities on the same k features (the realizable target,
    up to its sigmoid). The projection student is the least-squares fit of ``w``
    on the student's k features and a constant over the labelled rows (closed form,
    float64; the imitation column, if any, is not part of it): ``sq_gain_*``,
    ``sq_misfit_*`` and ``sq_slack_* = gain - misfit`` on those rows (``_fit``,
    where the theorem is an identity) and on the test rows (``_test``). The trained
    student's own squared-loss ``student_sq_gain_test`` and
    ``student_sq_misfit_test`` use its kept probabilities as ``s``.
    """
    from probe_lab import theory

    probes, (fit_rows, test_rows) = stage.probes, rows
    given = [e.get("proba") for e in entries]
    soft = np.array([g is not None for g in given])
    weak_proba = np.stack(
        [p.reference if g is None else g for p, g in zip(probes, given, strict=True)]
    ).astype(np.float64)
    ceiling_proba = np.stack([ceiling[(p.k, p.seed)][1] for p in probes])
    ks = np.array([p.k for p in probes])
    cols = {
        name: np.full(ks.size, np.nan)
        for name in (
            "sq_gain_fit sq_misfit_fit sq_slack_fit sq_gain_test sq_misfit_test "
            "sq_slack_test"
        ).split()
    }
    for k in np.unique(ks):
        at = np.flatnonzero(ks == k)
        check = theory.misfit_theorem(
            data.features[:, :k],
            weak_proba[at],
            ceiling_proba[at],
            fit_rows=fit_rows[at],
            test_rows=test_rows[at],
        )
        for name in cols:
            cols[name][at] = getattr(check, name.removeprefix("sq_"))
    student = stage.proba.astype(np.float64)
    return pd.DataFrame(
        dict(
            weak_probs=np.where(soft, "soft", "hard"),
            **cols,
            student_sq_gain_test=theory.squared_gain(
                student, weak_proba, ceiling_proba, test_rows
            ),
            student_sq_misfit_test=theory.squared_misfit(
                student, weak_proba, test_rows
            ),
        )
    )


def score_students(
    stage: Trained,
    weak: Mapping[tuple[str, int], Mapping[str, Any]],
    kinds: Mapping[str, str],
    ceiling: Mapping[tuple[int, int], tuple[float, np.ndarray]],
    data: StudyData,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The students' table rows (at their best epochs) and their curves.

    ``weak[(name, seed)]``: ``weak_acc``, optional ``target_acc`` and ``proba``
    (the supervisor's soft probabilities, None for hard labels only);
    ``ceiling[(k, seed)]``: the ceiling's test accuracy and its probabilities.
    """
    probes, hist = stage.probes, stage.trained.history
    n_probes, epochs = len(probes), hist["val_agreement"].shape[0]
    seeds = np.array([p.seed for p in probes])
    best = np.asarray(stage.trained.best_epoch, np.int64) - 1
    ref = np.stack([p.reference for p in probes]).astype(bool)
    labelled = (data.splits["student_train"] | data.splits["student_val"])[seeds]
    test = data.splits["test"][seeds]
    curves_ = curves(stage, data)
    at_best = {
        name: curve[best, np.arange(n_probes)] for name, curve in curves_.items()
    }
    names = [p.name for p in probes]
    ks = np.array([p.k for p in probes])
    losses = [p.label for p in probes]
    entries = [weak[(p.name, p.seed)] for p in probes]
    table = pd.DataFrame(
        dict(
            supervisor=names,
            kind=[kinds[name] for name in names],
            student=ks,
            loss=losses,
            seed=seeds,
            weak_acc=[e["weak_acc"] for e in entries],
            weak_label_acc=metrics.accuracy(ref, data.truth.astype(bool), labelled),
            target_acc=[e.get("target_acc", np.nan) for e in entries],
            student_acc=at_best["test_acc"],
            ceiling_acc=[ceiling[(p.k, p.seed)][0] for p in probes],
            agreement=at_best["agreement"],
            agreement_weak_wrong=at_best["agreement_weak_wrong"],
            agreement_weak_right=at_best["agreement_weak_right"],
            best_epoch=best + 1,
        )
    )
    table.insert(
        4, "method", [p.condition.method if p.condition else p.loss for p in probes]
    )
    # The theorem's columns and the others are independent NumPy work: side by
    # side on two threads (NumPy lets go of the GIL in its array loops), the
    # columns take about the time of the theorem's alone.
    with ThreadPoolExecutor(max_workers=1) as side:
        others = side.submit(
            lambda: (
                _fit_columns(stage, labelled),
                _test_columns(stage, data, test, curves_["test_acc"]),
            )
        )
        theorem = _theorem_columns(stage, entries, ceiling, data, (labelled, test))
        table = pd.concat([table, *others.result(), theorem], axis=1)
    nan = np.full((epochs, n_probes), np.nan)

    def per_row(curve: np.ndarray) -> np.ndarray:  # (E, P) -> probe-major rows
        return np.asarray(curve).T.reshape(-1)

    dynamics = pd.DataFrame(
        dict(
            supervisor=np.repeat(names, epochs),
            student=np.repeat(ks, epochs),
            loss=np.repeat(losses, epochs),
            seed=np.repeat(seeds, epochs),
            epoch=np.tile(np.arange(1, epochs + 1), n_probes),
            train_loss=per_row(hist.get("train_loss", nan)),
            val_agreement=per_row(hist["val_agreement"]),
            **{name: per_row(curve) for name, curve in curves_.items()},
        )
    )
    return table, dynamics
