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

__all__ = ["Probes", "positive", "positive_logit"]


def positive(proba: Any) -> Any:
    """THE hard prediction of probabilities: label 1 iff ``p >= 0.5`` (ties -> 1)."""
    return proba >= 0.5


def positive_logit(logits: Any) -> Any:
    """THE hard prediction of logits: label 1 iff ``logit >= 0``, the same rule as
    :func:`positive` on probabilities (``sigmoid(0) = 0.5``)."""
    return logits >= 0


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
    return jnp.asarray(x)
