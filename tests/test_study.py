"""Weak-to-strong studies on planted caches where the truth is known."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from conftest import write_synthetic_cache

from activation_cache import CacheError
from probe_lab import TrainConfig, metrics
from probe_lab.study import (
    StudyConfig,
    StudyError,
    StudyResult,
    Supervisor,
    run_study,
)

QUICK = TrainConfig(epochs=25, lr=1e-2, batch_size=64)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(write_synthetic_cache(tmp_path_factory.mktemp("c") / "p.h5", n=2000))


def study(cache, **kwargs):
    args = dict(cache=cache, layer=2, seeds=3, train=QUICK)
    args.update(kwargs)
    return run_study(StudyConfig(**args), progress=False)


def mean_of(table, supervisor, column, **where):
    rows = table[table.supervisor == supervisor]
    for key, value in where.items():
        rows = rows[rows[key] == value]
    assert len(rows), (supervisor, where)
    return rows[column].mean()


def test_simulatable_errors_give_more_agreement_and_less_pgr_than_random(cache):
    result = study(
        cache,
        supervisors=(Supervisor(kind="probe", k=3), Supervisor(kind="random")),
        students=(16,),
    )
    table = result.table
    # Matched accuracy: the random labeller hits M_3's label accuracy to the row.
    sim = table[table.supervisor == "M_3"]
    rnd = table[table.supervisor == "random"]
    np.testing.assert_allclose(
        rnd.weak_label_acc.to_numpy(), sim.weak_label_acc.to_numpy(), atol=1e-3
    )
    assert mean_of(table, "M_3", "agreement") > mean_of(table, "random", "agreement")
    assert mean_of(table, "M_3", "pgr") < mean_of(table, "random", "pgr")
    # The strong student beats its simulatable supervisor but keeps its errors.
    assert mean_of(table, "M_3", "agreement_weak_wrong") > mean_of(
        table, "random", "agreement_weak_wrong"
    )


def test_trivial_imitation_is_imitated_and_the_confidence_loss_resists(cache):
    # Unsimulatable weak labels (random errors at M_3's accuracy) made visible as a
    # feature: cross-entropy copies the column, the confidence loss keeps the
    # student's own (better) beliefs. Paper protocol learning rate.
    result = study(
        cache,
        supervisors=(
            Supervisor(kind="probe", k=3),
            Supervisor(kind="random"),
            Supervisor(kind="imitation", base="random", scale=1.0),
        ),
        students=(16,),
        losses=("xent", "confidence"),
        seeds=2,
        train=TrainConfig(epochs=100, batch_size=64, alpha_max=0.75),
    )
    table = result.table
    xent_agree = mean_of(table, "imitation", "agreement", loss="xent")
    xent_pgr = mean_of(table, "imitation", "pgr", loss="xent")
    conf_pgr = mean_of(table, "imitation", "pgr", loss="confidence")
    assert xent_agree > 0.95
    assert abs(xent_pgr) < 0.15
    assert conf_pgr > xent_pgr + 0.3
    # Without the visible label the same weak labels are not imitated.
    assert mean_of(table, "random", "agreement", loss="xent") < 0.9


def test_table_dynamics_and_stages_are_complete(cache, tmp_path):
    sups = (
        Supervisor(kind="probe", k=3),
        Supervisor(kind="longest"),
        Supervisor(kind="strong_unconfident"),
        Supervisor(kind="mixture", k=3, level=0.5),
        Supervisor(kind="probe", layer=1, name="layer1"),
    )
    result = study(
        cache,
        supervisors=sups,
        students=(4, None),
        losses=("xent", "confidence"),
        seeds=2,
        bootstrap=(2, 4, 8),
        train=TrainConfig(epochs=4, batch_size=64),
    )
    table = result.table
    assert len(table) == 5 * 2 * 2 * 2 + 2 * 2 * 2  # students + bootstrap steps
    for column in (
        "supervisor student loss seed weak_acc student_acc ceiling_acc pgr "
        "agreement agreement_weak_wrong agreement_weak_right best_epoch"
    ).split():
        assert column in table.columns
    assert set(table.student) == {4, 8, 16}
    np.testing.assert_allclose(
        table.pgr,
        metrics.pgr(table.weak_acc, table.student_acc, table.ceiling_acc, warn=False),
    )
    makers = table[table.kind.isin(["longest", "strong_unconfident", "mixture"])]
    # Matched on the test rows: weak_acc is the test target to the row.
    np.testing.assert_allclose(
        makers.weak_acc, makers.target_acc, atol=1 / makers.n_test.min() + 1e-9
    )
    assert len(result.dynamics) == len(table) * 4
    stage_names = [s["stage"] for s in result.stages]
    assert stage_names == [
        "ground truth",
        "ground truth (layer 1)",
        "students",
        "bootstrap 1",
        "bootstrap 2",
    ]
    out = result.save(tmp_path / "out")
    saved = json.loads((out / "config.json").read_text())
    assert StudyConfig.from_dict(saved) == result.config
    assert (out / "summary.csv").exists()
    assert json.loads((out / "fingerprints.json").read_text())["rows"] == 2000


def test_column_supervisor_reads_weak_labels_from_a_cache_field(tmp_path):
    def hint(labels):
        flipped = labels.copy()
        flipped[::4] = 1 - flipped[::4]  # 75% accurate hints
        return {"hint": np.where(flipped == 1, "true", "false").tolist()}

    path = write_synthetic_cache(tmp_path / "h.h5", n=1600, extra=hint)
    result = study(
        str(path),
        supervisors=(Supervisor(kind="column", field="hint"),),
        students=(16,),
        seeds=1,
        train=TrainConfig(epochs=3, batch_size=64),
    )
    row = result.table.iloc[0]
    assert row.supervisor == "column:hint"
    assert abs(row.weak_label_acc - 0.75) < 0.03
    assert abs(row.weak_acc - 0.75) < 0.05
    with pytest.raises(StudyError, match="has no extra field 'nope'"):
        study(str(path), supervisors=(Supervisor(kind="column", field="nope"),))


def test_dynamics_off_scores_the_same_students(cache):
    common = dict(
        supervisors=(Supervisor(kind="probe", k=3), Supervisor(kind="shortest")),
        students=(4, 16),
        losses=("xent", "confidence"),
        seeds=2,
        train=TrainConfig(epochs=5, batch_size=64),
    )
    on = study(cache, **common).table
    off_result = study(cache, dynamics=False, **common)
    off = off_result.table
    columns = ["student_acc", "agreement", "agreement_weak_wrong", "best_epoch"]
    n_test = 400
    np.testing.assert_allclose(off[columns], on[columns], atol=2 / n_test)
    # The test accuracy is recorded every epoch (student_acc_final and
    # student_acc_best_test need it); the agreements only at the kept epoch.
    assert off_result.dynamics.test_acc.notna().all()
    assert off_result.dynamics.agreement.isna().sum() == len(off) * 4
    assert off_result.dynamics.val_agreement.notna().all()


def test_compilations_do_not_grow_with_conditions(cache):
    small = study(
        cache,
        supervisors=(Supervisor(kind="probe", k=3),),
        students=(4,),
        seeds=1,
        train=TrainConfig(epochs=2),
    )
    large = study(
        cache,
        supervisors=(
            Supervisor(kind="probe", k=3),
            Supervisor(kind="random"),
            Supervisor(kind="shortest"),
            Supervisor(kind="strong_confident_correct"),
        ),
        students=(4, 8, 16),
        losses=("xent", "confidence"),
        seeds=3,
        train=TrainConfig(epochs=2),
    )
    small_students = next(s for s in small.stages if s["stage"] == "students")
    large_students = next(s for s in large.stages if s["stage"] == "students")
    assert large_students["probes"] == 4 * 3 * 2 * 3
    # One trainer compile per stage (plus a few small helpers), however many
    # conditions: 1 vs 72 students here.
    assert small_students["compilations"] <= 6
    assert large_students["compilations"] <= 6


def three_seeds(weak, student, ceiling) -> pd.DataFrame:
    """A study table of one condition over three seeds."""
    return pd.DataFrame(
        dict(
            supervisor=["w"] * 3,
            kind=["probe"] * 3,
            student=[8] * 3,
            loss=["xent"] * 3,
            seed=[0, 1, 2],
            weak_acc=weak,
            student_acc=student,
            ceiling_acc=ceiling,
            agreement=[0.9, 0.8, 0.7],
            agreement_weak_wrong=[0.5, 0.4, 0.3],
            agreement_weak_right=[1.0, 0.9, 0.8],
        )
    )


def test_summary_pgr_and_intervals_equal_hand_computation():
    table = three_seeds([0.60, 0.62, 0.61], [0.70, 0.74, 0.72], [0.80, 0.82, 0.81])
    result = StudyResult(
        table=table,
        dynamics=pd.DataFrame(),
        config=None,
        fingerprints={},
        stages=[],
    )
    row = result.summary().iloc[0]
    assert row.pgr == pytest.approx((0.72 - 0.61) / (0.81 - 0.61))
    assert row.agreement == pytest.approx(0.8)
    assert row.agreement_weak_wrong == pytest.approx(0.4)
    # Fieller's interval by hand: the roots in rho of the paired t-test of
    # mean(gain - rho * gap) = 0 at the 95% level with 2 degrees of freedom.
    from scipy import optimize, stats

    gain = table.student_acc - table.weak_acc
    gap = table.ceiling_acc - table.weak_acc
    t2 = stats.t.ppf(0.975, 2) ** 2

    def excess(rho: float) -> float:
        d = gain - rho * gap
        return d.mean() ** 2 - t2 * d.var(ddof=1) / 3

    bounds = [optimize.brentq(excess, a, b) for a, b in ((-5, row.pgr), (row.pgr, 5))]
    assert (row.pgr_low, row.pgr_high) == pytest.approx(bounds, abs=1e-9)
    assert row.pgr_note == ""


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(supervisors=(dict(kind="oracle"),)), "unknown supervisor kind"),
        (dict(students=(99,)), "k = 99 exceeds the 16 features"),
        (dict(supervisors=(dict(kind="random", accuracy=0.4),)), r"\(0.5, 1\]"),
        (dict(supervisors=(dict(kind="random"),)), "no probe supervisor"),
        (dict(train=TrainConfig(batch_size=4096)), "fewer than the batch size"),
        (dict(losses=("hinge",)), "losses must be"),
        (dict(bootstrap=(8, 4)), "increasing chain"),
        (dict(layer=7), "layer"),
        (
            dict(
                supervisors=(
                    dict(kind="probe", k=3),
                    dict(kind="imitation", scale=1.0),
                    dict(kind="imitation", name="loud", scale=2.0),
                )
            ),
            "share one scale",
        ),
    ],
)
def test_bad_config_gets_a_clear_error(cache, kwargs, message):
    sups = kwargs.pop("supervisors", (dict(kind="probe", k=3),))
    with pytest.raises((StudyError, ValueError, CacheError), match=message):
        config = StudyConfig(
            cache=cache,
            layer=kwargs.pop("layer", 2),
            supervisors=tuple(Supervisor(**s) for s in sups),
            seeds=1,
            train=kwargs.pop("train", TrainConfig(epochs=1)),
            **kwargs,
        )
        run_study(config, progress=False)


def test_caches_whose_ids_do_not_join_are_refused(cache, tmp_path):
    from activation_cache import store

    other = tmp_path / "other.h5"
    write_synthetic_cache(other, n=300, seed=5)
    with store._open_h5(other, "r+") as f:  # rename every id
        f["ids"][...] = np.array([f"x{i}" for i in range(300)], dtype=object)
    config = StudyConfig(
        cache=cache,
        layer=2,
        supervisors=(Supervisor(kind="probe", cache=str(other), layer=2),),
        train=TrainConfig(epochs=1),
    )
    with pytest.raises(CacheError, match="share no example ids"):
        run_study(config, progress=False)


def test_toml_config_runs_from_the_cli(cache, tmp_path):
    toml = tmp_path / "study.toml"
    toml.write_text(
        f"""
