"""Speed of the probe trainer against a matrix product, PyTorch and scikit-learn.

Run from the repository root:

    .venv/bin/python benchmarks/bench_train.py            # n=10,000 d=768 P=1,024
    .venv/bin/python benchmarks/bench_train.py --quick    # small sizes, about a minute
    .venv/bin/python benchmarks/bench_train.py --json results.json

The default size takes 3-6 minutes on 2 CPU cores. Everything is measured in this
one process tree, on synthetic data: features with a 1/k covariance spectrum (like
transformer activations) and per-feature scales and offsets spread over four decades;
each probe's labels are ``1[x_std @ u + 0.5 * noise > 0]`` for a random planted
direction ``u`` with unit signal variance, so the best accuracy is about 0.85.

Tables, each row ``what | time | rate | ratio``:

1. Reference: a jitted float32 ``(x @ W, x.T @ G)``, x (n, d), W (d, P), G (n, P),
   counted as 4*n*d*P floating-point operations (NumPy beside it, for context).
2. The Adam trainer with ``TrainConfig()`` defaults. The time per epoch is the
   difference between runs of E1 and E2 epochs divided by E2 - E1, so fixed costs
   (planning, transfers, assembling) and compilation get rows of their own. Pure
   training (no validation rows) at P and at 4P; the paper protocol with validation
   rows for early stopping, its rate shown without and with the per-epoch validation
   product (2*m*d*P). Each trainer measurement is interleaved with its reference
   product of the same shapes, ``--reps`` times after a first call, best kept, so a
   change of load hits both. Each run also gets a row from the CPU time of all this
   process's threads (best kept the same way; its ratio is the reference's CPU time
   over the epoch's): on a shared machine the wall-clock epoch, a difference of two
   best times, swings with the load far more than the CPU time does.
3. A per-probe PyTorch Adam loop in the style of the paper's code (``Linear(d, 2)``,
   cross-entropy, Adam lr 1e-3, minibatches of 128 from a ``randperm`` per epoch, one
   probe after another) with one torch thread per core and with one thread (on a
   busy machine two OpenMP threads can be far slower); the faster sets the ratio.
4. scikit-learn ``LogisticRegression`` (lbfgs, default tol, ``C = 1 / (l2 * n)``) on
   standardized float32 features, run the best way on this machine: one process per
   core, one BLAS thread each, fitting their shares of a sample of probes at the same
   time; the wall time for all P probes is extrapolated from the sample.
5. ``TrainConfig(solver="lbfgs", l2=...)`` on all P probes (not extrapolated): wall
   time, iterations, speedup over scikit-learn, and test accuracy on the sampled
   probes beside scikit-learn's and the Adam paper protocol's (200 epochs, early
   stopping on the validation rows; run on the sampled probes only).
6. The performance targets with the measured values: the trainer at
   >= 0.85 of the reference rate at P and at 4P; >= 100x the probe-epochs per second
   of the PyTorch loop; L-BFGS >= 30x faster than the scikit-learn loop with test
   accuracy within 0.5 point of it on every sampled probe; a second call with the
   same shapes compiles nothing.
7. A per-step breakdown of one chunk (``step_breakdown.py``): the products, the
   minibatch gather, the loss and residuals, Adam's update, the evaluation and the
   rest of the epoch (order, early stopping, scan), in ms per step and as shares,
   at d = 384/768/4,096 and P = 1,024/4,096 (d = 4,096 on 2,048 rows, to stay
   cheap), with what dominates. ``--breakdown-only`` runs just this table;
   ``--no-breakdown`` leaves it out.

Absolute times depend on the machine and its load (printed at start and end); the
ratios are the result, and they too move when other processes share the cores.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import multiprocessing as mp
import os
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import sklearn
import step_breakdown
import torch
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

from probe_lab import TrainConfig, train_probes

ONE_BLAS_THREAD = {
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}
NOISE = 0.5  # label noise against a unit-variance planted signal
TARGETS = (  # (what, key in derive()'s output, bound, whether a lower bound)
    ("trainer rate / reference rate, P", "fraction_P", 0.85, True),
    ("trainer rate / reference rate, 4P", "fraction_wide", 0.85, True),
    ("probe-epochs/s over the PyTorch loop", "torch_ratio_P", 100.0, True),
    ("L-BFGS speedup over the scikit-learn loop", "lbfgs_speedup", 30.0, True),
    ("L-BFGS - scikit-learn test accuracy, max points", "acc_diff_points", 0.5, False),
    ("compilations in repeated calls", "compiles_on_repeat", 0, False),
)
PAPER_EPOCHS = 200
COLUMNS = ("what", "time", "rate", "ratio")
START = time.perf_counter()


@dataclasses.dataclass(frozen=True)
class Sizes:
    n: int  # training rows
    d: int  # features
    probes: int  # P
    wide: int  # the larger P, where the rate must not fall off
    val: int  # validation rows of the protocol run
    test: int  # held-out rows for test accuracy
    sample: int  # probes fitted by scikit-learn (and compared on test accuracy)
    epochs: tuple[int, int]  # E1 < E2 for the per-epoch difference
    torch_probes: int  # probes trained by the PyTorch loop
    torch_epochs: int


DEFAULT = Sizes(10_000, 768, 1024, 4096, 2000, 2000, 16, (1, 4), 4, 2)
QUICK = Sizes(2000, 128, 128, 512, 400, 400, 4, (1, 3), 2, 1)


@dataclasses.dataclass(frozen=True)
class Data:
    x: np.ndarray  # (n + val + test, d) float32 raw features
    xs: np.ndarray  # the same, standardized with training-row statistics
    y: np.ndarray  # (wide, n + val + test) float32 labels in {0, 1}
    train: slice
    val: slice
    test: slice


class CompileCounter:
    """Counts XLA compilations (the event the tests count)."""

    def __init__(self) -> None:
        self.count = 0
        jax.monitoring.register_event_duration_secs_listener(self._on_event)

    def _on_event(self, name: str, *_args: Any, **_kwargs: Any) -> None:
        if name == "/jax/core/compile/backend_compile_duration":
            self.count += 1


def log(message: str) -> None:
    elapsed = time.perf_counter() - START
    print(f"[{elapsed:6.1f} s] {message}", file=sys.stderr, flush=True)


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def timed_both(fn: Callable[[], Any]) -> tuple[float, float]:
    """Wall-clock and CPU seconds (all threads of this process) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def gflops(flops: float, seconds: float) -> float:
    return flops / seconds / 1e9


