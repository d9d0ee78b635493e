"""Hostile mode of ``benchmarks/load.py``: peak RSS above rest and status counts per case.

One real ``bentoml serve`` of a tiny SYNTHETIC model (random weights: the numbers measure the
service's bounds, not the classifier) with the DEFAULT limits (20 MiB per file, 32 files per
batch, 40 M pixels, the budgets of ``docs/serving-bounds.md``). Cases, each sent by raw
sockets on loopback so that a server answering before the body ends is seen as it happens
(the client stops sending at the first byte of the answer):

- 4 concurrent maximal ``/predict`` bodies (Content-Length, a 20 MiB ``.npy`` each);
- 4 concurrent ``/predict_batch`` bodies declaring 630 MB (Content-Length);
- 4 concurrent chunked bodies of up to 2 GB to ``/predict_batch`` (no Content-Length);
- 4 concurrent maximal films to ``/analyze`` (a 38-megapixel 16-bit PNG of a SYNTHETIC
  breast, under 20 MiB);
- a 1 x 100000 PNG at ``pixel_spacing_mm=2.0`` and the 38-megapixel film at
  ``stride_fraction=0.05`` to ``/analyze``;
- all at once: one film, four 20 MiB bodies, two 630 MB and two chunked bodies.

Printed: RSS of the serving process tree at rest, its peak during each case and above rest,
RSS 5 s after the last case, and per case the statuses and the slowest answer (seconds).
Every loop is bounded; traffic goes only to 127.0.0.1.
"""

from __future__ import annotations

import io
import secrets
import select
import socket
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from benchmarks.rss import PeakRss, tree_rss

MIB = 1 << 20
BOUNDARY = "hostilebenchmark"


