"""Cache a model's residual stream for a labelled task in an HDF5 file, and read it.

Reading (`open_cache`, `Cache`, `join`) needs only h5py and numpy; extraction imports
torch and transformers when it runs. This package never imports jax.
"""

from activation_cache.extract import ExtractConfig, ExtractError, extract, parse_layers
from activation_cache.store import (
    FORMAT,
    FORMAT_VERSION,
    Cache,
    CacheError,
    join,
    open_cache,
)
from activation_cache.tasks import (
    TASK_INFO,
    TASKS,
    Task,
    TaskError,
    TaskInfo,
    format_prompts,
    load_task,
    task_cards,
)

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "TASKS",
    "TASK_INFO",
    "Cache",
    "CacheError",
    "ExtractConfig",
    "ExtractError",
    "Task",
    "TaskError",
    "TaskInfo",
    "extract",
    "format_prompts",
    "join",
    "load_task",
    "open_cache",
    "parse_layers",
    "task_cards",
]
