"""Drawing helpers shared by the figures, and the study's misfit-theorem figure.

Each experiment kind draws its own figure in its module (``plot`` in
:mod:`probe_lab.experiments.simulation_difficulty`, ...) with these helpers: the
style (:func:`style`), panel grids, per-seed bands and lines, grouped bars, the
strong-ceiling band and :func:`save`. Figures take tidy tables (one row per seed,
or a summary with PGR intervals) and are built without pyplot, so no display
or global backend is involved; :func:`save` writes one as a PNG.
Intervals: bands are the mean over seeds with a 95% Student-t interval (n - 1
degrees of freedom, :func:`probe_lab.metrics.t_interval`; with 3-10 seeds 1.96
standard errors would be too narrow); PGR error bars are the summary's Fieller
interval (:func:`probe_lab.metrics.pgr_interval`), none where PGR is undefined at
the study's precision.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

__all__ = [
    "DPI",
    "K_LABEL",
    "LOSS_COLORS",
    "LOSS_NAMES",
    "band",
    "bars",
    "ceiling",
    "colors",
    "k_axis",
    "line",
    "panels",
    "pgr_and_agreement",
    "plot_method_pgr",
    "plot_misfit_theorem",
    "pretty",
    "save",
    "style",
]

DPI = 150
"""Resolution of saved figures."""

LOSS_NAMES = {"xent": "cross-entropy (baseline)", "confidence": "confidence loss"}
LOSS_COLORS = {"xent": "#4477aa", "confidence": "#cc6677"}
K_LABEL = "student features k (principal components, log scale)"


@contextlib.contextmanager
def style() -> Iterator[None]:
    """The figures' matplotlib settings, for the duration of a ``with``."""
    with matplotlib.rc_context(
        {
            "font.size": 11,
            "axes.titlesize": 11,
            "axes.labelsize": 11,
            "legend.fontsize": 10,
            "xtick.labelsize": 10,
            "ytick.labelsize": 10,
            "figure.titlesize": 13,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "axes.grid": True,
            "grid.alpha": 0.3,
        }
    ):
        yield


