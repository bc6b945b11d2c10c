"""A trained batch of linear probes: :class:`Probes`.

This module imports nothing of the project but :mod:`probe_lab.config`.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from probe_lab.config import TrainConfig

__all__ = [
    "NonFiniteTrainingError",
    "NonFiniteTrainingWarning",
    "Probes",
    "failure_message",
    "positive",
    "positive_logit",
]


def positive(proba: Any) -> Any:
    """THE hard prediction of probabilities: label 1 iff ``p >= 0.5`` (ties -> 1)."""
    return proba >= 0.5


def positive_logit(logits: Any) -> Any:
    """THE hard prediction of logits: label 1 iff ``logit >= 0``, the same rule as
    :func:`positive` on probabilities (``sigmoid(0) = 0.5``)."""
    return logits >= 0


class NonFiniteTrainingWarning(RuntimeWarning):
    """Some probes' training went NaN or inf (``Probes.failed_epoch`` marks them)."""


class NonFiniteTrainingError(FloatingPointError):
    """Some probes' training went NaN or inf, with ``TrainConfig(on_nonfinite=
    "raise")``; ``.probes`` holds the trained batch, failed probes marked."""

    def __init__(self, message: str, probes: Probes) -> None:
        super().__init__(message)
        self.probes = probes


def failure_message(failed_epoch: np.ndarray, losses: Any) -> str:
    """One line naming the failed probes, their first bad epoch and loss method.

    Args:
        failed_epoch: ``(P,)`` int, -1 for a probe that trained finitely.
        losses: ``TrainConfig.loss``: one name or one per probe.
    """
    bad = np.flatnonzero(np.asarray(failed_epoch) >= 0)
    names = [losses] * len(failed_epoch) if isinstance(losses, str) else losses
    shown = ", ".join(
        f"{p} ({names[p]!s}, epoch {int(failed_epoch[p])})" for p in bad[:8]
    )
    more = f" and {bad.size - 8} more" if bad.size > 8 else ""
    return (
        f"{bad.size} of {len(failed_epoch)} probe(s) trained to NaN or inf (a "
        f"non-finite loss, gradient or weight, or a kind='targets' method's target "
        f"outside [0, 1]): probe (loss method, first bad epoch) {shown}{more}. Their "
        f"weights are NaN and Probes.failed_epoch marks them; check the loss "
        f"method at those epochs, or lower the learning rate"
    )


@struct.dataclass
class Probes:
    """A trained batch of ``P`` binary linear probes on ``d`` raw features.

    ``weights`` and ``bias`` act on the RAW features (standardization, if any, is
    folded in), so ``logit = features @ weights.T + bias``.
    """

    weights: jax.Array
    """``(P, d)`` float32."""
    bias: jax.Array
    """``(P,)`` float32."""
    best_epoch: np.ndarray
    """``(P,)`` int: the epoch (1-based) whose parameters were kept; with no
    validation rows, the last epoch. For L-BFGS, the iteration count."""
    failed_epoch: np.ndarray
    """``(P,)`` int: the first epoch (1-based) in which a probe's loss, gradient,
    weights or bias were NaN or inf, or in which a ``kind="targets"`` loss method
    gave it a target outside [0, 1]; -1 when every step was finite. A failed
    probe's ``weights`` and ``bias`` are NaN and its ``history`` is NaN from that
    epoch on, even when early stopping had kept an earlier epoch: report it as
    failed (method, epoch, parameters), never its numbers. See :attr:`failed`."""
    history: dict[str, np.ndarray]
    """Per-epoch curves, each ``(epochs, P)``: ``train_loss`` (mean minibatch loss
    over the epoch; absent with ``record_loss=False``), ``val_agreement`` (with
    validation rows), and ``<name>_acc`` for each evaluation set."""
    feature_mean: np.ndarray
    """``(P, d)`` the training rows' feature means used to standardize (zeros when
    ``standardize=False``)."""
    feature_scale: np.ndarray
    """``(P, d)`` the standard deviations (plus eps) used to standardize."""
    config: TrainConfig = struct.field(pytree_node=False)

    @property
    def n_probes(self) -> int:
        return int(self.weights.shape[0])

    @property
    def failed(self) -> np.ndarray:
        """``(P,)`` bool: probes whose training went non-finite
        (:attr:`failed_epoch` >= 0)."""
        return np.asarray(self.failed_epoch) >= 0

    def logits(self, features: Any) -> jax.Array:
        """``(P, n)`` logits of every probe on raw features ``(n, d)``."""
        x = _as_features(features, self.weights.shape[1])
        return _logits(x, self.weights, self.bias)

    def predict_proba(self, features: Any) -> jax.Array:
        """``(P, n)`` probability of label 1 for every probe on ``(n, d)`` features."""
        x = _as_features(features, self.weights.shape[1])
        return _proba(x, self.weights, self.bias)

    def predict(self, features: Any) -> jax.Array:
        """``(P, n)`` hard predictions in {0, 1} (int8)."""
        x = _as_features(features, self.weights.shape[1])
        return _predict(x, self.weights, self.bias)


@jax.jit
def _logits(x: jax.Array, w: jax.Array, b: jax.Array) -> jax.Array:
    return (x.astype(jnp.float32) @ w.T).T + b[:, None]


@jax.jit
def _proba(x: jax.Array, w: jax.Array, b: jax.Array) -> jax.Array:
    return jax.nn.sigmoid(_logits(x, w, b))


@jax.jit
def _predict(x: jax.Array, w: jax.Array, b: jax.Array) -> jax.Array:
    return positive_logit(_logits(x, w, b)).astype(jnp.int8)


def _as_features(features: Any, d: int | None = None) -> jax.Array:
    x = features if isinstance(features, jax.Array) else np.asarray(features)
    if x.ndim != 2:
        raise ValueError(f"features must be 2-D (n, d), got shape {x.shape}")
    if d is not None and x.shape[1] != d:
        raise ValueError(
            f"features have {x.shape[1]} columns but the probes were trained on {d}"
        )
    return x if isinstance(x, jax.Array) else jax.device_put(x)
