"""The HDF5 store: schema round trip, reader errors, partial files, join."""

from __future__ import annotations

import subprocess
import sys

import h5py
import numpy as np
import pytest

import activation_cache
from activation_cache import CacheError, join, open_cache

pytest_plugins = ["cache_fixtures"]


def _features(n, d=8, seed=0, dtype=np.float16):
    rng = np.random.default_rng(seed)
    return {
        0: rng.normal(size=(n, d)).astype(dtype),
        2: rng.normal(size=(n, d)).astype(dtype),
    }


def test_round_trip(tmp_path, write_cache):
    ids = [f"r{i}" for i in range(10)]
    feats = _features(10)
    path = write_cache(tmp_path / "c.h5", ids, feats)
    cache = open_cache(path)
    assert cache.layers == [0, 2]
    assert cache.n == 10 and cache.d == 8 and cache.path == path
    assert cache.ids.tolist() == ids
    assert cache.labels.dtype == np.int8 and cache.labels.tolist() == [0, 1] * 5
    assert cache.texts[3] == "text r3"
    assert cache.extra["hint"].tolist() == ["h"] * 10
    assert cache.n_tokens.tolist() == [2] * 10
    assert cache.fingerprint == "sha256:test"
    assert cache.meta["format"] == "probe-lab-cache" and cache.meta["complete"]
    for layer in (0, 2):
        x = cache.features(layer)
        assert x.dtype == np.float16
        np.testing.assert_array_equal(x, feats[layer])
    np.testing.assert_array_equal(cache.features(-1), feats[2])
    with cache as held:
        np.testing.assert_array_equal(held.features(0), feats[0])
    cache.validate()


def test_missing_layer(tmp_path, write_cache):
    cache = open_cache(write_cache(tmp_path / "c.h5", ["a", "b"], _features(2)))
    with pytest.raises(CacheError, match=r"layer 1 is not stored.*\[0, 2\]"):
        cache.features(1)


def test_reader_errors(tmp_path, write_cache):
    with pytest.raises(CacheError, match="no cache file"):
        open_cache(tmp_path / "nope.h5")
    text = tmp_path / "text.h5"
    text.write_text("hello")
    with pytest.raises(CacheError, match="not a readable HDF5 file"):
        open_cache(text)
    good = write_cache(tmp_path / "c.h5", [f"r{i}" for i in range(64)], _features(64))
    cut = tmp_path / "cut.h5"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CacheError, match="truncated"):
        open_cache(cut)
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["x"] = np.zeros(3)
    with pytest.raises(CacheError, match="not a probe-lab cache"):
        open_cache(foreign)
    with h5py.File(good, "r+") as f:
        f.attrs["format_version"] = 99
    with pytest.raises(CacheError, match="format version 99"):
        open_cache(good)


def test_partial_file(tmp_path, write_cache):
    ids = [f"r{i}" for i in range(10)]
    feats = _features(10)
    path = write_cache(tmp_path / "p.h5", ids, feats, batch_size=4, batches=2)
    with pytest.raises(CacheError, match=r"incomplete \(8 of 10 rows.*allow_partial"):
        open_cache(path)
    cache = open_cache(path, allow_partial=True)
    # plan order is reversed rows, so 2 batches of 4 cover rows 2..9
    assert cache.n == 8 and cache.ids.tolist() == ids[2:]
    np.testing.assert_array_equal(cache.features(2), feats[2][2:])


def test_writer_handles_chunks_in_any_file_order(tmp_path, write_cache):
    from activation_cache import store

    feats = _features(10)
    path = write_cache(
        tmp_path / "c.h5", [f"r{i}" for i in range(10)], feats, batches=0
    )
    with h5py.File(path, "r+") as f:
        # re-create layer 2 with its chunks allocated last-first in the file
        del f["features/layer_02"]
        ds = f.create_dataset("features/layer_02", (10, 8), "f2", chunks=(3, 8))
        for start in (9, 6, 3, 0):
            ds[start : start + 3] = 0
    writer = store.Writer(path, [0, 2])
    assert isinstance(writer._layers[1][1], list)
    order, bounds = store.read_plan(path)
    for b in range(len(bounds) - 1):
        rows = order[bounds[b] : bounds[b + 1]]
        writer.put(b, rows, np.stack([feats[0][rows], feats[2][rows]]))
    writer.close(complete=True)
    cache = open_cache(path)
    np.testing.assert_array_equal(cache.features(0), feats[0])
    np.testing.assert_array_equal(cache.features(2), feats[2])