@contextlib.contextmanager
def environ(values: dict[str, str]) -> Iterator[None]:
    """Environment variables for the processes started inside the block."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                del os.environ[k]
            else:
                os.environ[k] = v


def make_data(sizes: Sizes, seed: int = 0) -> Data:
    """Correlated, unevenly scaled features; labels from planted directions."""
    rng = np.random.default_rng(seed)
    rows, d = sizes.n + sizes.val + sizes.test, sizes.d
    with threadpool_limits(1):  # a threaded QR crawls when the cores are busy
        basis, _ = np.linalg.qr(rng.standard_normal((d, d)))
    spread = np.arange(1, d + 1) ** -0.5  # covariance eigenvalues 1/k
    scale = np.exp(rng.uniform(np.log(0.01), np.log(100.0), d))
    mixing = ((basis * spread) @ basis.T * scale).astype(np.float32)
    offset = (rng.standard_normal(d) * scale).astype(np.float32)
    x = rng.standard_normal((rows, d), dtype=np.float32) @ mixing + offset
    train = slice(0, sizes.n)
    # the trainer's standardization: training-row mean and std + 1e-6, in float64
    x64 = x[train].astype(np.float64)
    xs = ((x - x64.mean(axis=0)) / (x64.std(axis=0) + 1e-6)).astype(np.float32)
    u = rng.standard_normal((d, sizes.wide), dtype=np.float32)
    u /= (xs[train] @ u).std(axis=0)
    noise = rng.standard_normal((rows, sizes.wide), dtype=np.float32)
    y = ((xs @ u + NOISE * noise) > 0).T.astype(np.float32)
    val = slice(sizes.n, sizes.n + sizes.val)
    return Data(x, xs, y, train, val, slice(val.stop, rows))


def reference_products(n: int, d: int, p: int) -> dict[str, Callable[[], Any]]:
    """A jitted float32 ``(x @ W, x.T @ G)``, and the same in NumPy for context."""
    kx, kw, kg = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(kx, (n, d), jnp.float32)
    w = jax.random.normal(kw, (d, p), jnp.float32)
    g = jax.random.normal(kg, (n, p), jnp.float32)
    products = jax.jit(lambda x, w, g: (x @ w, x.T @ g))
    xn, wn, gn = (np.asarray(a) for a in (x, w, g))
    return {
        "xla": lambda: jax.block_until_ready(products(x, w, g)),
        "numpy": lambda: (xn @ wn, xn.T @ gn),
    }


def time_run(
    features: np.ndarray,
    targets: np.ndarray,
    sizes: Sizes,
    reps: int,
    counter: CompileCounter,
    **kwargs: Any,
) -> dict[str, float]:
    """Trainer runs of E1 and E2 epochs and the reference product of the same
    shapes, interleaved ``reps`` times after a first call each (best kept), so that
    a change of load hits all of them.
    """

    def run(epochs: int) -> None:
        config = TrainConfig(epochs=epochs)
        probes = train_probes(features, targets, config=config, **kwargs)
        jax.block_until_ready(probes.weights)

    e1, e2 = sizes.epochs
    p = targets.shape[0]
    before = counter.count
    first = {"e1": timed(lambda: run(e1)), "e2": timed(lambda: run(e2))}
    compiles_first = counter.count - before
    fns = {"e1": lambda: run(e1), "e2": lambda: run(e2)}
    fns.update(reference_products(sizes.n, sizes.d, p))
    fns["xla"](), fns["numpy"]()  # warm-up
    before = counter.count
    best = dict.fromkeys(fns, math.inf)
    cpu = dict.fromkeys(fns, math.inf)
    for _ in range(reps):
        for k, fn in fns.items():
            wall_s, cpu_s = timed_both(fn)
            best[k], cpu[k] = min(best[k], wall_s), min(cpu[k], cpu_s)
    epoch = (best["e2"] - best["e1"]) / (e2 - e1)
    return {
        "probes": p,
        "epoch_s": epoch,
        "epoch_cpu_s": (cpu["e2"] - cpu["e1"]) / (e2 - e1),
        "xla_cpu_s": cpu["xla"],
        "fixed_s": best["e1"] - e1 * epoch,
        "compile_s": (first["e1"] + first["e2"] - best["e1"] - best["e2"]) / 2,
        "compiles_first": compiles_first,
        "compiles_on_repeat": counter.count - before,
        "xla_s": best["xla"],
        "numpy_s": best["numpy"],
        "flops": 4.0 * sizes.n * sizes.d * p,
    }


def time_torch(
    xs: np.ndarray, y: np.ndarray, epochs: int, threads: int, batch: int = 128
) -> float:
    """Seconds of a paper-style PyTorch Adam loop over the probes ``y: (k, n)``."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    x_t = torch.from_numpy(xs)
    y_t = torch.from_numpy(y.astype(np.int64))
    n, d = x_t.shape
    start = time.perf_counter()
    for labels in y_t:
        model = torch.nn.Linear(d, 2)
        loss_fn = torch.nn.CrossEntropyLoss()
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        for _ in range(epochs):
            order = torch.randperm(n)
            for i in range(0, n, batch):
                idx = order[i : i + batch]
                optimizer.zero_grad()
                loss = loss_fn(model(x_t[idx]), labels[idx])
                loss.backward()
                optimizer.step()
    return time.perf_counter() - start


