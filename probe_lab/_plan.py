"""Input checks and the chunk plan behind :func:`probe_lab.train_probes`.

The planner turns per-probe inputs (targets, row masks, feature masks, settings) into
pieces of probes that share one training-row set and one minibatch order (for L-BFGS,
one row set and one feature mask), and stacks pieces of one shape into chunks. Each
chunk carries the static facts its compiled trainer specializes on: its feature
blocks, which loss method each column uses and whether its row sets differ in size.
A call has at most a few chunk shapes, each compiled once. Results come back per
chunk and are scattered into probe order.

In order: :func:`check_inputs` (every argument against the others), the loss
methods and their per-probe parameters (:func:`loss_methods`), standardization per
row set (:func:`standardization`), pieces (:func:`make_pieces`) and packing
(:func:`_pack`); :func:`make_plan` runs them.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from probe_lab.config import TrainConfig
from probe_lab.losses import LossMethod, get_loss
from probe_lab.probes import Probes, positive


class ChunkInputs(struct.PyTreeNode):
    """Device inputs of one chunk: ``G`` pieces of ``C`` probes each.

    Every piece trains on one row set in one minibatch order; a chunk stacks pieces
    so one compiled step serves them all with batched products.
    """

    rows: jax.Array  # (G, n_max) int32 row indices of each piece's row set, 0-padded
    n_rows: jax.Array  # (G,) int32 real entries of ``rows``
    mean: jax.Array  # (G, d) float32 standardization mean
    scale: jax.Array  # (G, d) float32 standardization scale
    targets: jax.Array  # (G, n_max, C) float32 targets at ``rows``
    weights: jax.Array  # (G, n_max, C) float32 row weights; (G, 1, 1) unweighted
    val_weight: jax.Array  # (G, m, C) float32 validation weights; (G, 1, 1) unweighted
    feature_mask: jax.Array  # (G, C, d) bool
    lr: jax.Array  # (G, C)
    l2: jax.Array  # (G, C)
    method: jax.Array  # (G, C) int32 index of each probe's loss method in the plan
    params: dict[str, jax.Array]  # loss parameter name -> (G, C) float32
    order_key: jax.Array  # (G,) uint32: minibatch order from fold_in(key, it)
    eval_index: jax.Array  # (G, m) int32 each piece's rows evaluated every epoch
    eval_rows: jax.Array  # (S, G, m, C) bool, set 0 is validation when present
    eval_labels: jax.Array  # (S, G, m, C) bool reference labels

    def piece(self, g: int) -> ChunkInputs:
        """The ``g``-th piece alone, with the piece axis dropped."""
        per_piece = "rows n_rows mean scale targets weights feature_mask lr l2 method"
        return self.replace(
            **{name: getattr(self, name)[g] for name in per_piece.split()},
            order_key=self.order_key[g],
            val_weight=self.val_weight[g],
            eval_index=self.eval_index[g],
            params={k: v[g] for k, v in self.params.items()},
            eval_rows=self.eval_rows[:, g],
            eval_labels=self.eval_labels[:, g],
        )


def standardized_rows(x: jax.Array, c: ChunkInputs) -> jax.Array:
    """``(n_max, d)`` float32 standardized features of one piece's row set."""
    return (x[c.rows].astype(jnp.float32) - c.mean) / c.scale


def standardized_eval(x: jax.Array, c: ChunkInputs) -> jax.Array:
    """``(m, d)`` float32 evaluation rows standardized as one piece's rows."""
    return (x[c.eval_index].astype(jnp.float32) - c.mean) / c.scale


@dataclasses.dataclass(frozen=True)
class Piece:
    """Probes that share a row set and minibatch order (and, for L-BFGS, a mask)."""

    probes: np.ndarray  # (C,) probe indices, padded by repeating the first
    n_real: int  # leading entries of ``probes`` that are real (0: padding piece)
    row_set: int  # index into Plan.row_sets
    order_key: int  # user order group: minibatch order comes from fold_in(key, it)
    mask_key: int  # one per unique feature mask (L-BFGS shares a rotation by it)


Block = tuple[int, int, int, int]  # probe columns [c0, c1) use features [lo, hi)


@dataclasses.dataclass(frozen=True)
class MethodColumns:
    """The columns of a chunk where a loss method is used by some piece."""

    method: LossMethod
    index: int  # the method's index in Plan.methods (ChunkInputs.method holds it)
    columns: tuple[int, ...]
    shared: bool  # some of these columns hold another method in another piece


