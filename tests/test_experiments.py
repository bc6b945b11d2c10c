"""Every paper-figure experiment parses and runs at smoke size on a small cache."""

from __future__ import annotations

import dataclasses
import itertools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import write_synthetic_cache
from matplotlib.figure import Figure
from matplotlib.image import imread

from probe_lab.cli import main
from probe_lab.experiments import (
    KINDS,
    CacheSpec,
    ExperimentError,
    ExperimentKind,
    Finding,
    build_cache,
    caches,
    experiment_configs,
    load_experiment,
    register_kind,
    run_experiment,
)
from probe_lab.experiments.base import Analysis, Context

pytest_plugins = ["cache_fixtures"]

ROOT = Path(__file__).resolve().parents[1]
TOMLS = [Path(str(p)) for p in experiment_configs().values()]
# model_ladder builds its caches from several real models: tests/test_model_ladder.py
NO_MODEL = [p for p in TOMLS if p.stem not in ("trivial_imitation", "model_ladder")]
EXPERIMENT_HEAD = (
    '[experiment]\nname = "x"\nfigure = "Fig. 25"\nkind = "error_structures"\n'
)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    path = tmp_path_factory.mktemp("syn") / "planted.h5"
    return write_synthetic_cache(path, n=1200, d=16)


def check_outputs(result, n_studies: int = 1) -> None:
    out = result.out
    summary = pd.read_csv(out / "summary.csv")
    assert {"supervisor", "student", "loss", "pgr", "pgr_low"} <= set(summary)
    tables = sorted(out.glob("studies/*/table.parquet"))
    assert len(tables) == n_studies
    table = pd.read_parquet(tables[0])
    assert {"weak_acc", "student_acc", "ceiling_acc", "agreement"} <= set(table)
    for png in result.figures:
        image = imread(png)
        assert image.ndim == 3 and min(image.shape[:2]) > 300
        assert image.std() > 0.01  # not a blank canvas
    text = (out / "summary.md").read_text()
    assert "The paper's finding" in text and "Here the finding" in text
    assert "smoke run" in text
    assert result.findings and (out / "experiment.json").is_file()


def test_every_experiment_kind_has_its_toml():
    assert sorted(p.stem for p in TOMLS) == sorted(KINDS)
    for path in TOMLS:
        header = path.read_text().splitlines()[:12]
        assert any(f"probe-lab run experiments/{path.name}" in h for h in header)
        assert any("Runtime" in h for h in header)
        assert any("should show" in h for h in header)


def test_experiments_folder_links_to_the_packaged_files_and_names_work(tmp_path):
    links = sorted((ROOT / "experiments").glob("*.toml"))
    assert [p.stem for p in links] == [p.stem for p in TOMLS]
    for link, packaged in zip(links, TOMLS, strict=True):
        assert link.is_symlink() and link.resolve() == packaged.resolve()
    by_path = load_experiment(ROOT / "experiments" / "error_structures.toml")
    for name in ("error_structures", "error_structures.toml"):
        by_name = load_experiment(name, preset="full")
        assert dataclasses.replace(by_name, source="") == dataclasses.replace(
            by_path, source=""
        )
    with pytest.raises(ExperimentError, match="probe-lab run error_structures"):
        load_experiment(tmp_path / "error_structures.toml")


@pytest.mark.parametrize("path", TOMLS, ids=lambda p: p.stem)
def test_every_toml_parses_at_every_size(path):
    full = load_experiment(path)
    smoke = load_experiment(path, preset="smoke")
    assert full.kind == smoke.kind == path.stem
    assert smoke.cache.size < full.cache.size
    assert (
        smoke.study_config("x.h5").train.epochs < full.study_config("x.h5").train.epochs
    )
    # The paper's protocol at full size.
    train = full.study_config("x.h5").train
    assert (train.epochs, train.lr, train.batch_size) == (200, 1e-3, 128)
    if "[demo" in path.read_text():
        demo = load_experiment(path, preset="demo")
        assert demo.study_config("x.h5").train == train