def sklearn_worker(
    probes: np.ndarray,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    c: float,
    barrier: Any,
    queue: Any,
) -> None:
    """Fit this process's share of probes one after another (in a child process)."""

    def fit(labels: np.ndarray) -> LogisticRegression:
        model = LogisticRegression(C=c, solver="lbfgs", max_iter=10_000)
        return model.fit(x_train, labels)

    fit(y_train[0])  # warm-up, untimed
    barrier.wait()  # the processes fit at the same time, as they would for real
    out: dict[str, list] = {"probe": [], "seconds": [], "iterations": [], "acc": []}
    for probe, labels, truth in zip(probes, y_train, y_test, strict=True):
        start = time.perf_counter()
        model = fit(labels)
        out["seconds"].append(time.perf_counter() - start)
        out["probe"].append(int(probe))
        out["iterations"].append(int(model.n_iter_[0]))
        out["acc"].append(float(model.score(x_test, truth)))
    queue.put(out)


def run_sklearn(
    data: Data, sample: np.ndarray, c: float, procs: int
) -> dict[str, np.ndarray]:
    """One process per core with one BLAS thread each; results in probe order."""
    ctx = mp.get_context("spawn")
    barrier, queue = ctx.Barrier(procs), ctx.Queue()
    x_train, x_test = data.xs[data.train], data.xs[data.test]
    workers = []
    for share in np.array_split(sample, procs):
        y_train, y_test = data.y[share, data.train], data.y[share, data.test]
        args = (share, x_train, y_train, x_test, y_test, c, barrier, queue)
        workers.append(ctx.Process(target=sklearn_worker, args=args))
    with environ(ONE_BLAS_THREAD):  # inherited, so set before the children's imports
        for worker in workers:
            worker.start()
    parts = [queue.get() for _ in workers]
    for worker in workers:
        worker.join()
    merged = {k: np.concatenate([part[k] for part in parts]) for k in parts[0]}
    order = np.argsort(merged["probe"])
    return {k: v[order] for k, v in merged.items()}


