"""Small JAX runtime helpers shared by the study runner and the tests."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from jax import monitoring

_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


@contextlib.contextmanager
def count_compilations() -> Iterator[list[float]]:
    """Yield a list that ends up holding the seconds of each XLA compilation inside."""
    seen: list[float] = []

    def listen(event: str, duration: float, *_args, **_kwargs) -> None:
        if event == _COMPILE_EVENT:
            seen.append(duration)

    monitoring.register_event_duration_secs_listener(listen)
    try:
        yield seen
    finally:
        monitoring.unregister_event_duration_listener(listen)
