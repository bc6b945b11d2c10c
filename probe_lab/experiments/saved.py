"""Studies saved by key, so that an interrupted experiment resumes.

An experiment saves each study as soon as it finishes, in a folder of its run's
output named by the study's key: a sha256 of the resolved study config, the
fingerprints of the caches it reads (absolute path and content hash,
:func:`probe_lab.study.data.cache_fingerprints`) and the probe-lab version. A
marker file, written last, holds the full key; a folder without it (a save that
was cut short) or with another key is never read. Rerunning the same experiment
on the same caches reuses the saved studies and runs only the rest; a changed
config, cache or version gives another key, hence a fresh study.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
from pathlib import Path
from typing import Any

from probe_lab.study import StudyConfig, StudyResult, weak_probes
from probe_lab.study.data import cache_fingerprints, study_reads

__all__ = ["MARKER", "load_saved", "save_study", "study_key"]

MARKER = "saved.json"
"""The file written last into a saved study's folder: its key and caches."""


def _version() -> str:
    try:
        return importlib.metadata.version("probe-lab")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def study_key(config: StudyConfig) -> tuple[str, dict[str, Any]]:
    """The key of a study: sha256 of its resolved config, the fingerprints of
    every cache it reads and the probe-lab version.

    Returns:
        ``(key, caches)``: the hex key and the cache fingerprints it covers.
    """
    probes = weak_probes(config).values()
    caches = cache_fingerprints(study_reads(config, probes, config.other_caches))
    material = dict(
        config=config.to_dict(),
        caches={path: found["sha256"] for path, found in caches.items()},
        version=_version(),
    )
    text = json.dumps(material, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest(), caches


def load_saved(folder: Path, key: str) -> StudyResult | None:
    """The study saved in ``folder`` under ``key``; None when there is none (no
    marker, another key, or files that no longer read)."""
    marker = folder / MARKER
    try:
        if json.loads(marker.read_text()).get("key") != key:
            return None
        return StudyResult.load(folder)
    except (OSError, ValueError, KeyError):
        return None


def save_study(result: StudyResult, folder: Path, key: str) -> Path:
    """Save ``result`` into ``folder`` (:meth:`StudyResult.save`), then the marker
    with ``key``.

    Returns:
        ``folder``.
    """
    marker = folder / MARKER
    marker.unlink(missing_ok=True)
    result.save(folder)
    record = dict(key=key, caches=result.fingerprints.get("caches", {}))
    marker.write_text(json.dumps(record, indent=2))
    return folder
