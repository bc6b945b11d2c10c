"""The ``probe-lab`` command: a thin layer over the Python API.

probe-lab extract --model minilm --task cities --out cities.h5   # cache features
probe-lab info cities.h5                                         # describe a cache
probe-lab study config.toml --out results/                       # run a study
probe-lab run experiments/error_structures.toml [--smoke]         # a paper figure
probe-lab run error_structures [--smoke]                          # the same, by name
probe-lab demo [--smoke]                  # the demo: about a minute on 2 CPU cores
"""

from __future__ import annotations

import _thread
import argparse
import contextlib
import os
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

__all__ = ["check_out_folder", "interrupted", "main", "redeliver_interrupts"]


def check_out_folder(path: str | Path | None, flag: str = "--out") -> None:
    """Refuse an output folder that cannot be made or written, before any work.

    Raises:
        ValueError: ``path`` is a file, lies under a file, or in a folder this
            user cannot write; the message names ``flag``.
    """
    if path is None:
        return
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(
            f"{flag} {path} is a file, not a folder: give a folder for the results "
            "(it is made if missing)"
        )
    parent = next(p for p in (path, *path.parents) if p.exists() or p == Path("."))
    if not parent.is_dir():
        raise ValueError(f"{flag} {path} cannot be made: {parent} is a file")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"{flag} {path} cannot be made: {parent} is not writable")


def _study(args: argparse.Namespace) -> int:
    import pandas as pd

    from probe_lab.experiments.run import lock_out
    from probe_lab.study import StudyConfig, run_study

    check_out_folder(args.out)
    try:
        config = StudyConfig.from_toml(args.config)
    except ValueError as err:
        if str(args.config) in str(err):
            raise
        raise ValueError(f"{args.config}: {err}") from None
    if (Path(args.out) / "experiment.json").is_file():
        raise ValueError(
            f"--out {args.out} holds the results of an experiment (probe-lab run), "
            "whose summary.csv the study's would replace; give another --out"
        )
    made = not Path(args.out).exists()
    try:
        with lock_out(Path(args.out)):  # two studies never write one folder at once
            result = run_study(config, progress=not args.quiet)
            out = result.save(args.out)
            from probe_lab import plots  # the study returns data; the figure is here
            from probe_lab.study.report import method_pgr, write_summary

            plots.save(
                plots.plot_misfit_theorem(result.table), out / "misfit_theorem.png"
            )
            write_summary(result, out)
            figure = plots.plot_method_pgr(
                method_pgr(result), seeds=result.config.seeds
            )
            plots.save(figure, out / "methods.png")
    except BaseException:
        if made and Path(args.out).is_dir() and not any(Path(args.out).iterdir()):
            Path(args.out).rmdir()  # a failed study leaves no folder behind
        raise
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(result.summary().round(3).to_string(index=False))
    for line in result.cell_warnings():
        print(line)
    fit = result.misfit_fit()
    print(
        f"\nmisfit theorem (squared loss, projection student, test rows) over "
        f"{fit['n']:.0f} supervisor x k: gain >= misfit in {fit['share_above']:.0%}, "
        f"mean slack {fit['mean_slack_test']:+.4f} (in-sample "
        f"{fit['mean_slack_fit']:+.4f}) (misfit_theorem.png)"
    )
    if len(result.failed):
        print(
            f"{len(result.failed)} probe(s) trained to NaN or inf (named above) "
            "are left out of the summary (its 'failed' column counts them)"
        )
    print(
        f"wrote {out}/ (table, dynamics, summary.csv, summary.md, methods.png, "
        "config, fingerprints)"
    )
    return 0


def _run(args: argparse.Namespace) -> int:
    from probe_lab.experiments import findings_table, load_experiment, run_experiment
    from probe_lab.experiments.run import default_out, with_methods

    config = load_experiment(args.config, preset="smoke" if args.smoke else "full")
    config = with_methods(config, args.method)
    args.out = args.out or str(default_out(config, args.method))
    check_out_folder(args.out)
    check_out_folder(args.cache_dir, "--cache-dir")
    result = run_experiment(
        config,
        out=args.out,
        cache=args.cache,
        cache_dir=args.cache_dir,
        progress=not args.quiet,
        fresh=args.fresh,
    )
    print(findings_table([result]))
    return 0


