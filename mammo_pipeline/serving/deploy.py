"""Blue/green deployment of the BentoML service on one machine.

Shape: an HTTP/1.1 proxy (:mod:`.proxy`) owns the live port (``serve_host:serve_port``) and
forwards every request to the backend named in the state file (:mod:`.state`). Each
backend (:mod:`.backend`) is a ``bentoml serve`` process pinned to one registry version on a
side port of 127.0.0.1, in its own process group, logging to ``<data_dir>/serving/logs/``.

:func:`deploy_version` (the ``mammo deploy`` command and the DAG's deploy task):

1. resolve the version (explicit, else the ``champion`` alias);
2. start the green backend on a side port, wait for ``/readyz``;
3. smoke test (:mod:`.smoke`): the served probability and version must equal the in-process
   prediction of the same registry version (``smoke_tolerance``), computed on a thread
   while green starts;
4. switch: write the state file (atomic rename) so new connections go to green; start the
   proxy if it is not running; check ``GET /model`` through the live port names the version;
5. stop blue (its process group) after a short drain.

Any failure before the switch is complete leaves blue serving (the state file is restored
when it was already rewritten), stops green and records the failure in the registry
(:func:`mammo_pipeline.registry.deployments.undo_failed_deploy`). Deploys are serialised with
a lock file. :func:`stop_service` stops the proxy and the backend (``make stop``).

:func:`follow_champion` is what a registry action that moved the ``champion`` alias (rollback,
approval, pin) does next: deploy the new champion with :func:`deploy_version` when a
deployment from the same registry is live on this machine, else say which command would.
:func:`probe_live` asks the service on the live port what it serves (``mammo status``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from mammo_pipeline.common.auth import auth_headers, auth_refusal
from mammo_pipeline.common.net import client_host, free_port
from mammo_pipeline.common.processes import is_alive
from mammo_pipeline.config import Settings
from mammo_pipeline.errors import MammoError
from mammo_pipeline.registry.names import PREVIOUS, Deployed
from mammo_pipeline.serving.backend import start_backend, stop_process, wait_ready
from mammo_pipeline.serving.proxy import ensure_proxy
from mammo_pipeline.serving.smoke import expected_in_background, smoke_test
from mammo_pipeline.serving.state import (
    DeployError,
    deploy_lock,
    live_backend,
    read_state,
    registry_identity,
    state_path,
    write_state,
)

__all__ = [
    "ChampionFollow",
    "DeployError",
    "DeployResult",
    "deploy_version",
    "follow_champion",
    "probe_live",
    "service_status",
    "stop_service",
]


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
    #: The registry records are left to a writer (``deploy_records_registry`` false):
    #: :func:`~mammo_pipeline.registry.deployments.record_outcome` makes them, moving the
    #: champion back to ``restore_to`` after a failure.
    record_pending: bool = False
    restore_to: str | None = None
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
    deployment: the result says ``ok`` and why; blue keeps serving on failure. Settings that
    forbid serving (no API key with ``MAMMO_AUTH=key``) fail it before anything starts: a
    setting, not the version, so nothing is marked or rolled back."""
    from mammo_pipeline.registry.deployments import (
        alias_version,
        mark_deploy,
        undo_failed_deploy,
    )
    from mammo_pipeline.serving.model_loader import resolve_version

    if problem := auth_refusal(settings):
        return DeployResult(ok=False, version=None, message=problem)
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
            expected = expected_in_background(settings, target)  # overlaps green's start-up
            result.backend_port, result.backend_pid, result.log = port, green_pid, str(log)
            result.steps.append(f"started green v{target} pid {green_pid} on port {port}")
            side_url = f"http://127.0.0.1:{port}"
            wait_ready(side_url, green_pid, settings.serve_ready_timeout_s, log)
            result.steps.append("green ready")
            served, in_process = smoke_test(settings, side_url, target, expected)
            result.smoke_probability, result.expected_probability = served, in_process
            result.smoke_abs_diff = abs(served - in_process)
            result.steps.append(f"smoke test passed (|diff| {result.smoke_abs_diff:.2e})")

            new_state = {
                "backend": {"pid": green_pid, "port": port, "version": target, "log": str(log),
                            "started_at": dt.datetime.now(dt.UTC).isoformat()},
                "proxy": state.get("proxy") or {},
                "registry": registry_identity(settings),
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
                        write_state(settings, {**state, "backend": blue, "proxy": proxy})
                    else:  # nothing to fall back on: no half-started proxy either
                        stop_process(proxy.get("pid"))
                        state_path(settings).unlink(missing_ok=True)
            stop_process(green_pid)
            if result.version is not None:
                try:
                    result.restore_to = blue_version or alias_version(settings, PREVIOUS)
                except MammoError as read_exc:  # reported: nothing to move the champion to
                    result.steps.append(f"registry: {read_exc}")
                if settings.deploy_records_registry:
                    undo = undo_failed_deploy(settings, result.version, result.restore_to, reason)
                    result.alias_rolled_back_to = undo.moved_to
                    result.steps += [f"registry: {p}" for p in undo.problems]
                else:
                    result.record_pending = True
            result.steps.append("failed: green stopped, blue kept" if blue_live else "failed")
            result.duration_s = round(time.monotonic() - started, 2)
            return result

        if blue_live and blue.get("pid") != green_pid:
            time.sleep(1.0)  # let requests already on blue's connections finish
            stop_process(blue.get("pid"))
            result.steps.append(f"stopped blue pid {blue.get('pid')}")
        if settings.deploy_records_registry:
            if problem := mark_deploy(settings, target, Deployed.LIVE):
                result.steps.append(f"registry: {problem}")
        else:
            result.record_pending = True
        result.ok = True
        result.message = f"serving version {target} at {result.url}"
        result.duration_s = round(time.monotonic() - started, 2)
        return result


def require_vetted(settings: Settings, version: str) -> None:
    """Raise :class:`DeployError` unless ``version`` may be served (gate=passed, or an
    approved gate=manual, with a decision signed by a trusted key and the model files it
    signed): a rejected, never-gated, hand-tagged or swapped version is never deployed."""
    from mammo_pipeline.common.mlflow_access import mlflow_client
    from mammo_pipeline.registry.attestation import servable_problem

    problem = servable_problem(settings, mlflow_client(settings), version)
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


@dataclass
class ChampionFollow:
    """What :func:`follow_champion` did after the champion moved. ``action``: ``deployed``,
    ``failed``, ``skipped`` (``--no-deploy``), ``not_live``, ``other_registry``,
    ``already_serving`` or ``unchanged``; ``command`` is the command to run when nothing was
    deployed and the live service (if any) does not serve the champion."""

    ok: bool
    action: str
    champion: str | None
    live_version: str | None
    message: str
    command: str | None = None
    deploy: DeployResult | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def follow_champion(
    settings: Settings, before: str | None, after: str | None, *, deploy: bool = True
) -> ChampionFollow:
    """After a registry action moved ``champion`` from ``before`` to ``after``: when a
    deployment of this registry is live on this machine, deploy ``after`` blue/green
    (:func:`deploy_version`, same smoke test); ``deploy=False`` only says what would. Never
    raises for a failed deploy: ``ok`` is False, the reason is in ``message`` and the previous
    version keeps serving (the deployer moves the alias back to it)."""
    backend = live_backend(settings)
    live = str(backend["version"]) if backend else None
    same = backend is not None and (
        read_state(settings).get("registry", registry_identity(settings))
        == registry_identity(settings)
    )

    def out(action: str, message: str, command: str | None = None, ok: bool = True):
        return ChampionFollow(ok, action, after, live, message, command)

    exact = f"mammo deploy --version {after}"
    if after is None or after == before:
        if live is not None and same and after is not None and live != after:
            return out("unchanged", f"champion unchanged (v{after}) but the live service "
                       f"serves v{live}: run `{exact}`", exact)  # fmt: skip
        return out("unchanged", f"champion unchanged ({'v' + after if after else 'none'}): "
                   "nothing to deploy")  # fmt: skip
    if backend is None:
        return out("not_live", f"no deployment is live on this machine "
                   f"({state_path(settings)}): to serve v{after} run `mammo deploy`",
                   "mammo deploy")  # fmt: skip
    if not same:
        return out("other_registry", f"the live service (v{live}) was deployed from another "
                   f"registry or model; not touched: to serve v{after} run `{exact}`",
                   exact)  # fmt: skip
    if live == after:
        return out("already_serving", f"the live service already serves v{after}")
    if not deploy:
        return out("skipped", f"--no-deploy: the live service keeps serving v{live}; to serve "
                   f"v{after} run `{exact}`", exact)  # fmt: skip
    try:
        result = deploy_version(settings, after)
    except DeployError as exc:  # the deploy lock is held: nothing was started
        result = DeployResult(ok=False, version=after, previous_version=live, message=str(exc))
    if result.ok:
        follow = out("deployed", f"deployed v{after} blue/green (was v{live}): {result.message}")
    else:
        rolled = result.alias_rolled_back_to
        follow = out(
            "failed",
            f"deploy of v{after} failed: {result.message}; v{live} keeps serving"
            + (f"; alias 'champion' moved back to v{rolled}" if rolled else ""),
            exact,
            ok=False,
        )
    follow.deploy = result
    return follow


def probe_live(settings: Settings, timeout: float = 3.0) -> dict[str, Any]:
    """What the live port serves, asked of the service itself (``GET /model``, ``/readyz``),
    beside what the state file says (version, pid, since when). Reads only."""
    import httpx

    state = read_state(settings)
    backend, proxy = state.get("backend") or {}, state.get("proxy") or {}
    url = f"http://{client_host(settings.serve_host)}:{settings.serve_port}"
    info: dict[str, Any] = {
        "url": url,
        "state_file": str(state_path(settings)),
        "state_version": str(backend["version"]) if backend.get("version") else None,
        "since": backend.get("started_at"),
        "backend_pid": backend.get("pid"),
        "backend_alive": is_alive(backend.get("pid")),
        "proxy_alive": is_alive(proxy.get("pid")),
        "version": None,
        "ready": False,
        "error": None,
    }
    headers = auth_headers(settings.api_key)
    try:
        resp = httpx.get(f"{url}/model", headers=headers, timeout=timeout)
        if resp.status_code == 200:
            info["version"] = str(resp.json().get("version"))
        else:
            info["error"] = f"GET /model: HTTP {resp.status_code}"
        info["ready"] = httpx.get(f"{url}/readyz", timeout=timeout).status_code == 200
    except (httpx.HTTPError, ValueError, AttributeError) as exc:
        info["error"] = f"{type(exc).__name__}: {exc}"
    return info
