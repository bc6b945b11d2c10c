"""Weak-to-strong studies on cached features, after Burns et al. (2023), App. E.

A study trains, for every seed:

1. **ground-truth probes** (:func:`train_ground_truth`, one compiled call per
   feature source): strong ceilings, one per student feature set, on the student
   split; the weak probes every supervisor kind asks for (a weak model, the M_k that
   mixtures and bootstrapping start from) on the weak split;
2. **weak labels** (:func:`make_labels`) for the student split and the test split,
   one function per supervisor kind (:mod:`probe_lab.supervisors`): a weak probe's
   predictions, a synthetic error structure at a matched accuracy
   (:mod:`probe_lab.weak_labels`), or a label made visible as an extra feature
   (``imitation``);
3. **students** (:func:`train_students`, one call): every supervisor x student
   feature set x loss x seed, trained on the weak labels with early stopping on
   agreement with them;
4. **bootstrapping** (:func:`train_bootstrap`, one call per step): a chain of
   students of growing k, each trained on the previous one's labels (Section
   4.3.1).

Each stage takes data and returns data; :func:`run_study` chains them.

Choices where the paper is silent, stated here and in the README:

* Splits follow Appendix E.1's proportions (:mod:`probe_lab.study_data`).
* The k-feature family M_k uses the first k principal components (``basis="pca"``,
  fit without labels on the seed-0 training rows), so that k orders strength; raw
  residual-stream coordinates (``basis="raw"``) carry no such order.
* Synthetic labellers label both the student split and the test split at the target
  accuracy, so agreement can be measured on test. Their ``weak_acc`` is that exact
  accuracy; a probe supervisor's ``weak_acc`` is its test accuracy.
* The ``strong_*`` structures rank rows by the strong ceiling of the largest student
  k (trained on the student split with ground truth).
* The loss grid runs in one call: each probe's loss method is data of the compiled
  trainer (:mod:`probe_lab.losses`), so every method shares one program.
"""

from __future__ import annotations

import dataclasses
import json
import time
import tomllib
import zlib
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np
import pandas as pd

from probe_lab import metrics
from probe_lab._jax import count_compilations
from probe_lab.basis import standardizes
from probe_lab.config import TrainConfig
from probe_lab.label_methods import LabelMethodError, get_label_method
from probe_lab.loader import from_mapping
from probe_lab.losses import get_loss
from probe_lab.methods import Condition, Method, MethodError, conditions, method_from
from probe_lab.registry import RegistryError
from probe_lab.study_data import StudyData, load_study_data
from probe_lab.supervisors import (
    LabelContext,
    StudyError,
    Supervisor,
    WeakLabels,
    WeakProbe,
)
from probe_lab.train import _train_round, train_probes

__all__ = [
    "Method",
    "StudyConfig",
    "StudyError",
    "StudyResult",
    "Supervisor",
    "make_labels",
    "run_study",
    "train_bootstrap",
    "train_ground_truth",
    "train_students",
]


def _parse_students(value: Any) -> Any:
    """TOML has no None: ``"all"`` in a list of student sizes means all features."""
    if isinstance(value, list | tuple):
        return [None if v == "all" else v for v in value]
    return value


def _parse_methods(value: Any) -> Any:
    """A method may be named by a bare string in TOML."""
    if isinstance(value, list | tuple):
        return [{"name": v} if isinstance(v, str) else v for v in value]
    return value


def _default_supervisors() -> tuple[Supervisor, ...]:
    return (Supervisor(kind="probe", k=8),)