@pytest.mark.parametrize("path", NO_MODEL, ids=lambda p: p.stem)
def test_smoke_run_on_a_synthetic_cache(path, cache, tmp_path):
    result = run_experiment(
        path,
        smoke=True,
        out=tmp_path / path.stem,
        cache=cache,
        cache_dir=tmp_path / "caches",
        progress=False,
    )
    config = result.config
    settings = config.to_dict()["experiment"]
    n = len(settings.get("references") or settings.get("sizes") or ()) or 1
    check_outputs(result, n_studies=n)
    assert result.cache == cache


@pytest.mark.slow
def test_trivial_imitation_re_extracts_the_caches_model(tmp_path, tiny_models):
    # A planted cache that names a real (tiny, random) model: the hinted prompts are
    # re-extracted with it in a subprocess.
    import h5py

    from activation_cache import open_cache

    original = write_synthetic_cache(tmp_path / "orig.h5", n=600, layers=(0, 1, 2))
    with h5py.File(original, "a") as f:
        f.attrs.update(
            model=str(tiny_models["gpt2"]),
            model_path=str(tiny_models["gpt2"]),
            template="{text}",
            position="mean",
            padding_side="right",
        )
    result = run_experiment(
        "trivial_imitation",
        smoke=True,
        out=tmp_path / "out",
        cache=original,
        cache_dir=tmp_path / "caches",
        progress=False,
    )
    check_outputs(result, n_studies=2)
    (hinted,) = (tmp_path / "caches").glob("*-hint-*.h5")
    prompts = open_cache(hinted)
    assert set(prompts.extra["hint"]) == {"true", "false"}
    assert prompts.meta["template"].endswith(
        "I think this is {hint}. What do you think?"
    )
    shown = {"weak", "weak as feature", "weak in prompt"}
    assert shown <= set(result.summary.supervisor)


def test_cli_run_smoke_and_errors(cache, tmp_path, capsys):
    path = ROOT / "experiments" / "training_dynamics.toml"
    out = tmp_path / "cli"
    args = ["run", str(path), "--smoke", "--cache", str(cache), "--out", str(out)]
    args += ["--cache-dir", str(tmp_path / "caches")]
    assert main([*args, "--quiet"]) == 0
    assert (out / "summary.md").is_file() and (out / "training_dynamics.png").is_file()
    assert main(["run", str(tmp_path / "nope.toml")]) == 2
    assert "nope.toml does not exist" in capsys.readouterr().err


def write_toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    return path


GOOD = """
[experiment]
name = "x"
figure = "Fig. 25"
kind = "error_structures"
[[study.supervisors]]
kind = "probe"
k = 4
"""


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (GOOD.replace("error_structures", "nope"), "kind 'nope' is unknown"),
        (GOOD + "[results]\n", r"unknown table\(s\) \['results'\]"),
        (
            GOOD.replace('name = "x"', 'name = "x"\ncolour = 1'),
            r"unknown keys \['colour'\]",
        ),
        (
            GOOD + "[cache]\nmodle = 'minilm'\n",
            r"\[cache\] has unknown keys \['modle'\]",
        ),
        (GOOD + "[cache]\nposition = 'middle'\n", "position must be mean"),
        (GOOD + "[study]\nseedz = 2\n", r"bad.toml: \[study\] has unknown keys"),
        (GOOD.replace("k = 4", "k = 4\nkind2 = 1"), r"supervisors\[0\] has unknown"),
        (GOOD.replace('name = "x"\n', ""), r"\[experiment\] needs name"),
        ("[experiment\n", "not valid TOML"),
        ("study = 3\n" + GOOD.split("[[")[0], r"study must be a table \(\[study\]\)"),
        (GOOD + "[cache]\nsize = '600'\n", "cache.size must be an integer or None"),
        (
            GOOD.replace("error_structures", "trivial_imitation"),
            "builds its own supervisors",
        ),
    ],
)
def test_bad_files_get_clear_errors(tmp_path, text, match):
    with pytest.raises(ExperimentError, match=match):
        load_experiment(write_toml(tmp_path, text))


def test_missing_presets_and_files_are_named(tmp_path):
    path = write_toml(tmp_path, GOOD)
    with pytest.raises(ExperimentError, match=r"has no \[smoke\] table"):
        load_experiment(path, preset="smoke")
    with pytest.raises(ExperimentError, match="does not exist; the experiments are"):
        load_experiment(tmp_path / "missing.toml")
    sim = GOOD.replace("error_structures", "simulation_difficulty").split("[[")[0]
    with pytest.raises(ExperimentError, match="needs \\[experiment\\] references"):
        load_experiment(write_toml(tmp_path, sim))


