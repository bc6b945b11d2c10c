"""probe-lab: a fast linear-probe sandbox for weak-to-strong generalization."""

from probe_lab import metrics
from probe_lab.config import TrainConfig
from probe_lab.devices import use_cpu_cores
from probe_lab.probes import Probes
from probe_lab.study import StudyConfig, StudyResult, Supervisor, run_study
from probe_lab.train import train_probes

__all__ = [
    "Probes",
    "StudyConfig",
    "StudyResult",
    "Supervisor",
    "TrainConfig",
    "metrics",
    "run_study",
    "train_probes",
    "use_cpu_cores",
]
