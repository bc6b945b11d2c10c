"""Figures of the paper-figure experiments (Burns et al. 2023, Fig. 23-27).

Each function takes a study's tidy table (one row per seed, or a summary with
bootstrap intervals) and returns a :class:`matplotlib.figure.Figure` built without
pyplot, so no display or global backend is involved; :func:`save` writes it as a PNG.
Intervals: bands are the mean over seeds with a 95% Student-t interval (n - 1
degrees of freedom; with 3-10 seeds 1.96 standard errors would be too narrow); PGR
error bars are the study's percentile bootstrap interval over seeds.
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
    "plot_dynamics",
    "plot_error_structures",
    "plot_gain_vs_misfit",
    "plot_imitation",
    "plot_leaderboard",
    "plot_sample_size",
    "plot_simulation",
    "plot_task_suite",
    "plot_weak_to_strong",
    "save",
]

DPI = 150
"""Resolution of saved figures."""

LOSS_NAMES = {"xent": "cross-entropy (baseline)", "confidence": "confidence loss"}
LOSS_COLORS = {"xent": "#4477aa", "confidence": "#cc6677"}
K_LABEL = "student features k (principal components, log scale)"


@contextlib.contextmanager
def _style() -> Iterator[None]:
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


def _panels(fig: Figure, n: int, cols: int, **share: bool) -> np.ndarray:
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


def _band(frame: pd.DataFrame, by: Sequence[str] | str, column: str) -> pd.DataFrame:
    """Mean of ``column`` per group with a 95% Student-t interval over seeds."""
    from scipy import stats as scipy_stats

    stats = frame.groupby(by)[column].agg(["mean", "std", "count"]).reset_index()
    dof = np.maximum(stats["count"] - 1, 1)
    quantile = scipy_stats.t.ppf(0.975, dof)
    half = quantile * stats["std"].fillna(0.0) / np.sqrt(stats["count"])
    return stats.assign(low=stats["mean"] - half, high=stats["mean"] + half)


def _line(ax: Axes, stats: pd.DataFrame, x: str, **style) -> None:
    ax.plot(stats[x], stats["mean"], **({"marker": "o", "markersize": 4} | style))
    color = ax.lines[-1].get_color()
    ax.fill_between(stats[x], stats["low"], stats["high"], color=color, alpha=0.18)


def _k_axis(ax: Axes, ks: Sequence[int]) -> None:
    ax.set_xscale("log", base=2)
    ax.set_xticks(list(ks), [str(k) for k in ks])
    ax.minorticks_off()
    ax.set_xlabel(K_LABEL)


def _ceiling(table: pd.DataFrame) -> pd.DataFrame:
    per_seed = table.drop_duplicates(["student", "seed"])
    return _band(per_seed, "student", "ceiling_acc")


def _colors(n: int, cmap: str = "viridis") -> list:
    colormap = matplotlib.colormaps[cmap]
    return [colormap(v) for v in np.linspace(0.0, 0.85, max(n, 1))]


def plot_weak_to_strong(table: pd.DataFrame, *, title: str = "") -> Figure:
    """Fig. 23 analog: test accuracy against student size, one line per weak
    supervisor (its own accuracy dashed), the ground-truth ceiling in black; one
    panel per loss.

    Args:
        table: a study's per-seed table (``StudyResult.table``).
        title: figure title.

    Returns:
        The figure.
    """
    losses = [loss for loss in LOSS_NAMES if loss in set(table.loss)]
    sups = list(dict.fromkeys(table.supervisor))
    colors = dict(zip(sups, _colors(len(sups), "plasma"), strict=True))
    ks = sorted(set(table.student))
    with _style():
        fig = Figure(figsize=(5.2 * len(losses), 5.0), layout="constrained")
        axes = fig.subplots(1, len(losses), sharey=True, squeeze=False)[0]
        for ax, loss in zip(axes, losses, strict=True):
            rows = table[table.loss == loss]
            _line(ax, _ceiling(rows), "student", color="black", lw=2.2)
            ax.lines[-1].set_label("strong ceiling (ground truth)")
            for sup in sups:
                sub = rows[rows.supervisor == sup]
                weak = sub.drop_duplicates("seed").weak_acc.mean()
                _line(
                    ax,
                    _band(sub, "student", "student_acc"),
                    "student",
                    color=colors[sup],
                )
                ax.lines[-1].set_label(f"weak {sup} (acc {weak:.2f})")
                ax.axhline(weak, color=colors[sup], ls=":", lw=1.5)
            ax.set_title(f"students trained with {LOSS_NAMES[loss]}")
            ax.set_ylabel("test accuracy")
            _k_axis(ax, ks)
        handles, labels = axes[0].get_legend_handles_labels()
        fig.legend(
            handles,
            labels,
            loc="outside lower center",
            ncols=min(3, len(labels)),
            title="dotted: the weak supervisor's own test accuracy",
        )
        fig.suptitle(title or "Weak-to-strong generalization with linear probes")
    return fig


def plot_simulation(table: pd.DataFrame, *, title: str = "") -> Figure:
    """Fig. 24 analog: (a) simulatable M_k2 labels, (b) random errors at M_k2's
    accuracy, (c) mixtures at one M_k2; test accuracy (top) and agreement with the
    weak labels (bottom) against student size. Cross-entropy students.

    Args:
        table: the simulation studies' per-seed tables, concatenated, with a
            ``reference`` column (k2).
        title: figure title.

    Returns:
        The figure.
    """
    table = table[table.loss == "xent"]
    refs = sorted(set(table.reference))
    mid = refs[len(refs) // 2]
    ref_colors = dict(zip(refs, _colors(len(refs)), strict=True))
    ks = sorted(set(table.student))
    mix = table[table.reference == mid]
    order = (
        [s for s in mix.supervisor.unique() if s.startswith("M_")]
        + sorted(s for s in mix.supervisor.unique() if s.startswith("mixture"))
        + ["random"]
    )
    share = {s: 0.0 for s in order if s.startswith("M_")} | {"random": 1.0}
    share |= {s: float(s.split()[-1]) for s in order if s.startswith("mixture")}
    mix_colors = dict(zip(order, _colors(len(order), "plasma"), strict=True))
    panels = (
        ("(a) perfectly simulatable: weak = M_k2", "probe"),
        ("(b) unsimulatable: random errors\nat M_k2's accuracy", "random"),
        (f"(c) mixture at M_{mid}'s accuracy", "mixture"),
    )
    with _style():
        fig = Figure(figsize=(14, 8.2), layout="constrained")
        axes = fig.subplots(2, 3, sharex=True, sharey="row")
        for col, (name, kind) in enumerate(panels):
            top, bottom = axes[0, col], axes[1, col]
            if kind == "mixture":
                groups = [(s, mix[mix.supervisor == s], mix_colors[s]) for s in order]
                label = lambda s: f"{share[s]:.0%} random"  # noqa: E731
            else:
                groups = [
                    (
                        r,
                        table[(table.reference == r) & (table.kind == kind)],
                        ref_colors[r],
                    )
                    for r in refs
                ]
                label = lambda r: f"k2 = {r}"  # noqa: E731
            _line(top, _ceiling(table), "student", color="black", lw=2.2)
            top.lines[-1].set_label("strong ceiling")
            for key, rows, color in groups:
                weak = rows.drop_duplicates("seed").weak_acc.mean()
                _line(
                    top, _band(rows, "student", "student_acc"), "student", color=color
                )
                top.lines[-1].set_label(f"{label(key)} (weak acc {weak:.2f})")
                top.axhline(weak, color=color, ls=":", lw=1.3)
                _line(
                    bottom, _band(rows, "student", "agreement"), "student", color=color
                )
            top.set_title(name)
            top.set_ylabel("test accuracy")
            top.legend(loc="lower right")
            bottom.set_ylabel("agreement with weak labels (test)")
            bottom.set_ylim(0.45, 1.02)
            _k_axis(bottom, ks)
            top.tick_params(labelbottom=True)
        fig.suptitle(
            (title or "Simulation difficulty")
            + "\nweak M_k2 = probe on the first k2 principal components; dotted: "
            "weak accuracy"
        )
    return fig


def _pretty(name: str) -> str:
    """``strong_unconfident`` -> ``strong unconfident``; ``M_k`` stays as it is."""
    return re.sub(r"(?<!M)_", " ", name)


def _bars(
    ax: Axes, summary: pd.DataFrame, order: Sequence[str], column: str, *, errors: bool
) -> None:
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
    ax.set_xticks(x, [_pretty(s) for s in order], rotation=25, ha="right")
    ax.axhline(0, color="black", lw=0.8)
    ax.grid(axis="x", visible=False)


def _pgr_and_agreement(
    summary: pd.DataFrame,
    order: Sequence[str],
    column: str,
    *,
    titles: tuple[str, str],
    agreement_label: str,
    top: float,
) -> Figure:
    """Two bar panels per supervisor and loss: PGR with bootstrap intervals, and
    the student's agreement with the weak labels (``column``)."""
    fig = Figure(figsize=(12, 5.0), layout="constrained")
    left, right = fig.subplots(1, 2)
    _bars(left, summary, order, "pgr", errors=True)
    left.set_ylabel("PGR (performance gap recovered)")
    left.set_title(titles[0])
    if summary.pgr.isna().all():
        left.set_title(
            "PGR undefined (n/a): the ceiling is not above the weak accuracy"
        )
    left.legend(loc="best")
    _bars(right, summary, order, column, errors=False)
    right.set_ylabel(agreement_label)
    right.set_ylim(0, top)
    right.set_title(titles[1])
    return fig