@dataclasses.dataclass(frozen=True, kw_only=True)
class StudyConfig:
    """A weak-to-strong study on cached features."""

    cache: str
    """Path of the strong model's cache (students and ceilings use it)."""

    layer: int | None = None
    """Layer of ``cache`` for students (hidden_states index; negative counts from
    the last stored layer). None: the task's recommended layer for a MiniLM cache
    of a built-in task (``activation_cache.TASK_INFO``), else the last layer."""

    basis: str = "pca"
    """Coordinates that the k-feature family counts in: ``pca`` (principal
    components, fit without labels on seed 0's training rows, by decreasing
    variance) or ``raw`` (the stored coordinates, each z-scored by the trainer)."""

    whiten: bool = False
    """``pca`` only. False: all components share one scale, so they keep their
    relative variances and, with every feature, ``pca`` sees a rotation of the
    centred features. True: each component is scaled to unit variance on the
    training rows (whitening), which makes a low-variance direction as loud as the
    first; the choice changes results (docs/experiments.md)."""

    supervisors: tuple[Supervisor, ...] = dataclasses.field(
        default_factory=_default_supervisors
    )
    """Weak supervisors (see :class:`Supervisor`)."""

    students: tuple[int | None, ...] = dataclasses.field(
        default=(None,), metadata={"parse": _parse_students}
    )
    """Student feature sets: first k features, ``None`` (or ``"all"``) for all."""

    losses: tuple[str, ...] = ("xent",)
    """Student losses, each a loss method at its defaults (:mod:`probe_lab.losses`):
    ``xent``, ``confidence``, ``bootstrap_soft``, ``bootstrap_hard``, ``gce``, a
    registered name or an import path."""

    methods: tuple[Method, ...] = dataclasses.field(
        default=(), metadata={"parse": _parse_methods}
    )
    """More student methods after ``losses``: loss or label methods with
    parameters and grids (:mod:`probe_lab.methods`); TOML tables or names."""

    seeds: int = 3
    """Independent repetitions: each seed draws its own weak / student / test split
    (``resplit``) and its own minibatch orders."""

    resplit: bool = True
    """Draw a new weak/student/test split for every seed, so intervals over seeds
    cover the data as well as the optimization. False: every seed shares seed 0's
    split and only the minibatch order varies (the summary says which)."""

    test_frac: float = 0.2
    """Share of rows held out for testing."""

    weak_frac: float = 10 / 23
    """Share of the non-test rows that train weak supervisors (paper: 10k of 23k)."""

    val_frac: float = 0.1
    """Share of each training split held out for early stopping."""

    reference: str = ""
    """Probe supervisor whose accuracy synthetic structures match (default: the
    first probe supervisor)."""

    bootstrap: tuple[int, ...] = ()
    """A chain k0 < k1 < ... : M_k0 supervises k1, whose labels supervise k2, ..."""

    strong_folds: int = 2
    """Folds of the student split for the ``strong_*`` structures' ranking: each
    labelled row is ranked by a ceiling probe trained on the other folds (never on
    the row itself), test rows by the mean logit of the fold probes."""

    dynamics: bool = True
    """Record students' training loss, test accuracy and agreement every epoch
    (Fig. 26). False scores them once, at the chosen epoch, and saves a product over
    the test rows per epoch plus the loss record (those curves are then NaN; the
    validation agreement that drives early stopping is always kept)."""

    max_rows: int | None = None
    """Use a random subset of this many rows (quick runs)."""

    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    """How every probe is trained (the paper's protocol by default)."""

    def __post_init__(self) -> None:
        for name in ("supervisors", "students", "losses", "bootstrap"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        try:
            methods = tuple(method_from(m) for m in self.methods)
            object.__setattr__(self, "methods", methods)
            conditions(self.losses, methods)
        except MethodError as err:
            raise StudyError(str(err)) from None
        self._check_sizes()
        self._check_train()
        self._check_supervisors()

    def _check_sizes(self) -> None:
        if not self.supervisors and not self.bootstrap:
            raise StudyError("a study needs at least one supervisor or a bootstrap")
        if self.basis not in ("pca", "raw"):
            raise StudyError(f"basis must be 'pca' or 'raw', got {self.basis!r}")
        if self.whiten and self.basis != "pca":
            raise StudyError("whiten = true needs basis = 'pca'")
        if not self.conditions:
            raise StudyError("losses and methods name no student method")
        for loss in self.losses:
            try:
                get_loss(loss)
            except RegistryError as err:
                raise StudyError(f"losses must be loss methods: {err}") from None
        if not self.students:
            raise StudyError("students must list at least one k (or None for all)")
        if any(k is not None and k < 1 for k in self.students):
            raise StudyError("student k values must be >= 1")
        if self.seeds < 1:
            raise StudyError("seeds must be >= 1")
        if self.strong_folds < 2:
            raise StudyError("strong_folds must be >= 2 (out-of-fold ranking)")
        for name in ("test_frac", "weak_frac", "val_frac"):
            if not 0 < getattr(self, name) < 1:
                raise StudyError(f"{name} must lie in (0, 1)")
        chain = list(self.bootstrap)
        if len(chain) == 1 or chain != sorted(set(chain)):
            raise StudyError(
                f"bootstrap must be an increasing chain of at least two k values, "
                f"got {chain}"
            )

    def _check_train(self) -> None:
        train = self.train
        per_probe = [train.alpha_max, train.warmup_frac, train.lr, train.l2]
        per_probe += [v for _, v in train.loss_params]
        if not isinstance(train.loss, str) or not all(map(np.isscalar, per_probe)):
            raise StudyError(
                "[train] settings of a study are one value for all probes (the study "
                "sets each probe's loss and parameters from losses and methods)"
            )
        if train.solver != "adam":
            raise StudyError(
                "studies train with solver='adam' (the loss grid needs it)"
            )

    def _check_supervisors(self) -> None:
        names = [s.label for s in self.supervisors]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise StudyError(f"supervisor names must be unique; repeated: {dupes}")
        probes = [s.label for s in self.supervisors if s.kind == "probe"]
        if self.reference and self.reference not in probes:
            raise StudyError(
                f"reference {self.reference!r} is not a probe supervisor; probe "
                f"supervisors: {probes}"
            )
        needs_ref = [
            s.label
            for s in self.supervisors
            if s.kind_spec.matches_reference and s.accuracy is None and not s.match
        ]
        for s in self.supervisors:
            if s.match and s.match not in names:
                raise StudyError(
                    f"supervisor {s.label}: match {s.match!r} is not a supervisor "
                    f"name ({sorted(names)})"
                )
            if s.match and not s.kind_spec.matches_reference:
                raise StudyError(
                    f"supervisor {s.label}: match= is for synthetic structures, "
                    f"not kind {s.kind!r}"
                )
            if (
                s.match
                and next(t for t in self.supervisors if t.label == s.match).match
            ):
                raise StudyError(
                    f"supervisor {s.label}: match {s.match!r} itself matches "
                    f"another supervisor; match that one"
                )
        if needs_ref and not probes:
            raise StudyError(
                f"supervisors {needs_ref} match a reference probe's accuracy but "
                f"there is no probe supervisor: add one or set accuracy= on them"
            )
        if len({s.scale for s in self.supervisors if s.kind == "imitation"}) > 1:
            raise StudyError("imitation supervisors of one study must share one scale")
        for s in self.supervisors:
            s.kind_spec.check(s, self.supervisors)

    @property
    def conditions(self) -> list[Condition]:
        """The student conditions: ``losses``, then ``methods``' grid points."""
        return conditions(self.losses, self.methods)

    @property
    def reference_name(self) -> str:
        if self.reference:
            return self.reference
        probes = [s.label for s in self.supervisors if s.kind == "probe"]
        return probes[0] if probes else ""

    def to_dict(self) -> dict[str, Any]:
        """A JSON/TOML-ready dict that :meth:`from_dict` reads back."""
        out = dataclasses.asdict(self)
        out["supervisors"] = [dataclasses.asdict(s) for s in self.supervisors]
        out["methods"] = [dataclasses.asdict(m) for m in self.methods]
        out["train"]["loss_params"] = dict(self.train.loss_params)
        return _drop_none(out)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, where: str = "") -> StudyConfig:
        """Build from plain data (a parsed TOML file) with the one config loader
        (:func:`probe_lab.loader.from_mapping`): unknown keys and wrong types are
        refused naming the key path (``study.train.epochs``)."""
        return from_mapping(cls, data, where=where)

    @classmethod
    def from_toml(cls, path: str | Path) -> StudyConfig:
        """Read a study from a TOML file: top-level settings (or a ``[study]``
        table), ``[train]``, ``[[supervisors]]`` and ``[[methods]]`` tables. Every
        relative cache path (the study's, a supervisor's, an ensemble member's) is
        resolved against the file's folder, never the current one."""
        path = Path(path)
        try:
            with path.open("rb") as f:
                data = tomllib.load(f)
        except tomllib.TOMLDecodeError as err:
            raise StudyError(f"{path} is not valid TOML: {err}") from None
        where = "study" if "study" in data else ""
        data = data.get("study", data)
        if not isinstance(data, Mapping) or not data:
            raise StudyError(
                f"{path} holds no study settings: give at least cache = '...' (at "
                f"the top level or in a [study] table)"
            )
        return cls.from_dict(_resolve_paths(data, path.parent), where=where)


