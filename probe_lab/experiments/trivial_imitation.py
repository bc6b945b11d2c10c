"""Fig. 27 analog: weak labels the student can trivially see (Burns et al. 2023,
Appendix E.2).

A weak probe M_k labels every row out of fold. The same weak labels are then hidden
(students see the original features), appended to the features as a +-scale column,
and written into the prompt: the cache's model is re-extracted on
``hint_template`` (once per labels and template; reused after). Random errors at the
same accuracy, hidden and as a feature, are the contrast. Two studies: the original
features and the hinted ones.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from activation_cache import Cache, open_cache
from probe_lab import metrics, plots, train_probes
from probe_lab.basis import standardizes, to_basis
from probe_lab.experiments.base import (
    Analysis,
    Context,
    Finding,
    diff_text,
    fieller_text,
    fmt,
    paired,
    rows_of,
    seed_pgr,
    seed_values,
    shown,
    strongest,
    summary_frame,
)
from probe_lab.experiments.caches import (
    is_complete,
    reextract,
    source_model,
    write_task,
)
from probe_lab.experiments.config import (
    ExperimentConfig,
    ExperimentError,
    register_kind,
)
from probe_lab.study import Supervisor
from probe_lab.study.data import load_study_data, study_layer

__all__ = [
    "CLAIM",
    "KIND",
    "Settings",
    "check",
    "check_settings",
    "hint_labels",
    "hinted_cache",
    "imitation_supervisors",
    "plot",
    "prompt_supervisors",
    "run",
    "supervisor_sets",
]

CLAIM = (
    "When the weak label is trivially visible to the student, cross-entropy students "
    "copy it (PGR falls towards 0); the confidence loss resists the imitation."
)
"""The paper's finding."""


def imitation_supervisors(k: int | None, hinted: str, scale: float) -> list[Supervisor]:
    """The original-features study: M_k, its out-of-fold labels hidden (read from
    the ``hinted`` cache's ``weak`` field) and as a feature, random errors hidden
    and as a feature."""
    return [
        Supervisor(kind="probe", k=k),
        Supervisor(kind="column", field="weak", cache=hinted, name="weak"),
        Supervisor(kind="imitation", base="weak", scale=scale, name="weak as feature"),
        Supervisor(kind="random", name="random"),
        Supervisor(
            kind="imitation", base="random", scale=scale, name="random as feature"
        ),
    ]


def prompt_supervisors() -> list[Supervisor]:
    """The hinted-features study: the weak labels that were written into the
    prompts."""
    return [Supervisor(kind="column", field="weak", name="weak in prompt")]


def supervisor_sets(config: ExperimentConfig) -> list[list[Supervisor]]:
    """The supervisors of both studies (the hinted cache named by a placeholder)."""
    return [
        imitation_supervisors(config.settings.hint_k, "<cache>", config.settings.scale),
        prompt_supervisors(),
    ]


def run(ctx: Context) -> Analysis:
    """Hint labels, the hinted cache, both studies; PGR and agreement per way of
    showing the weak labels."""
    config = ctx.config
    ctx.log("training the weak probe that writes the hints")
    weak, acc = hint_labels(config, ctx.cache)
    ctx.log(f"hint accuracy {acc:.3f} (out-of-fold M_{config.settings.hint_k})")
    hinted = hinted_cache(ctx, weak)
    sups = imitation_supervisors(
        config.settings.hint_k, str(hinted), config.settings.scale
    )
    studies = {
        "original": ctx.study(sups),
        "in prompt": ctx.study(prompt_supervisors(), cache=hinted),
    }
    summary = pd.concat(
        [strongest(summary_frame(r, study=s)) for s, r in studies.items()],
        ignore_index=True,
    )
    fig = plot(summary, title=ctx.title)
    table = pd.concat(
        [strongest(r.table).assign(study=s) for s, r in studies.items()],
        ignore_index=True,
    )
    return Analysis(studies, check(table), [ctx.save(fig)])


