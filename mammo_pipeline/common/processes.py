"""Starting and stopping background processes (service backends, the proxy, the demo's
Airflow and MLflow), with psutil.

Every process is started in its own session/process group, logging to a file. Stopping is
SIGTERM to the group and to every descendant (BentoML's workers start their own groups, so
killing the group alone is not enough), a grace period, then SIGKILL. A recycled pid is never
signalled: callers pass the words its command line must contain.

The demo's services are recorded in a small JSON state file (:func:`start`,
:func:`stop_all`) so that ``make stop`` stops exactly what was started.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

#: Children started by this process, kept so that they are reaped (no zombies).
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def is_alive(pid: int | None) -> bool:
    """Whether ``pid`` runs; a zombie (exited, not yet reaped) counts as dead."""
    if not pid:
        return False
    child = _CHILDREN.get(pid)
    if child is not None:
        return child.poll() is None
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True


def descendants(pid: int) -> list[int]:
    """All live descendants of ``pid``."""
    try:
        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return []


def command_contains(pid: int, words: Sequence[str]) -> bool:
    """Whether the command line of ``pid`` contains one of ``words`` (recycled-pid guard)."""
    if pid in _CHILDREN:
        return True
    try:
        cmd = " ".join(psutil.Process(pid).cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False
    return any(word in cmd for word in words)


def spawn(
    argv: Sequence[str], *, env: dict[str, str], log: Path, cwd: Path | None = None
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in a new session (own process group), stdout+stderr appended to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as fh:
        proc = subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    _CHILDREN[proc.pid] = proc
    return proc


def _signal(pids: Sequence[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def stop_tree(pid: int | None, timeout: float = 20.0, *, expect: Sequence[str] = ()) -> bool:
    """Stop ``pid``, its process group and all its descendants: SIGTERM, then SIGKILL after
    ``timeout`` seconds. With ``expect``, a pid whose command line contains none of those
    words is left alone (it was recycled). Returns whether something was stopped."""
    if not pid or not is_alive(pid) or (expect and not command_contains(pid, expect)):
        _CHILDREN.pop(pid or -1, None)
        return False
    family = descendants(pid)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGTERM)
    _signal([pid, *family], signal.SIGTERM)
    end = time.monotonic() + timeout
    while time.monotonic() < end and (is_alive(pid) or any(is_alive(p) for p in family)):
        time.sleep(0.1)
    if is_alive(pid):
        family += [p for p in descendants(pid) if p not in family]
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    _signal([p for p in [pid, *family] if is_alive(p)], signal.SIGKILL)
    child = _CHILDREN.pop(pid, None)
    if child is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=5)
    return True


# --- the demo's services -------------------------------------------------------------------
@dataclass
class Service:
    name: str
    pid: int
    log: str
    url: str | None = None


def _load(state_file: Path) -> dict[str, Service]:
    if not state_file.is_file():
        return {}
    raw = json.loads(state_file.read_text())
    return {k: Service(**v) for k, v in raw.items()}


def _save(state_file: Path, services: dict[str, Service]) -> None:
    state_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = state_file.with_suffix(".tmp")
    tmp.write_text(json.dumps({k: asdict(v) for k, v in services.items()}, indent=2))
    os.replace(tmp, state_file)


def start(
    state_file: Path,
    name: str,
    argv: list[str],
    *,
    env: dict[str, str],
    log_dir: Path,
    cwd: Path | None = None,
    url: str | None = None,
) -> Service:
    """Start ``argv`` as service ``name`` (unless it already runs) and record it."""
    services = _load(state_file)
    old = services.get(name)
    if old and is_alive(old.pid):
        return old
    proc = spawn(argv, env=env, log=log_dir / f"{name}.log", cwd=cwd)
    service = Service(name=name, pid=proc.pid, log=str(log_dir / f"{name}.log"), url=url)
    services[name] = service
    _save(state_file, services)
    return service


def running(state_file: Path) -> dict[str, Service]:
    """The recorded services that are still alive."""
    return {k: v for k, v in _load(state_file).items() if is_alive(v.pid)}


def stop_all(state_file: Path, timeout: float = 20.0) -> list[str]:
    """Stop every recorded service and its descendants; returns the names of those that
    were running (``name (pid N)``)."""
    stopped = []
    for svc in _load(state_file).values():
        if stop_tree(svc.pid, timeout):
            stopped.append(f"{svc.name} (pid {svc.pid})")
    state_file.unlink(missing_ok=True)
    return stopped
