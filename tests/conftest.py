"""Shared fixtures: small synthetic probe problems with a known truth."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
from jax import monitoring

_compiles: list[str] = []


def _count(name: str, *_args, **_kwargs) -> None:
    if name == "/jax/core/compile/backend_compile_duration":
        _compiles.append(name)


monitoring.register_event_duration_secs_listener(_count)


@contextlib.contextmanager
def count_compiles():
    """Yield a list that ends up holding one entry per XLA compilation inside."""
    start = len(_compiles)
    seen: list[str] = []
    yield seen
    seen.extend(_compiles[start:])


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
