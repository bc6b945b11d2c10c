"""Label methods: filters and relabellers run once per stage, before students train.

A **label method** is a name, declared parameters with defaults, and one function,
batched over the probes of a stage:

    relabel(features, weak, rows, key, params) -> (targets, weights)

* ``features``: ``(n, d)`` float32 the strong model's features (the study's
  student features, in its basis);
* ``weak``: ``(P, n)`` each probe's weak labels or probabilities in [0, 1];
* ``rows``: ``(P, n)`` bool, the labelled rows each probe may train and validate on;
* ``key``: a JAX PRNG key;
* ``params``: ``{name: (P,) array}`` one value per probe of each declared parameter.

It returns new targets ``(P, n)`` in [0, 1] and row weights ``(P, n)`` >= 0; weight 0
drops a row from the probe's loss and its early-stopping agreement
(:func:`probe_lab.train_probes` ``sample_weight``). Only ``rows`` matter in the
outputs. It runs once per stage on the host, so NumPy and JAX are both fine.
Registered in :data:`LABEL_METHODS`; a study names them in ``methods`` like loss
methods (students then train with ``xent``, or the entry's ``loss``).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from probe_lab.registry import METHOD_NAMES, Plugin, Registry, RegistryError

__all__ = [
    "LABEL_METHODS",
    "LabelMethod",
    "LabelMethodError",
    "get_label_method",
    "knn_disagreement",
    "register_label_method",
]


MIN_KEPT = 2
"""Fewest labelled rows a label method may keep (weight > 0) for a probe: one to
train a student on and one to validate it on."""


class LabelMethodError(ValueError):
    """A label method that cannot apply, or broke its contract; names the method."""


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False)
class LabelMethod(Plugin):
    """A filter or relabeller: a name, declared parameters and one function
    (``params`` and ``ranges`` as for every :class:`~probe_lab.registry.Plugin`)."""

    what: ClassVar[str] = "label method"

    fn: Callable[..., tuple[Any, Any]]
    """``relabel(features, weak, rows, key, params) -> (targets, weights)``."""

    def __post_init__(self) -> None:
        if not callable(self.fn):
            raise RegistryError(f"label method {self.name!r}: fn is not callable")
        super().__post_init__()

    def __call__(
        self,
        features: Any,
        weak: np.ndarray,
        rows: np.ndarray,
        key: jax.Array,
        params: Mapping[str, np.ndarray],
    ) -> tuple[np.ndarray, np.ndarray]:
        """Run the method and check what it returns (shapes, ranges, finiteness)."""
        try:
            targets, weights = self.fn(features, weak, rows, key, dict(params))
        except LabelMethodError:
            raise
        except Exception as err:
            raise LabelMethodError(
                f"label method {self.name!r} failed: {type(err).__name__}: {err}"
            ) from err
        targets = np.asarray(targets, np.float32)
        weights = np.asarray(weights, np.float32)
        for what, array in (("targets", targets), ("weights", weights)):
            if array.shape != weak.shape:
                raise LabelMethodError(
                    f"label method {self.name!r} returned {what} of shape "
                    f"{array.shape}; expected {weak.shape} (probes, rows)"
                )
            if not np.isfinite(array[rows]).all():
                raise LabelMethodError(
                    f"label method {self.name!r} returned NaN or inf {what}"
                )
        if targets[rows].min() < 0 or targets[rows].max() > 1:
            raise LabelMethodError(
                f"label method {self.name!r} returned targets outside [0, 1]"
            )
        if weights[rows].min() < 0:
            raise LabelMethodError(
                f"label method {self.name!r} returned negative weights"
            )
        kept = ((weights > 0) & rows).sum(axis=1)
        starved = np.flatnonzero(kept < MIN_KEPT)
        if starved.size:
            raise LabelMethodError(
                f"label method {self.name!r} kept {int(kept[starved[0]])} of "
                f"{int(rows[starved[0]].sum())} labelled rows (weight > 0) for "
                f"{starved.size} of {len(kept)} probes; a student needs at least "
                f"{MIN_KEPT} (rows to train on and rows to validate on): keep more "
                f"rows (e.g. drop a smaller share)"
            )
        return targets, weights


def _as_method(item: Any, name: str) -> LabelMethod:
    if isinstance(item, LabelMethod):
        return item
    if callable(item):
        return LabelMethod(name=name, fn=item, params=getattr(item, "params", {}))
    raise RegistryError(
        f"label method {name!r} is a {type(item).__name__}, not a function or a "
        f"LabelMethod"
    )


LABEL_METHODS: Registry[LabelMethod] = Registry(
    "label method", _as_method, namespace=METHOD_NAMES
)
"""Every label method by name; :func:`get_label_method` also loads import paths."""


def register_label_method(
    name: str,
    *,
    params: Mapping[str, float] | None = None,
    ranges: Mapping[str, tuple[float, float]] | None = None,
    overwrite: bool = False,
) -> Callable[[Callable[..., Any]], LabelMethod]:
    """Decorator: register ``relabel`` as the label method ``name``."""

    def wrap(fn: Callable[..., Any]) -> LabelMethod:
        method = LabelMethod(
            name=name,
            fn=fn,
            params=params or {},
            ranges=ranges or {},
        )
        return LABEL_METHODS.register(name, method, overwrite=overwrite)

    return wrap


def get_label_method(name: str | LabelMethod) -> LabelMethod:
    """A registered label method by name or import path."""
    if isinstance(name, LabelMethod):
        return name
    return LABEL_METHODS.get(name)


def _drop_top(score: np.ndarray, rows: np.ndarray, share: np.ndarray) -> np.ndarray:
    """Weights 1 on ``rows`` except the ``round(share * m)`` highest scores (0).

    Ties are broken by row order, so the result is deterministic.
    """
    weights = np.zeros(score.shape, np.float32)
    for p in range(score.shape[0]):
        idx = np.flatnonzero(rows[p])
        n_drop = int(round(float(share[p]) * idx.size))
        order = idx[np.argsort(-score[p, idx], kind="stable")]
        weights[p, order[n_drop:]] = 1.0
    return weights


@register_label_method("confident_only", params={"q": 0.5}, ranges={"q": (0.0, 1.0)})
def confident_only(features, weak, rows, key, params):
    """Train only on the share ``q`` of labelled rows whose weak probability is
    furthest from 0.5 (the supervisor's most confident labels); the rest get weight
    0. Needs soft weak labels: with hard labels every row is equally confident and
    the method cannot choose, so it refuses."""
    del features, key
    weak = np.asarray(weak, np.float64)
    soft = (weak[rows] > 0) & (weak[rows] < 1)
    if not soft.any():
        raise LabelMethodError(
            "label method 'confident_only' needs soft weak labels (probabilities): "
            "these are hard 0/1 labels, so every row is equally confident. Use a "
            "probe supervisor with soft = true, or another method"
        )
    confidence = np.abs(weak - 0.5)
    return weak, _drop_top(-confidence, rows, 1.0 - np.asarray(params["q"]))


@functools.partial(jax.jit, static_argnames=("k", "block"))
def _neighbour_means(z: jax.Array, labels: jax.Array, *, k: int, block: int):
    """For every row of ``z (m, d)``: the mean of ``labels (P, m)`` over its ``k``
    nearest other rows (Euclidean), computed ``block`` rows at a time so an ``(m,
    m)`` distance matrix never exists. Returns ``(P, m)``."""
    m = z.shape[0]
    sq = (z * z).sum(axis=1)
    n_blocks = -(-m // block)
    padded = jnp.pad(z, ((0, n_blocks * block - m), (0, 0)))

    def one(i):
        zb = jax.lax.dynamic_slice_in_dim(padded, i * block, block)
        dist = (zb * zb).sum(1)[:, None] + sq[None, :] - 2.0 * zb @ z.T
        own = i * block + jnp.arange(block)
        dist = jnp.where(own[:, None] == jnp.arange(m)[None, :], jnp.inf, dist)
        _, idx = jax.lax.top_k(-dist, k)  # (block, k)
        return labels[:, idx].mean(axis=-1)  # (P, block)

    means = jax.lax.map(one, jnp.arange(n_blocks))  # (blocks, P, block)
    return means.transpose(1, 0, 2).reshape(labels.shape[0], -1)[:, :m]


def knn_disagreement(
    features: Any, weak: np.ndarray, rows: np.ndarray, k: int, block: int = 1024
) -> np.ndarray:
    """``|weak - mean weak label of the k nearest labelled rows|`` per probe and row.

    Neighbours are found among each probe's own ``rows`` in the standardized
    feature space (z-scored on those rows); probes that share a row set share one
    neighbour search.

    Returns:
        ``(P, n)`` disagreement in [0, 1] (0 off ``rows``).
    """
    x = np.asarray(features, np.float32)
    out = np.zeros(weak.shape, np.float32)
    sets: dict[bytes, list[int]] = {}
    for p in range(rows.shape[0]):
        sets.setdefault(np.packbits(rows[p]).tobytes(), []).append(p)
    for members in sets.values():
        idx = np.flatnonzero(rows[members[0]])
        if idx.size <= k:
            raise LabelMethodError(
                f"label method 'knn_clean' needs more than k = {k} labelled rows, "
                f"got {idx.size}"
            )
        sub = x[idx]
        z = (sub - sub.mean(0)) / (sub.std(0) + 1e-6)
        labels = jnp.asarray(weak[members][:, idx], jnp.float32)
        means = _neighbour_means(
            jnp.asarray(z), labels, k=k, block=min(block, idx.size)
        )
        out[np.ix_(members, idx)] = np.abs(np.asarray(means) - weak[members][:, idx])
    return out


@register_label_method(
    "knn_clean",
    params={"q": 0.1, "k": 10},
    ranges={"q": (0.0, 1.0), "k": (1, 10_000)},
)
def knn_clean(features, weak, rows, key, params):
    """Drop the share ``q`` of labelled rows whose weak label disagrees most with the
    mean weak label of their ``k`` nearest neighbours in the strong model's
    standardized features (after the kNN label filter of EleutherAI's w2s);
    the rest keep weight 1 and their labels.
    ``k`` must be one value for all probes of a call."""
    del key
    ks = np.unique(np.asarray(params["k"]).astype(int))
    if ks.size != 1:
        raise LabelMethodError(
            "label method 'knn_clean' takes one k per study method (split a grid "
            "over k into separate methods)"
        )
    score = knn_disagreement(features, np.asarray(weak, np.float32), rows, int(ks[0]))
    return weak, _drop_top(score, rows, np.asarray(params["q"]))
