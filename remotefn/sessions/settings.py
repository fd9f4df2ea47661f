"""The settings every session takes, whatever its backend, and their checks."""

from __future__ import annotations

import os
from typing import Any

#: Their names: the backend's own settings are the others.
SESSION_SETTINGS = ("forward_output", "start_timeout", "cache_directory", "cache_by", "record",
                    "measure_memory", "dashboard")


def check_settings(*, forward_output: Any, start_timeout: Any, cache_directory: Any,
                   cache_by: Any, record: Any, measure_memory: Any, dashboard: Any) -> None:
    """Raise ``TypeError`` or ``ValueError``, naming the setting and its value, for a bad
    one."""
    for name, flag in (("forward_output", forward_output), ("measure_memory", measure_memory)):
        if not isinstance(flag, bool):
            raise TypeError(f"{name} must be True or False, got {flag!r}")
    if not isinstance(dashboard, int):
        raise TypeError(f"dashboard must be True, False or a port, got {dashboard!r}")
    if not isinstance(dashboard, bool) and not 0 < dashboard <= 65535:
        raise ValueError(f"dashboard must be a port from 1 to 65535, got {dashboard!r}")
    if record is not None and not isinstance(record, (str, os.PathLike)):
        raise TypeError(f"record must be the path of a file, got {record!r}")
    if isinstance(start_timeout, bool) or not isinstance(start_timeout, (int, float)):
        raise TypeError(f"start_timeout must be a number of seconds, got {start_timeout!r}")
    if not start_timeout > 0:
        raise ValueError(f"start_timeout must be > 0, got {start_timeout!r}")
    if cache_directory is not None and not isinstance(cache_directory, (str, os.PathLike)):
        raise TypeError(f"cache_directory must be a path, got {cache_directory!r}")
    if cache_by not in ("code", "name"):
        raise ValueError(f"cache_by must be 'code' or 'name', got {cache_by!r}")
