"""The HDF5 cache file: schema, resumable writer, reader and join by example id.

Layout of a cache file (format ``probe-lab-cache``, version 1)::

    /                      attributes: settings, fingerprints, versions, complete
    /ids, /texts           (n,) UTF-8 strings: stable example id, task text
    /labels                (n,) int8, 0 or 1
    /n_chars, /n_tokens    (n,) int32: prompt length in characters and in tokens
    /extra/<field>         (n,) UTF-8 strings: the task's extra fields
    /features/layer_LL     (n, d) float16 or float32, chunked by rows, uncompressed;
                           LL is the hidden_states index (0 = embeddings,
                           i = output of block i)
    /plan/order            (n,) int64: rows in processing order (length-bucketed)
    /plan/bounds           (n_batches + 1,) int64; batch b: order[bounds[b]:bounds[b+1]]
    /plan/batches_done     () int64: batches fully written, flushed after each batch
    /plan/micro_batch      (n_batches,) int64: rows per forward pass inside each batch
                           written (0: not yet written); files made before it was
                           added lack it, and ran every batch as one forward pass

Everything except the feature rows and the counter is written when the file is
created, and the feature chunks are allocated then; afterwards a run only overwrites
raw bytes in place (see `Writer`), so a process killed at any point leaves a readable
file that resumes where the counter says. A file joining shards written by several
processes holds its features as HDF5 virtual datasets over the shard files (kept next
to it) and has no plan group.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import queue
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path

import h5py
import numpy as np

__all__ = [
    "CHECKSUMS",
    "FORMAT",
    "FORMAT_VERSION",
    "Cache",
    "CacheError",
    "Writer",
    "create_cache",
    "feature_digests",
    "feature_name",
    "join",
    "open_cache",
    "printable",
    "read_micro_batches",
    "read_plan",
    "read_state",
    "write_virtual",
]

FORMAT = "probe-lab-cache"
FORMAT_VERSION = 1
LAYER_CONVENTION = "hidden_states index: 0 = embeddings, i = output of block i"
CHECKSUMS = "feature_sha256"
"""The file attribute holding each feature layer's sha256 (JSON: layer -> hex),
written when the file is marked complete; files made before it lack it."""
_STR = h5py.string_dtype("utf-8")
_CHUNK_BYTES = 1 << 20


class CacheError(RuntimeError):
    """A cache file that is missing, foreign, corrupt, incomplete or inconsistent."""


def feature_name(layer: int) -> str:
    """Dataset path of a layer's features, e.g. ``features/layer_06``."""
    return f"features/layer_{layer:02d}"


def _digest(dataset: h5py.Dataset) -> str:
    """sha256 over a feature dataset's values in row order, read in slabs."""
    digest = hashlib.sha256()
    rows = max(
        1, _CHUNK_BYTES * 16 // max(1, dataset.dtype.itemsize * dataset.shape[1])
    )
    for start in range(0, dataset.shape[0], rows):
        digest.update(np.ascontiguousarray(dataset[start : start + rows]).data)
    return digest.hexdigest()


def feature_digests(f: h5py.File, layers: Sequence[int]) -> str:
    """The `CHECKSUMS` attribute of an open file: JSON of layer -> sha256 of
    its stored feature values (catches rows changed after the file was written,
    finite or not)."""
    return json.dumps({str(layer): _digest(f[feature_name(layer)]) for layer in layers})


_ESCAPES = re.compile(r"\x1b(\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\)?|.)?")


def printable(value: object, limit: int = 300) -> str:
    """``value`` as text safe for a terminal: terminal escape sequences removed,
    other control characters shown escaped (``\\x07``), and cut to ``limit``
    characters with a note of the full length (a cache's attributes are anyone's
    text).

    Args:
        value: any value (converted with ``str``).
        limit: characters kept at most.

    Returns:
        One line of at most about ``limit`` characters.
    """
    full = str(value)
    text = _ESCAPES.sub("", full[: limit + 4096])  # cut first: it may be huge
    text = "".join(
        c if c.isprintable() else c.encode("unicode_escape").decode("ascii")
        for c in text
    )
    if len(text) > limit or len(full) > limit + 4096:
        return f"{text[:limit]}... ({len(full):,} characters, cut)"
    return text


