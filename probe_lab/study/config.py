"""A study's settings: :class:`StudyConfig`, read from Python or a TOML file.

Every field is type-checked by the one config loader (:mod:`probe_lab.loader`),
from a TOML table and from Python alike (``StudyConfig(seeds=2.0)`` is refused
with the loader's message); ``__post_init__`` then checks the values. Relative
cache paths in a TOML file (the study's, and every settings field of a supervisor
kind marked as a path) resolve against the file's folder.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from probe_lab.config import TrainConfig
from probe_lab.errors import StudyError
from probe_lab.loader import ConfigError, check_fields, from_mapping
from probe_lab.losses import get_loss
from probe_lab.methods import Condition, Method, MethodError, conditions, method_from
from probe_lab.registry import RegistryError
from probe_lab.supervisors import (
    Supervisor,
    paths_in,
    reference_name,
    with_paths_in,
)

__all__ = ["StudyConfig", "StudyError"]


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
        if isinstance(self.cache, os.PathLike):
            object.__setattr__(self, "cache", os.fspath(self.cache))
        try:  # Python values get the TOML loader's type checks
            check_fields(self, skip=("methods",))
        except ConfigError as err:
            raise StudyError(str(err), err.path) from None
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
        probes = [s.label for s in self.supervisors if s.kind_spec.reference]
        if self.reference and self.reference not in probes:
            raise StudyError(
                f"reference {self.reference!r} is not a probe supervisor; probe "
                f"supervisors: {probes}"
            )
        scales = {s.label: s.kind_spec.feature_scale(s) for s in self.supervisors}
        scales = {name: v for name, v in scales.items() if v is not None}
        if len(set(scales.values())) > 1:
            raise StudyError(
                f"supervisors adding a student feature ({sorted(scales)}) must share "
                f"one scale; they have {sorted(set(scales.values()))}"
            )
        for s in self.supervisors:
            s.kind_spec.check_study(s, self.supervisors)

    @property
    def conditions(self) -> list[Condition]:
        """The student conditions: ``losses``, then ``methods``' grid points."""
        return conditions(self.losses, self.methods)

    @property
    def reference_name(self) -> str:
        """The probe supervisor synthetic structures match by default."""
        return reference_name(self.supervisors, self.reference)

    @property
    def other_caches(self) -> list[str]:
        """Every cache the supervisors' settings name (joined by example id)."""
        return [path for s in self.supervisors for path in paths_in(s.settings)]

    @property
    def feature_scale(self) -> float:
        """The scale of the columns supervisors add to the student's features."""
        found = [s.kind_spec.feature_scale(s) for s in self.supervisors]
        return max((v for v in found if v is not None), default=1.0)

    def to_dict(self) -> dict[str, Any]:
        """A JSON/TOML-ready dict that :meth:`from_dict` reads back."""
        out = dataclasses.asdict(self)
        out["supervisors"] = [s.to_dict() for s in self.supervisors]
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
        table = data.get("study", data)
        if not isinstance(table, Mapping) or not table:
            raise StudyError(
                f"{path} holds no study settings: give at least cache = '...' (at "
                f"the top level or in a [study] table)"
            )
        extra = sorted(set(data) - {"study"}) if "study" in data else []
        if extra:
            raise StudyError(
                f"{path}: {extra} sit outside the [study] table; with a [study] "
                f"table every setting goes in it ([study.train], "
                f"[[study.supervisors]], ...)"
            )
        config = cls.from_dict(data.get("study", data), where=where)
        return config.with_paths_in(path.parent)

    def with_paths_in(self, folder: str | Path) -> StudyConfig:
        """This study with every relative cache path (the study's, and each
        supervisor setting marked as a path) resolved against ``folder``."""
        folder = Path(folder)
        cache = self.cache
        if not Path(cache).is_absolute():
            cache = str((folder / cache).resolve())
        supervisors = tuple(
            dataclasses.replace(s, settings=with_paths_in(s.settings, folder))
            for s in self.supervisors
        )
        return dataclasses.replace(self, cache=cache, supervisors=supervisors)


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [("all" if v is None else _drop_none(v)) for v in value]
    return value
