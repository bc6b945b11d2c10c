"""How probes are trained: :class:`TrainConfig`, the paper's protocol by default.

This module imports nothing of the project but the loss registry (to check loss
names when a config is made), so every other module can import it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np

from probe_lab.losses import LOSSES, get_loss
from probe_lab.registry import RegistryError

__all__ = ["PerProbe", "TrainConfig"]

PerProbe = float | Sequence[float] | np.ndarray

SOLVERS = ("adam", "lbfgs")
ON_NONFINITE = ("warn", "raise")


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """How probes are trained. Defaults follow Burns et al. (2023), Appendix D.2."""

    solver: str = "adam"
    """``"adam"``: minibatch Adam, the paper's protocol. ``"lbfgs"``: full-batch
    L-BFGS to convergence on all probes at once (needs ``l2 > 0``)."""

    epochs: int = 200
    """Passes over each probe's training rows (Adam)."""

    batch_size: int = 128
    """Rows per minibatch (Adam); the last batch of an epoch may be smaller."""

    lr: PerProbe = 1e-3
    """Adam learning rate: a scalar, or one value per probe."""

    l2: PerProbe = 0.0
    """``lambda`` in ``mean cross-entropy + lambda / 2 * ||w||^2`` (bias not
    penalized), on standardized features; scikit-learn's ``C = 1 / (lambda *
    n_train)``. A scalar or one value per probe."""

    loss: str | Sequence[str] = "xent"
    """Loss method (:mod:`probe_lab.losses`), one for all probes or one per probe:
    ``"xent"`` (cross-entropy on hard or soft targets), ``"confidence"`` (the
    auxiliary confidence loss of Section 4.3), any registered name, or an import
    path ``"package.module:function"``. Probes of different methods share one
    compiled call."""

    loss_params: Mapping[str, PerProbe] = dataclasses.field(default_factory=dict)
    """Values of the loss methods' declared parameters, each a scalar or one value
    per probe (e.g. ``{"beta": (0.8, 0.9, 0.95)}``); a parameter not given takes
    its method's default. Stored as sorted ``(name, value)`` pairs."""

    alpha_max: PerProbe = 0.75
    """The confidence loss's ``alpha_max``: final weight of the self-hardened term,
    scalar or per probe (the paper uses 0.75 for its largest students, 0.5 for
    smaller ones). ``loss_params["alpha_max"]`` overrides it."""

    warmup_frac: PerProbe = 0.2
    """The confidence loss's ``warmup_frac``: share of training steps over which
    ``alpha`` rises linearly from 0 to ``alpha_max``."""

    standardize: bool = True
    """Z-score each feature with the training rows' mean and standard deviation
    before training. Returned weights always act on the raw features."""

    standardize_eps: float = 1e-6
    """Added to the standard deviation, so constant features do not divide by 0."""

    adam_b1: float = 0.9
    """Adam first-moment decay."""

    adam_b2: float = 0.999
    """Adam second-moment decay."""

    adam_eps: float = 1e-8
    """Adam denominator epsilon."""

    record_loss: bool = True
    """Keep the mean minibatch training loss of every epoch in
    ``history["train_loss"]``. Computing it is about 5% of a step; turn it off
    when only the trained probes (and validation curves) matter."""

    probe_chunk: int = 512
    """Probes per compiled chunk. Chunks are trained one after another (or one per
    device). Measured on a 2-core CPU at d=768: 512 runs the step's two
    products at the full-size product's rate while Adam's state stays in cache."""

    on_nonfinite: str = "warn"
    """What :func:`probe_lab.train_probes` does when some probe's loss, gradient or
    parameters go NaN or inf (or a ``kind="targets"`` method leaves [0, 1]):
    ``"warn"`` (a ``NonFiniteTrainingWarning`` naming the probes and epochs; the
    result marks them in ``Probes.failed_epoch``) or ``"raise"`` (a
    ``NonFiniteTrainingError`` carrying that ``Probes``)."""

    lbfgs_max_iter: int = 100
    """Iteration cap of the L-BFGS solver."""

    lbfgs_tol: float = 1e-5
    """L-BFGS stops for a probe once the gradient's infinity norm falls below this."""

    lbfgs_history: int = 10
    """Correction pairs kept by L-BFGS."""

    def __post_init__(self) -> None:
        for name in ("lr", "l2", "alpha_max", "warmup_frac"):
            object.__setattr__(self, name, _per_probe_value(getattr(self, name), name))
        self._check_losses()
        if self.solver not in SOLVERS:
            raise ValueError(
                f"TrainConfig.solver must be one of {SOLVERS}, got {self.solver!r}"
            )
        if self.solver == "lbfgs" and set(self.losses) != {"xent"}:
            raise ValueError(
                f"TrainConfig.loss={self.loss!r} needs solver='adam': only 'xent' "
                f"has a full-batch objective (the confidence loss re-hardens "
                f"targets per minibatch)"
            )
        if self.on_nonfinite not in ON_NONFINITE:
            raise ValueError(
                f"TrainConfig.on_nonfinite must be one of {ON_NONFINITE}, got "
                f"{self.on_nonfinite!r}"
            )
        for name in ("epochs", "batch_size", "probe_chunk", "lbfgs_max_iter"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"TrainConfig.{name} must be >= 1")
        if np.any(np.asarray(self.lr) <= 0):
            raise ValueError("TrainConfig.lr must be > 0")
        if np.any(np.asarray(self.l2) < 0):
            raise ValueError("TrainConfig.l2 must be >= 0")
        if self.solver == "lbfgs" and np.any(np.asarray(self.l2) <= 0):
            raise ValueError(
                "TrainConfig(solver='lbfgs') needs l2 > 0: unregularized logistic "
                "regression has no finite minimum on separable data. scikit-learn's "
                "default C=1 corresponds to l2 = 1 / n_train."
            )
        alpha = np.asarray(self.alpha_max)
        if np.any((alpha < 0) | (alpha > 1)):
            raise ValueError("TrainConfig.alpha_max must lie in [0, 1]")
        warmup = np.asarray(self.warmup_frac)
        if np.any((warmup <= 0) | (warmup > 1)):
            raise ValueError("TrainConfig.warmup_frac must lie in (0, 1]")
        if self.lbfgs_history < 1:
            raise ValueError("TrainConfig.lbfgs_history must be >= 1")

    def _check_losses(self) -> None:
        names = (self.loss,) if isinstance(self.loss, str) else tuple(self.loss)
        if not names or not all(isinstance(n, str) for n in names):
            raise ValueError(
                f"TrainConfig.loss must be a method name or one name per probe, got "
                f"{self.loss!r}"
            )
        if not isinstance(self.loss, str):
            object.__setattr__(self, "loss", names)
        declared: set[str] = set()
        methods = []
        for name in dict.fromkeys(names):
            try:
                methods.append(get_loss(name))
                declared |= set(methods[-1].defaults)
            except RegistryError as err:
                raise ValueError(
                    f"TrainConfig.loss must be one of {LOSSES.names()} or an import "
                    f"path 'package.module:function' ({err})"
                ) from None
        given = dict(self.loss_params)
        unknown = sorted(set(given) - declared)
        if unknown:
            raise ValueError(
                f"TrainConfig.loss_params {unknown} are not declared by the loss "
                f"method(s) {sorted(set(names))}, which declare {sorted(declared)}"
            )
        pairs = tuple(
            (str(k), _per_probe_value(v, f"loss_params[{k!r}]"))
            for k, v in sorted(given.items())
        )
        object.__setattr__(self, "loss_params", pairs)
        for method in methods:
            for name in method.defaults:
                value = self.param_value(name)
                if value is not None:
                    method.check_values(name, value)

    @property
    def losses(self) -> tuple[str, ...]:
        """The distinct loss method names, in order of first use."""
        names = (self.loss,) if isinstance(self.loss, str) else self.loss
        return tuple(dict.fromkeys(names))

    def param_value(self, name: str) -> PerProbe | None:
        """A loss parameter's configured value (scalar or per probe), or None."""
        given = dict(self.loss_params)
        if name in given:
            return given[name]
        if name in ("alpha_max", "warmup_frac"):
            return getattr(self, name)
        return None


def _per_probe_value(value: PerProbe, name: str) -> float | tuple[float, ...]:
    """A finite scalar, or a 1-D sequence stored as a tuple (hashable configs)."""
    array = np.asarray(value, dtype=np.float64)
    if array.ndim > 1:
        raise ValueError(
            f"TrainConfig.{name} must be a scalar or a 1-D sequence with one value "
            f"per probe, got shape {array.shape}"
        )
    if not np.all(np.isfinite(array)):
        raise ValueError(f"TrainConfig.{name} must be finite, got {value!r}")
    if array.ndim == 0:
        return float(array) if not isinstance(value, int | float) else value
    return tuple(float(v) for v in array)
