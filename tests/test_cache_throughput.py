"""Throughput and MFU: the arithmetic, the parameter count, the peak rate, and what
an extraction prints, stores and `probe-lab info` shows."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from activation_cache import ExtractConfig, cli, extract, open_cache
from activation_cache.capture import find_blocks
from activation_cache.throughput import (
    Throughput,
    documented_rate,
    matrix_parameters,
    measure_matmul_rate,
    peak_flops,
)

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

pytest_plugins = ["cache_fixtures"]


def test_throughput_arithmetic_round_trip_and_combine():
    t = Throughput(
        rows=100,
        tokens=5000,
        seconds=2.0,
        params=1_000_000,
        peak_flops=1e11,
        peak_source="measured: cpu",
    )
    assert t.rows_per_s == 50 and t.tokens_per_s == 2500
    assert t.model_flops_per_s == 2 * 1_000_000 * 2500  # 5e9
    assert t.mfu == pytest.approx(0.05)
    assert "50.0 rows/s, 2,500 tokens/s, MFU 5.0% (5.00 GFLOP/s of 100.00" in (
        t.summary()
    )
    back = Throughput.from_json(t.to_json())
    assert back == t and json.loads(t.to_json())["mfu"] == pytest.approx(0.05)
    other = Throughput(
        rows=50,
        tokens=3000,
        seconds=4.0,
        params=1_000_000,
        peak_flops=1e11,
        peak_source="measured: cpu",
    )
    both = Throughput.combine([t, other])
    assert (both.rows, both.tokens, both.seconds, both.devices) == (150, 8000, 4.0, 2)
    assert both.tokens_per_s == 2000 and both.peak_flops == 2e11
    assert both.mfu == pytest.approx(2 * 1e6 * 2000 / 2e11)
    assert Throughput(**{**vars(t), "seconds": 0.0}).mfu == 0.0


def test_documented_rates_match_gpu_names():
    assert documented_rate("NVIDIA H100 80GB HBM3", "bfloat16") == 989e12
    assert documented_rate("NVIDIA H100 PCIe", "float16") == 756e12
    assert documented_rate("NVIDIA H200", "bfloat16") == 989e12
    assert documented_rate("NVIDIA A100-SXM4-80GB", "float32") == 19.5e12
    assert documented_rate("NVIDIA L4", "bfloat16") == 121e12
    assert documented_rate("NVIDIA L40S", "bfloat16") == 362e12
    assert documented_rate("Tesla V100-SXM2-16GB", "bfloat16") is None
    assert documented_rate("NVIDIA A10G", "float16") is None
    assert documented_rate("NVIDIA GeForce RTX 4090", "float16") is None


def test_matrix_parameters_count_the_blocks_that_run(tiny_models):
    model = transformers.AutoModel.from_pretrained(tiny_models["gpt2"])
    _, blocks = find_blocks(model, 2)
    per_block = sum(p.numel() for p in blocks[0].parameters())
    assert matrix_parameters(model, blocks, 1) == per_block
    tables = model.wte.weight.numel() + model.wpe.weight.numel()
    total = sum(p.numel() for p in model.parameters())
    assert matrix_parameters(model, blocks, 2) == total - tables
    assert matrix_parameters(model, None, 0) == total - tables
    assert total - tables == 2 * per_block + 2 * 64  # + the final norm


def test_measured_peak_on_cpu():
    rate, size = measure_matmul_rate("cpu", torch.float32, target_s=0.001)
    assert rate > 1e8 and size >= 256
    rate, source = peak_flops("cpu", torch.float32)
    assert rate > 1e8
    assert source.startswith("measured: cpu, ") and "float32 matmul" in source


def _parser():
    parser = argparse.ArgumentParser(prog="probe-lab")
    cli.register(parser.add_subparsers(dest="command", required=True))
    return parser


def test_extraction_prints_stores_and_shows_throughput(
    tiny_models, text_task, tmp_path, capsys
):
    cfg = ExtractConfig(
        model=str(tiny_models["llama"]),
        task=str(text_task),
        out=tmp_path / "t.h5",
        layers="1",
        batch_size=5,
    )
    cache = open_cache(extract(cfg))
    printed = capsys.readouterr().out
    assert "throughput: " in printed and " tokens/s, MFU " in printed
    speed = Throughput.from_json(cache.meta["throughput"])
    assert speed.rows == 12 and speed.tokens == int(np.sum(cache.n_tokens))
    assert speed.seconds > 0 and 0 < speed.mfu < 1
    model = transformers.AutoModel.from_pretrained(tiny_models["llama"])
    one_block = sum(p.numel() for p in model.layers[0].parameters())
    assert speed.params == one_block  # layer 1: the forward stops after block 0
    assert speed.peak_source.startswith("measured: cpu")
    args = _parser().parse_args(["info", str(cfg.out)])
    assert args.func(args) == 0
    shown = capsys.readouterr().out
    assert "speed     " in shown and "tokens/s, MFU" in shown
    assert "(12 rows, " in shown and "capture   hooks" in shown
