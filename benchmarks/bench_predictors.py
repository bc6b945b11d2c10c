"""Benchmark: a predictors run's students per second against the matmul floor.

    python benchmarks/bench_predictors.py runs/predictors   # a finished run's folder

Reads a ``probe-lab run predictors`` output folder (``runtime.csv``,
``experiment.json`` and each study's ``stages.json``) and prints, per study and
for the run: students trained, wall seconds, the predictors' seconds, the
training stages' seconds and the students' floor. The floor is
``benchmarks/bench_study.py``'s: ``rows x d x P x epochs x 4`` flops (mean
training rows per probe, the stage's feature width, its probes and configured
epochs) at the rate of a plain jitted float32 ``(x @ W, x.T @ G)`` of the stage's
shapes, measured here and now (so run it on the machine, and under the load, of
the run). Students per second are given for the whole run's wall time and for
the students' stages alone; ``compiles``: the trainer programs the students'
stage compiled (0: it reused an earlier study's, same shapes). Nothing is
asserted.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_study import product_rate

from probe_lab import use_cpu_cores
from probe_lab.study.stage import training_flops


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a predictors run's output folder")
    args = parser.parse_args()
    use_cpu_cores(None)
    runtime = pd.read_csv(args.run / "runtime.csv")
    wall = json.loads((args.run / "experiment.json").read_text())["seconds"]
    header = (
        f"{'study':<26}{'students':>9}{'wall s':>9}{'pred s':>8}{'train s':>9}"
        f"{'stud s':>8}{'GFLOP/s':>9}{'floor s':>10}{'ratio':>10}{'compiles':>10}"
    )
    print(header)
    print("-" * len(header))
    floors = []
    for r in runtime.itertuples():
        folder = args.run / "studies" / str(r.study)
        floor, compiles = 0.0, 0
        for s in json.loads((folder / "stages.json").read_text()):
            if s["stage"] != "students":
                continue
            rate = product_rate(s["rows"], s["d"], s["probes"])
            floor += training_flops(s) / rate / 1e9
            compiles += s["trainers"]
        floors.append(floor)
        print(
            f"{f'{r.task}, {r.rows} rows':<26}{r.students:>9}{r.wall_s:>9.1f}"
            f"{r.predictors_s:>8.1f}{r.training_s:>9.1f}{r.students_s:>8.1f}"
            f"{r.student_flops / floor / 1e9:>9.1f}{floor:>10.3g}"
            f"{r.students_s / floor:>10.3g}{compiles:>10}"
        )
    print("-" * len(header))
    students, floor = int(runtime.students.sum()), sum(floors)
    print(
        f"{'run':<26}{students:>9}{wall:>9.1f}{runtime.predictors_s.sum():>8.1f}"
        f"{runtime.training_s.sum():>9.1f}{runtime.students_s.sum():>8.1f}"
        f"{'':>9}{floor:>10.3g}{runtime.students_s.sum() / floor:>10.3g}"
    )
    print(
        f"\n{students} students: {students / wall:.1f} per second of the whole run "
        f"({wall:.0f} s: caches, layer choice, ground truth, weak labels, "
        f"predictors, students, analysis), {students / runtime.students_s.sum():.1f} "
        f"per second of the students' stages; the floor's rate: "
        f"{students / floor:.1f} per second ({floor:.3g} s)"
    )
    print(f"load average now: {Path('/proc/loadavg').read_text().strip()}")


if __name__ == "__main__":
    main()
