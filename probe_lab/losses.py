"""Student losses: the per-minibatch seam of the Adam trainer, and the built-ins.

A **loss method** is a name, declared parameters with defaults, and one pure JAX
function on one minibatch of a chunk of probes, probe axis LAST:

    fn(logits, targets, mask, progress, params) -> (B, P)

* ``logits``: ``(B, P)`` the students' logits on the minibatch;
* ``targets``: ``(B, P)`` their (weak) targets in [0, 1];
* ``mask``: ``(B, P)`` bool, the rows that count (padding rows are False);
* ``progress``: scalar in [0, 1], the share of this probe's training steps done;
* ``params``: ``{name: (P,) array}``, one value per probe of each declared parameter,
  so a grid over a parameter trains in one compiled call.

The function returns either a per-example loss (``kind="loss"``; the trainer takes
its gradient with ``jax.vjp`` and averages it over the unmasked rows) or, for the
many methods that are a cross-entropy against modified targets, the targets
themselves (``kind="targets"``; the trainer then uses the closed-form gradient
``sigmoid(logits) - targets`` and no gradient flows through the targets). Every
built-in is written only through this API and registered in :data:`LOSSES`.

The confidence loss is the auxiliary loss of Burns et al. (2023), Section 4.3:

    L_conf(f) = (1 - a) * CE(f(x), f_w(x)) + a * CE(f(x), hard_t(f(x)))

where ``hard_t`` hardens the student's own predictions at a threshold ``t`` chosen in
each minibatch so that the share of hardened positives equals the share of positive
weak labels in that minibatch. Because cross-entropy is linear in its target, this is
a single cross-entropy against the mixed target ``(1 - a) * f_w + a * hard_t(f)``; the
hardened labels are treated as constants (no gradient flows through the threshold).
``a`` rises linearly from 0 to ``alpha_max`` over the first ``warmup_frac`` of
training.
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
    "LOSSES",
    "LossMethod",
    "LossMethodError",
    "binary_xent",
    "check_method",
    "confidence_alpha",
    "confidence_targets",
    "get_loss",
    "harden_to_balance",
    "register_loss",
]

KINDS = ("loss", "targets")


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False)
class LossMethod(Plugin):
    """A student loss: a name, declared parameters and one pure function.

    Instances hash by identity, so the compiled trainer specializes on the method
    object itself (re-registering a name with a new function compiles anew).
    ``params`` are ``(name, default)`` pairs and ``ranges`` ``(name, low, high)``
    triples (:class:`~probe_lab.registry.Plugin`); each value a config names is
    checked against its range.
    """

    what: ClassVar[str] = "loss method"

    fn: Callable[..., jax.Array]
    """``fn(logits, targets, mask, progress, params) -> (B, P)`` (module doc)."""

    kind: str = "loss"
    """``"loss"``: ``fn`` returns the per-example loss. ``"targets"``: ``fn``
    returns targets in [0, 1] and the loss is the cross-entropy against them."""

    def __post_init__(self) -> None:
        if self.kind == "label":
            raise RegistryError(
                f"loss method {self.name!r} has kind = 'label': it is a label "
                f"method; name it in a study's methods, not as a loss"
            )
        if self.kind not in KINDS:
            raise RegistryError(
                f"loss method {self.name!r}: kind must be one of {KINDS}, got "
                f"{self.kind!r}"
            )
        if not callable(self.fn):
            raise RegistryError(f"loss method {self.name!r}: fn is not callable")
        super().__post_init__()

    def __call__(self, logits, targets, mask, progress, params) -> jax.Array:
        return self.fn(logits, targets, mask, progress, params)


def _as_method(item: Any, name: str) -> LossMethod:
    if isinstance(item, LossMethod):
        return item
    if callable(item):  # a bare function from an import path: a per-example loss
        declared = getattr(item, "params", {})
        kind = getattr(item, "kind", "loss")
        return LossMethod(name=name, fn=item, kind=kind, params=declared)
    raise RegistryError(
        f"loss method {name!r} is a {type(item).__name__}, not a function or a "
        f"LossMethod"
    )


LOSSES: Registry[LossMethod] = Registry(
    "loss method", _as_method, namespace=METHOD_NAMES
)
"""Every loss method by name; :func:`get_loss` also loads ``"module:function"``."""


def register_loss(
    name: str,
    *,
    params: Mapping[str, float] | None = None,
    kind: str = "loss",
    ranges: Mapping[str, tuple[float, float]] | None = None,
    overwrite: bool = False,
) -> Callable[[Callable[..., jax.Array]], LossMethod]:
    """Decorator: register ``fn`` as the loss method ``name``.

    Args:
        name: the method's name (the ``loss`` column of results).
        params: declared parameters and their defaults; each arrives in ``fn`` as
            a ``(P,)`` array, one value per probe.
        kind: ``"loss"`` (``fn`` returns per-example losses) or ``"targets"``
            (``fn`` returns cross-entropy targets).
        ranges: ``{parameter: (low, high)}`` closed intervals values must lie in.
        overwrite: replace an existing method of that name.

    Returns:
        A decorator returning the registered :class:`LossMethod`.
    """

    def wrap(fn: Callable[..., jax.Array]) -> LossMethod:
        method = LossMethod(
            name=name,
            fn=fn,
            kind=kind,
            params=params or {},
            ranges=ranges or {},
        )
        return LOSSES.register(name, method, overwrite=overwrite)

    return wrap


def get_loss(name: str | LossMethod) -> LossMethod:
    """A registered loss method by name or import path (a method passes through)."""
    if isinstance(name, LossMethod):
        return name
    return LOSSES.get(name)


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


def confidence_alpha(
    progress: jax.Array, alpha_max: jax.Array, warmup_frac: jax.Array
) -> jax.Array:
    """The confidence loss's weight: ``alpha_max * min(1, progress / warmup_frac)``."""
    return alpha_max * jnp.minimum(1.0, progress / warmup_frac)