def _resolve_paths(data: Mapping[str, Any], folder: Path) -> dict[str, Any]:
    """``data`` with every relative ``cache`` resolved against ``folder``."""

    def fix(value: Any) -> Any:
        if isinstance(value, str) and not Path(value).is_absolute():
            return str((folder / value).resolve())
        return value

    data = dict(data)
    if "cache" in data:
        data["cache"] = fix(data["cache"])
    if not isinstance(data.get("supervisors"), list):
        return data
    sups = []
    for entry in data["supervisors"]:
        if isinstance(entry, Mapping):
            entry = dict(entry)
            if "cache" in entry:
                entry["cache"] = fix(entry["cache"])
            params = entry.get("params")
            if isinstance(params, Mapping) and isinstance(params.get("members"), list):
                members = [
                    {**m, "cache": fix(m["cache"])}
                    if isinstance(m, Mapping) and "cache" in m
                    else m
                    for m in params["members"]
                ]
                entry["params"] = {**params, "members": members}
        sups.append(entry)
    data["supervisors"] = sups
    return data


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [("all" if v is None else _drop_none(v)) for v in value]
    return value


@dataclasses.dataclass(frozen=True)
class StudyResult:
    """Tidy outputs of :func:`run_study`."""

    table: pd.DataFrame
    """One row per (supervisor, student, loss, seed)."""
    dynamics: pd.DataFrame
    """One row per (supervisor, student, loss, seed, epoch)."""
    config: StudyConfig
    fingerprints: dict[str, Any]
    """What the study read: cache paths, model names, task fingerprints, layers."""
    stages: list[dict[str, Any]]
    """Per stage: probes, rows, width, epochs, seconds, compilations."""

    @property
    def interval_covers(self) -> str:
        """What the variation over seeds includes: the data split (``resplit``)
        and the minibatch order, or the order only."""
        resplit = getattr(self.config, "resplit", False)
        return "split and minibatch order" if resplit else "minibatch order only"

    def summary(self, *, confidence: float = 0.95) -> pd.DataFrame:
        """Mean accuracies and PGR per (supervisor, student, loss), with a
        percentile bootstrap interval of PGR over seeds. ``pgr_dropped`` counts
        bootstrap resamples without a gap (left out of the interval); ``interval``
        says what the seeds vary."""
        rows = []
        keys = ["supervisor", "student", "loss"]
        covers = f"{confidence:.0%} bootstrap over seeds ({self.interval_covers})"
        for key, group in self.table.groupby(keys, sort=False):
            values, dropped = metrics.bootstrap_pgr_samples(
                group.weak_acc, group.student_acc, group.ceiling_acc
            )
            low = high = float("nan")
            if len(group) >= 2 and values.size:
                tail = (1 - confidence) / 2
                low, high = (float(v) for v in np.quantile(values, [tail, 1 - tail]))
            point = metrics.pgr(
                group.weak_acc.mean(),
                group.student_acc.mean(),
                group.ceiling_acc.mean(),
                warn=False,
            )
            rows.append(
                dict(
                    zip(keys, key, strict=True),
                    kind=group.kind.iloc[0],
                    seeds=len(group),
                    weak_acc=group.weak_acc.mean(),
                    student_acc=group.student_acc.mean(),
                    ceiling_acc=group.ceiling_acc.mean(),
                    pgr=float(point),
                    pgr_low=low,
                    pgr_high=high,
                    pgr_dropped=dropped,
                    interval=covers,
                    agreement=group.agreement.mean(),
                    agreement_weak_wrong=group.agreement_weak_wrong.mean(),
                    agreement_weak_right=group.agreement_weak_right.mean(),
                )
            )
        return pd.DataFrame(rows)

    def save(self, out: str | Path) -> Path:
        """Write the table and dynamics (Parquet if pyarrow is installed, else CSV),
        the resolved config and the cache fingerprints into ``out``."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        for name, frame in (("table", self.table), ("dynamics", self.dynamics)):
            try:
                frame.to_parquet(out / f"{name}.parquet", index=False)
            except ImportError:
                frame.to_csv(out / f"{name}.csv", index=False)
        self.summary().to_csv(out / "summary.csv", index=False)
        (out / "config.json").write_text(json.dumps(self.config.to_dict(), indent=2))
        (out / "fingerprints.json").write_text(
            json.dumps(self.fingerprints, indent=2, default=str)
        )
        (out / "stages.json").write_text(json.dumps(self.stages, indent=2))
        if {"gain", "misfit"} <= set(self.table):
            from probe_lab import plots

            plots.save(
                plots.plot_gain_vs_misfit(self.table), out / "gain_vs_misfit.png"
            )
        return out

    @classmethod
    def load(cls, folder: str | Path) -> StudyResult:
        """Read back a study that :meth:`save` wrote into ``folder``: table,
        dynamics, config, fingerprints and stages."""
        folder = Path(folder)
        frames = {}
        for name in ("table", "dynamics"):
            parquet = folder / f"{name}.parquet"
            frames[name] = (
                pd.read_parquet(parquet)
                if parquet.is_file()
                else pd.read_csv(folder / f"{name}.csv")
            )

        def read(name: str) -> Any:
            return json.loads((folder / name).read_text())

        return cls(
            table=frames["table"],
            dynamics=frames["dynamics"],
            config=StudyConfig.from_dict(read("config.json")),
            fingerprints=read("fingerprints.json"),
            stages=read("stages.json"),
        )

    def misfit_fit(self) -> dict[str, float]:
        """Gain against misfit over the study's conditions (means over seeds):
        correlation, slope, intercept and the share with gain >= misfit
        (:func:`probe_lab.metrics.misfit_fit`)."""
        keys = ["supervisor", "student", "loss"]
        means = self.table.groupby(keys, sort=False)[["gain", "misfit"]].mean()
        return metrics.misfit_fit(means.gain, means.misfit)


# ------------------------------------------------------------------------ stages


@dataclasses.dataclass
class StageProbe:
    """One probe of a stage: what it trains on and what it is called."""

    seed: int
    k: int  # features used (<= d)
    targets: np.ndarray  # (n,) labels in [0, 1]
    train: np.ndarray  # (n,) bool
    val: np.ndarray  # (n,) bool
    name: str = ""
    loss: str = "xent"  # the loss method
    condition: Condition | None = None  # the student condition (None: loss alone)
    imitation: np.ndarray | None = None  # (n,) extra column for this probe
    reference: np.ndarray | None = None  # (n,) hard weak labels for agreement
    weight: np.ndarray | None = None  # (n,) row weights from a label method
    weak: np.ndarray | None = None  # (n,) the supervisor's labels (before relabel)
    group: int | None = None  # minibatch order group (default: the seed)

    @property
    def label(self) -> str:
        """The ``loss`` column: the condition's label."""
        return self.condition.label if self.condition else self.loss

    @property
    def loss_params(self) -> dict[str, float]:
        return self.condition.loss_params if self.condition else {}