@dataclasses.dataclass(frozen=True)
class Chunk:
    """Pieces trained by one compiled call, and the static facts of its shape."""

    pieces: tuple[Piece, ...]
    n_max: int  # every piece's row set is padded to this length
    ragged: bool  # the pieces' row sets differ in size
    methods: tuple[MethodColumns, ...] = ()  # loss method of each column
    blocks: tuple[Block, ...] = ()  # feature range each column range may use

    @property
    def n_real(self) -> int:
        return sum(p.n_real for p in self.pieces)

    @property
    def shape(self) -> tuple:
        """Chunks with equal ``shape`` share one compiled trainer."""
        width = self.pieces[0].probes.size
        return (
            len(self.pieces),
            width,
            self.n_max,
            self.ragged,
            self.methods,
            self.blocks,
        )

    def empty(self) -> Chunk:
        """A copy whose pieces are all padding (fills a round of devices)."""
        return dataclasses.replace(
            self, pieces=tuple(dataclasses.replace(p, n_real=0) for p in self.pieces)
        )


@dataclasses.dataclass
class Plan:
    """Checked inputs, grouped into chunks."""

    features: np.ndarray  # (n, d) float16/float32
    targets: np.ndarray  # (P, n) float32
    weights: np.ndarray | None  # (P, n) float32 row weights, None: all 1
    feature_mask: np.ndarray  # (P, d) bool
    lr: np.ndarray  # (P,) float32
    l2: np.ndarray  # (P,) float32
    methods: tuple[LossMethod, ...]  # distinct loss methods
    method_of: np.ndarray  # (P,) int32 index into ``methods``
    params: dict[str, np.ndarray]  # loss parameter -> (P,) float32
    row_sets: list[np.ndarray]  # each: int32 row indices
    mean: list[np.ndarray]  # per row set (d,)
    scale: list[np.ndarray]  # per row set (d,)
    eval_index: np.ndarray  # (m,) int32 rows holding every probe's eval rows
    eval_rows: np.ndarray  # (S, P, m) bool
    eval_labels: np.ndarray  # (S, P, m) bool
    eval_names: list[str]
    has_val: bool
    chunks: list[Chunk]

    @property
    def n_probes(self) -> int:
        return int(self.targets.shape[0])

    @functools.cached_property
    def eval_bits(self) -> np.ndarray:
        """``(P, ceil(m / 8))`` uint8: each probe's evaluation rows in any set,
        packed (a piece's union is then an OR over a few bytes per row, not over
        bools)."""
        return np.packbits(self.eval_rows.any(axis=0), axis=1)

    def piece_eval_rows(self, piece: Piece) -> np.ndarray:
        """Indices (into the ``m`` evaluation rows) that any probe of ``piece``
        evaluates on, in any set."""
        union = np.bitwise_or.reduce(self.eval_bits[piece.probes], axis=0)
        return np.flatnonzero(np.unpackbits(union, count=self.eval_index.size))

    @functools.cached_property
    def eval_width(self) -> int:
        """The most evaluation rows any piece needs (each piece pads to it)."""
        widths = [
            self.piece_eval_rows(piece).size
            for chunk in self.chunks
            for piece in chunk.pieces
        ]
        return max(widths, default=0)

    def chunk_inputs(self, chunk: Chunk) -> ChunkInputs:
        def stack(fn):
            return np.stack([fn(piece) for piece in chunk.pieces])

        def padded_rows(piece: Piece) -> np.ndarray:
            rows = self.row_sets[piece.row_set]
            out = np.zeros(chunk.n_max, np.int32)
            out[: rows.size] = rows
            return out

        def at_rows(array: np.ndarray) -> Any:  # (P, n) -> (n_max, C) per piece
            def cut(piece: Piece) -> np.ndarray:
                rows = self.row_sets[piece.row_set]
                out = np.zeros((chunk.n_max, piece.probes.size), np.float32)
                out[: rows.size] = array[piece.probes][:, rows].T
                return out

            return cut

        evaluation = self._eval_inputs(chunk)
        return ChunkInputs(
            rows=stack(padded_rows),
            n_rows=stack(lambda p: np.int32(self.row_sets[p.row_set].size)),
            mean=stack(lambda p: self.mean[p.row_set].astype(np.float32)),
            scale=stack(lambda p: self.scale[p.row_set].astype(np.float32)),
            targets=stack(at_rows(self.targets)),
            weights=(
                np.ones((len(chunk.pieces), 1, 1), np.float32)
                if self.weights is None
                else stack(at_rows(self.weights))
            ),
            val_weight=evaluation["val_weight"],
            feature_mask=stack(lambda p: self.feature_mask[p.probes]),
            lr=stack(lambda p: self.lr[p.probes]),
            l2=stack(lambda p: self.l2[p.probes]),
            method=stack(lambda p: self.method_of[p.probes]),
            params={
                k: stack(lambda p, v=v: v[p.probes]) for k, v in self.params.items()
            },
            order_key=stack(lambda p: np.uint32(p.order_key)),
            eval_index=evaluation["eval_index"],
            eval_rows=evaluation["eval_rows"],
            eval_labels=evaluation["eval_labels"],
        )

    def _eval_inputs(self, chunk: Chunk) -> dict[str, np.ndarray]:
        """Each piece's evaluation rows, labels, indices and validation weights."""
        # Each piece is evaluated on its own probes' rows only (seeds that resample
        # the split have disjoint validation and test rows), padded to eval_width.
        width = self.eval_width
        used = [self.piece_eval_rows(p) for p in chunk.pieces]

        def padded(array: np.ndarray, piece: Piece, at: np.ndarray) -> np.ndarray:
            out = np.zeros((*array.shape[:-2], width, piece.probes.size), array.dtype)
            out[..., : at.size, :] = np.swapaxes(
                array[..., piece.probes, :][..., at], -1, -2
            )
            return out

        def evals(array: np.ndarray) -> np.ndarray:  # (S, P, m) -> (S, G, w, C)
            return np.stack(
                [
                    padded(array, p, at)
                    for p, at in zip(chunk.pieces, used, strict=True)
                ],
                axis=1,
            )

        def eval_index(at: np.ndarray) -> np.ndarray:
            out = np.zeros(width, np.int32)
            out[: at.size] = self.eval_index[at]
            return out

        rows = evals(self.eval_rows)
        if self.weights is None or not self.has_val:
            val_weight = np.ones((len(chunk.pieces), 1, 1), np.float32)
        else:  # (G, w, C): each validation row's weight, 0 elsewhere
            at_eval = np.take(self.weights, self.eval_index, axis=1)[None]
            stacked = evals(at_eval)[0]
            val_weight = np.where(rows[0], stacked, 0.0).astype(np.float32)
        return {
            "val_weight": val_weight,
            "eval_index": np.stack([eval_index(at) for at in used]),
            "eval_rows": rows,
            "eval_labels": evals(self.eval_labels),
        }

    def assemble(
        self, outputs: list[tuple[Chunk, dict[str, np.ndarray]]], config: TrainConfig
    ) -> Probes:
        """Scatter chunk outputs into probe order, weights back to raw features.

        Each chunk output holds ``w (G, C, d)`` in standardized coordinates, ``b``
        and ``best_epoch (G, C)``, ``eval_acc (E, S, G, C)`` and, when recorded,
        ``train_loss (E, G, C)`` and (Adam) ``failed_epoch (G, C)``.

        A probe whose training was not finite (:func:`failed_epochs`) gets NaN
        weights and bias, and NaN history from its failed epoch on: nothing of it
        can pass for a result.
        """
        n_probes, d = self.n_probes, self.features.shape[1]
        weights = np.zeros((n_probes, d), np.float32)
        bias = np.zeros(n_probes, np.float32)
        best_epoch = np.zeros(n_probes, np.int32)
        failed = np.full(n_probes, -1, np.int32)
        mean = np.zeros((n_probes, d), np.float32)
        scale = np.ones((n_probes, d), np.float32)
        n_records = outputs[0][1]["eval_acc"].shape[0]
        has_loss = "train_loss" in outputs[0][1]
        loss = np.zeros((n_records, n_probes), np.float32)
        accs = np.zeros((n_records, len(self.eval_names), n_probes), np.float32)
        for chunk, out in outputs:
            for g, piece in enumerate(chunk.pieces):
                k = piece.n_real
                if k == 0:
                    continue
                real = piece.probes[:k]
                mu = self.mean[piece.row_set]
                sd = self.scale[piece.row_set]
                w_raw = np.asarray(out["w"][g, :k], np.float64) / sd
                weights[real] = w_raw
                bias[real] = out["b"][g, :k] - w_raw @ mu
                best_epoch[real] = out["best_epoch"][g, :k]
                if "failed_epoch" in out:
                    failed[real] = out["failed_epoch"][g, :k]
                mean[real] = mu
                scale[real] = sd
                if has_loss:
                    loss[:, real] = out["train_loss"][:, g, :k]
                accs[:, :, real] = out["eval_acc"][:, :, g, :k]
        # A feature mask is exact: masked weights are zero, not merely small.
        weights = np.where(self.feature_mask, weights, 0.0).astype(np.float32)
        history = {"train_loss": loss} if has_loss else {}
        for i, name in enumerate(self.eval_names):
            history[name] = accs[:, i]
        failed = failed_epochs(failed, weights, bias, best_epoch)
        weights[failed >= 0] = np.nan
        bias[failed >= 0] = np.nan
        for curve in history.values():
            for p in np.flatnonzero(failed >= 0):
                curve[failed[p] - 1 :, p] = np.nan
        return Probes(
            weights=jax.device_put(weights),
            bias=jax.device_put(bias),
            best_epoch=best_epoch,
            failed_epoch=failed,
            history=history,
            feature_mean=mean,
            feature_scale=scale,
            config=config,
        )


