"""The bad-input sweep (issue 13): what a hostile but realistic user gives the
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

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
from conftest import write_synthetic_cache

import probe_lab.experiments
import probe_lab.experiments.base
import probe_lab.study
from activation_cache import open_cache, store
from probe_lab import plots
from probe_lab.cli import main
from probe_lab.experiments import (
    error_structures,
    linear_probe_w2s,
    methods,
    sample_size,
    simulation_difficulty,
    training_dynamics,
    trivial_imitation,
)
from probe_lab.experiments.saved import MARKER
from probe_lab.leaderboard import rank_methods
from probe_lab.study_data import fingerprint_cache

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
    with h5py.File(copy, "r+") as f:  # one value of the layer read changes
        f["features/layer_02"][0, 0] += 1
    assert fingerprint_cache(open_cache(copy), [2])["sha256"] != same["sha256"]
    assert fingerprint_cache(open_cache(copy), [1])["sha256"] != same["sha256"]


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

    monkeypatch.setattr(probe_lab.study, "train_ground_truth", interrupt)
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
    with h5py.File(cache, "r+") as f:  # same path, other content
        f["features/layer_02"][0, 0] += 1
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
    }


@pytest.mark.parametrize("kind", sorted(_kind_checks()))
def test_claims_with_undefined_pgr_are_not_judged(kind):
    findings = _kind_checks()[kind]()
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
        "structures": plots.plot_error_structures(summary),
        "imitation": plots.plot_imitation(_summary(["weak", "weak as feature"])),
        "sizes": plots.plot_sample_size(
            pd.concat([summary.assign(labelled=n) for n in (50, 100)])
        ),
        "leaderboard": plots.plot_leaderboard(rank_methods(table)),
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