def plot_error_structures(summary: pd.DataFrame, *, title: str = "") -> Figure:
    """Fig. 25 analog: PGR per weak-error structure at matched weak accuracy, for
    each loss, with bootstrap intervals; and how much the student agrees with the
    weak labels where they are wrong.

    Args:
        summary: ``StudyResult.summary()`` rows of one student size.
        title: figure title.

    Returns:
        The figure.
    """
    order = list(dict.fromkeys(summary.supervisor))
    weak = summary.groupby("supervisor", sort=False).weak_acc.mean()
    student = int(summary.student.iloc[0])
    with _style():
        fig = _pgr_and_agreement(
            summary,
            order,
            "agreement_weak_wrong",
            titles=(
                "PGR per error structure (95% bootstrap interval over seeds)",
                "imitation of the weak errors",
            ),
            agreement_label=(
                "student agrees with the weak label\nwhere it is wrong (test)"
            ),
            top=1.0,
        )
        fig.suptitle(
            (title or "Weak-error structures")
            + f"\nweak accuracy {weak.min():.2f}-{weak.max():.2f} (matched); "
            f"student k = {student}"
        )
    return fig


def plot_dynamics(dynamics: pd.DataFrame, *, title: str = "") -> Figure:
    """Fig. 26 analog: student-supervisor agreement through training, on test rows
    where the weak label is wrong (solid) and right (dashed), per structure and
    loss.

    Args:
        dynamics: ``StudyResult.dynamics`` rows of one student size.
        title: figure title.

    Returns:
        The figure.
    """
    sups = list(dict.fromkeys(dynamics.supervisor))
    losses = [loss for loss in LOSS_NAMES if loss in set(dynamics.loss)]
    cols = len(sups) if len(sups) <= 3 else min(4, -(-len(sups) // 2))
    rows_n = int(np.ceil(len(sups) / cols))
    with _style():
        fig = Figure(figsize=(3.6 * cols, 3.2 * rows_n + 0.9), layout="constrained")
        axes = _panels(fig, len(sups), cols, sharex=True, sharey=True)
        for ax, sup in zip(axes.flat, sups, strict=False):
            sub = dynamics[dynamics.supervisor == sup]
            for loss in losses:
                rows = sub[sub.loss == loss]
                color = LOSS_COLORS[loss]
                _line(
                    ax,
                    _band(rows, "epoch", "agreement_weak_wrong"),
                    "epoch",
                    color=color,
                    marker=None,
                    label=f"{LOSS_NAMES[loss]}: weak label wrong",
                )
                _line(
                    ax,
                    _band(rows, "epoch", "agreement_weak_right"),
                    "epoch",
                    color=color,
                    ls="--",
                    marker=None,
                    label=f"{LOSS_NAMES[loss]}: weak label right",
                )
            ax.set_title(_pretty(sup))
            ax.set_ylim(0, 1.02)
        for ax in axes.flat[max(0, len(sups) - cols) : len(sups)]:
            ax.tick_params(labelbottom=True)  # lowest panel of its column
            ax.set_xlabel("training epoch")
        for ax in axes[:, 0]:
            ax.set_ylabel("agreement with weak labels")
        handles, labels = axes.flat[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside lower center", ncols=2)
        student = int(dynamics.student.iloc[0])
        fig.suptitle(
            (title or "Training dynamics") + f"\nstudent k = {student}; test rows"
        )
    return fig


def plot_imitation(summary: pd.DataFrame, *, title: str = "") -> Figure:
    """Fig. 27 analog: PGR and agreement with the weak labels when the same weak
    labels are hidden, appended as a feature, or written into the prompt (and random
    errors hidden or appended, for contrast).

    Args:
        summary: the imitation studies' summaries (one student size).
        title: figure title.

    Returns:
        The figure.
    """
    order = [
        s
        for s in (
            "weak",
            "weak as feature",
            "weak in prompt",
            "random",
            "random as feature",
        )
        if s in set(summary.supervisor)
    ]
    names = {
        "weak": "weak hidden",
        "weak as feature": "weak as feature",
        "weak in prompt": "weak in prompt\n(re-extracted)",
        "random": "random hidden",
        "random as feature": "random as feature",
    }
    weak = summary[summary.supervisor.isin(order)].weak_acc.mean()
    with _style():
        fig = _pgr_and_agreement(
            summary,
            order,
            "agreement",
            titles=(
                "PGR (95% bootstrap interval over seeds)",
                "imitation of the weak labels",
            ),
            agreement_label="agreement with weak labels (test)",
            top=1.05,
        )
        for ax in fig.axes:
            ax.set_xticks(
                ax.get_xticks(), [names[s] for s in order], rotation=20, ha="right"
            )
        student = " / ".join(str(int(k)) for k in sorted(set(summary.student)))
        fig.suptitle(
            (title or "Trivial imitation")
            + f"\nweak accuracy about {weak:.2f}; student k = {student}"
        )
    return fig


def plot_gain_vs_misfit(table: pd.DataFrame, *, title: str = "") -> Figure:
    """Gain (student - weak accuracy) against misfit (the student's disagreement
    with its weak labels), one point per condition (supervisor x student x method,
    mean over seeds), colored by method; the least-squares line, and the line
    ``gain = misfit`` that Charikar et al. (2024) bound the gain by from below for
    convex students. The fit's correlation and slope are in the legend."""
    from probe_lab.metrics import misfit_fit

    keys = ["supervisor", "student", "loss"]
    means = table.groupby(keys, sort=False)[["gain", "misfit"]].mean().reset_index()
    fit = misfit_fit(means.gain, means.misfit)
    with _style():
        fig = Figure(figsize=(10.5, 6.5), layout="constrained")
        ax = fig.add_subplot()
        ax.set_title(
            f"{int(fit['n'])} conditions; gain >= misfit in {fit['share_above']:.0%}"
        )
        methods = list(dict.fromkeys(means.loss))
        for method, color in zip(methods, _colors(len(methods), "tab10"), strict=True):
            rows = means[means.loss == method]
            ax.scatter(rows.misfit, rows.gain, s=28, color=color, label=method)
        span = np.linspace(0, max(float(means.misfit.max()), 1e-3), 50)
        ax.plot(span, span, "k--", lw=1, label="gain = misfit")
        if np.isfinite(fit["slope"]):
            ax.plot(
                span,
                fit["intercept"] + fit["slope"] * span,
                color="0.4",
                lw=1.5,
                label=f"fit: slope {fit['slope']:.2f}, r = {fit['correlation']:.2f}",
            )
        ax.axhline(0, color="0.6", lw=0.8)
        ax.set_xlabel("misfit: student disagrees with weak labels (labelled rows)")
        ax.set_ylabel("gain: student accuracy - weak accuracy (test)")
        ax.legend(loc="best")
        fig.suptitle(title or "Gain against misfit (means over seeds)")
    return fig


def plot_leaderboard(board, *, title: str = "") -> Figure:
    """Mean PGR per method with its interval over seeds: one panel for all tasks
    (the leaderboard's order, best on top), one per task; the baseline's PGR as a
    dashed line. ``board`` is a :class:`probe_lab.leaderboard.Leaderboard`."""
    methods = list(board.overall.method)
    tasks = list(dict.fromkeys(board.per_task.task))
    panels = [
        (
            "all tasks",
            board.overall.rename(columns={"pgr_low": "low", "pgr_high": "high"}),
        )
    ]
    panels += [(task, board.per_task[board.per_task.task == task]) for task in tasks]
    y = np.arange(len(methods))[::-1]
    cols = min(len(panels), 5)
    rows = -(-len(panels) // cols)
    with _style():
        width = max(3.4 * cols + 2.5, 10.5)
        height = rows * (1.0 + 0.45 * len(methods)) + 0.8
        fig = Figure(figsize=(width, height), layout="constrained")
        grid = _panels(fig, len(panels), cols, sharey=True).reshape(-1)
        axes = grid[: len(panels)]
        for ax, (name, frame) in zip(axes, panels, strict=True):
            frame = frame.set_index("method").reindex(methods)
            err = np.vstack([frame.pgr - frame.low, frame.high - frame.pgr])
            colors = ["#cc6677" if m == board.baseline else "#4477aa" for m in methods]
            ax.errorbar(
                frame.pgr,
                y,
                xerr=np.nan_to_num(err),
                fmt="none",
                ecolor="0.5",
                capsize=3,
            )
            ax.scatter(frame.pgr, y, c=colors, zorder=3, s=30, label="mean PGR")
            base = frame.pgr.get(board.baseline, np.nan)
            if np.isfinite(base):
                ax.axvline(
                    base, color="#cc6677", ls="--", lw=1, label=f"{board.baseline}"
                )
            ax.axvline(0, color="0.6", lw=0.8)
            if frame.pgr.isna().all():
                ax.text(
                    0.5,
                    0.5,
                    "no cell with a gap",
                    transform=ax.transAxes,
                    ha="center",
                    va="center",
                )
            ax.set_title(name)
            ax.set_xlabel("PGR")
        axes[0].set_yticks(y, methods)
        for ax in grid[::cols]:
            ax.set_ylabel("method")
        axes[0].legend(loc="lower right")
        level = f"{board.confidence:.0%}"
        fig.suptitle(title or f"Methods ranked by PGR ({level} t-intervals over seeds)")
    return fig


def plot_sample_size(summary: pd.DataFrame, *, title: str = "") -> Figure:
    """PGR (left) and agreement with the weak labels (right) against the number of
    weak-labelled training rows, one line per supervisor (the simulatable M_k and
    random flips at its accuracy), with the bootstrap intervals over seeds.

    Args:
        summary: ``StudyResult.summary()`` rows with a ``labelled`` column (rows
            the students learn from) for each study size.
    """
    sups = list(dict.fromkeys(summary.supervisor))
    with _style():
        fig = Figure(figsize=(12.0, 5.0), layout="constrained")
        left, right = fig.subplots(1, 2)
        for sup, color in zip(sups, _colors(len(sups), "tab10"), strict=True):
            rows = summary[summary.supervisor == sup].sort_values("labelled")
            err = np.vstack([rows.pgr - rows.pgr_low, rows.pgr_high - rows.pgr])
            left.errorbar(
                rows.labelled,
                rows.pgr,
                yerr=np.nan_to_num(err),
                marker="o",
                color=color,
                capsize=3,
                label=sup,
            )
            right.plot(
                rows.labelled, rows.agreement, marker="o", color=color, label=sup
            )
        left.axhline(0, color="0.5", lw=0.8)
        span = summary.labelled.min() / 1.3, summary.labelled.max() * 1.3
        sizes = sorted({int(v) for v in summary.labelled})
        for ax in (left, right):
            ax.set_xscale("log")
            ax.set_xlim(*span)  # also where every PGR is NaN (no data to scale)
            ax.set_xticks(sizes, [str(v) for v in sizes])
            ax.minorticks_off()
            ax.set_xlabel("weak-labelled training rows (student split)")
        left.set_ylabel("PGR")
        low = summary.pgr_low.min() if summary.pgr_low.notna().any() else 0.0
        cut = " (axis cut at -1.5)" if low < -1.5 else ""
        if cut:
            left.set_ylim(bottom=-1.55)
        left.set_title(
            f"PGR (95% bootstrap interval over seeds){cut}"
            if summary.pgr.notna().any()
            else "PGR undefined: the ceiling is not above the weak accuracy"
        )
        right.set_ylabel("student agrees with the weak labels (test)")
        right.set_title("imitation of the weak labels")
        left.legend(loc="best")
        fig.suptitle(title or "PGR against data size")
    return fig


def plot_task_suite(summary: pd.DataFrame, *, title: str = "") -> Figure:
    """PGR per supervisor on every task (largest student), one panel per task:
    each natural supervisor (a bag-of-words probe, a rule, M_k) in color and the
    random flips at its accuracy hatched beside it, with the bootstrap intervals;
    each panel's title gives the MiniLM ceiling. Tasks with no gap show n/a."""
    tasks = list(dict.fromkeys(summary.task))
    cols = min(3, len(tasks))
    rows = -(-len(tasks) // cols)
    with _style():
        width = max(5.2 * cols, 10.5)
        fig = Figure(figsize=(width, 3.6 * rows + 1.2), layout="constrained")
        axes = _panels(fig, len(tasks), cols).reshape(-1)
        for ax, task in zip(axes, tasks, strict=False):
            frame = summary[summary.task == task]
            natural = [s for s in dict.fromkeys(frame.supervisor) if "@" not in s]
            x = np.arange(len(natural))
            for offset, prefix, hatch in ((-0.2, "", None), (0.2, "random@", "//")):
                rows_ = frame.set_index("supervisor").reindex(
                    [prefix + s for s in natural]
                )
                err = np.vstack([rows_.pgr - rows_.pgr_low, rows_.pgr_high - rows_.pgr])
                ax.bar(
                    x + offset,
                    rows_.pgr.fillna(0.0),
                    width=0.4,
                    yerr=np.nan_to_num(err),
                    color=_colors(len(natural), "tab10")[: len(natural)],
                    hatch=hatch,
                    edgecolor="0.3",
                    capsize=3,
                    label="random flips at its accuracy" if prefix else "supervisor",
                )
                for xi, value in zip(x + offset, rows_.pgr, strict=True):
                    if not np.isfinite(value):
                        ax.text(xi, 0, "n/a", ha="center", va="bottom", fontsize=10)
            ax.axhline(0, color="0.5", lw=0.8)
            ax.set_xticks(x, natural)
            ax.set_ylabel("PGR")
            ceiling = frame.ceiling_acc.mean()
            ax.set_title(f"{task} (ceiling {ceiling:.2f})")
        axes[0].legend(loc="best")
        fig.suptitle(
            (title or "The task suite")
            + "\nPGR of the largest student (xent), 95% bootstrap intervals over seeds"
        )
    return fig
