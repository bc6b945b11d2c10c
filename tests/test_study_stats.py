"""The study's statistics columns, each checked against an independent reference:
per-row metrics, early-stopping sensitivity, the misfit theorem's squared-loss
quantities (scikit-learn's least squares), matched accuracy and the summary's
warnings."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import write_synthetic_cache

from probe_lab import TrainConfig
from probe_lab.study import (
    StudyConfig,
    Supervisor,
    make_labels,
    train_ground_truth,
    train_students,
    weak_probes,
)
from probe_lab.study.data import load_study_data

SHORT = TrainConfig(epochs=6, lr=1e-2, batch_size=64)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(write_synthetic_cache(tmp_path_factory.mktemp("c") / "p.h5", n=1500))


def stages(cache, *, dynamics=True, supervisors=None, students=(4, None), **kwargs):
    """The study's first three stages run by hand, so the test sees the weak
    labels and ceilings the table was computed from."""
    config = StudyConfig(
        cache=cache,
        layer=2,
        seeds=2,
        students=students,
        supervisors=supervisors
        or (Supervisor(kind="probe", k=3), Supervisor(kind="random")),
        dynamics=dynamics,
        train=SHORT,
        **kwargs,
    )
    data = load_study_data(config, weak_probes(config).values(), [])
    truth = train_ground_truth(config, data, log=lambda *_: None)
    labels = make_labels(config, data, truth)
    scored = train_students(config, data, truth, labels, log=lambda *_: None)
    return data, truth, labels, scored


@pytest.fixture(scope="module")
def run(cache):
    return stages(cache)


def test_row_metrics_split_the_gain_and_n_test_counts_the_test_rows(run):
    data, _, _, scored = run
    table = scored.table
    np.testing.assert_array_equal(
        table.n_test, data.splits["test"][table.seed].sum(axis=1)
    )
    # correction and corruption are on the test rows of the supervisor's hard
    # labels, so they split the probe supervisor's test-accuracy gain exactly.
    probe = table[table.kind == "probe"]
    w = probe.weak_acc
    np.testing.assert_allclose(
        probe.student_acc - w,
        probe.correction * (1 - w) - probe.corruption * w,
        atol=1e-6,  # the recorded accuracies are float32
    )
    assert table.auroc.between(0.5, 1).all()
    assert table.ece.between(0, 1).all()


def test_final_and_best_test_epochs_read_the_per_epoch_record(cache, run):
    _, _, _, scored = run
    table, dyn = scored.table, scored.dynamics
    keys = ["supervisor", "student", "loss", "seed"]
    per_probe = dyn.groupby(keys, sort=False).test_acc
    np.testing.assert_allclose(table.student_acc_final, per_probe.last().to_numpy())
    np.testing.assert_allclose(table.student_acc_best_test, per_probe.max().to_numpy())
    assert (table.student_acc_best_test >= table.student_acc - 1e-9).all()
    assert (table.student_acc_best_test >= table.student_acc_final - 1e-9).all()
    # Without dynamics the test accuracy is still recorded every epoch (alone).
    off = stages(cache, dynamics=False)[3]
    columns = ["student_acc", "student_acc_final", "student_acc_best_test"]
    np.testing.assert_allclose(off.table[columns], table[columns], atol=2 / 300)
    assert off.dynamics.test_acc.notna().all()
    assert off.dynamics.agreement.isna().sum() > 0


def test_theorem_columns_match_a_scikit_learn_projection(run):
    from sklearn.linear_model import LinearRegression

    data, truth, labels, scored = run
    table = scored.table
    assert set(table[table.kind == "probe"].weak_probs) == {"soft"}
    assert set(table[table.kind == "random"].weak_probs) == {"hard"}
    for i in (0, len(table) - 1):
        row = table.iloc[i]
        entry = labels[(row.supervisor, row.seed)]
        w = entry.hard if entry.proba is None else entry.proba
        w = np.asarray(w, np.float64)
        y = truth.proba[(f"ceiling_{row.student}", row.seed)].astype(np.float64)
        sp = data.splits
        fit = sp["student_train"][row.seed] | sp["student_val"][row.seed]
        test = sp["test"][row.seed]
        x = data.features[:, : row.student].astype(np.float64)
        s = LinearRegression().fit(x[fit], w[fit]).predict(x)
        for name, rows in (("fit", fit), ("test", test)):
            gain = np.mean((y - w)[rows] ** 2) - np.mean((y - s)[rows] ** 2)
            misfit = np.mean((s - w)[rows] ** 2)
            assert row[f"sq_gain_{name}"] == pytest.approx(gain, abs=1e-9)
            assert row[f"sq_misfit_{name}"] == pytest.approx(misfit, abs=1e-9)
            assert row[f"sq_slack_{name}"] == pytest.approx(gain - misfit, abs=1e-9)
    # In-sample, the slack of a least-squares projection is 2 <y - s, s - w>,
    # which is small when the ceiling is close to the features' span.
    assert (table.sq_slack_fit.abs() <= table.sq_misfit_fit + 0.05).all()
    assert table.student_sq_misfit_test.between(0, 1).all()


def test_a_matched_random_structure_has_the_probes_accuracy_on_the_same_rows(run):
    """The matching rule: on the test rows (``weak_acc``, every kind) and on the
    labelled rows (``weak_label_acc``) alike, to within one row."""
    data, _, _, scored = run
    table = scored.table.drop_duplicates(["supervisor", "seed"]).set_index(
        ["supervisor", "seed"]
    )
    for seed in range(2):
        probe, rnd = table.loc[("M_3", seed)], table.loc[("random", seed)]
        n_labelled = (data.splits["student_train"] | data.splits["student_val"])[
            seed
        ].sum()
        assert abs(rnd.weak_acc - probe.weak_acc) <= 1 / probe.n_test + 1e-9
        assert abs(rnd.weak_label_acc - probe.weak_label_acc) <= 1 / n_labelled + 1e-9
        assert rnd.target_acc == pytest.approx(probe.weak_acc)


def test_strong_to_strong_supervisor_tells_a_data_gap_from_a_capacity_gap(cache):
    """``Supervisor(kind="probe", name="strong@weak-split")``: the full-width probe
    on the strong features trained on the weak split. Its labels carry no
    capacity gap, only the other split's noise: it sits near the ceiling."""
    sups = (
        Supervisor(kind="probe", k=2),
        Supervisor(kind="probe", name="strong@weak-split"),
    )
    _, _, _, scored = stages(cache, supervisors=sups, students=(None,))
    table = scored.table[scored.table.loss == "xent"]
    strong = table[table.supervisor == "strong@weak-split"]
    weak = table[table.supervisor == "M_2"]
    assert strong.weak_acc.mean() > weak.weak_acc.mean() + 0.1
    assert abs(strong.weak_acc.mean() - strong.ceiling_acc.mean()) < 0.04


