"""probe-lab: a fast linear-probe sandbox for weak-to-strong generalization.

The public names below are imported on first use (PEP 562), so ``probe-lab
extract`` and ``probe-lab info``, which import ``probe_lab.cli``, never import
JAX: they start faster and a Ctrl-C during start-up stays one line.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # for type checkers and editors; at run time: __getattr__
    from probe_lab import metrics, theory
    from probe_lab.config import TrainConfig
    from probe_lab.devices import use_compile_cache, use_cpu_cores
    from probe_lab.label_methods import LabelMethod, register_label_method
    from probe_lab.leaderboard import Leaderboard, rank_methods
    from probe_lab.losses import LossMethod, register_loss
    from probe_lab.methods import Method
    from probe_lab.probes import Probes
    from probe_lab.study import StudyConfig, StudyResult, Supervisor, run_study
    from probe_lab.supervisors import SupervisorKind, WeakLabels, register_supervisor
    from probe_lab.train import train_probes

_HOMES = {
    "LabelMethod": "probe_lab.label_methods",
    "Leaderboard": "probe_lab.leaderboard",
    "LossMethod": "probe_lab.losses",
    "Method": "probe_lab.methods",
    "Probes": "probe_lab.probes",
    "StudyConfig": "probe_lab.study",
    "StudyResult": "probe_lab.study",
    "Supervisor": "probe_lab.study",
    "SupervisorKind": "probe_lab.supervisors",
    "TrainConfig": "probe_lab.config",
    "WeakLabels": "probe_lab.supervisors",
    "metrics": "probe_lab.metrics",
    "rank_methods": "probe_lab.leaderboard",
    "register_label_method": "probe_lab.label_methods",
    "register_loss": "probe_lab.losses",
    "register_supervisor": "probe_lab.supervisors",
    "run_study": "probe_lab.study",
    "theory": "probe_lab.theory",
    "train_probes": "probe_lab.train",
    "use_compile_cache": "probe_lab.devices",
    "use_cpu_cores": "probe_lab.devices",
}
"""Each public name -> the module defining it."""

__all__ = [
    "LabelMethod",
    "Leaderboard",
    "LossMethod",
    "Method",
    "Probes",
    "StudyConfig",
    "StudyResult",
    "Supervisor",
    "SupervisorKind",
    "TrainConfig",
    "WeakLabels",
    "metrics",
    "rank_methods",
    "register_label_method",
    "register_loss",
    "register_supervisor",
    "run_study",
    "theory",
    "train_probes",
    "use_compile_cache",
    "use_cpu_cores",
]


def __getattr__(name: str) -> Any:
    """Import a public name's module on first use (then it is a plain global)."""
    if name not in _HOMES:
        raise AttributeError(f"module 'probe_lab' has no attribute {name!r}")
    module = importlib.import_module(_HOMES[name])
    value = module if _HOMES[name] == f"probe_lab.{name}" else getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOMES})
