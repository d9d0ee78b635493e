"""The live-port TCP proxy of the one-machine deployment (``python -m
mammo_pipeline.serving.proxy``): every new connection goes to the backend named in the state
file, so switching backends is an atomic rename of that file and no connection is refused.

Kept hand-written for the one-machine default (no extra daemon to install); the compose
stack puts a real reverse proxy (nginx, ``docker/nginx.conf``) in front of the service instead.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

from mammo_pipeline.common.environment import REPO_ROOT
from mammo_pipeline.common.processes import is_alive, spawn
from mammo_pipeline.config import Settings
from mammo_pipeline.serving.backend import OUR_PROCESSES, child_env, log_tail, stop_process
from mammo_pipeline.serving.state import DeployError, state_path


def proxy_alive(state: dict[str, Any]) -> bool:
    proxy = state.get("proxy") or {}
    return is_alive(proxy.get("pid")) and command_matches(int(proxy["pid"]))


def command_matches(pid: int) -> bool:
    from mammo_pipeline.common.processes import command_contains

    return command_contains(pid, OUR_PROCESSES)


def ensure_proxy(settings: Settings, state: dict[str, Any]) -> dict[str, Any]:
    """Start the live-port proxy unless it runs; returns its ``{pid, host, port, log}``."""
    proxy = state.get("proxy") or {}
    if proxy_alive(state) and proxy.get("port") == settings.serve_port:
        return proxy
    if proxy:
        stop_process(proxy.get("pid"))
    log = settings.serving_dir / "logs" / "proxy.log"
    cmd = [sys.executable, "-m", "mammo_pipeline.serving.proxy", "proxy", "--state",
           str(state_path(settings).resolve()), "--host", settings.serve_host,
           "--port", str(settings.serve_port)]  # fmt: skip
    proc = spawn(cmd, env=child_env(settings), log=log, cwd=REPO_ROOT)
    end = time.monotonic() + 15
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise DeployError(
                f"proxy on {settings.serve_host}:{settings.serve_port} failed: {log_tail(log)}"
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mammo_pipeline.serving.proxy")
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
    main()