@dataclasses.dataclass
class Trained:
    """A trained stage: the probes, their probabilities on every row, a record."""

    probes: list[StageProbe]
    trained: Any  # probe_lab.Probes
    proba: np.ndarray  # (P, n) P(label 1)
    record: dict[str, Any]  # probes, rows, width, epochs, seconds, compilations


@dataclasses.dataclass
class Ranking:
    """Out-of-fold logits of strong ceiling probes for one seed (``strong_*``)."""

    logits: np.ndarray  # (n,) the logit that ranks each row
    source: np.ndarray  # (n,) int: the fold probe whose logit it is (-1: mean)
    folds_train: np.ndarray  # (K, n) bool: the rows each fold probe trained on


@dataclasses.dataclass
class GroundTruth:
    """Stage 1: ground-truth probes of every seed."""

    proba: dict[tuple[str, int], np.ndarray]  # (name, seed) -> (n,) P(label 1)
    ceiling_acc: dict[tuple[int, int], float]  # (k, seed) -> test accuracy
    ranking: dict[int, Ranking]  # seed -> out-of-fold strong logits (if needed)
    records: list[dict[str, Any]]


@dataclasses.dataclass
class Scored:
    """Students of a stage, scored: one table row per probe, dynamics per epoch."""

    table: pd.DataFrame
    dynamics: pd.DataFrame
    records: list[dict[str, Any]]


def _features_with_imitation(x: np.ndarray, probes: list[StageProbe], gain: float):
    """Append one column per distinct imitation label set (supervisor x seed)."""
    d = x.shape[1]
    mask = np.zeros((len(probes), d), bool)
    for i, p in enumerate(probes):
        mask[i, : p.k] = True
    extra = [p for p in probes if p.imitation is not None]
    if not extra:
        return x, mask, None
    columns, col_of = [], {}
    for p in extra:
        key = p.imitation.tobytes()
        if key not in col_of:
            col_of[key] = len(columns)
            columns.append(p.imitation)
    features = np.concatenate([x, np.stack(columns, axis=1)], axis=1)
    gain_of = np.concatenate([np.ones(d), np.full(len(columns), gain)])
    mask = np.concatenate([mask, np.zeros((len(probes), len(columns)), bool)], 1)
    for i, p in enumerate(probes):
        if p.imitation is not None:
            mask[i, d + col_of[p.imitation.tobytes()]] = True
    return features, mask, gain_of


