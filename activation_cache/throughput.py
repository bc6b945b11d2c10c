"""Extraction throughput against the hardware: rows/s, tokens/s and model FLOP
utilization (MFU).

MFU = 2 x (matrix parameters the forward runs) x tokens / seconds / peak rate. The
matrix parameters are those outside embedding tables (a lookup costs no
multiply-adds), counted over the blocks that actually run when the forward stops
early; attention's own products are left out, as usual for this estimate, and
tokens are real (padding is counted as waste). The peak rate is a documented dense
rate for known NVIDIA GPUs in the compute dtype, else measured here with a short
timed matmul in that dtype; the file says which.
"""

from __future__ import annotations

import functools
import json
import re
import time
from dataclasses import asdict, dataclass

__all__ = [
    "DOCUMENTED_TFLOPS",
    "Throughput",
    "documented_rate",
    "matrix_parameters",
    "measure_matmul_rate",
    "peak_flops",
]

# Dense (no sparsity) tensor-core rates in TFLOP/s from NVIDIA's data sheets, per
# compute dtype; float32 is the non-tensor-core rate (torch's default float32 matmul
# precision). Patterns are matched against torch.cuda.get_device_name(), in order.
DOCUMENTED_TFLOPS = (
    (r"H100.*PCIe", {"bfloat16": 756.0, "float16": 756.0, "float32": 51.0}),
    (r"H100.*NVL", {"bfloat16": 835.0, "float16": 835.0, "float32": 60.0}),
    (r"H100|H200|GH200", {"bfloat16": 989.0, "float16": 989.0, "float32": 67.0}),
    (r"A100", {"bfloat16": 312.0, "float16": 312.0, "float32": 19.5}),
    (r"L40S", {"bfloat16": 362.0, "float16": 362.0, "float32": 91.6}),
    (r"\bL4\b", {"bfloat16": 121.0, "float16": 121.0, "float32": 30.3}),
    (r"V100", {"float16": 125.0, "float32": 15.7}),
    (r"\bT4\b", {"float16": 65.0, "float32": 8.1}),
)


def documented_rate(gpu: str, dtype: str) -> float | None:
    """A GPU's documented dense matrix rate for a compute dtype.

    Args:
        gpu: the name ``torch.cuda.get_device_name`` gives, e.g. ``NVIDIA H100 PCIe``.
        dtype: ``bfloat16``, ``float16`` or ``float32``.

    Returns:
        FLOP/s, or None for a GPU or dtype not in `DOCUMENTED_TFLOPS`.
    """
    for pattern, rates in DOCUMENTED_TFLOPS:
        if re.search(pattern, gpu):
            return rates[dtype] * 1e12 if dtype in rates else None
    return None


def matrix_parameters(model, blocks, blocks_run: int) -> int:
    """Parameters whose multiply-adds one token costs, for a forward that runs
    ``blocks_run`` of the blocks (all of them: the whole model).

    Args:
        model: the model (parameters may be on the meta device when offloaded).
        blocks: its block list (None: unknown, the whole model runs).
        blocks_run: blocks each forward runs.

    Returns:
        The count, embedding tables left out.
    """
    import torch

    if blocks is not None and blocks_run < len(blocks):
        return sum(p.numel() for b in blocks[:blocks_run] for p in b.parameters())
    tables = {
        id(p)
        for m in model.modules()
        if isinstance(m, torch.nn.Embedding)
        for p in m.parameters()
    }
    return sum(p.numel() for p in model.parameters() if id(p) not in tables)


def measure_matmul_rate(
    device, dtype, *, target_s: float = 0.05, max_size: int = 8192
) -> tuple[float, int]:
    """Time square matmuls on a device and return the best rate.

    The side doubles from 256 until one product takes ``target_s`` (or reaches
    ``max_size``), so a slow dtype (bfloat16 on many CPUs) stays quick to measure
    and a fast device is timed on products long enough to fill it.

    Args:
        device: a torch device.
        dtype: the compute dtype.
        target_s: seconds one timed product should take at least.
        max_size: largest matrix side.

    Returns:
        (FLOP/s of the best of three timed products, the matrix side used).
    """
    import torch

    device = torch.device(device)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        elif device.type == "mps":
            torch.mps.synchronize()

    def best_time(size: int, repeats: int) -> float:
        a = torch.randn(size, size, device=device).to(dtype)
        b = torch.randn(size, size, device=device).to(dtype)
        a @ b  # warm-up
        best = float("inf")
        for _ in range(repeats):
            sync()
            start = time.perf_counter()
            a @ b
            sync()
            best = min(best, time.perf_counter() - start)
        return best

    size = 256
    with torch.inference_mode():
        while best_time(size, 1) < target_s and size < max_size:
            size *= 2
        seconds = best_time(size, 3)
    return 2.0 * size**3 / seconds, size