def test_validate_finds_non_finite_values(tmp_path, write_cache):
    feats = _features(6, dtype=np.float32)
    feats[2][4, 1] = np.nan
    cache = open_cache(write_cache(tmp_path / "n.h5", list("abcdef"), feats))
    with pytest.raises(
        CacheError, match=r"layer 2: 1 rows with NaN or inf \(first id 'e'\)"
    ):
        cache.validate()


def test_validate_finds_finite_garbage_by_the_stored_checksums(tmp_path, write_cache):
    feats = _features(6, dtype=np.float32)
    path = write_cache(tmp_path / "c.h5", list("abcdef"), feats)
    cache = open_cache(path)
    assert cache.has_checksums and cache.check_checksums() == []
    cache.validate()
    with h5py.File(path, "r+") as f:  # a finite row overwritten after writing
        f["features/layer_02"][3] = 1.5
    with pytest.raises(CacheError, match=r"layer 2: its values changed after"):
        open_cache(path).validate()
    with h5py.File(path, "r+") as f:  # a cache made before checksums: readable
        del f.attrs["feature_sha256"]
    old = open_cache(path)
    assert not old.has_checksums and old.check_checksums() == []
    old.validate()


def test_a_folder_or_short_datasets_get_a_clear_error(tmp_path, write_cache):
    with pytest.raises(CacheError, match=r"is a folder, not a cache file"):
        open_cache(tmp_path)
    path = write_cache(tmp_path / "c.h5", list("abcdef"), _features(6))
    with h5py.File(path, "r+") as f:
        del f["labels"]
        f["labels"] = np.zeros(4, dtype=np.int8)
    with pytest.raises(CacheError, match=r"different numbers of rows.*labels 4"):
        open_cache(path)
    with h5py.File(path, "r+") as f:
        del f["labels"]
    with pytest.raises(CacheError, match=r"lacks labels"):
        open_cache(path)


def test_join_shuffled_subsets(tmp_path, write_cache):
    ids = [f"r{i}" for i in range(20)]
    labels = np.arange(20) % 2
    rng = np.random.default_rng(1)
    pa, pb = rng.permutation(20)[:15], rng.permutation(20)[:12]
    a = open_cache(
        write_cache(
            tmp_path / "a.h5", [ids[i] for i in pa], _features(15), labels=labels[pa]
        )
    )
    b = open_cache(
        write_cache(
            tmp_path / "b.h5", [ids[i] for i in pb], _features(12, 4), labels=labels[pb]
        )
    )
    ia, ib = join(a, b)
    assert ia.dtype == np.int64 and ib.dtype == np.int64
    np.testing.assert_array_equal(a.ids[ia], b.ids[ib])
    assert set(a.ids[ia]) == set(a.ids) & set(b.ids)
    assert np.all(np.diff(ia) > 0)
    np.testing.assert_array_equal(a.labels[ia], b.labels[ib])


def test_join_errors(tmp_path, write_cache):
    a = open_cache(write_cache(tmp_path / "a.h5", ["x", "y"], _features(2)))
    b = open_cache(write_cache(tmp_path / "b.h5", ["p", "q"], _features(2)))
    with pytest.raises(CacheError, match="share no example ids"):
        join(a, b)
    dup = open_cache(write_cache(tmp_path / "d.h5", ["x", "x"], _features(2)))
    with pytest.raises(CacheError, match=r"duplicate example ids \(e.g. 'x'\)"):
        join(a, dup)
    flipped = open_cache(
        write_cache(
            tmp_path / "f.h5", ["x", "y"], _features(2), labels=np.array([1, 0])
        )
    )
    with pytest.raises(CacheError, match="different labels"):
        join(a, flipped)


def test_reader_needs_no_torch_transformers_or_jax(tmp_path, write_cache):
    path = write_cache(tmp_path / "c.h5", ["a", "b"], _features(2))
    code = (
        "import sys\n"
        "sys.modules['torch'] = None\n"
        "sys.modules['transformers'] = None\n"
        "sys.modules['jax'] = None\n"
        "import activation_cache\n"
        "from activation_cache import cli\n"
        f"c = activation_cache.open_cache({str(path)!r})\n"
        "assert c.features(0).shape == (2, 8)\n"
        "assert activation_cache.load_task('larger_than', size=10).labels.sum() == 5\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_public_api():
    assert set(activation_cache.__all__) >= {
        "open_cache",
        "join",
        "Cache",
        "extract",
        "ExtractConfig",
        "load_task",
        "TASKS",
    }
