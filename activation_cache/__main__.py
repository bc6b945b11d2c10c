"""``python -m activation_cache``: the ``extract``, ``info``, ``tasks`` and
``models`` commands of ``probe-lab``, without importing probe_lab (or jax).

Experiments build their caches with it in a subprocess::

    python -m activation_cache extract --model minilm --task cities --out c.h5
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from activation_cache import cli


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run ``extract`` or ``info``; returns the exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m activation_cache",
        description="Cache a model's residual stream (extract) or describe a "
        "cache (info).",
    )
    cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