def panels(fig: Figure, n: int, cols: int, **share: bool) -> np.ndarray:
    """A ``(rows, cols)`` grid of axes for ``n`` panels, filled row by row; the
    cells past the last panel are hidden."""
    grid = fig.subplots(-(-n // cols), cols, squeeze=False, **share)
    for ax in grid.flat[n:]:
        ax.set_visible(False)
    return grid


def save(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` as a PNG at :data:`DPI`.

    Args:
        fig: a figure from this module.
        path: the ``.png`` file (folders are created).

    Returns:
        ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    return path


def band(frame: pd.DataFrame, by: Sequence[str] | str, column: str) -> pd.DataFrame:
    """Mean of ``column`` per group with a 95% Student-t interval over seeds
    (:func:`probe_lab.metrics.t_interval`; a single seed gives a zero-width band)."""
    from probe_lab.metrics import t_interval

    stats = frame.groupby(by)[column].agg(["mean", "std", "count"]).reset_index()
    groups = frame.groupby(by)[column]
    bounds = [t_interval(values.to_numpy(float)) for _, values in groups]
    low = np.array([b.low for b in bounds], np.float64)
    high = np.array([b.high for b in bounds], np.float64)
    single = ~np.isfinite(low)
    return stats.assign(
        low=np.where(single, stats["mean"], low),
        high=np.where(single, stats["mean"], high),
    )


def line(ax: Axes, stats: pd.DataFrame, x: str, **style) -> None:
    """A mean line over ``x`` with its interval band (:func:`band`'s columns)."""
    ax.plot(stats[x], stats["mean"], **({"marker": "o", "markersize": 4} | style))
    color = ax.lines[-1].get_color()
    ax.fill_between(stats[x], stats["low"], stats["high"], color=color, alpha=0.18)


def k_axis(ax: Axes, ks: Sequence[int]) -> None:
    """A log-2 x axis of student feature counts ``ks``."""
    ax.set_xscale("log", base=2)
    ax.set_xticks(list(ks), [str(k) for k in ks])
    ax.minorticks_off()
    ax.set_xlabel(K_LABEL)


def ceiling(table: pd.DataFrame) -> pd.DataFrame:
    """The strong ceiling's accuracy per student size, one value per seed."""
    per_seed = table.drop_duplicates(["student", "seed"])
    return band(per_seed, "student", "ceiling_acc")


def colors(n: int, cmap: str = "viridis") -> list:
    """``n`` colours from ``cmap``, avoiding its lightest end."""
    colormap = matplotlib.colormaps[cmap]
    return [colormap(v) for v in np.linspace(0.0, 0.85, max(n, 1))]


def pretty(name: str) -> str:
    """``strong_unconfident`` -> ``strong unconfident``; ``M_k`` stays as it is."""
    return re.sub(r"(?<!M)_", " ", name)


def bars(
    ax: Axes, summary: pd.DataFrame, order: Sequence[str], column: str, *, errors: bool
) -> None:
    """Bars of ``column`` per supervisor in ``order``, one per loss (xent,
    confidence); ``errors``: PGR's Fieller interval as error bars; n/a where
    undefined."""
    losses = [loss for loss in LOSS_NAMES if loss in set(summary.loss)]
    width = 0.8 / len(losses)
    x = np.arange(len(order))
    for i, loss in enumerate(losses):
        rows = summary[summary.loss == loss].set_index("supervisor").reindex(order)
        values = rows[column].to_numpy(float)
        yerr = None
        if errors:
            low = np.nan_to_num(values - rows.pgr_low.to_numpy(float))
            high = np.nan_to_num(rows.pgr_high.to_numpy(float) - values)
            yerr = np.clip(np.stack([low, high]), 0, None)
        at = x + (i - (len(losses) - 1) / 2) * width
        ax.bar(
            at,
            np.nan_to_num(values),
            width,
            yerr=yerr,
            capsize=3,
            color=LOSS_COLORS[loss],
            label=LOSS_NAMES[loss],
        )
        for pos in at[~np.isfinite(values)]:  # undefined (e.g. PGR without a gap)
            ax.text(pos, 0, "n/a", ha="center", va="bottom", rotation=90, fontsize=8)
    ax.set_xticks(x, [pretty(s) for s in order], rotation=25, ha="right")
    ax.axhline(0, color="black", lw=0.8)
    ax.grid(axis="x", visible=False)


def pgr_and_agreement(
    summary: pd.DataFrame,
    order: Sequence[str],
    column: str,
    *,
    titles: tuple[str, str],
    agreement_label: str,
    top: float,
) -> Figure:
    """Two bar panels per supervisor and loss: PGR with Fieller intervals, and
    the student's agreement with the weak labels (``column``)."""
    fig = Figure(figsize=(12, 5.0), layout="constrained")
    left, right = fig.subplots(1, 2)
    bars(left, summary, order, "pgr", errors=True)
    left.set_ylabel("PGR (performance gap recovered)")
    left.set_title(titles[0])
    if summary.pgr.isna().all():
        left.set_title(
            "PGR undefined (n/a): the ceiling is not above the weak accuracy"
        )
    left.legend(loc="best")
    bars(right, summary, order, column, errors=False)
    right.set_ylabel(agreement_label)
    right.set_ylim(0, top)
    right.set_title(titles[1])
    return fig


def plot_misfit_theorem(table: pd.DataFrame, *, title: str = "") -> Figure:
    """The misfit theorem (Charikar et al. 2024) in its own quantities: squared-loss
    gain against squared-loss misfit, means over seeds, with the line ``gain =
    misfit``.

    Left: the projection student (least squares of the weak probabilities on the
    student's features, fit on the labelled rows; one point per supervisor x
    student k), on the held-out test rows (filled: what is tested, the theorem
    predicts points on or above the line up to estimation error) and on the fitted
    rows (hollow: an identity for a realizable target). Right: the trained
    students (one point per supervisor x k x method) on the test rows, which
    satisfy none of the theorem's assumptions (a logistic probe trained with its
    own loss, not a projection). Columns from :mod:`probe_lab.study.scoring`.
    """
    keys = ["supervisor", "student"]
    columns = ["sq_gain_test", "sq_misfit_test", "sq_gain_fit", "sq_misfit_fit"]
    proj = table.groupby(keys, sort=False)[columns].mean().reset_index()
    trained = (
        table.groupby([*keys, "loss"], sort=False)[
            ["student_sq_gain_test", "student_sq_misfit_test"]
        ]
        .mean()
        .reset_index()
    )
    share = (proj.sq_gain_test >= proj.sq_misfit_test).mean()
    with style():
        fig = Figure(figsize=(12, 5.5), layout="constrained")
        left, right = fig.subplots(1, 2)
        left.scatter(proj.sq_misfit_test, proj.sq_gain_test, s=30, label="test rows")
        left.scatter(
            proj.sq_misfit_fit,
            proj.sq_gain_fit,
            s=30,
            facecolors="none",
            edgecolors="0.3",
            label="fitted rows (identity)",
        )
        left.set_title(
            f"Projection student: is gain >= misfit on held-out rows? "
            f"{share:.0%} of {len(proj)}"
        )
        methods = list(dict.fromkeys(trained.loss))
        for method, color in zip(methods, colors(len(methods), "tab10"), strict=True):
            rows = trained[trained.loss == method]
            right.scatter(
                rows.student_sq_misfit_test,
                rows.student_sq_gain_test,
                s=28,
                color=color,
                label=method,
            )
        right.set_title("Trained students on test rows (outside the theorem)")
        for ax, pts in ((left, proj.sq_misfit_test), (right, trained.iloc[:, -1])):
            top = max(float(np.nanmax(np.r_[pts.to_numpy(float), 1e-3])), 1e-3)
            span = np.linspace(0, top, 50)
            ax.plot(span, span, "k--", lw=1, label="gain = misfit")
            ax.axhline(0, color="0.6", lw=0.8)
            ax.set_xlabel("squared misfit: mean (s - w)^2")
            ax.set_ylabel("squared gain: mean (y - w)^2 - mean (y - s)^2")
            ax.legend(loc="best")
        fig.suptitle(
            title
            or "Misfit theorem in squared loss (w: weak probabilities, y: ceiling "
            "probe, s: student; means over seeds)"
        )
    return fig


def plot_method_pgr(
    frame: pd.DataFrame, *, seeds: int, confidence: float = 0.95
) -> Figure:
    """PGR by method (rows) in one panel per supervisor, one marker per student
    size, with Fieller's interval over seeds; n/a where PGR is undefined.
    ``frame``: :func:`probe_lab.study.report.method_pgr` of a study."""
    supervisors = list(dict.fromkeys(frame.supervisor))
    methods = list(dict.fromkeys(frame.loss))
    students = sorted(set(frame.student))
    y = np.arange(len(methods))[::-1]
    cols = min(len(supervisors), 4)
    rows = -(-len(supervisors) // cols)
    with style():
        fig = Figure(
            figsize=(3.6 * cols + 2.0, rows * (1.2 + 0.45 * len(methods)) + 0.8),
            layout="constrained",
        )
        grid = panels(fig, len(supervisors), cols, sharey=True).reshape(-1)
        shades = colors(len(students))
        for ax, sup in zip(grid, supervisors, strict=False):
            for j, (k, color) in enumerate(zip(students, shades, strict=True)):
                part = frame[(frame.supervisor == sup) & (frame.student == k)]
                part = part.set_index("loss").reindex(methods)
                at = y + (j - (len(students) - 1) / 2) * 0.8 / len(students)
                err = np.vstack([part.pgr - part.pgr_low, part.pgr_high - part.pgr])
                ax.errorbar(
                    part.pgr,
                    at,
                    xerr=np.clip(np.nan_to_num(err), 0, None),
                    fmt="o",
                    color=color,
                    capsize=3,
                    label=f"student k={k}",
                )
                for pos in at[~np.isfinite(part.pgr.to_numpy(float))]:
                    ax.text(0, pos, "n/a", va="center", fontsize=8, color=color)
            ax.axvline(0, color="0.6", lw=0.8)
            ax.set_title(pretty(sup))
            ax.set_xlabel("PGR")
        grid[0].set_yticks(y, methods)
        grid[0].legend(loc="lower right", fontsize=8)
        fig.suptitle(
            f"PGR by method and supervisor ({confidence:.0%} Fieller intervals "
            f"over {seeds} seed(s))"
        )
    return fig
