"""Weak-to-strong studies on cached features, after Burns et al. (2023), App. E.

A study trains, for every seed:

1. **ground-truth probes** (one compiled call per feature source): strong ceilings,
   one per student feature set, on the student split; weak probes (the ``probe``
   supervisors, and the M_k probes that mixtures and bootstrapping start from) on the
   weak split;
2. **weak labels** for the student split and the test split: a weak probe's
   predictions, or a synthetic error structure at a matched accuracy
   (:mod:`probe_lab.weak_labels`), or a label made visible as an extra feature
   (``imitation``);
3. **students** (one call): every supervisor x student feature set x loss x seed,
   trained on the weak labels with early stopping on agreement with them;
4. **bootstrapping** (one call per step): a chain of students of growing k, each
   trained on the previous one's labels (Section 4.3.1).

Choices where the paper is silent, stated here and in the README:

* Splits follow Appendix E.1's proportions: a test split (``test_frac``); of the
  rest, ``weak_frac`` (10k of 23k in the paper) trains weak supervisors and the
  remainder is labelled by them for the students; ``val_frac`` of each training split
  is held out for early stopping.
* The k-feature family M_k uses the first k principal components (``basis="pca"``,
  fit without labels on the seed-0 training rows), so that k orders strength; raw
  residual-stream coordinates (``basis="raw"``) carry no such order.
* Synthetic labellers label both the student split and the test split at the target
  accuracy, so agreement can be measured on test. Their ``weak_acc`` is that exact
  accuracy; a probe supervisor's ``weak_acc`` is its test accuracy.
* The ``strong_*`` structures rank rows by the strong ceiling of the largest student
  k (trained on the student split with ground truth).
* The loss grid runs in one call: ``xent`` is the confidence loss with ``alpha = 0``
  (identical, tested), so a single compiled program serves both.
"""

from __future__ import annotations

import dataclasses
import json
import time
import tomllib
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from probe_lab import metrics
from probe_lab._jax import count_compilations
from probe_lab.basis import to_basis
from probe_lab.config import TrainConfig
from probe_lab.train import train_probes
from probe_lab.weak_labels import MAKERS, make_weak_labels, mixture_labels

__all__ = ["StudyConfig", "StudyError", "StudyResult", "Supervisor", "run_study"]

KINDS = ("probe", *MAKERS, "mixture", "imitation", "column")
_TRUE = ("1", "true", "yes", "positive")
_FALSE = ("0", "false", "no", "negative")
LOSSES = ("xent", "confidence")


