"""A load generator that costs the server as little CPU as possible (issue #20).

On the 2-core benchmark machine the client shares the cores with the service it measures:
httpx re-encoding the same multipart upload for every request cost 1.4 ms of CPU per
request, CPU the model could not use. Here the whole HTTP/1.1 request (multipart body
included) is built once and written as bytes on kept-alive connections; a response is read
as far as its status line, headers and ``Content-Length`` body (or chunks). The server still
parses every multipart upload: only the client's own work is removed.

Used by ``benchmarks/serving.py``. Measured against the httpx client it replaced (runs of
the same day on a quiet machine, VGG16 random weights, 64 px, c=32): 0.1 against 1.4 ms of
client CPU per answer, and the service's rate unchanged.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field


def multipart_post(
    host: str, port: int, path: str, field_name: str, filename: str, payload: bytes,
    headers: dict[str, str] | None = None,
) -> bytes:  # fmt: skip
    """The bytes of one ``POST path`` with ``payload`` as the multipart file ``field_name``."""
    boundary = secrets.token_hex(16)
    body = (
        (
            f"--{boundary}\r\n"
            f'Content-Disposition: form-data; name="{field_name}"; filename="{filename}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + payload
        + f"\r\n--{boundary}--\r\n".encode()
    )
    head = {
        "Host": f"{host}:{port}",
        "Content-Type": f"multipart/form-data; boundary={boundary}",
        "Content-Length": str(len(body)),
        **(headers or {}),
    }
    lines = [f"POST {path} HTTP/1.1", *(f"{k}: {v}" for k, v in head.items()), "", ""]
    return "\r\n".join(lines).encode() + body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """Status code and body of one HTTP/1.1 response (Content-Length or chunked)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    fields = {}
    for line in lines[1:]:
        if ":" in line:
            name, _, value = line.partition(":")
            fields[name.strip().lower()] = value.strip()
    if "content-length" in fields:
        return status, await reader.readexactly(int(fields["content-length"]))
    if fields.get("transfer-encoding", "").lower() == "chunked":
        parts = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                return status, b"".join(parts)
            parts.append(chunk[:-2])
    raise ValueError(f"response without a length: {lines[0]}")


@dataclass
class LoadResult:
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    elapsed_s: float = 0.0


async def post_loop(
    host: str, port: int, request: bytes, concurrency: int, seconds: float, *, warm: int = 8,
    on_start: Callable[[], None] | None = None,
) -> LoadResult:  # fmt: skip
    """``concurrency`` kept-alive connections, each sending ``request`` again as soon as its
    answer is in, for ``seconds`` (after ``warm`` untimed requests on each connection, at
    most 8 connections warmed; ``on_start`` is called as the timed part begins). A 200 is an
    answer; anything else counts as an error."""
    result = LoadResult()
    conns = [await asyncio.open_connection(host, port) for _ in range(concurrency)]
    try:
        warmed = min(concurrency, 8)
        for reader, writer in conns[:warmed]:
            for _ in range(-(-warm // warmed)):  # warm requests spread over them, rounded up
                writer.write(request)
                await read_response(reader)
        end = time.perf_counter() + seconds

        async def worker(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while time.perf_counter() < end:
                t0 = time.perf_counter()
                writer.write(request)
                status, _ = await read_response(reader)
                if status == 200:
                    result.latencies.append(time.perf_counter() - t0)
                else:
                    result.errors += 1

        if on_start is not None:
            on_start()
        start = time.perf_counter()
        await asyncio.gather(*(worker(r, w) for r, w in conns))
        result.elapsed_s = time.perf_counter() - start
    finally:
        for _, writer in conns:
            writer.close()
    return result
