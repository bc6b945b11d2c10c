"""``python -m activation_cache``: the ``extract``, ``info``, ``tasks`` and
``models`` commands of ``probe-lab``, without importing probe_lab (or jax).

Experiments build their caches with it in a subprocess::

    python -m activation_cache extract --model minilm --task cities --out c.h5
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run ``extract`` or ``info``; returns the exit code (130
    after a Ctrl-C, with one line and no traceback)."""
    try:
        return _main(argv)
    except KeyboardInterrupt:  # while starting (the commands handle their own)
        print(
            "\npython -m activation_cache: interrupted while starting; nothing was "
            "written",
            file=sys.stderr,
        )
        return 130


def _main(argv: Sequence[str] | None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m activation_cache",
        description="Cache a model's residual stream (extract) or describe a "
        "cache (info).",
    )
    from activation_cache import cli

    cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