def hint_labels(config: ExperimentConfig, cache: Path) -> tuple[np.ndarray, float]:
    """Out-of-fold predictions of the weak probe M_k: two folds, each labelled by a
    probe trained (with the study's protocol) on the other one. M_k counts in the
    study's own basis, fit on the same rows as the study's, so it is the same M_k
    the study trains.

    Returns:
        ``(n,)`` int8 weak labels and their accuracy.
    """
    study = config.study_config(cache)
    opened = open_cache(cache)
    fit_rows = load_study_data(study, [], []).basis_rows
    x = to_basis(
        opened.features(study_layer(study, opened)),
        study.basis,
        fit_rows,
        whiten=study.whiten,
    )
    truth = np.asarray(opened.labels, np.int8)
    n, d = x.shape
    k = d if config.settings.hint_k is None else config.settings.hint_k
    if k > d:
        raise ExperimentError(
            f"{config.source}: hint_k = {k} exceeds the {d} features of {cache}"
        )
    rng = np.random.default_rng(0)
    fold = rng.permutation(n) % 2
    val = rng.random(n) < study.val_frac
    train = np.stack([(fold == f) & ~val for f in (0, 1)])
    mask = np.zeros((2, d), bool)
    mask[:, :k] = True
    probes = train_probes(
        x,
        np.stack([truth, truth]).astype(np.float32),
        train,
        np.stack([(fold == f) & val for f in (0, 1)]),
        feature_mask=mask,
        config=dataclasses.replace(
            study.train,
            loss="xent",
            standardize=study.train.standardize
            and standardizes(study.basis, study.whiten),
        ),
        key=0,
    )
    proba = np.asarray(probes.predict_proba(x))
    weak = (np.where(fold == 0, proba[1], proba[0]) >= 0.5).astype(np.int8)
    return weak, float((weak == truth).mean())


def hinted_cache(ctx: Context, weak: np.ndarray) -> Path:
    """Re-extract the run's cache with the weak label written into each prompt
    (reused when the same labels and template were extracted before).

    Returns:
        The hinted cache; its extra fields ``hint`` and ``weak`` hold the words and
        labels shown.
    """
    config = ctx.config
    opened = open_cache(ctx.cache)
    template = config.settings.hint_template.replace(
        "{text}", str(opened.meta.get("template"))
    )
    digest = hashlib.sha256(
        weak.tobytes() + json.dumps([template, *config.settings.hint_words]).encode()
    ).hexdigest()[:8]
    path = ctx.cache_dir / f"{ctx.cache.stem}-hint-{digest}.h5"
    if is_complete(path):
        ctx.log(f"reusing the hinted cache {path}")
        return path
    task = _write_task(
        opened, weak, config.settings.hint_words, path.with_suffix(".jsonl")
    )
    model = source_model(opened.meta)
    ctx.log(f"re-extracting {model} with the weak label in each prompt")
    try:
        return reextract(opened, task, template, path, progress=ctx.progress)
    except ExperimentError as err:
        raise ExperimentError(
            f"{err}\nThe trivial_imitation experiment re-runs the cache's model "
            f"({model!r}), which must load offline here; a cache without a loadable "
            "model can run every other experiment."
        ) from err


def _write_task(
    opened: Cache, weak: np.ndarray, words: tuple[str, str], path: Path
) -> Path:
    """The cache's rows as a JSONL task, with the hint word and weak label added."""
    shown = np.asarray(words, dtype=object)[weak]
    extra = {"hint": [str(w) for w in shown], "weak": [str(int(w)) for w in weak]}
    return write_task(opened, path, extra)