def test_accuracy(probes: Any, data: Data, which: np.ndarray) -> np.ndarray:
    """``(len(which),)`` test accuracy of the chosen probes of a trained batch."""
    pred = np.asarray(probes.predict(data.x[data.test]))[which]
    return (pred == data.y[which, data.test]).mean(axis=1)


def time_lbfgs(data: Data, p: int, l2: float, sample: np.ndarray) -> dict[str, Any]:
    """First-call and second-call wall time of the L-BFGS solver on all P probes."""
    config = TrainConfig(solver="lbfgs", l2=l2)
    features, targets = data.x[data.train], data.y[:p, data.train]

    def run() -> Any:
        probes = train_probes(features, targets, config=config)
        jax.block_until_ready(probes.weights)
        return probes

    cold = timed(run)
    start = time.perf_counter()
    probes = run()
    warm = time.perf_counter() - start
    return {
        "cold_s": cold,
        "warm_s": warm,
        "iterations": probes.best_epoch,
        "acc": test_accuracy(probes, data, sample),
    }


def adam_protocol_accuracy(data: Data, sample: np.ndarray) -> np.ndarray:
    """Test accuracy of the full paper protocol (200 epochs, early stopping)."""
    rows = slice(0, data.val.stop)
    is_train = np.arange(rows.stop) < data.train.stop
    probes = train_probes(
        data.x[rows], data.y[sample, rows], train_rows=is_train, val_rows=~is_train
    )
    return test_accuracy(probes, data, np.arange(sample.size))


def run_breakdown(quick: bool, reps: int) -> list[dict[str, Any]]:
    """Table 7: the per-step breakdown of one chunk at each case."""
    cases = step_breakdown.QUICK_CASES if quick else step_breakdown.DEFAULT_CASES
    results = []
    for case in cases:
        log(f"per-step breakdown: n={case.n} d={case.d} P={case.probes}")
        results.append(step_breakdown.measure(case, reps))
    return results