def failed_epochs(
    failed: np.ndarray, weights: np.ndarray, bias: np.ndarray, best_epoch: np.ndarray
) -> np.ndarray:
    """``(P,)`` each probe's first non-finite epoch, -1 if none: the solver's flag,
    and, for a probe it did not flag whose raw weights or bias are not finite
    (L-BFGS, or overflow on the way back to raw features), its last epoch or
    iteration."""
    broken = ~np.isfinite(weights).all(axis=1) | ~np.isfinite(bias)
    return np.where((failed < 0) & broken, np.maximum(best_epoch, 1), failed).astype(
        np.int32
    )


# ------------------------------------------------------------------ input checks


@dataclasses.dataclass(frozen=True)
class Inputs:
    """Every argument of :func:`probe_lab.train_probes`, checked and broadcast."""

    x: np.ndarray  # (n, d) float16/float32
    y: np.ndarray  # (P, n) float32 in [0, 1]
    weights: np.ndarray | None  # (P, n) float32 >= 0, None: all 1
    train: np.ndarray  # (P, n) bool
    feature_mask: np.ndarray  # (P, d) bool
    group: np.ndarray  # (P,) int order groups
    eval_names: list[str]
    eval_index: np.ndarray  # (m,) int32
    eval_rows: np.ndarray  # (S, P, m) bool
    eval_labels: np.ndarray  # (S, P, m) bool
    has_val: bool


