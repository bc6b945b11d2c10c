"""The caches experiments read: reused by their settings, or built by extraction.

Extraction runs ``python -m activation_cache extract ...`` in a subprocess (the same
command line as ``probe-lab extract``), so this process never imports torch or
transformers; the subprocess prints its own progress bar.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from activation_cache import TASKS, Cache, CacheError, TaskError, load_task, open_cache
from activation_cache.store import read_state
from probe_lab.experiments.config import CacheSpec, ExperimentError

__all__ = [
    "bow_cache",
    "build_cache",
    "changed_task",
    "extract",
    "is_complete",
    "reextract",
    "source_model",
    "write_task",
]


def is_complete(path: Path) -> bool:
    """Whether ``path`` is a cache whose extraction finished."""
    if not path.is_file():
        return False
    try:
        return open_cache(path, allow_partial=True).complete
    except CacheError:
        return False


def extract(args: Sequence[str], out: Path, *, progress: bool) -> Path:
    """Run the extraction CLI in a subprocess (an interrupted ``out`` resumes).

    Args:
        args: ``extract`` arguments without ``--out``.
        out: the cache file to write.
        progress: show the extractor's progress bar.

    Returns:
        ``out``, complete.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "activation_cache", "extract", *args]
    command += ["--out", str(out)]
    if not progress:
        command.append("--quiet")
    done = subprocess.run(command, check=False)
    if done.returncode != 0:
        shown = " ".join(repr(a) if " " in a else a for a in command[3:])
        raise ExperimentError(
            f"building the cache {out} failed (exit {done.returncode}; its error is "
            f"above). Run it by hand to see it again: probe-lab {shown}"
        )
    return out


def build_cache(
    spec: CacheSpec, cache_dir: str | Path = "runs/caches", *, progress: bool = True
) -> Path:
    """Reuse or build the cache of ``spec`` under ``cache_dir``.

    Args:
        spec: model, task and extraction settings.
        cache_dir: where caches live; the same settings give the same file.
        progress: show the extractor's progress bar.

    Returns:
        The complete cache file (an interrupted one is resumed). A cache of a
        task file whose rows changed since it was built (its stored
        ``task_fingerprint`` differs) is extracted again, with a note.
    """
    path = Path(cache_dir) / spec.filename()
    args = spec.arguments()
    if path.is_file() and changed_task(path, spec):
        print(
            f"[cache] {path} was built from other rows of {spec.task} (the file "
            "changed since): extracting it again",
            file=sys.stderr,
        )
        args.append("--overwrite")
    elif is_complete(path):
        if progress:
            print(f"[cache] reusing {path}")
        return path
    if progress:
        print(f"[cache] extracting {spec.model} on {spec.task} into {path}")
    return extract(args, path, progress=progress)


def changed_task(path: Path, spec: CacheSpec) -> bool:
    """Whether the cache at ``path`` was built from rows of ``spec``'s task file
    other than the file's rows now (its ``task_fingerprint`` differs). A
    built-in task is not reread (its rows are the package's), nor is an
    unreadable cache (extraction then says what is wrong with it)."""
    if spec.task in TASKS or not Path(spec.task).is_file():
        return False
    try:
        stored, _ = read_state(path)
        task = load_task(spec.task, size=spec.size, seed=spec.seed)
    except (CacheError, TaskError, ValueError):
        return False
    return stored.get("task_fingerprint") != task.fingerprint


def source_model(meta: Mapping[str, Any]) -> str:
    """The model a cache was extracted from: its folder where that still exists,
    else its name (a packaged model or a hub id)."""
    folder = str(meta.get("model_path", ""))
    return folder if folder and Path(folder).is_dir() else str(meta.get("model"))


def reextract(
    cache: Cache, task: Path, template: str, out: Path, *, progress: bool
) -> Path:
    """Run ``cache``'s model again on another task file and prompt template, with
    the cache's layers, pooling, dtype, padding side and length limit.

    Args:
        cache: the open original cache.
        task: a ``.jsonl`` task file (``id``, ``text``, ``label`` and extra fields).
        template: the new prompt template.
        out: the cache file to write.
        progress: show the extractor's progress bar.

    Returns:
        ``out``, complete.
    """
    meta = cache.meta
    args = ["--model", source_model(meta), "--task", str(task)]
    args += ["--template", template]
    args += ["--layers", ",".join(str(x) for x in cache.layers)]
    args += ["--position", str(meta.get("position")), "--dtype", str(meta["dtype"])]
    args += ["--padding-side", str(meta.get("padding_side", "right"))]
    if meta.get("max_length"):
        args += ["--max-length", str(meta["max_length"])]
    return extract(args, out, progress=progress)


def write_task(
    cache: Cache, path: Path, extra: Mapping[str, Sequence[str]] | None = None
) -> Path:
    """Write a cache's rows (id, text, label, its extra fields, and ``extra``) as a
    ``.jsonl`` task file, so another model can be run on exactly these rows."""
    fields = {k: v for k, v in cache.extra.items() if k not in (extra or {})}
    fields.update(extra or {})
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for i in range(cache.n):
            row = dict(
                id=str(cache.ids[i]),
                text=str(cache.texts[i]),
                label=int(cache.labels[i]),
                **{k: str(v[i]) for k, v in fields.items()},
            )
            f.write(json.dumps(row) + "\n")
    return path


def bow_cache(cache: Path, cache_dir: Path, *, progress: bool) -> Path:
    """The bag-of-words cache of exactly ``cache``'s rows (the same ids, texts and
    prompt template): a genuinely different, weaker "model" whose probe is a weak
    supervisor. Reused when it exists."""
    opened = open_cache(cache)
    path = Path(cache_dir) / f"{cache.stem}-bow.h5"
    if is_complete(path):
        if progress:
            print(f"[cache] reusing {path}")
        return path
    task = write_task(opened, path.with_suffix(".jsonl"))
    template = str(opened.meta.get("template") or "{text}")
    args = ["--model", "bow", "--task", str(task), "--template", template]
    return extract(args, path, progress=progress)
