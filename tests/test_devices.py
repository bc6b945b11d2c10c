"""use_cpu_cores: one JAX CPU device per core, set before JAX starts."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


def run(code: str, xla_flags: str = "") -> str:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    if xla_flags:
        env["XLA_FLAGS"] = xla_flags
    done = subprocess.run(
        [sys.executable, "-W", "error::UserWarning", "-c", code],
        capture_output=True,
        text=True,
        env=env,
    )
    if done.returncode:
        raise AssertionError(done.stderr)
    return done.stdout.strip()


def test_splits_the_cpu_before_jax_starts():
    out = run(
        "import jax, probe_lab\n"
        "n = probe_lab.use_cpu_cores(3)\n"
        "print(n, len(jax.devices()))\n"
    )
    assert out == "3 3"


def test_leaves_an_explicit_xla_flag_alone():
    out = run(
        "import jax, probe_lab\nprint(probe_lab.use_cpu_cores(3), len(jax.devices()))",
        xla_flags="--xla_force_host_platform_device_count=2",
    )
    assert out == "2 2"


def test_too_late_keeps_the_devices_and_says_so():
    with pytest.raises(AssertionError, match="came after JAX started"):
        run("import jax, probe_lab\njax.devices()\nprobe_lab.use_cpu_cores(3)")
    out = run("import jax, probe_lab\njax.devices()\nprint(probe_lab.use_cpu_cores())")
    assert out == "1"


def test_refuses_zero_devices():
    with pytest.raises(AssertionError, match="n >= 1"):
        run("import probe_lab\nprobe_lab.use_cpu_cores(0)")
