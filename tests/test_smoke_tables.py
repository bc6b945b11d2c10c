"""Every experiment's smoke-size study tables equal the ones saved in tests/data.

The saved tables were written by this file's ``__main__`` before the study and the
supervisor kinds were reorganised into packages; a refactor that changes a number
of any experiment's studies fails here. Regenerate them (only for an intended
change of results) with ``python tests/test_smoke_tables.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import write_synthetic_cache

from probe_lab.experiments import experiment_configs, run_experiment

SAVED = Path(__file__).resolve().parent / "data" / "smoke_tables.parquet"
# trivial_imitation re-extracts its cache with the cache's model (none here);
# model_ladder builds caches of real models (it refuses a given cache).
NAMES = sorted(
    n for n in experiment_configs() if n not in ("trivial_imitation", "model_ladder")
)


def smoke_tables(folder: Path) -> pd.DataFrame:
    """Every study table of every experiment's smoke run on one planted cache."""
    cache = write_synthetic_cache(folder / "planted.h5", n=1200, d=16)
    frames = []
    for name in NAMES:
        result = run_experiment(
            name,
            smoke=True,
            out=folder / name,
            cache=cache,
            cache_dir=folder / "caches",
            progress=False,
        )
        for study, outcome in result.studies.items():
            table = outcome.table.copy()
            table.insert(0, "study", study)
            table.insert(0, "experiment", name)
            frames.append(table)
    return pd.concat(frames, ignore_index=True)


def assert_tables_equal(got: pd.DataFrame, saved: pd.DataFrame) -> None:
    """Same columns and rows; numbers equal to 1e-6, everything else exactly."""
    assert list(got.columns) == list(saved.columns)
    assert len(got) == len(saved), (len(got), len(saved))
    for column in saved.columns:
        a, b = got[column].to_numpy(), saved[column].to_numpy()
        if np.issubdtype(b.dtype, np.number) and b.dtype != bool:
            np.testing.assert_allclose(
                a.astype(np.float64),
                b.astype(np.float64),
                rtol=0,
                atol=1e-6,
                equal_nan=True,
                err_msg=column,
            )
        else:
            assert (a == b).all(), column


@pytest.mark.slow  # 40-130 s (seven experiments' smoke runs)
def test_smoke_tables_equal_the_saved_ones(tmp_path):
    saved = pd.read_parquet(SAVED)
    assert sorted(saved.experiment.unique()) == NAMES
    assert_tables_equal(smoke_tables(tmp_path), saved)


def test_the_comparison_notices_a_changed_number():
    saved = pd.read_parquet(SAVED)
    changed = saved.copy()
    changed.loc[changed.index[0], "student_acc"] += 1e-3
    with pytest.raises(AssertionError, match="student_acc"):
        assert_tables_equal(changed, saved)
    assert_tables_equal(saved.copy(), saved)


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        tables = smoke_tables(Path(tmp))
    SAVED.parent.mkdir(exist_ok=True)
    tables.to_parquet(SAVED, index=False)
    print(f"wrote {len(tables)} rows of {tables.experiment.nunique()} experiments")
