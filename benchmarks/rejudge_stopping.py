"""Re-judge a finished experiment's findings under another early-stopping rule.

Every study table records the student's test accuracy under three rules
(``probe_lab.leaderboard.STOPPING``): at the epoch of best validation agreement with
the weak labels (``student_acc``, the paper's rule and the one every finding uses),
at the last epoch (``student_acc_final``) and at the best epoch on test
(``student_acc_best_test``, an upper bound no real run can use). This script copies a
finished run's saved studies into a new folder, reads them back with ``student_acc``
replaced by another rule's column (``gain`` and ``pgr`` recomputed from it), and runs
the experiment's own checks again on them: no student is trained again. Claims about
agreement with the weak labels (``training_dynamics``, the agreement half of
``simulation_difficulty`` and ``trivial_imitation``) read agreement at the paper's
stopping epoch and so come out the same; the accuracy, gain and PGR claims are
re-judged.

Usage::

    python benchmarks/rejudge_stopping.py RUN_FOLDER EXPERIMENT_TOML \\
        --cache-dir runs/caches --out runs/rejudge [--rule final --rule best_test]

It prints one line per finding and rule (held or not) and writes
``<out>/<rule>/<name>/`` (the experiment's usual outputs) and
``<out>/<name>.json`` (the findings under every rule, the paper's rule first).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
from pathlib import Path

import probe_lab.experiments.base as base
from probe_lab import metrics
from probe_lab.experiments import run_experiment
from probe_lab.leaderboard import STOPPING
from probe_lab.study import StudyResult


def under_rule(result: StudyResult, column: str) -> StudyResult:
    """``result`` with the student's test accuracy read from ``column``."""
    table = result.table.copy()
    table["student_acc"] = table[column]
    table["gain"] = table.student_acc - table.weak_acc
    table["pgr"] = metrics.pgr(
        table.weak_acc, table.student_acc, table.ceiling_acc, warn=False
    )
    return dataclasses.replace(result, table=table)


def rejudge(run: Path, experiment: str, cache_dir: str, out: Path, rule: str):
    """The experiment's findings on ``run``'s saved studies under ``rule``."""
    column = STOPPING[rule]
    target = out / rule / run.name
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    shutil.copytree(run / "studies", target / "studies")
    shutil.copy(run / "experiment.json", target / "experiment.json")
    real = base.load_saved
    reused = []

    def load_swapped(folder, key):
        found = real(folder, key)
        if found is None:
            return None
        reused.append(folder)
        return under_rule(found, column)

    base.load_saved = load_swapped
    try:
        result = run_experiment(
            experiment, out=target, cache_dir=cache_dir, progress=False
        )
    finally:
        base.load_saved = real
    if not reused:
        raise SystemExit(f"{run}: no saved study was read back; nothing re-judged")
    return result.findings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a finished run's --out folder")
    parser.add_argument("experiment", help="its experiment TOML (or name)")
    parser.add_argument("--cache-dir", default="runs/caches")
    parser.add_argument("--out", type=Path, default=Path("runs/rejudge"))
    parser.add_argument(
        "--rule",
        action="append",
        choices=[r for r in STOPPING if r != "weak_agreement"],
    )
    args = parser.parse_args()
    rules = args.rule or ["final", "best_test"]
    record = json.loads((args.run / "experiment.json").read_text())
    paper = record.get("findings") or record.get("checks") or []
    found = {"weak_agreement": paper}
    for rule in rules:
        findings = rejudge(args.run, args.experiment, args.cache_dir, args.out, rule)
        found[rule] = [dataclasses.asdict(f) for f in findings]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.run.name}.json").write_text(json.dumps(found, indent=2))
    base_held = [f.get("held") for f in paper]
    for rule in rules:
        for i, f in enumerate(found[rule]):
            before = base_held[i] if i < len(base_held) else "?"
            moved = "" if before == f["held"] else "   <-- CHANGED"
            print(f"[{rule}] {before} -> {f['held']}: {f['claim']}{moved}")
            print(f"    {f['measured']}")


if __name__ == "__main__":
    main()
