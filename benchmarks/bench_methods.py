"""Benchmark: method plug-ins cost what the built-ins cost.

    python benchmarks/bench_methods.py            # 20,000 x 384 cache, 200 epochs
    python benchmarks/bench_methods.py --quick    # small smoke run (seconds)

Three ratios, each measured in this run against a baseline of the same run:

1. Compilations of a study's student stage with every built-in loss method
   (``xent``, ``confidence``, ``bootstrap_soft``, ``bootstrap_hard``, ``gce``)
   against the same study with ``xent`` alone: a method is data of the compiled
   trainer, so the count follows the chunk shapes, not the methods (target: equal).
2. The student stage of plug-in losses defined in THIS file against the same stage
   with ``xent``, same conditions, same shapes, all compiled already (target:
   <= 1.25x): label smoothing (``kind="targets"``: it returns targets, the trainer
   keeps its closed-form gradient), a squared error (``kind="loss"``: a per-example
   loss the trainer differentiates with a VJP, with little arithmetic of its own)
   and the focal loss (``kind="loss"`` with five transcendental functions per
   example and probe, the most arithmetic of the three). Measured on 2 CPU cores
   in two runs: 0.96-1.11, 0.86-1.09 and 1.21-1.60 (before the loss ran block by
   block over the M_k feature blocks, the VJP on the blocks' joined logits cost
   1.43 and 2.65).
3. ``knn_clean`` on the whole 20,000 x 384 cache against one student stage of
   1,000 probes on the same cache (target: < 1x).

Like the ``probe-lab`` command, studies run with one JAX CPU device per core.
Ratios are printed; nothing is asserted.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from conftest import write_synthetic_cache

from probe_lab import Method, TrainConfig, use_cpu_cores
from probe_lab.label_methods import get_label_method
from probe_lab.study import StudyConfig, Supervisor, run_study

BUILTIN = ("xent", "confidence", "bootstrap_soft", "bootstrap_hard", "gce")


def focal(logits, targets, mask, progress, params):
    """A plug-in: the binary focal loss (Lin et al. 2017) on soft targets,
    ``-(1 - p_t)^gamma log p_t``, with ``gamma`` per probe (so the powers are
    exp / log pairs: five transcendental functions per example and probe)."""
    del mask, progress
    log_p = -jax.nn.softplus(-logits)  # log sigmoid(z)
    log_q = log_p - logits  # log (1 - sigmoid(z))
    gamma = params["gamma"]
    pos = -jax.numpy.exp(gamma * log_q) * log_p
    neg = -jax.numpy.exp(gamma * log_p) * log_q
    return targets * pos + (1.0 - targets) * neg


focal.params = {"gamma": 2.0}


def squared(logits, targets, mask, progress, params):
    """A plug-in per-example loss with little arithmetic of its own: the squared
    error of the probability, ``scale * (sigmoid(z) - t)^2`` (what the VJP
    machinery itself costs)."""
    del mask, progress
    return params["scale"] * (jax.nn.sigmoid(logits) - targets) ** 2


squared.params = {"scale": 1.0}


def smoothed(logits, targets, mask, progress, params):
    """A plug-in of the other kind: cross-entropy against label-smoothed targets
    (Szegedy et al. 2016), ``(1 - eps) * t + eps / 2``."""
    del logits, mask, progress
    return (1.0 - params["eps"]) * targets + 0.5 * params["eps"]


smoothed.params = {"eps": 0.1}
smoothed.kind = "targets"


def student_stage(config: StudyConfig) -> dict:
    result = run_study(config, progress=False)
    return next(s for s in result.stages if s["stage"] == "students")


def timed(configs: dict[str, StudyConfig], rounds: int) -> tuple[dict, dict]:
    """Each config's student stage cold (compiling), then its fastest warm
    (compiled) run of ``rounds``, the configs interleaved round by round so that a
    busy spell of the machine does not land on one of them only."""
    cold = {name: student_stage(config) for name, config in configs.items()}
    warm: dict[str, dict] = {}
    for _ in range(rounds):
        for name, config in configs.items():
            stage = student_stage(config)
            if name not in warm or stage["seconds"] < warm[name]["seconds"]:
                warm[name] = stage
    return cold, warm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small smoke size")
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--d", type=int, default=384)
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--devices", type=int, default=None)
    args = parser.parse_args()
    n_devices = use_cpu_cores(args.devices)
    seeds = 10
    if args.quick:
        args.rows, args.d, args.epochs, seeds = 3000, 64, 5, 2
    with tempfile.TemporaryDirectory() as tmp:
        cache = write_synthetic_cache(
            Path(tmp) / "bench.h5", n=args.rows, d=args.d, dtype="float16"
        )
        base = dict(
            cache=str(cache),
            layer=2,
            supervisors=(
                Supervisor(kind="probe", k=8),
                Supervisor(kind="random"),
                Supervisor(kind="strong_unconfident"),
                Supervisor(kind="mixture", k=8, level=0.5),
            ),
            students=(None, 32),
            seeds=seeds,
            dynamics=False,
            train=TrainConfig(epochs=args.epochs),
        )
        n_cond = len(BUILTIN)
        xent_only = StudyConfig(
            **base,
            losses=(),
            methods=tuple(Method(name="xent", label=f"xent{i}") for i in range(n_cond)),
        )
        builtins = StudyConfig(**base, losses=BUILTIN)
        plugins = {
            name: StudyConfig(
                **base,
                losses=(),
                methods=tuple(
                    Method(name=f"__main__:{name}", label=f"{name}{i}")
                    for i in range(n_cond)
                ),
            )
            for name in ("smoothed", "squared", "focal")
        }
        print(
            f"{args.rows} x {args.d} cache, {args.epochs} epochs, {n_devices} JAX "
            f"device(s); student stage: 4 supervisors x 2 k x {n_cond} conditions x "
            f"{seeds} seeds = {4 * 2 * n_cond * seeds} probes\n"
        )
        labels = {
            "xent": "xent only (5 conditions)",
            "builtins": "5 built-in loss methods",
            "smoothed": "plug-in smoothing (5 conditions)",
            "squared": "plug-in squared error (5 cond.)",
            "focal": "plug-in focal loss (5 conditions)",
        }
        cold, warm = timed({"xent": xent_only, "builtins": builtins, **plugins}, 2)
        print(
            f"{'student stage':<34}{'trainers':>10}{'compiles':>10}{'cold s':>10}"
            f"{'warm s':>10}"
        )
        for name, label in labels.items():
            print(
                f"{label:<34}{cold[name]['trainers']:>10}"
                f"{cold[name]['compilations']:>10}{cold[name]['seconds']:>10.2f}"
                f"{warm[name]['seconds']:>10.2f}"
            )
        print(
            "\n(trainers: compiled trainer programs, one per chunk shape; compiles: "
            "every XLA compilation of the stage, including each new method's "
            "one-minibatch check; warm: the faster of 2 compiled runs, interleaved)"
        )
        print(
            f"1. trainer compilations, all built-ins / xent only: "
            f"{cold['builtins']['trainers']} / {cold['xent']['trainers']} (target: "
            f"equal); warm runs compile {warm['builtins']['compilations']} / "
            f"{warm['xent']['compilations']}"
        )
        ratio = {n: warm[n]["seconds"] / warm["xent"]["seconds"] for n in plugins}
        print(
            f"2. plug-in / xent student stage (warm): label smoothing "
            f"{ratio['smoothed']:.2f}, squared error {ratio['squared']:.2f}, focal "
            f"{ratio['focal']:.2f} (target <= 1.25)"
        )
        knn_ratio(args, base, cache)


def knn_ratio(args, base: dict, cache: Path) -> None:
    """knn_clean on every row against a 1,000-probe student stage."""
    from activation_cache import open_cache

    opened = open_cache(cache)
    x = np.asarray(opened.features(2), np.float32)
    truth = np.asarray(opened.labels, np.float32)
    weak = np.where(np.random.default_rng(0).random(x.shape[0]) < 0.2, 1 - truth, truth)
    rows = np.ones((1, x.shape[0]), bool)
    method = get_label_method("knn_clean")
    params = {"q": np.array([0.1]), "k": np.array([10])}
    start = time.perf_counter()
    method(x, weak[None], rows, jax.random.key(0), params)
    cold = time.perf_counter() - start
    start = time.perf_counter()
    method(x, weak[None], rows, jax.random.key(0), params)
    knn = time.perf_counter() - start
    seeds = 1000 // (4 * 2 * 5) if not args.quick else base["seeds"]
    config = StudyConfig(**{**base, "seeds": seeds}, losses=BUILTIN)
    stage = timed({"builtins": config}, 1)[1]["builtins"]
    print(
        f"3. knn_clean on {x.shape[0]} x {x.shape[1]}: {knn:.2f} s ({cold:.2f} s with "
        f"its compilation); student stage of "
        f"{stage['probes']} probes: {stage['seconds']:.2f} s; ratio "
        f"{knn / stage['seconds']:.3f} (target < 1)"
    )


if __name__ == "__main__":
    main()
