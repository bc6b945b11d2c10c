"""Each figure has a title, labelled axes, a legend and readable text, and saves."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread
from matplotlib.text import Text

from probe_lab import plots
from probe_lab.experiments import (
    error_structures,
    linear_probe_w2s,
    simulation_difficulty,
    training_dynamics,
    trivial_imitation,
)

KS = (4, 8, 16)
SEEDS = range(3)


def runs(supervisors, losses=("xent", "confidence"), **extra) -> pd.DataFrame:
    """A per-seed table of made-up but well-formed results."""
    rng = np.random.default_rng(0)
    rows = []
    for sup, k, loss, seed in itertools.product(supervisors, KS, losses, SEEDS):
        rows.append(
            dict(
                supervisor=sup,
                kind="probe" if sup.startswith("M_") else sup.split()[0],
                student=k,
                loss=loss,
                seed=seed,
                weak_acc=0.7,
                student_acc=0.7 + 0.02 * np.log2(k) + 0.01 * rng.normal(),
                ceiling_acc=0.75 + 0.04 * np.log2(k) + 0.005 * seed,
                agreement=0.8 + 0.05 * rng.normal(),
                **extra,
            )
        )
    return pd.DataFrame(rows)


def summary(supervisors) -> pd.DataFrame:
    rows = []
    for i, (sup, loss) in enumerate(
        itertools.product(supervisors, ("xent", "confidence"))
    ):
        pgr = 0.1 * i - 0.2
        rows.append(
            dict(
                supervisor=sup,
                student=16,
                loss=loss,
                weak_acc=0.7,
                pgr=pgr,
                pgr_low=pgr - 0.05,
                pgr_high=pgr + 0.05,
                agreement=0.8,
                agreement_weak_wrong=0.4,
            )
        )
    return pd.DataFrame(rows)


def dynamics() -> pd.DataFrame:
    rows = []
    for sup, loss, seed, epoch in itertools.product(
        ("M_4", "random", "longest"), ("xent", "confidence"), SEEDS, range(1, 11)
    ):
        rows.append(
            dict(
                supervisor=sup,
                student=16,
                loss=loss,
                seed=seed,
                epoch=epoch,
                agreement_weak_wrong=0.3 + 0.03 * epoch,
                agreement_weak_right=0.9,
            )
        )
    return pd.DataFrame(rows)


def simulation() -> pd.DataFrame:
    frames = []
    for ref in (4, 8):
        frames.append(
            runs((f"M_{ref}", "random", "mixture 0.5"), losses=("xent",), reference=ref)
        )
    table = pd.concat(frames, ignore_index=True)
    table.loc[table.supervisor.str.startswith("mixture"), "kind"] = "mixture"
    return table


FIGURES = {
    "weak_to_strong": lambda: linear_probe_w2s.plot(
        runs(("M_2", "layer 0")), title="t"
    ),
    "simulation": lambda: simulation_difficulty.plot(simulation(), title="t"),
    "error_structures": lambda: error_structures.plot(
        summary(("M_4", "random", "strong_unconfident")), title="t"
    ),
    "dynamics": lambda: training_dynamics.plot(dynamics(), title="t"),
    "imitation": lambda: trivial_imitation.plot(
        summary(("weak", "weak as feature", "weak in prompt")), title="t"
    ),
    "misfit_theorem": lambda: plots.plot_misfit_theorem(misfits(), title="t"),
}


def misfits() -> pd.DataFrame:
    table = runs(("M_2", "random"))
    rng = np.random.default_rng(1)
    for where in ("fit", "test"):
        misfit = rng.uniform(0.01, 0.05, len(table))
        table[f"sq_misfit_{where}"] = misfit
        table[f"sq_gain_{where}"] = misfit + 0.002 * rng.normal(size=len(table))
    table["student_sq_misfit_test"] = rng.uniform(0.01, 0.2, len(table))
    table["student_sq_gain_test"] = rng.uniform(-0.05, 0.1, len(table))
    return table


def test_misfit_fit_recovers_a_planted_line():
    from probe_lab import metrics

    misfit = np.linspace(0.0, 0.3, 20)
    fit = metrics.misfit_fit(0.01 + 0.5 * misfit, misfit)
    assert fit["slope"] == pytest.approx(0.5)
    assert fit["intercept"] == pytest.approx(0.01)
    assert fit["correlation"] == pytest.approx(1.0)
    assert fit["share_above"] == pytest.approx(2 / 20)  # misfit <= 0.02 only
    assert np.isnan(metrics.misfit_fit([0.1], [0.2])["slope"])


@pytest.mark.parametrize("name", FIGURES)
def test_figure_is_labelled_readable_and_saves(name, tmp_path):
    fig = FIGURES[name]()
    assert fig.get_suptitle().startswith("t")
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert axes
    for ax in axes:
        assert ax.get_xticks().size
    # Every panel column is titled at its top.
    assert all(ax.get_title() for ax in axes if ax.get_subplotspec().is_first_row())
    # Every row has a y label on its left, every column an x label or tick names.
    assert all(ax.get_ylabel() for ax in axes if ax.get_subplotspec().is_first_col())
    bottom = [ax for ax in axes if ax.get_subplotspec().is_last_row()]
    assert all(
        ax.get_xlabel() or any(t.get_text() for t in ax.get_xticklabels())
        for ax in bottom
    )
    assert fig.legends or any(ax.get_legend() for ax in axes)
    sizes = [t.get_fontsize() for t in fig.findobj(Text) if t.get_text().strip()]
    assert min(sizes) >= 10
    path = plots.save(fig, tmp_path / f"{name}.png")
    image = imread(path)
    assert image.shape[1] >= 1500 and image.std() > 0.01


def test_axis_units_name_the_student_size():
    fig = linear_probe_w2s.plot(runs(("M_2",)))
    assert fig.axes[0].get_xlabel() == plots.K_LABEL
    assert fig.axes[0].get_ylabel() == "test accuracy"
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["4", "8", "16"]
