"""The confidence loss against a float64 NumPy reference of the paper's formula."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from probe_lab import TrainConfig, train_probes
from probe_lab.losses import binary_xent, confidence_targets, harden_to_balance


def reference_confidence_loss(logits, weak, mask, alpha):
    """L_conf = (1 - a) CE(f, f_w) + a CE(f, hard_t(f)), float64, per probe.

    hard_t(f) is 1 for the round(m * mean weak) rows with the largest logits.
    """
    logits, weak = logits.astype(np.float64), weak.astype(np.float64)
    n_probes = logits.shape[1]
    losses = np.zeros(n_probes)
    for p in range(n_probes):
        rows = np.flatnonzero(mask[:, p])
        z, y = logits[rows, p], weak[rows, p]
        k = int(np.round(y.sum()))
        hard = np.zeros(rows.size)
        if k > 0:
            hard[z >= np.sort(z)[::-1][k - 1]] = 1.0
        prob = 1 / (1 + np.exp(-z))
        ce_weak = -(y * np.log(prob) + (1 - y) * np.log(1 - prob))
        ce_hard = -(hard * np.log(prob) + (1 - hard) * np.log(1 - prob))
        losses[p] = np.mean((1 - alpha[p]) * ce_weak + alpha[p] * ce_hard)
    return losses


@pytest.mark.parametrize("soft", [False, True])
def test_confidence_loss_equals_float64_reference(soft):
    rng = np.random.default_rng(1)
    batch, n_probes = 64, 7
    logits = rng.normal(scale=2.0, size=(batch, n_probes)).astype(np.float32)
    weak = rng.random((batch, n_probes))
    weak = (weak if soft else weak < 0.3).astype(np.float32)
    mask = rng.random((batch, n_probes)) < 0.8
    alpha = rng.uniform(0, 1, n_probes).astype(np.float32)

    def loss(z):
        target = confidence_targets(z, weak, mask, alpha)
        per_row = binary_xent(z, target) * mask
        return per_row.sum(0) / mask.sum(0)

    ours = np.asarray(loss(jnp.asarray(logits)))
    ref = reference_confidence_loss(logits, weak, mask, alpha)
    np.testing.assert_allclose(ours, ref, rtol=1e-5)

    # Gradient: the hardened labels are constants, so dL/dz = (p - mixed) / m.
    grad = np.asarray(jax.grad(lambda z: loss(z).sum())(jnp.asarray(logits)))
    hard = np.asarray(harden_to_balance(logits, weak, mask))
    mixed = (1 - alpha) * weak + alpha * hard
    expected = (1 / (1 + np.exp(-logits.astype(np.float64))) - mixed) * mask
    np.testing.assert_allclose(grad, expected / mask.sum(0), atol=1e-6)


def test_hardening_matches_the_weak_class_balance():
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(100, 5)).astype(np.float32)
    weak = (rng.random((100, 5)) < np.array([0.1, 0.3, 0.5, 0.7, 0.0])).astype(
        np.float32
    )
    hard = np.asarray(harden_to_balance(logits, weak, np.ones((100, 1), bool)))
    np.testing.assert_array_equal(hard.sum(0), weak.sum(0))
    for p in range(5):  # the hardened positives are the top logits
        if weak[:, p].sum():
            assert logits[hard[:, p] == 1, p].min() > logits[hard[:, p] == 0, p].max()


def test_confidence_loss_with_alpha_zero_is_plain_xent():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(200, 6)).astype(np.float32)
    y = (rng.random((2, 200)) < 0.5).astype(np.float32)
    common = dict(epochs=3, batch_size=50)
    xent = train_probes(x, y, config=TrainConfig(**common))
    conf = train_probes(
        x, y, config=TrainConfig(loss="confidence", alpha_max=0.0, **common)
    )
    np.testing.assert_allclose(xent.weights, conf.weights, atol=1e-6)
    strong = train_probes(
        x, y, config=TrainConfig(loss="confidence", alpha_max=0.75, **common)
    )
    assert not np.allclose(xent.weights, strong.weights)


def test_hardening_equals_a_sort_with_ties_masks_and_near_equal_logits():
    """The early-stopping bisection picks exactly the rows a full sort picks."""
    rng = np.random.default_rng(5)
    n, p = 64, 40
    logits = rng.normal(size=(n, p)).astype(np.float32)
    logits[:, 1] = 0.25  # all tied
    logits[:10, 2] = logits[10, 2]  # a tie block
    logits[:, 3] = 1 + np.arange(n, dtype=np.float32) * np.float32(2**-23)  # ulps
    logits[:, 4] = -np.abs(logits[:, 4])  # negative only
    weak = (rng.random((n, p)) < rng.random(p)).astype(np.float32)
    mask = rng.random((n, 1)) < 0.8
    hard = np.asarray(harden_to_balance(logits, weak, mask))
    for j in range(p):
        rows = np.flatnonzero(mask[:, 0])
        k = int(np.round(weak[rows, j].sum()))
        expected = np.zeros(n)
        if k:
            kth = np.sort(logits[rows, j])[::-1][k - 1]
            expected[rows[logits[rows, j] >= kth]] = 1  # ties at the k-th: all 1
        np.testing.assert_array_equal(hard[:, j], expected, err_msg=f"probe {j}")


def test_fused_adam_equals_optax_scale_by_adam():
    import optax

    from probe_lab._adam import fused_adam

    rng = np.random.default_rng(0)
    params = (jnp.asarray(rng.normal(size=(3, 4, 5)), jnp.float32),)
    ours, ref = fused_adam(0.9, 0.999, 1e-8), optax.scale_by_adam(0.9, 0.999, 1e-8)
    state, ref_state = ours.init(params), ref.init(params)
    for _ in range(25):
        grads = (jnp.asarray(rng.normal(size=(3, 4, 5)), jnp.float32),)
        update, state = ours.update(grads, state)
        expected, ref_state = ref.update(grads, ref_state)
        np.testing.assert_allclose(update[0], expected[0], rtol=2e-5, atol=1e-7)


def test_confidence_alpha_follows_the_warm_up_at_chosen_steps():
    """alpha(t) = alpha_max * min(1, t / warmup): 0 at the start, half way at half
    the warm-up, alpha_max from its end to the last step (50 steps, 10 of warm-up)."""
    from probe_lab.losses import confidence_alpha

    total, warmup, alpha_max = 50, 0.2, 0.75
    for step, expected in ((0, 0.0), (5, 0.375), (10, 0.75), (49, 0.75)):
        got = confidence_alpha(jnp.float32(step / total), alpha_max, warmup)
        assert float(got) == pytest.approx(expected, abs=1e-6)
