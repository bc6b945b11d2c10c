"""The bad-input sweep: what a hostile but realistic user gives the
``probe-lab`` command, and the good behaviours that must stay good.

Every case runs the command in-process (``probe_lab.cli.main``) and checks what the
user sees: one line on stderr naming the file, key, cache, layer or rows and what
to change, exit code 2 (``extract`` and ``info``: 1), no traceback; Ctrl-C is one
line saying what was saved, exit code 130.

The library-level checks of the same inputs live next to their modules and are not
repeated here: ``train_probes`` arguments (test_train.py:
test_bad_input_names_the_argument, test_non_finite_features_are_refused,
test_bad_config_is_refused, test_bad_sample_weight_is_refused), the cache reader
and writer (test_cache_store.py: test_reader_errors, test_missing_layer,
test_partial_file, test_join_errors, test_validate_finds_non_finite_values),
study configs built in Python (test_study.py: test_bad_config_gets_a_clear_error,
test_caches_whose_ids_do_not_join_are_refused), the config loader
(test_loader.py) and experiment files (test_experiments.py:
test_bad_files_get_clear_errors, test_missing_presets_and_files_are_named).
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
from conftest import same_datasets, write_synthetic_cache

import probe_lab.experiments
import probe_lab.experiments.base
import probe_lab.metrics
import probe_lab.study.pipeline
from activation_cache import ExtractConfig, ExtractError, extract, open_cache, store
from probe_lab import plots
from probe_lab.cli import main
from probe_lab.experiments import (
    error_structures,
    linear_probe_w2s,
    methods,
    model_ladder,
    predictors,
    sample_size,
    simulation_difficulty,
    task_suite,
    training_dynamics,
    trivial_imitation,
)
from probe_lab.experiments.config import KINDS
from probe_lab.experiments.saved import MARKER
from probe_lab.leaderboard import rank_methods
from probe_lab.study import StudyError
from probe_lab.study.data import PartialJoinWarning, fingerprint_cache

pytest_plugins = ["cache_fixtures"]


def _nan_rows(f: h5py.File) -> None:
    x = f["features/layer_02"][()]
    x[10, 3], x[20, 0] = np.nan, np.inf
    f["features/layer_02"][...] = x


def _reversed_with_nan(f: h5py.File) -> None:
    """Rows in reverse order (row i holds id 399 - i), then NaN in rows 10 and 20
    (ids row-00389 and row-00379)."""
    for name in ("ids", "labels", "n_chars", "n_tokens", "texts"):
        f[name][...] = f[name][()][::-1]
    for name in f["features"]:
        f["features"][name][...] = f["features"][name][()][::-1]
    _nan_rows(f)


def _label_two(f: h5py.File) -> None:
    y = f["labels"][()]
    y[5] = 2
    f["labels"][...] = y


def _partial(f: h5py.File) -> None:
    f.attrs["complete"] = False
    f["plan/batches_done"][()] = 1


def _one_class(f: h5py.File) -> None:
    f["labels"][...] = 0


def _version(f: h5py.File) -> None:
    f.attrs["format_version"] = 99


def _short_labels(f: h5py.File) -> None:
    y = f["labels"][()]
    del f["labels"]
    f["labels"] = y[:300]


def _other_ids(f: h5py.File) -> None:
    f["ids"][...] = np.array([f"x{i}" for i in range(400)], dtype=object)


BROKEN = {
    "nan": _nan_rows,
    "nan_reversed": _reversed_with_nan,
    "labels": _label_two,
    "partial": _partial,
    "one_class": _one_class,
    "version": _version,
    "other_ids": _other_ids,
    "short_labels": _short_labels,
}
"""Copies of the good cache with one thing wrong, by name."""


@pytest.fixture(scope="module")
def caches(tmp_path_factory) -> dict[str, Path]:
    """Small caches, good and broken, by name."""
    root = tmp_path_factory.mktemp("bad_input")
    good = write_synthetic_cache(root / "good.h5", n=400, d=8)
    out = {"good": good, "missing": root / "missing.h5"}
    for name, edit in BROKEN.items():
        out[name] = root / f"{name}.h5"
        shutil.copy(good, out[name])
        with h5py.File(out[name], "r+") as f:
            edit(f)
    out["corrupt"] = root / "corrupt.h5"
    out["corrupt"].write_bytes(b"not an HDF5 file " * 64)
    out["tiny"] = write_synthetic_cache(root / "tiny.h5", n=40, d=8)
    out["flat"] = write_flat_cache(root / "flat.h5")
    return out


def write_flat_cache(path: Path) -> Path:
    """A 300-row cache whose label is one large feature: every probe, weak or
    strong, is exactly right, so there is no gap and every PGR is undefined."""
    write_synthetic_cache(path, n=300, d=8)
    with h5py.File(path, "r+") as f:
        y = f["labels"][()]
        for name in f["features"]:
            x = f["features"][name][()]
            x[:, 0] = np.where(y == 1, 20.0, -20.0)
            f["features"][name][...] = x
        # A legitimate cache of these features: its stored checksums match them.
        layers = [int(k) for k in json.loads(f.attrs[store.CHECKSUMS])]
        f.attrs[store.CHECKSUMS] = store.feature_digests(f, layers)
    return path


PROBE = '[[supervisors]]\nkind = "probe"\nk = 3\n'


def study_text(
    cache: str = "{good}", top: str = "", train: str = "", sups: str = PROBE
) -> str:
    """A one-seed, one-epoch study TOML (``{name}`` placeholders name caches)."""
    return (
        f'cache = "{cache}"\nlayer = 2\nseeds = 1\n{top}\n'
        f"[train]\nepochs = 1\nbatch_size = 32\n{train}\n{sups}"
    )


def one_error_line(capsys, command: str) -> str:
    """The single stderr line of a failed command (and no traceback)."""
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"probe-lab {command}: "), err
    return lines[0]


# ------------------------------------------------------------------ probe-lab study

STUDY_CASES = [
    # (id, TOML text, what the one error line must say)
    ("seeds-string", study_text().replace("seeds = 1", 'seeds = "three"'),
     [r"seeds must be an integer, got 'three' \(str\)"]),
    ("seeds-float", study_text().replace("seeds = 1", "seeds = 1.5"),
     [r"seeds must be an integer, got 1.5 \(float\)"]),
    ("seeds-bool", study_text().replace("seeds = 1", "seeds = true"),
     [r"seeds must be an integer, got True \(bool\)"]),
    ("students-int", study_text(top="students = 16"),
     [r"students must be a list of integers or None, got 16"]),
    ("epochs-string", study_text().replace("epochs = 1", 'epochs = "five"'),
     [r"train.epochs must be an integer, got 'five'"]),
    ("supervisors-string", study_text(top='supervisors = "probe"', sups=""),
     [r"supervisors must be a list of tables, got 'probe'"]),
    ("empty-file", "", [r"holds no study settings"]),
    ("not-toml", "seeds = [", [r"is not valid TOML"]),
    ("unknown-key", study_text(top="seedz = 2"), [r"unknown keys \['seedz'\]"]),
    ("imitation-without-base", study_text(sups='[[supervisors]]\nkind = "imitation"'),
     [r"has no base", r"add a probe supervisor"]),
    ("duplicate-names", study_text(sups=PROBE + PROBE),
     [r"supervisor names must be unique"]),
    ("missing-cache", study_text("{missing}"), [r"no cache file at .*missing.h5"]),
    ("corrupt-cache", study_text("{corrupt}"),
     [r"corrupt.h5 is not a readable HDF5 file"]),
    ("partial-cache", study_text("{partial}"),
     [r"partial.h5 is incomplete \(256 of 400 rows written\)",
      r"running the same extract command again"]),
    ("format-version", study_text("{version}"),
     [r"version.h5 has cache format version 99"]),
    ("non-binary-labels", study_text("{labels}"),
     [r"labels.h5: labels must be 0 or 1", r"cache rows 5 \(id 'row-00005': 2\)"]),
    ("layer-missing", study_text().replace("layer = 2", "layer = 7"),
     [r"layer 7 is not stored in .*good.h5"]),
    ("split-below-batch", study_text("{tiny}"), [r"fewer than the batch size 32"]),
    ("empty-split", study_text(top="test_frac = 0.001"),
     [r"the test split has only 0 rows"]),
    ("all-one-class", study_text("{one_class}"), [r"holds only label 0"]),
    ("ids-do-not-join",
     study_text(sups=PROBE + '[[supervisors]]\nkind = "probe"\nname = "other"\n'
                'cache = "{other_ids}"\nlayer = 2'),
     [r"share no example ids"]),
    ("short-labels", study_text("{short_labels}"),
     [r"short_labels.h5 is inconsistent: its datasets hold different numbers of "
      r"rows \(ids 400, texts 400, labels 300"]),
    ("nan-rows", study_text("{nan}"),
     [r"nan.h5, layer 2: NaN or inf features in 2 of the 400 rows",
      r"cache rows 10 \(id 'row-00010'\), 20 \(id 'row-00020'\)"]),
    ("nan-rows-in-a-joined-cache",  # the other cache's own rows, in the study's order
     study_text(sups=PROBE + '[[supervisors]]\nkind = "probe"\nname = "other"\n'
                'cache = "{nan_reversed}"\nlayer = 2'),
     [r"nan_reversed.h5, layer 2: NaN or inf features in 2 of the 400 rows",
      r"cache rows 20 \(id 'row-00379'\), 10 \(id 'row-00389'\)"]),
]  # fmt: skip


@pytest.mark.parametrize(
    ("text", "patterns"), [c[1:] for c in STUDY_CASES], ids=[c[0] for c in STUDY_CASES]
)
def test_study_refuses_bad_input_in_one_line(caches, tmp_path, capsys, text, patterns):
    toml = tmp_path / "study.toml"
    toml.write_text(text.format(**{k: str(v) for k, v in caches.items()}))
    assert main(["study", str(toml), "--out", str(tmp_path / "out"), "--quiet"]) == 2
    line = one_error_line(capsys, "study")
    for pattern in patterns:
        assert pd.Series([line]).str.contains(pattern).all(), (pattern, line)
    assert "study.toml" in line or ".h5" in line, line  # the file at fault
    assert not (tmp_path / "out").exists()


def test_relative_cache_is_the_one_beside_the_toml(
    caches, tmp_path, capsys, monkeypatch
):
    folder = tmp_path / "configs"
    folder.mkdir()
    shutil.copy(caches["good"], folder / "c.h5")
    (tmp_path / "c.h5").write_bytes(b"a same-named decoy in the current folder")
    (folder / "study.toml").write_text(study_text("c.h5"))
    monkeypatch.chdir(tmp_path)
    assert main(["study", "configs/study.toml", "--out", "res", "--quiet"]) == 0
    found = json.loads((tmp_path / "res" / "fingerprints.json").read_text())["caches"]
    expected = fingerprint_cache(open_cache(folder / "c.h5"), [2])
    assert found == {str((folder / "c.h5").resolve()): expected}


def test_fingerprints_hash_the_content_not_the_name(caches, tmp_path):
    copy = tmp_path / "copy.h5"
    shutil.copy(caches["good"], copy)
    same = fingerprint_cache(open_cache(copy), [2])
    assert (
        same["sha256"] == fingerprint_cache(open_cache(caches["good"]), [2])["sha256"]
    )
    assert same["path"] == str(copy.resolve()) and same["layers"] == [2]
    assert same["checksums"] == "verified"
    with h5py.File(copy, "r+") as f:  # one value of the layer read changes
        f["features/layer_02"][0, 0] += 1
    changed = fingerprint_cache(open_cache(copy), [2], verify=False)
    assert changed["sha256"] != same["sha256"]
    assert fingerprint_cache(open_cache(copy), [1])["sha256"] != same["sha256"]
    # The checksums the file stored catch the change (finite garbage included).
    with pytest.raises(StudyError, match=r"copy.h5, layer 2: its feature values"):
        fingerprint_cache(open_cache(copy), [2])


@pytest.mark.parametrize(
    ("argv", "pattern"),
    [
        (["study", "{toml}", "--out", "{file}"], r"--out .*afile is a file"),
        (["study", "{toml}", "--out", "{file}/sub"], r"afile/sub cannot be made"),
        (["run", "error_structures", "--out", "{file}"], r"--out .*afile is a file"),
        (["demo", "--smoke", "--out", "{file}"], r"--out .*afile is a file"),
        (["run", "error_structures", "--cache-dir", "{file}"], r"--cache-dir .*file"),
    ],
    ids=["study-out-file", "study-out-under-file", "run-out-file", "demo-out-file",
         "run-cache-dir-file"],
)  # fmt: skip
def test_output_paths_are_checked_before_any_work(
    caches, tmp_path, capsys, monkeypatch, argv, pattern
):
    def never(*_a, **_k):
        raise AssertionError("work started before the output path was checked")

    monkeypatch.setattr(probe_lab.study, "run_study", never)
    monkeypatch.setattr(probe_lab.experiments, "run_experiment", never)
    monkeypatch.setattr(probe_lab.experiments, "run_demo", never)
    toml = tmp_path / "study.toml"
    toml.write_text(study_text(str(caches["good"])))
    afile = tmp_path / "afile"
    afile.write_text("results must not replace this")
    args = [a.format(toml=toml, file=afile) for a in argv]
    assert main(args) == 2
    line = one_error_line(capsys, argv[0])
    assert pd.Series([line]).str.contains(pattern).all(), line
    assert afile.read_text() == "results must not replace this"


def test_ctrl_c_in_a_study_is_one_line_and_exit_130(
    caches, tmp_path, capsys, monkeypatch
):
    def interrupt(*_a, **_k):
        raise KeyboardInterrupt

    monkeypatch.setattr(probe_lab.study.pipeline, "train_ground_truth", interrupt)
    toml = tmp_path / "study.toml"
    toml.write_text(study_text(str(caches["good"])))
    assert main(["study", str(toml), "--out", str(tmp_path / "o"), "--quiet"]) == 130
    line = one_error_line(capsys, "study")
    assert "interrupted; nothing was saved" in line and "same command" in line


def test_ctrl_c_in_the_demo_is_one_line_and_exit_130(tmp_path, capsys, monkeypatch):
    def interrupt(*_a, **_k):
        raise KeyboardInterrupt

    monkeypatch.setattr(probe_lab.experiments, "run_demo", interrupt)
    assert main(["demo", "--smoke", "--out", str(tmp_path / "d")]) == 130
    line = one_error_line(capsys, "demo")
    assert "interrupted; 0 finished studies are saved in" in line


# -------------------------------------------------------------------- probe-lab run

EXPERIMENT = """[experiment]
name = "x"
figure = "Fig. 25"
kind = "error_structures"
"""
EXP_PROBE = '[[study.supervisors]]\nkind = "probe"\nk = 3\n'

RUN_CASES = [
    ("seeds-string", '[study]\nseeds = "three"\n' + EXP_PROBE,
     r"exp.toml: study.seeds must be an integer, got 'three'"),
    ("seeds-float", "[study]\nseeds = 1.5\n" + EXP_PROBE,
     r"study.seeds must be an integer, got 1.5"),
    ("seeds-bool", "[study]\nseeds = true\n" + EXP_PROBE,
     r"study.seeds must be an integer, got True"),
    ("students-int", "[study]\nstudents = 16\n" + EXP_PROBE,
     r"study.students must be a list"),
    ("epochs-string", '[study.train]\nepochs = "five"\n' + EXP_PROBE,
     r"study.train.epochs must be an integer, got 'five'"),
    ("supervisors-string", '[study]\nsupervisors = "probe"\n',
     r"study.supervisors must be a list of tables"),
    ("imitation-without-base", '[[study.supervisors]]\nkind = "imitation"\n',
     r"has no base"),
    ("unknown-key", "[study]\nseedz = 2\n" + EXP_PROBE,
     r"\[study\] has unknown keys \['seedz'\]"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("text", "pattern"), [c[1:] for c in RUN_CASES], ids=[c[0] for c in RUN_CASES]
)
def test_run_refuses_bad_input_in_one_line(caches, tmp_path, capsys, text, pattern):
    toml = tmp_path / "exp.toml"
    toml.write_text(EXPERIMENT + text)
    argv = ["run", str(toml), "--cache", str(caches["good"]), "--quiet"]
    argv += ["--cache-dir", str(tmp_path / "caches")]
    assert main([*argv, "--out", str(tmp_path / "out")]) == 2
    line = one_error_line(capsys, "run")
    assert "exp.toml" in line and pd.Series([line]).str.contains(pattern).all(), line


@pytest.mark.parametrize(
    ("text", "pattern"),
    [("", r"exp.toml is empty: an experiment needs an \[experiment\] table"),
     ("[experiment\n", r"exp.toml is not valid TOML")],
    ids=["empty-file", "not-toml"],
)  # fmt: skip
def test_run_refuses_an_empty_or_broken_file(tmp_path, capsys, text, pattern):
    toml = tmp_path / "exp.toml"
    toml.write_text(text)
    assert main(["run", str(toml), "--out", str(tmp_path / "o")]) == 2
    assert pd.Series([one_error_line(capsys, "run")]).str.contains(pattern).all()


def test_run_with_no_gap_writes_everything_and_says_why(caches, tmp_path, capsys):
    out = tmp_path / "flat"
    argv = ["run", "error_structures", "--smoke", "--cache", str(caches["flat"])]
    argv += ["--cache-dir", str(tmp_path / "caches")]
    assert main([*argv, "--out", str(out), "--quiet"]) == 0
    summary = pd.read_csv(out / "summary.csv")
    assert summary.pgr.isna().all() and len(summary) > 1
    assert (out / "error_structures.png").is_file()
    assert len(list(out.glob("studies/*/table.parquet"))) == 1
    text = (out / "summary.md").read_text()
    assert "Here the finding could not be judged" in text
    assert "Every PGR is undefined" in text and "no gap to recover" in text
    record = json.loads((out / "experiment.json").read_text())
    assert {f["held"] for f in record["findings"]} == {None}


SIMULATION = """[experiment]
name = "sim"
figure = "Fig. 24"
kind = "simulation_difficulty"
references = [2, 4]
levels = []