def _student_eval_sets(probes: list[StageProbe], data: StudyData) -> dict[str, Any]:
    """Per-epoch test accuracy and agreement with the weak labels (dynamics)."""
    test = data.splits["test"][[p.seed for p in probes]]
    ref = np.stack([p.reference for p in probes]).astype(bool)
    wrong = ref != data.truth.astype(bool)
    sets = {
        "test": (test, np.stack([data.truth] * len(probes))),
        "agreement": (test, ref),
    }
    for name, rows in (
        ("agreement_weak_wrong", test & wrong),
        ("agreement_weak_right", test & ~wrong),
    ):
        # A supervisor with no wrong (or no right) test labels leaves that
        # agreement undefined: score it on all test rows here and report NaN.
        sets[name] = (np.where(rows.any(axis=1)[:, None], rows, test), ref)
    return sets


def train_stage(
    name: str,
    x: np.ndarray,
    probes: list[StageProbe],
    config: StudyConfig,
    data: StudyData,
    *,
    gain: float = 1.0,
    basis: str | None = None,
    log: Callable[..., None] = print,
) -> Trained:
    """Train every probe of a stage in ONE ``train_probes`` call (``basis``: the
    features' basis, default the study's)."""
    features, mask, feature_gain = _features_with_imitation(x, probes, gain)
    students = all(p.reference is not None for p in probes)
    basis = config.basis if basis is None else basis
    train_config = dataclasses.replace(
        config.train,
        standardize=config.train.standardize
        and standardizes(basis, config.whiten and basis == config.basis),
        loss=tuple(p.loss for p in probes),
        loss_params=_per_probe_params(probes, config.train),
        record_loss=students and config.dynamics,
    )
    weights = None
    if any(p.weight is not None for p in probes):
        ones = np.ones(data.n, np.float32)
        weights = np.stack([ones if p.weight is None else p.weight for p in probes])
    eval_sets = _student_eval_sets(probes, data) if students and config.dynamics else {}
    train_rows = np.stack([p.train for p in probes])
    val_rows = np.stack([p.val for p in probes])
    start = time.perf_counter()
    trainers = _train_round._cache_size()
    with count_compilations() as compiles:
        trained = train_probes(
            features,
            np.stack([p.targets for p in probes]).astype(np.float32),
            train_rows,
            val_rows,
            feature_mask=mask,
            config=train_config,
            key=0,
            groups=np.array([p.seed if p.group is None else p.group for p in probes]),
            eval_sets=eval_sets,
            feature_gain=feature_gain,
            sample_weight=weights,
        )
        proba = np.asarray(trained.predict_proba(features))
    seconds = time.perf_counter() - start
    log(f"[study] {name}: {len(probes)} probes in {seconds:.1f}s")
    rows_per_probe = train_rows.sum(axis=1)
    test = data.splits["test"][[p.seed for p in probes]]
    record = dict(
        stage=name,
        probes=len(probes),
        rows=int(rows_per_probe.max()),
        mean_rows=float(rows_per_probe.mean()),
        d=int(features.shape[1]),
        epochs=int(config.train.epochs),
        eval_rows=int((test | val_rows).any(0).sum()),
        seconds=seconds,
        compilations=len(compiles),
        trainers=_train_round._cache_size() - trainers,
    )
    return Trained(probes, trained, proba, record)


def _per_probe_params(
    probes: list[StageProbe], train: TrainConfig
) -> dict[str, tuple[float, ...]]:
    """Each declared loss parameter, one value per probe: the probe's condition's
    value, else the study's ``train`` setting, else the method's default (probes
    whose method does not declare it hold the first declaring method's default)."""
    methods = {p.loss: get_loss(p.loss) for p in probes}
    fallback: dict[str, float] = {}
    for method in methods.values():
        for name, default in method.params:
            fallback.setdefault(name, default)
    out = {}
    for name in fallback:
        values = []
        for p in probes:
            declared = methods[p.loss].defaults
            if name not in declared:
                values.append(fallback[name])
                continue
            given = p.loss_params.get(name, train.param_value(name))
            values.append(float(declared[name] if given is None else given))
        out[name] = tuple(values)
    return out


def _source_name(source: tuple[str | None, int | None]) -> str:
    cache, layer = source
    if source == (None, None):
        return ""
    parts = ([Path(cache).name] if cache else []) + (
        [f"layer {layer}"] if layer is not None else []
    )
    return f" ({', '.join(parts)})"


def weak_probes(config: StudyConfig) -> dict[str, WeakProbe]:
    """Every ground-truth probe the supervisors (and the bootstrap chain) need."""
    out: dict[str, WeakProbe] = {}
    for sup in config.supervisors:
        for probe in sup.kind_spec.probes(sup):
            out.setdefault(probe.name, probe)
    if config.bootstrap:
        out.setdefault(
            f"M_{config.bootstrap[0]}",
            WeakProbe(f"M_{config.bootstrap[0]}", config.bootstrap[0]),
        )
    return out


