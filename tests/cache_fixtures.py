"""Tiny models and task files for the activation_cache tests (no downloads).

Use them from a test module with ``pytest_plugins = ["cache_fixtures"]``; the helper
functions are fixtures too (``write_cache``, ``save_model``, ``jsonl``), so test modules
never import this module themselves.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

TEXTS = [
    "a",
    "The city of Paris is in France.",
    "hello there",
    "seventy-three is larger than forty-one.",
    "ok",
    "A much longer sentence, with punctuation; and more words to pad the batch out.",
    "xyz",
    "I would describe my day in one word: great.",
    "mid length text here",
    "b c d e f g",
    "short one",
    "The quick brown fox jumps over the lazy dog.",
]


def make_byte_tokenizer(*, bos: bool, pad: bool):
    """A byte-level BPE tokenizer with no merges (one token per byte), built in memory.

    Args:
        bos: prepend a ``<bos>`` token to every text (as Llama does).
        pad: define a ``<pad>`` token (GPT2-style tokenizers have none).

    Returns:
        A `transformers.PreTrainedTokenizerFast` with a 259-token vocabulary.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {ch: i for i, ch in enumerate(alphabet)}
    specials = ["<bos>", "<eos>", "<pad>"]
    for s in specials:
        vocab[s] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    if bos:
        tok.post_processor = processors.TemplateProcessing(
            single="<bos> $A", special_tokens=[("<bos>", vocab["<bos>"])]
        )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>" if pad else None,
    )


def save_tiny_model(kind: str, folder: Path, *, dtype: str = "float32") -> Path:
    """Save a random tiny decoder (2 blocks, width 64) and its tokenizer to a folder.

    Args:
        kind: ``gpt2``, ``llama`` or ``gpt_neox``.
        folder: where to save.
        dtype: weight dtype to save in.

    Returns:
        ``folder``.
    """
    import torch
    from transformers import (
        GPT2Config,
        GPT2Model,
        GPTNeoXConfig,
        GPTNeoXModel,
        LlamaConfig,
        LlamaModel,
    )

    torch.manual_seed(0)
    common = {"vocab_size": 259, "bos_token_id": 256, "eos_token_id": 257}
    if kind == "gpt2":
        config = GPT2Config(n_embd=64, n_layer=2, n_head=4, n_positions=256, **common)
        model, tokenizer = GPT2Model(config), make_byte_tokenizer(bos=False, pad=False)
    elif kind == "llama":
        config = LlamaConfig(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=256,
            **common,
        )
        model, tokenizer = LlamaModel(config), make_byte_tokenizer(bos=True, pad=True)
    elif kind == "gpt_neox":
        config = GPTNeoXConfig(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=256,
            **common,
        )
        model, tokenizer = (
            GPTNeoXModel(config),
            make_byte_tokenizer(bos=False, pad=True),
        )
    else:
        raise ValueError(kind)
    model.to(getattr(torch, dtype)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    """Write rows as JSON lines and return the path."""
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    """Folders of the tiny gpt2, llama and gpt_neox models."""
    root = tmp_path_factory.mktemp("tiny_models")
    return {k: save_tiny_model(k, root / k) for k in ("gpt2", "llama", "gpt_neox")}


@pytest.fixture(scope="session")
def text_task(tmp_path_factory) -> Path:
    """A 12-row JSONL task of varied lengths, with a ``hint`` extra column."""
    path = tmp_path_factory.mktemp("tasks") / "texts.jsonl"
    rows = [
        {"text": t, "label": i % 2, "hint": "true" if i % 3 else "false"}
        for i, t in enumerate(TEXTS)
    ]
    return write_jsonl(path, rows)


def write_cache_file(
    path: Path,
    ids: list[str],
    features: dict[int, np.ndarray],
    *,
    labels: np.ndarray | None = None,
    batch_size: int = 4,
    batches: int | None = None,
) -> Path:
    """Write a cache file with given features through the store API (no model).

    Args:
        path: file to create.
        ids: (n,) example ids.
        features: layer -> (n, d) float array (all the same dtype).
        labels: (n,) labels (default: alternating 0/1).
        batch_size: rows per batch of the plan.
        batches: write only this many batches (a partial file); default all.

    Returns:
        ``path``.
    """
    from activation_cache import store

    n = len(ids)
    layers = sorted(features)
    first = features[layers[0]]
    labels = np.arange(n) % 2 if labels is None else labels
    order = np.arange(n)[::-1].copy()
    bounds = np.append(np.arange(0, n, batch_size), n)
    store.create_cache(
        path,
        attrs={
            "task": "synthetic",
            "task_fingerprint": "sha256:test",
            "dtype": first.dtype.name,
            "n_blocks": max(layers),
            "model": "none",
        },
        ids=ids,
        texts=[f"text {i}" for i in ids],
        labels=labels,
        n_chars=np.full(n, 6),
        n_tokens=np.full(n, 2),
        extra={"hint": ["h"] * n},
        layers=layers,
        d=first.shape[1],
        dtype=first.dtype.name,
        order=order,
        bounds=bounds,
    )
    writer = store.Writer(path, layers)
    total = len(bounds) - 1 if batches is None else batches
    for b in range(total):
        rows = order[bounds[b] : bounds[b + 1]]
        writer.put(b, rows, np.stack([features[layer][rows] for layer in layers]))
    writer.close(complete=batches is None)
    return path


@pytest.fixture
def write_cache():
    """`write_cache_file`: a cache file from given features, without a model."""
    return write_cache_file


@pytest.fixture
def save_model():
    """`save_tiny_model`: save a tiny random decoder to a folder."""
    return save_tiny_model


@pytest.fixture
def jsonl():
    """`write_jsonl`: write rows to a JSONL file."""
    return write_jsonl