class StudyError(ValueError):
    """A study configuration that cannot run; the message says what to change."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Supervisor:
    """One source of weak labels."""

    kind: str
    """``probe``, ``random``, ``longest``, ``shortest``, ``strong_unconfident``,
    ``strong_confident_correct``, ``mixture``, ``imitation`` or ``column`` (weak
    labels stored in a cache's extra field, e.g. a re-extraction's ``hint``)."""

    name: str = ""
    """Label in the results (default derived from kind and k, e.g. ``M_8``)."""

    k: int | None = None
    """``probe``: train on the first k features (None: all); ``mixture``: the M_k
    whose errors are mixed in (required)."""

    cache: str | None = None
    """``probe``: another model's cache for the weak side; ``column``: the cache
    holding the field. Joined by example id."""

    field: str = ""
    """``column``: the extra field holding 0/1 (or true/false) weak labels."""

    layer: int | None = None
    """``probe``: layer of the weak features (default: the study's layer)."""

    soft: bool = False
    """``probe``: give students soft labels (probabilities) instead of hard ones."""

    accuracy: float | None = None
    """Synthetic structures: target weak accuracy in (0.5, 1]; default: the
    reference probe's accuracy on the student split, per seed."""

    level: float = 0.5
    """``mixture``: share of the errors that are random flips."""

    base: str = ""
    """``imitation``: name of the supervisor whose labels become visible (default:
    the reference probe)."""

    scale: float = 1.0
    """``imitation``: the extra column is ``+-1`` times this, relative to the unit
    variance of standardized features."""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise StudyError(f"unknown supervisor kind {self.kind!r}; one of {KINDS}")
        if self.accuracy is not None and not 0.5 < self.accuracy <= 1:
            raise StudyError(
                f"supervisor {self.label}: accuracy must lie in (0.5, 1], got "
                f"{self.accuracy}"
            )
        if self.kind == "column" and not self.field:
            raise StudyError("a column supervisor needs field= (an extra field name)")
        if self.kind == "mixture" and self.k is None:
            raise StudyError("a mixture supervisor needs k (its simulatable M_k)")
        if self.k is not None and self.k < 1:
            raise StudyError(f"supervisor {self.label}: k must be >= 1")
        if not 0 <= self.level <= 1:
            raise StudyError(f"supervisor {self.label}: level must lie in [0, 1]")
        if self.scale <= 0:
            raise StudyError(f"supervisor {self.label}: scale must be > 0")

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        if self.kind == "probe":
            base = "M_all" if self.k is None else f"M_{self.k}"
            src = []
            if self.cache:
                src.append(Path(self.cache).stem)
            if self.layer is not None:
                src.append(f"L{self.layer}")
            return base + (f"@{'/'.join(src)}" if src else "")
        if self.kind == "mixture":
            return f"mixture(M_{self.k},{self.level:g})"
        if self.kind == "column":
            return f"column:{self.field}"
        return self.kind


def _default_supervisors() -> tuple[Supervisor, ...]:
    return (Supervisor(kind="probe", k=8),)


@dataclasses.dataclass(frozen=True, kw_only=True)
class StudyConfig:
    """A weak-to-strong study on cached features."""

    cache: str
    """Path of the strong model's cache (students and ceilings use it)."""

    layer: int = -1
    """Layer of ``cache`` for students (hidden_states index; negative counts from
    the last stored layer)."""

    basis: str = "pca"
    """Coordinates that the k-feature family counts in: ``pca`` or ``raw``."""

    supervisors: tuple[Supervisor, ...] = dataclasses.field(
        default_factory=_default_supervisors
    )
    """Weak supervisors (see :class:`Supervisor`)."""

    students: tuple[int | None, ...] = (None,)
    """Student feature sets: first k features, ``None`` for all."""

    losses: tuple[str, ...] = ("xent",)
    """Student losses: ``xent`` and/or ``confidence``."""

    seeds: int = 3
    """Independent repetitions (minibatch order, and the split with ``resplit``)."""

    resplit: bool = False
    """Draw a new weak/student/test split for every seed."""

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
        object.__setattr__(self, "supervisors", tuple(self.supervisors))
        object.__setattr__(self, "students", tuple(self.students))
        object.__setattr__(self, "losses", tuple(self.losses))
        object.__setattr__(self, "bootstrap", tuple(self.bootstrap))
        if not self.supervisors and not self.bootstrap:
            raise StudyError("a study needs at least one supervisor or a bootstrap")
        names = [s.label for s in self.supervisors]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise StudyError(f"supervisor names must be unique; repeated: {dupes}")
        if self.basis not in ("pca", "raw"):
            raise StudyError(f"basis must be 'pca' or 'raw', got {self.basis!r}")
        bad = [loss for loss in self.losses if loss not in LOSSES]
        if bad or not self.losses:
            raise StudyError(f"losses must be a non-empty subset of {LOSSES}: {bad}")
        if not self.students:
            raise StudyError("students must list at least one k (or None for all)")
        if any(k is not None and k < 1 for k in self.students):
            raise StudyError("student k values must be >= 1")
        if self.seeds < 1:
            raise StudyError("seeds must be >= 1")
        for name in ("test_frac", "weak_frac", "val_frac"):
            if not 0 < getattr(self, name) < 1:
                raise StudyError(f"{name} must lie in (0, 1)")
        if len(self.bootstrap) == 1 or list(self.bootstrap) != sorted(
            set(self.bootstrap)
        ):
            raise StudyError(
                f"bootstrap must be an increasing chain of at least two k values, "
                f"got {list(self.bootstrap)}"
            )
        if not np.isscalar(self.train.alpha_max):
            raise StudyError("train.alpha_max must be one number in a study")
        if self.train.solver != "adam":
            raise StudyError(
                "studies train with solver='adam' (the loss grid needs it)"
            )
        probes = [s.label for s in self.supervisors if s.kind == "probe"]
        if self.reference and self.reference not in probes:
            raise StudyError(
                f"reference {self.reference!r} is not a probe supervisor; probe "
                f"supervisors: {probes}"
            )
        needs_ref = [
            s.label
            for s in self.supervisors
            if (s.kind in MAKERS or s.kind == "mixture") and s.accuracy is None
        ]
        if needs_ref and not probes:
            raise StudyError(
                f"supervisors {needs_ref} match a reference probe's accuracy but "
                f"there is no probe supervisor: add one or set accuracy= on them"
            )
        if len({s.scale for s in self.supervisors if s.kind == "imitation"}) > 1:
            raise StudyError("imitation supervisors of one study must share one scale")
        labels = set(names)
        for s in self.supervisors:
            if s.kind == "imitation" and s.base and s.base not in labels:
                raise StudyError(
                    f"imitation supervisor {s.label}: base {s.base!r} is not a "
                    f"supervisor name ({sorted(labels)})"
                )
            if s.kind == "imitation" and s.base == s.label:
                raise StudyError("an imitation supervisor cannot imitate itself")

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
        return _drop_none(out)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StudyConfig:
        """Build from plain data (a parsed TOML file), naming unknown keys."""
        data = dict(data)
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - fields)
        if unknown:
            raise StudyError(
                f"unknown study settings {unknown}; known: {sorted(fields)}"
            )
        sup_fields = {f.name for f in dataclasses.fields(Supervisor)}
        sups = []
        for i, entry in enumerate(data.pop("supervisors", [])):
            extra = sorted(set(entry) - sup_fields)
            if extra:
                raise StudyError(
                    f"supervisors[{i}] has unknown keys {extra}; known: "
                    f"{sorted(sup_fields)}"
                )
            sups.append(Supervisor(**entry))
        if sups:
            data["supervisors"] = tuple(sups)
        if "students" in data:
            data["students"] = tuple(
                None if k in ("all", None) else int(k) for k in data["students"]
            )
        train = data.pop("train", {})
        train_fields = {f.name for f in dataclasses.fields(TrainConfig)}
        extra = sorted(set(train) - train_fields)
        if extra:
            raise StudyError(f"[train] has unknown keys {extra}")
        return cls(**data, train=TrainConfig(**train))

    @classmethod
    def from_toml(cls, path: str | Path) -> StudyConfig:
        """Read a study from a TOML file: top-level settings, ``[train]``, and
        ``[[supervisors]]`` tables. Relative cache paths are relative to the file."""
        path = Path(path)
        with path.open("rb") as f:
            data = tomllib.load(f)
        data = data.get("study", data)
        for key in ("cache",):
            if key in data and not Path(data[key]).is_absolute():
                data[key] = str((path.parent / data[key]).resolve())
        return cls.from_dict(data)


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

    def summary(self, *, confidence: float = 0.95) -> pd.DataFrame:
        """Mean accuracies and PGR per (supervisor, student, loss), with a bootstrap
        interval of PGR over seeds."""
        rows = []
        keys = ["supervisor", "student", "loss"]
        for key, group in self.table.groupby(keys, sort=False):
            low, high = metrics.bootstrap_pgr(
                group.weak_acc,
                group.student_acc,
                group.ceiling_acc,
                confidence=confidence,
            )
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
        return out


