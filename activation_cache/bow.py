"""A bag-of-words "model": hashed word and bigram counts, written as a cache file.

``probe-lab extract --model bow`` writes, for any task, one feature layer (index 0)
of ``BOW_DIM`` hashed counts of the prompt's lowercased words and punctuation marks
and of its adjacent pairs, in the same file format as a transformer's cache: the same
ids (so it joins a MiniLM cache), fingerprints, plan, resume and refusal of changed
settings. A probe on it is a genuinely different, weaker model than a transformer's
residual stream: a weak supervisor that knows surface words only.

Needs only numpy and h5py (no torch).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from activation_cache import store
from activation_cache.output import (
    check_existing,
    check_free_space,
    lock_output,
    remove_output,
)
from activation_cache.settings import (
    ExtractConfig,
    ExtractError,
    distributed,
    say,
    sha256_rows,
    versions,
)
from activation_cache.tasks import Task, format_prompts, load_task, task_fingerprint

__all__ = ["BOW_DIM", "extract_bow", "featurize", "tokenize"]

BOW_DIM = 4096
"""Hashed features: unigrams and bigrams share the ``BOW_DIM`` buckets."""
_TOKEN = re.compile(r"\w+|[^\w\s]")
_FEATURIZER = (
    f"bow-v1: lowercased \\w+|[^\\w\\s] tokens, unigrams+bigrams, blake2b mod {BOW_DIM}"
)


def tokenize(text: str) -> list[str]:
    """Lowercased words and single punctuation marks of ``text``."""
    return _TOKEN.findall(text.lower())


def _bucket(gram: str, cache: dict[str, int]) -> int:
    if gram not in cache:
        digest = hashlib.blake2b(gram.encode("utf-8"), digest_size=8).digest()
        cache[gram] = int.from_bytes(digest, "little") % BOW_DIM
    return cache[gram]


def _row_buckets(text: str, cache: dict[str, int]) -> list[int]:
    """Bucket of each unigram, then of each adjacent pair, of one text."""
    tokens = tokenize(text)
    grams = [*tokens, *(f"{a} {b}" for a, b in itertools.pairwise(tokens))]
    return [_bucket(g, cache) for g in grams]


def featurize(texts: Sequence[str]) -> np.ndarray:
    """Hashed unigram and bigram counts.

    Args:
        texts: (n,) texts.

    Returns:
        (n, BOW_DIM) float32 counts.
    """
    cache: dict[str, int] = {}
    out = np.zeros((len(texts), BOW_DIM), dtype=np.float32)
    for i, text in enumerate(texts):
        np.add.at(out[i], _row_buckets(text, cache), 1.0)
    return out


def extract_bow(
    config: ExtractConfig, *, on_batch: Callable[[int, int], None] | None = None
) -> Path:
    """Write (or resume) a bag-of-words cache of a task: `extract` for ``bow``.

    Args:
        config: the extraction; ``model`` is ``"bow"``, ``layers`` must be ``all``,
            0 or -1 (the one layer), and ``position`` is ignored (recorded as
            ``bag``).
        on_batch: called after each batch is committed, with (batches done, total).

    Returns:
        The path of the complete cache file.
    """
    _, world, _ = distributed()
    if world > 1:
        raise ExtractError(
            "--model bow runs in one process (it needs no accelerator); run it "
            "without torchrun"
        )
    if config.layers != "all" and set(config.layers) - {0, -1}:
        raise ExtractError(
            f"the bow model has one layer, 0; got layers {list(config.layers)}: use "
            "--layers all (or 0)"
        )
    out = Path(config.out)
    task = load_task(config.task, size=config.size, seed=config.seed)
    prompts = format_prompts(task, config.template)
    cache: dict[str, int] = {}
    buckets = [_row_buckets(p, cache) for p in prompts]
    n_tokens = np.asarray([len(tokenize(p)) for p in prompts], dtype=np.int64)
    if (n_tokens == 0).any():
        raise ExtractError(
            f"row {task.ids[int(np.argmin(n_tokens))]!r} has no words; give every "
            "row a non-empty text"
        )
    attrs = _bow_attrs(config, task, prompts, buckets)
    with lock_output(out):
        if config.overwrite:
            remove_output(out)
        bounds = np.append(np.arange(0, len(task), config.batch_size), len(task))
        done = 0
        if out.exists():
            if check_existing(out, attrs) == "complete":
                say(config, 0, f"{out} is already complete; nothing to do")
                return out
            _, done = store.read_state(out)
            say(config, 0, f"resuming {out} after {done} of {bounds.size - 1} batches")
        else:
            _create_bow_file(config, task, prompts, attrs, n_tokens, bounds)
        start = time.perf_counter()
        _write_batches(out, buckets, bounds, done, config.dtype, on_batch)
    say(
        config,
        0,
        f"bow features of {len(task)} rows in {time.perf_counter() - start:.1f} s",
    )
    return out


def _bow_attrs(
    config: ExtractConfig, task: Task, prompts: list[str], buckets: list[list[int]]
) -> dict:
    """The bow cache file's attributes (the transformer ones, for the one layer)."""
    return {
        "model": "bow",
        "model_path": "",
        "model_revision": "",
        "weights_sha256": _FEATURIZER,
        "model_type": "bag-of-words",
        "n_blocks": 0,
        "tokenizer": _FEATURIZER,
        "tokenizer_class": "bow",
        "task": task.name,
        "task_size": len(task),
        "task_seed": config.seed,
        "task_fingerprint": task.fingerprint,
        "prompt_fingerprint": task_fingerprint(prompts, task.labels),
        "tokens_fingerprint": sha256_rows(buckets),
        "template": config.template,
        "position": "bag",
        "layers": [0],
        "dtype": config.dtype,
        "batch_size": config.batch_size,
        "max_length": 0,
        "n_truncated": 0,
        "padding_side": config.padding_side,
        "model_dtype": config.model_dtype,
        "autocast": config.autocast,
        "device_type": "cpu",
        "versions": versions(),
        "config": json.dumps({k: str(v) for k, v in asdict(config).items()}),
    }


