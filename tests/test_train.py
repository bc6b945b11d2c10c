"""The Adam trainer: batched equals single, masks hold, early stopping, errors."""

from __future__ import annotations

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import make_problem

from probe_lab import TrainConfig, _plan, train_probes
from probe_lab.train import _key, _train_round, compiled_trainers

FAST = TrainConfig(epochs=6, batch_size=32)


def split(n, frac=0.75):
    train = np.arange(n) < int(n * frac)
    return train, ~train


def test_batched_run_equals_loop_of_single_probes(problem):
    x, y, _ = problem
    train, val = split(x.shape[0])
    groups = np.array([0, 0, 1, 1, 2, 2])
    batch = train_probes(x, y, train, val, config=FAST, key=3, groups=groups)
    for p in range(y.shape[0]):
        one = train_probes(
            x, y[p], train, val, config=FAST, key=3, groups=groups[p : p + 1]
        )
        np.testing.assert_allclose(one.weights[0], batch.weights[p], atol=2e-5)
        np.testing.assert_allclose(one.bias[0], batch.bias[p], atol=2e-5)
        assert one.best_epoch[0] == batch.best_epoch[p]


def test_order_groups_change_minibatch_order(problem):
    x, y, _ = problem
    same = train_probes(x, np.stack([y[0], y[0]]), config=FAST, groups=[0, 0])
    other = train_probes(x, np.stack([y[0], y[0]]), config=FAST, groups=[0, 1])
    np.testing.assert_array_equal(same.weights[0], same.weights[1])
    assert not np.allclose(other.weights[0], other.weights[1])


@pytest.mark.parametrize("packed", [True, False])
def test_epoch_order_shuffles_each_real_position_once(packed):
    from probe_lab._adam import epoch_order as _epoch_order

    rows = jnp.asarray(np.r_[np.arange(3, 203), np.zeros(56, int)], jnp.int32)
    orders = [
        np.asarray(_epoch_order(jax.random.key(e), rows, 200, 300, packed))
        for e in range(3)
    ]
    for order in orders:
        assert sorted(order[:200]) == list(range(200))
        np.testing.assert_array_equal(order[200:], np.arange(200, 256))
    assert not np.array_equal(orders[0], orders[1])
    assert not np.array_equal(orders[0][:200], np.arange(200))


def test_mixed_losses_in_one_call_equal_separate_calls(problem):
    x, y, _ = problem
    train, val = split(x.shape[0])
    alpha = np.array([0.75, 0.0, 0.5, 0.0, 0.75, 0.0])
    conf = dict(loss="confidence", epochs=6, batch_size=32)
    mixed = train_probes(
        x, y, train, val, config=TrainConfig(alpha_max=tuple(alpha), **conf)
    )
    for loss, pick in (("xent", alpha == 0), ("confidence", alpha > 0)):
        config = TrainConfig(
            loss=loss, epochs=6, batch_size=32, alpha_max=tuple(alpha[pick])
        )
        alone = train_probes(x, y[pick], train, val, config=config)
        np.testing.assert_allclose(alone.weights, mixed.weights[pick], atol=2e-5)


def test_record_loss_off_trains_the_same_probes(problem):
    x, y, _ = problem
    train, val = split(x.shape[0])
    on = train_probes(x, y, train, val, config=FAST)
    config = TrainConfig(epochs=FAST.epochs, batch_size=32, record_loss=False)
    off = train_probes(x, y, train, val, config=config)
    assert "train_loss" in on.history and "train_loss" not in off.history
    np.testing.assert_allclose(on.weights, off.weights, atol=1e-6)
    np.testing.assert_array_equal(
        on.history["val_agreement"], off.history["val_agreement"]
    )


def cut_blocks_at_any_size(monkeypatch) -> list[int]:
    """Blocks at test sizes (they cost a fixed price that small problems never
    pay back); returns a list that collects each chunk's number of blocks."""
    import probe_lab._plan as plan

    monkeypatch.setattr(plan, "BLOCK_PRICE", 0.0)
    counts: list[int] = []
    real = plan._blocks

    def spy(*args, **kwargs):
        blocks = real(*args, **kwargs)
        counts.append(len(blocks))
        return blocks

    monkeypatch.setattr(plan, "_blocks", spy)
    return counts


