"""The serving benchmark's lean load generator speaks real HTTP/1.1: its prebuilt multipart
upload is parsed by a real multipart parser, kept-alive answers with a length or in chunks
are read whole, and a refused request counts as an error, never as an answer."""

from __future__ import annotations

import asyncio
import threading
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.scripts import load_script

lean_http = load_script("benchmarks/lean_http.py", "lean_http")

PAYLOAD = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive

    def log_message(self, *args) -> None:  # quiet
        pass

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers["Content-Length"]))
        head = f"Content-Type: {self.headers['Content-Type']}\r\n\r\n".encode()
        form = BytesParser(policy=HTTP).parsebytes(head + body)
        parts = {p.get_param("name", header="content-disposition"): p for p in form.iter_parts()}
        ok = self.path == "/predict" and parts["image"].get_content() == PAYLOAD
        answer = b'{"probability": 0.5}' if ok else b'{"error": "refused"}'
        self.send_response(200 if ok else 422)
        if self.headers.get("X-Chunked"):
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for piece in (answer[:5], answer[5:]):
                self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
        else:
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)


@pytest.fixture(scope="module")
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd.server_address[1]
    httpd.shutdown()


@pytest.mark.parametrize("chunked", [False, True])
def test_uploads_are_parsed_and_answers_read_whole(server: int, chunked: bool) -> None:
    headers = {"X-Chunked": "1"} if chunked else {}
    request = lean_http.multipart_post(
        "127.0.0.1", server, "/predict", "image", "t.png", PAYLOAD, headers
    )
    started = []
    result = asyncio.run(
        lean_http.post_loop(
            "127.0.0.1", server, request, 3, 0.3, on_start=lambda: started.append(1)
        )
    )
    assert started == [1]
    assert result.errors == 0
    assert len(result.latencies) > 3  # several answers on each kept-alive connection
    assert result.elapsed_s >= 0.3


def test_a_refused_request_is_an_error_not_an_answer(server: int) -> None:
    request = lean_http.multipart_post("127.0.0.1", server, "/elsewhere", "image", "t.png", PAYLOAD)
    result = asyncio.run(lean_http.post_loop("127.0.0.1", server, request, 2, 0.2, warm=0))
    assert result.latencies == []
    assert result.errors > 0