@register_loss("xent", kind="targets")
def _xent(logits, targets, mask, progress, params):
    """Cross-entropy against the weak labels (hard or soft): the paper's baseline."""
    del logits, mask, progress, params
    return targets


@register_loss(
    "confidence",
    kind="targets",
    params={"alpha_max": 0.75, "warmup_frac": 0.2},
    ranges={"alpha_max": (0, 1), "warmup_frac": (1e-9, 1)},
)
def _confidence(logits, targets, mask, progress, params):
    """Burns et al. (2023), Sec. 4.3: ``(1 - a) CE(f, f_w) + a CE(f, hard_t(f))``."""
    alpha = confidence_alpha(progress, params["alpha_max"], params["warmup_frac"])
    return confidence_targets(logits, targets, mask, alpha)


@register_loss(
    "bootstrap_soft", kind="targets", params={"beta": 0.95}, ranges={"beta": (0, 1)}
)
def _bootstrap_soft(logits, targets, mask, progress, params):
    """Soft bootstrapping (Reed et al. 2015, "Training deep neural networks on noisy
    labels with bootstrapping"): cross-entropy against ``beta * weak + (1 - beta) *
    p``, the student's own probability ``p`` (no gradient through it). Reed et al.
    use ``beta = 0.95``."""
    del mask, progress
    beta = params["beta"]
    return beta * targets + (1.0 - beta) * jax.nn.sigmoid(logits)


@register_loss(
    "bootstrap_hard", kind="targets", params={"beta": 0.8}, ranges={"beta": (0, 1)}
)
def _bootstrap_hard(logits, targets, mask, progress, params):
    """Hard bootstrapping (Reed et al. 2015): cross-entropy against ``beta * weak +
    (1 - beta) * 1[logit >= 0]``, the student's own hard prediction. Reed et al. use
    ``beta = 0.8``."""
    del mask, progress
    beta = params["beta"]
    return beta * targets + (1.0 - beta) * (logits >= 0).astype(logits.dtype)


@register_loss("gce", params={"q": 0.7}, ranges={"q": (1e-6, 1.0)})
def _gce(logits, targets, mask, progress, params):
    """Generalized cross-entropy (Zhang and Sabuncu 2018, "Generalized cross
    entropy loss for training deep neural networks with noisy labels"):
    ``L_q = (1 - p_y^q) / q`` with ``q`` in (0, 1]; for a soft target ``t``,
    ``t (1 - p^q) / q + (1 - t) (1 - (1 - p)^q) / q``. ``q -> 0`` is cross-entropy,
    ``q = 1`` the mean absolute error; the paper's default is ``q = 0.7``."""
    del mask, progress
    q = params["q"]
    # p^q = exp(q log p) with log p = -softplus(-z): stable for large |z|.
    pos = jnp.exp(-q * jax.nn.softplus(-logits))
    neg = jnp.exp(-q * jax.nn.softplus(logits))
    return (targets * (1.0 - pos) + (1.0 - targets) * (1.0 - neg)) / q


