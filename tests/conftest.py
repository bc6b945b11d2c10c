"""Shared fixtures: small synthetic probe problems with a known truth."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

from probe_lab._jax import count_compilations as count_compiles

# The probe-lab command keeps compiled programs on disk; tests that run it (in
# this process or a child) must compile as a fresh machine would, so that
# compilation counts mean the same on every run of the suite.
os.environ["PROBE_LAB_COMPILE_CACHE"] = "off"

ROOT = Path(__file__).resolve().parents[1]
_SCRATCH = {".pytest_cache", "__pycache__", ".hypothesis", ".coverage", ".ruff_cache"}


def _clone_state() -> dict[str, int]:
    """The clone's top-level entries and every file under its ``runs/`` folder,
    with their modification times."""
    state = {p.name: 0 for p in ROOT.iterdir() if p.name not in _SCRATCH}
    runs = ROOT / "runs"
    if runs.is_dir():
        for path in runs.rglob("*"):
            state[str(path.relative_to(ROOT))] = path.stat().st_mtime_ns
    return state


@pytest.fixture(autouse=True)
def leaves_the_clone_alone(request):
    """Fail a test that writes into the clone (``runs/``, or a new file beside
    the README): tests write only to temporary folders (``tmp_path``)."""
    before = _clone_state()
    yield
    changed = sorted(set(before.items()) ^ set(_clone_state().items()))
    if changed:
        shown = ", ".join(dict.fromkeys(name for name, _ in changed))
        pytest.fail(
            f"{request.node.nodeid} wrote into the clone ({shown}); write to "
            "tmp_path instead (e.g. pass cache_dir / --cache-dir)",
            pytrace=False,
        )


@pytest.fixture
def compiles():
    return count_compiles


def make_problem(n=240, d=12, n_probes=6, noise=0.5, seed=0, scale=3.0):
    """Features with uneven scales and labels from planted directions plus noise.

    Returns:
        x (n, d) float32, y (P, n) float32 labels, truth directions (P, d).
    """
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)) * rng.uniform(0.2, scale, size=d) + rng.normal(size=d)
    z = (x - x.mean(0)) / x.std(0)
    truth = rng.normal(size=(n_probes, d))
    logits = z @ truth.T + noise * rng.normal(size=(n, n_probes))
    return x.astype(np.float32), (logits > 0).T.astype(np.float32), truth


@pytest.fixture
def problem():
    return make_problem()


def write_synthetic_cache(
    path,
    *,
    n=1200,
    d=16,
    seed=0,
    layers=(1, 2),
    noise=0.3,
    dtype="float32",
    extra=None,
):
    """A cache file of planted features: latent factors of decreasing variance (so
    PCA order is coordinate order), each carrying part of the label.

    ``extra``, if given, maps the labels to extra string fields.

    Returns:
        the path; layer ``layers[-1]`` holds the features, earlier layers a noisier
        copy (a weaker representation).
    """
    from activation_cache import store

    rng = np.random.default_rng(seed)
    spread = np.linspace(3.0, 0.5, d)
    z = rng.normal(size=(n, d)) * spread
    # Each factor's share of the label decays with its variance rank, so M_k
    # (the first k principal components) grows stronger with k.
    share = np.linspace(1.0, 0.25, d) * rng.choice([-1.0, 1.0], size=d)
    logits = z @ (share / spread) + noise * rng.normal(size=n)
    labels = (logits > np.median(logits)).astype(np.int8)
    n_chars = rng.integers(10, 80, size=n)
    ids = [f"row-{i:05d}" for i in range(n)]
    feats = {}
    for j, layer in enumerate(layers):
        blur = (len(layers) - 1 - j) * 2.0
        feats[layer] = (z + blur * rng.normal(size=z.shape)).astype(dtype)
    order = np.arange(n)
    bounds = np.append(np.arange(0, n, 256), n)
    store.create_cache(
        path,
        attrs={
            "task": "planted",
            "task_fingerprint": f"sha256:planted-{seed}",
            "dtype": dtype,
            "n_blocks": max(layers),
            "model": "synthetic",
        },
        ids=ids,
        texts=[f"text {i}" for i in ids],
        labels=labels,
        n_chars=n_chars,
        n_tokens=n_chars // 4,
        extra=extra(labels) if extra else {},
        layers=list(layers),
        d=d,
        dtype=dtype,
        order=order,
        bounds=bounds,
    )
    writer = store.Writer(path, list(layers))
    for b in range(len(bounds) - 1):
        rows = order[bounds[b] : bounds[b + 1]]
        writer.put(b, rows, np.stack([feats[layer][rows] for layer in layers]))
    writer.close(complete=True)
    return path


def same_datasets(a, b) -> int:
    """Assert two HDF5 files hold the same datasets, byte for byte; count them."""
    import h5py

    names: list[str] = []
    with h5py.File(a) as fa, h5py.File(b) as fb:
        fa.visititems(
            lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None
        )
        for name in names:
            x, y = fa[name], fb[name]
            if x.dtype.kind == "O":
                assert x.asstr()[()].tolist() == y.asstr()[()].tolist(), name
            else:
                assert x[()].tobytes() == y[()].tobytes(), name
    return len(names)


def pytest_runtest_setup(item):
    """One torch thread for every test, once a test module has imported torch (this
    file does not import it). The test models are tiny, so a second thread mostly
    adds overhead. Measured on 2 shared cores: the extraction and capture tests
    took 36-40 s (user CPU 47-51 s) with one thread, 40-43 s (52-57 s) with
    torch's default of two; over all the activation_cache and bad-input tests the
    wall-time difference was inside run-to-run noise (104-122 s either way)."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.get_num_threads() != 1:
        torch.set_num_threads(1)