def run_all(sizes: Sizes, reps: int, l2: float, procs: int) -> dict[str, Any]:
    """Every measurement, in the order of the tables."""
    counter = CompileCounter()
    res: dict[str, Any] = {"sizes": dataclasses.asdict(sizes), "l2": l2}
    res["c"] = 1.0 / (l2 * sizes.n)
    res["procs"] = procs
    res["load_start"] = os.getloadavg()
    log(f"making data: {sizes}")
    data = make_data(sizes)
    sample = np.arange(sizes.sample)
    res["trainer"] = {}
    for key, p in (("P", sizes.probes), ("wide", sizes.wide)):
        log(f"trainer and reference product, P={p}, epochs {sizes.epochs}")
        features, targets = data.x[data.train], data.y[:p, data.train]
        res["trainer"][key] = time_run(features, targets, sizes, reps, counter)
    log(f"trainer, paper protocol with {sizes.val} validation rows")
    rows = slice(0, data.val.stop)
    is_train = np.arange(rows.stop) < sizes.n
    res["trainer"]["protocol"] = time_run(
        data.x[rows],
        data.y[: sizes.probes, rows],
        sizes,
        reps,
        counter,
        train_rows=is_train,
        val_rows=~is_train,
    )
    log(f"PyTorch loop: {sizes.torch_probes} probes x {sizes.torch_epochs} epochs")
    x_train, y_sample = data.xs[data.train], data.y[: sizes.torch_probes, data.train]
    res["torch_s"] = {}
    for threads in sorted({procs, 1}, reverse=True):
        time_torch(x_train[:512], y_sample[:1, :512], 1, threads)  # warm-up
        seconds = time_torch(x_train, y_sample, sizes.torch_epochs, threads)
        res["torch_s"][threads] = seconds
    log(f"scikit-learn: {sizes.sample} probes on {procs} processes")
    res["sklearn"] = run_sklearn(data, sample, res["c"], procs)
    log(f"L-BFGS on {sizes.probes} probes, twice")
    res["lbfgs"] = time_lbfgs(data, sizes.probes, l2, sample)
    log(f"Adam paper protocol ({PAPER_EPOCHS} epochs) on the {sizes.sample} probes")
    res["adam_acc"] = adam_protocol_accuracy(data, sample)
    res["load_end"] = os.getloadavg()
    log("done")
    return res


def derive(res: dict[str, Any]) -> dict[str, float]:
    """The ratios the tables and the targets are about."""
    sizes, tr = res["sizes"], res["trainer"]
    p, m, d = sizes["probes"], sizes["val"], sizes["d"]
    out: dict[str, float] = {}
    for key, t in tr.items():
        out[f"ref_rate_{key}"] = gflops(t["flops"], t["xla_s"])
        out[f"rate_{key}"] = gflops(t["flops"], t["epoch_s"])
        out[f"fraction_{key}"] = out[f"rate_{key}"] / out[f"ref_rate_{key}"]
        out[f"fraction_cpu_{key}"] = t["xla_cpu_s"] / t["epoch_cpu_s"]
    # the protocol run also multiplies its validation rows once per epoch
    val_flops = 2.0 * m * d * p
    t = tr["protocol"]
    out["rate_protocol_val"] = gflops(t["flops"] + val_flops, t["epoch_s"])
    out["fraction_val"] = out["rate_protocol_val"] / out["ref_rate_protocol"]
    torch_s = min(res["torch_s"].values())  # the faster thread count
    probe_epochs = sizes["torch_probes"] * sizes["torch_epochs"]
    out["torch_probe_epochs"] = probe_epochs / torch_s
    for key in ("P", "wide", "protocol"):
        probe_epochs = tr[key]["probes"] / tr[key]["epoch_s"]
        out[f"probe_epochs_{key}"] = probe_epochs
        out[f"torch_ratio_{key}"] = probe_epochs / out["torch_probe_epochs"]
    out["protocol_run_s"] = (
        tr["protocol"]["fixed_s"] + PAPER_EPOCHS * (tr["protocol"]["epoch_s"])
    )
    sk, lb = res["sklearn"], res["lbfgs"]
    out["sklearn_probe_s"] = float(sk["seconds"].mean())
    out["sklearn_wall_s"] = p / res["procs"] * out["sklearn_probe_s"]
    out["adam_vs_sklearn"] = out["sklearn_wall_s"] / out["protocol_run_s"]
    out["lbfgs_speedup"] = out["sklearn_wall_s"] / lb["warm_s"]
    out["lbfgs_speedup_cold"] = out["sklearn_wall_s"] / lb["cold_s"]
    out["acc_diff_points"] = float(100 * np.abs(lb["acc"] - sk["acc"]).max())
    out["compiles_on_repeat"] = sum(t["compiles_on_repeat"] for t in tr.values())
    return out