# --------------------------------------------------------- checking a method


class LossMethodError(ValueError):
    """A loss method that does not honour the API; the message names it."""


def _call_on(method: LossMethod, logits, targets, mask, progress, params):
    return method.fn(logits, targets, mask, progress, params)


@functools.lru_cache(maxsize=256)
def _value_and_grad(method: LossMethod) -> Callable[..., Any]:
    def run(logits, targets, mask, progress, params):
        def total(z):
            out = _call_on(method, z, targets, mask, progress, params)
            return jnp.where(mask, out, 0.0).sum(), out

        (_, out), grad = jax.value_and_grad(total, has_aux=True)(logits)
        return out, grad

    return jax.jit(run)


def check_method(
    method: LossMethod, targets: np.ndarray, params: Mapping[str, np.ndarray]
) -> None:
    """Run a loss method once, as its first training step would, and refuse it
    clearly if it breaks the API.

    Checks that it traces under JAX (no Python side effect that needs concrete
    values, no NumPy conversion of its inputs), returns a floating ``(B, P)`` array,
    and gives finite values (targets in [0, 1] for ``kind="targets"``) and finite
    gradients at the first step's logits (all 0, since probes start at 0).

    Args:
        method: the loss method.
        targets: ``(B, P)`` float32 targets of a first minibatch.
        params: ``{name: (P,)}`` the probes' parameter values.

    Raises:
        LossMethodError: naming the method and what is wrong.
    """
    # NumPy inputs: the check compiles one program (``_value_and_grad``), not a
    # program per eager array creation.
    logits = np.zeros(targets.shape, np.float32)
    mask = np.ones(targets.shape, bool)
    args = (logits, np.asarray(targets, np.float32), mask, np.float32(0.0))
    values = {k: np.asarray(v, np.float32) for k, v in params.items()}
    where = f"loss method {method.name!r}"
    try:
        shape = jax.eval_shape(functools.partial(_call_on, method), *args, values)
    except (jax.errors.JAXTypeError, TypeError) as err:
        raise LossMethodError(
            f"{where} cannot be traced by JAX ({type(err).__name__}: "
            f"{str(err).splitlines()[0]}): it must be a pure jax.numpy function of "
            f"its arrays, with no Python branching on, or NumPy conversion of, "
            f"their values"
        ) from None
    except Exception as err:
        raise LossMethodError(
            f"{where} failed on a (B, P) = {targets.shape} minibatch: "
            f"{type(err).__name__}: {err}"
        ) from err
    if isinstance(shape, tuple):
        raise LossMethodError(
            f"{where} returned a tuple, not one (B, P) array; if it is a label "
            f'method (returning targets and weights), set `fn.kind = "label"`'
        )
    if getattr(shape, "shape", None) != targets.shape:
        raise LossMethodError(
            f"{where} must return one value per example and probe, shape "
            f"{targets.shape}, got {getattr(shape, 'shape', type(shape).__name__)}"
        )
    if not jnp.issubdtype(shape.dtype, jnp.floating):
        raise LossMethodError(
            f"{where} must return floating point values, got dtype {shape.dtype}"
        )
    out, grad = _value_and_grad(method)(*args, values)
    out, grad = np.asarray(out), np.asarray(grad)
    if not np.isfinite(out).all():
        raise LossMethodError(
            f"{where} returned NaN or inf on the first training step (logits 0, "
            f"progress 0) for {int((~np.isfinite(out)).sum())} of {out.size} values"
        )
    if method.kind == "targets" and (out.min() < 0 or out.max() > 1):
        raise LossMethodError(
            f"{where} (kind='targets') must return targets in [0, 1], got values "
            f"in [{out.min():.3g}, {out.max():.3g}]"
        )
    if method.kind == "loss" and not np.isfinite(grad).all():
        raise LossMethodError(
            f"{where} has a NaN or inf gradient on the first training step "
            f"(logits 0, progress 0)"
        )
