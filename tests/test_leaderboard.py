"""The leaderboard: the cell rule, pooled PGR with Fieller intervals, Holm-corrected
paired verdicts against xent, the minimum detectable effect, ranks."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from probe_lab import metrics
from probe_lab.experiments import methods
from probe_lab.leaderboard import NEAR_CHANCE, NO_REAL_GAP, rank_methods


def planted(seeds: int = 5, weak_of=None, ceiling_of=None) -> pd.DataFrame:
    """Two tasks x two supervisors; 'better' gains 0.05 accuracy over xent in
    every cell, 'same' matches xent up to noise; task b's second supervisor has
    no gap (ceiling = weak + 0.01)."""
    weak_of = weak_of or {}
    ceiling_of = ceiling_of or {("b", "s2"): 0.71}
    rng = np.random.default_rng(0)
    rows = []
    for task, sup, seed in itertools.product("ab", ("s1", "s2"), range(seeds)):
        weak = weak_of.get((task, sup), 0.70) + 0.005 * rng.normal()
        ceiling = ceiling_of.get((task, sup), 0.90) + 0.005 * rng.normal()
        base = weak + 0.4 * (ceiling - weak) + 0.01 * rng.normal()
        for loss, shift in (("xent", 0.0), ("better", 0.05), ("same", 0.0)):
            noise = 0.002 * rng.normal() if loss == "same" else 0.0
            student = base + shift + noise
            rows.append(
                dict(
                    task=task,
                    supervisor=sup,
                    student=8,
                    loss=loss,
                    seed=seed,
                    weak_acc=weak,
                    student_acc=student,
                    ceiling_acc=ceiling,
                    pgr=(student - weak) / (ceiling - weak),
                    misfit=0.1,
                    gain=student - weak,
                )
            )
    return pd.DataFrame(rows)


def test_wins_ranks_and_pooled_pgr():
    table = planted()
    board = rank_methods(table)
    overall = board.overall.set_index("method")
    assert board.overall.method.iloc[0] == "better"
    assert board.excluded_cells == 1
    excluded = board.cells[~board.cells.kept]
    assert set(excluded.excluded) == {NO_REAL_GAP}
    assert (overall.loc["better", ["wins", "ties", "losses"]] == [3, 0, 0]).all()
    assert overall.loc["same", "wins"] == 0 and overall.loc["same", "losses"] == 0
    assert overall.loc["xent", ["wins", "ties", "losses"]].sum() == 0
    # counts agree: every kept cell gets one verdict
    for method in ("better", "same"):
        row = overall.loc[method]
        assert row.cells == 3 == row.wins + row.ties + row.losses
    # PGR: summed gains over summed gaps on the 3 kept cells, Fieller over seeds
    kept = table[~((table.task == "b") & (table.supervisor == "s2"))]
    mine = kept[kept.loss == "better"]
    sums = (
        mine.assign(
            gain=mine.student_acc - mine.weak_acc, gap=mine.ceiling_acc - mine.weak_acc
        )
        .groupby("seed")[["gain", "gap"]]
        .sum()
    )
    ref = metrics.pgr_interval(np.zeros(5), sums.gain, sums.gap)
    assert overall.loc["better", "pgr"] == pytest.approx(
        sums.gain.sum() / sums.gap.sum()
    )
    assert overall.loc["better", "pgr_high"] == pytest.approx(ref.high)
    ranks = board.per_task.set_index(["task", "method"])["rank"]
    assert ranks[("a", "better")] == 1 and ranks[("b", "better")] == 1


def test_holm_within_each_method_and_the_mde():
    board = rank_methods(planted())
    cells = board.cells[board.cells.kept & (board.cells.method == "same")]
    np.testing.assert_allclose(cells.p_holm, metrics.holm(cells.p_value))
    row = board.overall.set_index("method").loc["same"]
    mde = metrics.minimum_detectable_effect(np.median(cells.sd), 5)
    assert row.mde == pytest.approx(mde) and row.mde_holm > row.mde
    assert board.seeds == 5


def test_holm_turns_marginal_wins_into_ties():
    """A method a little better in every cell: unadjusted t-tests win some cells
    that Holm's family-wise correction does not."""
    table = planted(seeds=4)
    rng = np.random.default_rng(2)
    extra = table[table.loss == "xent"].copy()
    extra["loss"] = "slight"
    extra["student_acc"] += 0.004 + 0.004 * rng.normal(size=len(extra))
    board = rank_methods(pd.concat([table, extra], ignore_index=True))
    cells = board.cells[board.cells.kept & (board.cells.method == "slight")]
    raw = int(((cells.p_value <= 0.05) & (cells["diff"] > 0)).sum())
    wins = int((cells.verdict == "win").sum())
    assert wins == int(((cells.p_holm <= 0.05) & (cells["diff"] > 0)).sum())
    assert raw == 2 and wins == 0  # p = 0.025, 0.049 of 3: Holm needs 0.017