# --------------------------------------------------------------------------- data


@dataclasses.dataclass
class _Data:
    truth: np.ndarray  # (n,) int8
    n_chars: np.ndarray  # (n,)
    ids: np.ndarray
    sources: dict[tuple[str | None, int | None], np.ndarray]  # (n, d) per source
    splits: dict[str, np.ndarray]  # name -> (S, n) bool
    fingerprints: dict[str, Any]
    columns: dict[str, np.ndarray]  # column supervisor label -> (n,) int8


def _splits(n: int, config: StudyConfig) -> dict[str, np.ndarray]:
    out = {name: np.zeros((config.seeds, n), bool) for name in _SPLITS}
    for seed in range(config.seeds):
        rng = np.random.default_rng(seed if config.resplit else 0)
        order = rng.permutation(n)
        n_test = int(round(config.test_frac * n))
        n_weak = int(round(config.weak_frac * (n - n_test)))
        test, weak, student = np.split(order, [n_test, n_test + n_weak])
        n_wval = int(round(config.val_frac * weak.size))
        n_sval = int(round(config.val_frac * student.size))
        parts = dict(
            test=test,
            weak_val=weak[:n_wval],
            weak_train=weak[n_wval:],
            student_val=student[:n_sval],
            student_train=student[n_sval:],
        )
        for name, idx in parts.items():
            out[name][seed, idx] = True
    return out


