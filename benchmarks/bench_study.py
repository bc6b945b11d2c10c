"""Benchmark: a whole weak-to-strong study against its matrix-multiply floor.

    python benchmarks/bench_study.py            # 20,000 x 384 cache, paper protocol
    python benchmarks/bench_study.py --quick    # small smoke run (seconds)

A study of 6 error structures + the reference probe x 8 student k x 2 losses x 20
seeds (2,240 students) plus ceilings and weak probes, on a planted 20,000 x 384
float16 cache, with the paper's protocol (Adam, lr 1e-3, batch 128, 200 epochs,
early stopping). For every stage the floor is the time a plain jitted float32
product of the stage's shapes would take for the training work alone:
``rows x d x P x epochs x 4`` flops at the rate of ``(x @ W, x.T @ G)`` with
``x: (rows, d)``, ``W: (d, P)``, measured in this run. Target: wall time
within 1.5x of the summed floors, and compilations bounded by the number of
stages, not conditions. Both are printed; nothing is asserted. ``compiles`` counts
every XLA compilation in a stage (first uses of small eager operations included)
and ``compile s`` their seconds, ``trainers`` the compiled trainer programs among
them (one per chunk shape). Each product rate is the best of 20 calls, taken twice
(the second pass after the first has warmed every shape), so a moment of load
lowers no floor; the load average is printed at start and end.

``products s`` is a lower bound of what the minibatch protocol can reach on this
machine: the stage's forward and backward products alone, in the trainer's own
chunks and feature blocks (:func:`probe_lab._adam.forward` and ``backward``), one
chunk per device as the trainer runs them, on minibatches gathered beforehand (no
gather, loss, Adam, evaluation or minibatch order), times the stage's steps.
``bound`` adds the stage's measured compile seconds: a stage cannot finish in
less, however lean everything beside its products becomes (``--no-bound`` skips
it).

``--compile-cache DIR`` keeps compiled programs in DIR as the ``probe-lab``
command does (:func:`probe_lab.use_compile_cache`): run it twice with the same DIR
and the second run loads its programs (``loaded``) instead of compiling them.

Like the ``probe-lab`` command, the study runs with one JAX CPU device per core
(``--devices 1`` for a single device); the baseline product runs on one device,
which still uses every core.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from conftest import write_synthetic_cache

import probe_lab.train
from probe_lab import TrainConfig, _adam, _plan, use_compile_cache, use_cpu_cores
from probe_lab.study import StudyConfig, Supervisor, run_study
from probe_lab.study.stage import training_flops

STRUCTURES = (
    "random",
    "longest",
    "shortest",
    "strong_unconfident",
    "strong_confident_correct",
)


def product_rate(rows: int, d: int, probes: int, reps: int = 20) -> float:
    """GFLOP/s of a plain jitted ``(x @ W, x.T @ G)`` of these shapes."""
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(rows, d)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(d, probes)), jnp.float32)
    g = jnp.asarray(rng.normal(size=(rows, probes)), jnp.float32)
    f = jax.jit(lambda x, w, g: (x @ w, x.T @ g))
    jax.block_until_ready(f(x, w, g))
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        jax.block_until_ready(f(x, w, g))
        best = min(best, time.perf_counter() - start)
    return 4 * rows * d * probes / best / 1e9


class PlanLog:
    """Keeps every plan ``train_probes`` makes, in order (one per study stage)."""

    def __init__(self) -> None:
        self.plans: list[_plan.Plan] = []
        self._make = _plan.make_plan

    def __enter__(self) -> PlanLog:
        def make_plan(*args, **kwargs):
            plan = self._make(*args, **kwargs)
            self.plans.append(plan)
            return plan

        probe_lab.train._plan.make_plan = make_plan
        return self

    def __exit__(self, *exc) -> None:
        probe_lab.train._plan.make_plan = self._make


def products_seconds(
    plan: _plan.Plan, config: TrainConfig, batches: int = 16, reps: int = 3
) -> float:
    """Seconds the plan's training products alone take for ``config.epochs``
    epochs: every round of chunks (one per device, as the trainer runs them) steps
    through one epoch of forward and backward products on ``batches`` minibatches
    gathered beforehand (reused in turn), best of ``reps``."""
    devices = jax.local_devices()
    mesh = jax.sharding.Mesh(np.array(devices), ("chunk",))
    spec = jax.sharding.PartitionSpec
    by_shape: dict[tuple, list[_plan.Chunk]] = {}
    for chunk in plan.chunks:
        by_shape.setdefault(chunk.shape, []).append(chunk)
    rng = np.random.default_rng(0)
    total = 0.0
    for chunks in by_shape.values():
        s = _adam.Settings.of(config, plan, chunks[0])
        n_pieces = len(chunks[0].pieces)
        steps = -(-chunks[0].n_max // s.batch_size)
        span = s.span.stop - s.span.start
        shape = (len(devices), batches, n_pieces, s.batch_size, span)
        xb = jax.device_put(
            rng.standard_normal(shape, np.float32),
            jax.sharding.NamedSharding(mesh, spec("chunk")),
        )

        def one(xb, s=s, steps=steps, n_pieces=n_pieces):
            xb = xb[0]
            w0 = tuple(
                jnp.zeros((n_pieces, c1 - c0, hi - lo), jnp.float32)
                for c0, c1, lo, hi in s.blocks
            )

            def step(w, i):
                x = xb[i % batches]
                z = _adam.forward(x, w, s)  # (G, B, C): stands in for the residual
                grads = _adam.backward(x, z, s)
                return tuple(a - 1e-9 * g for a, g in zip(w, grads, strict=True)), None

            w, _ = jax.lax.scan(step, w0, jnp.arange(steps))
            return jax.tree.map(lambda a: a[None], w)

        run = jax.jit(
            jax.shard_map(
                one,
                mesh=mesh,
                in_specs=spec("chunk"),
                out_specs=spec("chunk"),
                check_vma=False,
            )
        )
        jax.block_until_ready(run(xb))
        best = float("inf")
        for _ in range(reps):
            start = time.perf_counter()
            jax.block_until_ready(run(xb))
            best = min(best, time.perf_counter() - start)
        rounds = -(-len(chunks) // len(devices))
        total += best * rounds * config.epochs
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small smoke size")
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--d", type=int, default=384)
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument(
        "--devices",
        type=int,
        default=None,
        help="JAX CPU devices (default: one per core, as probe-lab does)",
    )
    parser.add_argument(
        "--dynamics",
        action="store_true",
        help="also record test accuracy and agreement every epoch (Fig. 26)",
    )
    parser.add_argument(
        "--compile-cache",
        metavar="DIR",
        help="keep compiled programs in DIR between runs, as probe-lab does "
        "(default: off, every run compiles as on a fresh machine)",
    )
    parser.add_argument(
        "--no-bound", action="store_true", help="skip the products-only bound"
    )
    args = parser.parse_args()
    load_start = os.getloadavg()
    n_devices = use_cpu_cores(args.devices)
    if args.compile_cache:
        os.environ["PROBE_LAB_COMPILE_CACHE"] = args.compile_cache
        use_compile_cache()
    if args.quick:
        args.rows, args.d, args.epochs, args.seeds = 3000, 64, 10, 2
    ks = tuple(int(k) for k in np.unique(np.geomspace(2, args.d, 8).round()))
    with tempfile.TemporaryDirectory() as tmp:
        cache = write_synthetic_cache(
            Path(tmp) / "bench.h5", n=args.rows, d=args.d, dtype="float16"
        )
        config = StudyConfig(
            cache=str(cache),
            layer=2,
            supervisors=(
                Supervisor(kind="probe", k=ks[1]),
                *(Supervisor(kind=kind) for kind in STRUCTURES),
                Supervisor(kind="mixture", k=ks[1], level=0.5),
            ),
            students=ks,
            losses=("xent", "confidence"),
            seeds=args.seeds,
            dynamics=args.dynamics,
            train=TrainConfig(epochs=args.epochs),
        )
        start = time.perf_counter()
        with PlanLog() as log:
            result = run_study(config)
        wall = time.perf_counter() - start
        if len(log.plans) != len(result.stages):
            raise RuntimeError(
                f"{len(log.plans)} plans for {len(result.stages)} stages: the "
                "bound needs one train_probes call per stage"
            )
        bounds = (
            [None] * len(log.plans)
            if args.no_bound
            else [products_seconds(plan, config.train) for plan in log.plans]
        )
    print(
        f"\nstudy: {args.rows} x {args.d} cache, {len(result.table)} student runs, "
        f"k = {list(ks)}, {args.epochs} epochs, per-epoch dynamics "
        f"{'on' if args.dynamics else 'off'}, {n_devices} JAX device(s) "
        f"({jax.devices()[0].platform})\n"
    )
    header = (
        f"{'stage':<24}{'probes':>8}{'rows':>8}{'GFLOP/s':>10}"
        f"{'floor s':>10}{'wall s':>10}{'ratio':>8}{'compiles':>10}"
        f"{'compile s':>11}{'loaded':>8}{'trainers':>10}"
        f"{'products s':>12}{'bound':>8}"
    )
    print(header)
    print("-" * len(header))
    shapes = [(s["rows"], s["d"], s["probes"]) for s in result.stages]
    first = [product_rate(*shape) for shape in shapes]  # then the best of two passes
    rates = [max(r, product_rate(*sh)) for r, sh in zip(first, shapes, strict=True)]
    total_floor = total_bound = 0.0
    for stage, rate, products in zip(result.stages, rates, bounds, strict=True):
        floor = training_flops(stage) / rate / 1e9
        total_floor += floor
        bound = ""
        if products is not None:
            total_bound += products + stage["compile_seconds"]
            bound = (
                f"{products:>12.2f}"
                f"{(products + stage['compile_seconds']) / floor:>8.2f}"
            )
        print(
            f"{stage['stage']:<24}{stage['probes']:>8}{stage['rows']:>8}"
            f"{rate:>10.1f}{floor:>10.2f}{stage['seconds']:>10.2f}"
            f"{stage['seconds'] / floor:>8.2f}{stage['compilations']:>10}"
            f"{stage['compile_seconds']:>11.2f}{stage['loaded']:>8}"
            f"{stage['trainers']:>10}" + bound
        )
    print("-" * len(header))
    stage_time = sum(s["seconds"] for s in result.stages)
    print(f"{'sum of stages':<24}{'':>26}{total_floor:>10.2f}{stage_time:>10.2f}")
    print(f"{'whole run_study':<24}{'':>36}{wall:>10.2f}")
    if not args.no_bound:
        print(
            f"\nproducts-only bound (products s + compile s) / floor: "
            f"{total_bound / total_floor:.2f} over the stages"
        )
    print(
        f"\nwall / floor = {wall / total_floor:.2f} (target <= 1.5); compilations: "
        f"{sum(s['compilations'] for s in result.stages)} over "
        f"{len(result.stages)} stages for {len(result.table)} conditions"
    )
    load_end = os.getloadavg()
    print(
        "load average (1, 5, 15 min), start -> end: "
        + " ".join(f"{v:.2f}" for v in load_start)
        + " -> "
        + " ".join(f"{v:.2f}" for v in load_end)
    )


if __name__ == "__main__":
    main()