def test_supervisors_at_chance_and_gaps_within_test_noise_are_left_out():
    table = planted(weak_of={("a", "s2"): 0.5}, ceiling_of={("b", "s2"): 0.73})
    board = rank_methods(table)
    reasons = board.cells.drop_duplicates(["task", "supervisor"]).set_index(
        ["task", "supervisor"]
    )["excluded"]
    assert reasons[("a", "s2")] == NEAR_CHANCE and reasons[("b", "s2")] == ""
    # with 400 test rows, a 0.03 gap is below 2 binomial SEs (about 0.063)
    small = rank_methods(table, n_test=400)
    reasons = small.cells.set_index(["task", "supervisor"])["excluded"]
    assert (reasons.loc[("b", "s2")] == NO_REAL_GAP).all()
    assert small.excluded_cells == 2
    same = rank_methods(table.assign(n_test=400))
    assert same.excluded_cells == 2


def test_small_gap_cells_cannot_dominate_the_pooled_pgr():
    table = planted(ceiling_of={("b", "s2"): 0.73})
    hit = (table.task == "b") & (table.supervisor == "s2") & (table.loss == "same")
    table.loc[hit, "student_acc"] += 0.06  # PGR about +2 in a 0.03-gap cell
    board = rank_methods(table)
    overall = board.overall.set_index("method")
    mean_of_ratios = board.cells[board.cells.method == "same"].pgr.mean()
    assert overall.loc["same", "pgr"] < 0.6 < mean_of_ratios


def test_one_study_without_a_task_column():
    table = planted()
    one = table[table.task == "a"].drop(columns="task")
    board = rank_methods(one)
    assert list(board.per_task.task.unique()) == ["study"]
    assert board.overall.set_index("method").loc["better", "cells"] == 2
    with pytest.raises(ValueError, match="several rows per"):
        rank_methods(table.drop(columns="task"))


def test_saves_markdown_parquet_and_a_figure(tmp_path):
    board = rank_methods(planted())
    paths = board.save(tmp_path)
    text = (tmp_path / "leaderboard.md").read_text()
    assert "wins / ties / losses vs xent (Holm)" in text and "| 1 | better |" in text
    assert "Fieller" in text and "1 cell(s) failed" in text
    assert all(p.exists() for p in paths)
    back = pd.read_parquet(tmp_path / "leaderboard_overall.parquet")
    assert list(back.method) == list(board.overall.method)
    fig = methods.plot(board, title="t")
    assert len(fig.axes) == 3 and fig.get_suptitle() == "t"


def test_refuses_tables_without_columns_or_baseline():
    table = planted()
    with pytest.raises(ValueError, match="'student_acc'"):
        rank_methods(table.drop(columns="student_acc"))
    with pytest.raises(ValueError, match="baseline method 'xent' is not"):
        rank_methods(table[table.loss != "xent"])