_SPLITS = ("test", "weak_train", "weak_val", "student_train", "student_val")


def _load(config: StudyConfig) -> _Data:
    from activation_cache import join, open_cache

    main = open_cache(config.cache)
    truth = np.asarray(main.labels, np.int8)
    rows = np.arange(main.n)
    others = {}
    for sup in config.supervisors:
        if sup.kind in ("probe", "column") and sup.cache and sup.cache not in others:
            other = open_cache(sup.cache)
            ia, ib = join(main, other)
            lookup = dict(zip(ia.tolist(), ib.tolist(), strict=True))
            rows = np.array([r for r in rows if r in lookup], np.int64)
            others[sup.cache] = (other, lookup)
    if config.max_rows is not None and config.max_rows < rows.size:
        keep = np.random.default_rng(12345).choice(rows.size, config.max_rows, False)
        rows = rows[np.sort(keep)]
    n = rows.size
    splits = _splits(n, config)
    for name, mask in splits.items():
        if name.endswith("train") or name == "test":
            for seed in range(config.seeds):
                labels = truth[rows][mask[seed]]
                if labels.size and labels.min() == labels.max():
                    raise StudyError(
                        f"the {name} split of seed {seed} holds only label "
                        f"{labels[0]}: the task needs both classes in every split"
                    )
    batch = config.train.batch_size
    for name in _SPLITS:
        smallest = int(splits[name].sum(axis=1).min())
        need = batch if name.endswith("train") else 1
        if smallest < need:
            raise StudyError(
                f"the {name} split has only {smallest} rows"
                + (f", fewer than the batch size {batch}" if need > 1 else "")
                + ": use more rows (a larger task or max_rows), other split "
                "fractions, or a smaller batch_size"
            )
    fit_rows = splits["weak_train"][0] | splits["student_train"][0]
    sources: dict[tuple[str | None, int | None], np.ndarray] = {}
    fingerprints: dict[str, Any] = {"rows": int(n)}

    def add(cache, layer: int, key) -> None:
        x = cache.features(layer)
        x = x[rows] if cache is main else x[[others[key[0]][1][r] for r in rows]]
        sources[key] = to_basis(x, config.basis, fit_rows)
        fingerprints[f"{cache.path}#layer{layer}"] = dict(
            model=cache.meta.get("model"),
            task=cache.meta.get("task"),
            task_fingerprint=cache.fingerprint,
            layer=int(layer),
            shape=list(x.shape),
        )

    add(main, config.layer, (None, None))
    for sup in config.supervisors:
        if sup.kind != "probe" or (sup.cache is None and sup.layer is None):
            continue
        key = (sup.cache, sup.layer)
        if key not in sources:
            cache = others[sup.cache][0] if sup.cache else main
            layer = config.layer if sup.layer is None else sup.layer
            add(cache, layer, key)
    columns = {}
    for sup in config.supervisors:
        if sup.kind != "column":
            continue
        cache = others[sup.cache][0] if sup.cache else main
        if sup.field not in cache.extra:
            raise StudyError(
                f"supervisor {sup.label}: {cache.path} has no extra field "
                f"{sup.field!r}; its fields: {sorted(cache.extra)}"
            )
        values = np.char.lower(np.asarray(cache.extra[sup.field]).astype(str))
        picked = (
            values[rows]
            if cache is main
            else values[[others[sup.cache][1][r] for r in rows]]
        )
        bad = ~np.isin(picked, _TRUE + _FALSE)
        if bad.any():
            raise StudyError(
                f"supervisor {sup.label}: field {sup.field!r} holds "
                f"{picked[bad][0]!r}; weak labels must be one of {_TRUE + _FALSE}"
            )
        columns[sup.label] = np.isin(picked, _TRUE).astype(np.int8)
    return _Data(
        columns=columns,
        truth=truth[rows],
        n_chars=np.asarray(main.n_chars)[rows],
        ids=np.asarray(main.ids)[rows],
        sources=sources,
        splits=splits,
        fingerprints=fingerprints,
    )


# ------------------------------------------------------------------------- stages


