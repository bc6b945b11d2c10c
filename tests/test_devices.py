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


def test_compile_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    from probe_lab.devices import compile_cache_dir

    monkeypatch.delenv("PROBE_LAB_HOME", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("PROBE_LAB_COMPILE_CACHE", "on")
    assert compile_cache_dir() == tmp_path / "xdg" / "probe-lab" / "xla"
    monkeypatch.setenv("PROBE_LAB_HOME", str(tmp_path / "home"))
    assert compile_cache_dir() == tmp_path / "home" / "xla"
    monkeypatch.setenv("PROBE_LAB_COMPILE_CACHE", str(tmp_path / "mine"))
    assert compile_cache_dir() == tmp_path / "mine"
    for off in ("off", "0", "OFF"):
        monkeypatch.setenv("PROBE_LAB_COMPILE_CACHE", off)
        assert compile_cache_dir() is None


@pytest.mark.subprocess
def test_a_second_process_loads_compiled_programs_from_the_cache(tmp_path):
    """The second run of the same training compiles nothing: every program comes
    from the folder the first run filled (every program is kept here, however
    fast it compiled, so the counts are exact)."""
    code = (
        "import jax, numpy as np, probe_lab\n"
        "from probe_lab._jax import count_compilations\n"
        "print(probe_lab.use_compile_cache())\n"
        "jax.config.update('jax_persistent_cache_min_compile_time_secs', 0)\n"
        "x = np.random.default_rng(0).normal(size=(300, 8)).astype(np.float32)\n"
        "y = (x[:, 0] > 0).astype(np.float32)\n"
        "with count_compilations() as seen:\n"
        "    probe_lab.train_probes(x, y, config=probe_lab.TrainConfig(epochs=2))\n"
        "print(len(seen), len(seen.loaded))\n"
    )
    folder = tmp_path / "xla"
    os.environ["PROBE_LAB_COMPILE_CACHE"] = str(folder)
    try:
        first = run(code).splitlines()
        second = run(code).splitlines()
    finally:
        os.environ["PROBE_LAB_COMPILE_CACHE"] = "off"
    assert first[0] == second[0] == str(folder)
    compiled, loaded = (int(v) for v in first[1].split())
    assert compiled > 0 and loaded == 0 and any(folder.iterdir())
    assert second[1].split() == ["0", str(compiled)]
