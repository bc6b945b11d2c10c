"""Two processes joined by jax.distributed share the chunks and agree."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import numpy as np
import pytest

SCRIPT = """
import sys
import jax
import numpy as np

jax.config.update("jax_cpu_collectives_implementation", "gloo")
host, port, folder = int(sys.argv[1]), sys.argv[2], sys.argv[3]
if host >= 0:
    jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=2, process_id=host)
from probe_lab import TrainConfig, train_probes

x = np.load(f"{folder}/x.npy")
y = np.load(f"{folder}/y.npy")
config = TrainConfig(epochs=3, probe_chunk=8)
p = train_probes(x, y, config=config, groups=np.arange(24) % 3)
np.save(f"{folder}/w{host}.npy", np.asarray(p.weights))
print(jax.process_count(), len(jax.local_devices()))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_hosts_train_as_one(problem, tmp_path):
    x, y, _ = problem
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", np.concatenate([y] * 4))  # 24 probes, 8 per chunk
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    port = str(free_port())

    def launch(host: int) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-c", SCRIPT, str(host), port, str(tmp_path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )

    hosts = [launch(0), launch(1)]
    outs = [h.communicate(timeout=300) for h in hosts]
    for h, (out, err) in zip(hosts, outs, strict=True):
        assert h.returncode == 0, err
        assert out.split()[-2:] == ["2", "1"]  # two processes, one device each
    alone = launch(-1)
    out, err = alone.communicate(timeout=300)
    assert alone.returncode == 0, err
    w0, w1, w = (np.load(tmp_path / f"w{h}.npy") for h in (0, 1, -1))
    np.testing.assert_array_equal(w0, w1)  # every host holds every result
    np.testing.assert_allclose(w0, w, atol=1e-6)
