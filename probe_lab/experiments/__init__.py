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
* one module per kind (``linear_probe_w2s``, ``simulation_difficulty``,
  ``error_structures``, ``training_dynamics``, ``trivial_imitation``): its studies,
  claim checks, generated supervisors and figure;
* ``kinds``: the registry of kinds and :func:`load_experiment`;
* ``report``: ``summary.md``, ``experiment.json`` and the terminal table;
* ``run``: :func:`run_experiment` and :func:`run_demo`.

A new experiment is a new kind module (``CLAIM`` and ``run``; see
:mod:`probe_lab.experiments.kinds`), its name added to :data:`KINDS` (any settings
of its own added to :class:`ExperimentConfig`), and a TOML file in ``configs/``
(linked from the repository's ``experiments/`` folder).
"""

from probe_lab.experiments.base import ExperimentResult, Finding
from probe_lab.experiments.caches import build_cache
from probe_lab.experiments.config import (
    KINDS,
    CacheSpec,
    ExperimentConfig,
    ExperimentError,
    experiment_configs,
)
from probe_lab.experiments.kinds import CLAIMS, load_experiment
from probe_lab.experiments.report import findings_table
from probe_lab.experiments.run import run_demo, run_experiment

__all__ = [
    "CLAIMS",
    "KINDS",
    "CacheSpec",
    "ExperimentConfig",
    "ExperimentError",
    "ExperimentResult",
    "Finding",
    "build_cache",
    "experiment_configs",
    "findings_table",
    "load_experiment",
    "run_demo",
    "run_experiment",
]
