"""Cost of recording the students' test accuracy every epoch with dynamics = false.

Runs one planted smoke study three ways, interleaved: without any per-epoch eval
set (the behaviour before ``student_acc_final`` / ``student_acc_best_test``), with
the test set alone (now, ``dynamics = false``), and with the four sets
(``dynamics = true``), and prints the students stage's seconds after compilation.
Usage: ``python benchmarks/bench_dynamics_cost.py`` (tests/ must be importable).
"""

from __future__ import annotations

import dataclasses
import pathlib
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests"))

from conftest import write_synthetic_cache

import probe_lab.study.pipeline as pipeline
from probe_lab import TrainConfig
from probe_lab.study import StudyConfig, Supervisor, run_study, scoring


def main(reps: int = 4) -> None:
    folder = pathlib.Path(tempfile.mkdtemp())
    cache = str(write_synthetic_cache(folder / "p.h5", n=12000, d=64))
    config = StudyConfig(
        cache=cache,
        layer=2,
        seeds=3,
        dynamics=False,
        train=TrainConfig(epochs=40, batch_size=64),
        supervisors=(
            Supervisor(kind="probe", k=3),
            Supervisor(kind="random"),
            Supervisor(kind="longest"),
        ),
        students=(8, None),
        losses=("xent", "confidence"),
    )
    real = scoring.training_eval_sets

    def none_without_dynamics(probes, data, *, dynamics=True):
        return real(probes, data) if dynamics else None

    times: dict[str, list[float]] = {"no record": [], "test set": [], "dynamics": []}
    for rep in range(reps):
        for name in times:
            pipeline.training_eval_sets = (
                none_without_dynamics if name == "no record" else real
            )
            run = dataclasses.replace(config, dynamics=name == "dynamics")
            result = run_study(run, progress=False)
            stage = next(s for s in result.stages if s["stage"] == "students")
            if rep:  # the first round compiles
                times[name].append(stage["seconds"])
    pipeline.training_eval_sets = real
    for name, values in times.items():
        print(f"{name}: students stage {[round(v, 2) for v in values]} s")


if __name__ == "__main__":
    main()
