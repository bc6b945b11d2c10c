"""What an extraction is: its settings (`ExtractConfig`), their parsers, the settings
that identify a cache file, and the small helpers both extractors share (the
transformer one in `activation_cache.extract`, the bag-of-words one in
`activation_cache.bow`).

Needs only numpy (no torch).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import platform
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "AUTOCAST",
    "CAPTURE",
    "DEVICE_MAPS",
    "DTYPES",
    "FLOAT16_MAX",
    "IDENTITY",
    "MODEL_DTYPES",
    "POSITIONS",
    "ExtractConfig",
    "ExtractError",
    "distributed",
    "parse_batch_size",
    "parse_layers",
    "parse_max_memory",
    "say",
    "sha256_rows",
    "versions",
    "warn",
]

FLOAT16_MAX = 65504.0
POSITIONS = ("last", "first", "mean")
DTYPES = ("float16", "float32")
MODEL_DTYPES = ("auto", "float32", "float16", "bfloat16")
AUTOCAST = ("none", "float16", "bfloat16")
CAPTURE = ("hooks", "hidden_states")
DEVICE_MAPS = ("auto", "balanced", "balanced_low_0", "sequential")
_MEMORY_SIZE = r"\d+(\.\d+)?\s*[KMG]i?B"

# Settings that must match for a run to resume (or accept) an existing file, with
# the name used in the refusal message.
IDENTITY = {
    "weights_sha256": "model weights",
    "model_revision": "model revision",
    "task_fingerprint": "task rows (texts and labels)",
    "prompt_fingerprint": "prompts (template and fields)",
    "tokens_fingerprint": "tokenization (tokenizer, max_length, template)",
    "layers": "layers",
    "position": "position",
    "dtype": "dtype",
    "batch_size": "batch_size",
    "padding_side": "padding_side",
    "model_dtype": "model_dtype",
    "autocast": "autocast",
    "device_type": "device type",
}


class ExtractError(RuntimeError):
    """An extraction that cannot run as configured (model, layers, file, values)."""


def parse_layers(spec: str | Sequence[int]) -> str | tuple[int, ...]:
    """Parse a layer selection.

    Args:
        spec: ``"all"``, a comma list such as ``"0,6,-1"``, or a sequence of ints.

    Returns:
        ``"all"`` or a tuple of hidden_states indices (negatives allowed).
    """
    if isinstance(spec, str):
        if spec.strip() == "all":
            return "all"
        try:
            return tuple(int(part) for part in spec.split(","))
        except ValueError:
            raise ValueError(
                f"layers must be 'all' or a comma list of integers like 0,6,-1; "
                f"got {spec!r}"
            ) from None
    return tuple(int(x) for x in spec)


def parse_batch_size(spec: str | int) -> int | str:
    """Parse a batch size: a positive integer or ``"auto"``.

    Args:
        spec: ``"auto"``, ``"32"`` or an int.

    Returns:
        ``"auto"`` or the int.
    """
    if isinstance(spec, str):
        if spec.strip() == "auto":
            return "auto"
        try:
            spec = int(spec)
        except ValueError:
            raise ValueError(
                f"batch size must be a positive integer or auto; got {spec!r}"
            ) from None
    return spec


def parse_max_memory(spec: str | dict | None) -> dict | None:
    """Parse per-device memory limits for a device map.

    Args:
        spec: ``"0=70GiB,1=70GiB,cpu=200GiB"`` (GPU index, ``cpu`` or ``mps`` = bytes,
            or a size with a unit: KB, MB, GB, KiB, MiB, GiB), a dict of the same,
            or None.

    Returns:
        A dict with int GPU keys and int or unit-string sizes, or None.
    """
    if spec is None:
        return None
    if isinstance(spec, str):
        pairs = []
        for part in spec.split(","):
            key, sep, size = (x.strip() for x in part.partition("="))
            if not sep or not key or not size:
                raise ValueError(
                    "max memory must look like 0=70GiB,1=70GiB,cpu=200GiB; got "
                    f"{spec!r}"
                )
            pairs.append((int(key) if key.isdigit() else key, size))
    else:
        pairs = list(spec.items())
    limits: dict = {}
    for key, size in pairs:
        if isinstance(size, str) and size.isdigit():
            size = int(size)
        if not (
            isinstance(size, int)
            or (isinstance(size, str) and re.fullmatch(_MEMORY_SIZE, size, re.I))
        ):
            raise ValueError(
                f"max memory of {key!r} is {size!r}: give bytes (an integer) or a "
                "size with a unit, like 70GiB or 500MB"
            )
        limits[key] = size
    return limits


@dataclass(frozen=True, kw_only=True)
class ExtractConfig:
    """What to extract and where to write it."""

    model: str
    """``minilm`` (the packaged all-MiniLM-L6-v2), ``bow`` (hashed word and bigram
    counts, see `activation_cache.bow`), a local model folder or a hub id already in
    the Hugging Face cache."""
    task: str
    """A built-in task name (see ``activation_cache.TASKS``) or a .jsonl/.csv file."""
    out: str | Path
    """The cache file to write (or resume); its folder is made if missing, and
    ``OUT.lock`` beside it is held while the run writes."""
    size: int | None = None
    """Rows of the task (built-in default per task; files: all rows)."""
    seed: int = 0
    """Seed of the task's sampling and row order."""
    layers: str | tuple[int, ...] = "all"
    """``"all"`` or hidden_states indices (0 = embeddings, i = after block i;
    negatives count from the end, -1 = the last); a string like ``"0,6,-1"`` works."""
    position: str = "last"
    """Token position pooled per layer: ``last`` or ``first`` real token, or ``mean``
    over real tokens."""
    dtype: str = "float16"
    """Stored dtype, ``float16`` (values beyond its range are an error) or
    ``float32``."""
    device: str = "auto"
    """``auto`` (CUDA if present, then MPS, else CPU), or a torch device string."""
    batch_size: int | str = 32
    """Rows per batch of the plan (a forward pass each), or ``"auto"``: 512 rows per
    batch on CUDA, each batch's forward passes halved on out-of-memory (the batch
    is retried; the halved size is kept from there on and recorded, so a resume
    continues with it), 32 elsewhere. Resuming a file with ``auto`` uses the
    file's batch size."""
    template: str = "{text}"
    """Prompt template with ``{text}`` and optional ``{id}`` or extra task fields."""
    max_length: int | None = None
    """Tokens per prompt at most, counting the special tokens the tokenizer adds, so
    more than those (longer prompts lose their end, with a warning on stderr);
    default: the model's maximum."""
    padding_side: str = "right"
    """Pad batches on the ``right`` or ``left`` (left passes position ids counted
    from each row's first real token)."""
    model_dtype: str = "auto"
    """Dtype the weights are loaded in: ``auto`` (float32 on CPU, the checkpoint's
    dtype elsewhere), ``float32``, ``float16`` or ``bfloat16``."""
    autocast: str = "none"
    """CUDA autocast dtype for the forward pass: ``none``, ``float16`` or
    ``bfloat16``."""
    capture: str = "hooks"
    """How layers are read: ``hooks`` (forward hooks on the blocks pool each
    requested layer as the forward passes it, and the forward stops after the
    deepest one) or ``hidden_states`` (the whole forward keeps every hidden state;
    for models whose block list is not found). Both write the same bits."""
    device_map: str | None = None
    """Spread one model over every visible GPU, then CPU memory, then disk, in this
    one process (accelerate's device map: ``auto``, ``balanced``,
    ``balanced_low_0`` or ``sequential``), for models larger than one device. Not
    with ``torchrun``; ``device`` must stay ``auto``."""
    max_memory: dict | str | None = None
    """With ``device_map``: memory per device, e.g. ``{0: "70GiB", "cpu": "200GiB"}``
    or ``"0=70GiB,cpu=200GiB"``; what does not fit goes to disk."""
    offload_folder: str | Path | None = None
    """With ``device_map``: where weights offloaded to disk go (default: a temporary
    folder beside ``out``, deleted afterwards)."""
    revision: str | None = None
    """Hub revision (branch, tag or commit) of a hub-id model."""
    trust_remote_code: bool = False
    """Allow models that ship their own Python code to run it."""
    overwrite: bool = False
    """Delete an existing ``out`` (and its shards) and start over."""
    quiet: bool = False
    """No progress bar or messages."""

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "layers", parse_layers(self.layers))
        except ValueError as e:
            raise ValueError(f"ExtractConfig.layers: {e}") from None
        object.__setattr__(self, "out", Path(self.out))
        for name, parse in (
            ("batch_size", parse_batch_size),
            ("max_memory", parse_max_memory),
        ):
            try:
                object.__setattr__(self, name, parse(getattr(self, name)))
            except ValueError as e:
                raise ValueError(f"ExtractConfig.{name}: {e}") from None
        choices = {
            "position": POSITIONS,
            "dtype": DTYPES,
            "padding_side": ("right", "left"),
            "model_dtype": MODEL_DTYPES,
            "autocast": AUTOCAST,
            "capture": CAPTURE,
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(
                    f"ExtractConfig.{name} must be one of {', '.join(allowed)}; "
                    f"got {getattr(self, name)!r}"
                )
        if self.batch_size != "auto" and not isinstance(self.batch_size, int):
            raise ValueError(
                f"ExtractConfig.batch_size must be an int or 'auto'; got "
                f"{self.batch_size!r}"
            )
        for name in ("batch_size", "size", "max_length"):
            value = getattr(self, name)
            if isinstance(value, int) and value < 1:
                raise ValueError(f"ExtractConfig.{name} must be >= 1; got {value}")
        if self.device_map is not None:
            if self.device_map not in DEVICE_MAPS:
                raise ValueError(
                    f"ExtractConfig.device_map must be one of "
                    f"{', '.join(DEVICE_MAPS)} (or None); got {self.device_map!r}"
                )
            if self.device != "auto":
                raise ValueError(
                    f"ExtractConfig.device is {self.device!r} but device_map places "
                    "the model itself over every visible GPU (then CPU, then disk); "
                    "keep device='auto' and choose GPUs with CUDA_VISIBLE_DEVICES"
                )
        elif self.max_memory is not None or self.offload_folder is not None:
            raise ValueError(
                "ExtractConfig.max_memory and offload_folder apply only with a "
                "device_map; pass device_map='auto' (--device-map auto) too"
            )
        if not self.model:
            raise ValueError("ExtractConfig.model is empty")


def sha256_rows(rows: Sequence[Sequence[int]]) -> str:
    """A fingerprint of ragged integer rows (token ids): sha256 over each row's
    length-prefixed int64 bytes."""
    h = hashlib.sha256()
    for row in rows:
        data = np.asarray(row, dtype=np.int64).tobytes()
        h.update(len(data).to_bytes(8, "little") + data)
    return "sha256:" + h.hexdigest()


def versions() -> str:
    """JSON of the Python and library versions that made a file."""
    names = ("torch", "transformers", "tokenizers", "h5py", "numpy", "probe-lab")
    found = {"python": platform.python_version()}
    for name in names:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "not installed"
    return json.dumps(found)


def distributed() -> tuple[int, int, int]:
    """This process's (rank, world size, local rank) under torchrun; (0, 1, 0) alone."""
    env = os.environ
    return (
        int(env.get("RANK", 0)),
        int(env.get("WORLD_SIZE", 1)),
        int(env.get("LOCAL_RANK", 0)),
    )


def say(config: ExtractConfig, rank: int, message: str) -> None:
    """Print a progress message on stdout (rank 0 only; ``quiet`` hides it)."""
    if not config.quiet and rank == 0:
        print(f"activation_cache: {message}", flush=True)


def warn(rank: int, message: str) -> None:
    """Print a warning on stderr (rank 0 only; ``quiet`` does not hide it)."""
    if rank == 0:
        print(f"activation_cache: warning: {message}", file=sys.stderr, flush=True)