def fmt_s(seconds: float) -> str:
    return f"{seconds:.3f} s" if abs(seconds) < 100 else f"{seconds:.0f} s"


def fmt_gf(rate: float) -> str:
    return f"{rate:.1f} GFLOP/s"


def row(what: str, seconds: float | None = None, rate: str = "", ratio: str = ""):
    return (what, "" if seconds is None else fmt_s(seconds), rate, ratio)


def print_table(title: str, header: tuple[str, ...], rows: list[tuple]) -> None:
    table = [header, *rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    print(f"\n{title}")
    for k, cells in enumerate(table):
        line = [cells[0].ljust(widths[0])]
        line += [c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True)]
        print("  " + "  ".join(line))
        if k == 0:
            print("  " + "  ".join("-" * w for w in widths))


def reference_rows(res: dict[str, Any], der: dict[str, float]) -> list[tuple]:
    rows = []
    for key, label in (("P", ""), ("wide", ""), ("protocol", " (protocol run)")):
        t = res["trainer"][key]
        rate, blas = der[f"ref_rate_{key}"], gflops(t["flops"], t["numpy_s"])
        what = f"jitted, P={t['probes']}{label}"
        rows.append(row(what, t["xla_s"], fmt_gf(rate), "1.00"))
        ratio = f"{blas / rate:.2f}"
        rows.append(row("  NumPy, same shapes", t["numpy_s"], fmt_gf(blas), ratio))
    return rows


def trainer_rows(res: dict[str, Any], der: dict[str, float]) -> list[tuple]:
    sizes, rows = res["sizes"], []
    runs = (
        ("P", f"train only, P={sizes['probes']}"),
        ("wide", f"train only, P={sizes['wide']}"),
        ("protocol", f"with {sizes['val']} val rows, P={sizes['probes']}"),
    )
    for key, label in runs:
        t, rate = res["trainer"][key], fmt_gf(der[f"rate_{key}"])
        ratio = f"{der[f'fraction_{key}']:.2f}"
        rows.append(row(f"{label}: per epoch", t["epoch_s"], rate, ratio))
        rate = fmt_gf(gflops(t["flops"], t["epoch_cpu_s"]))
        ratio = f"{der[f'fraction_cpu_{key}']:.2f}"
        rows.append(
            row("  CPU time of all threads, per epoch", t["epoch_cpu_s"], rate, ratio)
        )
        if key == "protocol":
            rate, ratio = fmt_gf(der["rate_protocol_val"]), f"{der['fraction_val']:.2f}"
            rows.append(row("  counting the validation product", None, rate, ratio))
        rows.append(row("  fixed cost per call", t["fixed_s"]))
        compiles = f"{t['compiles_first']} compilations"
        rows.append(row("  first calls: compiling", t["compile_s"], compiles))
    whole = f"  whole {PAPER_EPOCHS}-epoch run (fixed + {PAPER_EPOCHS} epochs)"
    rows.append(row(whole, der["protocol_run_s"]))
    return rows