def peak_flops(device, dtype, *, measure: bool = True) -> tuple[float, str]:
    """The matrix rate to judge MFU against, for one device and compute dtype.

    Args:
        device: a torch device.
        dtype: the compute dtype (the model's, or autocast's).
        measure: measure when no documented rate is known (else return 0.0).

    Returns:
        (FLOP/s, where it came from: ``documented: ...`` or ``measured: ...``).
    """
    import torch

    device = torch.device(device)
    name = str(dtype).removeprefix("torch.")
    if device.type == "cuda":
        gpu = torch.cuda.get_device_name(device)
        rate = documented_rate(gpu, name)
        # TF32 products run faster than the float32 rate the table holds
        tf32 = name == "float32" and torch.backends.cuda.matmul.allow_tf32
        if rate is not None and not tf32:
            return rate, f"documented: {gpu}, {name} dense"
        what = f"{gpu} ({device})"
    else:
        what = device.type
    if not measure:
        return 0.0, "unknown"
    rate, size = _measured_rate(str(device), name)
    return rate, f"measured: {what}, {size}x{size} {name} matmul, best of 3"


@functools.cache
def _measured_rate(device: str, dtype: str) -> tuple[float, int]:
    """`measure_matmul_rate`, once per process for a device and dtype."""
    import torch

    return measure_matmul_rate(device, getattr(torch, dtype))


def _flops(rate: float) -> str:
    if rate >= 1e12:
        return f"{rate / 1e12:,.1f} TFLOP/s"
    return f"{rate / 1e9:,.2f} GFLOP/s"


@dataclass(frozen=True, kw_only=True)
class Throughput:
    """Throughput of one extraction run (the batches it computed)."""

    rows: int
    """Rows the run extracted."""
    tokens: int
    """Real (non-padding) tokens in them."""
    seconds: float
    """Wall time from the first batch to the last one written."""
    params: int
    """Matrix parameters one token runs through (see `matrix_parameters`)."""
    peak_flops: float
    """The hardware's matrix rate in FLOP/s, summed over the devices used."""
    peak_source: str
    """Where ``peak_flops`` came from."""
    devices: int = 1
    """Compute devices the rate is summed over."""

    @property
    def rows_per_s(self) -> float:
        """Rows per second."""
        return self.rows / self.seconds if self.seconds > 0 else 0.0

    @property
    def tokens_per_s(self) -> float:
        """Real tokens per second."""
        return self.tokens / self.seconds if self.seconds > 0 else 0.0

    @property
    def model_flops_per_s(self) -> float:
        """2 x params x tokens / seconds."""
        return 2.0 * self.params * self.tokens_per_s

    @property
    def mfu(self) -> float:
        """Model FLOP utilization: model FLOP/s over the peak rate (0 if unknown)."""
        return self.model_flops_per_s / self.peak_flops if self.peak_flops else 0.0

    def summary(self) -> str:
        """One line: rows/s, tokens/s, MFU and the rate it is judged against."""
        return (
            f"{self.rows_per_s:,.1f} rows/s, {self.tokens_per_s:,.0f} tokens/s, "
            f"MFU {self.mfu:.1%} ({_flops(self.model_flops_per_s)} of "
            f"{_flops(self.peak_flops)}; peak {self.peak_source})"
        )

    def to_json(self) -> str:
        """The fields and derived rates as a JSON object (a file attribute)."""
        derived = {
            "rows_per_s": self.rows_per_s,
            "tokens_per_s": self.tokens_per_s,
            "model_flops_per_s": self.model_flops_per_s,
            "mfu": self.mfu,
        }
        return json.dumps({**asdict(self), **derived})

    @classmethod
    def from_json(cls, text: str) -> Throughput:
        """Read `to_json`'s output back (derived rates are recomputed)."""
        fields = json.loads(text)
        return cls(**{k: fields[k] for k in cls.__dataclass_fields__})

    @classmethod
    def combine(cls, parts: list[Throughput]) -> Throughput:
        """Processes that ran side by side (one per GPU): rows, tokens and peak rates
        add up; the time is the slowest one's.

        Args:
            parts: one per process.

        Returns:
            The whole run's throughput.
        """
        tokens = sum(p.tokens for p in parts)
        flop = sum(2.0 * p.params * p.tokens for p in parts)
        sources = sorted({p.peak_source for p in parts})
        return cls(
            rows=sum(p.rows for p in parts),
            tokens=tokens,
            seconds=max(p.seconds for p in parts),
            params=round(flop / (2.0 * tokens)) if tokens else parts[0].params,
            peak_flops=sum(p.peak_flops for p in parts),
            peak_source="; ".join(sources),
            devices=sum(p.devices for p in parts),
        )