@dataclasses.dataclass
class _Probe:
    """One probe of a stage: what it trains on and what it is called."""

    seed: int
    k: int  # features used (<= d)
    targets: np.ndarray  # (n,) labels in [0, 1]
    train: np.ndarray  # (n,) bool
    val: np.ndarray  # (n,) bool
    name: str = ""
    loss: str = "xent"
    imitation: np.ndarray | None = None  # (n,) extra column for this probe
    reference: np.ndarray | None = None  # (n,) hard weak labels for agreement


def _run_stage(
    name: str,
    x: np.ndarray,
    probes: list[_Probe],
    config: StudyConfig,
    data: _Data,
    stages: list[dict[str, Any]],
    *,
    gain: float = 1.0,
    log: Any = print,
):
    """Train every probe of a stage in ONE ``train_probes`` call."""
    d = x.shape[1]
    extra = [p for p in probes if p.imitation is not None]
    features = x
    feature_gain = None
    if extra:  # one appended column per imitation probe set (supervisor x seed)
        columns, col_of = [], {}
        for p in extra:
            key = p.imitation.tobytes()
            if key not in col_of:
                col_of[key] = len(columns)
                columns.append(p.imitation)
        features = np.concatenate([x, np.stack(columns, axis=1)], axis=1)
        feature_gain = np.concatenate([np.ones(d), np.full(len(columns), gain)])
    width = features.shape[1]
    mask = np.zeros((len(probes), width), bool)
    for i, p in enumerate(probes):
        mask[i, : p.k] = True
        if p.imitation is not None:
            mask[i, d + col_of[p.imitation.tobytes()]] = True
    alpha = float(config.train.alpha_max)
    alphas = [alpha if p.loss == "confidence" else 0.0 for p in probes]
    confidence = any(p.loss == "confidence" for p in probes)
    students = all(p.reference is not None for p in probes)
    train_config = dataclasses.replace(
        config.train,
        loss="confidence" if confidence else "xent",
        alpha_max=tuple(alphas),
        record_loss=students and config.dynamics,
    )
    test = data.splits["test"][[p.seed for p in probes]]
    eval_sets = {}
    if students and config.dynamics:
        eval_sets["test"] = (test, np.stack([data.truth] * len(probes)))
        ref = np.stack([p.reference for p in probes]).astype(bool)
        wrong = ref != data.truth.astype(bool)
        eval_sets["agreement"] = (test, ref)
        eval_sets["agreement_weak_wrong"] = (test & wrong, ref)
        eval_sets["agreement_weak_right"] = (test & ~wrong, ref)
        for key in ("agreement_weak_wrong", "agreement_weak_right"):
            rows, _ = eval_sets[key]
            # A supervisor with no wrong (or no right) test labels leaves that
            # agreement undefined: score it on all test rows here and report NaN.
            eval_sets[key] = (np.where(rows.any(axis=1)[:, None], rows, test), ref)
    train_rows = np.stack([p.train for p in probes])
    val_rows = np.stack([p.val for p in probes])
    start = time.perf_counter()
    with count_compilations() as compiles:
        trained = train_probes(
            features,
            np.stack([p.targets for p in probes]).astype(np.float32),
            train_rows,
            val_rows,
            feature_mask=mask,
            config=train_config,
            key=0,
            groups=np.array([p.seed for p in probes]),
            eval_sets=eval_sets,
            feature_gain=feature_gain,
        )
        proba = np.asarray(trained.predict_proba(features))
    seconds = time.perf_counter() - start
    log(f"[study] {name}: {len(probes)} probes in {seconds:.1f}s")
    rows_per_probe = train_rows.sum(axis=1)
    stages.append(
        dict(
            stage=name,
            probes=len(probes),
            rows=int(rows_per_probe.max()),
            mean_rows=float(rows_per_probe.mean()),
            d=int(width),
            epochs=int(config.train.epochs),
            eval_rows=int((test | val_rows).any(0).sum()),
            seconds=seconds,
            compilations=len(compiles),
        )
    )
    return trained, proba