def torch_rows(res: dict[str, Any], der: dict[str, float]) -> list[tuple]:
    sizes, rows = res["sizes"], []
    probe_epochs = sizes["torch_probes"] * sizes["torch_epochs"]
    loop = f"PyTorch, {sizes['torch_probes']} probes x {sizes['torch_epochs']} epochs"
    for threads, seconds in res["torch_s"].items():
        rate = probe_epochs / seconds
        ratio = f"{rate / der['torch_probe_epochs']:.2f}"
        rows.append(
            row(f"{loop}, {threads} thread(s)", seconds, f"{rate:.2f} /s", ratio)
        )
    runs = (("P", "train only"), ("wide", "train only"), ("protocol", "with val rows"))
    for key, label in runs:
        t = res["trainer"][key]
        what = f"trainer, {label}, P={t['probes']}, per epoch"
        rate = f"{der[f'probe_epochs_{key}']:.0f} /s"
        rows.append(row(what, t["epoch_s"], rate, f"{der[f'torch_ratio_{key}']:.0f}x"))
    return rows


def sklearn_rows(res: dict[str, Any], der: dict[str, float]) -> list[tuple]:
    sizes, sk, procs = res["sizes"], res["sklearn"], res["procs"]
    its = sk["iterations"]
    p = sizes["probes"]
    return [
        row(
            f"scikit-learn, per probe per process ({sizes['sample']} probes)",
            der["sklearn_probe_s"],
            f"{1 / der['sklearn_probe_s']:.2f} probes/s",
        ),
        row("  iterations (median / max)", None, f"{np.median(its):.0f} / {its.max()}"),
        row(
            f"scikit-learn, all {p} probes on {procs} processes (extrapolated)",
            der["sklearn_wall_s"],
            f"{p / der['sklearn_wall_s']:.1f} probes/s",
            "1",
        ),
        row(
            f"Adam trainer, {PAPER_EPOCHS}-epoch protocol, all {p} probes",
            der["protocol_run_s"],
            f"{p / der['protocol_run_s']:.1f} probes/s",
            f"{der['adam_vs_sklearn']:.1f}x",
        ),
    ]


def lbfgs_rows(res: dict[str, Any], der: dict[str, float]) -> list[tuple]:
    sizes, lb, sk = res["sizes"], res["lbfgs"], res["sklearn"]
    p, its = sizes["probes"], lb["iterations"]
    sample = f"mean of {sizes['sample']} probes"
    return [
        row(
            f"L-BFGS, all {p} probes (second call)",
            lb["warm_s"],
            f"{p / lb['warm_s']:.1f} probes/s",
            f"{der['lbfgs_speedup']:.1f}x",
        ),
        row(
            "  first call (with compiling)",
            lb["cold_s"],
            f"{p / lb['cold_s']:.1f} probes/s",
            f"{der['lbfgs_speedup_cold']:.1f}x",
        ),
        row("  iterations (median / max)", None, f"{np.median(its):.0f} / {its.max()}"),
        row(f"test accuracy, L-BFGS ({sample})", None, f"{lb['acc'].mean():.4f}"),
        row("  scikit-learn, same L2", None, f"{sk['acc'].mean():.4f}"),
        row(
            f"  Adam, paper protocol ({PAPER_EPOCHS} epochs, early stopping)",
            None,
            f"{res['adam_acc'].mean():.4f}",
        ),
        row(
            "  max |L-BFGS - scikit-learn| over the probes",
            None,
            f"{der['acc_diff_points']:.2f} points",
        ),
    ]


def check_targets(der: dict[str, float]) -> list[dict[str, Any]]:
    checks = []
    for what, key, bound, at_least in TARGETS:
        value = der[key]
        ok = value >= bound if at_least else value <= bound
        target = f"{what} {'>=' if at_least else '<='} {bound:g}"
        checks.append({"target": target, "measured": value, "pass": bool(ok)})
    return checks


