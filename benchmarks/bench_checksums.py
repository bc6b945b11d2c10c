"""What the stored feature checksums cost, printed as a table.

Run: ``python benchmarks/bench_checksums.py`` (about half a minute on 2 CPU cores).

A cache of ``--rows`` x ``--layers`` x ``--width`` float16 features (default 20,000 x
7 x 384: MiniLM, every hidden state) is written through the store's writer, which
at completion computes the sha256 of every layer (the ``feature_sha256``
attribute). Timed, best of ``--repeats``:

1. writing the file (create, write every batch, mark complete) with the digests,
   against the digests alone (`activation_cache.store.feature_digests` on the
   finished file, pages in the OS cache as right after writing);
2. ``Cache.validate()`` (labels, ids, every value finite, the checksums) against
   the finite check alone (reading every layer and ``np.isfinite``), i.e. what
   ``probe-lab info --validate`` costs more now;
3. for scale, the same features written with HDF5's Fletcher-32 filter through
   h5py (the alternative; the writer's memory-mapped, fixed-offset chunks rule a
   filter out) against plain h5py writes.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

from activation_cache import open_cache, store


def write_cache(path: Path, x: np.ndarray, batch: int = 256) -> None:
    """Write ``x`` (layers, n, d) as a complete cache through the store's writer."""
    layers, n, d = x.shape
    order = np.arange(n)
    bounds = np.append(np.arange(0, n, batch), n)
    ids = [f"r{i}" for i in range(n)]
    store.create_cache(
        path,
        attrs={"task": "bench", "task_fingerprint": "x", "dtype": "float16"}
        | {"n_blocks": layers - 1, "model": "bench"},
        ids=ids,
        texts=ids,
        labels=np.arange(n) % 2,
        n_chars=np.ones(n, dtype=np.int32),
        n_tokens=np.ones(n, dtype=np.int32),
        extra={},
        layers=list(range(layers)),
        d=d,
        dtype="float16",
        order=order,
        bounds=bounds,
    )
    writer = store.Writer(path, list(range(layers)))
    for b in range(len(bounds) - 1):
        writer.put(b, order[bounds[b] : bounds[b + 1]], x[:, bounds[b] : bounds[b + 1]])
    writer.close(complete=True)


def best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--layers", type=int, default=7)
    parser.add_argument("--width", type=int, default=384)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.layers, args.rows, args.width)).astype(np.float16)
    mb = x.nbytes / 2**20
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "c.h5"

        def write() -> None:
            path.unlink(missing_ok=True)
            write_cache(path, x)

        wrote = best(write, args.repeats)
        with h5py.File(path) as f:
            digests = best(
                lambda: store.feature_digests(f, range(args.layers)), args.repeats
            )
        cache = open_cache(path)

        def finite_only() -> None:
            for layer in cache.layers:
                np.isfinite(cache.features(layer)).all()

        finite = best(finite_only, args.repeats)
        validate = best(cache.validate, args.repeats)

        def h5_write(**kwargs) -> None:
            with h5py.File(Path(folder) / "f.h5", "w") as f:
                for i, layer in enumerate(x):
                    f.create_dataset(
                        f"l{i}", data=layer, chunks=(1024, args.width), **kwargs
                    )

        plain = best(h5_write, args.repeats)
        fletcher = best(lambda: h5_write(fletcher32=True), args.repeats)
    print(f"{args.rows} x {args.layers} x {args.width} float16 = {mb:.0f} MB")
    print(f"write (writer, digests included)   {wrote:7.3f} s")
    print(
        f"  of which the sha256 digests       {digests:7.3f} s "
        f"({digests / wrote:.0%} of the write, {mb / digests:.0f} MB/s)"
    )
    print(f"validate (finite + checksums)      {validate:7.3f} s")
    print(
        f"  finite check alone                {finite:7.3f} s "
        f"(validate costs {validate / finite:.2f}x it)"
    )
    print(f"h5py write, plain chunks           {plain:7.3f} s")
    print(
        f"h5py write, Fletcher-32 filter     {fletcher:7.3f} s "
        f"({fletcher / plain:.2f}x plain)"
    )


if __name__ == "__main__":
    main()