def test_cell_rule_reads_one_study_table():
    from probe_lab.leaderboard import cell_rule

    table = planted(weak_of={("a", "s2"): 0.5})
    one = table[table.task == "a"].drop(columns=["task"])
    rule = cell_rule(one).set_index("supervisor")
    assert rule.loc["s2", "excluded"] == NEAR_CHANCE and rule.loc["s1", "kept"]


def test_verdicts_under_each_early_stopping_rule():
    table = planted()
    # final epoch: 'better' loses its edge (same accuracy as xent); best on test:
    # 'same' gains 0.05 everywhere (an upper bound can turn ties into wins).
    better, same = table.loss == "better", table.loss == "same"
    final = table.student_acc.where(~better, table.student_acc - 0.05)
    best = table.student_acc.where(~same, table.student_acc + 0.05) + 0.01
    board = rank_methods(
        table.assign(student_acc_final=final, student_acc_best_test=best)
    )
    assert board.stopping == {"weak_agreement": True, "final": True, "best_test": True}
    overall = board.overall.set_index("method")
    kept = board.cells[board.cells.kept].set_index("method")
    assert (kept.loc["better", "verdict"] == "win").all()
    assert (kept.loc["better", "verdict_final"] == "tie").all()
    assert (kept.loc["better", "verdict_best_test"] == "win").all()
    assert (kept.loc["same", "verdict_best_test"] == "win").all()
    assert overall.loc["better", "survive_final"] == 0
    assert overall.loc["better", "survive_best_test"] == overall.loc["better", "cells"]
    assert overall.loc["same", "survive_final"] == overall.loc["same", "cells"]
    assert overall.loc["same", "survive_best_test"] == 0
    assert overall.loc["better", "wins_final"] == 0
    for rule in ("final", "best_test"):  # counts add up under every rule
        counts = overall[[f"wins_{rule}", f"ties_{rule}", f"losses_{rule}"]].sum(axis=1)
        assert (counts.drop("xent") == overall.cells.drop("xent")).all()
    # the pooled PGR under the final epoch: the ratio of summed gains with the
    # final accuracies, over the same kept cells
    rows = table.assign(student_acc=final)
    rows = rows[rows.task.eq("a") | rows.supervisor.eq("s1")]
    mine = rows[rows.loss == "better"]
    expect = (mine.student_acc - mine.weak_acc).sum() / (
        mine.ceiling_acc - mine.weak_acc
    ).sum()
    assert overall.loc["better", "pgr_final"] == pytest.approx(expect)
    text = board.markdown()
    assert "Early-stopping sensitivity" in text and "final epoch" in text


def test_tables_without_the_stopping_columns_report_the_rule_unavailable():
    board = rank_methods(planted())
    assert board.stopping == {
        "weak_agreement": True,
        "final": False,
        "best_test": False,
    }
    assert (board.cells.verdict_final == "unavailable").all()
    assert board.overall.survive_final.isna().all()
    assert "unavailable (no student_acc_final column)" in board.markdown()
    main = rank_methods(planted(), stopping=["weak_agreement"])
    assert "verdict_final" not in main.cells and "survive_final" not in main.overall
    pd.testing.assert_frame_equal(
        main.overall[["method", "wins", "ties", "losses"]],
        board.overall[["method", "wins", "ties", "losses"]],
    )
    with pytest.raises(ValueError, match="unknown rules \\['last'\\]"):
        rank_methods(planted(), stopping=["last"])


def test_methods_finding_reports_each_stopping_rule():
    table = planted().replace({"loss": {"better": "confidence"}})
    final = table.student_acc.where(
        table.loss != "confidence", table.student_acc - 0.05
    )
    board = rank_methods(table.assign(student_acc_final=final))
    finding = methods.check(board)[0]
    assert finding.held
    assert "final epoch: 0 of 3 verdicts survive" in finding.measured
    assert "best epoch on test (upper bound): unavailable" in finding.measured
    assert "(paired over seeds)" in finding.measured
