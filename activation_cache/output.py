"""The output file of an extraction: its lock, its free-space check, its shard files
and the check that an existing file may be resumed.

One extraction at a time writes an output: `lock_output` holds an exclusive
``flock`` on ``OUT.lock`` (beside ``OUT``, holding the writer's process id and host)
for the whole run; a second run is refused naming the holder. The kernel drops the
lock when its process dies, however it dies, so a lock file left by a killed run is
taken over (with a note). Under torchrun, rank 0 holds the lock for every process:
it covers ``OUT`` and all its shard files. `hold_lock` is the same lock for any
file (``probe-lab run`` locks its output folder with it).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from activation_cache import store
from activation_cache.settings import IDENTITY, ExtractError, warn

__all__ = [
    "check_existing",
    "check_free_space",
    "check_not_input",
    "hold_lock",
    "lock_output",
    "lock_path",
    "remove_output",
    "shard_path",
]


def shard_path(out: Path, rank: int, world: int) -> Path:
    """The shard file process ``rank`` of ``world`` writes for ``out``."""
    return out.with_name(f"{out.stem}.shard-{rank}-of-{world}{out.suffix}")


def lock_path(out: Path) -> Path:
    """The lock file of ``out``: ``OUT.lock`` beside it."""
    return out.with_name(out.name + ".lock")


def remove_output(out: Path) -> None:
    """Delete ``out`` and its shard files (``--overwrite``; hold the lock)."""
    for path in [out, *out.parent.glob(f"{out.stem}.shard-*{out.suffix}")]:
        path.unlink(missing_ok=True)


def _same_file(a: Path, b: Path) -> bool:
    """Whether two paths name one file: the same path once resolved, or (both
    existing) the same inode, which also catches hard links."""
    if a.resolve() == b.resolve():
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def check_not_input(out: Path, inputs: dict[str, str | Path | None]) -> None:
    """Refuse an output that is one of the files the run reads (``--overwrite``
    would delete it, and writing would replace it).

    Args:
        out: the cache file about to be written.
        inputs: option name (``--task``) -> the path it gives, or None.

    Raises:
        ExtractError: naming the option and the file.
    """
    for option, given in inputs.items():
        if given is None or not Path(given).is_file():
            continue
        if _same_file(Path(out), Path(given)):
            raise ExtractError(
                f"--out {out} is the file {option} {given} reads (the same file, "
                "or a link to it): writing the cache would replace it; give "
                "another --out"
            )


def check_existing(path: Path, attrs: dict) -> str:
    """Classify an existing file: ``"complete"`` or ``"resume"``; refuse a mismatch.

    Args:
        path: the existing cache file.
        attrs: this run's file attributes; every `IDENTITY` setting must match.

    Returns:
        ``"complete"`` or ``"resume"``.
    """
    try:
        found, _ = store.read_state(path)
    except store.CacheError as e:
        raise ExtractError(
            f"{path} exists and cannot be resumed ({e}); write to a new --out, or "
            "delete it (or pass --overwrite) to start over"
        ) from e
    for key, label in IDENTITY.items():
        if found.get(key) != attrs.get(key):
            raise ExtractError(
                f"{path} was started with different settings: {label} is "
                f"{found.get(key)!r} in the file but {attrs.get(key)!r} now. Rerun "
                "with the file's settings to resume it, write to a new --out, or "
                "delete it (or pass --overwrite) to start over"
            )
    return "complete" if found.get("complete") else "resume"


def _size(n: int) -> str:
    """A byte count in B, KiB, MiB or GiB."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def check_free_space(path: Path, rows: int, layers: int, d: int, dtype: str) -> None:
    """Refuse to create a cache file its disk cannot hold.

    The features take rows x layers x d x (bytes per value); texts, ids and the
    plan add a little (1 MiB is allowed for them here).

    Args:
        path: the file about to be created.
        rows, layers, d: its feature shape.
        dtype: the stored dtype.

    Raises:
        ExtractError: naming the space needed, the space free and what to change.
    """
    item = np.dtype(dtype).itemsize
    need = rows * layers * d * item + (1 << 20)
    free = shutil.disk_usage(path.parent).free
    if need > free:
        raise ExtractError(
            f"{path} needs about {_size(need)} (rows x layers x width x bytes: "
            f"{rows} x {layers} x {d} x {item} for {dtype}) but {path.parent} has "
            f"{_size(free)} free; free some space, write to another --out on a larger "
            "disk, or store less (fewer --layers, --dtype float16, a smaller --size)"
        )


def _holder(fd: int) -> str:
    """Who a lock file names: ``"process 123 on host"``, or ``""`` if empty."""
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 256).decode("utf-8", "replace").split()
    if len(text) >= 2 and text[0].isdigit():
        return f"process {text[0]} on {text[1]}"
    return ""


def _acquire(lock: Path, busy: Callable[[str], Exception]) -> int:
    """Open and exclusively lock ``lock``; returns the descriptor.

    A holder deletes the lock file as it releases it, so after taking the lock the
    file must still be the one at ``lock``; if not, the lock is taken afresh.
    Another live holder raises ``busy(who holds it)``.
    """
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.EACCES):
                os.close(fd)
                raise
            holder = _holder(fd) or "another process"
            os.close(fd)
            raise busy(holder) from None
        held = os.fstat(fd)
        try:
            now = os.stat(lock)
            if (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino):
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


@contextlib.contextmanager
def hold_lock(
    lock: Path,
    busy: Callable[[str], Exception],
    unusable: Callable[[str], Exception],
) -> Iterator[Path]:
    """Hold an exclusive ``flock`` on the file ``lock`` for a block.

    The file holds this process's id and host while held, and is deleted on
    release. A lock file left by a process that died holding it is taken over,
    with a warning naming that process.

    Args:
        lock: the lock file (its folder is made if needed).
        busy: the error to raise when another live process holds it, given
            ``"process 123 on host"``.
        unusable: the error to raise when the lock file cannot be made, given
            the reason.

    Yields:
        ``lock``.
    """
    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
        fd = _acquire(lock, busy)
    except OSError as e:
        raise unusable(str(e.strerror or e)) from e
    try:
        previous = _holder(fd)
        if previous:
            warn(0, f"taking over {lock}, left by {previous}, which has ended")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
        yield lock
    finally:
        lock.unlink(missing_ok=True)  # while holding it: see _acquire
        os.close(fd)


def lock_output(out: Path) -> contextlib.AbstractContextManager[Path]:
    """Hold the exclusive lock on ``out`` (and its shard files) for a block.

    Creates ``out``'s folder if needed. A lock file left by a process that died
    holding it is taken over, with a warning naming that process.

    Args:
        out: the cache file about to be written.

    Returns:
        A context manager yielding the lock file (see `hold_lock`).

    Raises:
        ExtractError: another live process holds the lock; names its process id.
    """
    lock = lock_path(out)
    return hold_lock(
        lock,
        busy=lambda holder: ExtractError(
            f"{out} is being written by another extraction ({holder} holds "
            f"{lock}); wait for it to finish (the same command then finds the "
            "file complete, or resumes it), or write to another --out"
        ),
        unusable=lambda reason: ExtractError(
            f"cannot create or lock {lock} ({reason}); give an --out "
            "in a folder you can write"
        ),
    )