def test_feature_blocks_of_m_k_probes_equal_probes_trained_alone(problem, monkeypatch):
    """Columns cut into feature blocks (the M_k family) train as single probes."""
    blocks = cut_blocks_at_any_size(monkeypatch)
    x, y, _ = problem
    d = x.shape[1]
    train, val = split(x.shape[0])
    ks = np.array([12, 1, 6, 2, 12, 4])
    mask = np.arange(d)[None, :] < ks[:, None]
    batch = train_probes(x, y, train, val, feature_mask=mask, config=FAST, key=5)
    for p in range(y.shape[0]):
        one = train_probes(
            x, y[p], train, val, feature_mask=mask[p], config=FAST, key=5
        )
        np.testing.assert_allclose(one.weights[0], batch.weights[p], atol=2e-5)
        assert one.best_epoch[0] == batch.best_epoch[p]
    assert blocks[0] == 5  # the batch: one block per mask width (1, 2, 4, 6, 12)


def test_blocks_skip_features_no_mask_reaches():
    from probe_lab._plan import _blocks

    lo = np.zeros(28, int)
    hi = np.array([2] * 14 + [384] * 14)
    assert _blocks(lo, hi, n_pieces=5) == ((0, 14, 0, 2), (14, 28, 0, 384))
    # Unmasked probes: one block over every feature.
    assert _blocks(lo, np.full(28, 384), n_pieces=5) == ((0, 28, 0, 384),)
    # A block costs a fixed price, so a nearly-full column joins its neighbours.
    assert len(_blocks(lo[:3], np.array([380, 384, 384]), n_pieces=1)) == 1


def test_pieces_of_two_shapes_train_as_alone(problem):
    """Wide pieces on one row set and 1-probe pieces on another get own shapes."""
    x, y, _ = problem
    n = x.shape[0]
    half = np.arange(n) < n // 2
    rows = np.stack([half] * 5 + [~half])
    groups = np.array([0, 0, 0, 0, 0, 1])
    batch = train_probes(x, y, rows, config=FAST, key=2, groups=groups)
    single = train_probes(x, y[5], rows[5], config=FAST, key=2, groups=groups[5:])
    np.testing.assert_allclose(single.weights[0], batch.weights[5], atol=2e-5)
    wide = train_probes(x, y[:5], rows[:5], config=FAST, key=2, groups=groups[:5])
    np.testing.assert_allclose(wide.weights, batch.weights[:5], atol=2e-5)


def test_learns_planted_direction_and_beats_chance():
    x, y, _ = make_problem(n=600, d=10, noise=0.3)
    train, test = split(600)
    probes = train_probes(x, y, train, config=TrainConfig(epochs=30, batch_size=32))
    acc = (np.asarray(probes.predict(x)) == y)[:, test].mean(axis=1)
    assert acc.min() > 0.85


def test_feature_mask_weights_stay_exactly_zero(problem):
    x, y, _ = problem
    d = x.shape[1]
    ks = np.array([1, 2, 4, 6, 9, 12])
    mask = np.arange(d)[None, :] < ks[:, None]
    for config in (FAST, TrainConfig(solver="lbfgs", l2=1e-2)):
        probes = train_probes(x, y, feature_mask=mask, config=config)
        w = np.asarray(probes.weights)
        assert np.all(w[~mask] == 0.0)
        assert np.all(np.abs(w[mask]) > 0)


def test_rows_outside_train_and_val_do_not_matter(problem):
    x, y, _ = problem
    n = x.shape[0]
    train = np.arange(n) % 3 == 0
    val = np.arange(n) % 3 == 1
    y2 = y.copy()
    y2[:, ~(train | val)] = 1 - y2[:, ~(train | val)]
    a = train_probes(x, y, train, val, config=FAST)
    b = train_probes(x, y2, train, val, config=FAST)
    np.testing.assert_array_equal(a.weights, b.weights)
    # ... and rows of the training set do matter.
    y3 = y.copy()
    y3[:, train] = 1 - y3[:, train]
    c = train_probes(x, y3, train, val, config=FAST)
    assert not np.allclose(a.weights, c.weights)


