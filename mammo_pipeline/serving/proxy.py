"""The live-port HTTP proxy of the one-machine deployment (``python -m
mammo_pipeline.serving.proxy``): every request goes to the backend named in the state file
when it arrives, so switching backends is an atomic rename of that file, no connection is
refused and no kept-alive connection is cut by the switch.

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

import h11

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


#: Hop-by-hop headers (RFC 9110 section 7.6.1) are the proxy's own business on each side;
#: ``expect`` is answered here (``100 Continue``), so the backend never sees it.
_HOP_BY_HOP = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"upgrade",
     b"expect"}
)  # fmt: skip
#: A client connection idle this long between requests is closed (bounded resources).
IDLE_TIMEOUT_S = 75.0
_READ = 65536


class _Closed(Exception):
    """The peer closed the connection, or spoke something that is not HTTP/1.1."""


async def _next_event(conn: h11.Connection, reader: asyncio.StreamReader,
                      timeout: float | None = None) -> Any:  # fmt: skip
    """The next h11 event of ``conn``, reading from ``reader`` as needed."""
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as exc:
            raise _Closed(str(exc)) from exc
        if event is h11.NEED_DATA:
            data = await asyncio.wait_for(reader.read(_READ), timeout)
            conn.receive_data(data)
            continue
        if isinstance(event, h11.ConnectionClosed):
            raise _Closed("peer closed")
        return event


def _forwarded(headers: Any) -> list[tuple[bytes, bytes]]:
    return [(k, v) for k, v in headers if k.lower() not in _HOP_BY_HOP]


def _error_response(status: int, reason: bytes, message: str) -> tuple[h11.Response, bytes]:
    body = json.dumps({"error": message}).encode()
    headers = [(b"content-type", b"application/json"),
               (b"content-length", str(len(body)).encode())]  # fmt: skip
    return h11.Response(status_code=status, reason=reason, headers=headers), body


async def _relay(
    request: h11.Request,
    client: h11.Connection,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    target: int,
) -> None:
    """Send one request (streamed) to the backend on ``target`` over a new connection and
    stream its response back. Raises ``OSError`` before the response started when the backend
    cannot be reached (the caller answers 503/502)."""
    b_reader, b_writer = await asyncio.open_connection("127.0.0.1", target)
    upstream = h11.Connection(h11.CLIENT)
    try:
        headers = _forwarded(request.headers) + [(b"connection", b"close")]
        b_writer.write(upstream.send(h11.Request(method=request.method, target=request.target,
                                                 headers=headers)))  # fmt: skip
        if client.client_is_waiting_for_100_continue:
            writer.write(client.send(h11.InformationalResponse(status_code=100, headers=[])))
        body_sent = True
        while True:  # the request body, streamed
            event = await _next_event(client, reader)
            if isinstance(event, h11.Data):
                if body_sent:
                    try:
                        b_writer.write(upstream.send(h11.Data(data=event.data)))
                        await b_writer.drain()
                    except (ConnectionError, OSError):
                        body_sent = False  # the backend answered early (413); read its answer
            elif isinstance(event, h11.EndOfMessage):
                if body_sent:
                    with contextlib.suppress(ConnectionError, OSError):
                        b_writer.write(upstream.send(h11.EndOfMessage()))
                        await b_writer.drain()
                break
        while True:  # the response, streamed
            try:
                event = await _next_event(upstream, b_reader)
            except _Closed as exc:
                raise OSError(f"backend closed: {exc}") from exc
            if isinstance(event, h11.InformationalResponse):
                continue
            if isinstance(event, h11.Response):
                writer.write(
                    client.send(
                        h11.Response(
                            status_code=event.status_code,
                            reason=event.reason,
                            headers=_forwarded(event.headers),
                        )
                    )
                )
                break
        while True:
            event = await _next_event(upstream, b_reader)  # _Closed mid-body: the caller closes
            if isinstance(event, h11.Data):
                writer.write(client.send(h11.Data(data=event.data)))
                await writer.drain()
            elif isinstance(event, h11.EndOfMessage):
                writer.write(client.send(h11.EndOfMessage()))
                await writer.drain()
                return
    finally:
        with contextlib.suppress(Exception):
            b_writer.close()


async def run_proxy(state_file: Path, host: str, port: int) -> None:
    """Forward each HTTP request on ``host:port`` to the backend port named in ``state_file``.

    The proxy speaks HTTP/1.1 (h11) on both sides and chooses the backend per request, not per
    connection: a client's keep-alive connection outlives a blue/green switch, and its next
    request goes to the new backend. Each request gets its own backend connection, so stopping
    the old backend can never cut a connection a client is about to reuse (which is what a
    byte-level proxy did: "Server disconnected without sending a response").
    """
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
        client = h11.Connection(h11.SERVER)
        try:
            while True:
                try:
                    event = await _next_event(client, reader, IDLE_TIMEOUT_S)
                except (_Closed, TimeoutError, ConnectionError, OSError):
                    return
                if not isinstance(event, h11.Request):
                    return
                target = backend_port()
                try:
                    if target is None:
                        raise OSError("no backend")
                    await _relay(event, client, reader, writer, target)
                except (OSError, _Closed):
                    if client.our_state is not h11.SEND_RESPONSE:
                        return  # the response had started: all we can do is close
                    response, body = _error_response(
                        503, b"Service Unavailable", "no model service is running"
                    ) if target is None else _error_response(
                        502, b"Bad Gateway", "the model service did not answer; retry"
                    )  # fmt: skip
                    with contextlib.suppress(Exception):
                        writer.write(client.send(response) + client.send(h11.Data(data=body))
                                     + client.send(h11.EndOfMessage()))  # fmt: skip
                        await writer.drain()
                if client.our_state is h11.MUST_CLOSE or client.their_state is h11.MUST_CLOSE:
                    return
                try:
                    client.start_next_cycle()
                except h11.LocalProtocolError:
                    return  # the request body was not read to its end
        except (ConnectionError, h11.LocalProtocolError):
            return
        finally:
            with contextlib.suppress(Exception):
                writer.close()

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