def check(table: pd.DataFrame) -> list[Finding]:
    """The claims, on the largest student's per-seed rows of both studies (the
    hinted cache has the same rows, so a seed's split is the same in both). Each
    is a paired per-seed difference: the gain ``student - weak`` hidden minus
    visible, the student accuracy confidence minus xent; Holm over all of them."""
    table = table.assign(gain=table.student_acc - table.weak_acc)
    tests = []  # (claim, measured, diff, pgrs judged on)
    hidden = seed_pgr(table, supervisor="weak", loss="xent")
    for way in ("weak as feature", "weak in prompt"):
        if not {way, "weak"} <= set(table.supervisor):
            continue
        visible = seed_pgr(table, supervisor=way, loss="xent")
        agree = [
            fmt(seed_values(table, "agreement", supervisor=s, loss="xent").mean())
            for s in (way, "weak")
        ]
        diff = paired(
            seed_values(table, "gain", supervisor="weak", loss="xent"),
            seed_values(table, "gain", supervisor=way, loss="xent"),
        )
        tests.append(
            (
                f"Cross-entropy students imitate a visible weak label ({way}): PGR "
                "falls and agreement rises against the same labels hidden.",
                f"PGR {fieller_text(visible)} vs hidden {fieller_text(hidden)}; "
                f"agreement {agree[0]} vs {agree[1]}; gain hidden - visible",
                diff,
                (visible, hidden),
            )
        )
    for way in ("weak as feature", "weak in prompt", "random as feature"):
        if not {"xent", "confidence"} <= set(rows_of(table, supervisor=way).loss):
            continue
        pgrs = tuple(
            seed_pgr(table, supervisor=way, loss=x) for x in ("confidence", "xent")
        )
        diff = paired(
            seed_values(table, "student_acc", supervisor=way, loss="confidence"),
            seed_values(table, "student_acc", supervisor=way, loss="xent"),
        )
        tests.append(
            (
                f"The confidence loss resists imitation ({way}): higher PGR than "
                "cross-entropy.",
                f"PGR confidence {fieller_text(pgrs[0])} vs xent "
                f"{fieller_text(pgrs[1])}; "
                "accuracy confidence - xent",
                diff,
                pgrs,
            )
        )
    adjusted = metrics.holm([t[2].p_value for t in tests])
    return [
        Finding(
            claim=claim,
            measured=f"{measured} {diff_text(diff, a)}",
            held=None if any(r.reason for r in pgrs) else shown(diff, a),
        )
        for (claim, measured, diff, pgrs), a in zip(tests, adjusted, strict=True)
    ]


def plot(summary: pd.DataFrame, *, title: str = "") -> Figure:
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
    with plots.style():
        fig = plots.pgr_and_agreement(
            summary,
            order,
            "agreement",
            titles=(
                "PGR (95% Fieller interval over seeds)",
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


@dataclasses.dataclass(frozen=True, kw_only=True)
class Settings:
    """The ``[experiment]`` keys of ``trivial_imitation``."""

    hint_k: int | None = None
    """The weak probe whose prediction becomes the hint (first k principal
    components; None: all features)."""

    hint_words: tuple[str, str] = ("false", "true")
    """How the hint reads for weak label 0 and 1."""

    hint_template: str = "{text} I think this is {hint}. What do you think?"
    """Prompt of the re-extraction (``{text}`` is the original prompt)."""

    scale: float = 1.0
    """Size of the weak label as an extra feature (in units of the standardized
    features), > 0."""


def check_settings(values: Mapping[str, Any]) -> None:
    """Two different hint words, a template with both fields, a positive scale."""
    if len(set(values["hint_words"])) != 2:
        raise ValueError(
            "[experiment] hint_words must be two different words, for weak label 0 "
            "and 1 (e.g. ['false', 'true'])"
        )
    template = values["hint_template"]
    if "{text}" not in template or "{hint}" not in template:
        raise ValueError("[experiment] hint_template must contain {text} and {hint}")
    if values["scale"] <= 0:
        raise ValueError("[experiment] scale must be > 0")


KIND = register_kind(
    name="trivial_imitation",
    claim=CLAIM,
    run=run,
    settings=Settings,
    ranges={"hint_k": (1, math.inf)},
    check=check_settings,
    supervisor_sets=supervisor_sets,
)
"""The experiment kind."""