[study]
students = ["all"]
seeds = 1

[study.train]
epochs = 1
batch_size = 32
"""


@pytest.mark.slow
def test_an_interrupted_run_resumes_by_study(caches, tmp_path, capsys, monkeypatch):
    real, calls = probe_lab.experiments.base.run_study, []

    def counted(config, **kwargs):
        calls.append(config)
        if stop_at and len(calls) == stop_at:
            raise KeyboardInterrupt
        return real(config, **kwargs)

    monkeypatch.setattr(probe_lab.experiments.base, "run_study", counted)
    cache = tmp_path / "c.h5"
    shutil.copy(caches["good"], cache)
    toml, out = tmp_path / "sim.toml", tmp_path / "out"
    toml.write_text(SIMULATION)
    argv = ["run", str(toml), "--cache", str(cache), "--out", str(out)]
    argv += ["--cache-dir", str(tmp_path / "caches")]

    def run(*extra: str, stop: int = 0) -> tuple[int, int, str]:
        nonlocal stop_at
        stop_at, before = stop, len(calls)
        code = main([*argv, *extra])
        return code, len(calls) - before, capsys.readouterr()

    stop_at = 0
    code, ran, seen = run(stop=2)  # Ctrl-C in the second study
    assert code == 130 and ran == 2
    assert "interrupted; 1 finished study is saved in" in seen.err
    assert len(list(out.glob(f"studies/*/{MARKER}"))) == 1
    code, ran, seen = run()  # the same command: reuses the first, runs the second
    assert code == 0 and ran == 1
    assert "reusing the study saved in" in seen.out and "reused 1 of 2" in seen.out
    record = json.loads((out / "experiment.json").read_text())
    assert len(record["reused"]) == 1 and len(record["studies"]) == 2
    resumed = pd.read_csv(out / "summary.csv")
    code, ran, _ = run("--fresh")  # recomputing gives the same numbers
    assert code == 0 and ran == 2
    pd.testing.assert_frame_equal(pd.read_csv(out / "summary.csv"), resumed)
    (next(out.glob(f"studies/*/{MARKER}"))).unlink()  # a save cut short
    assert run()[:2] == (0, 1)
    toml.write_text(SIMULATION + "lr = 0.002\n")  # config changed
    assert run()[:2] == (0, 2)
    with h5py.File(cache, "r+") as f:  # same path, a row changed behind its back
        f["features/layer_02"][0, 0] += 1
    code, ran, seen = run()
    assert (code, ran) == (2, 0) and "checksum" in seen.err  # refused, nothing run
    with h5py.File(cache, "r+") as f:  # same path, other content (checksums match)
        layers = [int(k) for k in json.loads(f.attrs[store.CHECKSUMS])]
        f.attrs[store.CHECKSUMS] = store.feature_digests(f, layers)
    assert run()[:2] == (0, 2)


# ---------------------------------------------------- undefined PGR in every kind


def _summary(supervisors, **columns) -> pd.DataFrame:
    """Summary rows of the largest student with no gap: PGR and intervals NaN."""
    rows = [
        dict(supervisor=s, kind=s.split()[0], student=8, loss=loss, weak_acc=1.0,
             student_acc=1.0, ceiling_acc=1.0, pgr=np.nan, pgr_low=np.nan,
             pgr_high=np.nan, agreement=1.0, agreement_weak_wrong=np.nan, **columns)
        for s in supervisors
        for loss in ("xent", "confidence")
    ]  # fmt: skip
    return pd.DataFrame(rows)


def _kind_checks():
    """Each kind's claim checks, on inputs where PGR (or the weak-wrong agreement)
    is undefined."""
    sim = _summary(["M_2", "random", "mixture 0.5"], reference=2)
    sim["kind"] = ["probe"] * 2 + ["random"] * 2 + ["mixture"] * 2
    dyn = pd.DataFrame(
        [dict(supervisor=s, student=8, loss=loss, seed=0, epoch=e,
              agreement_weak_wrong=np.nan)
         for s in ("M_2", "random") for loss in ("xent", "confidence")
         for e in (1, 2)]
    )  # fmt: skip
    table = _summary(["M_2", "random"]).assign(task="t", seed=0)
    table = pd.concat([table, table.assign(seed=1)], ignore_index=True)
    sizes = pd.concat(
        [_summary(["M_2", "random"], labelled=n) for n in (50, 100)], ignore_index=True
    )
    conditions = pd.DataFrame(
        dict(
            task=["a"] * 3 + ["b"] * 3,
            pgr=np.nan,
            gain=[0.1, 0.2, 0.0] * 2,
            simulatability=[0.5, 0.6, 0.7] * 2,
        )
    )
    return {
        "error_structures": lambda: error_structures.check(
            _summary(["M_2", "random", "longest"]), "M_2"
        ),
        "simulation_difficulty": lambda: simulation_difficulty.check(
            sim, mixtures=True
        ),
        "linear_probe_w2s": lambda: linear_probe_w2s.check(_summary(["M_2"])),
        "training_dynamics": lambda: training_dynamics.check(dyn, "M_2"),
        "trivial_imitation": lambda: trivial_imitation.check(
            _summary(["weak", "weak as feature", "weak in prompt"])
        ),
        "methods": lambda: methods.check(rank_methods(table)),
        "sample_size": lambda: sample_size.check(sizes, "M_2"),
        "task_suite": lambda: task_suite.check(
            _summary(["bow", "random@bow"]).assign(task="t")
        ),
        "model_ladder": lambda: model_ladder.check(
            pd.DataFrame(
                dict(
                    task="t",
                    weak="a",
                    strong="b",
                    weak_acc=0.8,
                    ceiling_acc=0.805,
                    pgr=np.nan,
                    pgr_low=np.nan,
                    pgr_high=np.nan,
                    diff=np.nan,
                    diff_high=np.nan,
                    strong_params=1.0,
                ),
                index=[0],
            ),
            pd.DataFrame(
                dict(
                    task="t",
                    rung=["a", "b"],
                    ceiling=[0.8, 0.805],
                    by_size=[0, 1],
                    by_ceiling=[0, 1],
                )
            ),
        ),
        "predictors": lambda: predictors.check(
            predictors.score(conditions, ["simulatability"], "task"),
            pd.DataFrame(),
            "task",
        ),
    }


@pytest.mark.parametrize("kind", KINDS.names())
def test_claims_with_undefined_pgr_are_not_judged(kind):
    checks = _kind_checks()
    assert kind in checks, f"add a no-gap case of the experiment kind {kind} here"
    findings = checks[kind]()
    judged = [f for f in findings if f.held is not None and "PGR" in f.claim]
    assert findings and not judged, findings
    if kind != "simulation_difficulty":  # its agreement check needs no PGR
        assert {f.held for f in findings} == {None}


def test_figures_with_undefined_pgr_still_draw(tmp_path):
    summary = _summary(["M_2", "random"])
    table = pd.concat(
        [summary.assign(task="t", seed=s) for s in (0, 1)], ignore_index=True
    )
    figures = {
        "structures": error_structures.plot(summary),
        "imitation": trivial_imitation.plot(_summary(["weak", "weak as feature"])),
        "sizes": sample_size.plot(
            pd.concat([summary.assign(labelled=n) for n in (50, 100)])
        ),
        "leaderboard": methods.plot(rank_methods(table)),
    }
    for name, fig in figures.items():
        assert plots.save(fig, tmp_path / f"{name}.png").stat().st_size > 10_000


# ------------------------------------------------------------ probe-lab extract


def test_extract_out_that_is_a_folder_is_refused(tmp_path, capsys):
    folder = tmp_path / "adir"
    folder.mkdir()
    (folder / "keep.txt").write_text("mine")
    for extra in ([], ["--overwrite"]):
        argv = ["extract", "--model", "minilm", "--task", "cities", "--out"]
        assert main([*argv, str(folder), *extra]) == 1
        line = one_error_line(capsys, "extract")
        assert f"--out {folder} is a folder" in line and "cache.h5" in line
    assert (folder / "keep.txt").read_text() == "mine"


def test_ctrl_c_in_extract_keeps_the_rows_and_the_same_command_resumes(
    tiny_models, text_task, tmp_path, capsys, monkeypatch
):
    real, puts = store.Writer.put, []

    def put(self, *args, **kwargs):
        puts.append(args)
        if len(puts) == 3:
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    out = tmp_path / "c.h5"
    argv = ["extract", "--model", str(tiny_models["gpt2"]), "--task", str(text_task)]
    argv += ["--out", str(out), "--batch-size", "4", "--device", "cpu", "--quiet"]
    monkeypatch.setattr(store.Writer, "put", put)
    assert main(argv) == 130
    line = one_error_line(capsys, "extract")
    assert f"{out} keeps the 8 of 12 rows written so far" in line
    assert "same command resumes it" in line
    monkeypatch.setattr(store.Writer, "put", real)
    assert main(argv) == 0
    assert open_cache(out).complete and open_cache(out).n == 12


def test_quiet_extract_still_warns_about_cut_prompts(
    tiny_models, text_task, tmp_path, capsys
):
    argv = ["extract", "--model", str(tiny_models["gpt2"]), "--task", str(text_task)]
    argv += ["--out", str(tmp_path / "c.h5"), "--max-length", "8", "--device", "cpu"]
    assert main([*argv, "--quiet"]) == 0
    err = capsys.readouterr().err  # a warning: on stderr, not hidden by --quiet
    assert "warning:" in err and "prompts were cut to 8 tokens" in err


def _latin1_task(folder: Path, suffix: str) -> Path:
    """A task file whose third line holds a Latin-1 byte (0xe9, "é")."""
    path = folder / f"latin1{suffix}"
    if suffix == ".csv":
        path.write_bytes(b"text,label\nfine,0\ncaf\xe9 au lait,1\n")
    else:
        lines = [b'{"text": "fine", "label": 0}', b'{"text": "ok", "label": 1}']
        path.write_bytes(b"\n".join([*lines, b'{"text": "caf\xe9", "label": 1}\n']))
    return path


EXTRACT_CASES = [
    # (id, arguments after `extract` ({gpt2}, {llama}, {task} filled in), patterns)
    ("max-length-below-minilm-special-tokens",
     ["--model", "minilm", "--max-length", "1"],
     [r"--max-length 1 leaves no room for text", r"adds 2 special token",
      r"give --max-length 3 or more"]),
    ("max-length-only-the-bos-token", ["--model", "{llama}", "--max-length", "1"],
     [r"the tokenizer of .*llama adds 1 special token", r"--max-length 2 or more"]),
    ("device-not-a-device", ["--model", "{gpt2}", "--device", "cdua"],
     [r"--device 'cdua' is not a torch device; use auto, cpu, cuda"]),
    ("task-not-utf8-jsonl", ["--model", "bow", "--task", "{latin1_jsonl}"],
     [r"latin1.jsonl:3: byte 0xe9 at column 14 is not UTF-8", r"save the file as"]),
    ("task-not-utf8-csv", ["--model", "bow", "--task", "{latin1_csv}"],
     [r"latin1.csv:3: byte 0xe9 at column 4 is not UTF-8"]),
    ("template-unclosed", ["--model", "bow", "--template", "{{text"],
     [r"the template '\{text' is malformed \(expected '\}' before end of string\)",
      r"a literal brace is doubled"]),
    ("template-bad-format-spec", ["--model", "bow", "--template", "{{text:d}}"],
     [r"the template '\{text:d\}' is malformed \(Unknown format code 'd'"]),
]  # fmt: skip


@pytest.mark.parametrize(
    ("args", "patterns"),
    [c[1:] for c in EXTRACT_CASES],
    ids=[c[0] for c in EXTRACT_CASES],
)
def test_extract_refuses_bad_input_in_one_line(
    tiny_models, text_task, tmp_path, capsys, args, patterns
):
    fill = {
        "gpt2": tiny_models["gpt2"],
        "llama": tiny_models["llama"],
        "latin1_jsonl": _latin1_task(tmp_path, ".jsonl"),
        "latin1_csv": _latin1_task(tmp_path, ".csv"),
    }
    args = [a.format(**fill) for a in args]
    out = tmp_path / "c.h5"
    task = [] if "--task" in args else ["--task", str(text_task)]
    assert main(["extract", *args, *task, "--out", str(out), "--quiet"]) == 1
    line = one_error_line(capsys, "extract")
    for pattern in patterns:
        assert pd.Series([line]).str.contains(pattern).all(), (pattern, line)
    assert not out.exists() and not (tmp_path / "c.h5.lock").exists()


def test_extract_on_cuda_with_a_cpu_only_torch_says_so(
    tiny_models, text_task, tmp_path, capsys
):
    torch = pytest.importorskip("torch")
    if torch.version.cuda or torch.version.hip:
        pytest.skip("needs a CPU-only torch build")
    out = tmp_path / "c.h5"
    argv = ["extract", "--model", str(tiny_models["gpt2"]), "--task", str(text_task)]
    for device in ("cuda", "cuda:1"):
        assert main([*argv, "--out", str(out), "--device", device]) == 1
        line = one_error_line(capsys, "extract")
        assert f"--device {device}: CUDA is not available in this torch build" in line
        assert "is CPU-only); install a CUDA build of torch" in line
        assert line.endswith("or use --device cpu")
    assert not out.exists()


def test_extract_takes_a_negative_layer_list(tiny_models, text_task, tmp_path, capsys):
    argv = ["extract", "--model", str(tiny_models["gpt2"]), "--task", str(text_task)]
    for i, layers in enumerate((["--layers", "-1,-2"], ["--layers=-1,-2"])):
        out = tmp_path / f"c{i}.h5"
        assert main([*argv, *layers, "--out", str(out), "--quiet"]) == 0
        assert open_cache(out).layers == [1, 2]  # of 2 blocks: -1 = 2, -2 = 1
    assert main([*argv, "--layers", "-1,-8", "--out", str(tmp_path / "x.h5")]) == 1
    assert "layer -8 is out of range" in one_error_line(capsys, "extract")
    with pytest.raises(SystemExit):
        main(["extract", "--help"])
    assert "--layers -1,-8 and --layers=-1,-8 both work" in " ".join(
        capsys.readouterr().out.split()
    )


def test_extract_refuses_a_disk_too_small_before_writing(tmp_path, capsys, monkeypatch):
    real = shutil.disk_usage
    monkeypatch.setattr(
        shutil, "disk_usage", lambda path: real(path)._replace(free=1 << 20)
    )
    out = tmp_path / "c.h5"
    argv = ["extract", "--model", "bow", "--task", "cities", "--size", "200"]
    assert main([*argv, "--out", str(out), "--quiet"]) == 1
    line = one_error_line(capsys, "extract")
    assert f"{out} needs about 2.6 MiB" in line
    assert "(rows x layers x width x bytes: 200 x 1 x 4096 x 2 for float16)" in line
    assert f"but {tmp_path} has 1.0 MiB free; free some space" in line
    assert not out.exists()


def test_a_full_disk_while_writing_keeps_the_rows_and_the_file_resumes(
    tiny_models, text_task, tmp_path, capsys, monkeypatch
):
    argv = ["extract", "--model", str(tiny_models["gpt2"]), "--task", str(text_task)]
    argv += ["--batch-size", "4", "--dtype", "float32", "--device", "cpu", "--quiet"]
    whole = tmp_path / "whole.h5"
    assert main([*argv, "--out", str(whole)]) == 0
    full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    real_write, failed = store.Writer._write, []

    def write(self, batch, *args):  # the disk fills up while batch 1 is written
        if batch == 1 and not failed:
            failed.append(batch)
            raise full
        return real_write(self, batch, *args)

    monkeypatch.setattr(store.Writer, "_write", write)
    out = tmp_path / "c.h5"
    assert main([*argv, "--out", str(out)]) == 1
    line = one_error_line(capsys, "extract")
    assert f"no space left on the disk holding {out}" in line
    assert "1 of 3 batches are written and kept, and the file is resumable" in line
    assert "free some space, then run the same command again" in line
    assert open_cache(out, allow_partial=True).n == 4
    size = out.stat()
    assert size.st_blocks * 512 >= size.st_size  # allocated up front, not sparse
    assert main([*argv, "--out", str(out)]) == 0
    assert same_datasets(whole, out) >= 10

    def no_room(fd, offset, length):
        raise full

    monkeypatch.setattr(os, "posix_fallocate", no_room)  # a full disk at the start
    fresh = tmp_path / "fresh.h5"
    assert main([*argv, "--out", str(fresh)]) == 1
    assert "0 of 3 batches are written and kept" in one_error_line(capsys, "extract")
    monkeypatch.undo()
    assert main([*argv, "--out", str(fresh)]) == 0
    assert same_datasets(whole, fresh) >= 10


LOCK_HOLDER = """
import sys, time
from pathlib import Path
from activation_cache import ExtractConfig, extract

