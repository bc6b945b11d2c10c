"""Supervisor kinds: where a study's weak labels come from.

One module per kind family, each registering its kinds in
:data:`~probe_lab.supervisors.base.SUPERVISORS` when imported:

* :mod:`~probe_lab.supervisors.probe`: ``probe`` (a weak probe's predictions);
* :mod:`~probe_lab.supervisors.ensemble`: ``ensemble`` (the mean probability of
  several weak probes);
* :mod:`~probe_lab.supervisors.column`: ``column`` (labels stored in a cache's
  extra field: a rule, a re-extraction);
* :mod:`~probe_lab.supervisors.synthetic`: the matched-accuracy error structures of
  Appendix E and the kinds ``random``, ``longest``, ``shortest``;
* :mod:`~probe_lab.supervisors.strong`: ``strong_unconfident`` and
  ``strong_confident_correct``, ranked by out-of-fold strong ceiling probes;
* :mod:`~probe_lab.supervisors.mixture`: ``mixture`` (random flips mixed with a
  simulatable M_k's own errors);
* :mod:`~probe_lab.supervisors.imitation`: ``imitation`` (another supervisor's
  labels, also given to the student as a feature).

:mod:`~probe_lab.supervisors.base` holds what a kind is made of. A researcher's own
kind is one new file calling :func:`register_supervisor` (docs/architecture.md), or
a function named by import path ``"package.module:function"`` in ``kind``.
"""

from probe_lab.supervisors import (  # noqa: F401  (each registers its kinds)
    column,
    ensemble,
    imitation,
    mixture,
    probe,
    strong,
    synthetic,
)
from probe_lab.supervisors.base import (
    SUPERVISORS,
    LabelContext,
    Params,
    SeedAsk,
    StudyError,
    Supervisor,
    SupervisorKind,
    WeakLabels,
    WeakProbe,
    call_label,
    paths_in,
    reference_name,
    register_supervisor,
    with_paths_in,
)

__all__ = [
    "SUPERVISORS",
    "LabelContext",
    "Params",
    "SeedAsk",
    "StudyError",
    "Supervisor",
    "SupervisorKind",
    "WeakLabels",
    "WeakProbe",
    "call_label",
    "paths_in",
    "reference_name",
    "register_supervisor",
    "with_paths_in",
]
