"""The worked example of docs/architecture.md: a supervisor kind in one new file."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import write_synthetic_cache

from probe_lab import TrainConfig
from probe_lab.study import StudyConfig, StudyError, Supervisor, run_study
from probe_lab.supervisors import SUPERVISORS

DOC = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"


def example_code() -> str:
    """The Python block of the worked example (it starts ``# noisy_probe.py``)."""
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
    found = [b for b in blocks if b.startswith("# noisy_probe.py")]
    assert len(found) == 1, "docs/architecture.md lost its worked example"
    return found[0]


@pytest.fixture
def noisy_probe(tmp_path, monkeypatch):
    (tmp_path / "noisy_probe.py").write_text(example_code())
    monkeypatch.syspath_prepend(str(tmp_path))
    import noisy_probe

    yield noisy_probe
    SUPERVISORS.unregister("noisy_probe")
    sys.modules.pop("noisy_probe", None)


def test_the_documented_kind_runs_in_a_study(noisy_probe, tmp_path):
    cache = write_synthetic_cache(tmp_path / "c.h5", n=800, d=8)
    config = StudyConfig(
        cache=str(cache),
        layer=2,
        seeds=1,
        supervisors=(
            Supervisor(kind="noisy_probe", k=3, flip=0.2, name="noisy"),
            Supervisor(kind="random", accuracy=0.8),
        ),
        train=TrainConfig(epochs=3, batch_size=64),
    )
    result = run_study(config, progress=False)
    row = result.table.set_index("supervisor").loc["noisy"]
    assert row.kind == "noisy_probe"
    # Flipping a fifth of the labels leaves the supervisor well below perfect.
    assert 0.3 < row.weak_label_acc < 0.95
    assert np.isfinite(row.student_acc)


def test_the_documented_kind_is_typed_and_checked(noisy_probe):
    assert Supervisor(kind="noisy_probe").settings == noisy_probe.NoisyProbeSettings()
    with pytest.raises(StudyError, match=r"noisy_probe\.flip must be a number"):
        Supervisor(kind="noisy_probe", flip="a lot")
    with pytest.raises(StudyError, match=r"unknown keys \['depth'\] for kind"):
        Supervisor(kind="noisy_probe", depth=2)
    with pytest.raises(StudyError, match=r"parameter flip must lie in \[0, 0.5\]"):
        Supervisor(kind="noisy_probe", flip=0.7)
    by_path = Supervisor(kind="noisy_probe:noisy_probe", k=2)
    assert by_path.kind_spec is SUPERVISORS.get("noisy_probe")
