"""The ``extract``, ``info`` and ``tasks`` subcommands of the ``probe-lab`` command."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from activation_cache.extract import extract
from activation_cache.models import LADDER, register_models
from activation_cache.settings import (
    AUTOCAST,
    CAPTURE,
    DEVICE_MAPS,
    DTYPES,
    MODEL_DTYPES,
    POSITIONS,
    ExtractConfig,
    ExtractError,
    parse_batch_size,
    parse_layers,
    parse_max_memory,
)
from activation_cache.store import (
    Cache,
    CacheError,
    open_cache,
    printable,
    read_plan,
    read_state,
)
from activation_cache.tasks import (
    TASK_INFO,
    TASKS,
    TaskError,
    load_task,
    task_card_meta,
    task_cards,
)
from activation_cache.throughput import Throughput

__all__ = [
    "check_out_file",
    "describe_tasks",
    "register",
    "register_extract",
    "register_info",
    "register_tasks",
    "run_extract",
    "run_info",
    "run_tasks",
]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``extract``, ``info`` and ``tasks`` subcommands.

    Args:
        subparsers: from ``parser.add_subparsers()``; each subcommand sets ``func`` to
            a handler taking the parsed arguments and returning an exit code.
    """
    register_extract(subparsers)
    register_info(subparsers)
    register_tasks(subparsers)
    register_models(subparsers)


