"""Independent references for the Adam trainer: one probe, a plain optax loop.

:func:`adam_reference` trains ONE probe the textbook way (``optax.adam``, the loss's
gradient from ``jax.grad``, a Python loop over the same minibatch order that
``train_probes`` draws), sharing no code with the batched trainer but the loss
method itself and the documented minibatch order (:func:`probe_lab._adam.
epoch_order`). Tests compare it with ``train_probes`` on the same inputs.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from probe_lab._adam import epoch_order
from probe_lab.losses import get_loss


def minibatch_rows(train, *, key, group, epoch, batch_size):
    """The row indices of every minibatch of one epoch, as ``train_probes`` orders
    them for a probe in order group ``group``."""
    rows = np.flatnonzero(train).astype(np.int32)
    piece_key = jax.random.fold_in(jax.random.key(key), group)
    order = np.asarray(
        epoch_order(
            jax.random.fold_in(piece_key, epoch),
            jnp.asarray(rows),
            rows.size,
            train.size,
        )
    )
    ordered = rows[order]
    return [ordered[i : i + batch_size] for i in range(0, rows.size, batch_size)]


def adam_reference(
    x,
    y,
    train,
    *,
    key=0,
    group=0,
    epochs=3,
    batch_size=32,
    lr=1e-3,
    l2=0.0,
    loss="xent",
    params=None,
    weights=None,
    val=None,
    eps=1e-6,
    standardize=True,
):
    """Train one probe with optax.adam; returns ``(w, b)`` on the RAW features.

    Args:
        x: ``(n, d)`` features; y: ``(n,)`` targets; train: ``(n,)`` bool rows.
        loss: a loss method name; params: ``{name: float}`` its parameters.
        weights: ``(n,)`` row weights (the minibatch loss is their weighted mean).
        val: ``(n,)`` bool rows: keep the epoch with the best (weighted) agreement
            between ``logit >= 0`` and ``y >= 0.5`` (the first on ties).
        standardize: z-score each feature on the training rows (as
            ``TrainConfig.standardize``).
    """
    method = get_loss(loss)
    values = method.defaults | dict(params or {})
    values = {k: jnp.full((1,), v, jnp.float32) for k, v in values.items()}
    x = np.asarray(x, np.float32)
    rows = np.flatnonzero(train)
    mean = x[rows].astype(np.float64).mean(0)
    scale = x[rows].astype(np.float64).std(0) + eps
    if not standardize:
        mean, scale = np.zeros_like(mean), np.ones_like(scale)
    z = jnp.asarray((x - mean) / scale, jnp.float32)
    y = jnp.asarray(y, jnp.float32)
    row_weight = jnp.ones(len(x)) if weights is None else jnp.asarray(weights)
    total = np.ceil(rows.size / batch_size) * epochs

    def batch_loss(theta, idx, progress):
        logits = (z[idx] @ theta["w"] + theta["b"])[:, None]
        targets = y[idx][:, None]
        mask = jnp.ones_like(logits, bool)
        out = method.fn(logits, targets, mask, progress, values)
        if method.kind == "targets":
            t = jax.lax.stop_gradient(out)
            out = jax.nn.softplus(logits) - t * logits
        w = row_weight[idx][:, None]
        data = (out * w).sum() / jnp.maximum(w.sum(), 1e-12)
        return data + 0.5 * l2 * (theta["w"] ** 2).sum()

    grad = jax.jit(jax.grad(batch_loss))
    theta = {"w": jnp.zeros(x.shape[1]), "b": jnp.zeros(())}
    opt = optax.adam(lr)
    state = opt.init(theta)
    step, best, kept = 0, -1.0, theta
    for epoch in range(epochs):
        for idx in minibatch_rows(
            train, key=key, group=group, epoch=epoch, batch_size=batch_size
        ):
            g = grad(theta, jnp.asarray(idx), step / total)
            updates, state = opt.update(g, state)
            theta = optax.apply_updates(theta, updates)
            step += 1
        if val is None:
            kept = theta
            continue
        logits = np.asarray(z @ theta["w"] + theta["b"])
        hits = (logits >= 0) == (np.asarray(y) >= 0.5)
        w_val = np.asarray(row_weight)[val]
        agreement = (hits[val] * w_val).sum() / max(w_val.sum(), 1e-12)
        if agreement > best:
            best, kept = agreement, theta
    theta = kept
    w = np.asarray(theta["w"], np.float64) / scale
    return w, float(theta["b"]) - w @ mean