def _to_python(value: object) -> object:
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.ndarray):
        return [_to_python(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _open_h5(path: Path, mode: str = "r", **kwargs: object) -> h5py.File:
    if not path.exists():
        raise CacheError(f"no cache file at {path}")
    if path.is_dir():
        raise CacheError(
            f"{path} is a folder, not a cache file; give the path of the .h5 file "
            "itself (e.g. one of the *.h5 files in it)"
        )
    try:
        return h5py.File(path, mode, **kwargs)
    except OSError as e:
        raise CacheError(
            f"{path} is not a readable HDF5 file (truncated, corrupt or not HDF5): "
            f"{e}. Re-run the extraction to a new --out to recreate it"
        ) from e


def _check_format(path: Path, attrs: dict[str, object]) -> None:
    if attrs.get("format") != FORMAT:
        raise CacheError(
            f"{path} is an HDF5 file but not a probe-lab cache (its 'format' attribute "
            f"is {printable(repr(attrs.get('format')), 80)}, expected {FORMAT!r}); "
            "write caches with activation_cache.extract or `probe-lab extract`"
        )
    if attrs.get("format_version") != FORMAT_VERSION:
        raise CacheError(
            f"{path} has cache format version {attrs.get('format_version')}, this "
            f"reader reads version {FORMAT_VERSION}; use the matching probe-lab "
            "release or re-extract the cache"
        )


def read_state(path: str | Path) -> tuple[dict[str, object], int]:
    """Read a cache file's attributes and progress, without its arrays.

    Args:
        path: the cache file.

    Returns:
        (attributes as Python values, batches done); raises `CacheError` on a foreign,
        corrupt or wrong-version file.
    """
    path = Path(path)
    with _open_h5(path) as f:
        attrs = {k: _to_python(v) for k, v in f.attrs.items()}
        _check_format(path, attrs)
        done = int(f["plan/batches_done"][()]) if "plan" in f else 0
    return attrs, done


def read_plan(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read a cache file's batch plan.

    Args:
        path: a cache file written by one process.

    Returns:
        (order, bounds): (n,) rows in processing order and (n_batches + 1,) batch
        boundaries into ``order``.
    """
    with _open_h5(Path(path)) as f:
        return f["plan/order"][()], f["plan/bounds"][()]


def read_micro_batches(path: str | Path) -> np.ndarray | None:
    """Read the rows per forward pass each written batch ran with.

    Args:
        path: a cache file written by one process.

    Returns:
        (n_batches,) int64, 0 for batches not yet written; None for a file made
        before the record existed (each batch was one forward pass).
    """
    with _open_h5(Path(path)) as f:
        return f["plan/micro_batch"][()] if "plan/micro_batch" in f else None


def create_cache(
    path: str | Path,
    *,
    attrs: dict[str, object],
    ids: Sequence[str],
    texts: Sequence[str],
    labels: np.ndarray,
    n_chars: np.ndarray,
    n_tokens: np.ndarray,
    extra: dict[str, Sequence[str]],
    layers: Sequence[int],
    d: int,
    dtype: str,
    order: np.ndarray,
    bounds: np.ndarray,
) -> None:
    """Create an empty cache: metadata, per-example data, plan and allocated features.

    Args:
        path: file to create (must not exist).
        attrs: file attributes (settings and fingerprints); format, version, layer
            convention and ``complete=False`` are added.
        ids, texts: (n,) example ids and texts.
        labels: (n,) 0/1 labels.
        n_chars, n_tokens: (n,) prompt lengths.
        extra: extra string fields, each (n,).
        layers: hidden_states indices to store.
        d: hidden width.
        dtype: stored dtype, ``"float16"`` or ``"float32"``.
        order: (n,) rows in processing order.
        bounds: (n_batches + 1,) batch boundaries into ``order``.
    """
    n = len(ids)
    with h5py.File(path, "w-") as f:
        f.attrs.update(
            {
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                "layer_convention": LAYER_CONVENTION,
                **attrs,
                "layers": np.asarray(layers, dtype=np.int64),
                "complete": False,
            }
        )
        f.create_dataset("ids", data=list(ids), dtype=_STR)
        f.create_dataset("texts", data=list(texts), dtype=_STR)
        f.create_dataset("labels", data=np.asarray(labels, dtype=np.int8))
        f.create_dataset("n_chars", data=np.asarray(n_chars, dtype=np.int32))
        f.create_dataset("n_tokens", data=np.asarray(n_tokens, dtype=np.int32))
        group = f.create_group("extra")
        for name, values in extra.items():
            group.create_dataset(name, data=list(values), dtype=_STR)
        plan = f.create_group("plan")
        plan.create_dataset("order", data=np.asarray(order, dtype=np.int64))
        plan.create_dataset("bounds", data=np.asarray(bounds, dtype=np.int64))
        _create_early(plan, "batches_done", (), np.dtype(np.int64), None)
        plan["batches_done"][()] = 0
        n_batches = len(bounds) - 1
        _create_early(plan, "micro_batch", (n_batches,), np.dtype(np.int64), None)
        if n_batches:
            plan["micro_batch"][...] = 0
        item = np.dtype(dtype)
        rows = max(1, min(n, _CHUNK_BYTES // (d * item.itemsize)))
        for layer in layers:
            _create_early(f, feature_name(layer), (n, d), item, (rows, d))


def _create_early(
    group: h5py.Group,
    name: str,
    shape: tuple[int, ...],
    dtype: np.dtype,
    chunks: tuple[int, ...] | None,
) -> None:
    """Create a dataset whose storage is allocated now, so later writes are raw data."""
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
    dcpl.set_fill_time(h5py.h5d.FILL_TIME_NEVER)
    if chunks is not None:
        dcpl.set_chunk(chunks)
    space = h5py.h5s.create_simple(shape) if shape else h5py.h5s.create(h5py.h5s.SCALAR)
    parent, _, leaf = name.rpartition("/")
    target = group.require_group(parent) if parent else group
    h5py.h5d.create(target.id, leaf.encode(), h5py.h5t.py_create(dtype), space, dcpl)


class Writer:
    """Writes batches of feature rows to a created cache from a background thread.

    The file's feature chunks and counter were allocated at creation, uncompressed, so
    their byte offsets are fixed: the writer reads them once through HDF5, closes the
    HDF5 handle, and then writes rows into a memory map of the file at those offsets.
    No HDF5 metadata changes until the file is marked complete, so a killed process
    cannot corrupt it, and a scattered row costs a memory copy rather than an HDF5
    selection. Each batch's rows go to every layer first, then the
    ``plan/batches_done`` counter is advanced, so it never covers a batch that is not
    in the file (a killed process's writes to the map stay in the page cache). The
    rows per forward pass a batch ran with go to ``plan/micro_batch`` before the
    counter too, so a resumed run continues with the same split. The file's blocks
    are allocated when the writer opens it, so a full disk is an error there (or,
    on platforms without ``posix_fallocate``, a killed process) and never a lost
    row: a write that fails for lack of space says the file is resumable.

    Args:
        path: a file made by `create_cache`.
        layers: the stored layers, in the order of the arrays given to `put`.
        on_batch: called from the writer thread after each batch is committed, with
            (batches done, total batches).
        depth: batches that may wait in the queue.
    """

    def __init__(
        self,
        path: str | Path,
        layers: Sequence[int],
        *,
        on_batch: Callable[[int, int], None] | None = None,
        depth: int = 2,
    ):
        self.path = Path(path)
        with h5py.File(self.path, "r") as f:
            datasets = [f[feature_name(layer)] for layer in layers]
            offsets = [_chunk_offsets(ds) for ds in datasets]
            chunk_rows = [ds.chunks[0] for ds in datasets]
            self._dtype, d = datasets[0].dtype, datasets[0].shape[1]
            counter = f["plan/batches_done"].id.get_offset()
            micro = f["plan"].get("micro_batch")
            offset = None if micro is None else micro.id.get_offset()
            micro = None if offset is None else (offset, micro.shape[0])
            self._n_batches = len(f["plan/bounds"]) - 1
            self.batches_done = int(f["plan/batches_done"][()])
        try:
            _reserve(self.path)
        except OSError as e:
            raise self._failure(e) from e
        self._map = np.memmap(self.path, dtype=np.uint8, mode="r+")
        self._layers = [
            (rows, self._layer_view(o, rows, d))
            for o, rows in zip(offsets, chunk_rows, strict=True)
        ]
        self._counter = self._map[counter : counter + 8].view(np.int64)
        self._micro = (
            None
            if micro is None
            else self._map[micro[0] : micro[0] + 8 * micro[1]].view(np.int64)
        )
        self._layer_ids = list(layers)
        self._on_batch = on_batch
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _layer_view(
        self, offsets: np.ndarray, chunk_rows: int, d: int
    ) -> np.ndarray | list[np.ndarray]:
        """A (rows, d) view of a layer in the map, or one view per chunk if the layer's
        chunks are not consecutive in the file."""
        chunk_bytes = chunk_rows * d * self._dtype.itemsize
        starts = offsets.tolist()
        if np.all(np.diff(offsets) == chunk_bytes):
            starts = starts[:1]
            chunk_bytes *= len(offsets)
        views = [
            self._map[o : o + chunk_bytes].view(self._dtype).reshape(-1, d)
            for o in starts
        ]
        return views[0] if len(views) == 1 else views

    def put(
        self,
        batch: int,
        rows: np.ndarray,
        features: np.ndarray,
        *,
        micro_batch: int | None = None,
    ) -> None:
        """Queue one batch for writing.

        Args:
            batch: the batch's index in the plan (batches must come in plan order).
            rows: (B,) dataset rows of the batch.
            features: (L, B, d) features in the stored dtype.
            micro_batch: rows per forward pass the batch ran with (default: all of
                them in one).
        """
        self._raise_if_failed()
        self._queue.put((batch, rows, features, micro_batch or len(rows)))

    def drain(self) -> None:
        """Wait until every queued batch is written (or writing failed)."""
        self._queue.join()
        self._raise_if_failed()

    def close(self, *, complete: bool, attrs: dict | None = None) -> None:
        """Wait for queued batches, then close the file.

        Args:
            complete: mark the file complete (all batches must be written).
            attrs: file attributes to set together with ``complete``.
        """
        self._queue.put(None)
        self._thread.join()
        self._map.flush()
        self._layers, self._counter, self._micro, self._map = [], None, None, None
        self._raise_if_failed()
        if complete:
            if self.batches_done != self._n_batches:
                raise CacheError(
                    f"{self.path}: only {self.batches_done} of {self._n_batches} "
                    "batches were written"
                )
            with h5py.File(self.path, "r+") as f:
                digests = feature_digests(f, self._layer_ids)
                f.attrs.update({**(attrs or {}), CHECKSUMS: digests, "complete": True})

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._failure(self._error) from self._error

    def _failure(self, error: BaseException) -> CacheError:
        """The error to raise for a failed write; a full disk says what is kept."""
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            return CacheError(
                f"no space left on the disk holding {self.path} ({error.strerror}): "
                f"{self.batches_done} of {self._n_batches} batches are written and "
                "kept, and the file is resumable: free some space, then run the same "
                "command again to resume it"
            )
        return CacheError(f"writing {self.path} failed: {error}")

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            try:
                if self._error is None:
                    self._write(*item)
            except BaseException as e:  # handed to the main thread by put/close
                self._error = e
            finally:
                self._queue.task_done()
        self._queue.task_done()

    def _write(
        self, batch: int, rows: np.ndarray, features: np.ndarray, micro_batch: int
    ) -> None:
        if batch != self.batches_done:
            raise CacheError(f"batch {batch} arrived, expected {self.batches_done}")
        if features.dtype != self._dtype:
            raise CacheError(
                f"features are {features.dtype}, the file holds {self._dtype}"
            )
        for (chunk_rows, view), values in zip(self._layers, features, strict=True):
            if isinstance(view, np.ndarray):
                view[rows] = values
                continue
            chunk, within = np.divmod(rows, chunk_rows)
            for c in np.unique(chunk).tolist():
                pick = chunk == c
                view[c][within[pick]] = values[pick]
        if self._micro is not None:
            self._micro[batch] = micro_batch
        self._counter[0] = batch + 1
        self.batches_done = batch + 1
        if self._on_batch is not None:
            self._on_batch(batch + 1, self._n_batches)


def _chunk_offsets(dataset: h5py.Dataset) -> np.ndarray:
    """File byte offset of each row-chunk of an allocated, unfiltered dataset."""
    rows = dataset.chunks[0]
    offsets = np.full(-(-dataset.shape[0] // rows), -1, dtype=np.int64)
    for i in range(dataset.id.get_num_chunks()):
        info = dataset.id.get_chunk_info(i)
        offsets[info.chunk_offset[0] // rows] = info.byte_offset
    if (offsets < 0).any() or dataset.compression is not None:
        raise CacheError(f"{dataset.name} is not fully allocated and uncompressed")
    return offsets


def _reserve(path: Path) -> None:
    """Allocate the disk blocks of every byte of ``path`` now.

    A file made by `create_cache` is sparse: its feature chunks have offsets but no
    blocks until written. The writer fills them through a memory map, and a write to
    a page the full disk cannot back kills the process (SIGBUS, "Bus error") rather
    than raising; allocating first turns a full disk into an OSError (ENOSPC) here.
    Blocks already allocated are left as they are, so the bytes do not change.
    Platforms without ``posix_fallocate`` (macOS) keep the sparse file.
    """
    if not hasattr(os, "posix_fallocate"):
        return
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, os.fstat(fd).st_size)
    finally:
        os.close(fd)


def write_virtual(
    path: str | Path,
    shard_paths: Sequence[str | Path],
    *,
    attrs: dict[str, object],
    ids: Sequence[str],
    texts: Sequence[str],
    labels: np.ndarray,
    n_chars: np.ndarray,
    extra: dict[str, Sequence[str]],
) -> None:
    """Write the main file joining complete shard files with virtual datasets.

    Args:
        path: main file to write (replaced if it exists).
        shard_paths: complete shard files, in row order, in the same folder as ``path``.
        attrs: file attributes of the whole cache; attributes the shards share (e.g.
            hidden_size, last_layer_post_final_norm, created) come from shard 0.
        ids, texts, labels, n_chars, extra: per-example data of all rows.
    """
    path = Path(path)
    shards = [Cache(p) for p in shard_paths]
    n, d = len(ids), shards[0].d
    n_tokens = np.concatenate([s.n_tokens for s in shards])
    if sum(s.n for s in shards) != n:
        raise CacheError(f"shards of {path} hold {n_tokens.size} rows, expected {n}")
    own = ("rank", "row_start", "row_end", "complete", "layers", CHECKSUMS)
    shared = {k: v for k, v in shards[0].meta.items() if k not in own}
    tmp = path.with_name(path.name + ".tmp")
    with h5py.File(tmp, "w") as f:
        f.attrs.update(
            {
                **shared,
                **attrs,
                "layers": np.asarray(shards[0].layers, dtype=np.int64),
                "shards": json.dumps([Path(p).name for p in shard_paths]),
                "complete": True,
            }
        )
        f.create_dataset("ids", data=list(ids), dtype=_STR)
        f.create_dataset("texts", data=list(texts), dtype=_STR)
        f.create_dataset("labels", data=np.asarray(labels, dtype=np.int8))
        f.create_dataset("n_chars", data=np.asarray(n_chars, dtype=np.int32))
        f.create_dataset("n_tokens", data=n_tokens.astype(np.int32))
        group = f.create_group("extra")
        for name, values in extra.items():
            group.create_dataset(name, data=list(values), dtype=_STR)
        dtype = np.dtype(shards[0].meta["dtype"])
        for layer in shards[0].layers:
            layout = h5py.VirtualLayout(shape=(n, d), dtype=dtype)
            start = 0
            for shard in shards:
                source = h5py.VirtualSource(
                    shard.path.name, feature_name(layer), shape=(shard.n, d)
                )
                layout[start : start + shard.n] = source
                start += shard.n
            f.create_virtual_dataset(feature_name(layer), layout, fillvalue=np.nan)
    with h5py.File(tmp, "r+") as f:  # the shards are read through the main file
        f.attrs[CHECKSUMS] = feature_digests(f, shards[0].layers)
    tmp.replace(path)


class Cache:
    """A cache file opened for reading.

    Per-example arrays are read when the cache is opened; texts and features are read
    on demand. Usable as a context manager, which keeps the file open for the block;
    without one, each read opens and closes the file.

    Args:
        path: the cache file.
        allow_partial: open an incomplete file, exposing only the rows written so far.

    Attributes:
        path: the file.
        meta: the file attributes as Python values.
        layers: stored hidden_states indices (0 = embeddings, i = after block i).
        ids: (n,) str array of example ids, stable across models for a task's rows.
        labels: (n,) int8 0/1 labels.
        n_chars, n_tokens: (n,) int32 prompt lengths in characters and tokens.
        d: hidden width.
        complete: whether every row was written.
    """

    def __init__(self, path: str | Path, *, allow_partial: bool = False):
        self.path = Path(path)
        self._file: h5py.File | None = None
        with self._handle() as f:
            self.meta: dict[str, object] = {
                k: _to_python(v) for k, v in f.attrs.items()
            }
            _check_format(self.path, self.meta)
            self.complete = bool(self.meta.get("complete"))
            self._rows: np.ndarray | None = None
            if not self.complete:
                order, bounds = f["plan/order"][()], f["plan/bounds"][()]
                done = int(f["plan/batches_done"][()])
                if not allow_partial:
                    raise CacheError(
                        f"{self.path} is incomplete ({bounds[done]} of {order.size} "
                        "rows written); finish it by running the same extract command "
                        "again, or open it with allow_partial=True"
                    )
                self._rows = np.sort(order[: bounds[done]])
            self.layers: list[int] = [int(x) for x in self.meta["layers"]]
            self._check_lengths(f)
            self.ids: np.ndarray = self._read(f, "ids").astype(str)
            self.labels: np.ndarray = self._read(f, "labels").astype(np.int8)
            self.n_chars: np.ndarray = self._read(f, "n_chars")
            self.n_tokens: np.ndarray = self._read(f, "n_tokens")
            first = f[feature_name(self.layers[0])]
            self.d: int = int(first.shape[1])
            self._check_sources(f)

    def __enter__(self) -> Cache:
        self._file = _open_h5(self.path)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"Cache({str(self.path)!r}, "
            f"model={printable(repr(self.meta.get('model')), 80)}, "
            f"task={printable(repr(self.meta.get('task')), 80)}, "
            f"n={self.n}, d={self.d}, "
            f"layers={self.layers})"
        )

    def close(self) -> None:
        """Close the file held open by a ``with`` block (reads reopen it)."""
        if self._file is not None:
            self._file.close()
            self._file = None

    @property
    def n(self) -> int:
        """Number of rows (rows written so far for a partial cache)."""
        return int(self.ids.size)

    @property
    def fingerprint(self) -> str:
        """The task fingerprint: sha256 over all the task's texts and labels."""
        return str(self.meta["task_fingerprint"])

    @cached_property
    def texts(self) -> np.ndarray:
        """(n,) object array of the task texts."""
        with self._handle() as f:
            return self._read(f, "texts").astype(object)

    @cached_property
    def extra(self) -> dict[str, np.ndarray]:
        """The task's extra fields, each an (n,) object array."""
        with self._handle() as f:
            return {k: self._read(f, f"extra/{k}").astype(object) for k in f["extra"]}

    def features(self, layer: int) -> np.ndarray:
        """Read one layer's features in one contiguous read.

        Args:
            layer: hidden_states index (0 = embeddings, i = after block i; negative
                counts from the model's last, e.g. -1 = the final layer).

        Returns:
            (n, d) array in the stored dtype.
        """
        name = feature_name(self._resolve(layer))
        with self._handle() as f:
            dataset = f[name]
            out = np.empty(dataset.shape, dtype=dataset.dtype)
            if out.size:
                dataset.read_direct(out)
        return out if self._rows is None else out[self._rows]

    def validate(self) -> None:
        """Check labels, ids, lengths and that every feature value is finite.

        Raises:
            CacheError naming each problem found.
        """
        problems = []
        if not np.isin(self.labels, (0, 1)).all():
            problems.append("labels other than 0/1")
        unique, counts = np.unique(self.ids, return_counts=True)
        if (counts > 1).any():
            problems.append(f"duplicate ids (e.g. {str(unique[counts > 1][0])!r})")
        for name in ("labels", "n_chars", "n_tokens"):
            if len(getattr(self, name)) != self.n:
                problems.append(
                    f"{name} has {len(getattr(self, name))} rows, not {self.n}"
                )
        for layer in self.layers:
            x = self.features(layer)
            if x.shape != (self.n, self.d):
                problems.append(
                    f"layer {layer} has shape {x.shape}, not {(self.n, self.d)}"
                )
            bad = ~np.isfinite(x).all(axis=1)
            if bad.any():
                problems.append(
                    f"layer {layer}: {int(bad.sum())} rows with NaN or inf "
                    f"(first id {str(self.ids[np.argmax(bad)])!r})"
                )
        problems += self.check_checksums()
        if problems:
            raise CacheError(f"{self.path} failed validation: " + "; ".join(problems))

    @property
    def has_checksums(self) -> bool:
        """Whether the file stores its feature checksums (files made before they
        were added do not; they stay readable)."""
        return CHECKSUMS in self.meta

    def check_checksums(self) -> list[str]:
        """Compare each feature layer with the sha256 stored when the file was
        completed.

        Returns:
            One line per layer whose values changed since (none if all match, or
            if the file stores no checksums: see `has_checksums`).
        """
        if not self.has_checksums or not self.complete:
            return []
        stored = json.loads(str(self.meta[CHECKSUMS]))
        with self._handle() as f:
            return [
                f"layer {layer}: its values changed after the file was written "
                "(sha256 differs from the stored one); re-extract it"
                for layer in self.layers
                if stored.get(str(layer)) != _digest(f[feature_name(layer)])
            ]

    def _resolve(self, layer: int) -> int:
        blocks = int(self.meta["n_blocks"])
        resolved = layer + blocks + 1 if layer < 0 else layer
        if resolved not in self.layers:
            raise CacheError(
                f"layer {layer} is not stored in {self.path}; stored layers "
                f"(hidden_states index, 0 = embeddings, model has {blocks} blocks): "
                f"{self.layers}"
            )
        return resolved

    @contextmanager
    def _handle(self) -> Iterator[h5py.File]:
        if self._file is not None:
            yield self._file
            return
        with _open_h5(self.path) as f:
            yield f

    def _read(self, f: h5py.File, name: str) -> np.ndarray:
        dataset = f[name]
        values = dataset.asstr()[()] if dataset.dtype.kind == "O" else dataset[()]
        values = np.asarray(values)
        return values if self._rows is None else values[self._rows]

    def _check_lengths(self, f: h5py.File) -> None:
        """Refuse a file whose per-row datasets and feature layers do not all hold
        the same number of rows (a file edited or written by other code)."""
        names = ["ids", "texts", "labels", "n_chars", "n_tokens"]
        names += [f"extra/{k}" for k in f.get("extra", {})]
        names += [feature_name(layer) for layer in self.layers]
        missing = [name for name in names if name not in f]
        if missing:
            raise CacheError(
                f"{self.path} lacks {', '.join(missing)}; it is damaged or was not "
                "written by probe-lab: re-extract it to a new --out"
            )
        rows = {name: len(f[name]) for name in names}
        if len(set(rows.values())) > 1:
            shown = ", ".join(f"{name} {n}" for name, n in rows.items())
            raise CacheError(
                f"{self.path} is inconsistent: its datasets hold different numbers of "
                f"rows ({shown}); it is damaged or was edited: re-extract it to a "
                "new --out"
            )

    def _check_sources(self, f: h5py.File) -> None:
        dataset = f[feature_name(self.layers[0])]
        if not dataset.is_virtual:
            return
        for source in dataset.virtual_sources():
            shard = self.path.parent / source.file_name
            if not shard.exists():
                raise CacheError(
                    f"{self.path} joins shard files and {shard} is missing; keep the "
                    "shard files in the same folder as the main file"
                )


def open_cache(path: str | Path, *, allow_partial: bool = False) -> Cache:
    """Open a cache file for reading.

    Args:
        path: the cache file.
        allow_partial: open an incomplete file (only the rows written so far).

    Returns:
        The `Cache`.
    """
    return Cache(path, allow_partial=allow_partial)


def join(a: Cache, b: Cache) -> tuple[np.ndarray, np.ndarray]:
    """Align the rows of two caches by example id.

    Args:
        a, b: caches of the same task rows (e.g. two models).

    Returns:
        (idx_a, idx_b): int64 arrays with ``a.ids[idx_a] == b.ids[idx_b]``, over the
        ids in both, in ``a``'s row order.
    """
    for cache in (a, b):
        unique, counts = np.unique(cache.ids, return_counts=True)
        if (counts > 1).any():
            raise CacheError(
                f"{cache.path} has duplicate example ids (e.g. "
                f"{str(unique[counts > 1][0])!r}); ids must be unique to join caches"
            )
    _, idx_a, idx_b = np.intersect1d(
        a.ids, b.ids, assume_unique=True, return_indices=True
    )
    if idx_a.size == 0:
        raise CacheError(
            f"{a.path} (task {printable(repr(a.meta.get('task')), 80)}) and {b.path} "
            f"(task {printable(repr(b.meta.get('task')), 80)}) share no example ids; "
            "extract both from the same task"
        )
    keep = np.argsort(idx_a)
    idx_a, idx_b = idx_a[keep].astype(np.int64), idx_b[keep].astype(np.int64)
    differ = a.labels[idx_a] != b.labels[idx_b]
    if differ.any():
        raise CacheError(
            f"{a.path} and {b.path} give different labels to {int(differ.sum())} "
            f"shared ids (e.g. {str(a.ids[idx_a][differ][0])!r}); they are not the "
            "same task"
        )
    return idx_a, idx_b