def test_per_probe_train_rows_form_separate_row_sets(problem):
    x, y, _ = problem
    n = x.shape[0]
    rows = np.stack([np.arange(n) < n // 2, np.arange(n) >= n // 2])
    both = train_probes(x, y[:2], rows, config=FAST)
    for p in range(2):
        one = train_probes(x, y[p], rows[p], config=FAST)
        np.testing.assert_allclose(one.weights[0], both.weights[p], atol=2e-5)


def test_early_stopping_returns_best_validation_epoch(problem):
    x, y, _ = problem
    train, val = split(x.shape[0], 0.5)
    config = TrainConfig(epochs=12, batch_size=16, lr=0.05)
    probes = train_probes(x, y, train, val, config=config)
    curve = probes.history["val_agreement"]  # (epochs, P)
    np.testing.assert_array_equal(probes.best_epoch, curve.argmax(axis=0) + 1)
    for p in range(y.shape[0]):
        epochs = int(probes.best_epoch[p])
        rerun = train_probes(
            x, y[p], train, config=TrainConfig(epochs=epochs, batch_size=16, lr=0.05)
        )
        np.testing.assert_allclose(rerun.weights[0], probes.weights[p], atol=2e-5)
        agree = (np.asarray(probes.predict(x))[p] == (y[p] >= 0.5))[val].mean()
        assert agree == pytest.approx(curve[epochs - 1, p], abs=1e-6)


def test_eval_sets_record_accuracy_per_epoch(problem):
    x, y, _ = problem
    train, test = split(x.shape[0])
    truth = y[0].astype(int)
    probes = train_probes(x, y, train, config=FAST, eval_sets={"test": (test, truth)})
    curve = probes.history["test_acc"]
    assert curve.shape == (FAST.epochs, y.shape[0])
    final = (np.asarray(probes.predict(x)) == truth)[:, test].mean(axis=1)
    np.testing.assert_allclose(curve[-1], final, atol=1e-6)
    assert probes.history["train_loss"].shape == (FAST.epochs, y.shape[0])


def test_soft_targets_and_float16_features(problem):
    x, y, _ = problem
    soft = np.clip(y * 0.8 + 0.1, 0, 1)
    a = train_probes(x.astype(np.float16), soft, config=FAST)
    b = train_probes(x.astype(np.float16).astype(np.float32), soft, config=FAST)
    np.testing.assert_allclose(a.weights, b.weights, atol=1e-5)


def test_per_probe_learning_rate_and_l2(problem):
    x, y, _ = problem
    yy = np.stack([y[0]] * 3)
    probes = train_probes(x, yy, config=TrainConfig(epochs=6, l2=(0.0, 0.1, 1.0)))
    norms = np.linalg.norm(np.asarray(probes.weights) * probes.feature_scale, axis=1)
    assert norms[0] > norms[1] > norms[2]
    zero = train_probes(x, y[:2], config=TrainConfig(epochs=3, lr=(1e-3, 1e-1)))
    assert np.linalg.norm(zero.weights[1]) > np.linalg.norm(zero.weights[0])


def test_standardize_off_trains_on_raw_features(problem):
    x, y, _ = problem
    probes = train_probes(x, y, config=TrainConfig(epochs=3, standardize=False))
    assert np.all(probes.feature_mean == 0) and np.all(probes.feature_scale == 1)


def test_second_call_with_same_shapes_compiles_nothing(problem, compiles):
    x, y, _ = problem
    train, val = split(x.shape[0])
    train_probes(x, y, train, val, config=FAST).predict_proba(x)
    with compiles() as seen:
        probes = train_probes(x, 1 - y, train, val, config=FAST, key=7)
        probes.predict_proba(x)
    assert seen == []


def test_new_shapes_compile_only_their_trainer(compiles):
    # Everything around the trainer runs from NumPy or in programs compiled once
    # per process: a call with new shapes (n, d, P) compiles its trainer alone.
    x, y, _ = make_problem(n=200, d=10, n_probes=3, seed=1)
    train, val = split(200)
    train_probes(x, y, train, val, config=FAST, key=1)
    x, y, _ = make_problem(n=232, d=13, n_probes=5, seed=2)
    train, val = split(232)
    before = compiled_trainers()
    with compiles() as seen:
        train_probes(x, y, train, val, config=FAST, key=2)
    assert len(seen) == compiled_trainers() - before == 1


@pytest.mark.parametrize("seed", [0, 5, 2**31 - 1, 2**31, -3])
def test_integer_seed_gives_jax_random_key(seed):
    got, want = _key(seed), jax.random.key(seed)
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(jax.random.key_data(got), jax.random.key_data(want))


def test_a_class_of_pieces_pads_only_to_its_widest_piece(problem):
    # Ten M_k probes in one piece: ten columns, not the class's rounded sixteen
    # (a padding column would repeat the widest probe and multiply every feature).
    x, _, _ = problem
    y = np.stack([x[:, 0] > 0] * 10).astype(np.float32)
    mask = np.arange(12) < np.arange(1, 11)[:, None]
    plan = _plan.make_plan(
        x,
        y,
        train_rows=None,
        val_rows=None,
        feature_mask=mask,
        groups=None,
        eval_sets=None,
        config=FAST,
    )
    (chunk,) = plan.chunks
    assert chunk.shape[1] == 10
    assert max(hi for _, _, _, hi in chunk.blocks) == 10


def test_many_chunks_compile_once(problem):
    x, y, _ = problem
    yy = np.concatenate([y] * 4)  # 24 probes in chunks of 8
    config = TrainConfig(epochs=2, probe_chunk=8)
    before = _train_round._cache_size()
    probes = train_probes(x, yy, config=config, key=11)
    assert _train_round._cache_size() == before + 1
    # Equal targets in different chunks train identically: chunks are independent.
    # (Not bit for bit: the product kernels may sum a probe's terms in another order
    # depending on its column within the chunk.)
    np.testing.assert_allclose(probes.weights[:6], probes.weights[18:], rtol=1e-5)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(targets=np.zeros((2, 5))), "targets must have shape"),
        (dict(targets=np.full((2, 240), 1.5)), r"targets must lie in \[0, 1\]"),
        (dict(targets=np.zeros((0, 240))), "P = 0"),
        (dict(train_rows=np.zeros(240, bool)), "train_rows selects no rows"),
        (dict(val_rows=np.zeros(240, bool)), "val_rows selects no rows"),
        (dict(train_rows=np.ones(7, bool)), "train_rows has shape"),
        (dict(train_rows=np.ones(240)), "boolean mask"),
        (dict(feature_mask=np.ones((2, 3), bool)), "feature_mask has shape"),
        (dict(feature_mask=np.zeros(12, bool)), "selects no features"),
        (dict(groups=[0]), "groups must be"),
    ],
)
def test_bad_input_names_the_argument(problem, kwargs, message):
    x, y, _ = problem
    args = dict(targets=y[:2])
    args.update(kwargs)
    with pytest.raises((ValueError, TypeError), match=message):
        train_probes(x, config=FAST, **args)


