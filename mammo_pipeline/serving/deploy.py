"""Blue/green deployment of the BentoML service on one machine.

Shape: a TCP proxy (:mod:`.proxy`) owns the live port (``serve_host:serve_port``) and
forwards every new connection to the backend named in the state file (:mod:`.state`). Each
backend (:mod:`.backend`) is a ``bentoml serve`` process pinned to one registry version on a
side port of 127.0.0.1, in its own process group, logging to ``<data_dir>/serving/logs/``.

:func:`deploy_version` (the ``mammo deploy`` command and the DAG's deploy task):

1. resolve the version (explicit, else the ``champion`` alias);
2. start the green backend on a side port, wait for ``/readyz``;
3. smoke test (:mod:`.smoke`): the served probability and version must equal the in-process
   prediction of the same registry version (``smoke_tolerance``);
4. switch: write the state file (atomic rename) so new connections go to green; start the
   proxy if it is not running; check ``GET /model`` through the live port names the version;
5. stop blue (its process group) after a short drain.

Any failure before the switch is complete leaves blue serving (the state file is restored
when it was already rewritten), stops green and records the failure in the registry
(:func:`mammo_pipeline.registry.deployments.undo_failed_deploy`). Deploys are serialised with
a lock file. :func:`stop_service` stops the proxy and the backend (``make stop``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from mammo_pipeline.common.auth import auth_headers
from mammo_pipeline.common.net import client_host, free_port
from mammo_pipeline.common.processes import is_alive
from mammo_pipeline.config import Settings
from mammo_pipeline.errors import MammoError
from mammo_pipeline.registry.names import PREVIOUS
from mammo_pipeline.serving.backend import start_backend, stop_process, wait_ready
from mammo_pipeline.serving.proxy import ensure_proxy
from mammo_pipeline.serving.smoke import smoke_test
from mammo_pipeline.serving.state import (
    DeployError,
    deploy_lock,
    read_state,
    state_path,
    write_state,
)

__all__ = ["DeployError", "DeployResult", "deploy_version", "service_status", "stop_service"]


@dataclass
class DeployResult:
    """Outcome of :func:`deploy_version`; JSON-serialisable with :meth:`to_dict`."""

    ok: bool
    version: str | None
    previous_version: str | None = None
    url: str | None = None
    backend_port: int | None = None
    backend_pid: int | None = None
    smoke_probability: float | None = None
    expected_probability: float | None = None
    smoke_abs_diff: float | None = None
    alias_rolled_back_to: str | None = None
    message: str = ""
    duration_s: float = 0.0
    log: str | None = None
    steps: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def raise_for_status(self) -> DeployResult:
        if not self.ok:
            raise DeployError(f"deploy of version {self.version} failed: {self.message}")
        return self


def deploy_version(settings: Settings, version: str | int | None = None) -> DeployResult:
    """Blue/green deploy of ``version`` (default: the champion). Never raises for a failed
    deployment: the result says ``ok`` and why; blue keeps serving on failure."""
    from mammo_pipeline.registry.deployments import (
        alias_version,
        mark_deploy,
        undo_failed_deploy,
    )
    from mammo_pipeline.serving.model_loader import resolve_version

    started = time.monotonic()
    with deploy_lock(settings):
        state = read_state(settings)
        blue = state.get("backend") or {}
        blue_live = is_alive(blue.get("pid"))
        blue_version = str(blue["version"]) if blue_live and blue.get("version") else None
        result = DeployResult(ok=False, version=None, previous_version=blue_version)
        green_pid: int | None = None
        new_state: dict[str, Any] = {}
        switched = False
        try:
            target = resolve_version(settings, version)
            result.version = target
            require_vetted(settings, target)
            port = free_port(
                settings.serve_side_port, avoid={settings.serve_port, blue.get("port") or -1}
            )
            green_pid, log = start_backend(settings, target, port)
            result.backend_port, result.backend_pid, result.log = port, green_pid, str(log)
            result.steps.append(f"started green v{target} pid {green_pid} on port {port}")
            side_url = f"http://127.0.0.1:{port}"
            wait_ready(side_url, green_pid, settings.serve_ready_timeout_s, log)
            result.steps.append("green ready")
            served, expected = smoke_test(settings, side_url, target)
            result.smoke_probability, result.expected_probability = served, expected
            result.smoke_abs_diff = abs(served - expected)
            result.steps.append(f"smoke test passed (|diff| {result.smoke_abs_diff:.2e})")

            new_state = {
                "backend": {"pid": green_pid, "port": port, "version": target, "log": str(log),
                            "started_at": dt.datetime.now(dt.UTC).isoformat()},
                "proxy": state.get("proxy") or {},
            }  # fmt: skip
            write_state(settings, new_state)
            switched = True
            new_state["proxy"] = ensure_proxy(settings, new_state)
            write_state(settings, new_state)
            live_url = f"http://{client_host(settings.serve_host)}:{settings.serve_port}"
            _check_live(settings, live_url, target)
            result.url = live_url
            result.steps.append(f"live port {settings.serve_port} switched to v{target}")
        except Exception as exc:  # noqa: BLE001 - every failure is reported and rolled back
            reason = str(exc) if isinstance(exc, MammoError) else f"{type(exc).__name__}: {exc}"
            result.message = reason
            if switched:
                proxy = new_state.get("proxy") or {}
                with contextlib.suppress(Exception):
                    if blue_live:  # blue takes the live port back
                        write_state(settings, {"backend": blue, "proxy": proxy})
                    else:  # nothing to fall back on: no half-started proxy either
                        stop_process(proxy.get("pid"))
                        state_path(settings).unlink(missing_ok=True)
            stop_process(green_pid)
            if result.version is not None:
                restore = blue_version or alias_version(settings, PREVIOUS)
                result.alias_rolled_back_to = undo_failed_deploy(
                    settings, result.version, restore, reason
                )
            result.steps.append("failed: green stopped, blue kept" if blue_live else "failed")
            result.duration_s = round(time.monotonic() - started, 2)
            return result

        if blue_live and blue.get("pid") != green_pid:
            time.sleep(1.0)  # let requests already on blue's connections finish
            stop_process(blue.get("pid"))
            result.steps.append(f"stopped blue pid {blue.get('pid')}")
        mark_deploy(settings, target, "live")
        result.ok = True
        result.message = f"serving version {target} at {result.url}"
        result.duration_s = round(time.monotonic() - started, 2)
        return result


def require_vetted(settings: Settings, version: str) -> None:
    """Raise :class:`DeployError` unless ``version`` may be served (gate=passed, or an
    approved gate=manual): a rejected or never-gated version is never deployed."""
    from mammo_pipeline.common.mlflow_access import mlflow_client
    from mammo_pipeline.registry.vetting import vetting_problem

    mv = mlflow_client(settings).get_model_version(settings.registered_model_name, version)
    problem = vetting_problem(version, mv.tags or {})
    if problem:
        raise DeployError(f"refusing to deploy: {problem}")


def _check_live(settings: Settings, url: str, version: str) -> None:
    """``GET /model`` through the live port must name ``version`` (a few tries)."""
    import httpx

    last = ""
    for _ in range(20):
        try:
            resp = httpx.get(f"{url}/model", headers=auth_headers(settings.api_key), timeout=5.0)
            if resp.status_code == 200 and str(resp.json().get("version")) == str(version):
                return
            last = f"HTTP {resp.status_code}: {resp.text[:200]}"
        except (httpx.HTTPError, ValueError) as exc:
            last = str(exc)
        time.sleep(0.25)
    raise DeployError(f"live port does not serve version {version}: {last}")


def stop_service(settings: Settings) -> dict[str, Any]:
    """Stop the live backend and the proxy; returns what was stopped."""
    state = read_state(settings)
    stopped: dict[str, Any] = {}
    for role in ("backend", "proxy"):
        pid = (state.get(role) or {}).get("pid")
        if pid and is_alive(pid):
            stop_process(pid)
            stopped[role] = pid
    with contextlib.suppress(OSError):
        state_path(settings).unlink()
    return stopped


def service_status(settings: Settings) -> dict[str, Any]:
    """The state file annotated with liveness of each process."""
    state = read_state(settings)
    for role in ("backend", "proxy"):
        if role in state and state[role]:
            state[role]["alive"] = is_alive(state[role].get("pid"))
    return state
