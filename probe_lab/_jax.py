"""Small JAX runtime helpers shared by the study runner and the tests."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from jax import monitoring

_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
_CACHE_HIT_EVENT = "/jax/compilation_cache/cache_hits"


class Compilations(list):
    """Seconds of each XLA compilation (a list), and in :attr:`loaded` the
    seconds of each program loaded from the on-disk compilation cache instead
    (:func:`probe_lab.use_compile_cache`): JAX times both as a compilation."""

    loaded: list[float]


@contextlib.contextmanager
def count_compilations() -> Iterator[Compilations]:
    """Yield a :class:`Compilations` that ends up holding the seconds of each
    XLA compilation inside (programs loaded from the disk cache apart)."""
    seen = Compilations()
    seen.loaded = []
    hit = [False]  # JAX reports a cache hit inside the compilation it times

    def on_event(event: str, *_args, **_kwargs) -> None:
        if event == _CACHE_HIT_EVENT:
            hit[0] = True

    def on_duration(event: str, duration: float, *_args, **_kwargs) -> None:
        if event == _COMPILE_EVENT:
            (seen.loaded if hit[0] else seen).append(duration)
            hit[0] = False

    monitoring.register_event_listener(on_event)
    monitoring.register_event_duration_secs_listener(on_duration)
    try:
        yield seen
    finally:
        monitoring.unregister_event_duration_listener(on_duration)
        monitoring.unregister_event_listener(on_event)
