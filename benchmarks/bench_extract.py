"""Extraction overhead and cache read speed, printed as a table.

Run: ``python benchmarks/bench_extract.py`` (about 4.5 minutes on 2 CPU cores shared
with other jobs) or ``python benchmarks/bench_extract.py --quick`` (about 1.5
minutes). Wall-clock ratios need an otherwise idle machine; the CPU-time ratio (this
process's CPU seconds, all threads) is less sensitive to other processes.

1. Extraction with caching vs the bare model forward: the packaged MiniLM on
   ``cities`` rows (written to a JSONL task file first), the same prompts and the same
   length-bucketed batches, timed in the same run and interleaved (best of
   ``--repeats``). ``extract()`` is timed end to end (task file read, model load,
   tokenization, batching, all-layer mean pooling, float16 cast, HDF5 writes); the bare
   loop is ``model(**batch, output_hidden_states=True)`` over prebuilt batches.
   Target: ratio >= 0.90. Building the built-in ``cities`` task (reading the
   gazetteer) is a fixed cost, shown on its own line.
2. Stopping early: ``extract()`` of MiniLM's layer 2 (of 6 blocks) against all 7
   hidden states, the same rows and batches, interleaved (best of ``--repeats``).
   Target: layer 2 costs <= 0.55 of all layers in the batch loop (the forward stops
   after block 2 of 6; a third of the blocks plus the embeddings). The same ratio end
   to end, and all layers through the hooks against ``--capture hidden_states``, are
   shown beside it.
3. Reading one layer of a 20,000 x 384 float16 cache into memory (time and MB/s), and
   a random gather of half the rows in numpy vs HDF5 fancy indexing.
"""

from __future__ import annotations

import argparse
import inspect
import json
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

from activation_cache import (
    ExtractConfig,
    extract,
    format_prompts,
    load_task,
    open_cache,
    store,
)
from activation_cache.extract import _Batcher, _plan, resolve_model


def _write_task_file(rows: int, folder: Path) -> tuple[Path, float]:
    """The cities rows as a JSONL task file, and the seconds building the task took."""
    start = time.perf_counter()
    task = load_task("cities", size=rows)
    t_task = time.perf_counter() - start
    task_file = folder / "cities.jsonl"
    task_file.write_text(
        "".join(
            json.dumps({"id": i, "text": t, "label": int(y)}) + "\n"
            for i, t, y in zip(task.ids, task.texts, task.labels, strict=True)
        )
    )
    return task_file, t_task


def _timed_extract(cfg: ExtractConfig) -> tuple[float, float, float]:
    """Wall seconds for extract() end to end and from the first batch committed to
    the last; CPU seconds end to end."""
    stamps = []
    cpu, start = time.process_time(), time.perf_counter()
    extract(cfg, on_batch=lambda done, total: stamps.append(time.perf_counter()))
    end = time.perf_counter()
    return end - start, stamps[-1] - stamps[0], time.process_time() - cpu