def summary_rows(der: dict[str, float]) -> list[tuple]:
    return [
        (c["target"], f"{c['measured']:.3g}", "PASS" if c["pass"] else "FAIL")
        for c in check_targets(der)
    ]


def print_report(res: dict[str, Any], der: dict[str, float]) -> None:
    sizes = res["sizes"]
    print(
        f"probe-lab trainer benchmark: n={sizes['n']} training rows (+{sizes['val']} "
        f"validation, +{sizes['test']} test), d={sizes['d']}, P={sizes['probes']} "
        f"and {sizes['wide']}"
    )
    print(
        f"machine: {res['procs']} cores; jax {jax.__version__} "
        f"({jax.default_backend()}), torch {torch.__version__}, "
        f"scikit-learn {sklearn.__version__}, numpy {np.__version__}"
    )
    print(f"L2: lambda = {res['l2']:g}, scikit-learn C = 1 / (lambda n) = {res['c']:g}")
    load = " -> ".join(
        " ".join(f"{v:.2f}" for v in res[k]) for k in ("load_start", "load_end")
    )
    print(f"load average (1, 5, 15 min), start -> end: {load}")
    e1, e2 = sizes["epochs"]
    epoch = f"per epoch = (T({e2}) - T({e1})) / {e2 - e1}"
    tables = (
        ("1. Reference (x @ W, x.T @ G), 4*n*d*P flops", reference_rows),
        (f"2. Adam trainer, {epoch}; ratio: of the reference rate", trainer_rows),
        ("3. Probe-epochs per second; ratio: over the PyTorch loop", torch_rows),
        ("4. scikit-learn loop; ratio: speedup over it", sklearn_rows),
        ("5. L-BFGS solver; ratio: speedup over the scikit-learn loop", lbfgs_rows),
    )
    for title, make_rows in tables:
        print_table(title, COLUMNS, make_rows(res, der))
    header = ("target", "measured", "result")
    print_table("6. Targets", header, summary_rows(der))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, seconds")
    parser.add_argument("--n", type=int, help="training rows")
    parser.add_argument("--d", type=int, help="features")
    parser.add_argument("--probes", type=int, help="P (the wide run uses 4P)")
    parser.add_argument("--reps", type=int, default=5, help="repetitions, best kept")
    parser.add_argument("--l2", type=float, default=1e-3, help="L2 for L-BFGS, sklearn")
    parser.add_argument("--json", help="also write the results to this JSON file")
    parser.add_argument(
        "--breakdown-only", action="store_true", help="only table 7 (per step)"
    )
    parser.add_argument("--no-breakdown", action="store_true", help="skip table 7")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    sizes = QUICK if args.quick else DEFAULT
    given = {k: getattr(args, k) for k in ("n", "d", "probes") if getattr(args, k)}
    if "probes" in given:
        given["wide"] = 4 * given["probes"]
        given["sample"] = min(sizes.sample, given["probes"])
        given["torch_probes"] = min(sizes.torch_probes, given["probes"])
    sizes = dataclasses.replace(sizes, **given)
    procs = len(os.sched_getaffinity(0))
    breakdown = None
    if args.breakdown_only:
        res, der = {"load_start": os.getloadavg()}, {}
    else:
        res = run_all(sizes, args.reps, args.l2, procs)
        der = derive(res)
        print_report(res, der)
    if not args.no_breakdown:
        breakdown = run_breakdown(args.quick, max(2, min(args.reps, 3)))
        title = "7. Per-step breakdown of one chunk (step_breakdown.py)"
        print("\n" + "\n".join(step_breakdown.report(breakdown, title)))
        load = " -> ".join(
            " ".join(f"{v:.2f}" for v in loads)
            for loads in (res["load_start"], os.getloadavg())
        )
        print(f"  load average (1, 5, 15 min), start -> end: {load}")
    res["breakdown"] = breakdown
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {**res, "derived": der, "targets": check_targets(der)},
                f,
                indent=2,
                default=lambda o: np.asarray(o).tolist(),
            )


if __name__ == "__main__":
    main()
