"""``python -m activation_cache``: the extraction CLI without probe_lab or jax."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import write_synthetic_cache

from activation_cache.__main__ import main


def test_info_and_bad_arguments(tmp_path, capsys):
    cache = write_synthetic_cache(tmp_path / "c.h5", n=64, d=4)
    assert main(["info", str(cache)]) == 0
    assert "complete  yes (64 rows)" in capsys.readouterr().out
    assert main(["info", str(tmp_path / "missing.h5")]) == 1
    with pytest.raises(SystemExit) as exit_:
        main(["extract", "--task", "cities"])
    assert exit_.value.code == 2
    assert "--model" in capsys.readouterr().err


@pytest.mark.subprocess
def test_python_m_runs_it_without_importing_jax_or_probe_lab(tmp_path):
    cache = write_synthetic_cache(tmp_path / "c.h5", n=64, d=4)
    done = subprocess.run(
        [sys.executable, "-m", "activation_cache", "info", str(cache)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "complete  yes (64 rows)" in done.stdout
    code = (
        "import runpy, sys\n"
        f"sys.argv = ['activation_cache', 'info', {str(cache)!r}]\n"
        "try:\n"
        "    runpy.run_module('activation_cache', run_name='__main__')\n"
        "finally:\n"
        "    loaded = {m.split('.')[0] for m in sys.modules}\n"
        "    assert not loaded & {'jax', 'probe_lab', 'torch'}, loaded\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
