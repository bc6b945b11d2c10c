"""Train thousands of binary linear probes at once.

One probe is ``sigmoid(x @ w + b)`` on features ``x: (n, d)``. Many probes are one
compiled program in which the weights of a chunk of probes form a matrix
``W: (P_chunk, d)``, so the forward pass of every probe on a minibatch is the single
matrix product ``x_batch @ W.T`` and the backward pass is ``residuals.T @ x_batch``.
Those two products are the whole cost of training; everything else (Adam, masks,
early stopping) is elementwise work on the weights.

Probes that train on the same rows in the same minibatch order share one product.
The planner groups probes into pieces by (training-row set, order group); each piece
gets its own permutation per epoch, drawn from ``fold_in(key, group)``. A chunk
stacks pieces of one shape and runs them as batched products; pieces of another
width or row-set size get chunks of their own shape (at most a few shapes per call,
each compiled once). Inside a piece, probes are sorted by how far into the features
their masks reach, and the weights are stored per block of columns that share a
feature range, so the k-feature family M_k multiplies only its first k features.
Chunks train in rounds, one chunk per local device, as one sharded call. Per-probe
variation is data: targets ``(P, n)``, feature masks ``(P, d)``, learning rate, L2,
loss method and loss parameters as ``(P,)`` arrays.

Modules, in the one direction their imports run: :mod:`probe_lab.config`
(``TrainConfig``) and :mod:`probe_lab.probes` (``Probes``) <- :mod:`probe_lab._plan`
(checks, pieces, chunks) <- the solvers :mod:`probe_lab._adam` and
:mod:`probe_lab.lbfgs` <- this module.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from jax.sharding import PartitionSpec as P
from tqdm.auto import tqdm

from probe_lab import _adam, _plan, lbfgs
from probe_lab.config import TrainConfig
from probe_lab.losses import check_method
from probe_lab.probes import (
    NonFiniteTrainingError,
    NonFiniteTrainingWarning,
    Probes,
    failure_message,
)

__all__ = ["compiled_trainers", "train_probes"]


def train_probes(
    features: Any,
    targets: Any,
    train_rows: Any = None,
    val_rows: Any = None,
    feature_mask: Any = None,
    config: TrainConfig | None = None,
    key: int | jax.Array = 0,
    *,
    groups: Any = None,
    eval_sets: Mapping[str, tuple[Any, Any]] | None = None,
    feature_gain: Any = None,
    sample_weight: Any = None,
    progress: bool = False,
) -> Probes:
    """Train ``P`` binary linear probes on shared features in a few compiled calls.

    Args:
        features: ``(n, d)`` float16/float32 features (numpy or jax). They go to the
            device once, in their own dtype.
        targets: ``(P, n)`` labels in [0, 1], hard or soft, one row per probe
            (``(n,)`` means one probe).
        train_rows: bool ``(n,)`` or ``(P, n)``: rows each probe trains on (default
            all). Probes with equal training rows share minibatches.
        val_rows: bool ``(n,)`` or ``(P, n)``: rows for early stopping on agreement
            between the probe's hard predictions and its targets (rounded at 0.5).
            ``None`` trains all epochs and keeps the last.
        feature_mask: bool ``(P, d)`` or ``(d,)``: features each probe may use (the
            k-feature family M_k masks all but the first k). Masked weights stay
            exactly zero.
        config: a :class:`TrainConfig` (default: the paper's protocol).
        key: int seed or a JAX PRNG key. Group ``g``'s minibatch order is drawn from
            ``fold_in(key, g)``, so a probe trained alone with the same key and group
            sees the same minibatches as in a batch.
        groups: int ``(P,)`` order groups (default all 0): probes in different groups
            get independent minibatch orders, e.g. one group per seed.
        eval_sets: ``{name: (rows, labels)}`` with bool rows and labels in {0, 1},
            each ``(n,)`` or ``(P, n)``: accuracy per epoch recorded in
            ``history[name + "_acc"]`` (training dynamics).
        feature_gain: ``(d,)`` positive factors applied to the (standardized)
            features before training (default 1): e.g. how salient an appended
            column is, which standardization alone would erase.
        sample_weight: ``(P, n)`` or ``(n,)`` row weights >= 0 (default all 1):
            each probe's loss is the weighted mean over a minibatch's rows and its
            validation agreement the weighted share; weight 0 drops a row (a label
            method's filter).
        progress: show a progress bar over chunks.

    Returns:
        A :class:`Probes` with ``(P, d)`` weights on the raw features. Probes whose
        training went NaN or inf in any step get NaN weights and their first bad
        epoch in ``failed_epoch`` (-1 for the others, which are unaffected); a
        ``NonFiniteTrainingWarning`` names them (or, with ``on_nonfinite="raise"``,
        a ``NonFiniteTrainingError`` carries the ``Probes``).
    """
    config = TrainConfig() if config is None else config
    plan = _plan.make_plan(
        features,
        targets,
        train_rows=train_rows,
        val_rows=val_rows,
        feature_mask=feature_mask,
        groups=groups,
        eval_sets=eval_sets,
        feature_gain=feature_gain,
        sample_weight=sample_weight,
        config=config,
        n_devices=jax.device_count(),
    )
    _check_methods(plan, int(config.batch_size))
    key = _key(key) if isinstance(key, int | np.integer) else key
    bar = tqdm(
        total=plan.n_probes, disable=not progress, unit="probe", desc="train_probes"
    )
    if config.solver == "lbfgs":
        outputs = _fit_lbfgs(plan, config, bar)
    else:
        outputs = _fit_adam(plan, config, key, bar)
    bar.close()
    return _report_failures(plan.assemble(outputs, config), config)


def _key(seed: int) -> jax.Array:
    """``jax.random.key(seed)``, built from NumPy where that is the same key
    (threefry's data for a seed in [0, 2**31) is ``[0, seed]``): the eager seeding
    would compile two small programs on first use."""
    if 0 <= seed < 2**31 and jax.config.jax_default_prng_impl == "threefry2x32":
        return jax.random.wrap_key_data(np.array([0, seed], np.uint32))
    return jax.random.key(seed)


def _report_failures(probes: Probes, config: TrainConfig) -> Probes:
    """Warn about (or raise on) probes whose training went non-finite."""
    if probes.failed.any():
        message = failure_message(probes.failed_epoch, config.loss)
        if config.on_nonfinite == "raise":
            raise NonFiniteTrainingError(message, probes)
        warnings.warn(message, NonFiniteTrainingWarning, stacklevel=3)
    return probes


def _check_methods(plan: _plan.Plan, batch_size: int) -> None:
    """Run each loss method once on the targets of its first probe's first rows
    (at the first step every logit is 0), so a broken method fails clearly before
    anything trains."""
    for i, method in enumerate(plan.methods):
        p = int(np.flatnonzero(plan.method_of == i)[0])
        params = {name: plan.params[name][p : p + 1] for name, _ in method.params}
        check_method(method, plan.targets[p, :batch_size][:, None], params)


def _fit_adam(
    plan: _plan.Plan, config: TrainConfig, key: jax.Array, bar: tqdm
) -> list[tuple[_plan.Chunk, dict[str, np.ndarray]]]:
    """Train the chunks in rounds, one chunk per local device in each round.

    A round is ONE sharded call (``shard_map`` over a mesh of the local devices),
    so each chunk shape compiles once however many devices there are. After
    ``jax.distributed.initialize()``, host ``h`` of ``H`` trains rounds ``h, h + H,
    ...`` and every host ends with all results (one all-gather).
    """
    devices = jax.local_devices()
    n_hosts, host = jax.process_count(), jax.process_index()
    mesh = jax.sharding.Mesh(np.array(devices), ("chunk",))
    x = jax.device_put(plan.features, jax.sharding.NamedSharding(mesh, P()))
    by_shape: dict[tuple, list[_plan.Chunk]] = {}
    for chunk in plan.chunks:
        by_shape.setdefault(chunk.shape, []).append(chunk)
    rounds = []
    for chunks in by_shape.values():
        static = _adam.Settings.of(config, plan, chunks[0])
        for start in range(0, len(chunks), len(devices)):
            group = chunks[start : start + len(devices)]
            group += [group[0].empty()] * (len(devices) - len(group))
            rounds.append((group, static))
    pending = []
    out_shapes: dict[tuple, Any] = {}  # per chunk shape, for rounds of other hosts

    def stack(group: list[_plan.Chunk]) -> Any:
        inputs = [plan.chunk_inputs(chunk) for chunk in group]
        return jax.tree.map(lambda *a: np.stack(a), *inputs)

    for r, (group, static) in enumerate(rounds):
        if r % n_hosts != host:  # another host trains it: only its output shapes
            shape = group[0].shape
            if shape not in out_shapes:
                out_shapes[shape] = jax.eval_shape(
                    _train_round, x, stack(group), key, mesh, static
                )
            pending.append((group, None, out_shapes[shape]))
            continue
        stacked = stack(group)
        sharded = jax.device_put(stacked, jax.sharding.NamedSharding(mesh, P("chunk")))
        pending.append((group, _train_round(x, sharded, key, mesh, static), None))
    results = []
    for group, out, _ in pending:
        results.append(None if out is None else jax.device_get(out))
        bar.update(sum(chunk.n_real for chunk in group) if out is not None else 0)
    if n_hosts > 1:
        results = _share_across_hosts(results, [p[2] for p in pending])
        bar.update(bar.total - bar.n)
    return [
        (chunk, jax.tree.map(lambda a, i=i: a[i], out))
        for (group, _, _), out in zip(pending, results, strict=True)
        for i, chunk in enumerate(group)
    ]


def _share_across_hosts(results: list[Any], shapes: list[Any]) -> list[Any]:
    """Give every host every round's output; round ``r`` was trained on host
    ``r % H`` (the others hold ``None`` and the output's shapes)."""
    from jax.experimental import multihost_utils

    n_hosts = jax.process_count()
    filled = [
        jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shape)
        if out is None
        else out
        for out, shape in zip(results, shapes, strict=True)
    ]
    gathered = multihost_utils.process_allgather(filled)  # leaves: (H, ...)
    return [
        jax.tree.map(lambda a, r=r: np.asarray(a[r % n_hosts]), out)
        for r, out in enumerate(gathered)
    ]


def compiled_trainers() -> int:
    """How many trainer programs are compiled so far in this process (one per
    distinct shape and static setting of a training round): a stage's record
    reports the difference before and after it."""
    return int(_train_round._cache_size())


@functools.partial(jax.jit, static_argnums=(3, 4))
def _train_round(x, c, key, mesh, settings):
    """One chunk per device: :func:`probe_lab._adam.train_chunk` under
    ``shard_map``."""

    def one(x, c, key):
        chunk = jax.tree.map(lambda a: a[0], c)
        out = _adam.train_chunk(x, chunk, key, settings=settings)
        return jax.tree.map(lambda a: a[None], out)

    # No collectives: each device trains its own chunk, so the varying-axis type
    # check (which would flag the per-chunk loop carries) is off.
    return jax.shard_map(
        one,
        mesh=mesh,
        in_specs=(P(), P("chunk"), P()),
        out_specs=P("chunk"),
        check_vma=False,
    )(x, c, key)


def _fit_lbfgs(
    plan: _plan.Plan, config: TrainConfig, bar: tqdm
) -> list[tuple[_plan.Chunk, dict[str, np.ndarray]]]:
    """Fit one piece per chunk; chunks go round-robin to the local devices."""
    devices = jax.local_devices()
    x_on = {dev: jax.device_put(plan.features, dev) for dev in devices}
    rotated: dict[tuple, Any] = {}
    pending = []
    for i, chunk in enumerate(plan.chunks):
        dev = devices[i % len(devices)]
        inputs = jax.device_put(plan.chunk_inputs(chunk), dev)
        piece = chunk.pieces[0]
        shared = (piece.row_set, piece.mask_key, dev)
        if shared not in rotated:
            rotated[shared] = lbfgs.rotate(x_on[dev], inputs.piece(0))
        out = lbfgs.fit_chunk_lbfgs(
            x_on[dev], *rotated[shared], inputs, **lbfgs.static_args(config)
        )
        pending.append((chunk, out))
    outputs = []
    for chunk, out in pending:
        outputs.append((chunk, jax.device_get(out)))
        bar.update(chunk.n_real)
    return outputs
