"""One JAX device per CPU core, so probe chunks train side by side.

XLA runs one small product at a time across all cores, and the probe steps of a
study are small (a 128-row minibatch per seed): the cores spend much of a step
waiting on each other. Split into one JAX device per core, each device trains its
own chunks and the cores stop waiting: on a 2-core machine the study benchmark
(2,240 students, ``benchmarks/bench_study.py``) runs in 68 s instead of 126 s.
:func:`probe_lab.train_probes` already spreads chunks over all local devices; this
only makes the CPU offer more than one. It must run before JAX touches a device;
the ``probe-lab`` command does it at start.

:func:`use_compile_cache` keeps compiled XLA programs on disk, so a second run of
a study with the same shapes loads its trainers instead of compiling them (about
2-3 s per trainer program on 2 CPU cores); the ``probe-lab`` command turns it on.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import jax

__all__ = ["compile_cache_dir", "cpu_cores", "use_compile_cache", "use_cpu_cores"]

COMPILE_CACHE_ENV = "PROBE_LAB_COMPILE_CACHE"
COMPILE_CACHE_BYTES = 2 * 1024**3
"""The on-disk compilation cache's size limit; least recently used entries go."""

MAX_DEVICES = 16


def cpu_cores() -> int:
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def use_cpu_cores(n: int | None = None) -> int:
    """Ask JAX for ``n`` CPU devices (default: one per core, at most 16).

    Leaves an explicit choice alone: ``--xla_force_host_platform_device_count`` in
    ``XLA_FLAGS`` or ``jax_num_cpu_devices`` already set. On a machine with a GPU
    the CPU devices go unused (training runs on the default backend's devices).

    Returns:
        The number of CPU devices JAX will have (or has, if it already started).
    """
    if "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", ""):
        return len(jax.devices("cpu"))
    if jax.config.jax_num_cpu_devices > 0:
        return int(jax.config.jax_num_cpu_devices)
    want = int(n) if n is not None else min(cpu_cores(), MAX_DEVICES)
    if want < 1:
        raise ValueError(f"use_cpu_cores needs n >= 1, got {n}")
    try:
        jax.config.update("jax_num_cpu_devices", want)
    except RuntimeError:  # JAX has started: too late to split the CPU
        have = len(jax.devices("cpu"))
        if n is not None and have != want:
            warnings.warn(
                f"use_cpu_cores({n}) came after JAX started and keeps its "
                f"{have} CPU device(s); call it right after importing probe_lab",
                stacklevel=2,
            )
        return have
    return want


def compile_cache_dir() -> Path | None:
    """Where :func:`use_compile_cache` keeps compiled programs: the path in
    ``$PROBE_LAB_COMPILE_CACHE`` (``off`` or ``0``: nowhere, ``None``), else
    ``$PROBE_LAB_HOME/xla``, else ``$XDG_CACHE_HOME/probe-lab/xla`` (default
    ``~/.cache/probe-lab/xla``)."""
    setting = os.environ.get(COMPILE_CACHE_ENV, "").strip()
    if setting.lower() in ("0", "off", "no", "false"):
        return None
    if setting and setting.lower() not in ("1", "on", "yes", "true"):
        return Path(setting).expanduser()
    if os.environ.get("PROBE_LAB_HOME"):
        return Path(os.environ["PROBE_LAB_HOME"]).expanduser() / "xla"
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache).expanduser() / "probe-lab" / "xla"


def use_compile_cache() -> Path | None:
    """Keep compiled XLA programs on disk between runs (JAX's persistent
    compilation cache) in :func:`compile_cache_dir`, at most 2 GiB.

    Programs that took 0.5 s or more to compile are kept; JAX keys each by the
    program, the compiler options, the devices and the JAX version, so a changed
    setting compiles afresh. A folder that cannot be made is a warning, not an
    error: the run compiles as usual.

    Returns:
        The folder, or ``None`` when ``$PROBE_LAB_COMPILE_CACHE`` is ``off``.
    """
    path = compile_cache_dir()
    if path is None:
        return None
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        warnings.warn(
            f"no compilation cache ({err}); set {COMPILE_CACHE_ENV} to a writable "
            "folder, or to off",
            stacklevel=2,
        )
        return None
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    try:  # JAX evicts under a file lock (filelock, a dependency)
        import filelock  # noqa: F401

        jax.config.update("jax_compilation_cache_max_size", COMPILE_CACHE_BYTES)
    except (ImportError, AttributeError):  # no lock, or an older JAX: no limit
        pass
    return path
