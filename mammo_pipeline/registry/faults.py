"""Fault injection for the registry's crash tests (``tests/faults/test_promotion_crash.py``).

Every write of a registry action (a tag, an alias, the journal itself: see :mod:`.journal`)
calls :func:`wrote` right after it succeeds. With ``MAMMO_FAULT_KILL_AFTER_WRITE=<n>`` in the
environment the process kills itself with SIGKILL (like ``kill -9``: no ``finally``, no
``atexit``, the registry lock released only by the kernel) right after its n-th write. Unset,
:func:`wrote` only feeds any :func:`recording` in progress; it never touches the registry.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager

#: ``MAMMO_FAULT_KILL_AFTER_WRITE=<n>``: SIGKILL this process right after its n-th registry
#: write (counted from the first write made with the variable set). For the fault tests only.
FAULT_ENV = "MAMMO_FAULT_KILL_AFTER_WRITE"
_armed_count = 0
_recordings: list[list[str]] = []


def wrote(what: str) -> None:
    """Called after each registry write, ``what`` describing it (``"alias champion -> v3"``)."""
    global _armed_count
    for log in _recordings:
        log.append(what)
    wanted = os.environ.get(FAULT_ENV)
    if not wanted:
        return
    _armed_count += 1
    if _armed_count >= int(wanted):
        os.kill(os.getpid(), signal.SIGKILL)


@contextmanager
def recording() -> Iterator[list[str]]:
    """Collect the descriptions of the registry writes made inside the block, in order."""
    log: list[str] = []
    _recordings.append(log)
    try:
        yield log
    finally:
        _recordings.remove(log)