def _demo(args: argparse.Namespace) -> int:
    from probe_lab.experiments import run_demo

    args.out = args.out or ("runs/demo-smoke" if args.smoke else "runs/demo")
    check_out_folder(args.out)
    check_out_folder(args.cache_dir, "--cache-dir")
    run_demo(smoke=args.smoke, out=args.out, cache_dir=args.cache_dir, fresh=args.fresh)
    return 0


def _saved_studies(folder: Path) -> list[Path]:
    """Studies saved (marker written) under ``folder``."""
    from probe_lab.experiments.saved import MARKER

    return sorted(p.parent for p in folder.glob(f"**/studies/*/{MARKER}"))


def interrupted(args: argparse.Namespace) -> str:
    """The one line ``probe-lab <command>`` prints when Ctrl-C stops it: what was
    saved, and that the same command resumes."""
    if args.command == "study":
        return (
            f"interrupted; nothing was saved (a study writes {args.out}/ when it "
            "finishes): the same command runs it again from the start"
        )
    if args.command in ("run", "demo") and args.out:
        saved = _saved_studies(Path(args.out))
        building = f" and a cache being built in {args.cache_dir}/ keeps its rows"
        if getattr(args, "cache", None):  # run --cache: nothing is built
            building = ""
        return (
            f"interrupted; {len(saved)} finished "
            f"{'study is' if len(saved) == 1 else 'studies are'} saved in "
            f"{args.out}/{building}: the same command reuses them and runs the rest"
        )
    return "interrupted before anything was written: the same command starts again"


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
    run.add_argument(
        "--method",
        action="append",
        default=[],
        metavar="NAME",
        help="add your own student method to the studies (a registered name or "
        "'module:function'; repeatable), e.g. run methods --method mylosses:focal "
        "ranks it on the leaderboard next to the built-ins",
    )
    run.add_argument(
        "--fresh",
        action="store_true",
        help="rerun every study, even those an earlier run saved in --out",
    )
    run.set_defaults(func=_run)
    demo = sub.add_parser(
        "demo",
        help="simulation difficulty and error structures on MiniLM (about a minute "
        "on 2 CPU cores, the cache included)",
    )
    demo.add_argument("--smoke", action="store_true", help="tiny size, seconds")
    demo.add_argument("--out", help="output folder (default runs/demo[-smoke])")
    demo.add_argument("--cache-dir", default="runs/caches", help="built caches")
    demo.add_argument(
        "--fresh",
        action="store_true",
        help="rerun every study, even those an earlier demo saved in --out",
    )
    demo.set_defaults(func=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen subcommand; returns the exit code.

    A Ctrl-C at any point is one line on stderr and exit code 130, never a
    traceback: while imports run, or inside a callback Python cannot raise from
    (see `redeliver_interrupts`).
    """
    try:
        with redeliver_interrupts():
            return _main(argv)
    except KeyboardInterrupt:  # before the subcommand ran: nothing was written
        print(
            "\nprobe-lab: interrupted while starting; nothing was written",
            file=sys.stderr,
        )
        return 130


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command in ("study", "run", "demo"):
        from probe_lab.devices import use_compile_cache, use_cpu_cores

        use_cpu_cores()
        use_compile_cache()
    try:
        return int(args.func(args))
    except (ValueError, RuntimeError, OSError, KeyError) as err:
        print(f"probe-lab {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\nprobe-lab {args.command}: {interrupted(args)}", file=sys.stderr)
        return 130


@contextlib.contextmanager
def redeliver_interrupts() -> Iterator[None]:
    """Raise again, in the main thread, a Ctrl-C that Python had to drop.

    A KeyboardInterrupt raised while a garbage-collection callback runs (JAX
    registers one) cannot propagate: Python reports it as "unraisable" and goes
    on, so the command would run to the end and exit 0. For the block, such a
    report signals SIGINT again 50 ms later, from a timer thread: by then the
    hook has returned, so it lands in the main thread's own code (or in another
    callback, which repeats this).
    """
    previous = sys.unraisablehook

    def hook(unraisable: Any) -> None:
        if isinstance(unraisable.exc_value, KeyboardInterrupt):
            timer = threading.Timer(0.05, _thread.interrupt_main)
            timer.daemon = True
            timer.start()
        else:
            previous(unraisable)

    sys.unraisablehook = hook
    try:
        yield
    finally:
        sys.unraisablehook = previous


if __name__ == "__main__":
    sys.exit(main())
