"""One ``bentoml serve`` process of the service, pinned to one registry version: its command,
environment, start, readiness wait and stop (process group + descendants, via psutil)."""

from __future__ import annotations

import datetime as dt
import os
import re
import sys
import time
from pathlib import Path

from mammo_pipeline.common.environment import REPO_ROOT, settings_env
from mammo_pipeline.common.processes import is_alive, spawn, stop_tree
from mammo_pipeline.config import Settings
from mammo_pipeline.serving.state import DeployError

SERVICE_TARGET = "serving.service:MammoClassifier"
#: Words in the command line of a process this package started (recycled-pid guard).
OUR_PROCESSES = ("bentoml", "circusd", "mammo_pipeline.serving.proxy")


def stop_process(pid: int | None, timeout: float = 20.0) -> None:
    """Stop a backend or the proxy with everything it started."""
    stop_tree(pid, timeout, expect=OUR_PROCESSES)


def child_env(settings: Settings, version: str | None = None) -> dict[str, str]:
    """Environment of a service process: the settings (absolute paths), pinned to ``version``
    when given."""
    env = settings_env(settings)
    if version is not None:
        env["MAMMO_SERVE_VERSION"] = str(version)
    return env


def serve_command(host: str, port: int) -> list[str]:
    return [sys.executable, "-m", "bentoml", "serve", SERVICE_TARGET, "--host", host,
            "--port", str(port)]  # fmt: skip


def start_backend(
    settings: Settings, version: str | None, port: int, *, log: Path | None = None
) -> tuple[int, Path]:
    """Start ``bentoml serve`` on 127.0.0.1:``port``, pinned to ``version`` (None: the
    service resolves the ``champion`` alias itself); returns (pid, log)."""
    if log is None:
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
        log = settings.serving_dir / "logs" / f"bento-v{version}-{port}-{stamp}.log"
    proc = spawn(
        serve_command("127.0.0.1", port), env=child_env(settings, version), log=log, cwd=REPO_ROOT
    )
    return proc.pid, log


def log_tail(log: Path | None, lines: int = 5) -> str:
    """The last exception line of a service log, else its last ``lines`` lines."""
    if log is None:
        return ""
    try:
        text = log.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    errors = [ln for ln in text if re.match(r"^[\w.]+(Error|Exception): ", ln)]
    if errors:
        return errors[-1].strip()[:500]
    return " | ".join(line.strip()[:300] for line in text[-lines:])


#: Lines of a service log that mean it will never become ready (fail the deploy at once).
STARTUP_FAILURES = ("Application startup failed", "self-check failed")


def _startup_failed(log: Path) -> bool:
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return False
    return any(marker in text for marker in STARTUP_FAILURES)


def wait_ready(url: str, pid: int, timeout: float, log: Path | None = None) -> None:
    """Poll ``url/readyz`` until 200; raise :class:`DeployError` if the process dies first."""
    import httpx

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if not is_alive(pid):
            raise DeployError(f"service process {pid} exited during start-up: {log_tail(log)}")
        if log is not None and _startup_failed(log):
            raise DeployError(f"service failed to start: {log_tail(log)}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise DeployError(f"service at {url} not ready after {timeout:.0f}s: {log_tail(log)}")


def serve_foreground(settings: Settings, version: str | None = None) -> None:
    """Replace this process by ``bentoml serve`` on ``serve_host:serve_port`` (``mammo
    serve``): signals (Ctrl-C, a container's SIGTERM) reach BentoML directly."""
    env = child_env(settings, version)
    os.chdir(REPO_ROOT)
    cmd = serve_command(settings.serve_host, settings.serve_port)
    os.execve(cmd[0], cmd, env)