def bench_layers(task_file: Path, batch_size: int, repeats: int) -> list[tuple]:
    """Time extract() of layer 2 against all layers (hooks and hidden_states)."""

    def config(name: str, **kw) -> ExtractConfig:
        return ExtractConfig(
            model="minilm",
            task=str(task_file),
            position="mean",
            batch_size=batch_size,
            out=task_file.parent / f"{name}.h5",
            overwrite=True,
            quiet=True,
            **kw,
        )

    runs = {
        "layer 2": config("layer2", layers="2"),
        "all layers": config("all"),
        "all layers, hidden_states": config("states", capture="hidden_states"),
    }
    _timed_extract(runs["layer 2"])  # warm up
    times: dict[str, list] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, cfg in runs.items():
            times[name].append(_timed_extract(cfg))
    best = {name: np.min(t, axis=0) for name, t in times.items()}
    two, every, states = (
        best["layer 2"],
        best["all layers"],
        best["all layers, hidden_states"],
    )
    speed = open_cache(runs["all layers"].out).meta["throughput"]
    mfu = json.loads(speed)
    return [
        (
            "ratio layer 2 / all layers, batch loop (<= 0.55)",
            f"{two[1] / every[1]:.3f}",
            "",
        ),
        ("ratio layer 2 / all layers, end to end", f"{two[0] / every[0]:.3f}", ""),
        (
            "ratio layer 2 / all layers, CPU time end to end",
            f"{two[2] / every[2]:.3f}",
            "",
        ),
        (
            "ratio all layers hooks / hidden_states, batch loop",
            f"{every[1] / states[1]:.3f}",
            "",
        ),
        (
            "  seconds layer 2, all layers: batches 2..last",
            f"{two[1]:.2f}",
            f"{every[1]:.2f}",
        ),
        (
            "  all layers: tokens/s, MFU (last run)",
            f"{mfu['tokens_per_s']:,.0f}",
            f"{mfu['mfu']:.1%}",
        ),
    ]