cache = "{cache}"
layer = 2
students = [4, "all"]
losses = ["xent"]
seeds = 1

[train]
epochs = 2

[[supervisors]]
kind = "probe"
k = 3

[[supervisors]]
kind = "random"
"""
    )
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "probe_lab.cli",
            "study",
            str(toml),
            "--out",
            str(tmp_path / "res"),
        ],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    assert "random" in run.stdout
    assert (tmp_path / "res" / "config.json").exists()


@pytest.mark.slow
def test_several_devices_give_the_same_table(cache, tmp_path):
    script = (
        "import sys, jax\n"
        "from probe_lab import TrainConfig\n"
        "from probe_lab.study import StudyConfig, Supervisor, run_study\n"
        f"c = StudyConfig(cache='{cache}', layer=2, seeds=2, students=(4, 16),\n"
        "    supervisors=(Supervisor(kind='probe', k=3), Supervisor(kind='random')),\n"
        "    train=TrainConfig(epochs=3, probe_chunk=8))\n"
        "r = run_study(c, progress=False)\n"
        "r.table.to_csv(sys.argv[1], index=False)\n"
        "assert len(jax.devices()) == int(sys.argv[2])\n"
    )
    tables = []
    for devices in (1, 4):
        out = tmp_path / f"t{devices}.csv"
        env = dict(os.environ)
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
        subprocess.run(
            [sys.executable, "-c", script, str(out), str(devices)], env=env, check=True
        )
        tables.append(pd.read_csv(out))
    pd.testing.assert_frame_equal(tables[0], tables[1], atol=1e-6)


def test_strong_rankings_come_from_probes_that_never_saw_the_row(cache):
    """strong_* structures rank each labelled row by a ceiling probe trained on the
    other folds, and test rows by fold probes that trained on no test row."""
    from probe_lab.study import make_labels, train_ground_truth, weak_probes
    from probe_lab.study.data import load_study_data
    from probe_lab.supervisors import strong

    config = StudyConfig(
        cache=cache,
        layer=2,
        supervisors=(
            Supervisor(kind="probe", k=3),
            Supervisor(kind="strong_unconfident"),
        ),
        seeds=2,
        strong_folds=3,
        train=TrainConfig(epochs=2, batch_size=64),
    )
    data = load_study_data(config, weak_probes(config).values(), [])
    truth = train_ground_truth(config, data, log=print)
    for seed in range(2):
        ranking = strong.ranking(3, data, truth.of_seed(seed), seed)
        labelled = data.splits["student_train"][seed] | data.splits["student_val"][seed]
        rows = np.flatnonzero(labelled)
        assert np.all(ranking.source[rows] >= 0)
        assert not ranking.folds_train[ranking.source[rows], rows].any()
        assert not ranking.folds_train[:, data.splits["test"][seed]].any()
        # Every fold probe trained on the other folds' rows.
        assert ranking.folds_train.sum(axis=0)[rows].tolist() == [2] * rows.size
    labels = make_labels(config, data, truth)
    entry = labels[("strong_unconfident", 0)]
    labelled = data.splits["student_train"][0] | data.splits["student_val"][0]
    rows = np.flatnonzero(labelled)
    flipped = np.flatnonzero((entry.hard != data.truth) & labelled)
    margin = np.abs(strong.ranking(3, data, truth.of_seed(0), 0).logits)
    assert margin[flipped].max() <= np.sort(margin[rows])[flipped.size] + 1e-9


def test_seeds_resample_the_split_and_the_summary_says_what_intervals_cover():
    from probe_lab.study.data import make_splits

    fractions = dict(test_frac=0.2, weak_frac=0.4, val_frac=0.1)
    splits = make_splits(500, 3, resplit=StudyConfig(cache="x").resplit, **fractions)
    assert not np.array_equal(splits["test"][0], splits["test"][1])
    same = make_splits(500, 3, resplit=False, **fractions)
    assert np.array_equal(same["test"][0], same["test"][2])
    table = three_seeds([0.60, 0.62, 0.80], [0.70, 0.74, 0.81], [0.80, 0.82, 0.79])
    config = StudyConfig(cache="x")
    result = StudyResult(
        table=table, dynamics=pd.DataFrame(), config=config, fingerprints={}, stages=[]
    )
    row = result.summary().iloc[0]
    assert row.interval == "95% Fieller over seeds (split and minibatch order)"
    # Seed 2 has no gap: the gap's t-interval includes 0, so PGR has no interval
    # at this precision (nothing is dropped or resampled).
    assert "pgr_dropped" not in result.summary()
    assert np.isnan(row.pgr_low) and np.isnan(row.pgr_high)
    assert "PGR undefined at this precision" in row.pgr_note


@pytest.mark.parametrize(
    ("supervisors", "message"),
    [
        ([dict(kind="imitation")], "no base and the study has no probe supervisor"),
        (
            [dict(kind="probe", k=3), dict(kind="imitation", base="nobody")],
            "not a supervisor name",
        ),
        ([dict(kind="imitation", name="me", base="me")], "cannot imitate itself"),
        (
            [
                dict(kind="probe", k=3),
                dict(kind="imitation", name="a"),
                dict(kind="imitation", name="b", base="a"),
            ],
            "is itself an imitation",
        ),
        ([dict(kind="random")], "no probe supervisor"),
        ([dict(kind="mixture", level=0.5, accuracy=0.8)], "needs k"),
        ([dict(kind="column")], "needs field"),
        ([dict(kind="probe", k=3), dict(kind="probe", k=3)], "must be unique"),
        ([dict(kind="ensemble", params={"members": [{"k": 2}]})], "one member"),
        ([dict(kind="probe", k=0)], "k must be >= 1"),
    ],
)
def test_invalid_supervisor_combinations_are_refused_when_configured(
    supervisors, message
):
    """Every invalid combination fails when the study is made, before any file is
    read or anything trains (the cache here does not even exist)."""
    with pytest.raises(StudyError, match=message):
        StudyConfig(
            cache="missing.h5",
            supervisors=tuple(Supervisor(**s) for s in supervisors),
        )


def test_reference_must_be_a_probe_supervisor():
    with pytest.raises(StudyError, match="is not a probe supervisor"):
        StudyConfig(
            cache="missing.h5",
            supervisors=(Supervisor(kind="probe", k=3), Supervisor(kind="random")),
            reference="random",
        )


def test_random_flips_match_a_named_supervisors_accuracy(tmp_path):
    """A natural supervisor (a rule stored in a cache field) next to random flips
    at exactly its accuracy."""
    rng = np.random.default_rng(0)
    truth_flips = rng.random(1200) < 0.25

    def rule(labels):
        return np.where(truth_flips, 1 - labels, labels).astype(str)

    path = write_synthetic_cache(
        tmp_path / "r.h5", n=1200, extra=lambda labels: {"rule": rule(labels)}
    )
    result = study(
        str(path),
        supervisors=(
            Supervisor(kind="column", field="rule", name="rule"),
            Supervisor(kind="random", match="rule"),
        ),
        students=(8,),
        seeds=2,
        train=TrainConfig(epochs=2, batch_size=64),
    )
    table = result.table
    for seed in range(2):
        rows = table[table.seed == seed].set_index("supervisor")
        assert rows.weak_label_acc["random"] == pytest.approx(
            rows.weak_label_acc["rule"], abs=1e-3
        )
        # ... and on the test rows, where weak_acc is measured for every kind.
        assert rows.weak_acc["random"] == pytest.approx(
            rows.weak_acc["rule"], abs=1 / rows.n_test["rule"] + 1e-9
        )
    with pytest.raises(StudyError, match="match 'nobody' is not a supervisor"):
        StudyConfig(
            cache="x.h5", supervisors=(Supervisor(kind="random", match="nobody"),)
        )


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Supervisor(kind="probe", k=8.5), r"probe\.k must be an integer"),
        (
            lambda: Supervisor(kind="random", level=0.5),
            r"\['level'\] for kind 'random'",
        ),
        (
            lambda: Supervisor(kind="probe", soft=1),
            r"probe\.soft must be true or false",
        ),
        (
            lambda: StudyConfig(cache="x.h5", seeds=2.0),
            r"^seeds must be an integer, got 2\.0 \(float\)",
        ),
        (
            lambda: StudyConfig(cache="x.h5", losses="xent"),
            r"^losses must be a list of strings, got 'xent'",
        ),
    ],
)
def test_python_values_get_the_loaders_type_checks(make, message):
    with pytest.raises(StudyError, match=message):
        make()


def test_a_study_table_and_a_misplaced_top_level_key_are_refused(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text('seeds = 2\n[study]\ncache = "c.h5"\n')
    with pytest.raises(StudyError, match=r"\['seeds'\] sit outside the \[study\]"):
        StudyConfig.from_toml(path)


def test_toml_keys_read_into_typed_settings_and_paths_resolve(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(
        'cache = "c.h5"\n'
        '[[supervisors]]\nkind = "ensemble"\nsoft = true\n'
        'params = {members = [{k = 2}, {k = 3, cache = "other.h5"}], copies = 2}\n'
        '[[supervisors]]\nkind = "column"\nfield = "rule"\ncache = "sub/r.h5"\n'
    )
    config = StudyConfig.from_toml(path)
    ensemble, column = config.supervisors
    members = ensemble.settings.params.members
    assert [m.k for m in members] == [2, 3] and ensemble.settings.params.copies == 2
    assert members[1].cache == str(tmp_path / "other.h5")
    assert column.settings.cache == str(tmp_path / "sub" / "r.h5")
    assert config.other_caches == [str(tmp_path / "other.h5"), column.settings.cache]
    assert StudyConfig.from_dict(config.to_dict()) == config
