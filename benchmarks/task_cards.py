"""Measure every built-in task's card numbers on MiniLM and a bag of words.

Run: ``python benchmarks/task_cards.py [--rows 4000] [--write]`` (about 10 minutes
on 2 idle CPU cores: most of it is extracting the suite with MiniLM; caches already
complete in the folder are reused, and their extraction time is then not measured).
``--write`` stores the numbers in ``activation_cache/suite/cards.json``, which
``probe-lab tasks`` and ``docs/tasks.md`` show.

Per task, at ``--rows`` rows (the largest size if smaller), seed 0:

1. extract MiniLM (all 7 hidden states, mean position, float16) and the
   bag-of-words model (``--model bow``) into ``runs/task_cards/`` (reused if
   complete), timing the MiniLM extraction (wall and this process's CPU time): the
   sums are the suite's extraction time;
2. split the rows 60/20/20 into train, validation and test (a seeded permutation);
3. train L-BFGS logistic probes (``TrainConfig(solver="lbfgs")``, standardized
   features) at L2 strengths ``--l2`` on every MiniLM layer and on the bag of words,
   choose the L2 (and for MiniLM the layer) by validation accuracy, and report test
   accuracy: ``bow_acc`` and ``ceiling`` (at ``best_layer``);
4. report each rule field's accuracy against the labels on all rows, and test
   accuracies per ``kind``/``family`` group where the task has one.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from activation_cache import (
    TASK_INFO,
    TASKS,
    ExtractConfig,
    extract,
    open_cache,
)
from activation_cache.models import LADDER
from probe_lab import TrainConfig, train_probes

CARDS = Path(__file__).resolve().parents[1] / "activation_cache/suite/cards.json"


def _splits(n: int) -> dict[str, np.ndarray]:
    order = np.random.default_rng(0).permutation(n)
    cut = [int(0.6 * n), int(0.8 * n)]
    masks = {}
    for name, rows in zip(("train", "val", "test"), np.split(order, cut), strict=True):
        mask = np.zeros(n, dtype=bool)
        mask[rows] = True
        masks[name] = mask
    return masks


def _fit(x: np.ndarray, y: np.ndarray, splits, l2: tuple[float, ...]) -> dict:
    """Probes at every L2; the one with the best validation accuracy."""
    targets = np.tile(y.astype(np.float32), (len(l2), 1))
    probes = train_probes(
        x,
        targets,
        train_rows=splits["train"],
        config=TrainConfig(solver="lbfgs", l2=l2, lbfgs_max_iter=200),
    )
    pred = np.asarray(probes.predict(x))
    val = (pred[:, splits["val"]] == y[splits["val"]]).mean(1)
    best = int(np.argmax(val))
    return {
        "val": float(val[best]),
        "test": float((pred[best, splits["test"]] == y[splits["test"]]).mean()),
        "l2": l2[best],
        "pred": pred[best],
    }


def _groups(cache, pred: np.ndarray, test: np.ndarray) -> dict[str, float]:
    for field in ("kind", "family"):
        if field in cache.extra:
            g = np.asarray(cache.extra[field]).astype(str)
            return {
                k: float(
                    (pred[test & (g == k)] == cache.labels[test & (g == k)]).mean()
                )
                for k in sorted(set(g))
            }
    return {}


def measure(name: str, rows: int, folder: Path, l2: tuple[float, ...]) -> dict:
    size = min(rows, TASK_INFO[name].largest)
    paths = {m: folder / f"{name}-{size}-{m}.h5" for m in ("minilm", "bow")}
    seconds: dict[str, float | None] = {}
    cpu: dict[str, float | None] = {}
    for model, path in paths.items():
        reused = path.exists() and open_cache(path, allow_partial=True).complete
        start, start_cpu = time.perf_counter(), time.process_time()
        extract(
            ExtractConfig(
                model=model,
                task=name,
                size=size,
                layers="all",
                position="mean",
                out=path,
                quiet=True,
            )
        )
        # a cache complete before this run was not extracted now: no timing
        seconds[model] = None if reused else time.perf_counter() - start
        cpu[model] = None if reused else time.process_time() - start_cpu
    minilm, bow = open_cache(paths["minilm"]), open_cache(paths["bow"])
    assert (minilm.ids == bow.ids).all()
    y = minilm.labels
    splits = _splits(minilm.n)
    bow_fit = _fit(bow.features(0), y, splits, l2)
    layers = {
        layer: _fit(minilm.features(layer), y, splits, l2) for layer in minilm.layers
    }
    best = max(layers, key=lambda k: (layers[k]["val"], k))
    rules = {
        f: float((np.asarray(minilm.extra[f]).astype(int) == y).mean())
        for f in TASK_INFO[name].rules
    }
    return {
        "rows": int(minilm.n),
        "bow_acc": bow_fit["test"],
        "bow_l2": bow_fit["l2"],
        "best_layer": int(best),
        "ceiling": layers[best]["test"],
        "ceiling_l2": layers[best]["l2"],
        "layer_test_acc": {str(k): v["test"] for k, v in layers.items()},
        "rules": rules,
        "groups_bow": _groups(minilm, bow_fit["pred"], splits["test"]),
        "groups_ceiling": _groups(minilm, layers[best]["pred"], splits["test"]),
        "mean_tokens": float(minilm.n_tokens.mean()),
        "extract_minilm_s": seconds["minilm"],
        "extract_minilm_cpu_s": cpu["minilm"],
        "extract_bow_s": seconds["bow"],
    }


def markdown(cards: dict) -> str:
    """The card numbers as a markdown table (docs/tasks.md)."""

    def pct(x: float) -> str:
        return f"{100 * x:.1f}"

    lines = [
        "| task | rows | bag-of-words probe | MiniLM ceiling (layer) | rule fields |"
        " MiniLM extraction |",
        "| --- | ---: | ---: | ---: | --- | ---: |",
    ]
    for name, r in cards["tasks"].items():
        rules = ", ".join(f"`{k}` {pct(v)}" for k, v in r["rules"].items()) or "-"
        lines.append(
            f"| `{name}` | {r['rows']} | {pct(r['bow_acc'])} | {pct(r['ceiling'])} "
            f"({r['best_layer']}) | {rules} | {_seconds(r['extract_minilm_s'])} wall, "
            f"{_seconds(r['extract_minilm_cpu_s'])} CPU |"
        )
    lines.append(
        f"\nSuite extraction on MiniLM ({cards['extract_minilm_timed_tasks']} tasks "
        f"timed): {cards['extract_minilm_total_s']:.0f} s wall, "
        f"{cards['extract_minilm_total_cpu_s']:.0f} s CPU ({cards['machine']})."
    )
    for name, r in cards["tasks"].items():
        if r["groups_bow"]:
            groups = ", ".join(
                f"{g} {pct(r['groups_bow'][g])}/{pct(r['groups_ceiling'][g])}"
                for g in r["groups_bow"]
            )
            lines.append(f"\n`{name}` test accuracy by group (bow/MiniLM): {groups}")
    if "ladder" in cards:
        lines += ["", ladder_markdown(cards)]
    return "\n".join(lines)


def ladder_markdown(cards: dict) -> str:
    """The rung columns (``benchmarks/ladder_cards.py --write``) as a markdown table:
    each rung's ceiling (layer) per task and the suite's extraction time per rung."""
    meta = cards["ladder"]
    lines = [
        "| task | " + " | ".join(f"`{r}` ({LADDER[r].params})" for r in LADDER) + " |",
        "| --- |" + " ---: |" * len(LADDER),
    ]
    for name, card in cards["tasks"].items():
        cells = []
        for rung in LADDER:
            e = card.get("ladder", {}).get(rung)
            cell = "-" if e is None else f"{100 * e['ceiling']:.1f} ({e['layer']})"
            cells.append(cell)
        lines.append(f"| `{name}` | " + " | ".join(cells) + " |")
    totals = meta["rungs"]
    lines.append(
        "| suite extraction | "
        + " | ".join(
            f"{totals[r]['extract_s']:.0f} s wall, {totals[r]['extract_cpu_s']:.0f} s "
            f"CPU ({totals[r]['timed_tasks']} tasks, {totals[r]['rows']} rows)"
            if r in totals and totals[r]["timed_tasks"]
            else "-"
            for r in LADDER
        )
        + " |"
    )
    lines.append(
        f"\nCeilings: probe test accuracy (%) at each rung's best layer (in brackets), "
        f"{meta['rows']} rows per task, mean position; extraction measured on "
        f"{meta['machine']}."
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=4000)
    parser.add_argument("--tasks", nargs="*", default=sorted(TASKS))
    parser.add_argument(
        "--l2", type=float, nargs="*", default=[1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0]
    )
    parser.add_argument("--folder", type=Path, default=Path("runs/task_cards"))
    parser.add_argument("--write", action="store_true", help="update cards.json")
    parser.add_argument(
        "--table", action="store_true", help="print cards.json as markdown and stop"
    )
    args = parser.parse_args()
    if args.table:
        print(markdown(json.loads(CARDS.read_text(encoding="utf-8"))))
        return
    args.folder.mkdir(parents=True, exist_ok=True)
    results = {}
    for name in args.tasks:
        results[name] = measure(name, args.rows, args.folder, tuple(args.l2))
        r = results[name]
        rules = " ".join(f"{k}={v:.3f}" for k, v in r["rules"].items())
        print(
            f"{name:<14} rows {r['rows']:>5}  bow {r['bow_acc']:.3f}  ceiling "
            f"{r['ceiling']:.3f} (layer {r['best_layer']})  {rules}  minilm "
            f"{_seconds(r['extract_minilm_s'])}  bow {_seconds(r['extract_bow_s'])}",
            flush=True,
        )
    print(json.dumps(results, indent=1))
    if args.write:
        saved = json.loads(CARDS.read_text(encoding="utf-8")) if CARDS.exists() else {}
        old = saved.get("tasks", {})
        for name, r in results.items():  # a reused cache keeps its measured timing
            for key in ("extract_minilm_s", "extract_minilm_cpu_s", "extract_bow_s"):
                if r[key] is None:
                    r[key] = old.get(name, {}).get(key)
            if "ladder" in old.get(name, {}):  # benchmarks/ladder_cards.py's columns
                r["ladder"] = old[name]["ladder"]
        results = dict(sorted({**old, **results}.items()))
        timed = [r for r in results.values() if r["extract_minilm_s"] is not None]
        CARDS.write_text(
            json.dumps(
                {
                    "measured_by": "benchmarks/task_cards.py",
                    "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores "
                    "(shared with other jobs)",
                    "extract_minilm_timed_tasks": len(timed),
                    "extract_minilm_total_s": round(
                        sum(r["extract_minilm_s"] for r in timed), 1
                    ),
                    "extract_minilm_total_cpu_s": round(
                        sum(r["extract_minilm_cpu_s"] for r in timed), 1
                    ),
                    "tasks": results,
                    **({"ladder": saved["ladder"]} if "ladder" in saved else {}),
                },
                indent=1,
            )
            + "\n",
            encoding="utf-8",
        )
        print(f"wrote {CARDS}")


def _seconds(value: float | None) -> str:
    return "reused" if value is None else f"{value:.1f} s"


if __name__ == "__main__":
    main()