def run_study(config: StudyConfig, *, progress: bool = True) -> StudyResult:
    """Run a weak-to-strong study: ceilings and weak probes, weak labels, students
    and bootstrap chains, each stage one compiled ``train_probes`` call.

    Args:
        config: the study.
        progress: print a line per stage.

    Returns:
        A :class:`StudyResult` with the per-run table and per-epoch dynamics.
    """
    data = _load(config)
    x = data.sources[(None, None)]
    d = x.shape[1]
    too_wide = [k for k in (*config.students, *config.bootstrap) if k and k > d]
    too_wide += [
        s.k
        for s in config.supervisors
        if s.k and s.k > data.sources[_source_key(s)].shape[1]
    ]
    if too_wide:
        raise StudyError(
            f"k = {max(too_wide)} exceeds the {d} features of layer {config.layer} "
            f"in {config.cache}"
        )
    seeds = range(config.seeds)
    sp = data.splits
    stages: list[dict[str, Any]] = []
    log = print if progress else (lambda *_a, **_k: None)
    kd = lambda k: d if k is None else k  # noqa: E731

    # Stage 1: ceilings (every student k, and bootstrap steps) and weak probes.
    ceiling_ks = sorted({kd(k) for k in config.students} | set(config.bootstrap[1:]))
    weak_specs: dict[str, tuple[Supervisor, tuple]] = {}
    for sup in config.supervisors:
        if sup.kind == "probe":
            weak_specs[sup.label] = (sup, _source_key(sup))
        if sup.kind == "mixture":
            aux = Supervisor(kind="probe", k=sup.k)
            weak_specs.setdefault(aux.label, (aux, (None, None)))
    if config.bootstrap:
        aux = Supervisor(kind="probe", k=config.bootstrap[0])
        weak_specs.setdefault(aux.label, (aux, (None, None)))
    by_source: dict[tuple, list[_Probe]] = {}
    for seed in seeds:
        for k in ceiling_ks:
            by_source.setdefault((None, None), []).append(
                _Probe(
                    seed=seed,
                    k=k,
                    targets=data.truth,
                    train=sp["student_train"][seed],
                    val=sp["student_val"][seed],
                    name=f"ceiling_{k}",
                )
            )
        for label, (sup, key) in weak_specs.items():
            width = data.sources[key].shape[1]
            by_source.setdefault(key, []).append(
                _Probe(
                    seed=seed,
                    k=width if sup.k is None else sup.k,
                    targets=data.truth,
                    train=sp["weak_train"][seed],
                    val=sp["weak_val"][seed],
                    name=label,
                )
            )
    proba_of: dict[tuple[str, int], np.ndarray] = {}  # P(label 1), all rows
    for key, probes in by_source.items():
        _, proba = _run_stage(
            "ground truth" + _source_name(key),
            data.sources[key],
            probes,
            config,
            data,
            stages,
            log=log,
        )
        for p, row in zip(probes, proba, strict=True):
            proba_of[(p.name, p.seed)] = row

    def test_acc(row: np.ndarray, seed: int) -> float:
        return float(metrics.accuracy(row, data.truth, sp["test"][seed]))

    ceiling_acc = {
        (k, s): test_acc(proba_of[(f"ceiling_{k}", s)], s)
        for k in ceiling_ks
        for s in seeds
    }
    strong = f"ceiling_{max(ceiling_ks)}"

    # Stage 2: weak labels on the student split and on the test split.
    ref = config.reference_name
    labels: dict[tuple[str, int], dict[str, Any]] = {}
    order = sorted(config.supervisors, key=lambda s: s.kind == "imitation")
    for seed in seeds:
        labelled = sp["student_train"][seed] | sp["student_val"][seed]
        label_rows = np.flatnonzero(labelled)
        test_rows = np.flatnonzero(sp["test"][seed])
        for sup in order:
            rng = np.random.default_rng([seed, zlib.crc32(sup.label.encode())])
            entry: dict[str, Any] = {}
            if sup.kind == "probe":
                proba = proba_of[(sup.label, seed)]
                hard = (proba >= 0.5).astype(np.int8)
                entry["targets"] = proba if sup.soft else hard
                entry["hard"] = hard
                entry["weak_acc"] = test_acc(proba, seed)
            elif sup.kind == "column":
                hard = data.columns[sup.label]
                entry = dict(targets=hard, hard=hard, weak_acc=test_acc(hard, seed))
            elif sup.kind == "imitation":
                base = labels[(sup.base or ref, seed)]
                entry = dict(base)
                entry["imitation"] = (2.0 * base["hard"] - 1.0).astype(np.float32)
            else:
                target = sup.accuracy
                if target is None:
                    target = float(
                        metrics.accuracy(proba_of[(ref, seed)], data.truth, labelled)
                    )
                    target = min(max(target, 0.5 + 1e-9), 1.0)
                hard = data.truth.copy()
                for rows in (label_rows, test_rows):
                    if sup.kind == "mixture":
                        simulatable = (proba_of[(f"M_{sup.k}", seed)] >= 0.5).astype(
                            np.int8
                        )
                        made = mixture_labels(
                            data.truth, simulatable, rows, target, sup.level, rng
                        )
                    else:
                        made = make_weak_labels(
                            sup.kind,
                            data.truth,
                            rows,
                            target,
                            rng,
                            n_chars=data.n_chars,
                            strong_logits=_logit(proba_of[(strong, seed)]),
                        )
                    hard[rows] = made[rows]
                entry = dict(
                    targets=hard,
                    hard=hard,
                    weak_acc=float(metrics.accuracy(hard, data.truth, labelled)),
                    target_acc=target,
                )
            labels[(sup.label, seed)] = entry

    # Stage 3: students.
    students: list[_Probe] = []
    for sup in config.supervisors:
        for k in config.students:
            for loss in config.losses:
                for seed in seeds:
                    entry = labels[(sup.label, seed)]
                    students.append(
                        _Probe(
                            seed=seed,
                            k=kd(k),
                            targets=entry["targets"],
                            train=sp["student_train"][seed],
                            val=sp["student_val"][seed],
                            name=sup.label,
                            loss=loss,
                            imitation=entry.get("imitation"),
                            reference=entry["hard"],
                        )
                    )
    kinds = {s.label: s.kind for s in config.supervisors}
    tables: list[pd.DataFrame] = []
    dynamics: list[pd.DataFrame] = []
    scale = max(
        (s.scale for s in config.supervisors if s.kind == "imitation"), default=1.0
    )
    if students:
        trained, proba = _run_stage(
            "students", x, students, config, data, stages, gain=scale, log=log
        )
        _collect(
            students,
            trained,
            proba,
            labels,
            kinds,
            ceiling_acc,
            data,
            tables,
            dynamics,
        )

    # Stage 4: bootstrapping through intermediate students.
    if config.bootstrap:
        chain = config.bootstrap
        first = f"M_{chain[0]}"
        prev = {
            (loss, s): (proba_of[(first, s)] >= 0.5).astype(np.int8)
            for loss in config.losses
            for s in seeds
        }
        weak_acc = {s: test_acc(proba_of[(first, s)], s) for s in seeds}
        for step, k in enumerate(chain[1:], start=1):
            name = "bootstrap:" + ">".join(str(c) for c in chain[:step])
            probes = [
                _Probe(
                    seed=s,
                    k=k,
                    targets=prev[(loss, s)],
                    train=sp["student_train"][s],
                    val=sp["student_val"][s],
                    name=name,
                    loss=loss,
                    reference=prev[(loss, s)],
                )
                for loss in config.losses
                for s in seeds
            ]
            trained, proba = _run_stage(
                f"bootstrap {step}", x, probes, config, data, stages, log=log
            )
            boot_weak = {(name, s): dict(weak_acc=weak_acc[s]) for s in seeds}
            kinds[name] = "bootstrap"
            _collect(
                probes,
                trained,
                proba,
                boot_weak,
                kinds,
                ceiling_acc,
                data,
                tables,
                dynamics,
            )
            prev = {
                (p.loss, p.seed): (row >= 0.5).astype(np.int8)
                for p, row in zip(probes, proba, strict=True)
            }
    table = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
    table["pgr"] = metrics.pgr(
        table.weak_acc, table.student_acc, table.ceiling_acc, warn=False
    )
    table["pgr_note"] = metrics.pgr_reason(table.weak_acc, table.ceiling_acc)
    dyn = pd.concat(dynamics, ignore_index=True) if dynamics else pd.DataFrame()
    return StudyResult(
        table=table,
        dynamics=dyn,
        config=config,
        fingerprints=data.fingerprints,
        stages=stages,
    )