def test_caches_are_reused_by_settings_and_failures_name_the_command(
    cache, tmp_path, monkeypatch
):
    spec = CacheSpec(task="larger_than", size=600)
    assert spec.filename() == CacheSpec(task="larger_than", size=600).filename()
    assert spec.filename() != CacheSpec(task="larger_than", size=800).filename()
    target = tmp_path / spec.filename()
    target.write_bytes(Path(cache).read_bytes())

    def refuse(*_a, **_k):
        raise AssertionError("a complete cache must not be rebuilt")

    monkeypatch.setattr(caches.subprocess, "run", refuse)
    assert build_cache(spec, tmp_path, progress=False) == target

    monkeypatch.setattr(
        caches.subprocess,
        "run",
        lambda *_a, **_k: subprocess.CompletedProcess([], returncode=1),
    )
    with pytest.raises(ExperimentError, match="probe-lab extract --model minilm"):
        build_cache(spec, tmp_path / "elsewhere", progress=False)


@pytest.mark.subprocess
def test_a_task_file_is_the_tomls_and_a_changed_file_is_extracted_again(
    tmp_path, monkeypatch, capsys
):
    from activation_cache import load_task, open_cache

    folder = tmp_path / "configs"
    folder.mkdir()
    rows = [{"text": f"row {i} w{i % 5}", "label": i % 2} for i in range(24)]
    task = folder / "mytask.jsonl"
    task.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "mytask.jsonl").write_text("a decoy in the current folder\n")
    toml = folder / "exp.toml"
    toml.write_text(EXPERIMENT_HEAD + '[cache]\nmodel = "bow"\ntask = "mytask.jsonl"\n')
    monkeypatch.chdir(tmp_path)
    spec = load_experiment("configs/exp.toml").cache
    assert spec.task == str(task.resolve())
    built = build_cache(spec, tmp_path / "caches", progress=False)
    assert open_cache(built).fingerprint == load_task(task).fingerprint
    assert build_cache(spec, tmp_path / "caches", progress=False) == built
    assert "extracting it again" not in capsys.readouterr().err  # reused
    rows[3]["label"] = 1 - rows[3]["label"]  # the file changes, its name not
    task.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert build_cache(spec, tmp_path / "caches", progress=False) == built
    assert "was built from other rows of" in capsys.readouterr().err
    assert open_cache(built).fingerprint == load_task(task).fingerprint
    assert open_cache(built).labels[3] == rows[3]["label"]


