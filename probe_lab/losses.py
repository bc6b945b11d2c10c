"""Per-example losses of a binary linear probe, written on logits.

Every function here works on arrays whose LAST axis is the probe axis, so one call
handles a whole chunk of probes: logits ``(B, P)``, targets ``(B, P)``, row masks
``(B, P)`` or ``(B, 1)``.

The confidence loss is the auxiliary loss of Burns et al. (2023), Section 4.3:

    L_conf(f) = (1 - a) * CE(f(x), f_w(x)) + a * CE(f(x), hard_t(f(x)))

where ``hard_t`` hardens the student's own predictions at a threshold ``t`` chosen in
each minibatch so that the share of hardened positives equals the share of positive
weak labels in that minibatch. Because cross-entropy is linear in its target, this is
a single cross-entropy against the mixed target ``(1 - a) * f_w + a * hard_t(f)``; the
hardened labels are treated as constants (no gradient flows through the threshold).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = [
    "binary_xent",
    "confidence_targets",
    "harden_to_balance",
]


def binary_xent(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """Cross-entropy of ``sigmoid(logits)`` against soft targets, elementwise.

    Args:
        logits: real-valued logits, any shape.
        targets: targets in [0, 1], same shape.

    Returns:
        ``softplus(z) - t * z``, the numerically stable form of
        ``-t log sigmoid(z) - (1 - t) log(1 - sigmoid(z))``.
    """
    return jax.nn.softplus(logits) - targets * logits


def harden_to_balance(
    logits: jax.Array, targets: jax.Array, mask: jax.Array
) -> jax.Array:
    """Harden predictions so their class balance matches the targets', per probe.

    For each probe (last axis), with ``m`` rows selected by ``mask`` along axis 0 and
    ``k = round(m * mean(targets over those rows))``, the rows whose logits are among
    the ``k`` largest become 1 and the rest 0 (ties at the threshold all become 1).

    Args:
        logits: ``(B, P)`` student logits.
        targets: ``(B, P)`` targets in [0, 1] (hard or soft weak labels).
        mask: ``(B, P)`` or ``(B, 1)`` bool, the rows that count.

    Returns:
        ``(B, P)`` float array of hardened labels in {0, 1}, 0 outside ``mask``.
    """
    mask = jnp.broadcast_to(mask, logits.shape)
    positives = jnp.where(mask, targets, 0.0).sum(axis=0)
    k = jnp.round(positives).astype(jnp.int32)
    # The k-th largest logit per probe, found exactly by bisection on the float bits
    # mapped to order-preserving unsigned integers: at most 32 vectorized count
    # passes, far cheaper on CPU than sorting each column or comparing all pairs.
    # A probe is done early once exactly k rows lie at or above ``lo``: that set is
    # then the top k, the same rows the exact threshold selects.
    bits = jax.lax.bitcast_convert_type(jnp.where(mask, logits, -jnp.inf), jnp.int32)
    signed = jnp.where(bits < 0, bits ^ jnp.int32(0x7FFFFFFF), bits)
    key = jax.lax.bitcast_convert_type(signed ^ jnp.int32(-(2**31)), jnp.uint32)

    def narrow(state):
        lo, hi, at_lo, it = state
        mid = lo + ((hi - lo) >> 1) + ((hi - lo) & 1)
        count = (key >= mid[None, :]).sum(axis=0)
        enough = count >= k
        return (
            jnp.where(enough, mid, lo),
            jnp.where(enough, hi, mid - 1),
            jnp.where(enough, count, at_lo),
            it + 1,
        )

    def undecided(state):
        lo, hi, at_lo, it = state
        return (it < 32) & jnp.any((lo < hi) & (at_lo != k))

    full = jnp.full(k.shape, jnp.iinfo(jnp.uint32).max, jnp.uint32)
    start = (jnp.zeros_like(full), full, jnp.full(k.shape, key.shape[0]), 0)
    threshold = jax.lax.while_loop(undecided, narrow, start)[0]
    hard = (key >= threshold[None, :]) & mask & (k > 0)[None, :]
    return hard.astype(logits.dtype)


def confidence_targets(
    logits: jax.Array, targets: jax.Array, mask: jax.Array, alpha: jax.Array
) -> jax.Array:
    """The mixed target of the auxiliary confidence loss.

    Args:
        logits: ``(B, P)`` student logits.
        targets: ``(B, P)`` weak labels in [0, 1].
        mask: ``(B, P)`` or ``(B, 1)`` bool rows that count for the threshold.
        alpha: ``(P,)`` or scalar weight of the self-hardened term.

    Returns:
        ``(1 - alpha) * targets + alpha * harden_to_balance(...)``, with no gradient
        through the hardened part.
    """
    hard = jax.lax.stop_gradient(harden_to_balance(logits, targets, mask))
    return (1.0 - alpha) * targets + alpha * hard