def _source_key(sup: Supervisor) -> tuple[str | None, int | None]:
    if sup.kind != "probe" or (sup.cache is None and sup.layer is None):
        return (None, None)
    return (sup.cache, sup.layer)


def _source_name(key: tuple[str | None, int | None]) -> str:
    cache, layer = key
    if key == (None, None):
        return ""
    parts = ([Path(cache).name] if cache else []) + (
        [f"layer {layer}"] if layer is not None else []
    )
    return f" ({', '.join(parts)})"


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p.astype(np.float64), 1e-12, 1 - 1e-12)
    return np.log(p) - np.log1p(-p)


def _collect(
    probes: Sequence[_Probe],
    trained: Any,
    proba: np.ndarray,
    weak: Mapping[tuple[str, int], Mapping[str, Any]],
    kinds: Mapping[str, str],
    ceiling_acc: Mapping[tuple[int, int], float],
    data: _Data,
    tables: list[pd.DataFrame],
    dynamics: list[pd.DataFrame],
) -> None:
    """Append the students' table rows (at their best epochs) and their curves."""
    hist = trained.history
    n_probes = len(probes)
    epochs = hist["val_agreement"].shape[0]
    sp = data.splits
    seeds = np.array([p.seed for p in probes])
    best = np.asarray(trained.best_epoch, np.int64) - 1
    truth = data.truth.astype(bool)
    ref = np.stack([p.reference for p in probes]).astype(bool)  # (P, n)
    test = sp["test"][seeds]
    labelled = (sp["student_train"] | sp["student_val"])[seeds]
    wrong = ref != truth
    scored = {  # rows and reference labels of each curve
        "test_acc": (test, truth),
        "agreement": (test, ref),
        "agreement_weak_wrong": (test & wrong, ref),
        "agreement_weak_right": (test & ~wrong, ref),
    }
    nan = np.full((epochs, n_probes), np.nan)
    if "test_acc" in hist:
        key = {name: f"{name}_acc" for name in scored} | {"test_acc": "test_acc"}
        curves = {name: np.array(hist[key[name]], np.float64) for name in scored}
    else:  # no per-epoch record: score the kept parameters once
        pred = proba >= 0.5
        curves = {}
        for name, (rows, labels) in scored.items():
            count = rows.sum(axis=1)
            hits = ((pred == labels) & rows).sum(axis=1)
            curve = nan.copy()
            curve[best, np.arange(n_probes)] = hits / np.maximum(count, 1)
            curves[name] = curve
    for name in ("agreement_weak_wrong", "agreement_weak_right"):
        curves[name][:, ~scored[name][0].any(axis=1)] = np.nan
    at_best = {name: curve[best, np.arange(n_probes)] for name, curve in curves.items()}
    names = [p.name for p in probes]
    ks = np.array([p.k for p in probes])
    losses = [p.loss for p in probes]
    entries = [weak[(p.name, p.seed)] for p in probes]
    tables.append(
        pd.DataFrame(
            dict(
                supervisor=names,
                kind=[kinds[name] for name in names],
                student=ks,
                loss=losses,
                seed=seeds,
                weak_acc=[e["weak_acc"] for e in entries],
                weak_label_acc=metrics.accuracy(ref, truth, labelled),
                target_acc=[e.get("target_acc", np.nan) for e in entries],
                student_acc=at_best["test_acc"],
                ceiling_acc=[ceiling_acc[(p.k, p.seed)] for p in probes],
                agreement=at_best["agreement"],
                agreement_weak_wrong=at_best["agreement_weak_wrong"],
                agreement_weak_right=at_best["agreement_weak_right"],
                best_epoch=best + 1,
            )
        )
    )
    train_loss = hist.get("train_loss", nan)

    def per_row(curve: np.ndarray) -> np.ndarray:  # (E, P) -> probe-major rows
        return np.asarray(curve).T.reshape(-1)

    dynamics.append(
        pd.DataFrame(
            dict(
                supervisor=np.repeat(names, epochs),
                student=np.repeat(ks, epochs),
                loss=np.repeat(losses, epochs),
                seed=np.repeat(seeds, epochs),
                epoch=np.tile(np.arange(1, epochs + 1), n_probes),
                train_loss=per_row(train_loss),
                val_agreement=per_row(hist["val_agreement"]),
                **{name: per_row(curve) for name, curve in curves.items()},
            )
        )
    )