def check_features(features: Any) -> np.ndarray:
    """Validate and return ``(n, d)`` features as float16 or float32 numpy."""
    x = np.asarray(features)
    if x.ndim != 2:
        raise ValueError(f"features must be 2-D (n, d), got shape {x.shape}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"features are empty: shape {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        raise TypeError(f"features must be floating point, got dtype {x.dtype}")
    if x.dtype not in (np.float16, np.float32):
        x = x.astype(np.float32)
    finite = np.isfinite(x).all(axis=1)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise ValueError(
            f"features contain NaN or inf in {bad.size} row(s), first rows "
            f"{bad[:5].tolist()}; re-extract them (with float32 if float16 "
            f"overflowed) or drop those rows"
        )
    return x


def check_targets(targets: Any, n: int) -> np.ndarray:
    """``(P, n)`` float32 targets in [0, 1] (``(n,)`` is one probe)."""
    y = np.asarray(targets, dtype=np.float32)
    if y.ndim == 1:
        y = y[None, :]
    if y.ndim != 2 or y.shape[1] != n:
        raise ValueError(
            f"targets must have shape (P, n) with n = {n} rows of features, got "
            f"{np.shape(targets)}"
        )
    if y.shape[0] == 0:
        raise ValueError("targets has 0 rows: there are no probes to train (P = 0)")
    if not np.isfinite(y).all() or y.min() < 0 or y.max() > 1:
        raise ValueError(
            f"targets must lie in [0, 1] (hard or soft labels), got values in "
            f"[{np.nanmin(y):.3g}, {np.nanmax(y):.3g}]"
            + ("" if np.isfinite(y).all() else " with NaN or inf")
        )
    return y


def check_weights(weights: Any, shape: tuple[int, int]) -> np.ndarray | None:
    """``(P, n)`` float32 row weights >= 0 (``(n,)`` broadcasts), or None."""
    if weights is None:
        return None
    w = np.asarray(weights, dtype=np.float32)
    if w.shape == shape[1:]:
        w = w[None, :]
    if w.ndim != 2 or w.shape[1] != shape[1] or w.shape[0] not in (1, shape[0]):
        raise ValueError(
            f"sample_weight has shape {np.shape(weights)}; expected ({shape[1]},) or "
            f"{shape} (one weight per probe and row)"
        )
    if not np.isfinite(w).all() or w.min() < 0:
        raise ValueError("sample_weight must be finite and >= 0 (0 drops a row)")
    return np.ascontiguousarray(np.broadcast_to(w, shape))


def per_probe_mask(
    value: Any, n_probes: int, width: int, name: str, axis: str = "n"
) -> np.ndarray:
    """A bool mask ``(width,)`` or ``(P, width)`` broadcast to ``(P, width)``."""
    mask = np.asarray(value)
    if mask.dtype != bool:
        hint = (
            "; convert row indices with np.isin(np.arange(n), idx)"
            if axis == "n"
            else ""
        )
        raise TypeError(
            f"{name} must be a boolean mask of shape ({axis},) or (P, {axis}), got "
            f"dtype {mask.dtype}{hint}"
        )
    if mask.shape == (width,):
        mask = mask[None, :]
    if mask.ndim != 2 or mask.shape[1] != width or mask.shape[0] not in (1, n_probes):
        raise ValueError(
            f"{name} has shape {mask.shape}; expected ({width},) or "
            f"({n_probes}, {width}) for {n_probes} probes on {width} "
            f"{'rows' if axis == 'n' else 'features'}"
        )
    return np.broadcast_to(mask, (n_probes, width))


def _some_in_each(mask: np.ndarray, message: str) -> None:
    empty = np.flatnonzero(~mask.any(axis=1))
    if empty.size:
        raise ValueError(message.format(probes=empty[:10].tolist()))


def check_groups(groups: Any, n_probes: int) -> np.ndarray:
    """``(P,)`` non-negative integer order groups (default all 0)."""
    if groups is None:
        return np.zeros(n_probes, np.int64)
    group = np.asarray(groups)
    if group.shape != (n_probes,) or not np.issubdtype(group.dtype, np.integer):
        raise ValueError(
            f"groups must be an integer array of shape ({n_probes},), got "
            f"{group.dtype} {group.shape}"
        )
    if group.min() < 0:
        raise ValueError("groups must be non-negative integers")
    return group


def check_eval_sets(
    y: np.ndarray,
    val_rows: Any,
    eval_sets: Mapping[str, tuple[Any, Any]] | None,
) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """Validation (set 0, agreement with the targets) and the named sets.

    Returns:
        ``(names, eval_index (m,), rows (S, P, m), labels (S, P, m))`` on the rows
        ``eval_index``: the union of every set's rows, or all rows where that union
        holds 90% of them.
    """
    n_probes, n = y.shape
    names: list[str] = []
    rows_list: list[np.ndarray] = []
    labels_list: list[np.ndarray] = []
    if val_rows is not None:
        val = per_probe_mask(val_rows, n_probes, n, "val_rows")
        _some_in_each(
            val,
            "val_rows selects no rows for probe(s) {probes}; give each probe "
            "validation rows or pass val_rows=None to train all epochs without "
            "early stopping",
        )
        names.append("val_agreement")
        rows_list.append(val)
        labels_list.append(positive(y))
    for name, pair in (eval_sets or {}).items():
        if not isinstance(pair, tuple | list) or len(pair) != 2:
            raise ValueError(f"eval_sets[{name!r}] must be a (rows, labels) pair")
        ev_rows = per_probe_mask(pair[0], n_probes, n, f"eval_sets[{name!r}] rows")
        ev_labels = np.asarray(pair[1])
        if ev_labels.shape == (n,):
            ev_labels = ev_labels[None, :]
        if ev_labels.ndim != 2 or ev_labels.shape[1] != n:
            raise ValueError(
                f"eval_sets[{name!r}] labels have shape {np.shape(pair[1])}; "
                f"expected ({n},) or ({n_probes}, {n})"
            )
        if not ((ev_labels == 0) | (ev_labels == 1)).all():
            raise ValueError(f"eval_sets[{name!r}] labels must be 0 or 1")
        names.append(f"{name}_acc")
        rows_list.append(ev_rows)
        labels_list.append(ev_labels.astype(bool))  # (1, n) or (P, n)
    if not rows_list:
        empty = np.zeros((0, n_probes, 0), bool)
        return names, np.zeros(0, np.int32), empty, empty
    union = np.logical_or.reduce([r.any(axis=0) for r in rows_list])
    index = np.flatnonzero(union).astype(np.int32)
    # Each set goes straight into its place (np.stack would copy them again). A
    # union of nearly every row (seeds that resample the split) keeps all rows: a
    # plain copy, where the cut costs 10x as much to save a few columns. Rows of no
    # set are False in every set, so no piece evaluates on them either way.
    whole = index.size >= 0.9 * n
    if whole:
        index = np.arange(n, dtype=np.int32)
    shape = (len(rows_list), n_probes, index.size)
    rows, labels = np.empty(shape, bool), np.empty(shape, bool)
    for i, (r, lab) in enumerate(zip(rows_list, labels_list, strict=True)):
        if whole:
            rows[i], labels[i] = r, lab  # labels: one row per set, broadcast to P
            continue
        # np.take keeps (P, m) C-ordered (``r[:, index]`` is laid out (m, P): 4x
        # slower to make, and every later cut of a piece's probes strides through
        # it).
        np.take(r, index, axis=1, out=rows[i])
        labels[i] = np.take(lab, index, axis=1)
    return names, index, rows, labels


def check_inputs(
    features: Any,
    targets: Any,
    *,
    train_rows: Any,
    val_rows: Any,
    feature_mask: Any,
    groups: Any,
    eval_sets: Mapping[str, tuple[Any, Any]] | None,
    sample_weight: Any = None,
) -> Inputs:
    """Check every argument of :func:`probe_lab.train_probes` against the others."""
    x = check_features(features)
    n, d = x.shape
    y = check_targets(targets, n)
    n_probes = y.shape[0]
    weights = check_weights(sample_weight, y.shape)
    if train_rows is None:
        train = np.ones((n_probes, n), bool)
    else:
        train = per_probe_mask(train_rows, n_probes, n, "train_rows")
    _some_in_each(
        train,
        "train_rows selects no rows for probe(s) {probes}: every probe needs at "
        "least one training row",
    )
    if weights is not None:
        _some_in_each(
            train & (weights > 0),
            "sample_weight is 0 on every training row of probe(s) {probes}: keep "
            "at least one row",
        )
    if feature_mask is None:
        fmask = np.ones((n_probes, d), bool)
    else:
        fmask = per_probe_mask(feature_mask, n_probes, d, "feature_mask", axis="d")
        _some_in_each(fmask, "feature_mask selects no features for probe(s) {probes}")
    names, index, rows, labels = check_eval_sets(y, val_rows, eval_sets)
    return Inputs(
        x=x,
        y=y,
        weights=weights,
        train=train,
        feature_mask=np.ascontiguousarray(fmask),
        group=check_groups(groups, n_probes),
        eval_names=names,
        eval_index=index,
        eval_rows=rows,
        eval_labels=labels,
        has_val=val_rows is not None,
    )


# ------------------------------------------------------ settings and standardization


def per_probe(value: Any, n_probes: int, name: str) -> np.ndarray:
    """A scalar or ``(P,)`` setting as ``(P,)`` float32."""
    array = np.asarray(value, dtype=np.float32)
    if array.ndim == 0:
        return np.full(n_probes, array, np.float32)
    if array.shape != (n_probes,):
        raise ValueError(
            f"TrainConfig.{name} has {array.size} values but there are {n_probes} "
            f"probes: give a scalar or exactly one value per probe"
        )
    return array


def loss_methods(
    config: TrainConfig, n_probes: int
) -> tuple[tuple[LossMethod, ...], np.ndarray, dict[str, np.ndarray]]:
    """Each probe's loss method and the ``(P,)`` values of every declared parameter.

    Returns:
        ``(methods, method_of (P,) int32, {parameter: (P,) float32})``; a probe whose
        method does not declare a parameter holds that parameter's first default.
    """
    names = (config.loss,) * n_probes if isinstance(config.loss, str) else config.loss
    if len(names) != n_probes:
        raise ValueError(
            f"TrainConfig.loss has {len(names)} names but there are {n_probes} "
            f"probes: give one name or exactly one per probe"
        )
    distinct = tuple(dict.fromkeys(names))
    methods = tuple(get_loss(name) for name in distinct)
    method_of = np.array([distinct.index(name) for name in names], np.int32)
    params: dict[str, np.ndarray] = {}
    for i, method in enumerate(methods):
        mine = method_of == i
        for name, default in method.params:
            value = config.param_value(name)
            given = per_probe(default if value is None else value, n_probes, name)
            values = params.setdefault(name, np.full(n_probes, default, np.float32))
            values[mine] = given[mine]
    return methods, method_of, params


def standardization(
    x: np.ndarray, row_sets: list[np.ndarray], config: TrainConfig, gain: Any
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per row set: the training rows' feature mean and scale (std + eps) / gain."""
    d = x.shape[1]
    gain = np.ones(d) if gain is None else np.asarray(gain, float)
    if gain.shape != (d,) or not np.all(np.isfinite(gain)) or np.any(gain <= 0):
        raise ValueError(
            f"feature_gain must be ({d},) finite positive factors, got shape "
            f"{gain.shape}"
        )
    mean, scale = [], []
    for rows in row_sets:
        if config.standardize:
            sub = x[rows].astype(np.float64)
            mean.append(sub.mean(axis=0))
            scale.append((sub.std(axis=0) + config.standardize_eps) / gain)
        else:
            mean.append(np.zeros(d))
            scale.append(1.0 / gain)
    return mean, scale


# ------------------------------------------------------------------------ pieces


def _unique_rows(mask: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """Unique rows of a bool matrix: (list of unique rows, index of each row)."""
    seen: dict[bytes, int] = {}
    uniques: list[np.ndarray] = []
    inverse = np.empty(mask.shape[0], np.int64)
    packed = np.packbits(mask, axis=1)
    for i, row in enumerate(packed):
        k = row.tobytes()
        if k not in seen:
            seen[k] = len(uniques)
            uniques.append(mask[i])
        inverse[i] = seen[k]
    return uniques, inverse


def make_pieces(
    inputs: Inputs,
    row_set_of: np.ndarray,
    method_of: np.ndarray,
    *,
    lbfgs: bool,
    probe_chunk: int,
) -> list[Piece]:
    """Group probes into pieces of at most ``probe_chunk``.

    A piece holds probes sharing (order group, row set): they share one minibatch
    order and hence one product per step. L-BFGS has no minibatch order but
    preconditions per feature mask, so its pieces share (row set, feature mask).
    Inside a piece, probes are sorted by how far into the features their mask
    reaches (then by loss method), so the M_k family's columns form blocks that
    skip the zero weights.
    """
    _, mask_of = _unique_rows(inputs.feature_mask)
    columns = [row_set_of, mask_of] if lbfgs else [inputs.group, row_set_of]
    _, key_of = np.unique(np.stack(columns, axis=1), axis=0, return_inverse=True)
    key_of = key_of.reshape(-1)
    d = inputs.feature_mask.shape[1]
    reach = d - inputs.feature_mask[:, ::-1].argmax(axis=1)  # last used feature + 1
    pieces: list[Piece] = []
    for k in range(key_of.max() + 1):
        idx = np.flatnonzero(key_of == k)
        idx = idx[np.lexsort((method_of[idx], reach[idx]))]
        for start in range(0, idx.size, probe_chunk):
            part = idx[start : start + probe_chunk]
            pieces.append(
                Piece(
                    probes=part,
                    n_real=part.size,
                    row_set=int(row_set_of[part[0]]),
                    order_key=int(inputs.group[part[0]]),
                    mask_key=int(mask_of[part[0]]),
                )
            )
    return pieces


def make_plan(
    features: Any,
    targets: Any,
    *,
    train_rows: Any,
    val_rows: Any,
    feature_mask: Any,
    groups: Any,
    eval_sets: Mapping[str, tuple[Any, Any]] | None,
    config: TrainConfig,
    feature_gain: Any = None,
    sample_weight: Any = None,
    n_devices: int = 1,
) -> Plan:
    """Check every input against the others and group probes into chunks."""
    inputs = check_inputs(
        features,
        targets,
        train_rows=train_rows,
        val_rows=val_rows,
        feature_mask=feature_mask,
        groups=groups,
        eval_sets=eval_sets,
        sample_weight=sample_weight,
    )
    n_probes = inputs.y.shape[0]
    methods, method_of, params = loss_methods(config, n_probes)
    row_sets_mask, row_set_of = _unique_rows(inputs.train)
    row_sets = [np.flatnonzero(m).astype(np.int32) for m in row_sets_mask]
    mean, scale = standardization(inputs.x, row_sets, config, feature_gain)
    lbfgs = config.solver == "lbfgs"
    pieces = make_pieces(
        inputs,
        row_set_of,
        method_of,
        lbfgs=lbfgs,
        probe_chunk=int(config.probe_chunk),
    )
    fmask = inputs.feature_mask
    d = fmask.shape[1]
    chunks = _pack(
        pieces,
        np.array([r.size for r in row_sets]),
        int(config.probe_chunk),
        n_devices,
        single=lbfgs,
        span=(fmask.argmax(axis=1), d - fmask[:, ::-1].argmax(axis=1)),
        methods=(methods, method_of),
    )
    return Plan(
        features=inputs.x,
        targets=inputs.y,
        weights=inputs.weights,
        feature_mask=fmask,
        lr=per_probe(config.lr, n_probes, "lr"),
        l2=per_probe(config.l2, n_probes, "l2"),
        methods=methods,
        method_of=method_of,
        params=params,
        row_sets=row_sets,
        mean=mean,
        scale=scale,
        eval_index=inputs.eval_index,
        eval_rows=inputs.eval_rows,
        eval_labels=inputs.eval_labels,
        eval_names=inputs.eval_names,
        has_val=inputs.has_val,
        chunks=chunks,
    )


# ----------------------------------------------------------------------- packing


def _method_columns(
    probes: np.ndarray, methods: tuple[tuple[LossMethod, ...], np.ndarray]
) -> tuple[MethodColumns, ...]:
    """Which loss method each column of a chunk's ``(pieces, width)`` probes uses."""
    table, method_of = methods
    of = method_of[probes]  # (pieces, width)
    out = []
    for i, method in enumerate(table):
        cols = np.flatnonzero((of == i).any(axis=0))
        if cols.size:
            shared = bool((of[:, cols] != i).any())
            out.append(MethodColumns(method, i, tuple(int(c) for c in cols), shared))
    return tuple(out)


MAX_SHAPES = 4
"""Most chunk shapes one call compiles; beyond it, pieces share one padded shape."""


def _width(n: int) -> int:
    """The width class of a piece of ``n`` probes: 1, 2, 4, then multiples of 8
    (pieces of one class share a chunk shape, padded to the class's widest)."""
    return 1 << (n - 1).bit_length() if n < 8 else -(-n // 8) * 8


def _pack(
    pieces: list[Piece],
    sizes: np.ndarray,
    probe_chunk: int,
    n_devices: int,
    *,
    single: bool,
    span: tuple[np.ndarray, np.ndarray],
    methods: tuple[tuple[LossMethod, ...], np.ndarray],
) -> list[Chunk]:
    """Stack pieces into chunks of about ``probe_chunk`` probes.

    Pieces of one width and row-set size form a class with its own chunk shape
    (e.g. a study's eight-probe ceiling pieces and its one-probe weak pieces), so
    none pads to another's width or steps through another's longer epoch. With more
    than :data:`MAX_SHAPES` classes, every piece pads to one shape and row sets of
    different sizes train "ragged". Each class is cut into a multiple of
    ``n_devices`` chunks (while pieces last), so every device gets the same share;
    the last chunk of a class is padded with empty copies of a piece. ``single``
    keeps one piece per chunk and one shape (L-BFGS preconditions each piece
    separately).
    """
    classes: dict[tuple[int, int], list[Piece]] = {}
    for p in pieces:
        classes.setdefault((_width(p.n_real), int(sizes[p.row_set])), []).append(p)
    if single or len(classes) > MAX_SHAPES:
        width = max(w for w, _ in classes)
        classes = {(width, int(sizes.max())): pieces}
    chunks = []
    for (_, n_max), members in classes.items():
        # The class pads to its widest piece, not to the rounded width: a padding
        # column repeats the piece's widest-reaching probe, so in a piece of ten
        # M_k probes six padding columns would run over every feature.
        width = max(p.n_real for p in members)
        members = [
            dataclasses.replace(
                p, probes=np.pad(p.probes, (0, width - p.n_real), mode="edge")
            )
            for p in members
        ]
        ragged = len({int(sizes[p.row_set]) for p in members}) > 1
        if single:
            groups = [[p] for p in members]
        else:
            n_chunks = max(1, round(len(members) * width / probe_chunk))
            n_chunks = min(len(members), -(-n_chunks // n_devices) * n_devices)
            per_chunk = -(-len(members) // n_chunks)
            groups = [
                members[i : i + per_chunk] for i in range(0, len(members), per_chunk)
            ]
            filler = dataclasses.replace(groups[-1][0], n_real=0)
            groups[-1] += [filler] * (per_chunk - len(groups[-1]))
        probes = np.stack([p.probes for g in groups for p in g])  # (pieces, width)
        columns = _method_columns(probes, methods)
        blocks = _blocks(span[0][probes].min(0), span[1][probes].max(0), len(groups[0]))
        for group in groups:
            chunks.append(Chunk(tuple(group), n_max, ragged, columns, blocks))
    return chunks


BLOCK_PRICE = 4700.0
"""The fixed price of one more feature block, in column-features of work (see
:func:`_blocks`); tests set it to 0 to cut blocks at small sizes."""


def _blocks(lo: np.ndarray, hi: np.ndarray, n_pieces: int) -> tuple[Block, ...]:
    """Cut columns into runs that share a feature range ``[lo, hi)``.

    Column ``c`` only needs features ``lo[c]:hi[c]`` (its probes' masks are zero
    elsewhere). A run costs its columns times its widest range in products, plus a
    fixed price per run (two more small products per step); dynamic programming
    over cut points picks the cheapest cut. Measured on a 2-core CPU, a run costs
    about as much as 4,700 column-features of work divided by the pieces it
    batches.
    """
    n = lo.size
    price = BLOCK_PRICE / max(n_pieces, 1)
    best = np.zeros(n + 1)
    cut = np.zeros(n + 1, np.int64)
    for j in range(1, n + 1):  # the last run is [i, j); best over i
        low = np.minimum.accumulate(lo[:j][::-1])[::-1]
        high = np.maximum.accumulate(hi[:j][::-1])[::-1]
        cost = best[:j] + (j - np.arange(j)) * (high - low) + price
        cut[j] = int(np.argmin(cost))
        best[j] = cost[cut[j]]
    runs = []
    j = n
    while j > 0:
        i = cut[j]
        runs.append((int(i), int(j), int(lo[i:j].min()), int(hi[i:j].max())))
        j = i
    return tuple(reversed(runs))