def register_extract(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``extract`` subcommand (handled by `run_extract`)."""
    p = subparsers.add_parser(
        "extract",
        help="cache a model's residual stream for a task",
        description="Run a transformers model over a labelled task and store its "
        "residual stream per layer in an HDF5 cache (resumable).",
    )
    # A value such as -1,-8 is an option's value, not an unknown option (argparse
    # itself treats only single negative numbers so): --layers -1,-8 works.
    p._negative_number_matcher = re.compile(r"^-\d+(,\s*-?\d+)*$|^-\d*\.\d+$")
    _add_what_arguments(p)
    _add_how_arguments(p)
    p.set_defaults(func=run_extract)


def _add_what_arguments(p: argparse.ArgumentParser) -> None:
    """``extract``'s arguments that choose what is extracted, and where to."""
    p.add_argument(
        "--model",
        required=True,
        help="minilm (packaged all-MiniLM-L6-v2), a ladder name (minilm-l3, mpnet, "
        "smollm2: see probe-lab models), bow (hashed word and bigram counts), a "
        "model folder, or a hub id in the local cache",
    )
    p.add_argument(
        "--task",
        required=True,
        help=f"built-in ({', '.join(sorted(TASKS))}) or a .jsonl/.csv file with "
        "text and label columns",
    )
    p.add_argument("--out", required=True, help="cache file to write or resume")
    p.add_argument("--size", type=int, help="rows of the task (default: per task)")
    p.add_argument("--seed", type=int, default=0, help="task sampling seed")
    p.add_argument(
        "--layers",
        type=parse_layers,
        default="all",
        help="all, or hidden_states indices like 0,6,-1 (0 = embeddings, -1 = the "
        "last; --layers -1,-8 and --layers=-1,-8 both work)",
    )
    p.add_argument("--position", choices=POSITIONS, default="last")
    p.add_argument("--dtype", choices=DTYPES, default="float16")
    p.add_argument("--template", default="{text}", help='e.g. "{text} I think {hint}."')
    p.add_argument(
        "--max-length",
        type=int,
        help="tokens per prompt at most, counting the special tokens the tokenizer "
        "adds (so at least one more than those)",
    )
    p.add_argument("--padding-side", choices=("right", "left"), default="right")


def _add_how_arguments(p: argparse.ArgumentParser) -> None:
    """``extract``'s arguments that choose how and where the model runs."""
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps, ...")
    p.add_argument(
        "--batch-size",
        type=parse_batch_size,
        default=32,
        help="rows per forward pass, or auto (on CUDA: 512, halved on out-of-memory)",
    )
    p.add_argument("--model-dtype", choices=MODEL_DTYPES, default="auto")
    p.add_argument("--autocast", choices=AUTOCAST, default="none")
    p.add_argument(
        "--capture",
        choices=CAPTURE,
        default="hooks",
        help="hooks: pool requested layers during the forward and stop after the "
        "deepest; hidden_states: keep every hidden state (models whose block list "
        "is not found)",
    )
    p.add_argument(
        "--device-map",
        choices=DEVICE_MAPS,
        help="spread one model over every visible GPU, then CPU, then disk, in one "
        "process (models larger than one GPU; not with torchrun)",
    )
    p.add_argument(
        "--max-memory",
        type=parse_max_memory,
        help="with --device-map: memory per device, e.g. 0=70GiB,1=70GiB,cpu=200GiB",
    )
    p.add_argument(
        "--offload-folder",
        help="with --device-map: folder for weights offloaded to disk "
        "(default: a temporary one beside --out)",
    )
    p.add_argument("--revision", help="hub revision of a hub-id model")
    p.add_argument("--trust-remote-code", action="store_true")
    p.add_argument("--overwrite", action="store_true", help="delete --out and restart")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def register_info(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``info`` subcommand (handled by `run_info`)."""
    p = subparsers.add_parser("info", help="describe a cache file")
    p.add_argument("path", help="cache file")
    p.add_argument(
        "--validate",
        action="store_true",
        help="also check every value is finite and the features match their "
        "stored checksums",
    )
    p.set_defaults(func=run_info)


def register_tasks(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``tasks`` subcommand (handled by `run_tasks`)."""
    p = subparsers.add_parser(
        "tasks",
        help="list the built-in tasks with their sizes and card numbers",
        description="List every built-in task: capability, what label 1 means, "
        "rows (default and largest), label balance at the default size, the "
        "measured card numbers on MiniLM (bag-of-words probe accuracy, best layer "
        "and its probe ceiling, rule supervisors' accuracy) and the recommended "
        "extraction defaults. Cards: docs/tasks.md.",
    )
    p.set_defaults(func=run_tasks)


def run_extract(args: argparse.Namespace) -> int:
    """Handle ``extract``: build an `ExtractConfig` and run it.

    Returns:
        0 on success, 1 on a bad input (with the error on stderr).
    """
    try:
        config = ExtractConfig(
            model=args.model,
            task=args.task,
            out=args.out,
            size=args.size,
            seed=args.seed,
            layers=args.layers,
            position=args.position,
            dtype=args.dtype,
            device=args.device,
            batch_size=args.batch_size,
            template=args.template,
            max_length=args.max_length,
            padding_side=args.padding_side,
            model_dtype=args.model_dtype,
            autocast=args.autocast,
            capture=args.capture,
            device_map=args.device_map,
            max_memory=args.max_memory,
            offload_folder=args.offload_folder,
            revision=args.revision,
            trust_remote_code=args.trust_remote_code,
            overwrite=args.overwrite,
            quiet=args.quiet,
        )
        check_out_file(args.out)
        path = extract(config)
    except (ValueError, ExtractError, CacheError, TaskError) as e:
        print(f"probe-lab extract: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\nprobe-lab extract: {_interrupted(args.out)}", file=sys.stderr)
        return 130
    if not args.quiet:
        print(f"wrote {path}")
    return 0


def check_out_file(out: str | Path) -> None:
    """Refuse an ``--out`` that cannot be a cache file, before any work (a folder
    is never deleted, not even with ``--overwrite``).

    Raises:
        ExtractError: naming ``out`` and what to give instead.
    """
    out = Path(out)
    if out.is_dir():
        raise ExtractError(
            f"--out {out} is a folder; give a cache file path such as "
            f"{out / 'cache.h5'} (--overwrite never deletes a folder)"
        )
    parent = next((p for p in out.parents if p.exists()), Path("."))
    if not parent.is_dir():
        raise ExtractError(f"--out {out} cannot be made: {parent} is a file")


def _interrupted(out: str | Path) -> str:
    """What an interrupted extraction left at ``out``, and how to go on."""
    try:
        meta, done = read_state(out)
        rows = int(read_plan(out)[1][done])
    except (CacheError, OSError, KeyError):
        return "interrupted before any row was written: the same command starts again"
    return (
        f"interrupted; {out} keeps the {rows} of {meta.get('task_size')} rows "
        "written so far: the same command resumes it"
    )


def run_info(args: argparse.Namespace) -> int:
    """Handle ``info``: print schema, model, task, sizes, completeness, shapes.

    Returns:
        0 on success, 1 if the file is not a readable cache or fails validation.
    """
    try:
        meta, done = read_state(args.path)
        cache = open_cache(args.path, allow_partial=True)
        raw = meta
        meta = {k: printable(v) for k, v in raw.items() if v is not None}
        with cache:
            lines = [
                f"file      {printable(cache.path)}",
                f"format    {meta['format']} v{meta['format_version']}",
                f"model     {meta.get('model')} ({meta.get('model_type')}, "
                f"{meta.get('n_blocks')} blocks, d={cache.d})",
                f"weights   {meta.get('weights_sha256') or meta.get('model_revision')}",
                f"tokenizer {meta.get('tokenizer')} ({meta.get('tokenizer_class')})",
                f"task      {meta.get('task')} ({meta.get('task_size')} rows, "
                f"{meta.get('task_fingerprint')})",
                f"template  {printable(repr(raw.get('template')))}",
                f"position  {meta.get('position')} token, {meta.get('padding_side')} "
                f"padding, max_length {meta.get('max_length')}",
                f"layers    {meta.get('layer_convention')}",
                f"last      post final norm: {meta.get('last_layer_post_final_norm')}",
                f"dtype     {meta.get('dtype')} (model {meta.get('model_dtype')}, "
                f"autocast {meta.get('autocast')}, {meta.get('device_type')})",
                f"capture   {meta.get('capture', 'hidden_states (before hooks)')}"
                + (
                    f", device map {meta['device_map']}: "
                    f"{meta.get('device_map_layout')}"
                    if raw.get("device_map")
                    else ""
                ),
                f"created   {meta.get('created')}",
                f"versions  {meta.get('versions')}",
            ]
            if meta.get("pooling"):  # files from before the ladder lack it
                lines.append(f"pooling   {meta.get('model_kind')}: {meta['pooling']}")
            if cache.complete:
                lines.append(f"complete  yes ({cache.n} rows)")
            else:
                lines.append(
                    f"complete  no: {cache.n} of {meta.get('task_size')} rows "
                    f"({done} batches) written; rerun the same extract to finish"
                )
            if raw.get("shards"):
                lines.append(f"shards    {meta['shards']}")
            if raw.get("throughput"):
                speed = Throughput.from_json(raw["throughput"])
                lines.append(f"speed     {speed.summary()}")
                lines.append(
                    f"          ({speed.rows} rows, {speed.tokens} tokens in "
                    f"{speed.seconds:.2f} s by the run that finished the file; "
                    f"{speed.params:,} matrix parameters per token)"
                )
            balance = cache.labels.mean() if cache.n else float("nan")
            lines.append(f"labels    {balance:.3f} positive")
            for layer in cache.layers:
                lines.append(
                    f"  features/layer_{layer:02d}  ({cache.n}, {cache.d}) "
                    f"{meta.get('dtype')}"
                )
            print("\n".join(lines))
            if args.validate:
                cache.validate()
                print(_valid_line(cache))
    except CacheError as e:
        print(f"probe-lab info: error: {printable(e, 2000)}", file=sys.stderr)
        return 1
    return 0


def _valid_line(cache: Cache) -> str:
    """What ``info --validate`` prints for a cache that passed."""
    line = "valid     all values finite, labels binary, ids unique"
    if cache.has_checksums:
        return line + ", feature checksums match"
    return (
        line + "\n          note: this cache stores no feature checksums (made "
        "before they were added), so changed finite values cannot be detected; "
        "re-extract it to add them"
    )


def describe_tasks() -> list[dict[str, object]]:
    """One row per built-in task: what `run_tasks` prints.

    Returns:
        Rows with ``task``, ``capability``, ``label``, ``default_rows``,
        ``largest``, ``balance`` (share of label 1 at the default size),
        ``bow_acc``, ``ceiling``, ``layer``, ``position``, ``rules`` (field ->
        accuracy) and ``ladder`` (rung -> its probe ceiling, where measured); card
        numbers are None where no card was measured.
    """
    cards = task_cards()
    rows = []
    for name in sorted(TASKS):
        info, (_, default) = TASK_INFO[name], TASKS[name]
        card = cards.get(name, {})
        rows.append(
            {
                "task": name,
                "capability": info.capability,
                "label": info.label,
                "default_rows": default,
                "largest": info.largest,
                "balance": float(load_task(name).labels.mean()),
                "bow_acc": card.get("bow_acc"),
                "ceiling": card.get("ceiling"),
                "layer": info.layer,
                "position": info.position,
                "rules": {f: card.get("rules", {}).get(f) for f in info.rules},
                "ladder": {
                    rung: entry.get("ceiling")
                    for rung, entry in card.get("ladder", {}).items()
                },
            }
        )
    return rows


def run_tasks(args: argparse.Namespace) -> int:
    """Handle ``tasks``: print the built-in tasks as a table.

    Returns:
        0.
    """

    def pct(value: object) -> str:
        return "-" if value is None else f"{100 * float(value):.1f}"

    head = (
        f"{'task':<14} {'capability':<22} {'label 1':<10} {'rows':>11} "
        f"{'bal':>5} {'bow%':>5} {'ceil%':>5} {'layer':>5} {'pos':<5} rules (acc%)"
    )
    lines = [head, "-" * len(head)]
    rows = describe_tasks()
    for r in rows:
        rules = ", ".join(f"{f} {pct(a)}" for f, a in r["rules"].items()) or "-"
        lines.append(
            f"{r['task']:<14} {r['capability']:<22} {r['label']:<10} "
            f"{str(r['default_rows']) + '/' + str(r['largest']):>11} "
            f"{r['balance']:>5.2f} {pct(r['bow_acc']):>5} {pct(r['ceiling']):>5} "
            f"{r['layer']:>5} {r['position']:<5} {rules}"
        )
    lines.append(
        "rows: default/largest; bow%: bag-of-words probe test accuracy; ceil%: "
        "MiniLM probe test accuracy at the layer shown (mean position); cards in "
        "docs/tasks.md"
    )
    lines += _ladder_lines(rows)
    print("\n".join(lines))
    return 0


def _ladder_lines(rows: list[dict[str, object]]) -> list[str]:
    """The rung columns of the cards: each ladder rung's probe ceiling per task."""
    if not any(r["ladder"] for r in rows):
        return []
    head = f"\n{'task':<14} " + " ".join(f"{rung:>9}" for rung in LADDER)
    lines = [head, "-" * (len(head) - 1)]
    for r in rows:
        cells = (r["ladder"].get(rung) for rung in LADDER)
        lines.append(
            f"{r['task']:<14} "
            + " ".join(f"{'-' if c is None else f'{100 * c:.1f}':>9}" for c in cells)
        )
    rows_measured = task_card_meta().get("ladder", {}).get("rows", "?")
    lines.append(
        "ladder ceilings: probe test accuracy (%) on each rung's best layer (chosen "
        f"on validation rows, mean position) at {rows_measured} rows; probe-lab "
        "models lists the rungs"
    )
    return lines