def raw_post(
    port: int,
    path: str,
    key: str,
    body: Iterator[bytes],
    length: int | None,
    timeout: float = 120.0,
) -> tuple[int, str, float]:
    """(status, start of the answer, seconds) of one POST whose body comes from ``body``;
    sending stops as soon as the server answers. Status 0: no answer (connection dropped)."""
    t0 = time.perf_counter()
    head = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", f"X-API-Key: {key}",
            f"Content-Type: multipart/form-data; boundary={BOUNDARY}"]  # fmt: skip
    head.append(f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked")
    answer = b""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
        try:
            for piece in body:
                if select.select([sock], [], [], 0)[0]:
                    break  # the server answered: stop sending
                data = piece if length is not None else b"%x\r\n%b\r\n" % (len(piece), piece)
                sock.sendall(data)
            else:
                if length is None:
                    sock.sendall(b"0\r\n\r\n")
        except OSError:
            pass  # the server closed the connection while we were sending: read its answer
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            head, sep, rest = answer.partition(b"\r\n\r\n")
            if sep and len(rest) >= _content_length(head):
                break
            try:
                got = sock.recv(65536)
            except OSError:
                break
            if not got:
                break
            answer += got
    seconds = time.perf_counter() - t0
    try:
        status = int(answer.split(b" ", 2)[1])
    except (IndexError, ValueError):
        status = 0
    return status, answer.split(b"\r\n\r\n", 1)[-1][:200].decode("latin-1"), seconds


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == b"content-length":
            return int(value.strip() or 0)
    return 0


def part(name: str, filename: str, data: bytes) -> bytes:
    disp = f'form-data; name="{name}"; filename="{filename}"'
    return f"--{BOUNDARY}\r\nContent-Disposition: {disp}\r\n\r\n".encode() + data + b"\r\n"


def text_part(name: str, value: str) -> bytes:
    return (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
    )


def closing() -> bytes:
    return f"--{BOUNDARY}--\r\n".encode()


def zeros(total: int, piece: int = MIB) -> Iterator[bytes]:
    sent = 0
    block = b"\0" * piece
    while sent < total:
        n = min(piece, total - sent)
        yield block[:n]
        sent += n


def declared_batch(total: int) -> tuple[Iterator[bytes], int]:
    """A /predict_batch body of ``total`` bytes: files of 19 MiB of zeros."""
    file_bytes = 19 * MIB
    n = max(1, total // (file_bytes + 200))
    heads = [part("images", f"f{i}.npy", b"")[:-2] for i in range(n)]
    length = sum(len(h) + file_bytes + 2 for h in heads) + len(closing())

    def gen() -> Iterator[bytes]:
        for h in heads:
            yield h
            yield from zeros(file_bytes)
            yield b"\r\n"
        yield closing()

    return gen(), length


def chunked_batch(total: int) -> Iterator[bytes]:
    """Up to ``total`` bytes of one file part in /predict_batch, no Content-Length."""
    yield part("images", "big.npy", b"")[:-2]
    yield from zeros(total)
    yield b"\r\n" + closing()


def npy_body(nbytes: int) -> bytes:
    import numpy as np

    side = int((nbytes - 128) ** 0.5)
    buf = io.BytesIO()
    np.save(buf, np.zeros((side, side), np.uint8))
    return part("image", "big.npy", buf.getvalue()) + closing()


def film_png(height: int, width: int) -> bytes:
    """A SYNTHETIC 16-bit film: a smooth half-ellipse 'breast' on black (compresses well)."""
    import numpy as np
    from PIL import Image

    yy, xx = np.ogrid[:height, :width]
    inside = ((yy - height / 2) / (height / 2)) ** 2 + (xx / (0.8 * width)) ** 2 <= 1.0
    film = (inside * (20000 + (yy % 512) * 8)).astype(np.uint16)
    buf = io.BytesIO()
    Image.fromarray(film).save(buf, format="PNG")
    return buf.getvalue()


def start_server(root: Path):
    from mammo_pipeline.common.net import free_port
    from mammo_pipeline.serving import backend
    from tests.test_service import make_settings, register_model

    key = secrets.token_urlsafe(24)
    settings = make_settings(root, api_key=key)  # every serving limit at its default
    register_model(settings, seed=3)  # tiny SYNTHETIC convnet, vetted and signed
    port = free_port()
    pid, log = backend.start_backend(settings, None, port, log=root / "server.log")
    backend.wait_ready(f"http://127.0.0.1:{port}", pid, 300, log)
    return settings, key, port, pid, log


def concurrently(calls: list) -> list[tuple[int, str, float]]:
    """Run each call in its own thread, all at once; their results in order."""
    out: list = [None] * len(calls)

    def one(i: int) -> None:
        out[i] = calls[i]()

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def run(quick: bool = False) -> dict:
    from mammo_pipeline.serving import backend

    results: dict = {"data": "SYNTHETIC tiny convnet (32 px, random weights), default limits"}
    with tempfile.TemporaryDirectory(prefix="mammo-hostile-") as tmp:
        root = Path(tmp)
        settings, key, port, pid, log = start_server(root)
        try:
            time.sleep(3)
            rest = tree_rss([pid])
            results["rest_mib"] = rest / MIB
            film = film_png(6300, 6000)  # 37.8 megapixels
            results["film_png_mib"] = len(film) / MIB
            npy = npy_body(20 * MIB - 4096)
            chunk_total = 200 * MIB if quick else 2000 * MIB

            def film_body(**fields: str) -> bytes:
                extra = b"".join(text_part(k, v) for k, v in fields.items())
                return part("image", "film.png", film) + extra + closing()

            def small_png_film() -> bytes:
                import numpy as np
                from PIL import Image

                buf = io.BytesIO()
                Image.fromarray(np.full((1, 100000), 200, np.uint8)).save(buf, format="PNG")
                return buf.getvalue()

            line = (
                part("image", "line.png", small_png_film())
                + text_part("pixel_spacing_mm", "2.0")
                + closing()
            )
            films = film_body()
            fine = film_body(stride_fraction="0.05")

            def npy_req():
                return "/predict", iter([npy]), len(npy)

            def declared_req():
                return ("/predict_batch", *declared_batch(630 * 10**6))

            def chunked_req():
                return "/predict_batch", chunked_batch(chunk_total), None

            def film_req():
                return "/analyze", iter([films]), len(films)

            cases = [
                ("4 concurrent maximal /predict bodies (20 MiB npy)", [npy_req] * 4),
                ("4 concurrent /predict_batch declaring 630 MB", [declared_req] * 4),
                (f"4 concurrent chunked {chunk_total // MIB} MiB /predict_batch",
                 [chunked_req] * 4),
                ("4 concurrent 38-megapixel films /analyze", [film_req] * 4),
                ("1x100000 PNG at 2.0 mm/px /analyze",
                 [lambda: ("/analyze", iter([line]), len(line))]),
                ("38-megapixel film, stride_fraction 0.05",
                 [lambda: ("/analyze", iter([fine]), len(fine))]),
                ("all at once: 1 film, 4 x 20 MiB, 2 x 630 MB, 2 chunked",
                 [film_req] + [npy_req] * 4 + [declared_req] * 2 + [chunked_req] * 2),
            ]  # fmt: skip
            rows = []
            for name, requests in cases:
                sampler = PeakRss(lambda: [pid], 0.05)
                sampler.start()

                def send(make) -> tuple[int, str, float]:
                    route, body, length = make()
                    return raw_post(port, route, key, body, length)

                answers = concurrently([lambda m=m: send(m) for m in requests])
                peak = sampler.stop()
                rows.append({
                    "case": name,
                    "statuses": dict(Counter(str(s) for s, _, _ in answers)),
                    "slowest_s": max(t for _, _, t in answers),
                    "peak_above_rest_mib": (peak - rest) / MIB,
                    "first_error": next((b for s, b, _ in answers if s >= 400), ""),
                })  # fmt: skip
                time.sleep(1)
            results["cases"] = rows
            time.sleep(5)
            results["after_mib"] = tree_rss([pid]) / MIB
            results["peak_above_rest_mib"] = max(r["peak_above_rest_mib"] for r in rows)
            text = log.read_text(errors="replace")
            results["tracebacks_in_log"] = text.count("Traceback")
            results["unexpected_error_answers"] = sum(
                "unexpected error" in r["first_error"] for r in rows
            )
        finally:
            backend.stop_process(pid)
    return results


def report(results: dict) -> None:
    print(f"\nhostile load ({results['data']}; loopback, one run):")
    print(f"RSS of the serving tree at rest: {results['rest_mib']:.0f} MiB")
    for r in results["cases"]:
        statuses = ", ".join(f"{k}: {v}" for k, v in sorted(r["statuses"].items()))
        print(f"  {r['case']:<52} {statuses:<20} slowest {r['slowest_s']:5.1f} s  "
              f"peak +{r['peak_above_rest_mib']:.0f} MiB")  # fmt: skip
        if r["first_error"]:
            print(f"      e.g. {r['first_error'][:150]}")
    print(
        f"peak above rest over all cases: {results['peak_above_rest_mib']:.0f} MiB (aim <= 512); "
        f"5 s after the last case: {results['after_mib']:.0f} MiB "
        f"(+{results['after_mib'] - results['rest_mib']:.0f} MiB over rest); tracebacks in the "
        f"service log: {results['tracebacks_in_log']}"
    )
