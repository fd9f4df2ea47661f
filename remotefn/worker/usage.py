"""What a call uses: CPU time of this process, and (when asked) its peak memory.

Peak memory is the growth of the process's resident size during the call: the kernel's peak
(VmHWM) is reset before the call (``/proc/self/clear_refs``) and read after it.
"""

from __future__ import annotations

import os

_PAGE = os.sysconf("SC_PAGE_SIZE")


def resident() -> int:
    """This process's resident size now, in bytes."""
    with open("/proc/self/statm") as file:
        return int(file.read().split()[1]) * _PAGE


def reset_peak() -> int:
    """Start measuring a peak; returns the resident size now (the baseline)."""
    try:
        with open("/proc/self/clear_refs", "w") as file:
            file.write("5")
    except OSError:
        pass
    return resident()


def peak_since(baseline: int) -> int:
    """How far the resident size rose above ``baseline`` since :func:`reset_peak`."""
    with open("/proc/self/status") as file:
        for line in file:
            if line.startswith("VmHWM:"):
                return max(0, int(line.split()[1]) * 1024 - baseline)
    return -1
