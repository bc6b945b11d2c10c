"""The study's error: below the study and the supervisor kinds, so both raise it.

It is a :class:`~probe_lab.loader.ConfigError`: a type error that the one config
loader finds in a study's settings (``StudyConfig(seeds=2.0)``) is raised as a
:class:`StudyError` with the loader's message.
"""

from __future__ import annotations

from probe_lab.loader import ConfigError

__all__ = ["StudyError"]


class StudyError(ConfigError):
    """A study configuration that cannot run; the message says what to change."""