def test_the_summary_warns_about_supervisors_near_chance_or_the_ceiling():
    import pandas as pd

    from probe_lab.study import StudyResult

    rows = []
    for sup, weak in (("fine", 0.70), ("chance", 0.505), ("at_ceiling", 0.899)):
        for seed, jitter in enumerate((-0.01, 0.0, 0.01)):
            rows.append(
                dict(
                    supervisor=sup,
                    kind="probe",
                    student=8,
                    loss="xent",
                    seed=seed,
                    weak_acc=weak + jitter,
                    student_acc=0.8,
                    ceiling_acc=0.9 + jitter,
                    n_test=400,
                    agreement=0.9,
                    agreement_weak_wrong=0.5,
                    agreement_weak_right=0.9,
                )
            )
    result = StudyResult(
        table=pd.DataFrame(rows),
        dynamics=pd.DataFrame(),
        config=None,
        fingerprints={},
        stages=[],
    )
    lines = result.cell_warnings()
    assert len(lines) == 2
    assert "chance" in lines[0] and "within noise of chance" in lines[0]
    assert "at_ceiling" in lines[1] and "gap within noise" in lines[1]
    one_seed = StudyResult(
        table=pd.DataFrame(rows[:1]),
        dynamics=pd.DataFrame(),
        config=None,
        fingerprints={},
        stages=[],
    )
    assert one_seed.cell_warnings() == []


def test_misfit_fit_reports_the_squared_loss_test_and_refuses_old_tables(run):
    import pandas as pd

    from probe_lab.study import StudyResult

    table = run[3].table

    def result(frame):
        return StudyResult(
            table=frame,
            dynamics=pd.DataFrame(),
            config=None,
            fingerprints={},
            stages=[],
        )

    fit = result(table).misfit_fit()
    means = table.groupby(["supervisor", "student"]).mean(numeric_only=True)
    assert fit["n"] == len(means)
    share = (means.sq_gain_test >= means.sq_misfit_test).mean()
    assert fit["share_above"] == pytest.approx(share)
    assert fit["mean_slack_test"] == pytest.approx(means.sq_slack_test.mean())
    with pytest.raises(ValueError, match="older probe-lab; re-run the study"):
        result(table.drop(columns=["sq_gain_test"])).misfit_fit()
