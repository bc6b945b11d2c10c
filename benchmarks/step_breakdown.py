"""Where one Adam step of the trainer spends its time: a per-step breakdown.

Used by ``bench_train.py`` (CPU) and ``gpu_check.py`` (its ``breakdown`` step); run
alone for a quick look:

    .venv/bin/python benchmarks/step_breakdown.py              # d = 384/768/4,096
    .venv/bin/python benchmarks/step_breakdown.py --quick      # tiny, seconds

One chunk of the plan that ``train_probes`` makes (``probe_chunk`` probes, the
paper's 128-row minibatch, validation rows for early stopping) is trained by
cumulative variants of the real step (:mod:`probe_lab._adam`), each a jitted
``lax.scan`` over one epoch's minibatches carrying the real training state:

- ``products``: the forward and backward products on minibatches gathered
  beforehand, weights moved by ``w -= 1e-9 * grad`` (one pass, so nothing is dead);
- ``+ gather``: the same with the step's own gather and standardization;
- ``+ loss``: and the loss seam's residuals (:func:`~probe_lab._adam.minibatch_loss`);
- ``step``: the real :func:`~probe_lab._adam.adam_step` (Adam, L2, masks, flags).

The differences give each stage's time per step; ``evaluation`` is
:func:`~probe_lab._adam.evaluate` once per epoch, divided by the steps, and
``epoch rest`` is the real epoch (``train_chunk`` of 2 epochs minus 1) per step less
the step and the evaluation: minibatch order, early stopping, scan bookkeeping.
All variants are interleaved, ``reps`` times after a first call, best kept, so a
change of load hits all of them; each is timed by the wall clock and by the CPU
time of this process (all its threads), which other processes' load disturbs far
less (on a shared machine, read the CPU table). ``of ref`` is the step's rate
against the plain product ``(x @ W, x.T @ G)`` of the same chunk over all the
epoch's rows.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from probe_lab import TrainConfig, _adam, _plan

STAGES = ("products", "gather", "loss", "adam", "evaluation", "epoch rest")
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
BATCH = 128


@dataclasses.dataclass(frozen=True)
class Case:
    n: int  # training rows (n // 4 more are validation rows)
    d: int
    probes: int  # P of the call; the breakdown is of one chunk of it


def setup(case: Case, config: TrainConfig) -> dict[str, Any]:
    """One chunk of the plan of ``P`` probes on random data, on the device."""
    rng = np.random.default_rng(case.d)
    n_val = case.n // 4
    x = rng.standard_normal((case.n + n_val, case.d), dtype=np.float32)
    y = (rng.random((case.probes, case.n + n_val)) < 0.5).astype(np.float32)
    train = np.arange(case.n + n_val) < case.n
    plan = _plan.make_plan(
        x,
        y,
        train_rows=train,
        val_rows=~train,
        feature_mask=None,
        groups=None,
        eval_sets=None,
        config=config,
    )
    chunk = plan.chunks[0]
    s = _adam.Settings.of(config, plan, chunk)
    c = jax.device_put(plan.chunk_inputs(chunk))
    steps = -(-case.n // BATCH)
    positions = np.arange(steps * BATCH, dtype=np.int32).reshape(steps, 1, BATCH)
    positions = np.repeat(positions, c.rows.shape[0], axis=1)  # (S, G, B)
    gathered = np.take_along_axis(  # the feature rows, as the trainer looks them up
        np.broadcast_to(np.asarray(c.rows), (steps, *c.rows.shape)),
        np.minimum(positions, c.rows.shape[1] - 1),
        axis=2,
    )
    return {
        "x": jax.device_put(x),
        "c": c,
        "s": s,
        "steps": steps,
        "chunks": len(plan.chunks),
        "batches": (jnp.asarray(positions), jnp.asarray(gathered)),
        "width": int(chunk.pieces[0].probes.size) * len(chunk.pieces),
    }


def _variants(k: dict[str, Any]) -> dict[str, Callable[[], Any]]:
    """The timed calls: one ``lax.scan`` over the epoch per variant."""
    x, c, s, batches = k["x"], k["c"], k["s"], k["batches"]
    carry0 = _adam.initial_carry(c.rows.shape[0], c.lr.shape[1], s)
    total = jnp.full(c.n_rows.shape, float(k["steps"] * 10))
    span = s.span

    def sgd(carry, gw):
        new = tuple(w - 1e-9 * g for w, g in zip(carry.w, gw, strict=True))
        return carry.replace(w=new)

    def stage(kind):
        @jax.jit
        def run(carry, x, c, batches, xbs):
            per_block = _adam.block_inputs(c, s)

            def step(carry, item):
                batch, xb = item
                if kind == "adam":
                    return _adam.adam_step(
                        carry,
                        batch,
                        x=x,
                        c=c,
                        s=s,
                        per_block=per_block,
                        total_steps=total,
                    )[0], None
                if kind != "products":
                    xb, yb, mask, weight, _, _ = _adam.minibatch(x, c, s, *batch)
                logits = _adam.forward(xb, carry.w, s) + carry.b[:, None]
                resid = logits * 1e-3
                if kind == "loss":
                    resid, _ = _adam.minibatch_loss(
                        s.methods,
                        logits,
                        yb,
                        mask,
                        carry.step / total,
                        c.params,
                        c.method,
                        weight,
                        record=s.record_loss,
                        blocks=tuple(s.cols),
                    )
                return sgd(carry, _adam.backward(xb, resid, s)), None

            return jax.lax.scan(step, carry, (batches, xbs))[0]

        return run

    xbs = jax.jit(
        lambda x, c, rows: (
            (x[rows, span] - c.mean[:, None, span]) / c.scale[:, None, span]
        )
    )(x, c, batches[1])
    calls = {
        kind: functools_partial(stage(kind), carry0, x, c, batches, xbs)
        for kind in ("products", "gather", "loss", "adam")
    }
    xe = x[c.eval_index, span]
    constants = _adam.eval_constants(c, xe, s)
    evaluate = jax.jit(
        lambda carry, c, xe: _adam.evaluate(carry, c, xe, s, **constants)
    )
    calls["evaluation"] = functools_partial(evaluate, carry0, c, xe)
    key = jax.random.key(0)
    for epochs in (1, 2):
        settings = dataclasses.replace(s, epochs=epochs)
        calls[f"epochs{epochs}"] = functools_partial(
            _adam.train_chunk, x, c, key, settings=settings
        )
    w = jnp.ones((k["width"], span.stop - span.start), jnp.float32)
    xr = x[: k["steps"] * BATCH, span]
    g = jnp.ones((xr.shape[0], k["width"]), jnp.float32)
    ref = jax.jit(lambda x, w, g: (x @ w.T, x.T @ g))
    calls["reference"] = functools_partial(ref, xr, w, g)
    return calls


def functools_partial(fn: Callable, *args: Any, **kwargs: Any) -> Callable[[], Any]:
    return lambda: jax.block_until_ready(fn(*args, **kwargs))


def measure(case: Case, reps: int, config: TrainConfig | None = None) -> dict:
    """Seconds per step of each stage of one chunk (see the module doc)."""
    config = TrainConfig() if config is None else config
    k = setup(case, config)
    calls = _variants(k)
    for fn in calls.values():  # compile and warm up
        fn()
    best = {clock: dict.fromkeys(calls, math.inf) for clock in CLOCKS}
    for _ in range(reps):
        for name, fn in calls.items():
            start = {clock: read() for clock, read in CLOCKS.items()}
            fn()
            for clock, read in CLOCKS.items():
                best[clock][name] = min(best[clock][name], read() - start[clock])
    span = k["s"].span
    flops = 4.0 * BATCH * (span.stop - span.start) * k["width"]
    out = {
        "case": dataclasses.asdict(case),
        "chunk": k["width"],
        "chunks": k["chunks"],
        "steps": k["steps"],
        "adam_mb": 7 * 4 * k["width"] * (span.stop - span.start) / 1e6,
    }
    for clock in CLOCKS:
        per = {name: t / k["steps"] for name, t in best[clock].items()}
        epoch = per["epochs2"] - per["epochs1"]
        out[clock] = {
            "stages": {
                "products": per["products"],
                "gather": per["gather"] - per["products"],
                "loss": per["loss"] - per["gather"],
                "adam": per["adam"] - per["loss"],
                "evaluation": per["evaluation"],
                "epoch rest": epoch - per["adam"] - per["evaluation"],
            },
            "step_s": epoch,
            "reference_s": per["reference"],
            "of_reference": per["reference"] / epoch,
            "rate": flops / epoch,
        }
    return out


def report(results: list[dict], title: str = "") -> list[str]:
    """Lines of the breakdown tables (wall clock, CPU time), and what dominates."""
    head = f"{'d':>5} {'P':>5} {'chunk':>5} " + " ".join(f"{s:>12}" for s in STAGES)
    lines = [title] if title else []
    lines.append(
        "  ms per step of one chunk (share of the step); 'of ref': the step's rate "
        "over the plain product (x @ W, x.T @ G) of the chunk's shapes; 'Adam MB': "
        "the update's memory traffic per step (gradient, weights and two moments)"
    )
    for clock in CLOCKS:
        what = "CPU time of all threads" if clock == "cpu" else "wall clock"
        lines.append(f"  {clock} ({what})")
        lines.append(
            "  " + head + f" {'step':>7} {'GFLOP/s':>8} {'of ref':>6} {'Adam MB':>7}"
        )
        for r in results:
            case, t = r["case"], r[clock]
            cells = " ".join(
                f"{1e3 * t['stages'][s]:>6.2f}({t['stages'][s] / t['step_s']:>4.0%})"
                for s in STAGES
            )
            lines.append(
                f"  {case['d']:>5} {case['probes']:>5} {r['chunk']:>5} {cells} "
                f"{1e3 * t['step_s']:>7.2f} {t['rate'] / 1e9:>8.1f} "
                f"{t['of_reference']:>6.2f} {r['adam_mb']:>7.1f}"
            )
    for r in results:
        t = r["cpu"]
        top = max(STAGES, key=lambda s: t["stages"][s])
        rest = 1 - t["stages"]["products"] / t["step_s"]
        lines.append(
            f"  d={r['case']['d']} P={r['case']['probes']} (CPU time): {top} "
            f"dominates ({t['stages'][top] / t['step_s']:.0%}); the work beside the "
            f"products is {rest:.0%} of the step"
        )
    return lines


DEFAULT_CASES = tuple(
    Case(n, d, p)
    for d, n in ((384, 10_000), (768, 10_000), (4096, 2048))
    for p in (1024, 4096)
)
QUICK_CASES = (Case(1024, 64, 64), Case(1024, 128, 256))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    print(f"load average at start: {os.getloadavg()}")
    cases = QUICK_CASES if args.quick else DEFAULT_CASES
    results = [measure(case, args.reps) for case in cases]
    print("\n".join(report(results, "Per-step breakdown")))
    print(f"load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
