"""Background services started by the demo (Airflow, MLflow UI), tracked in a small state file
so that ``make stop`` can stop exactly what was started."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path


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


def is_alive(pid: int) -> bool:
    """Whether ``pid`` runs; a zombie (exited, not yet reaped) counts as dead."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return "Z" not in Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True


def descendants(pid: int) -> list[int]:
    """All live descendants of ``pid``, read from /proc (children that started their own
    process group, such as BentoML's workers, are not reached by killing the group)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        parents.setdefault(ppid, []).append(int(entry.name))
    out: list[int] = []
    todo = [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


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
    """Start ``argv`` in its own process group, logging to ``log_dir/<name>.log``."""
    services = _load(state_file)
    old = services.get(name)
    if old and is_alive(old.pid):
        return old
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"{name}.log"
    with open(log, "ab") as fh:
        proc = subprocess.Popen(
            argv,
            env=env,
            cwd=cwd,
            stdout=fh,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    service = Service(name=name, pid=proc.pid, log=str(log), url=url)
    services[name] = service
    _save(state_file, services)
    return service


def stop_all(state_file: Path, timeout: float = 20.0) -> list[str]:
    """Stop every recorded service (SIGTERM to its group, then SIGKILL); returns their names."""
    services = _load(state_file)
    for svc in services.values():
        if is_alive(svc.pid):
            try:
                os.killpg(svc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    deadline = time.time() + timeout
    for svc in services.values():
        while is_alive(svc.pid) and time.time() < deadline:
            try:
                os.waitpid(svc.pid, os.WNOHANG)
            except ChildProcessError:
                pass
            time.sleep(0.2)
        if is_alive(svc.pid):
            try:
                os.killpg(svc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    if state_file.exists():
        state_file.unlink()
    return list(services)


def wait_http(url: str, timeout: float, ok=(200,)) -> bool:
    """Poll ``url`` until it answers one of ``ok`` status codes or ``timeout`` passes."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=3) as resp:
                if resp.status in ok:
                    return True
        except (urllib.error.URLError, OSError, ValueError):
            pass
        time.sleep(1.0)
    return False
