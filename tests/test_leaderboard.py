"""The leaderboard: PGR per method with t-intervals, ranks, wins against xent."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from probe_lab import metrics
from probe_lab.experiments import methods
from probe_lab.leaderboard import rank_methods


def planted(seeds: int = 5) -> pd.DataFrame:
    """Two tasks x two supervisors; 'better' gains 0.05 accuracy over xent in
    every cell, 'same' matches xent up to noise; task b's second supervisor has
    no gap (ceiling = weak + 0.01)."""
    rng = np.random.default_rng(0)
    rows = []
    for task, sup, seed in itertools.product("ab", ("s1", "s2"), range(seeds)):
        weak = 0.70
        ceiling = 0.71 if (task, sup) == ("b", "s2") else 0.90
        base = 0.78 + 0.01 * rng.normal()
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


def test_wins_ranks_and_intervals():
    table = planted()
    board = rank_methods(table)
    overall = board.overall.set_index("method")
    assert board.overall.method.iloc[0] == "better"
    assert board.excluded_cells == 1
    assert (overall.loc["better", ["wins", "ties", "losses"]] == [4, 0, 0]).all()
    assert overall.loc["same", "wins"] == 0 and overall.loc["same", "losses"] == 0
    assert overall.loc["xent", ["wins", "ties", "losses"]].sum() == 0
    # The interval is the t-interval over seeds of the per-seed mean PGR over the
    # 3 kept cells.
    kept = table[~((table.task == "b") & (table.supervisor == "s2"))]
    per_seed = kept[kept.loss == "better"].groupby("seed").pgr.mean()
    half = stats.t.ppf(0.975, 4) * per_seed.std(ddof=1) / np.sqrt(5)
    assert overall.loc["better", "pgr"] == pytest.approx(per_seed.mean())
    assert overall.loc["better", "pgr_high"] == pytest.approx(per_seed.mean() + half)
    ranks = board.per_task.set_index(["task", "method"])["rank"]
    assert ranks[("a", "better")] == 1 and ranks[("b", "better")] == 1


def test_t_interval_is_wider_than_the_normal_one_for_few_seeds():
    values = np.array([0.1, 0.3, 0.2])
    mean, low, high = metrics.t_interval(values)
    normal = 1.96 * values.std(ddof=1) / np.sqrt(3)
    assert mean == pytest.approx(0.2) and high - mean > 2 * normal
    assert mean - low == pytest.approx(high - mean)
    assert np.isnan(metrics.t_interval([0.5])[1])


def test_saves_markdown_parquet_and_a_figure(tmp_path):
    board = rank_methods(planted())
    paths = board.save(tmp_path)
    text = (tmp_path / "leaderboard.md").read_text()
    assert "wins / ties / losses vs xent" in text and "| 1 | better |" in text
    assert all(p.exists() for p in paths)
    back = pd.read_parquet(tmp_path / "leaderboard_overall.parquet")
    assert list(back.method) == list(board.overall.method)
    fig = methods.plot(board, title="t")
    assert len(fig.axes) == 3 and fig.get_suptitle() == "t"


def test_refuses_tables_without_tasks_or_baseline():
    table = planted()
    with pytest.raises(ValueError, match="'task' column"):
        rank_methods(table.drop(columns="task"))
    with pytest.raises(ValueError, match="baseline method 'xent' is not"):
        rank_methods(table[table.loss != "xent"])
