"""Each ladder rung's probe ceiling on every suite task, and the suite's extraction
time per rung: the task cards' rung columns.

Run: ``python benchmarks/ladder_cards.py [--tasks ...] [--rungs ...] [--rows 1000]
[--write]``.

Per task and rung, at ``--rows`` rows (the task's largest size if smaller; seed 0):

1. reuse or build the rung's cache exactly as the ``model_ladder`` experiment does
   (``probe_lab.experiments.caches.build_cache``: every hidden state, the rung's
   recommended position, float16, under ``--cache-dir``), so one extraction serves
   both; a cache built now is timed (wall, and the extraction subprocess's CPU
   time), a reused one is not;
2. exactly as ``benchmarks/task_cards.py``: a 60/20/20 split, L-BFGS logistic
   probes at each L2 on every layer, the layer and L2 chosen by validation
   accuracy, test accuracy reported (``ceiling``).

It prints the ceiling, its layer and the extraction time per task and rung, then
the suite's total per rung, so a rung that is larger but not stronger on a task
shows as such. ``--write`` stores them in ``activation_cache/suite/cards.json``
(each task's ``ladder`` entry and the top-level ``ladder`` summary), which
``probe-lab tasks`` and docs/tasks.md show; timings kept from an earlier run where
a cache was reused.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from task_cards import CARDS, _fit, _splits

from activation_cache import TASK_INFO, TASKS, models, open_cache
from probe_lab.experiments.caches import build_cache, is_complete
from probe_lab.experiments.config import CacheSpec


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def ceiling(task: str, rung: str, rows: int, cache_dir: Path, l2) -> dict:
    """Build (timed) or reuse one rung's cache of ``task``; fit every layer."""
    spec = CacheSpec(
        model=rung,
        task=task,
        size=min(rows, TASK_INFO[task].largest),
        position=models.LADDER[rung].position,
        dtype="float16",
    )
    reused = is_complete(cache_dir / spec.filename())
    start, start_cpu = time.perf_counter(), _children_cpu()
    path = build_cache(spec, cache_dir, progress=False)
    seconds = None if reused else time.perf_counter() - start
    cpu = None if reused else _children_cpu() - start_cpu
    with open_cache(path) as cache:
        y, splits = cache.labels, _splits(cache.n)
        fits = {k: _fit(cache.features(k), y, splits, l2) for k in cache.layers}
        n = int(cache.n)
    best = max(fits, key=lambda k: (fits[k]["val"], k))
    return {
        "rows": n,
        "ceiling": fits[best]["test"],
        "layer": int(best),
        "l2": fits[best]["l2"],
        "position": spec.position,
        "extract_s": None if seconds is None else round(seconds, 1),
        "extract_cpu_s": None if cpu is None else round(cpu, 1),
    }


def write(results: dict[str, dict[str, dict]], rows: int) -> None:
    """Merge ``results`` (task -> rung -> numbers) into cards.json."""
    cards = json.loads(CARDS.read_text(encoding="utf-8"))
    for task, rungs in results.items():
        old = cards["tasks"].setdefault(task, {}).get("ladder", {})
        for rung, r in rungs.items():
            for key in ("extract_s", "extract_cpu_s"):  # a reused cache keeps its
                if r[key] is None:  # measured timing
                    r[key] = old.get(rung, {}).get(key)
        cards["tasks"][task]["ladder"] = {**old, **rungs}
    totals = {}
    for rung in models.LADDER:
        entries = [
            t["ladder"][rung]
            for t in cards["tasks"].values()
            if rung in t.get("ladder", {})
        ]
        timed = [e for e in entries if e["extract_s"] is not None]
        totals[rung] = {
            "tasks": len(entries),
            "timed_tasks": len(timed),
            "rows": sum(e["rows"] for e in timed),
            "extract_s": round(sum(e["extract_s"] for e in timed), 1),
            "extract_cpu_s": round(sum(e["extract_cpu_s"] for e in timed), 1),
        }
    cards["ladder"] = {
        "measured_by": "benchmarks/ladder_cards.py",
        "rows": rows,
        "machine": f"{platform.machine()} {_cpu_name()}, {os.cpu_count()} CPU cores",
        "rungs": totals,
    }
    CARDS.write_text(json.dumps(cards, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {CARDS}")


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", nargs="*", default=sorted(TASKS))
    parser.add_argument("--rungs", nargs="*", default=list(models.LADDER))
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument(
        "--l2", type=float, nargs="*", default=[1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0]
    )
    parser.add_argument("--cache-dir", type=Path, default=Path("runs/caches"))
    parser.add_argument("--write", action="store_true", help="update cards.json")
    args = parser.parse_args()
    args.cache_dir.mkdir(parents=True, exist_ok=True)
    print(f"{'task':<14} {'rung':<10} {'ceiling':>7} {'layer':>5} {'extract':>16}")
    results: dict[str, dict[str, dict]] = {}
    for task in args.tasks:
        for rung in args.rungs:
            r = ceiling(task, rung, args.rows, args.cache_dir, tuple(args.l2))
            results.setdefault(task, {})[rung] = r
            took = (
                "reused"
                if r["extract_s"] is None
                else f"{r['extract_s']:.0f} s ({r['extract_cpu_s']:.0f} CPU)"
            )
            print(
                f"{task:<14} {rung:<10} {100 * r['ceiling']:>6.1f}% {r['layer']:>5} "
                f"{took:>16}",
                flush=True,
            )
    for rung in args.rungs:
        timed = [t[rung] for t in results.values() if t[rung]["extract_s"] is not None]
        if timed:
            print(
                f"{rung}: {len(timed)} tasks extracted in "
                f"{sum(e['extract_s'] for e in timed):.0f} s wall, "
                f"{sum(e['extract_cpu_s'] for e in timed):.0f} s CPU"
            )
    if args.write:
        write(results, args.rows)


if __name__ == "__main__":
    main()
