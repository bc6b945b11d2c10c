"""The built-in experiment kinds, registered, and loading an experiment checked
against its kind.

A kind is an :class:`~probe_lab.experiments.config.ExperimentKind` in
:data:`~probe_lab.experiments.config.KINDS`. Each packaged experiment
(``configs/<name>.toml``) has a module of this package with the same name that
registers its kind when imported (:func:`~probe_lab.experiments.config.register_kind`);
this module imports them, so adding an experiment is that module and its TOML file.
A kind defined elsewhere is registered by its own module, or named in a TOML file by
import path (``kind = "package.module:KIND"``).
"""

from __future__ import annotations

import importlib
from importlib.resources.abc import Traversable
from pathlib import Path

from probe_lab.experiments.config import (
    ExperimentConfig,
    ExperimentError,
    experiment_configs,
    read_experiment,
)

__all__ = ["check", "load_experiment"]

for _name in experiment_configs():
    importlib.import_module(f"{__package__}.{_name}")


def check(config: ExperimentConfig) -> None:
    """Check that every study ``config`` runs is a valid study.

    Raises:
        ExperimentError: naming the file and what to change.
    """
    generate = config.spec.supervisor_sets
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