def train_ground_truth(
    config: StudyConfig, data: StudyData, *, log: Callable[..., None] = print
) -> GroundTruth:
    """Stage 1: ceilings on the student split and weak probes on the weak split,
    one compiled call per feature source."""
    d = data.features.shape[1]
    seeds = range(config.seeds)
    sp = data.splits
    ceiling_ks = sorted({d if k is None else k for k in config.students})
    ceiling_ks = sorted(set(ceiling_ks) | set(config.bootstrap[1:]))
    by_source: dict[tuple, list[StageProbe]] = {}
    for seed in seeds:
        for k in ceiling_ks:
            by_source.setdefault((None, None), []).append(
                StageProbe(
                    seed=seed,
                    k=k,
                    targets=data.truth,
                    train=sp["student_train"][seed],
                    val=sp["student_val"][seed],
                    name=f"ceiling_{k}",
                )
            )
        by_source[(None, None)] += _ranking_probes(config, data, seed, max(ceiling_ks))
        for probe in weak_probes(config).values():
            width = data.sources[probe.source].shape[1]
            by_source.setdefault(probe.source, []).append(
                StageProbe(
                    seed=seed,
                    k=width if probe.k is None else probe.k,
                    targets=data.truth,
                    train=sp["weak_train"][seed],
                    val=sp["weak_val"][seed],
                    name=probe.name,
                    group=seed + config.seeds * probe.copy,
                )
            )
    proba: dict[tuple[str, int], np.ndarray] = {}
    records = []
    for source, probes in by_source.items():
        stage = train_stage(
            "ground truth" + _source_name(source),
            data.sources[source],
            probes,
            config,
            data,
            basis=data.bases[source],
            log=log,
        )
        records.append(stage.record)
        for p, row in zip(probes, stage.proba, strict=True):
            proba[(p.name, p.seed)] = row
    ceiling_acc = {
        (k, s): float(
            metrics.accuracy(proba[(f"ceiling_{k}", s)], data.truth, sp["test"][s])
        )
        for k in ceiling_ks
        for s in seeds
    }
    ranking = {s: _ranking(config, data, proba, s) for s in seeds}
    return GroundTruth(proba, ceiling_acc, ranking, records)


def _fold_of(config: StudyConfig, data: StudyData, seed: int) -> np.ndarray:
    """``(n,)`` the ranking fold of each labelled row of a seed (-1 elsewhere).

    Folds are dealt within the student training rows and within its validation
    rows separately, so each fold keeps the split's train / validation balance."""
    sp = data.splits
    rng = np.random.default_rng([seed, 7])
    fold = np.full(data.n, -1)
    for split in ("student_train", "student_val"):
        order = rng.permutation(np.flatnonzero(sp[split][seed]))
        fold[order] = np.arange(order.size) % config.strong_folds
    return fold


def _ranking_probes(
    config: StudyConfig, data: StudyData, seed: int, k: int
) -> list[StageProbe]:
    """The K ceiling probes whose out-of-fold logits rank rows for ``strong_*``
    structures: probe f learns only from the labelled rows outside fold f.

    They share the ceilings' row sets and minibatch order, with weight 0 on their
    own fold's rows (no gradient, no say in early stopping), so they train in the
    ceilings' piece: the same products, not pieces of their own."""
    if not any(s.kind_spec.strong_ranking for s in config.supervisors):
        return []
    fold, sp = _fold_of(config, data, seed), data.splits
    return [
        StageProbe(
            seed=seed,
            k=k,
            targets=data.truth,
            train=sp["student_train"][seed],
            val=sp["student_val"][seed],
            name=f"ranking_{f}",
            weight=(fold != f).astype(np.float32),
        )
        for f in range(config.strong_folds)
    ]


def _ranking(
    config: StudyConfig, data: StudyData, proba: dict, seed: int
) -> Ranking | None:
    """Each labelled row ranked by the fold probe that never saw it; every other
    row (test, weak split) by the mean logit of the fold probes."""
    if ("ranking_0", seed) not in proba:
        return None
    fold = _fold_of(config, data, seed)
    logits = np.stack(
        [_logit(proba[(f"ranking_{f}", seed)]) for f in range(config.strong_folds)]
    )
    source = np.where(fold >= 0, fold, -1)
    picked = logits[np.maximum(source, 0), np.arange(data.n)]
    sp = data.splits
    labelled = sp["student_train"][seed] | sp["student_val"][seed]
    folds_train = np.stack([labelled & (fold != f) for f in range(config.strong_folds)])
    return Ranking(np.where(source >= 0, picked, logits.mean(0)), source, folds_train)


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p.astype(np.float64), 1e-12, 1 - 1e-12)
    return np.log(p) - np.log1p(-p)


def make_labels(
    config: StudyConfig, data: StudyData, truth: GroundTruth
) -> dict[tuple[str, int], WeakLabels]:
    """Stage 2: every supervisor's weak labels for every seed, one function per
    kind (imitation-like kinds after the others, whose labels they read)."""
    order = sorted(
        config.supervisors, key=lambda s: (s.kind_spec.after_others, bool(s.match))
    )
    labels: dict[tuple[str, int], WeakLabels] = {}
    sp = data.splits
    for seed in range(config.seeds):
        proba = {name: p for (name, s), p in truth.proba.items() if s == seed}
        made: dict[str, WeakLabels] = {}
        for sup in order:
            ctx = LabelContext(
                seed=seed,
                truth=data.truth,
                labelled=sp["student_train"][seed] | sp["student_val"][seed],
                test=sp["test"][seed],
                proba=proba,
                strong_logits=(
                    truth.ranking[seed].logits
                    if truth.ranking.get(seed) is not None
                    else np.zeros(data.n)
                ),
                reference=config.reference_name,
                made=made,
                rng=np.random.default_rng([seed, zlib.crc32(sup.label.encode())]),
                data=data,
            )
            made[sup.label] = sup.kind_spec.label(sup, ctx)
            labels[(sup.label, seed)] = made[sup.label]
    return labels


