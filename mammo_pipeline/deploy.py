"""Blue/green deployment of the BentoML service on one machine.

Shape: a tiny TCP reverse proxy (``python -m mammo_pipeline.deploy proxy``) owns the live
port (``serve_host:serve_port``) and forwards every new connection to the backend named in
the state file ``<data_dir>/serving/live.json``. Each backend is a ``bentoml serve`` process
pinned to one registry version (``MAMMO_SERVE_VERSION``) on a side port of 127.0.0.1, in its
own process group, logging to ``<data_dir>/serving/logs/``.

:func:`deploy_version` (the ``mammo deploy`` command and the DAG's deploy task):

1. resolve the version (explicit, else the ``champion`` alias);
2. start the green backend on a side port, wait for ``/readyz``;
3. smoke test: POST a fixed image to green's ``/predict`` and compare the served probability
   and version with the in-process prediction of the same registry version (``smoke_tolerance``);
4. switch: write the state file (atomic rename) so new connections go to green; start the
   proxy if it is not running; check ``GET /model`` through the live port names the version;
5. stop blue (its process group) after a short drain.

Any failure before the switch is complete leaves blue serving (the state file is restored
when it was already rewritten), stops green, tags the failed version ``deploy=failed`` with
the reason and, when the ``champion`` alias points at the failed version, moves it back to
the version blue serves (else to the ``previous`` alias). Deploys are serialised with a lock
file. :func:`stop_service` stops the proxy and the backend (``make stop``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import fcntl
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mammo_pipeline.config import Settings
from mammo_pipeline.errors import MammoError
from mammo_pipeline.processes import descendants, is_alive

REPO_ROOT = Path(__file__).resolve().parents[1]
SERVICE_TARGET = "serving.service:MammoClassifier"
STATE_FILE = "live.json"
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


class DeployError(MammoError):
    """A deployment step failed (the message says which and why)."""


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


# --- state file --------------------------------------------------------------------------
def state_path(settings: Settings) -> Path:
    return settings.serving_dir / STATE_FILE


def read_state(settings: Settings) -> dict[str, Any]:
    """The deployment state (``{}`` when nothing was deployed)."""
    try:
        return json.loads(state_path(settings).read_text())
    except (OSError, ValueError):
        return {}


def _write_state(settings: Settings, state: dict[str, Any]) -> None:
    path = state_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(state, indent=2))
    os.replace(tmp, path)


@contextlib.contextmanager
def _deploy_lock(settings: Settings) -> Iterator[None]:
    settings.serving_dir.mkdir(parents=True, exist_ok=True)
    with open(settings.serving_dir / "deploy.lock", "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DeployError("another deploy is running (lock held)") from None
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# --- processes -----------------------------------------------------------------------------
def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    child = _CHILDREN.get(pid)
    if child is not None:
        return child.poll() is None
    return is_alive(pid)


def _ours(pid: int) -> bool:
    """Guard against a recycled pid: only our bentoml / proxy processes are signalled."""
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return pid in _CHILDREN
    return any(word in cmd for word in (b"bentoml", b"circusd", b"mammo_pipeline.deploy"))


def _signal_all(pids: list[int], sig: signal.Signals) -> None:
    for target in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(target, sig)


def stop_process(pid: int | None, timeout: float = 20.0) -> None:
    """Stop ``pid``, its process group and all its descendants: SIGTERM, then SIGKILL."""
    if not pid or not _alive(pid) or not _ours(pid):
        _CHILDREN.pop(pid or -1, None)
        return
    family = descendants(pid)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGTERM)
    _signal_all([pid], signal.SIGTERM)
    end = time.monotonic() + timeout
    while time.monotonic() < end and (_alive(pid) or any(_alive(p) for p in family)):
        time.sleep(0.1)
    family += [p for p in descendants(pid) if p not in family] if _alive(pid) else []
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    _signal_all([p for p in [pid, *family] if _alive(p)], signal.SIGKILL)
    child = _CHILDREN.pop(pid, None)
    if child is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=5)


def _abs_uri(uri: str) -> str:
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri[len(prefix) :].startswith("/"):
        return prefix + str(Path(uri[len(prefix) :]).resolve())
    return uri


def child_env(settings: Settings, version: str | None = None) -> dict[str, str]:
    """Environment of a service process: the caller's plus the settings it needs, made
    absolute (the child runs in the repository root)."""
    env = dict(os.environ)
    data_dir = settings.data_dir.resolve()
    values: dict[str, Any] = {
        "DATA_DIR": data_dir,
        "MLFLOW_TRACKING_URI": _abs_uri(settings.mlflow_tracking_uri),
        "REGISTERED_MODEL_NAME": settings.registered_model_name,
        "IMAGE_SIZE": settings.image_size,
        "MAX_UPLOAD_BYTES": settings.max_upload_bytes,
        "MAX_IMAGE_PIXELS": settings.max_image_pixels,
        "BENTOML_HOME": settings.bentoml_store.resolve(),
        "SERVE_MAX_BATCH_SIZE": settings.serve_max_batch_size,
        "SERVE_MAX_LATENCY_MS": settings.serve_max_latency_ms,
        "SERVE_HOST": settings.serve_host,
        "SERVE_PORT": settings.serve_port,
    }
    for key, value in values.items():
        env[f"MAMMO_{key}"] = str(value)
    if settings.api_key:
        env["MAMMO_API_KEY"] = settings.api_key
    else:
        env.pop("MAMMO_API_KEY", None)
    if version is not None:
        env["MAMMO_SERVE_VERSION"] = str(version)
    else:
        env.pop("MAMMO_SERVE_VERSION", None)
    env["BENTOML_HOME"] = str(settings.bentoml_store.resolve())
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    return env


def serve_command(host: str, port: int) -> list[str]:
    return [sys.executable, "-m", "bentoml", "serve", SERVICE_TARGET, "--host", host,
            "--port", str(port)]  # fmt: skip


def _spawn(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as fh:
        proc = subprocess.Popen(
            cmd,
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own process group: stop kills bentoml's workers too
        )
    _CHILDREN[proc.pid] = proc
    return proc


def start_backend(settings: Settings, version: str, port: int) -> tuple[int, Path]:
    """Start ``bentoml serve`` pinned to ``version`` on 127.0.0.1:``port``; (pid, log)."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
    log = settings.serving_dir / "logs" / f"bento-v{version}-{port}-{stamp}.log"
    proc = _spawn(serve_command("127.0.0.1", port), child_env(settings, version), log)
    return proc.pid, log


