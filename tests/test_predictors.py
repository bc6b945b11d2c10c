"""Predictors of weak-to-strong gain: each built-in against an independent
reference, the registry, and the out-of-sample analysis on a planted condition
set."""

from __future__ import annotations

import math
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest

from probe_lab import predictors as pred
from probe_lab import theory
from probe_lab.registry import RegistryError


def problem(n=600, d=12, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    truth = (x[:, 0] + 0.3 * rng.normal(size=n) > 0).astype(np.int8)
    return rng, x, truth


def inputs(x, truth, hard, k=None, **kw):
    return pred.PredictorInput(
        features=x,
        weak=hard.astype(np.float64),
        hard=hard.astype(np.int8),
        k=x.shape[1] if k is None else k,
        truth=truth,
        **kw,
    )


def reference_cka(x, y):
    """CKA in its kernel form (HSIC of n x n Gram matrices), float64."""
    n = x.shape[0]
    h = np.eye(n) - np.ones((n, n)) / n
    kx, ky = h @ (x @ x.T) @ h, h @ (y @ y.T) @ h
    return np.sum(kx * ky) / np.sqrt(np.sum(kx * kx) * np.sum(ky * ky))


def test_cka_matches_the_kernel_form_and_is_one_for_a_rotation():
    rng, x, _ = problem(n=200, d=6)
    rotation = np.linalg.qr(rng.normal(size=(6, 6)))[0]
    assert pred.linear_cka(x, 3.0 * x @ rotation) == pytest.approx(1.0, abs=1e-10)
    y = x[:, :3] + 0.5 * rng.normal(size=(200, 3))
    assert pred.linear_cka(x, y) == pytest.approx(reference_cka(x, y), rel=1e-10)
    other = rng.normal(size=(200, 6))
    assert pred.linear_cka(x, other) < 0.2  # independent features: near 0
    wide = np.c_[y, rng.normal(size=(200, 300))]  # d > n: the Gram form
    assert pred.linear_cka(x, wide) == pytest.approx(reference_cka(x, wide), rel=1e-9)


def test_simulatability_is_near_chance_for_random_flips_and_high_for_structure():
    rng, x, truth = problem(n=1000)
    flipped = rng.random(truth.size) < 0.25
    random_flips = np.where(flipped, 1 - truth, truth)
    structured = np.where(x[:, 3] > 0.7, 1 - truth, truth)  # errors on a feature
    sim = pred.get_predictor("simulatability")
    assert abs(sim(inputs(x, truth, random_flips)) - 0.5) < 0.06
    assert sim(inputs(x, truth, structured)) > 0.9
    # Errors on feature 3 are invisible to a student of the first 2 features.
    assert abs(sim(inputs(x, truth, structured, k=2)) - 0.5) < 0.08
    assert math.isnan(sim(inputs(x, truth, truth)))  # no errors to simulate


def test_projection_misfit_equals_a_loop_of_held_out_least_squares():
    rng, x, truth = problem(n=300, d=5)
    weak = np.clip(truth + 0.3 * rng.normal(size=truth.size), 0, 1)
    got = pred.get_predictor("projection_misfit")(
        pred.PredictorInput(features=x, weak=weak, hard=truth, k=3, seed=7),
        folds=3,
        ridge=0.0,
    )
    which = np.random.default_rng(7).permutation(300) % 3
    xs = (x[:, :3] - x[:, :3].mean(0)) / x[:, :3].std(0)
    design = np.c_[xs, np.ones(300)]
    held = np.empty(300)
    for f in range(3):
        coef = np.linalg.lstsq(design[which != f], weak[which != f], rcond=None)[0]
        held[which == f] = design[which == f] @ coef
    assert got == pytest.approx(np.mean((held - weak) ** 2), rel=1e-9)
    # With a ridge: each fold's fit is theory.projection_student's.
    ridged = pred.get_predictor("projection_misfit")(
        pred.PredictorInput(features=x, weak=weak, hard=truth, k=3, seed=7),
        folds=3,
        ridge=2.0,
    )
    fits = np.stack([which != f for f in range(3)])
    s = theory.projection_student(xs, np.stack([weak] * 3), fit_rows=fits, ridge=2.0)
    held = np.where(~fits, s, 0.0).sum(axis=0)
    assert ridged == pytest.approx(np.mean((held - weak) ** 2), rel=1e-9)


@pytest.mark.parametrize("d", [6, 150])  # narrow, and wider than a fold's rows
def test_weak_probe_predictions_equal_sklearns_ridge_classifier_cv(d):
    """Each fold's held-out predictions equal scikit-learn's RidgeClassifierCV
    (the same L2 grid, leave-one-out selection) fit on that fold's rows."""
    from sklearn.linear_model import RidgeClassifierCV

    rng = np.random.default_rng(3)
    x = rng.normal(size=(180, d)) * rng.uniform(0.2, 3.0, size=d)
    truth = (x[:, :3].sum(axis=1) + rng.normal(size=180) > 0).astype(np.int8)
    got = pred.weak_probe_predictions(x, truth, folds=3, seed=5)
    which = np.random.default_rng(5).permutation(180) % 3
    expected = np.empty(180, np.int64)
    chosen = set()
    for f in range(3):
        fit = which != f
        ref = RidgeClassifierCV(alphas=pred.WEAK_PROBE_L2).fit(x[fit], truth[fit])
        expected[~fit] = ref.predict(x[~fit])
        chosen.add(ref.alpha_)
    np.testing.assert_array_equal(got, expected)
    assert len(chosen & {pred.WEAK_PROBE_L2[0], pred.WEAK_PROBE_L2[-1]}) < 3


def test_weak_probe_accuracy_reads_the_weak_models_features_only():
    rng, x, truth = problem(n=600, d=12)
    spec = pred.get_predictor("weak_probe_accuracy")
    assert spec.reads_truth
    hard = truth.copy()  # the weak labels do not enter it
    # The weak model sees the truth's feature: high accuracy; noise: chance.
    informative = np.c_[x[:, :1], rng.normal(size=(600, 20))]
    noise = rng.normal(size=(600, 20))
    good = spec(inputs(x, truth, hard, weak_features=informative))
    bad = spec(inputs(x, truth, hard, weak_features=noise))
    assert good > 0.85 and abs(bad - 0.5) < 0.08
    assert good == spec(inputs(x, truth, 1 - hard, weak_features=informative))
    held = pred.weak_probe_predictions(
        (informative - informative.mean(0)) / informative.std(0),
        truth,
        folds=3,
        seed=0,
    )
    assert good == pytest.approx(np.mean(held == truth))
    # No features of its own (synthetic flips, rule fields): not applicable.
    assert math.isnan(spec(inputs(x, truth, hard)))


def test_counting_predictors_and_the_noise_theory():
    _, x, truth = problem(n=400, d=8)
    hard = truth.copy()
    ones, zeros = np.flatnonzero(truth == 1), np.flatnonzero(truth == 0)
    hard[ones[: ones.size // 5]] = 0  # rho_1 = 0.2 (up to rounding)
    hard[zeros[: zeros.size // 10]] = 1  # rho_0 = 0.1
    rho = (ones.size // 5 / ones.size + zeros.size // 10 / zeros.size) / 2
    values = pred.compute(list(pred.PREDICTORS), inputs(x, truth, hard, k=4))
    assert values["weak_accuracy"] == pytest.approx(np.mean(hard == truth))
    assert values["flip_rate"] == pytest.approx(rho)
    assert values["n_over_d"] == 50.0 and values["width"] == 4.0
    assert values["noise_theory"] == pytest.approx(400 * (1 - 2 * rho) ** 2 / 4)
    assert math.isnan(values["cka"])  # no weak features
    assert math.isnan(values["weak_probe_accuracy"])
    assert pred.crossover(8, 0.25, c=2.0) == pytest.approx(2 * 8 / 0.25)
    assert np.isinf(pred.crossover(8, 0.5))


def test_a_predictor_that_does_not_declare_truth_never_sees_it():
    seen = []

    def peek(inputs, params):
        seen.append(inputs.truth)
        return 0.0

    spec = pred.register_predictor("peek_test")(peek)
    try:
        _, x, truth = problem(n=50, d=3)
        spec(inputs(x, truth, truth))
        assert seen == [None]
    finally:
        pred.PREDICTORS.unregister("peek_test")


def test_a_users_predictor_by_import_path_and_bad_names(tmp_path, monkeypatch):
    (tmp_path / "my_predictors.py").write_text(
        textwrap.dedent(
            """
            def agreement_rate(inputs, params):
                return float((inputs.hard == inputs.truth).mean())
            agreement_rate.reads_truth = True
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = pred.get_predictor("my_predictors:agreement_rate")
    assert spec.reads_truth
    _, x, truth = problem(n=40, d=3)
    assert spec(inputs(x, truth, 1 - truth)) == 0.0
    with pytest.raises(RegistryError, match="unknown predictor 'nope'"):
        pred.get_predictor("nope")
    with pytest.raises(ValueError, match="folds must lie in"):
        pred.get_predictor("simulatability")(inputs(x, truth, truth), folds=1)
    sys.modules.pop("my_predictors", None)


def planted_conditions(seed=0, tasks=6, per_task=30):
    """Conditions whose PGR is driven by a known quantity (``planted``), with a
    task-specific offset and scale (so only within-task ranks carry over)."""
    rng = np.random.default_rng(seed)
    rows = []
    for t in range(tasks):
        offset, scale = rng.normal(), rng.uniform(0.5, 2)
        for _ in range(per_task):
            q = rng.random()
            rows.append(
                dict(
                    task=f"task{t}",
                    planted=q,
                    shuffled=rng.random(),
                    pgr=offset + scale * (0.2 - q) + 0.01 * rng.normal(),
                    gain=scale * (0.2 - q),
                )
            )
    return pd.DataFrame(rows)


def test_the_analysis_recovers_a_planted_predictor_out_of_sample():
    frame = planted_conditions()
    table = pred.evaluate(frame, ["planted", "shuffled"], resamples=500)
    row = table.set_index(["target", "predictor"])
    assert row.loc[("pgr", "planted"), "spearman"] > 0.9
    assert row.loc[("pgr", "planted"), "direction"] == -1  # PGR falls as it grows
    assert row.loc[("pgr", "planted"), "low"] > 0.9
    assert abs(row.loc[("pgr", "shuffled"), "spearman"]) < 0.2
    low, high = row.loc[("pgr", "shuffled"), ["low", "high"]]
    assert low < 0.1 and high > -0.1  # its interval does not exclude 0 by much
    assert row.loc[("pgr", "combined"), "spearman"] > 0.85  # learns the planted one
    assert row.loc[("gain", "planted"), "tasks"] == 6


def test_the_analysis_never_reads_the_held_out_tasks_targets():
    """A held-out task's scores (its combined predictions, each predictor's
    learned direction) do not change when that task's measured PGR does."""
    frame = planted_conditions(tasks=4)
    per, scores = pred.held_out(frame, ["planted", "shuffled"], "pgr")
    changed = frame.copy()
    mine = changed.task == "task0"
    changed.loc[mine, "pgr"] = -changed.loc[mine, "pgr"]
    per2, scores2 = pred.held_out(changed, ["planted", "shuffled"], "pgr")
    np.testing.assert_allclose(scores[mine], scores2[mine])
    assert per2["planted"]["task0"] == pytest.approx(-per["planted"]["task0"])
    assert per2["combined"]["task0"] == pytest.approx(-per["combined"]["task0"])
    with pytest.raises(ValueError, match="at least 2"):
        pred.evaluate(frame[frame.task == "task0"], ["planted"])


def test_the_sweep_recovers_a_planted_crossover():
    """Gain log(n / n*) with n* = 3 k / (1 - 2 rho)^2: the measured crossover is
    n* exactly (log interpolation), the fitted c is 3, and cells outside the sizes
    are marked censored."""
    from probe_lab.experiments.predictors import crossovers

    rows = []
    for acc in (0.7, 0.8, 0.9, 0.6):
        for k in (2, 4):
            nstar = float(pred.crossover(k, 1 - acc, c=3.0))
            for n in (20, 40, 80, 160, 320):
                rows.append(
                    dict(
                        task="t",
                        supervisor=f"random@{acc:.2f}",
                        student=k,
                        labelled=n,
                        gain=np.log(n / nstar),
                        target_acc=acc,
                    )
                )
    sweep = crossovers(pd.DataFrame(rows), ("random",))
    exact = sweep[sweep.censored == ""]
    assert len(exact) >= 4
    theory = 3.0 * exact.theory_x
    np.testing.assert_allclose(exact.measured, theory, rtol=1e-9)
    assert sweep.c.iloc[0] == pytest.approx(3.0)
    # accuracy 0.6, k = 4: n* = 300 lies inside; accuracy 0.6 k = 2 -> 150.
    # accuracy 0.9, k = 2: n* = 9.4, below the smallest size.
    below = sweep[(sweep.accuracy == 0.9) & (sweep.student == 2)]
    assert below.censored.item() == "below"


LADDER_TOML = """
[experiment]
name = "ladder_predictors"
figure = "predictors"
kind = "predictors"
tasks = ["sentiment", "cities"]
sizes = [240]
accuracies = [0.7]
structures = ["random"]
weak_k = 2
bow = false
ladder = ["minilm-l3", "mpnet"]
ladder_build = []

[cache]
model = "minilm"
size = 240

[study]
students = [2, "all"]
losses = ["xent"]
seeds = 2
dynamics = false

[study.train]
epochs = 5
batch_size = 64
"""


@pytest.mark.slow
def test_a_ladder_rung_supervises_with_its_own_features(tmp_path):
    """``ladder``: a rung's cache of the same rows (found under its model_ladder
    name in the cache folder) at the layer choose_layer picks is a natural
    supervisor whose CKA and linear-probe quality are computed; a rung without a
    cache (and not in ``ladder_build``) is skipped and listed."""
    import dataclasses

    from cache_fixtures import write_cache_file

    from probe_lab.experiments import load_experiment, run_experiment

    toml = tmp_path / "ladder.toml"
    toml.write_text(LADDER_TOML)
    spec = load_experiment(toml).cache
    folder = tmp_path / "caches"
    folder.mkdir()
    n, d = 240, 8
    labels = (np.arange(n) % 2).astype(np.int8)
    signed = (2.0 * labels - 1.0)[:, None]
    for t, task in enumerate(["sentiment", "cities"]):
        ids = [f"{task}-{i:04d}" for i in range(n)]
        for j, (model, signal) in enumerate((("minilm", 2.0), ("minilm-l3", 1.0))):
            rng = np.random.default_rng(10 * t + j)
            noise = rng.normal(size=(n, d))
            direction = rng.normal(size=d) / np.sqrt(d)
            features = {
                0: noise.astype(np.float32),  # layer 0: no signal
                1: (noise + signal * signed * direction).astype(np.float32),
            }
            name = dataclasses.replace(spec, model=model, task=task).filename()
            write_cache_file(folder / name, ids, features, labels=labels)
    result = run_experiment(
        toml, out=tmp_path / "out", cache_dir=folder, progress=False
    )
    rungs = pd.read_csv(result.out / "ladder_rungs.csv")
    used = rungs[rungs.rung == "minilm-l3"]
    assert list(used.layer) == [1, 1] and (used.ceiling > 0.65).all()
    assert rungs[rungs.rung == "mpnet"].skipped.str.startswith("no mpnet-").all()
    frame = pd.read_csv(result.out / "conditions.csv")
    assert set(frame.supervisor) == {"random@0.70", "M_2", "minilm-l3"}
    natural = frame[frame.supervisor.isin(["M_2", "minilm-l3"])]
    assert natural[["cka", "weak_probe_accuracy"]].notna().all().all()
    synthetic = frame[frame.supervisor == "random@0.70"]
    assert synthetic[["cka", "weak_probe_accuracy"]].isna().all().all()
    rung = frame[frame.supervisor == "minilm-l3"].set_index("task")
    ceiling = used.set_index("task").ceiling
    assert (abs(rung.weak_probe_accuracy.groupby("task").mean() - ceiling) < 0.12).all()
    # The two models' features share one direction of 8: CKA well below 1.
    assert (rung.cka < 0.5).all()