out, ready, go = (Path(a) for a in sys.argv[1:])

def wait(done, total):  # hold the file, half written, until the test says go
    if done == 1:
        ready.touch()
        deadline = time.monotonic() + 120
        while not go.exists() and time.monotonic() < deadline:
            time.sleep(0.02)

config = dict(model="bow", task="cities", size=200, batch_size=50, quiet=True)
extract(ExtractConfig(out=out, **config), on_batch=wait)
"""

LOCK_DIES = """
import os, signal, sys
from pathlib import Path
from activation_cache.output import lock_output

with lock_output(Path(sys.argv[1])):
    os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.subprocess
def test_a_second_extract_to_the_same_out_is_refused_naming_the_holder(
    tmp_path, capsys
):
    out, ready, go = tmp_path / "c.h5", tmp_path / "ready", tmp_path / "go"
    lock = tmp_path / "c.h5.lock"
    argv = ["extract", "--model", "bow", "--task", "cities", "--size", "200"]
    argv += ["--batch-size", "50", "--out", str(out), "--quiet"]
    holder = subprocess.Popen(
        [sys.executable, "-c", LOCK_HOLDER, str(out), str(ready), str(go)]
    )
    try:
        deadline = time.monotonic() + 120
        while not ready.exists():
            assert holder.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
        for extra in ([], ["--overwrite"]):
            assert main([*argv, *extra]) == 1
            line = one_error_line(capsys, "extract")
            assert f"{out} is being written by another extraction" in line
            assert f"(process {holder.pid} on {socket.gethostname()} holds" in line
            assert "wait for it to finish" in line
    finally:
        go.touch()
        holder.wait(timeout=120)
    assert holder.returncode == 0 and open_cache(out).complete
    assert not lock.exists()

    dead = subprocess.Popen([sys.executable, "-c", LOCK_DIES, str(out)])
    assert dead.wait(timeout=120) == -9 and lock.exists()  # a lock left behind
    assert main([*argv, "--overwrite"]) == 0
    err = capsys.readouterr().err
    assert f"taking over {lock}, left by process {dead.pid} on" in err
    assert open_cache(out).complete and not lock.exists()

    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    with pytest.raises(ExtractError, match=r"cannot create or lock .*afile/c.h5.lock"):
        extract(
            ExtractConfig(model="bow", task="cities", out=afile / "c.h5", quiet=True)
        )


