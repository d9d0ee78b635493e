"""The one-machine live-port proxy (``mammo_pipeline.serving.proxy``) against two real
HTTP/1.1 backends in subprocesses: the backend is chosen per request, so a client's
kept-alive connection survives a blue/green switch and the old backend's exit.

The CI flake this reproduces deterministically: a byte-level proxy pinned each client
connection to the backend it first reached, so a request sent on a kept-alive connection
after the switch met the stopped backend ("Server disconnected without sending a response").
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mammo_pipeline.common.net import free_port

BACKEND = r"""
import hashlib, json, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

NAME, PORT = sys.argv[1], int(sys.argv[2])

class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def _answer(self, body: bytes) -> None:
        out = json.dumps({"backend": NAME, "method": self.command, "path": self.path,
                          "n": len(body), "sha": hashlib.sha256(body).hexdigest(),
                          "header": self.headers.get("x-test"),
                          "expect": self.headers.get("expect")}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("x-backend", NAME)
        self.send_header("content-length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)
    def do_GET(self): self._answer(b"")
    def do_POST(self):
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            body = b""
            while True:
                size = int(self.rfile.readline().strip(), 16)
                if size == 0:
                    self.rfile.readline(); break
                body += self.rfile.read(size); self.rfile.readline()
        else:
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
        self._answer(body)

ThreadingHTTPServer(("127.0.0.1", PORT), H).serve_forever()
"""


def _wait_port(port: int, proc: subprocess.Popen, timeout: float = 15.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        assert proc.poll() is None, "process exited before listening"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listens on {port}")


class World:
    def __init__(self, tmp: Path) -> None:
        self.state = tmp / "state.json"
        self.procs: list[subprocess.Popen] = []
        self.port = free_port()

    def backend(self, name: str) -> tuple[int, subprocess.Popen]:
        port = free_port()
        proc = subprocess.Popen([sys.executable, "-c", BACKEND, name, str(port)])
        self.procs.append(proc)
        _wait_port(port, proc)
        return port, proc

    def route(self, port: int | None) -> None:
        tmp = self.state.with_suffix(".tmp")
        tmp.write_text(json.dumps({"backend": {"port": port} if port else {}}))
        os.replace(tmp, self.state)  # the deployer's atomic switch

    def start_proxy(self) -> None:
        cmd = [sys.executable, "-m", "mammo_pipeline.serving.proxy", "proxy", "--state",
               str(self.state), "--port", str(self.port)]  # fmt: skip
        proc = subprocess.Popen(cmd)
        self.procs.append(proc)
        _wait_port(self.port, proc)

    def connection(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path)
    yield w
    for proc in w.procs:
        proc.kill()
        proc.wait()


def _ask(conn: http.client.HTTPConnection, method: str = "GET", body: bytes | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, dict]:  # fmt: skip
    chunked = (headers or {}).get("transfer-encoding") == "chunked"
    conn.request(method, "/predict", body=body, headers=headers or {}, encode_chunked=chunked)
    resp = conn.getresponse()
    return resp.status, json.loads(resp.read())


def test_a_kept_alive_connection_follows_the_switch(world: World) -> None:
    blue_port, blue = world.backend("blue")
    green_port, _ = world.backend("green")
    world.route(blue_port)
    world.start_proxy()
    conn = world.connection()
    assert _ask(conn)[1]["backend"] == "blue"
    world.route(green_port)
    blue.kill()  # the deployer stops blue after the switch
    blue.wait()
    # the same client connection, reused: the next request reaches green
    status, answer = _ask(conn, "POST", b"x" * 1000)
    assert status == 200 and answer["backend"] == "green" and answer["n"] == 1000
    assert _ask(conn)[1]["backend"] == "green"


def test_bodies_headers_and_framing_pass_through(world: World) -> None:
    port, _ = world.backend("only")
    world.route(port)
    world.start_proxy()
    conn = world.connection()
    big = os.urandom(3_000_000)
    status, answer = _ask(conn, "POST", big, {"x-test": "kept"})
    assert status == 200 and answer["n"] == len(big)
    assert answer["sha"] == hashlib.sha256(big).hexdigest() and answer["header"] == "kept"
    # a chunked upload (no content-length), then curl's Expect: 100-continue on the same
    # connection: the proxy answers the 100 itself and the backend never sees the header
    status, answer = _ask(conn, "POST", iter([b"abc", b"defg"]),
                          {"transfer-encoding": "chunked"})  # fmt: skip
    assert status == 200 and answer["n"] == 7
    sock = socket.create_connection(("127.0.0.1", world.port), timeout=10)
    sock.sendall(b"POST /predict HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n"
                 b"expect: 100-continue\r\n\r\n")  # fmt: skip
    assert sock.recv(100).startswith(b"HTTP/1.1 100 ")
    sock.sendall(b"hello")
    reply = b""
    while b'"expect"' not in reply:
        reply += sock.recv(65536)
    assert b"HTTP/1.1 200" in reply and b'"n": 5' in reply and b'"expect": null' in reply
    sock.close()


def test_no_backend_is_a_503_that_says_so_and_a_dead_one_a_502(world: World) -> None:
    world.route(None)
    world.start_proxy()
    conn = world.connection()
    status, answer = _ask(conn)
    assert status == 503 and answer == {"error": "no model service is running"}
    world.route(free_port())  # named, but nothing listens there
    status, answer = _ask(world.connection(), "POST", b"abc")
    assert status == 502 and "did not answer" in answer["error"]
