"""Time the ladder's rungs: preparation, the sha256 check before each use, and
extraction of a few hundred rows of one suite task on each rung.

    python benchmarks/bench_ladder.py [--rows 300] [--task cities] [--threads 2]

Every rung is prepared into a fresh temporary models folder (so the preparation is
timed from the packages), then extracted twice into fresh files: the second run's
preparation is the reuse path (the sha256 check alone). Rungs whose packages are
missing are listed with their install command and skipped.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path


def bench_rung(name: str, task: str, rows: int, work: Path) -> dict:
    """Prepare one rung, check it, and extract ``rows`` rows of ``task`` on it."""
    from activation_cache import ExtractConfig, extract, models, open_cache
    from activation_cache.throughput import Throughput

    rung = models.LADDER[name]
    start = time.perf_counter()
    folder = models.prepare(rung, work / "models")
    prepare_s = time.perf_counter() - start
    start = time.perf_counter()
    models.prepare(rung, work / "models")  # reuse: the pins checked, nothing made
    check_s = time.perf_counter() - start
    os.environ["PROBE_LAB_MODELS"] = str(work / "models")
    config = ExtractConfig(
        model=name,
        task=task,
        size=rows,
        layers="all",
        position=rung.position,
        out=work / f"{name}.h5",
        quiet=True,
    )
    start = time.perf_counter()
    path = extract(config)
    wall = time.perf_counter() - start
    with open_cache(path) as cache:
        speed = Throughput.from_json(cache.meta["throughput"])
        d, layers = cache.d, len(cache.layers)
    size = sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
    return {
        "name": name,
        "prepare_s": prepare_s,
        "check_s": check_s,
        "prepared_mb": size / 2**20,
        "wall_s": wall,
        "rows_s": speed.rows_per_s,
        "tokens_s": speed.tokens_per_s,
        "d": d,
        "layers": layers,
        "position": rung.position,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=300)
    parser.add_argument("--task", default="cities")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rungs", default="minilm-l3,minilm,mpnet,smollm2")
    args = parser.parse_args()
    import torch

    from activation_cache import models

    torch.set_num_threads(args.threads)
    print(
        f"{'rung':<10} {'prepare s':>9} {'check s':>7} {'MB':>5} {'extract s':>9} "
        f"{'rows/s':>7} {'tok/s':>7} {'d':>4} {'layers':>6} pos"
    )
    for name in args.rungs.split(","):
        rung = models.LADDER[name]
        if models.missing_packages(rung):
            print(f"{name:<10} skipped: {models.install_command(rung)}")
            continue
        with tempfile.TemporaryDirectory() as tmp:
            r = bench_rung(name, args.task, args.rows, Path(tmp))
        print(
            f"{name:<10} {r['prepare_s']:>9.1f} {r['check_s']:>7.2f} "
            f"{r['prepared_mb']:>5.0f} {r['wall_s']:>9.1f} {r['rows_s']:>7.1f} "
            f"{r['tokens_s']:>7.0f} {r['d']:>4} {r['layers']:>6} {r['position']}"
        )
    print(
        f"{args.rows} rows of {args.task}, all layers, float16 cache, batch 32, "
        f"{args.threads} torch threads; prepare: from the packages into a fresh "
        "folder (minilm: as packaged); check: the sha256 pins before each use"
    )


if __name__ == "__main__":
    main()
