"""Adam's update as ONE loop on XLA's CPU backend: faster alone, not in a step.

Run from the repository root (about a minute on 2 cores):

    .venv/bin/python benchmarks/adam_one_loop.py            # C = 512 probes, d = 768
    .venv/bin/python benchmarks/adam_one_loop.py --d 384 --reps 15

XLA's CPU backend fuses no multi-output loops, so the trainer's Adam update of a
chunk's weights ``(C, d)`` runs as three loops (first moment; second moment; the
weights, reading both new moments again): 40 bytes of memory traffic per weight
where one loop needs 28. A variadic reduction IS one loop with several outputs:
give each result an axis of two, ``[value, 0]`` (``lax.pad``: an axis of one is
simplified away), and sum over it (``x + 0 == x``). Its LLVM IR has the ideal inner
loop (four vector loads, one sqrt, one divide, three stores per 8 weights). But its
outputs cannot overwrite its inputs, so a step loop that carries them copies the
state back every step (24 more bytes per weight), unless the loop is unrolled
twice (the second step writes where the first one read).

Two tables, each variant a jitted loop over ``--steps`` steps, interleaved
``--reps`` times after a first call, best kept, wall clock and CPU time of this
process (all threads; on a shared machine read the CPU column):

1. The update alone on a fresh gradient per step: three loops, one loop (copies
   back), one loop in a loop unrolled twice (no copies), three loops unrolled twice.
2. A step like the trainer's (a 128-row minibatch, ``x @ W.T``, sigmoid residuals,
   ``resid.T @ x``, the update): the same four variants, with the plain product
   ``(x @ W.T, x.T @ G)`` of the same rows for scale.

Measured on a 2-core AMD EPYC (AVX2) shared with other jobs (load average 15-17,
no quiet time), C = 512, d = 768, CPU time per step: table 1, three loops 0.295 ms,
one loop with its copies 0.435 ms, one loop unrolled twice 0.225 ms (24% less),
three loops unrolled twice 0.332 ms; table 2, 3.37 / 3.83 / 3.25 / 3.25 ms against
2.79 ms for the plain product. In the trainer itself (``train_chunk`` on one
512-probe chunk, step_breakdown's d = 768 case, 25 and 20 interleaved repetitions
at load 15-17) the best CPU time per step was 3.71 / 4.16 ms with three loops,
4.24 / 4.43 ms with one loop unrolled twice and 4.01 / 4.31 ms with three loops
unrolled twice: unrolling the real step costs more than the one loop saves (the
update is about 0.3 ms of a 3.7 ms step), so the trainer keeps three loops. Table
2 shows whether that holds on another machine.
"""

from __future__ import annotations

import argparse
import math
import os
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax import lax

B1, B2, EPS, LR, BATCH = 0.9, 0.999, 1e-8, 1e-3, 128


def one_loop(*arrays: jax.Array) -> tuple[jax.Array, ...]:
    """The same arrays, computed in one loop: a variadic sum over ``[value, 0]``."""
    zero = jnp.zeros((), arrays[0].dtype)
    config = ((0, 1, 0),) + ((0, 0, 0),) * arrays[0].ndim
    padded = tuple(lax.pad(a[None], zero, config) for a in arrays)

    def add(a, b):
        return tuple(x + y for x, y in zip(a, b, strict=True))

    return tuple(lax.reduce(padded, (zero,) * len(arrays), add, (0,)))


def adam(w, m, v, g, t, fused: bool):
    """One Adam step (bias corrections folded into two scalars, as the trainer)."""
    m = B1 * m + (1 - B1) * g
    v = B2 * v + (1 - B2) * g * g
    step = jnp.sqrt(1 - B2**t) / (1 - B1**t)
    eps_hat = EPS * jnp.sqrt(1 - B2**t)
    w = w - LR * (step * m / (jnp.sqrt(v) + eps_hat))
    return one_loop(w, m, v) if fused else (w, m, v)


def update_only(steps: int, fused: bool, unroll: int) -> Callable:
    def body(carry, i):
        w, m, v, g = carry
        t = i.astype(jnp.float32) + 1
        return (*adam(w, m, v, g * (1 + 1e-3 * t), t, fused), g), None

    def run(w, m, v, g):
        return lax.scan(body, (w, m, v, g), jnp.arange(steps), unroll=unroll)[0]

    return jax.jit(run)


def trainer_step(steps: int, fused: bool, unroll: int) -> Callable:
    def body(carry, xb):
        w, m, v, t = carry
        t = t + 1
        resid = (jax.nn.sigmoid(xb @ w.T) - 0.5) / BATCH  # (B, C)
        return (*adam(w, m, v, resid.T @ xb, t, fused), t), None

    def run(w, m, v, xbs):
        return lax.scan(body, (w, m, v, 0.0), xbs, unroll=unroll)[0]

    return jax.jit(run)


VARIANTS = {  # name: (one loop, unroll)
    "three loops": (False, 1),
    "one loop (copies back)": (True, 1),
    "one loop, unrolled twice": (True, 2),
    "three loops, unrolled twice": (False, 2),
}


def measure(calls: dict[str, Callable[[], object]], reps: int) -> dict:
    for fn in calls.values():
        fn()
    best = {name: [math.inf, math.inf] for name in calls}
    for _ in range(reps):
        for name, fn in calls.items():
            wall, cpu = time.perf_counter(), time.process_time()
            fn()
            best[name][0] = min(best[name][0], time.perf_counter() - wall)
            best[name][1] = min(best[name][1], time.process_time() - cpu)
    return best


def report(title: str, best: dict, steps: int) -> None:
    print(f"\n{title}\n  {'variant':30s} {'wall ms/step':>12s} {'CPU ms/step':>12s}")
    for name, (wall, cpu) in best.items():
        print(f"  {name:30s} {1e3 * wall / steps:12.3f} {1e3 * cpu / steps:12.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--probes", type=int, default=512, help="C, a chunk")
    parser.add_argument("--d", type=int, default=768)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--reps", type=int, default=9)
    args = parser.parse_args()
    c, d, steps = args.probes, args.d, args.steps
    print(f"C={c} d={d}, {steps} steps per call, best of {args.reps}")
    print(f"load average at start: {os.getloadavg()}")
    kx, kg = jax.random.split(jax.random.key(0))
    zeros = jnp.zeros((c, d), jnp.float32)
    g = 1e-2 * jax.random.normal(kg, (c, d), jnp.float32)

    def call(fn, *a):
        return lambda: jax.block_until_ready(fn(*a))

    alone = {
        name: call(update_only(steps, fused, unroll), zeros, zeros, zeros, g)
        for name, (fused, unroll) in VARIANTS.items()
    }
    report("1. Adam's update alone", measure(alone, args.reps), steps)
    xbs = jax.random.normal(kx, (steps, BATCH, d), jnp.float32)
    step = {
        name: call(trainer_step(steps, fused, unroll), zeros, zeros, zeros, xbs)
        for name, (fused, unroll) in VARIANTS.items()
    }
    xr, gr = xbs.reshape(-1, d), jnp.ones((steps * BATCH, c), jnp.float32)
    product = jax.jit(lambda x, w, g: (x @ w.T, x.T @ g))
    step["plain product (x @ W.T, x.T @ G)"] = call(product, xr, zeros, gr)
    title = "2. A trainer-like step (products + update)"
    report(title, measure(step, args.reps), steps)
    print(f"\nload average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
