"""The registry of experiment kinds, and loading an experiment checked against its
kind.

Each name in :data:`~probe_lab.experiments.config.KINDS` is a module of this
package that defines:

* ``CLAIM``: the paper's finding, in words (the report prints it);
* ``run(ctx: Context) -> Analysis``: run the studies, check the claims, draw the
  figure;
* optionally ``supervisor_sets(config)``: the supervisors of each study, for a kind
  that builds its own instead of reading ``[[study.supervisors]]``.
"""

from __future__ import annotations

import importlib
from importlib.resources.abc import Traversable
from pathlib import Path
from types import ModuleType

from probe_lab.experiments.config import (
    KINDS,
    ExperimentConfig,
    ExperimentError,
    read_experiment,
)

__all__ = ["CLAIMS", "MODULES", "check", "load_experiment"]

MODULES: dict[str, ModuleType] = {
    kind: importlib.import_module(f"{__package__}.{kind}") for kind in KINDS
}
"""Each kind's module."""

CLAIMS: dict[str, str] = {kind: module.CLAIM for kind, module in MODULES.items()}
"""The paper's qualitative finding per kind (Burns et al. 2023, Fig. 23-27)."""


def check(config: ExperimentConfig) -> None:
    """Check that every study ``config`` runs is a valid study.

    Raises:
        ExperimentError: naming the file and what to change.
    """
    module = MODULES[config.kind]
    generate = getattr(module, "supervisor_sets", None)
    if generate is not None and config.study.get("supervisors"):
        raise ExperimentError(
            f"{config.source or 'experiment'}: {config.kind} builds its own "
            "supervisors; remove the [[study.supervisors]] tables"
        )
    for supervisors in generate(config) if generate else [None]:
        config.study_config("<cache>", supervisors)


def load_experiment(
    experiment: str | Path | Traversable, *, preset: str = "full"
) -> ExperimentConfig:
    """Read an experiment file, apply one preset's overrides and check it.

    Args:
        experiment: a TOML file (``experiments/<name>.toml``), or the name of a
            packaged experiment (``error_structures``).
        preset: ``full`` (as written), ``smoke`` or ``demo`` (merge that table).

    Returns:
        The validated :class:`ExperimentConfig`.
    """
    config = read_experiment(experiment, preset=preset)
    check(config)
    return config