def test_probe_lab_never_imports_torch():
    code = (
        "import sys, probe_lab.experiments, probe_lab.plots, probe_lab.cli; "
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ------------------------------------------ a new experiment: one module + TOML


@dataclasses.dataclass(frozen=True, kw_only=True)
class TinySettings:
    """The ``[experiment]`` keys of the tiny kind."""

    bar: float = 0.6
    """The test accuracy the best student must reach."""


def tiny_run(ctx: Context) -> Analysis:
    """One study; the best student's accuracy against ``bar``; a bar chart."""
    result = ctx.study()
    summary = result.summary()
    best = float(summary.student_acc.max())
    fig = Figure(figsize=(4, 3))
    fig.add_subplot().bar(range(len(summary)), summary.student_acc)
    finding = Finding(
        claim=f"Some student reaches test accuracy {ctx.config.settings.bar}.",
        measured=f"best student accuracy {best:.3f}",
        held=best >= ctx.config.settings.bar,
    )
    return Analysis({"study": result}, [finding], [ctx.save(fig)])


TINY = ExperimentKind(
    name="tiny_accuracy",
    claim="A student on the planted features beats chance.",
    run=tiny_run,
    settings=TinySettings,
    ranges={"bar": (0.0, 1.0)},
)
"""A kind a TOML names by import path (``kind = "test_experiments:TINY"``)."""

TINY_TOML = """
[experiment]
name = "tiny"
figure = "a tiny check"
kind = "{kind}"
bar = {bar}

[study]
layer = 2
students = [8]
seeds = 2

[study.train]
epochs = 3
batch_size = 64

[[study.supervisors]]
kind = "probe"
k = 2

[smoke.study]
seeds = 2
"""


@pytest.fixture
def tiny_kind():
    kind = register_kind(
        name="tiny_registered", claim=TINY.claim, run=tiny_run, settings=TinySettings
    )
    yield kind
    KINDS.unregister(kind.name)


def test_a_kind_registered_from_a_test_file_runs_end_to_end(tiny_kind, cache, tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(TINY_TOML.format(kind="tiny_registered", bar=0.55))
    result = run_experiment(
        path, smoke=True, out=tmp_path / "out", cache=cache, progress=False
    )
    check_outputs(result)
    assert result.config.settings == TinySettings(bar=0.55)
    assert result.findings[0].held is True
    record = json.loads((result.out / "experiment.json").read_text())
    assert record["config"]["experiment"]["bar"] == 0.55
    assert tiny_kind.claim in (result.out / "summary.md").read_text()


def test_a_kind_named_by_import_path_and_its_settings_checked(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(TINY_TOML.format(kind="test_experiments:TINY", bar=0.7))
    assert load_experiment(path).settings == TinySettings(bar=0.7)
    path.write_text(TINY_TOML.format(kind="test_experiments:TINY", bar=1.5))
    with pytest.raises(
        ExperimentError,
        match=r"kind 'tiny_accuracy': parameter bar must lie in \[0, 1\]",
    ):
        load_experiment(path)
    path.write_text(TINY_TOML.format(kind="test_experiments:TINY", bar="'x'"))
    with pytest.raises(ExperimentError, match=r"experiment\.bar must be a number"):
        load_experiment(path)
    path.write_text(TINY_TOML.format(kind="test_experiments:tiny_run", bar=0.7))
    with pytest.raises(ExperimentError, match="not an ExperimentKind"):
        load_experiment(path)


def _structures_table(seeds: int = 6) -> pd.DataFrame:
    """Per-seed rows of one student: random flips gain 0.15 over the weak
    accuracy, the simulatable M_2 0.02, 'longest' 0.05; the confidence loss adds
    0.05 on random flips only. At the final epoch random's edge is gone; on the
    best test epoch everything gains 0.01."""
    rng = np.random.default_rng(1)
    gains = {"M_2": 0.02, "random": 0.15, "longest": 0.05}
    rows = []
    for seed in range(seeds):
        weak, ceiling = 0.7 + 0.005 * rng.normal(), 0.9 + 0.005 * rng.normal()
        for sup, gain in gains.items():
            for loss in ("xent", "confidence"):
                extra = 0.05 if (sup, loss) == ("random", "confidence") else 0.0
                acc = weak + gain + extra + 0.005 * rng.normal()
                final = acc - (0.13 if sup == "random" else 0.0)
                rows.append(
                    dict(supervisor=sup, student=8, loss=loss, seed=seed,
                         weak_acc=weak, ceiling_acc=ceiling, student_acc=acc,
                         student_acc_final=final, student_acc_best_test=acc + 0.01)
                )  # fmt: skip
    return pd.DataFrame(rows)


def test_error_structures_verdicts_are_paired_holm_and_per_stopping_rule():
    from probe_lab.experiments import error_structures

    table = _structures_table()
    findings = error_structures.check(table, "M_2")
    by_claim = {f.claim.split(":")[0][:40]: f for f in findings}
    random_vs_sim, helps, more, spread = findings
    assert random_vs_sim.held and helps.held and more.held and spread.held
    assert "paired gain difference random - M_2 +0.130" in random_vs_sim.measured
    assert "Holm" in random_vs_sim.measured and "6 seeds" in random_vs_sim.measured
    # random's edge is gone at the final epoch, kept on the best test epoch
    assert "final epoch: no" in random_vs_sim.measured
    assert "best epoch on test (upper bound): yes" in random_vs_sim.measured
    assert "final epoch: yes" in helps.measured
    assert "3 of 3 pairs of structures differ" in spread.measured
    assert len(by_claim) == 4
    # the same table without the stopping columns: those rules unavailable
    plain = error_structures.check(
        table.drop(columns=["student_acc_final", "student_acc_best_test"]), "M_2"
    )
    assert [f.held for f in plain] == [f.held for f in findings]
    assert "final epoch: unavailable" in plain[0].measured
    # no difference planted: the claim is not shown (paired interval holds 0)
    same = table.assign(student_acc=table.weak_acc + 0.05 + 0.01 * np.sin(table.seed))
    assert error_structures.check(same, "M_2")[0].held is False


def test_sample_size_runs_the_l2_curve_and_reports_n_over_d(cache, tmp_path):
    toml = tmp_path / "sizes.toml"
    toml.write_text(
        '[experiment]\nname = "sizes"\nfigure = "Fig. 24"\nkind = "sample_size"\n'
        "sizes = [600]\nl2 = 0.05\n"
        '[study]\nlayer = -1\nstudents = ["all"]\nlosses = ["xent"]\nseeds = 2\n'
        "dynamics = false\n[study.train]\nepochs = 3\nbatch_size = 64\n"
        '[[study.supervisors]]\nkind = "probe"\nk = 4\n'
        '[[study.supervisors]]\nkind = "random"\n'
    )
    result = run_experiment(toml, out=tmp_path / "out", cache=cache, progress=False)
    assert sorted(result.studies) == ["600 rows", "600 rows, l2 0.05"]
    assert result.studies["600 rows, l2 0.05"].config.train.l2 == 0.05
    assert result.studies["600 rows"].config.train.l2 == 0.0
    summary = pd.read_csv(result.out / "sample_size.csv")
    assert set(summary.l2) == {0.0, 0.05}
    # d = 16 (the planted cache's width): n / d is the weak-labelled rows / 16
    assert np.allclose(summary.n_over_d, summary.labelled / 16)
    claims = [f.claim for f in result.findings]
    assert any("student with l2 = 0.05" in c for c in claims)
    assert any("unregularized student" in c for c in claims)
    crossover = next(f for f in result.findings if "unregularized" in f.claim)
    assert "(n/d " in crossover.measured and "seeds)" in crossover.measured


def _sizes_table(seeds: int = 6) -> pd.DataFrame:
    """Per-seed rows of the full-width student (d = 50) at three sizes: random
    flips gain -0.05, +0.05, +0.15 over the weak accuracy, M_2 0.0 everywhere;
    with L2 random gains +0.15 from the smallest size on."""
    rng = np.random.default_rng(2)
    rows = []
    for l2, gains in ((0.0, (-0.05, 0.05, 0.15)), (0.01, (0.15, 0.15, 0.15))):
        for (n, gain), seed in itertools.product(
            zip((100, 200, 400), gains, strict=True), range(seeds)
        ):
            weak, ceiling = 0.7 + 0.005 * rng.normal(), 0.9 + 0.005 * rng.normal()
            for sup, g in (("random", gain), ("M_2", 0.0)):
                rows.append(
                    dict(supervisor=sup, student=50, loss="xent", seed=seed,
                         labelled=n, n_over_d=n / 50, l2=l2, weak_acc=weak,
                         ceiling_acc=ceiling,
                         student_acc=weak + g + 0.01 * rng.normal())
                )  # fmt: skip
    return pd.DataFrame(rows)


def test_sample_size_crossover_is_paired_holm_and_in_n_over_d():
    from probe_lab.experiments import sample_size

    findings = sample_size.check(_sizes_table(), "M_2")
    crossover, positive, few, regularized = findings
    assert crossover.held and "holds from 200 weak-labelled rows (n/d 4.00)" in (
        crossover.measured
    )
    assert "Holm" in crossover.measured and "6 seeds" in crossover.measured
    assert positive.held and few.held
    assert regularized.held is None and "l2 = 0.01" in regularized.claim
    assert "holds from 100 weak-labelled rows (n/d 2.00)" in regularized.measured
    assert "unregularized: from 200 rows (n/d 4.00)" in regularized.measured
    # no L2 rows, no L2 finding; no difference anywhere: never shown
    plain = _sizes_table().query("l2 == 0")
    assert len(sample_size.check(plain, "M_2")) == 3
    same = plain.assign(student_acc=plain.weak_acc + 0.1 + 0.01 * (plain.seed % 3))
    assert sample_size.check(same, "M_2")[0].held is False


def test_task_suite_verdicts_are_paired_and_holm_corrected():
    from probe_lab.experiments import task_suite

    rng = np.random.default_rng(3)
    rows = []
    for task, seed, student in itertools.product(("a", "b"), range(5), (4, 8)):
        weak, ceiling = 0.7 + 0.005 * rng.normal(), 0.9 + 0.005 * rng.normal()
        for sup, gain in (("bow", 0.04), ("random@bow", 0.12)):
            rows.append(
                dict(task=task, supervisor=sup, student=student, loss="xent",
                     seed=seed, weak_acc=weak, ceiling_acc=ceiling,
                     student_acc=weak + gain + 0.005 * rng.normal())
            )  # fmt: skip
    table = pd.DataFrame(rows)
    beaten, natural = task_suite.check(table)
    assert beaten.held and "shown on 2 of 2" in beaten.measured
    assert natural.held and "shown in 2 of 2 (task, supervisor)" in natural.measured
    assert "Holm" in natural.measured and "5 seeds" in natural.measured
    # the natural supervisor as good as random: not shown
    same = table.assign(student_acc=table.weak_acc + 0.05 + 0.001 * table.seed)
    assert task_suite.check(same)[1].held is False


def test_simulation_difficulty_and_dynamics_verdicts_are_paired():
    from probe_lab.experiments import simulation_difficulty, training_dynamics

    rng = np.random.default_rng(4)
    rows, dyn = [], []
    for seed, student in itertools.product(range(5), (8, 16)):
        weak, ceiling = 0.7 + 0.005 * rng.normal(), 0.9 + 0.005 * rng.normal()
        for sup, kind, gain, agree in (
            ("M_8", "probe", 0.0, 0.95),
            ("random", "random", 0.1, 0.75),
        ):
            rows.append(
                dict(supervisor=sup, kind=kind, student=student, loss="xent",
                     seed=seed, reference=8, weak_acc=weak, ceiling_acc=ceiling,
                     student_acc=weak + gain + 0.005 * rng.normal(),
                     agreement=agree + 0.005 * rng.normal())
            )  # fmt: skip
            for epoch, loss in itertools.product((1, 2), ("xent", "confidence")):
                wrong = (0.5 if epoch == 1 else 0.85 if kind == "probe" else 0.2) - (
                    0.1 if loss == "confidence" else 0.0
                )
                dyn.append(
                    dict(supervisor=sup, student=student, loss=loss, seed=seed,
                         epoch=epoch,
                         agreement_weak_wrong=wrong + 0.01 * rng.normal())
                )  # fmt: skip
    table = pd.DataFrame(rows)
    agree, lower = simulation_difficulty.check(table, mixtures=False)
    assert agree.held and lower.held
    assert "paired per seed" in agree.measured and "Holm" in lower.measured
    flat = table.assign(agreement=0.9 + 0.01 * (table.seed % 2))
    assert simulation_difficulty.check(flat, mixtures=False)[0].held is False
    grows, less, resists = training_dynamics.check(
        pd.DataFrame(dyn).query("student == 16"), "M_8"
    )
    assert grows.held and less.held and resists.held
    assert "epoch 2 - epoch 1" in grows.measured and "5 seeds" in grows.measured


def test_imitation_and_linear_probe_verdicts_are_paired():
    from probe_lab.experiments import linear_probe_w2s, trivial_imitation

    rng = np.random.default_rng(5)
    rows = []
    gains = {
        ("weak", "xent"): 0.05,
        ("weak", "confidence"): 0.05,
        ("weak as feature", "xent"): 0.0,
        ("weak as feature", "confidence"): 0.08,
    }
    for seed, student in itertools.product(range(5), (8, 16)):
        weak, ceiling = 0.7 + 0.005 * rng.normal(), 0.9 + 0.005 * rng.normal()
        for (sup, loss), gain in gains.items():
            rows.append(
                dict(supervisor=sup, student=student, loss=loss, seed=seed,
                     weak_acc=weak, ceiling_acc=ceiling, agreement=0.9,
                     student_acc=weak + gain + 0.005 * rng.normal())
            )  # fmt: skip
    table = pd.DataFrame(rows)
    imitated, resists = trivial_imitation.check(table.query("student == 16"))
    assert imitated.held and resists.held
    assert "gain hidden - visible" in imitated.measured and "Holm" in resists.measured
    hidden = table[table.supervisor == "weak"]
    beat, confidence = linear_probe_w2s.check(hidden)
    assert beat.held and "2 of 2" in beat.measured
    assert confidence.held is False  # no difference planted
