"""probe-lab: a fast linear-probe sandbox for weak-to-strong generalization."""

from probe_lab import metrics, theory
from probe_lab.config import TrainConfig
from probe_lab.devices import use_cpu_cores
from probe_lab.label_methods import LabelMethod, register_label_method
from probe_lab.leaderboard import Leaderboard, rank_methods
from probe_lab.losses import LossMethod, register_loss
from probe_lab.methods import Method
from probe_lab.probes import Probes
from probe_lab.study import StudyConfig, StudyResult, Supervisor, run_study
from probe_lab.supervisors import SupervisorKind, WeakLabels, register_supervisor
from probe_lab.train import train_probes

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
    "use_cpu_cores",
]