def free_port(preferred: int = 0, avoid: set[int] | None = None) -> int:
    """``preferred`` when it can be bound (and is not in ``avoid``), else an ephemeral port."""
    avoid = avoid or set()
    for candidate in ([preferred] if preferred else []) + [0]:
        if candidate in avoid:
            continue
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", candidate))
            except OSError:
                continue
            port = sock.getsockname()[1]
            if port not in avoid:
                return int(port)
    raise DeployError("no free port")


def _log_tail(log: Path | None, lines: int = 5) -> str:
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


def _headers(settings: Settings) -> dict[str, str]:
    return {"Authorization": f"Bearer {settings.api_key}"} if settings.api_key else {}


def _startup_failed(log: Path) -> bool:
    try:
        return "Application startup failed" in log.read_text(errors="replace")
    except OSError:
        return False


def wait_ready(url: str, pid: int, timeout: float, log: Path | None = None) -> None:
    """Poll ``url/readyz`` until 200; raise :class:`DeployError` if the process dies first."""
    import httpx

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if not _alive(pid):
            raise DeployError(f"service process {pid} exited during start-up: {_log_tail(log)}")
        if log is not None and _startup_failed(log):
            raise DeployError(f"service failed to start: {_log_tail(log)}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise DeployError(f"service at {url} not ready after {timeout:.0f}s: {_log_tail(log)}")


# --- smoke test ------------------------------------------------------------------------------
def smoke_image(size: int = 64) -> bytes:
    """A fixed, deterministic grey PNG (gradient + noise) used by every smoke test."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(20240601)
    yy, xx = np.mgrid[0:size, 0:size]
    base = 60 + 120 * (xx + yy) / (2 * size) + rng.normal(0, 20, (size, size))
    buf = io.BytesIO()
    Image.fromarray(np.clip(base, 0, 255).astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def expected_probability(settings: Settings, version: str, image: bytes) -> float:
    """The in-process prediction of ``version`` (loaded from MLflow) on ``image``."""
    import numpy as np

    from mammo_pipeline.model_loader import load_from_registry
    from mammo_pipeline.serving_io import decode_image, to_model_input

    model = load_from_registry(settings, version)
    size = int(model.input_shape[1])
    gray = decode_image(image, max_bytes=len(image) + 1, max_pixels=1 << 30)
    x = to_model_input(gray, size)[np.newaxis]
    return float(np.asarray(model.predict(x, verbose=0)).reshape(-1)[0])


def smoke_test(settings: Settings, url: str, version: str) -> tuple[float, float]:
    """POST the smoke image to ``url``; check version and probability; (served, expected)."""
    import httpx

    image = smoke_image()
    try:
        resp = httpx.post(
            f"{url}/predict",
            files={"image": ("smoke.png", image, "image/png")},
            headers=_headers(settings),
            timeout=60.0,
        )
    except httpx.HTTPError as exc:
        raise DeployError(f"smoke request to {url} failed: {exc}") from None
    if resp.status_code != 200:
        raise DeployError(f"smoke request got HTTP {resp.status_code}: {resp.text[:300]}")
    body = resp.json()
    if str(body.get("model_version")) != str(version):
        raise DeployError(f"service answers as version {body.get('model_version')}, not {version}")
    served = float(body["probability"])
    expected = expected_probability(settings, version, image)
    if not abs(served - expected) <= settings.smoke_tolerance:
        raise DeployError(
            f"served probability {served:.8f} differs from in-process {expected:.8f} "
            f"by more than {settings.smoke_tolerance:g}"
        )
    return served, expected


# --- registry: minimal alias restore -----------------------------------------------------------
def _client(settings: Settings):
    from mlflow import MlflowClient

    uri = _abs_uri(settings.mlflow_tracking_uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _alias_version(settings: Settings, alias: str) -> str | None:
    try:
        mv = _client(settings).get_model_version_by_alias(settings.registered_model_name, alias)
        return str(mv.version)
    except Exception:  # noqa: BLE001 - a missing alias is simply None
        return None


def _tag(settings: Settings, version: str, tags: dict[str, str]) -> None:
    client = _client(settings)
    for key, value in tags.items():
        with contextlib.suppress(Exception):
            client.set_model_version_tag(settings.registered_model_name, version, key, value)


def rollback_alias(settings: Settings, failed: str, restore_to: str | None, reason: str):
    """Tag ``failed`` as a failed deploy; when ``champion`` points at it, move the alias back
    to ``restore_to``. Returns the version the alias now points at if it was moved."""
    now = dt.datetime.now(dt.UTC).isoformat()
    _tag(settings, failed, {"deploy": "failed", "deploy_reason": reason[:4000], "deploy_at": now})
    if _alias_version(settings, "champion") != failed or not restore_to or restore_to == failed:
        return None
    try:
        if _alias_version(settings, "previous") == restore_to:
            # The usual case (the gate just promoted ``failed``): the registry's own rollback
            # also moves ``previous`` one step back and records who/when/why.
            from mammo_pipeline.registry import rollback

            rollback(settings, reason=f"deploy failed: {reason[:500]}", who="mammo-deploy")
        else:
            _client(settings).set_registered_model_alias(
                settings.registered_model_name, "champion", restore_to
            )
    except Exception:  # noqa: BLE001 - reported, the old service keeps serving regardless
        return None
    _tag(settings, failed, {"deploy_rolled_back_to": restore_to})
    return restore_to


# --- proxy ---------------------------------------------------------------------------------
def _proxy_alive(state: dict[str, Any]) -> bool:
    proxy = state.get("proxy") or {}
    return _alive(proxy.get("pid")) and _ours(int(proxy["pid"]))


def ensure_proxy(settings: Settings, state: dict[str, Any]) -> dict[str, Any]:
    """Start the live-port proxy unless it runs; returns its ``{pid, host, port, log}``."""
    proxy = state.get("proxy") or {}
    if _proxy_alive(state) and proxy.get("port") == settings.serve_port:
        return proxy
    if proxy:
        stop_process(proxy.get("pid"))
    log = settings.serving_dir / "logs" / "proxy.log"
    cmd = [sys.executable, "-m", "mammo_pipeline.deploy", "proxy", "--state",
           str(state_path(settings).resolve()), "--host", settings.serve_host,
           "--port", str(settings.serve_port)]  # fmt: skip
    proc = _spawn(cmd, child_env(settings), log)
    end = time.monotonic() + 15
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise DeployError(
                f"proxy on {settings.serve_host}:{settings.serve_port} failed: {_log_tail(log)}"
            )
        with (
            contextlib.suppress(OSError),
            socket.create_connection((settings.serve_host, settings.serve_port), timeout=0.5),
        ):
            return {"pid": proc.pid, "host": settings.serve_host, "port": settings.serve_port,
                    "log": str(log)}  # fmt: skip
        time.sleep(0.1)
    stop_process(proc.pid)
    raise DeployError("proxy did not start listening within 15s")


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, OSError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()


async def run_proxy(state_file: Path, host: str, port: int) -> None:
    """Forward each connection on ``host:port`` to the backend port named in ``state_file``."""
    cache: dict[str, Any] = {"mtime": None, "port": None}

    def backend_port() -> int | None:
        try:
            mtime = state_file.stat().st_mtime_ns
        except OSError:
            return None
        if mtime != cache["mtime"]:
            try:
                backend = json.loads(state_file.read_text()).get("backend") or {}
                cache.update(mtime=mtime, port=backend.get("port"))
            except (OSError, ValueError):
                return cache["port"]
        return cache["port"]

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        target = backend_port()
        try:
            if target is None:
                raise OSError("no backend")
            b_reader, b_writer = await asyncio.open_connection("127.0.0.1", target)
        except OSError:
            body = b'{"error": "no model service is running"}'
            writer.write(
                b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
                b"connection: close\r\ncontent-length: "
                + str(len(body)).encode()
                + b"\r\n\r\n"
                + body
            )
            with contextlib.suppress(ConnectionError, OSError):
                await writer.drain()
            writer.close()
            return
        tasks = [asyncio.ensure_future(_pipe(reader, b_writer)),
                 asyncio.ensure_future(_pipe(b_reader, writer))]  # fmt: skip
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for t in tasks:
            t.cancel()
        for w in (writer, b_writer):
            with contextlib.suppress(Exception):
                w.close()

    server = await asyncio.start_server(handle, host, port, reuse_address=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


# --- deploy --------------------------------------------------------------------------------
def deploy_version(settings: Settings, version: str | int | None = None) -> DeployResult:
    """Blue/green deploy of ``version`` (default: the champion). Never raises for a failed
    deployment: the result says ``ok`` and why; blue keeps serving on failure."""
    from mammo_pipeline.model_loader import resolve_version

    started = time.monotonic()
    with _deploy_lock(settings):
        state = read_state(settings)
        blue = state.get("backend") or {}
        blue_live = _alive(blue.get("pid"))
        blue_version = str(blue["version"]) if blue_live and blue.get("version") else None
        result = DeployResult(ok=False, version=None, previous_version=blue_version)
        green_pid: int | None = None
        new_state: dict[str, Any] = {}
        switched = False
        try:
            target = resolve_version(settings, version)
            result.version = target
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
            _write_state(settings, new_state)
            switched = True
            new_state["proxy"] = ensure_proxy(settings, new_state)
            _write_state(settings, new_state)
            live_url = f"http://{_client_host(settings.serve_host)}:{settings.serve_port}"
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
                        _write_state(settings, {"backend": blue, "proxy": proxy})
                    else:  # nothing to fall back on: no half-started proxy either
                        stop_process(proxy.get("pid"))
                        state_path(settings).unlink(missing_ok=True)
            stop_process(green_pid)
            if result.version is not None:
                restore = blue_version or _alias_version(settings, "previous")
                result.alias_rolled_back_to = rollback_alias(
                    settings, result.version, restore, reason
                )
            result.steps.append("failed: green stopped, blue kept" if blue_live else "failed")
            result.duration_s = round(time.monotonic() - started, 2)
            return result

        if blue_live and blue.get("pid") != green_pid:
            time.sleep(1.0)  # let requests already on blue's connections finish
            stop_process(blue.get("pid"))
            result.steps.append(f"stopped blue pid {blue.get('pid')}")
        _tag(settings, target, {"deploy": "live",
                                "deploy_at": dt.datetime.now(dt.UTC).isoformat()})  # fmt: skip
        result.ok = True
        result.message = f"serving version {target} at {result.url}"
        result.duration_s = round(time.monotonic() - started, 2)
        return result


def _client_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "::", "") else host


def _check_live(settings: Settings, url: str, version: str) -> None:
    """``GET /model`` through the live port must name ``version`` (a few tries)."""
    import httpx

    last = ""
    for _ in range(20):
        try:
            resp = httpx.get(f"{url}/model", headers=_headers(settings), timeout=5.0)
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
        if pid and _alive(pid):
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
            state[role]["alive"] = _alive(state[role].get("pid"))
    return state


def serve_foreground(settings: Settings, version: str | None = None) -> None:
    """Replace this process by ``bentoml serve`` on ``serve_host:serve_port`` (``mammo
    serve``): signals (Ctrl-C, a container's SIGTERM) reach BentoML directly."""
    env = child_env(settings, version)
    os.chdir(REPO_ROOT)
    cmd = serve_command(settings.serve_host, settings.serve_port)
    os.execve(cmd[0], cmd, env)


def _main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mammo_pipeline.deploy")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("proxy", help="run the live-port proxy (started by deploy)")
    p.add_argument("--state", type=Path, required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    coro = run_proxy(args.state, args.host, args.port)
    try:
        import uvloop
    except ImportError:
        asyncio.run(coro)
    else:
        uvloop.run(coro)


if __name__ == "__main__":
    _main()
