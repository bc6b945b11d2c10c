"""Each ladder rung's probe ceiling on a few suite tasks (the task cards' method).

Run: ``python benchmarks/ladder_cards.py [--tasks larger_than safety] [--rows 1000]``.

Per task and rung, at ``--rows`` rows (seed 0): extract every hidden state at the
rung's recommended position (``mean``; ``--position last`` for the last token) into
``runs/ladder_cards/`` (reused if complete), then exactly as
``benchmarks/task_cards.py``: a 60/20/20 split, L-BFGS logistic probes at each L2 on
every layer, the layer and L2 chosen by validation accuracy, test accuracy reported
(``ceiling``). Prints the ceiling, its layer and the extraction time per rung, so a
rung that is larger but not stronger on a task shows as such.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from task_cards import _fit, _splits

from activation_cache import TASK_INFO, ExtractConfig, extract, models, open_cache


def ceiling(
    task: str, rung: str, rows: int, folder: Path, l2, position: str | None = None
) -> dict:
    """Extract one rung on one task (timed unless reused) and fit every layer."""
    size = min(rows, TASK_INFO[task].largest)
    position = position or models.LADDER[rung].position
    path = folder / f"{task}-{size}-{rung}-{position}.h5"
    reused = path.exists() and open_cache(path, allow_partial=True).complete
    start = time.perf_counter()
    extract(
        ExtractConfig(
            model=rung,
            task=task,
            size=size,
            layers="all",
            position=position,
            out=path,
            quiet=True,
        )
    )
    seconds = None if reused else time.perf_counter() - start
    with open_cache(path) as cache:
        y, splits = cache.labels, _splits(cache.n)
        fits = {k: _fit(cache.features(k), y, splits, l2) for k in cache.layers}
    best = max(fits, key=lambda k: (fits[k]["val"], k))
    return {"ceiling": fits[best]["test"], "layer": best, "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", nargs="*", default=["larger_than", "safety"])
    parser.add_argument("--rungs", nargs="*", default=list(models.LADDER))
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument(
        "--l2", type=float, nargs="*", default=[1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0]
    )
    parser.add_argument("--folder", type=Path, default=Path("runs/ladder_cards"))
    parser.add_argument(
        "--position", help="pool every rung at this position (default: each rung's)"
    )
    args = parser.parse_args()
    args.folder.mkdir(parents=True, exist_ok=True)
    print(f"{'task':<14} {'rung':<10} {'ceiling':>7} {'layer':>5} {'extract s':>9}")
    for task in args.tasks:
        for rung in args.rungs:
            r = ceiling(
                task, rung, args.rows, args.folder, tuple(args.l2), args.position
            )
            took = "reused" if r["seconds"] is None else f"{r['seconds']:.1f}"
            print(
                f"{task:<14} {rung:<10} {100 * r['ceiling']:>6.1f}% {r['layer']:>5} "
                f"{took:>9}",
                flush=True,
            )


if __name__ == "__main__":
    main()