def _create_bow_file(
    config: ExtractConfig,
    task: Task,
    prompts: list[str],
    attrs: dict,
    n_tokens: np.ndarray,
    bounds: np.ndarray,
) -> None:
    """Create the empty bow cache file (rows in task order), if its disk holds it."""
    out = Path(config.out)
    check_free_space(out, len(task), 1, BOW_DIM, config.dtype)
    store.create_cache(
        out,
        attrs={
            **attrs,
            "hidden_size": BOW_DIM,
            "last_layer_post_final_norm": "n/a (bag of words)",
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
        },
        ids=task.ids,
        texts=task.texts,
        labels=task.labels,
        n_chars=np.asarray([len(p) for p in prompts]),
        n_tokens=n_tokens,
        extra=task.extra,
        layers=[0],
        d=BOW_DIM,
        dtype=config.dtype,
        order=np.arange(len(task), dtype=np.int64),
        bounds=bounds,
    )


def _write_batches(
    out: Path,
    buckets: list[list[int]],
    bounds: np.ndarray,
    done: int,
    dtype: str,
    on_batch: Callable[[int, int], None] | None,
) -> None:
    """Count and write the batches after ``done``, then mark the file complete."""
    writer = store.Writer(out, [0], on_batch=on_batch)
    complete = False
    try:
        for b in range(done, bounds.size - 1):
            rows = np.arange(bounds[b], bounds[b + 1])
            x = np.zeros((rows.size, BOW_DIM), dtype=np.float32)
            for j, r in enumerate(rows):
                np.add.at(x[j], buckets[r], 1.0)
            writer.put(b, rows, x.astype(dtype)[None])
        complete = True
    finally:
        writer.close(complete=complete)
