"""Paper-figure experiments (Burns et al. 2023, Fig. 23-27), one TOML file each.

:func:`run_experiment` builds or reuses the cache, runs the study (or studies) of
the experiment's kind, writes every study's outputs, the plot and ``summary.md``
(measured numbers next to the paper's claim, and whether the claim held), and
returns an :class:`ExperimentResult`. :func:`run_demo` runs two of them.

The package's modules, in import order (each imports only those before it):

* ``config``: the experiment file (:class:`ExperimentConfig`, :class:`CacheSpec`),
  the packaged files (``configs/<name>.toml``) and reading one with its presets;
* ``caches``: reusing a cache by its settings, or building it with
  ``python -m activation_cache extract`` in a subprocess (this package never
  imports torch or transformers);
* ``saved``: each study saved under its run's output as soon as it finishes, in
  a folder named by a key (a hash of the resolved study config and the cache
  fingerprints), and read back by a rerun with the same key (resuming an
  interrupted run);
* ``base``: what kinds share: the run :class:`Context`, :class:`Finding`, the
  :class:`ExperimentResult` record and table helpers;
* one module per kind (``linear_probe_w2s``, ``simulation_difficulty``, ...,
  named as its TOML file): its settings, studies, claim checks, generated
  supervisors and figure, registered in :data:`KINDS`;
* ``kinds``: imports the built-in kinds; :func:`load_experiment`;
* ``report``: ``summary.md``, ``experiment.json`` and the terminal table;
* ``run``: :func:`run_experiment` and :func:`run_demo`.

A new experiment is one new kind module (its settings dataclass, ``run`` and
figure, registered with :func:`register_kind`) and a TOML file in ``configs/`` of
the same name (linked from the repository's ``experiments/`` folder).
"""

from probe_lab.experiments.base import ExperimentResult, Finding
from probe_lab.experiments.caches import build_cache
from probe_lab.experiments.config import (
    KINDS,
    CacheSpec,
    ExperimentConfig,
    ExperimentError,
    ExperimentKind,
    NoSettings,
    experiment_configs,
    register_kind,
)
from probe_lab.experiments.kinds import load_experiment
from probe_lab.experiments.report import findings_table
from probe_lab.experiments.run import run_demo, run_experiment

__all__ = [
    "KINDS",
    "CacheSpec",
    "ExperimentConfig",
    "ExperimentError",
    "ExperimentKind",
    "ExperimentResult",
    "Finding",
    "NoSettings",
    "build_cache",
    "experiment_configs",
    "findings_table",
    "load_experiment",
    "register_kind",
    "run_demo",
    "run_experiment",
]