def train_students(
    config: StudyConfig,
    data: StudyData,
    truth: GroundTruth,
    labels: Mapping[tuple[str, int], WeakLabels],
    *,
    log: Callable[..., None] = print,
) -> Scored:
    """Stage 3: every supervisor x student k x condition x seed, in one call
    (label methods run first, once per condition and supervisor)."""
    d = data.features.shape[1]
    sp = data.splits
    students = [
        StageProbe(
            seed=seed,
            k=d if k is None else k,
            targets=labels[(sup.label, seed)].targets,
            train=sp["student_train"][seed],
            val=sp["student_val"][seed],
            name=sup.label,
            loss=cond.loss,
            condition=cond,
            imitation=labels[(sup.label, seed)].imitation,
            reference=labels[(sup.label, seed)].hard,
            weak=labels[(sup.label, seed)].targets,
        )
        for sup in config.supervisors
        for k in config.students
        for cond in config.conditions
        for seed in range(config.seeds)
    ]
    relabel(students, data)
    scale = max(
        (s.scale for s in config.supervisors if s.kind == "imitation"), default=1.0
    )
    stage = train_stage(
        "students", data.features, students, config, data, gain=scale, log=log
    )
    weak = {
        key: dict(weak_acc=e.weak_acc, target_acc=e.target_acc)
        for key, e in labels.items()
    }
    kinds = {s.label: s.kind for s in config.supervisors}
    table, dynamics = score_students(stage, weak, kinds, truth.ceiling_acc, data)
    return Scored(table, dynamics, [stage.record])


def relabel(probes: list[StageProbe], data: StudyData) -> None:
    """Run each condition's label method on its probes, one call per (condition,
    supervisor), and store the new targets and row weights on the probes."""
    groups: dict[tuple[str, str], list[StageProbe]] = {}
    for p in probes:
        if p.condition is not None and p.condition.relabel:
            groups.setdefault((p.condition.label, p.name), []).append(p)
    for (label, sup), members in groups.items():
        cond = members[0].condition
        method = get_label_method(cond.relabel)
        params = {
            name: np.full(len(members), cond.relabel_params.get(name, default))
            for name, default in method.params
        }
        rows = np.stack([p.train | p.val for p in members])
        key = jax.random.key(zlib.crc32(f"{label}|{sup}".encode()))
        try:
            targets, weights = method(
                data.features,
                np.stack([p.targets for p in members]).astype(np.float32),
                rows,
                key,
                params,
            )
        except LabelMethodError as err:
            raise StudyError(
                f"students of supervisor {sup!r}, {label}: {err}"
            ) from None
        for p, target, weight in zip(members, targets, weights, strict=True):
            p.targets, p.weight = target, weight


def train_bootstrap(
    config: StudyConfig,
    data: StudyData,
    truth: GroundTruth,
    *,
    log: Callable[..., None] = print,
) -> Scored:
    """Stage 4: a chain k0 < k1 < ...: M_k0's labels supervise k1, whose labels
    supervise k2, ... (one call per step, every loss and seed at once)."""
    chain, seeds, sp = config.bootstrap, range(config.seeds), data.splits
    first = f"M_{chain[0]}"
    conds = [c for c in config.conditions if c.relabel is None]
    prev = {
        (c.label, s): metrics.positive(truth.proba[(first, s)]).astype(np.int8)
        for c in conds
        for s in seeds
    }
    weak_acc = {
        s: float(metrics.accuracy(truth.proba[(first, s)], data.truth, sp["test"][s]))
        for s in seeds
    }
    tables, dynamics, records = [], [], []
    for step, k in enumerate(chain[1:], start=1):
        name = "bootstrap:" + ">".join(str(c) for c in chain[:step])
        probes = [
            StageProbe(
                seed=s,
                k=k,
                targets=prev[(c.label, s)],
                train=sp["student_train"][s],
                val=sp["student_val"][s],
                name=name,
                loss=c.loss,
                condition=c,
                reference=prev[(c.label, s)],
                weak=prev[(c.label, s)],
            )
            for c in conds
            for s in seeds
        ]
        stage = train_stage(
            f"bootstrap {step}", data.features, probes, config, data, log=log
        )
        weak = {(name, s): dict(weak_acc=weak_acc[s]) for s in seeds}
        table, dyn = score_students(
            stage, weak, {name: "bootstrap"}, truth.ceiling_acc, data
        )
        tables.append(table)
        dynamics.append(dyn)
        records.append(stage.record)
        prev = {
            (p.label, p.seed): metrics.positive(row).astype(np.int8)
            for p, row in zip(probes, stage.proba, strict=True)
        }
    return Scored(
        pd.concat(tables, ignore_index=True),
        pd.concat(dynamics, ignore_index=True),
        records,
    )


