"""The ``probe-lab`` command: a thin layer over the Python API.

probe-lab extract --model minilm --task cities --out cities.h5   # cache features
probe-lab info cities.h5                                         # describe a cache
probe-lab study config.toml --out results/                       # run a study
probe-lab run experiments/error_structures.toml [--smoke]         # a paper figure
probe-lab run error_structures [--smoke]                          # the same, by name
probe-lab demo [--smoke]                                          # the 5-minute demo
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

__all__ = ["main"]


def _study(args: argparse.Namespace) -> int:
    import pandas as pd

    from probe_lab.study import StudyConfig, run_study

    config = StudyConfig.from_toml(args.config)
    result = run_study(config, progress=not args.quiet)
    out = result.save(args.out)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(result.summary().round(3).to_string(index=False))
    fit = result.misfit_fit()
    print(
        f"\ngain vs misfit over {fit['n']:.0f} conditions: correlation "
        f"{fit['correlation']:.2f}, slope {fit['slope']:.2f}, gain >= misfit in "
        f"{fit['share_above']:.0%} (gain_vs_misfit.png)"
    )
    print(f"wrote {out}/ (table, dynamics, summary, config, fingerprints)")
    return 0


def _run(args: argparse.Namespace) -> int:
    from probe_lab.experiments import run_experiment

    run_experiment(
        args.config,
        smoke=args.smoke,
        out=args.out,
        cache=args.cache,
        cache_dir=args.cache_dir,
        progress=not args.quiet,
    )
    return 0


def _demo(args: argparse.Namespace) -> int:
    from probe_lab.experiments import run_demo

    run_demo(smoke=args.smoke, out=args.out, cache_dir=args.cache_dir)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from activation_cache import cli as cache_cli

    parser = argparse.ArgumentParser(
        prog="probe-lab",
        description="Fast linear probes for weak-to-strong generalization research.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    cache_cli.register(sub)
    study = sub.add_parser("study", help="run a weak-to-strong study from TOML")
    study.add_argument("config", help="study TOML file (see experiments/)")
    study.add_argument("--out", required=True, help="folder for the results")
    study.add_argument("--quiet", action="store_true", help="no progress lines")
    study.set_defaults(func=_study)
    run = sub.add_parser("run", help="run a paper-figure experiment (experiments/)")
    run.add_argument(
        "config",
        help="experiment TOML (e.g. experiments/<name>.toml) or a packaged "
        "experiment's name (e.g. error_structures)",
    )
    run.add_argument("--smoke", action="store_true", help="tiny size, for CI")
    run.add_argument("--out", help="output folder (default runs/<name>[-smoke])")
    run.add_argument("--cache", help="use this cache instead of building [cache]")
    run.add_argument("--cache-dir", default="runs/caches", help="built caches")
    run.add_argument("--quiet", action="store_true", help="no progress lines")
    run.set_defaults(func=_run)
    demo = sub.add_parser(
        "demo", help="simulation difficulty and error structures on MiniLM (~5 min)"
    )
    demo.add_argument("--smoke", action="store_true", help="tiny size, seconds")
    demo.add_argument("--out", help="output folder (default runs/demo[-smoke])")
    demo.add_argument("--cache-dir", default="runs/caches", help="built caches")
    demo.set_defaults(func=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen subcommand; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command in ("study", "run", "demo"):
        from probe_lab.devices import use_cpu_cores

        use_cpu_cores()
    try:
        return int(args.func(args))
    except (ValueError, RuntimeError, OSError, KeyError) as err:
        print(f"probe-lab {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