def bench_extract(
    task_file: Path, t_task: float, batch_size: int, repeats: int
) -> list[tuple]:
    """Time extract() and the bare forward over the same batches."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    source = resolve_model("minilm")
    # the same rows as the task file, so both sides start from the texts
    task = load_task(str(task_file))
    rows = len(task)
    prompts = format_prompts(task, "{text}")
    tokenizer = AutoTokenizer.from_pretrained(source)
    tokens = tokenizer(prompts)["input_ids"]
    lengths = np.asarray([len(t) for t in tokens])
    order, bounds = _plan(lengths, batch_size)
    model = AutoModel.from_pretrained(source, dtype=torch.float32).eval()
    params = inspect.signature(model.forward).parameters
    batcher = _Batcher(tokens, tokenizer.pad_token_id, "right", "cpu", params)
    batches = [
        batcher(order[bounds[b] : bounds[b + 1]]) for b in range(len(bounds) - 1)
    ]

    def bare() -> tuple[float, float, float]:
        """Wall seconds for all batches and for all but the first; CPU seconds."""
        with torch.inference_mode():
            cpu, start = time.process_time(), time.perf_counter()
            model(**batches[0], output_hidden_states=True)
            first = time.perf_counter()
            for batch in batches[1:]:
                model(**batch, output_hidden_states=True)
            end = time.perf_counter()
        return end - start, end - first, time.process_time() - cpu

    def cached() -> tuple[float, float, float]:
        """Wall seconds for extract() end to end and from the first batch committed
        to the last (the same batches as bare's second number); CPU seconds."""
        cfg = ExtractConfig(
            model="minilm",
            task=str(task_file),
            position="mean",
            batch_size=batch_size,
            out=task_file.parent / "bench.h5",
            overwrite=True,
            quiet=True,
        )
        return _timed_extract(cfg)

    bare()  # warm up
    times_bare, times_cached = [], []
    for _ in range(repeats):
        times_bare.append(bare())
        times_cached.append(cached())
    t_bare, t_bare_loop, cpu_bare = np.min(times_bare, axis=0)
    t_cached, t_cached_loop, cpu_cached = np.min(times_cached, axis=0)
    n_tok = int(lengths.sum())
    return [
        (
            "MiniLM bare forward (rows/s, tok/s)",
            f"{rows / t_bare:,.0f}",
            f"{n_tok / t_bare:,.0f}",
        ),
        (
            "MiniLM extract() to HDF5 (rows/s, tok/s)",
            f"{rows / t_cached:,.0f}",
            f"{n_tok / t_cached:,.0f}",
        ),
        ("ratio extract / bare, end to end (>= 0.90)", f"{t_bare / t_cached:.3f}", ""),
        (
            "ratio extract / bare, batch loop (>= 0.90)",
            f"{t_bare_loop / t_cached_loop:.3f}",
            "",
        ),
        (
            "ratio extract / bare, CPU time end to end",
            f"{cpu_bare / cpu_cached:.3f}",
            "",
        ),
        ("  seconds bare, extract: end to end", f"{t_bare:.2f}", f"{t_cached:.2f}"),
        (
            "  CPU seconds bare, extract: end to end",
            f"{cpu_bare:.2f}",
            f"{cpu_cached:.2f}",
        ),
        (
            "  seconds bare, extract: batches 2..last",
            f"{t_bare_loop:.2f}",
            f"{t_cached_loop:.2f}",
        ),
        ("  fixed cost: build the cities task (s)", f"{t_task:.2f}", ""),
    ]


def bench_read(n: int, d: int, repeats: int, folder: Path) -> list[tuple]:
    """Time reading one layer of an (n, d) float16 cache, and random gathers."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, d)).astype(np.float16)
    path = folder / "read.h5"
    batch = 256
    order = np.arange(n)
    bounds = np.append(np.arange(0, n, batch), n)
    store.create_cache(
        path,
        attrs={
            "task": "bench",
            "task_fingerprint": "",
            "dtype": "float16",
            "n_blocks": 6,
        },
        ids=[f"r{i}" for i in range(n)],
        texts=[""] * n,
        labels=np.arange(n) % 2,
        n_chars=np.zeros(n),
        n_tokens=np.zeros(n),
        extra={},
        layers=[6],
        d=d,
        dtype="float16",
        order=order,
        bounds=bounds,
    )
    start = time.perf_counter()
    writer = store.Writer(path, [6])
    for b in range(len(bounds) - 1):
        rows = order[bounds[b] : bounds[b + 1]]
        writer.put(b, rows, x[rows][None])
    writer.close(complete=True)
    t_write = time.perf_counter() - start
    cache = open_cache(path)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        y = cache.features(6)
        times.append(time.perf_counter() - start)
    assert np.array_equal(y, x)
    t_read = min(times)
    mb = x.nbytes / 1e6
    pick = np.sort(rng.permutation(n)[: n // 2])
    start = time.perf_counter()
    cache.features(6)[pick]
    t_numpy = time.perf_counter() - start
    with h5py.File(path) as f:
        start = time.perf_counter()
        f["features/layer_06"][pick]
        t_fancy = time.perf_counter() - start
    return [
        (
            f"write {n:,} x {d} float16 rows via Writer (s, MB/s)",
            f"{t_write:.3f}",
            f"{mb / t_write:,.0f}",
        ),
        (
            f"read one layer {n:,} x {d} float16 (ms, MB/s)",
            f"{t_read * 1e3:.1f}",
            f"{mb / t_read:,.0f}",
        ),
        ("gather half the rows: numpy after read (ms)", f"{t_numpy * 1e3:.1f}", ""),
        ("gather half the rows: HDF5 fancy index (ms)", f"{t_fancy * 1e3:.1f}", ""),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller, ~1.5 min")
    parser.add_argument("--rows", type=int, help="cities rows for the extraction bench")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, help="timings per measurement (best of)")
    parser.add_argument(
        "--threads", type=int, help="torch CPU threads (default: torch's own choice)"
    )
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    rows = args.rows or (1000 if args.quick else 3000)
    repeats = args.repeats or (2 if args.quick else 3)
    with tempfile.TemporaryDirectory() as tmp:
        task_file, t_task = _write_task_file(rows, Path(tmp))
        table = bench_extract(task_file, t_task, args.batch_size, repeats)
        table += bench_layers(task_file, args.batch_size, repeats)
        table += bench_read(20000, 384, 5, Path(tmp))
    width = max(len(r[0]) for r in table)
    print(f"{'measure':<{width}}  {'value':>10}  {'value':>10}")
    for name, a, b in table:
        print(f"{name:<{width}}  {a:>10}  {b:>10}")


if __name__ == "__main__":
    main()
