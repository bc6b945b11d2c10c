"""Weak-to-strong studies on cached features, after Burns et al. (2023), App. E.

The package, one concern per module (docs/architecture.md):

* :mod:`~probe_lab.study.config`: :class:`StudyConfig`, :class:`StudyError`, TOML
  loading and path resolution;
* :mod:`~probe_lab.study.data`: the caches joined, the splits, the feature sources;
* :mod:`~probe_lab.study.stage`: :class:`StageProbe` and :func:`train_stage` (one
  compiled call per stage);
* :mod:`~probe_lab.study.scoring`: the evaluation sets, curves and table rows;
* :mod:`~probe_lab.study.pipeline`: the four stages and :func:`run_study`;
* :mod:`~probe_lab.study.result`: :class:`StudyResult` (summary, save, load);
* :mod:`~probe_lab.study.report`: ``summary.md`` and the method-comparison figure
  that ``probe-lab study`` writes.
"""

from probe_lab.methods import Method
from probe_lab.study.config import StudyConfig, StudyError
from probe_lab.study.pipeline import (
    make_labels,
    run_study,
    train_bootstrap,
    train_ground_truth,
    train_students,
    weak_probes,
)
from probe_lab.study.result import StudyResult
from probe_lab.supervisors import Supervisor

__all__ = [
    "Method",
    "StudyConfig",
    "StudyError",
    "StudyResult",
    "Supervisor",
    "make_labels",
    "run_study",
    "train_bootstrap",
    "train_ground_truth",
    "train_students",
    "weak_probes",
]