def test_non_finite_features_are_refused(problem):
    x, y, _ = problem
    x = x.copy()
    x[5, 2] = np.nan
    x[9, 0] = np.inf
    with pytest.raises(
        ValueError, match=r"NaN or inf in 2 row\(s\), first rows \[5, 9\]"
    ):
        train_probes(x, y, config=FAST)
    with pytest.raises(ValueError, match="features must be 2-D"):
        train_probes(x[0], y, config=FAST)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(solver="sgd"), "solver must be one of"),
        (dict(loss="hinge"), "loss must be one of"),
        (dict(solver="lbfgs"), "needs l2 > 0"),
        (dict(lr=0.0), "lr must be > 0"),
        (dict(alpha_max=1.5), "alpha_max must lie"),
        (dict(epochs=0), "epochs must be >= 1"),
        (dict(lr=[[1e-3]]), "one value per probe"),
    ],
)
def test_bad_config_is_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**kwargs)


def test_per_probe_setting_length_must_match(problem):
    x, y, _ = problem
    with pytest.raises(ValueError, match="lr has 2 values but there are 6 probes"):
        train_probes(x, y, config=TrainConfig(epochs=1, lr=(1e-3, 1e-2)))


@pytest.mark.slow
def test_several_devices_give_the_same_probes(problem, tmp_path):
    """Chunks spread over 4 (forced) host devices train exactly as on one."""
    x, y, _ = problem
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", np.concatenate([y] * 3))
    script = (
        "import numpy as np, jax, sys\n"
        "from probe_lab import train_probes, TrainConfig\n"
        f"x = np.load('{tmp_path}/x.npy'); y = np.load('{tmp_path}/y.npy')\n"
        "p = train_probes(x, y, config=TrainConfig(epochs=3, probe_chunk=8))\n"
        f"np.save('{tmp_path}/w' + sys.argv[1] + '.npy', np.asarray(p.weights))\n"
        "print(len(jax.devices()))\n"
    )
    outs = []
    for devices in ("1", "4"):
        env = {"XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
        run = subprocess.run(
            [sys.executable, "-c", script, devices],
            capture_output=True,
            text=True,
            env={**__import__("os").environ, **env},
            check=True,
        )
        outs.append(run.stdout.strip())
    assert outs == ["1", "4"]
    np.testing.assert_allclose(
        np.load(tmp_path / "w1.npy"), np.load(tmp_path / "w4.npy"), atol=1e-6
    )


def test_probes_is_a_pytree(problem):
    x, y, _ = problem
    probes = train_probes(x, y[:2], config=TrainConfig(epochs=1))
    leaves = jax.tree.leaves(probes)
    assert any(leaf.shape == (2, x.shape[1]) for leaf in leaves)


@pytest.mark.parametrize(
    ("loss", "params"),
    [("xent", {}), ("confidence", {"alpha_max": 0.75, "warmup_frac": 0.3})],
)
def test_one_probe_equals_a_plain_optax_adam_loop(problem, loss, params):
    """The fused, batched trainer against optax.adam over the same minibatches."""
    from reference import adam_reference

    x, y, _ = problem
    train, _ = split(x.shape[0])
    soft = np.clip(y[0] * 0.7 + 0.15, 0, 1)
    config = TrainConfig(
        epochs=4, batch_size=32, lr=1e-2, l2=1e-3, loss=loss, loss_params=params
    )
    probes = train_probes(x, soft, train, config=config, key=4, groups=[2])
    w, b = adam_reference(
        x,
        soft,
        train,
        key=4,
        group=2,
        epochs=4,
        lr=1e-2,
        l2=1e-3,
        loss=loss,
        params=params,
    )
    np.testing.assert_allclose(np.asarray(probes.weights[0]), w, atol=1e-5)
    assert float(probes.bias[0]) == pytest.approx(b, abs=1e-5)


def test_row_weights_equal_a_weighted_optax_loop_and_zero_drops_a_row(problem):
    from reference import adam_reference

    x, y, _ = problem
    n = x.shape[0]
    train, val = split(n)
    rng = np.random.default_rng(0)
    weights = np.where(rng.random(n) < 0.3, 0.0, rng.uniform(0.5, 2.0, n))
    config = TrainConfig(epochs=3, batch_size=32, lr=1e-2)
    probes = train_probes(x, y[:2], train, config=config, sample_weight=weights)
    for p in range(2):
        w, b = adam_reference(x, y[p], train, epochs=3, lr=1e-2, weights=weights)
        np.testing.assert_allclose(np.asarray(probes.weights[p]), w, atol=1e-5)
        assert float(probes.bias[p]) == pytest.approx(b, abs=1e-5)
    # A dropped row's label does not matter; a kept row's does.
    flipped = y[:2].copy()
    dropped = train & (weights == 0)
    flipped[:, dropped] = 1 - flipped[:, dropped]
    again = train_probes(x, flipped, train, config=config, sample_weight=weights)
    np.testing.assert_allclose(again.weights, probes.weights, atol=1e-6)
    # Validation agreement is the weighted share.
    with_val = train_probes(x, y[:1], train, val, config=config, sample_weight=weights)
    curve = with_val.history["val_agreement"][:, 0]
    assert np.all((curve >= 0) & (curve <= 1))


def test_bad_sample_weight_is_refused(problem):
    x, y, _ = problem
    with pytest.raises(ValueError, match="sample_weight must be finite and >= 0"):
        train_probes(x, y, config=FAST, sample_weight=-np.ones(x.shape[0]))
    with pytest.raises(ValueError, match="sample_weight has shape"):
        train_probes(x, y, config=FAST, sample_weight=np.ones(3))
    with pytest.raises(ValueError, match="sample_weight is 0 on every training row"):
        train_probes(x, y, config=FAST, sample_weight=np.zeros(x.shape[0]))


def test_mixed_loss_methods_with_row_weights_equal_separate_calls(problem, monkeypatch):
    """Probes of several loss methods (target and loss kinds), M_k feature masks
    (so the loss runs block by block) and row weights in one call train as each
    method's probes alone."""
    blocks = cut_blocks_at_any_size(monkeypatch)
    x, y, _ = problem
    train, val = split(x.shape[0])
    losses = ("xent", "gce", "confidence", "bootstrap_soft", "gce", "xent")
    mask = np.zeros((len(losses), x.shape[1]), bool)
    for p, k in enumerate((3, 3, x.shape[1], 7, x.shape[1], 7)):
        mask[p, :k] = True
    weights = np.random.default_rng(1).uniform(0.0, 2.0, x.shape[0])
    config = TrainConfig(epochs=3, batch_size=32, lr=1e-2, loss=losses)
    mixed = train_probes(x, y, train, val, mask, config=config, sample_weight=weights)
    for loss in set(losses):
        pick = np.array([name == loss for name in losses])
        alone = train_probes(
            x,
            y[pick],
            train,
            val,
            mask[pick],
            config=TrainConfig(epochs=3, batch_size=32, lr=1e-2, loss=loss),
            sample_weight=weights,
        )
        np.testing.assert_allclose(alone.weights, mixed.weights[pick], atol=2e-5)
        np.testing.assert_array_equal(alone.best_epoch, mixed.best_epoch[pick])
        np.testing.assert_allclose(
            alone.history["train_loss"],
            mixed.history["train_loss"][:, pick],
            rtol=1e-5,
            atol=1e-6,
        )
    assert blocks[0] == 3  # the mixed call: masks of 3, 7 and every feature


# ------------------------------------------------------- non-finite training


def _bce(z, t):
    return jnp.maximum(z, 0) - z * t + jnp.log1p(jnp.exp(-jnp.abs(z)))


def _register_nan_losses():
    """Loss methods that go non-finite for probes with ``on = 1`` only, each a
    case a hostile user tried (the double ``where`` keeps the other probes' gradients
    finite)."""
    from probe_lab.losses import register_loss

    def make(bad_from):
        def fn(logits, targets, mask, progress, params):
            bad = (progress > bad_from) & (params["on"] > 0)
            return _bce(logits, targets) + jnp.sqrt(jnp.where(bad, -1 - logits**2, 1.0))

        return fn

    register_loss("_nan_after_first_step", params={"on": 0.0}, overwrite=True)(
        make(0.0)
    )
    register_loss("_nan_after_half", params={"on": 0.0}, overwrite=True)(make(0.499))

    @register_loss("_nan_grad_from_epoch_3", params={"on": 0.0}, overwrite=True)
    def _nan_grad(logits, targets, mask, progress, params):
        # epochs=6: epoch 3 starts at progress 2/6; the loss stays finite, its
        # gradient (sqrt at 0) does not.
        bad = (progress > 2 / 6 - 1e-3) & (params["on"] > 0)
        return _bce(logits, targets) + jnp.sqrt(jnp.where(bad, 0 * logits, 1.0))

    @register_loss("_nan_value_finite_grad", params={"on": 0.0}, overwrite=True)
    def _nan_value(logits, targets, mask, progress, params):
        # NaN from epoch 2 of 4 with a finite (zero) gradient: the loss fails.
        bad = (progress > 0.25 - 1e-3) & (params["on"] > 0)
        return jnp.where(bad, jnp.nan, _bce(logits, targets))

    @register_loss(
        "_targets_leave_range", kind="targets", params={"on": 0.0}, overwrite=True
    )
    def _targets(logits, targets, mask, progress, params):
        bad = (progress > 0) & (params["on"] > 0)
        return jnp.where(bad, 2 * targets + 0.5, targets)


_register_nan_losses()


@pytest.mark.parametrize(
    ("loss", "epochs", "first_bad", "early_stopping"),
    [
        ("_nan_after_first_step", 3, 1, False),
        ("_nan_after_half", 4, 3, False),
        ("_nan_grad_from_epoch_3", 6, 3, True),
        ("_targets_leave_range", 3, 1, False),
    ],
)
def test_non_finite_training_fails_only_its_probes_at_the_right_epoch(
    problem, loss, epochs, first_bad, early_stopping
):
    from probe_lab.probes import NonFiniteTrainingWarning

    x, y, _ = problem
    train, val = split(x.shape[0])
    on = np.array([0, 1, 0, 0, 1, 0], np.float32)
    kwargs = dict(val_rows=val if early_stopping else None, key=1)

    def config(flags):
        return TrainConfig(
            epochs=epochs, batch_size=32, loss=loss, loss_params={"on": flags}
        )

    with pytest.warns(NonFiniteTrainingWarning, match=r"1 \(.*epoch") as caught:
        bad = train_probes(x, y, train, config=config(on), **kwargs)
    assert "2 of 6 probe(s)" in str(caught[0].message)
    clean = train_probes(x, y, train, config=config(0.0 * on), **kwargs)
    expected = np.where(on > 0, first_bad, -1)
    np.testing.assert_array_equal(bad.failed_epoch, expected)
    np.testing.assert_array_equal(clean.failed_epoch, -1)
    assert np.isnan(np.asarray(bad.weights)[on > 0]).all()
    assert np.isnan(np.asarray(bad.bias)[on > 0]).all()
    ok = on == 0
    np.testing.assert_allclose(bad.weights[ok], clean.weights[ok], atol=1e-6)
    np.testing.assert_array_equal(bad.best_epoch[ok], clean.best_epoch[ok])
    loss_curve = bad.history["train_loss"]
    assert np.isfinite(loss_curve[: first_bad - 1]).all()
    assert np.isnan(loss_curve[first_bad - 1 :, on > 0]).all()
    assert np.isfinite(loss_curve[:, ok]).all()
    if early_stopping:  # an earlier epoch was kept, yet the probe is failed
        assert (bad.best_epoch[on > 0] < first_bad).all()


def test_non_finite_training_can_raise_and_without_loss_record(problem):
    from probe_lab.probes import NonFiniteTrainingError

    x, y, _ = problem
    on = np.array([1, 0, 0, 0, 0, 0], np.float32)
    config = TrainConfig(
        epochs=4,
        batch_size=32,
        loss="_nan_after_half",
        loss_params={"on": on},
        record_loss=False,
        on_nonfinite="raise",
    )
    with pytest.raises(NonFiniteTrainingError, match="_nan_after_half, epoch 3"):
        train_probes(x, y, config=config)
    try:
        train_probes(x, y, config=config)
    except NonFiniteTrainingError as err:
        np.testing.assert_array_equal(err.probes.failed_epoch, [3, -1, -1, -1, -1, -1])


def test_targets_that_round_past_one_do_not_fail(problem):
    from probe_lab.losses import register_loss

    @register_loss("_rounded_mixture", kind="targets", overwrite=True)
    def _rounded(logits, targets, mask, progress, params):
        # 1.000001 where the target is 1, after the first step (which
        # check_method sees)
        return jnp.where(progress > 0, targets * (1 + 1e-6), targets)

    x, y, _ = problem
    config = TrainConfig(epochs=2, batch_size=32, loss="_rounded_mixture")
    probes = train_probes(x, y, config=config)
    np.testing.assert_array_equal(probes.failed_epoch, -1)


def test_a_nan_loss_with_a_finite_gradient_fails_without_loss_record(problem):
    from probe_lab.probes import NonFiniteTrainingWarning

    x, y, _ = problem
    on = np.array([0, 0, 1, 0, 0, 0], np.float32)
    config = TrainConfig(
        epochs=4,
        batch_size=32,
        loss="_nan_value_finite_grad",
        loss_params={"on": on},
        record_loss=False,
    )
    with pytest.warns(NonFiniteTrainingWarning):
        probes = train_probes(x, y, config=config)
    np.testing.assert_array_equal(probes.failed_epoch, [-1, -1, 2, -1, -1, -1])


def test_weights_that_overflow_are_failed(problem):
    from probe_lab.probes import NonFiniteTrainingWarning

    x, y, _ = problem
    lr = np.array([1e-2, 3e38, 1e-2, 1e-2, 1e-2, 1e-2], np.float32)
    with pytest.warns(NonFiniteTrainingWarning):
        probes = train_probes(x, y, config=TrainConfig(epochs=2, lr=lr))
    np.testing.assert_array_equal(probes.failed_epoch, [-1, 1, -1, -1, -1, -1])


@pytest.mark.parametrize("share", [0.3, 0.95])
def test_eval_sets_are_cut_to_rows_that_hold_every_set(share):
    """The plan keeps each set's rows and labels on ``eval_index``: the union of
    the sets' rows (a sparse union) or all rows (a union of nearly all), and no
    row of any set is lost either way."""
    rng = np.random.default_rng(0)
    n_probes, n = 6, 400
    y = (rng.random((n_probes, n)) < 0.5).astype(np.float32)
    val = rng.random((n_probes, n)) < share / 2
    test = rng.random(n) < share / 2
    labels = rng.random(n) < 0.5
    names, index, rows, got = _plan.check_eval_sets(y, val, {"test": (test, labels)})
    assert names == ["val_agreement", "test_acc"]
    union = val.any(axis=0) | test
    assert index.size == (n if share > 0.9 else union.sum())
    assert set(np.flatnonzero(union)) <= set(index)
    np.testing.assert_array_equal(rows[0], val[:, index])
    np.testing.assert_array_equal(rows[1], np.broadcast_to(test[index], rows[1].shape))
    np.testing.assert_array_equal(got[0], (y > 0.5)[:, index])
    np.testing.assert_array_equal(got[1], np.broadcast_to(labels[index], got[1].shape))


def test_packed_hit_counts_equal_the_boolean_tally():
    """With PACKED_FROM or more evaluation sets the trainer counts each set's hits
    in 32-row words; the counts equal the boolean tally and a NumPy count, also
    for a row count that is not a multiple of 32."""
    from types import SimpleNamespace

    from probe_lab import _adam

    rng = np.random.default_rng(0)
    sets, pieces, m, width = _adam.PACKED_FROM + 2, 3, 77, 5
    c = SimpleNamespace(
        eval_rows=jnp.asarray(rng.random((sets, pieces, m, width)) < 0.7),
        eval_labels=jnp.asarray(rng.random((sets, pieces, m, width)) < 0.5),
    )
    predicted = rng.random((pieces, m, width)) < 0.5
    bits = _adam.eval_label_bits(c)
    assert bits is not None and bits[0].shape == (sets, pieces, 3, width)
    packed = np.asarray(_adam._hit_counts(jnp.asarray(predicted), c, bits))
    plain = np.asarray(_adam._hit_counts(jnp.asarray(predicted), c, None))
    expected = (
        (predicted[None] == np.asarray(c.eval_labels)) & np.asarray(c.eval_rows)
    ).sum(axis=2)
    np.testing.assert_array_equal(packed, expected)
    np.testing.assert_array_equal(plain, expected)
    two = SimpleNamespace(eval_rows=c.eval_rows[:2], eval_labels=c.eval_labels[:2])
    assert _adam.eval_label_bits(two) is None  # below PACKED_FROM: the boolean tally
