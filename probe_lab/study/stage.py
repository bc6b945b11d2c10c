"""One stage of a study: every probe of it trained in ONE ``train_probes`` call.

A :class:`StageProbe` says what one probe trains on (targets, rows, features, loss
condition); :func:`train_stage` trains a list of them and returns
:class:`Trained`: their probabilities on every row and a record (probes, rows,
width, seconds, compilations and their seconds, programs loaded from the on-disk
compile cache).
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from probe_lab._jax import count_compilations
from probe_lab.basis import standardizes
from probe_lab.config import TrainConfig
from probe_lab.errors import StudyError
from probe_lab.losses import get_loss
from probe_lab.methods import Condition
from probe_lab.probes import NonFiniteTrainingError, NonFiniteTrainingWarning
from probe_lab.study.config import StudyConfig
from probe_lab.study.data import StudyData
from probe_lab.train import compiled_trainers, train_probes

__all__ = ["StageProbe", "Trained", "train_stage", "training_flops"]


@dataclasses.dataclass(frozen=True)
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


@dataclasses.dataclass(frozen=True)
class Trained:
    """A trained stage: the probes, their probabilities on every row, a record."""

    probes: list[StageProbe]
    trained: Any  # probe_lab.Probes
    proba: np.ndarray  # (P, n) P(label 1)
    record: dict[str, Any]  # probes, rows, width, epochs, seconds, compilations

    @property
    def failed_epoch(self) -> np.ndarray:
        """``(P,)`` int: each probe's first non-finite epoch, -1 when finite."""
        return np.asarray(self.trained.failed_epoch, np.int64)


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


def train_stage(
    name: str,
    x: np.ndarray,
    probes: list[StageProbe],
    config: StudyConfig,
    data: StudyData,
    *,
    gain: float = 1.0,
    basis: str | None = None,
    eval_sets: dict[str, Any] | None = None,
    log: Callable[..., None] = print,
) -> Trained:
    """Train every probe of a stage in ONE ``train_probes`` call (``basis``: the
    features' basis, default the study's; ``eval_sets``: rows scored every epoch,
    :func:`probe_lab.study.scoring.training_eval_sets`)."""
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
    train_rows = np.stack([p.train for p in probes])
    val_rows = np.stack([p.val for p in probes])
    start = time.perf_counter()
    trainers = compiled_trainers()
    with count_compilations() as compiles, warnings.catch_warnings():
        # The study names failed probes itself (method, epoch, parameters).
        warnings.simplefilter("ignore", NonFiniteTrainingWarning)
        try:
            trained = train_probes(
                features,
                np.stack([p.targets for p in probes]).astype(np.float32),
                train_rows,
                val_rows,
                feature_mask=mask,
                config=train_config,
                key=0,
                groups=np.array(
                    [p.seed if p.group is None else p.group for p in probes]
                ),
                eval_sets=eval_sets or {},
                feature_gain=feature_gain,
                sample_weight=weights,
            )
        except NonFiniteTrainingError as err:  # on_nonfinite = "raise"
            raise StudyError(f"{name}: {err}") from None
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
        compile_seconds=float(sum(compiles)),
        loaded=len(compiles.loaded),  # programs from the on-disk compile cache
        trainers=compiled_trainers() - trainers,
        failed=int(np.sum(np.asarray(trained.failed_epoch) >= 0)),
    )
    return Trained(probes, trained, proba, record)


def training_flops(record: dict[str, Any]) -> float:
    """A stage record's training work in flops: ``mean rows x d x probes x epochs
    x 4`` (each step's forward and backward products, evaluation left out): what
    ``benchmarks/bench_study.py`` turns into a floor at a measured product rate."""
    return 4.0 * record["mean_rows"] * record["d"] * record["probes"] * record["epochs"]


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