def run_study(config: StudyConfig, *, progress: bool = True) -> StudyResult:
    """Run a weak-to-strong study: ceilings and weak probes, weak labels, students
    and bootstrap chains, each stage one compiled ``train_probes`` call.

    Args:
        config: the study.
        progress: print a line per stage.

    Returns:
        A :class:`StudyResult` with the per-run table and per-epoch dynamics.
    """
    log = print if progress else (lambda *_a, **_k: None)
    probes = weak_probes(config)
    others = [s.cache for s in config.supervisors if s.cache]
    data = load_study_data(config, probes.values(), others)
    _check_widths(config, data, probes.values())
    for sup in config.supervisors:
        sup.kind_spec.prepare(sup, data)
    truth = train_ground_truth(config, data, log=log)
    labels = make_labels(config, data, truth)
    parts = [train_students(config, data, truth, labels, log=log)]
    if config.bootstrap:
        parts.append(train_bootstrap(config, data, truth, log=log))
    table = pd.concat([p.table for p in parts], ignore_index=True)
    table["pgr"] = metrics.pgr(
        table.weak_acc, table.student_acc, table.ceiling_acc, warn=False
    )
    table["pgr_note"] = metrics.pgr_reason(table.weak_acc, table.ceiling_acc)
    table["gain"] = table.student_acc - table.weak_acc
    return StudyResult(
        table=table,
        dynamics=pd.concat([p.dynamics for p in parts], ignore_index=True),
        config=config,
        fingerprints=data.fingerprints,
        stages=truth.records + [r for p in parts for r in p.records],
    )


def _check_widths(
    config: StudyConfig, data: StudyData, probes: Iterable[WeakProbe]
) -> None:
    d = data.features.shape[1]
    too_wide = [k for k in (*config.students, *config.bootstrap) if k and k > d]
    too_wide += [p.k for p in probes if p.k and p.k > data.sources[p.source].shape[1]]
    if too_wide:
        raise StudyError(
            f"k = {max(too_wide)} exceeds the {d} features of the study's layer "
            f"in {config.cache}"
        )


def _curves(stage: Trained, data: StudyData) -> dict[str, np.ndarray]:
    """Per-epoch ``(E, P)`` test accuracy and agreements of a student stage.

    Without a per-epoch record (``dynamics=False``) the kept parameters are scored
    once, at their best epoch, and the other epochs are NaN.
    """
    probes, hist = stage.probes, stage.trained.history
    n_probes, epochs = len(probes), hist["val_agreement"].shape[0]
    seeds = np.array([p.seed for p in probes])
    best = np.asarray(stage.trained.best_epoch, np.int64) - 1
    truth = data.truth.astype(bool)
    ref = np.stack([p.reference for p in probes]).astype(bool)  # (P, n)
    test = data.splits["test"][seeds]
    wrong = ref != truth
    scored = {  # rows and reference labels of each curve
        "test_acc": (test, truth),
        "agreement": (test, ref),
        "agreement_weak_wrong": (test & wrong, ref),
        "agreement_weak_right": (test & ~wrong, ref),
    }
    if "test_acc" in hist:
        key = {name: f"{name}_acc" for name in scored} | {"test_acc": "test_acc"}
        curves = {name: np.array(hist[key[name]], np.float64) for name in scored}
    else:  # no per-epoch record: score the kept parameters once
        pred = metrics.positive(stage.proba)
        curves = {}
        for name, (rows, labels) in scored.items():
            hits = ((pred == labels) & rows).sum(axis=1)
            curve = np.full((epochs, n_probes), np.nan)
            curve[best, np.arange(n_probes)] = hits / np.maximum(rows.sum(axis=1), 1)
            curves[name] = curve
    for name in ("agreement_weak_wrong", "agreement_weak_right"):
        curves[name][:, ~scored[name][0].any(axis=1)] = np.nan
    return curves


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
    proba = np.clip(stage.proba.astype(np.float64), 1e-7, 1 - 1e-7)
    weak = np.stack([p.weak for p in probes]).astype(np.float64)
    ref = np.stack([p.reference for p in probes]).astype(bool)
    count = np.maximum(labelled.sum(axis=1), 1)
    xent = -(weak * np.log(proba) + (1 - weak) * np.log1p(-proba))
    ones = np.ones(proba.shape[1])
    weights = np.stack([ones if p.weight is None else p.weight for p in probes])
    out = dict(
        misfit=((metrics.positive(proba) != ref) & labelled).sum(axis=1) / count,
        misfit_xent=(xent * labelled).sum(axis=1) / count,
        kept=(weights * labelled).sum(axis=1) / count,
    )
    names = sorted({k for p in probes if p.condition for k in p.condition.params})
    for name in names:
        out[f"param_{name}"] = [
            p.condition.params.get(name, np.nan) if p.condition else np.nan
            for p in probes
        ]
    return pd.DataFrame(out)


def score_students(
    stage: Trained,
    weak: Mapping[tuple[str, int], Mapping[str, Any]],
    kinds: Mapping[str, str],
    ceiling_acc: Mapping[tuple[int, int], float],
    data: StudyData,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The students' table rows (at their best epochs) and their curves."""
    probes, hist = stage.probes, stage.trained.history
    n_probes, epochs = len(probes), hist["val_agreement"].shape[0]
    seeds = np.array([p.seed for p in probes])
    best = np.asarray(stage.trained.best_epoch, np.int64) - 1
    ref = np.stack([p.reference for p in probes]).astype(bool)
    labelled = (data.splits["student_train"] | data.splits["student_val"])[seeds]
    curves = _curves(stage, data)
    at_best = {name: curve[best, np.arange(n_probes)] for name, curve in curves.items()}
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
            ceiling_acc=[ceiling_acc[(p.k, p.seed)] for p in probes],
            agreement=at_best["agreement"],
            agreement_weak_wrong=at_best["agreement_weak_wrong"],
            agreement_weak_right=at_best["agreement_weak_right"],
            best_epoch=best + 1,
        )
    )
    table.insert(
        4, "method", [p.condition.method if p.condition else p.loss for p in probes]
    )
    table = pd.concat([table, _fit_columns(stage, labelled)], axis=1)
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
            **{name: per_row(curve) for name, curve in curves.items()},
        )
    )
    return table, dynamics