def test_extract_refuses_to_write_over_its_own_task_file(tmp_path, capsys):
    task = tmp_path / "data.jsonl"
    rows = [{"text": f"row {i} word{i % 3}", "label": i % 2} for i in range(8)]
    task.write_text("".join(json.dumps(r) + "\n" for r in rows))
    before = task.read_bytes()
    (tmp_path / "soft.jsonl").symlink_to(task)
    os.link(task, tmp_path / "hard.jsonl")
    for out in ("data.jsonl", "soft.jsonl", "hard.jsonl", "./sub/../data.jsonl"):
        (tmp_path / "sub").mkdir(exist_ok=True)
        argv = ["extract", "--model", "bow", "--task", str(task), "--quiet"]
        assert main([*argv, "--out", str(tmp_path / out), "--overwrite"]) == 1
        line = one_error_line(capsys, "extract")
        assert f"is the file --task {task} reads" in line and "another --out" in line
        assert task.read_bytes() == before
    assert main([*argv, "--out", str(tmp_path / "c.h5")]) == 0
    assert open_cache(tmp_path / "c.h5").n == 8


def test_info_cuts_huge_attributes_and_strips_terminal_escapes(tmp_path, capsys):
    path = write_synthetic_cache(tmp_path / "c.h5", n=40, d=4)
    with h5py.File(path, "r+") as f:
        f.attrs["model"] = "\x1b[2J\x1b]0;owned\x07evil\x1b[31m red\x07"
        f.attrs["task"] = "t" * 60_000
    assert main(["info", str(path), "--validate"]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out
    assert "model     evil red\\x07" in out
    assert "(60,000 characters, cut)" in out and len(out) < 6_000
    assert "feature checksums match" in out
    with h5py.File(path, "r+") as f:
        del f.attrs["feature_sha256"]
    assert main(["info", str(path), "--validate"]) == 0
    assert "note: this cache stores no feature checksums" in capsys.readouterr().out
    with h5py.File(path, "r+") as f:
        f.attrs["format"] = "\x1b[31m" + "f" * 60_000
    assert main(["info", str(path)]) == 1
    line = one_error_line(capsys, "info")
    assert "\x1b" not in line and len(line) < 3_000


def test_info_on_a_folder_says_so(tmp_path, capsys):
    assert main(["info", str(tmp_path)]) == 1
    line = one_error_line(capsys, "info")
    assert f"{tmp_path} is a folder, not a cache file" in line and "errno" not in line


@pytest.mark.subprocess
def test_extract_and_info_never_import_jax(tmp_path):
    task, out = tmp_path / "t.jsonl", tmp_path / "c.h5"
    rows = [{"text": f"w{i}", "label": i % 2} for i in range(8)]
    task.write_text("".join(json.dumps(r) + "\n" for r in rows))
    code = (
        "import sys\nfrom probe_lab.cli import main\n"
        "for argv in (['extract', '--help'], ['info', '--help']):\n"
        "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
        f"assert main(['extract', '--model', 'bow', '--task', {str(task)!r}, "
        f"'--out', {str(out)!r}, '--quiet']) == 0\n"
        f"assert main(['info', {str(out)!r}, '--validate']) == 0\n"
        "print(sorted(m for m in ('jax', 'torch', 'probe_lab.study') "
        "if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "--overwrite" in done.stdout and done.stdout.strip().endswith("[]")


def test_ctrl_c_while_starting_is_one_line_and_exit_130(capsys, monkeypatch):
    def slow_imports():
        raise KeyboardInterrupt

    monkeypatch.setattr("probe_lab.cli.build_parser", slow_imports)
    assert main(["info", "x.h5"]) == 130
    err = capsys.readouterr().err
    assert err.strip() == "probe-lab: interrupted while starting; nothing was written"


def test_ctrl_c_inside_a_gc_callback_still_stops_the_command(
    tmp_path, capsys, monkeypatch
):
    import gc

    path = write_synthetic_cache(tmp_path / "c.h5", n=40, d=4)
    seen = []

    def callback(phase, info):  # as JAX's: Ctrl-C lands while it runs
        if phase == "start" and not seen:
            seen.append(phase)
            raise KeyboardInterrupt

    def info_after_a_collection(args):
        gc.callbacks.append(callback)
        try:
            gc.collect()
            for _ in range(100):  # the rest of the work: must not run to the end
                time.sleep(0.01)
        finally:
            gc.callbacks.remove(callback)
        return 0

    monkeypatch.setattr("activation_cache.cli.run_info", info_after_a_collection)
    # A Ctrl-C reaches Python only where SIGINT is Python's to handle: a shell
    # without job control starts background commands with it ignored.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        assert main(["info", str(path)]) == 130
    finally:
        signal.signal(signal.SIGINT, previous)
    assert seen and "interrupted" in capsys.readouterr().err


def test_two_studies_into_one_out_are_refused(caches, tmp_path, capsys):
    from probe_lab.experiments.run import lock_out

    toml, out = tmp_path / "study.toml", tmp_path / "res"
    toml.write_text(study_text(str(caches["good"])))
    with lock_out(out):  # another study is running into it
        assert main(["study", str(toml), "--out", str(out), "--quiet"]) == 2
    line = one_error_line(capsys, "study")
    assert f"--out {out} is being written by another run (process " in line
    assert not (out / "table.parquet").exists()


def test_run_locks_its_out_and_refuses_another_experiments_folder(
    caches, tmp_path, capsys
):
    from probe_lab.experiments import load_experiment
    from probe_lab.experiments.config import experiment_configs
    from probe_lab.experiments.run import default_out, lock_out

    out = tmp_path / "out"
    argv = ["run", "error_structures", "--smoke", "--cache", str(caches["flat"])]
    argv += ["--out", str(out), "--cache-dir", str(tmp_path / "caches"), "--quiet"]
    with lock_out(out):  # another run is writing it
        assert main(argv) == 2
        line = one_error_line(capsys, "run")
        assert f"--out {out} is being written by another run (process " in line
        assert "give another --out" in line and not (out / "summary.csv").exists()
    assert main(argv) == 0 and not (out / ".lock").exists()
    printed = capsys.readouterr().out  # the findings block says what smoke is
    assert "error_structures (Fig. 25 analog) [smoke: not evidence;" in printed
    assert "**Smoke: not evidence.**" in (out / "summary.md").read_text()
    assert main(argv) == 0  # the same experiment again: reuses its folder
    capsys.readouterr()
    packaged = experiment_configs()["error_structures"].read_text()
    copy = tmp_path / "error_structures.toml"  # the user's edited copy
    copy.write_text(packaged.replace("seeds =", "# mine\nseeds =", 1))
    before = (out / "summary.csv").read_bytes()
    assert main(["run", str(copy), *argv[2:]]) == 2
    line = one_error_line(capsys, "run")
    assert "holds the results of another experiment ('error_structures' from" in line
    assert f"not 'error_structures' from {copy}; give another --out" in line
    assert (out / "summary.csv").read_bytes() == before
    toml = tmp_path / "study.toml"  # a study into the experiment's folder
    toml.write_text(study_text(str(caches["good"])))
    assert main(["study", str(toml), "--out", str(out), "--quiet"]) == 2
    assert "holds the results of an experiment" in one_error_line(capsys, "study")
    assert main(["study", str(toml), "--out", str(tmp_path / "s"), "--quiet"]) == 0
    capsys.readouterr()
    assert main([*argv[:5], "--out", str(tmp_path / "s"), *argv[7:]]) == 2
    assert "holds the results of a study" in one_error_line(capsys, "run")
    assert (out / "summary.csv").read_bytes() == before
    mine = tmp_path / "mymethods.toml"
    mine.write_text(experiment_configs()["methods"].read_text())
    assert default_out(load_experiment(mine)) == Path("runs/mymethods")
    assert default_out(load_experiment("methods")) == Path("runs/methods")
    linked = tmp_path / "linked.toml"
    linked.symlink_to(Path(str(experiment_configs()["methods"])))
    assert default_out(load_experiment(linked, preset="smoke")) == Path(
        "runs/methods-smoke"
    )


# ------------------------------------------------------------ failed probes (study)


@pytest.fixture(scope="module")
def nan_loss():
    """The issue's loss: finite on the first minibatch, NaN afterwards."""
    import jax.numpy as jnp

    from probe_lab.losses import LOSSES, register_loss

    @register_loss("_nan_later", params={"gamma": 2.0}, overwrite=True)
    def _nan_later(logits, targets, mask, progress, params):
        del targets, mask, params
        return jnp.sqrt(jnp.where(progress > 0, -1 - logits**2, 1))

    yield "_nan_later"
    LOSSES.unregister("_nan_later")


def test_failed_students_are_marked_named_and_never_reported(caches, nan_loss, capsys):
    from probe_lab import TrainConfig
    from probe_lab.study import StudyConfig, Supervisor, run_study

    config = StudyConfig(
        cache=str(caches["good"]),
        layer=2,
        seeds=2,
        supervisors=(Supervisor(kind="probe", k=3),),
        students=(8,),
        losses=("xent", nan_loss),
        train=TrainConfig(epochs=3, batch_size=32),
    )
    result = run_study(config)
    out = capsys.readouterr().out
    table = result.table
    bad = table[table.loss == nan_loss]
    good = table[table.loss == "xent"]
    assert (bad.failed_epoch >= 1).all() and (good.failed_epoch == -1).all()
    for column in ("student_acc", "pgr", "agreement", "gain", "misfit"):
        assert bad[column].isna().all(), column
        assert column == "pgr" or good[column].notna().all(), column
    assert (bad.pgr_note.str.startswith("failed")).all()
    # xent's rows are those of a study without the failing loss.
    alone = run_study(dataclasses.replace(config, losses=("xent",)), progress=False)
    cols = ["student_acc", "agreement", "pgr", "best_epoch"]
    np.testing.assert_array_equal(
        good[cols].to_numpy(float), alone.table[cols].to_numpy(float)
    )
    [line] = [ln for ln in out.splitlines() if "FAILED" in ln]
    for part in (nan_loss, "gamma=2", "supervisor 'M_3'", "k=8", "epoch 1"):
        assert part in line, (part, line)
    summary = result.summary().set_index("loss")
    assert summary.loc[nan_loss, "failed"] == 2 and summary.loc[nan_loss, "seeds"] == 0
    assert np.isnan(summary.loc[nan_loss, "pgr"])
    assert summary.loc["xent", "failed"] == 0 and summary.loc["xent", "seeds"] == 2
    board = rank_methods(table)
    assert nan_loss not in set(board.overall.method)
    assert board.failed == 2 and "2 failed probe row(s)" in board.markdown()


def test_failed_ground_truth_probes_are_a_clear_study_error(caches):
    from probe_lab import TrainConfig
    from probe_lab.study import StudyConfig, StudyError, Supervisor, run_study

    config = StudyConfig(
        cache=str(caches["good"]),
        layer=2,
        seeds=1,
        supervisors=(Supervisor(kind="probe", k=3),),
        students=(8,),
        train=TrainConfig(epochs=2, batch_size=32, lr=1e38),
    )
    with pytest.raises(StudyError, match=r"ground truth: .*went NaN or inf: ") as err:
        run_study(config, progress=False)
    assert "ceiling_8 (seed 0, k=8, epoch 1)" in str(err.value)
    assert "M_3 (seed 0" in str(err.value)
    raising = dataclasses.replace(
        config, train=dataclasses.replace(config.train, on_nonfinite="raise")
    )
    with pytest.raises(StudyError, match=r"^ground truth: .* trained to NaN or inf"):
        run_study(raising, progress=False)


# ------------------------------------------------------- your own method, end to end

MYLOSSES = '''
import jax


def half(logits, targets, mask, progress, params):
    """Cross-entropy at half weight: the same ranking as xent, its own name."""
    del mask, progress
    return params["w"] * (jax.nn.softplus(logits) - targets * logits)


half.params = {"w": 0.5}
'''


@pytest.fixture
def mylosses(tmp_path, monkeypatch):
    """A user's loss module on the path, as ``PYTHONPATH=.`` puts it there."""
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "_mylosses_w2s.py").write_text(MYLOSSES)
    monkeypatch.syspath_prepend(str(folder))
    yield "_mylosses_w2s:half"
    sys.modules.pop("_mylosses_w2s", None)


def test_study_on_your_own_method_writes_a_summary_and_a_method_figure(
    caches, tmp_path, capsys, mylosses
):
    toml = tmp_path / "study.toml"
    toml.write_text(
        study_text(top='losses = ["xent"]\nseeds = 2', sups=PROBE)
        .replace("seeds = 1\n", "")
        .replace("epochs = 1", "epochs = 3")
        + f'\n[[methods]]\nname = "{mylosses}"\n'
    )
    toml.write_text(toml.read_text().format(good=caches["good"]))
    out = tmp_path / "out"
    assert main(["study", str(toml), "--out", str(out), "--quiet"]) == 0
    text = (out / "summary.md").read_text()
    assert f"| M_3 | 8 | {mylosses}(w=0.5) | 2 |" in text or mylosses in text
    assert "Fieller" in text and "| xent |" in text
    assert (out / "methods.png").stat().st_size > 10_000
    assert "summary.md, methods.png" in capsys.readouterr().out


def test_study_report_gives_fieller_intervals_and_says_one_seed():
    from probe_lab.study import StudyConfig
    from probe_lab.study.report import method_pgr, summary_markdown
    from probe_lab.study.result import StudyResult

    rng = np.random.default_rng(0)
    rows = []
    for seed in range(4):
        for loss, student in (("xent", 0.8), ("mine", 0.85)):
            rows.append(
                dict(
                    supervisor="M_3",
                    kind="probe",
                    student=8,
                    loss=loss,
                    method=loss,
                    seed=seed,
                    weak_acc=0.7 + 0.01 * rng.normal(),
                    student_acc=student + 0.01 * rng.normal(),
                    ceiling_acc=0.9 + 0.01 * rng.normal(),
                    failed_epoch=3 if (loss == "mine" and seed == 0) else -1,
                    agreement=0.9,
                    agreement_weak_wrong=0.5,
                    agreement_weak_right=0.95,
                )
            )
    table = pd.DataFrame(rows)
    config = StudyConfig(cache="x.h5", layer=2, seeds=4)
    result = StudyResult(table, pd.DataFrame(), config, {}, [])
    frame = method_pgr(result).set_index("loss")
    ok = table[(table.loss == "mine") & (table.failed_epoch < 0)]
    ref = probe_lab.metrics.pgr_interval(ok.weak_acc, ok.student_acc, ok.ceiling_acc)
    assert frame.loc["mine", "seeds"] == 3 and frame.loc["mine", "failed"] == 1
    np.testing.assert_allclose(
        frame.loc["mine", ["pgr", "pgr_low", "pgr_high"]].to_numpy(float),
        [ref.pgr, ref.low, ref.high],
    )
    assert "mine on M_3, student k=8, seed 0: non-finite from epoch 3" in (
        summary_markdown(result)
    )
    one = StudyResult(
        table[table.seed == 1],
        pd.DataFrame(),
        dataclasses.replace(config, seeds=1),
        {},
        [],
    )
    assert (method_pgr(one).note == "1 seed: no interval").all()
    assert (one.summary().interval == "1 seed: no interval").all()
    assert "1 seed: no interval" in summary_markdown(one)


def test_run_methods_with_your_own_method_ranks_it_next_to_the_builtins(
    caches, tmp_path, capsys, mylosses
):
    out = tmp_path / "run"
    argv = ["run", "methods", "--smoke", "--cache", str(caches["good"])]
    argv += ["--method", mylosses, "--out", str(out), "--quiet"]
    assert main(argv) == 0
    board = pd.read_parquet(out / "leaderboard_overall.parquet")
    methods = set(board.method)
    assert any(m.startswith(mylosses) for m in methods), methods
    assert {"xent", "confidence", "gce"} <= methods
    assert main(["run", "methods", "--method", "_nope_w2s:x", "--quiet"]) == 2
    assert "--method _nope_w2s:x" in one_error_line(capsys, "run")


def test_run_methods_default_folder_names_the_added_methods():
    from probe_lab.experiments import load_experiment
    from probe_lab.experiments.run import default_out, with_methods

    config = load_experiment("methods", preset="smoke")
    added = with_methods(config, ["gce", "gce"])
    assert [m["name"] for m in added.study["methods"]].count("gce") == 1
    assert default_out(config, ["mylosses:focal"]) == Path(
        "runs/methods+mylosses_focal-smoke"
    )


# ------------------------------------------------------ supervisor plug-ins, checked


def _plugin_returning(make):
    """A supervisor kind whose label function returns ``make(ctx)``."""
    from probe_lab.supervisors import WeakLabels

    def label(sup, ctx):
        del sup
        return make(ctx, WeakLabels)

    return label


def _labels(ctx, weak_labels, **change):
    n = ctx.truth.shape[0]
    fields = dict(targets=ctx.truth.astype(np.float32), hard=ctx.truth, weak_acc=0.9)
    fields.update({k: v(n) if callable(v) else v for k, v in change.items()})
    return weak_labels(**fields)


def _raises(ctx, weak_labels):
    return {}["missing"]


PLUGIN_CASES = [
    ("wrong-length", lambda c, w: _labels(c, w, targets=lambda n: np.ones(n - 1)),
     r"targets must be a numeric array of shape \(400,\).*shape \(399,\)"),
    ("out-of-range", lambda c, w: _labels(c, w, targets=lambda n: np.full(n, 1.5)),
     r"targets must be finite, in \[0, 1\]; 400 of 400 rows are not"),
    ("nan-targets", lambda c, w: _labels(c, w, targets=lambda n: np.full(n, np.nan)),
     r"targets must be finite, in \[0, 1\]"),
    ("hard-not-binary", lambda c, w: _labels(c, w, hard=lambda n: np.full(n, 2)),
     r"hard must be 0 or 1"),
    ("weak-acc-string", lambda c, w: _labels(c, w, weak_acc="high"),
     r"weak_acc must be a number"),
    ("a-tuple", lambda c, w: (c.truth, c.truth, 0.9),
     r"returned a tuple; return WeakLabels\(targets=..., hard=..., weak_acc=...\)"),
    ("raises", _raises, r"its label function raised KeyError: 'missing'"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("make", "pattern"), [c[1:] for c in PLUGIN_CASES], ids=[c[0] for c in PLUGIN_CASES]
)
def test_a_broken_supervisor_plugin_is_named(caches, make, pattern):
    from probe_lab import TrainConfig
    from probe_lab.study import StudyConfig, StudyError, Supervisor, run_study
    from probe_lab.supervisors import SUPERVISORS, register_supervisor

    register_supervisor("_broken_w2s", overwrite=True)(_plugin_returning(make))
    try:
        config = StudyConfig(
            cache=str(caches["good"]),
            layer=2,
            seeds=1,
            supervisors=(Supervisor(kind="_broken_w2s", name="mine"),),
            students=(8,),
            train=TrainConfig(epochs=1, batch_size=32),
        )
        with pytest.raises(StudyError) as err:
            run_study(config, progress=False)
    finally:
        SUPERVISORS.unregister("_broken_w2s")
    message = str(err.value)
    assert "supervisor 'mine' (kind '_broken_w2s', seed 0)" in message, message
    assert pd.Series([message]).str.contains(pattern).all(), (pattern, message)


# ------------------------------------------- joined caches, fingerprints, checksums


def _some_ids(path: Path, shared: int) -> Path:
    """A copy of ``path`` whose ids past the first ``shared`` are another task's."""
    with h5py.File(path, "r+") as f:
        ids = f["ids"].asstr()[()]
        ids[shared:] = [f"other-{i}" for i in range(ids.size - shared)]
        f["ids"][...] = np.array(ids, dtype=object)
    return path


@pytest.mark.parametrize("shared", [300, 100])
def test_a_cache_sharing_some_ids_is_warned_about_or_refused(
    caches, tmp_path, capsys, shared
):
    other = tmp_path / "other.h5"
    shutil.copy(caches["good"], other)
    _some_ids(other, shared)
    sups = PROBE + f'[[supervisors]]\nkind = "probe"\nname = "o"\ncache = "{other}"\n'
    toml = tmp_path / "study.toml"
    toml.write_text(study_text(sups=sups).format(good=caches["good"]))
    argv = ["study", str(toml), "--out", str(tmp_path / "out"), "--quiet"]
    counts = (
        f"{other} (400 rows) shares {shared} of the 400 ids of the study's cache "
        f"{caches['good']}"
    )
    if shared < 200:
        assert main(argv) == 2
        line = one_error_line(capsys, "study")
        assert counts in line and "below the floor of 50%" in line
        return
    with pytest.warns(PartialJoinWarning) as warned:
        assert main(argv) == 0
    assert [str(w.message) for w in warned] == [
        f"{counts} (75%): the study runs on those 300 rows only"
    ]
    found = json.loads((tmp_path / "out" / "fingerprints.json").read_text())
    assert found["rows"] == 300


def test_fingerprints_cut_huge_attributes_and_verify_checksums(tmp_path):
    from probe_lab import TrainConfig
    from probe_lab.study import StudyConfig, Supervisor, run_study

    path = write_synthetic_cache(tmp_path / "c.h5", n=400, d=8)
    with h5py.File(path, "r+") as f:
        f.attrs["task"] = "\x1b[31m" + "t" * 200_000
    config = StudyConfig(
        cache=str(path),
        layer=2,
        seeds=1,
        supervisors=(Supervisor(kind="probe", k=3),),
        students=(8,),
        train=TrainConfig(epochs=1, batch_size=32),
    )
    result = run_study(config, progress=False)
    result.save(tmp_path / "out")
    text = (tmp_path / "out" / "fingerprints.json").read_text()
    assert len(text) < 5_000 and "\x1b" not in text
    [cache] = result.fingerprints["caches"].values()
    assert cache["checksums"] == "verified"
    with h5py.File(path, "r+") as f:  # finite garbage in one feature row
        f["features/layer_02"][5] = 3.0
    with pytest.raises(StudyError, match=r"c.h5, layer 2: its feature values changed"):
        run_study(config, progress=False)


def test_one_seed_is_one_rule_no_interval_and_nothing_judged(caches, tmp_path):
    toml = tmp_path / "exp.toml"
    toml.write_text(
        EXPERIMENT + "[study]\nseeds = 1\nstudents = [8]\n[study.train]\nepochs = 3\n"
        "batch_size = 32\n" + EXP_PROBE + '[[study.supervisors]]\nkind = "random"\n'
    )
    out = tmp_path / "out"
    argv = ["run", str(toml), "--cache", str(caches["good"]), "--quiet"]
    assert main([*argv, "--cache-dir", str(tmp_path / "c"), "--out", str(out)]) == 0
    record = json.loads((out / "experiment.json").read_text())
    assert record["findings"]
    for finding in record["findings"]:
        assert finding["held"] is None and "1 seed: no interval" in finding["measured"]
    summary = pd.read_csv(out / "summary.csv")
    assert (summary.interval == "1 seed: no interval").all()
    assert summary.pgr_low.isna().all()
