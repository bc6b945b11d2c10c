"""One JAX device per CPU core, so probe chunks train side by side.

XLA runs one small product at a time across all cores, and the probe steps of a
study are small (a 128-row minibatch per seed): the cores spend much of a step
waiting on each other. Split into one JAX device per core, each device trains its
own chunks and the cores stop waiting: on a 2-core machine the study benchmark
(2,240 students, ``benchmarks/bench_study.py``) runs in 68 s instead of 126 s.
:func:`probe_lab.train_probes` already spreads chunks over all local devices; this
only makes the CPU offer more than one. It must run before JAX touches a device;
the ``probe-lab`` command does it at start.
"""

from __future__ import annotations

import os
import warnings

import jax

__all__ = ["cpu_cores", "use_cpu_cores"]

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
