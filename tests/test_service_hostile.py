"""Hostile input against a real ``bentoml serve``: every case is a 4xx (none a 5xx), the
service stays ready, peak RSS stays bounded; and a model that outputs NaN is never ready.

The corpus: decompression bombs (one Pillow refuses itself, one only our cap refuses),
oversize bodies with and without Content-Length, chunked bodies, truncated and zero-byte
files, wrong fields, JSON bodies, long and path-like file names, 16-bit and 3-channel
images (valid: 200), too many parts, a batch over the per-request pixel budget, bad DICOMs.
The test prints its figures (cases, 2xx/4xx/5xx counts, peak RSS of the server tree).

The bounds (docs/serving-bounds.md), with budgets scaled down so that tiny bodies reach
them: a file part over the per-file limit refused while it streams, a body over the largest
body refused from its Content-Length, a busy service answering 503 with Retry-After and our
message before reading a body (the memory budget held by slow uploads; a film analysis in
progress), four concurrent films (one analysed, the others 503, no traceback logged), and
/analyze's bounds checked from the header before decoding (resampled size, window count).
Raw sockets send these bodies, so an answer given before the body ends is seen as it comes.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from mammo_pipeline.common.processes import is_alive
from mammo_pipeline.config import Settings
from tests.formats import SECRET_PATIENT_ID, dicom_bytes
from tests.test_service import make_settings, register_model
from tests.test_serving_io import bomb_png, encode

pytestmark = pytest.mark.slow

API_KEY = "hostile-key-9"
MAX_UPLOAD = 256 * 1024
MAX_PIXELS = 1_000_000
MAX_BATCH = 4
RSS_BOUND = int(2.5 * 1024**3)
INFLIGHT = 768 * 1024  # largest body: under MAX_BATCH x MAX_UPLOAD
SLOW_BODY = INFLIGHT - 100 * 1024  # what each slow upload of the busy test declares
#: Memory budget: four slow uploads (2 bytes per body byte) leave 300 kB; a film fits alone.
MEMORY = 4 * 2 * SLOW_BODY + 300_000
RETRY_AFTER = 3
MAX_FILM_PIXELS = 8_000_000  # at 0.1 mm/px
MAX_WINDOWS = 400
#: The aim of docs/serving-bounds.md: concurrent hostile requests add at most this to rest.
ABOVE_REST_BOUND = 512 * 2**20


def _start(settings: Settings, root: Path):
    from mammo_pipeline.common.net import free_port
    from mammo_pipeline.serving import backend

    port = free_port()
    log = root / "server.log"
    pid, log = backend.start_backend(settings, None, port, log=log)
    return pid, f"http://127.0.0.1:{port}", log


class RssSampler:
    """Peak RSS (bytes) of a process and its children, sampled every 50 ms in a thread."""

    def __init__(self, pid: int) -> None:
        import psutil

        self.proc = psutil.Process(pid)
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> int:
        import psutil

        total = 0
        for p in [self.proc, *self.proc.children(recursive=True)]:
            try:
                total += p.memory_info().rss
            except psutil.Error:
                pass
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._sample())
            time.sleep(0.05)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._sample())


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    from mammo_pipeline.serving import backend

    root = tmp_path_factory.mktemp("hostile")
    settings = make_settings(
        root,
        api_key=API_KEY,
        max_upload_bytes=MAX_UPLOAD,
        max_image_pixels=MAX_PIXELS,
        serve_max_batch_size=MAX_BATCH,
        serve_inflight_bytes=INFLIGHT,
        serve_memory_budget=MEMORY,
        serve_busy_wait_s=1.0,
        serve_retry_after_s=RETRY_AFTER,
        analysis_max_pixels=MAX_FILM_PIXELS,
        analysis_max_windows=MAX_WINDOWS,
    )
    version = register_model(settings, seed=5)
    pid, url, log = _start(settings, root)
    try:
        backend.wait_ready(url, pid, 180, log)
        client = httpx.Client(base_url=url, headers={"X-API-Key": API_KEY}, timeout=60)
        port = int(url.rsplit(":", 1)[1])
        yield {"url": url, "client": client, "pid": pid, "log": log, "version": version,
               "port": port}  # fmt: skip
        client.close()
    finally:
        backend.stop_process(pid)


def _multipart(parts: list[tuple[str, str | None, bytes]], boundary: str = "xyzzy") -> bytes:
    out = []
    for name, filename, data in parts:
        disp = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out.append(f"--{boundary}\r\nContent-Disposition: {disp}\r\n\r\n".encode() + data)
        out.append(b"\r\n")
    out.append(f"--{boundary}--\r\n".encode())
    return b"".join(out)


def _corpus() -> list[tuple[str, str, dict[str, Any], int | tuple[int, int]]]:
    """(name, route, httpx kwargs, expected status or (low, high) range)."""
    rng = np.random.default_rng(1)
    png = encode(rng.integers(0, 256, (64, 64), dtype=np.uint8), "PNG")
    png16 = encode(rng.integers(0, 65536, (64, 64), dtype=np.uint16), "PNG")
    rgb = encode(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), "PNG")
    big_ok = encode(np.zeros((590, 590), np.uint8), "PNG")  # 348k px each, tiny file
    mp = "multipart/form-data; boundary=xyzzy"
    tile = (rng.integers(0, 4096, (64, 64))).astype(np.uint16)
    good_dicom = dicom_bytes(tile, bits_stored=12)

    def chunked(total: int, piece: int = 16 * 1024):
        head = b'--xyzzy\r\nContent-Disposition: form-data; name="image"; filename="a"\r\n\r\n'

        def gen():
            yield head
            sent = 0
            while sent < total:
                yield b"\0" * piece
                sent += piece
            yield b"\r\n--xyzzy--\r\n"

        return gen()

    def chunked_png():
        body = _multipart([("image", "a.png", png)])
        yield body[:50]
        yield body[50:]

    four_xx = (400, 499)
    cases: list[tuple[str, str, dict[str, Any], int | tuple[int, int]]] = [
        ("bomb png 50000^2 (Pillow's own guard)", "/predict",
         {"files": {"image": ("b.png", bomb_png())}}, 413),
        ("bomb png 1500^2 (our cap only)", "/predict",
         {"files": {"image": ("b.png", bomb_png(1500, 1000))}}, 413),
        ("oversize body with Content-Length", "/predict",
         {"files": {"image": ("a.npy", b"\x93NUMPY" + b"\0" * (MAX_UPLOAD + 70_000))}}, 413),
        ("oversize chunked body (no Content-Length)", "/predict",
         {"content": chunked(MAX_UPLOAD + 100_000), "headers": {"content-type": mp}}, 413),
        ("oversize chunked /analyze", "/analyze",
         {"content": chunked(MAX_UPLOAD + 100_000), "headers": {"content-type": mp}}, 413),
        ("small chunked body", "/predict",
         {"content": chunked_png(), "headers": {"content-type": mp}}, 200),
        ("truncated png", "/predict", {"files": {"image": ("a.png", png[:40])}}, 400),
        ("zero-byte file", "/predict", {"files": {"image": ("a.png", b"")}}, 400),
        ("zero-byte body", "/predict", {"content": b""}, four_xx),
        ("wrong field name", "/predict", {"files": {"picture": ("a.png", png)}}, 400),
        ("wrong field name /analyze", "/analyze", {"files": {"img": ("a.png", png)}}, 400),
        ("text field instead of file", "/predict", {"data": {"image": "http://x/y"}}, four_xx),
        ("json body", "/predict", {"json": {"image": "/etc/passwd"}}, 415),
        ("json body /analyze", "/analyze", {"json": {"image": "x"}}, 415),
        ("raw png body", "/predict",
         {"content": png, "headers": {"content-type": "image/png"}}, 415),
        ("multipart without boundary", "/predict",
         {"content": b"zz", "headers": {"content-type": "multipart/form-data"}}, 400),
        ("multipart without closing boundary", "/predict",
         {"content": _multipart([("image", "a", png)])[:-12], "headers": {"content-type": mp}},
         400),
        ("file name of 300 characters", "/predict",
         {"files": {"image": ("x" * 296 + ".png", png)}}, 200),
        ("file name of 1000 characters", "/analyze",
         {"files": {"image": ("y" * 1000, png)}}, (200, 499)),  # noise: scored or 422
        ("path-like file name ../../x", "/predict",
         {"files": {"image": ("../../x", png)}}, 200),
        ("absolute file name /etc/passwd", "/predict",
         {"files": {"image": ("/etc/passwd", png)}}, 200),
        ("file name with NUL and newline", "/predict",
         {"content": _multipart([("image", "a\0b\nc", png)]),
          "headers": {"content-type": mp}}, 200),
        ("16-bit png (valid)", "/predict", {"files": {"image": ("a.png", png16)}}, 200),
        ("3-channel png (valid)", "/predict", {"files": {"image": ("a.png", rgb)}}, 200),
        ("too many parts", "/predict",
         {"content": _multipart([("image", "a", png)] + [("x", None, b"1")] * 40),
          "headers": {"content-type": mp}}, four_xx),
        ("too many parts in a batch", "/predict_batch",
         {"files": [("images", ("a.png", png))] * (MAX_BATCH + 3)}, 413),
        ("two files for /predict", "/predict",
         {"files": [("image", ("a.png", png)), ("image", ("b.png", png))]}, 400),
        ("batch over the per-request pixel budget", "/predict_batch",
         {"files": [("images", ("a.png", big_ok))] * MAX_BATCH}, 413),
        ("unknown analyze field", "/analyze",
         {"files": {"image": ("a.png", png)}, "data": {"evil": "1"}}, 400),
        ("analyze bad spacing", "/analyze",
         {"files": {"image": ("a.png", png)}, "data": {"pixel_spacing_mm": "-1"}}, four_xx),
        ("analyze spacing not a number", "/analyze",
         {"files": {"image": ("a.png", png)}, "data": {"pixel_spacing_mm": "abc"}}, four_xx),
        ("dicom without pixel data", "/predict",
         {"files": {"image": ("a.dcm", dicom_bytes(None))}}, 422),
        ("dicom unsupported transfer syntax", "/predict",
         {"files": {"image": ("a.dcm", dicom_bytes(
             tile, transfer_syntax="1.2.826.0.1.3680043.9.9999.42",
             encapsulated_frames=[b"\x00\x01"]))}}, 415),
        ("dicom truncated", "/predict",
         {"files": {"image": ("a.dcm", good_dicom[: len(good_dicom) // 2])}}, four_xx),
        ("dicom magic, garbage after", "/predict",
         {"files": {"image": ("a", b"\0" * 128 + b"DICM" + b"\xff" * 64)}}, four_xx),
        (".dcm name without DICOM preamble", "/predict",
         {"files": {"image": ("a.dcm", png)}}, four_xx),
        ("12-bit dicom tile (valid)", "/predict",
         {"files": {"image": ("a.dcm", good_dicom)}}, 200),
        ("npy object array", "/predict",
         {"files": {"image": ("a.npy", b"\x93NUMPY\x01\x00" + b"\xff" * 50)}}, 400),
    ]  # fmt: skip
    return cases


def test_hostile_corpus_gets_4xx_never_5xx_and_bounded_memory(server: dict[str, Any]) -> None:
    client: httpx.Client = server["client"]
    results: list[tuple[str, int, str]] = []
    wrong: list[str] = []
    cases = _corpus()
    with RssSampler(server["pid"]) as rss:
        for name, route, kwargs, expected in cases:
            try:
                resp = client.post(route, **kwargs)
                status, text = resp.status_code, resp.text
            except httpx.HTTPError as exc:  # a server that drops the connection is wrong too
                status, text = 599, f"{type(exc).__name__}: {exc}"
            results.append((name, status, text))
            lo, hi = expected if isinstance(expected, tuple) else (expected, expected)
            if not lo <= status <= hi:
                wrong.append(f"{name}: HTTP {status} (expected {expected}) {text[:200]}")
            elif status >= 400:
                body = resp.json()
                if not isinstance(body, dict) or not body.get("error"):
                    wrong.append(f"{name}: error body is not {{'error': ...}}: {text[:200]}")
    counts = {k: sum(1 for _, s, _ in results if k * 100 <= s < k * 100 + 100) for k in (2, 4, 5)}
    print(
        f"\nhostile corpus: {len(cases)} cases, 2xx {counts[2]}, 4xx {counts[4]}, "
        f"5xx {counts[5]}; peak RSS of the server tree {rss.peak / 2**20:.0f} MiB "
        f"(bound {RSS_BOUND / 2**20:.0f} MiB; tiny model, SYNTHETIC/random inputs)"
    )
    for name, status, _ in results:
        print(f"  {status}  {name}")
    assert not wrong, "\n".join(wrong)
    assert counts[5] == 0
    assert rss.peak < RSS_BOUND
    assert httpx.get(f"{server['url']}/readyz").status_code == 200

    by_name = {name: text for name, _, text in results}
    # messages a person can act on
    assert "expected a file in multipart/form-data field 'image'" in by_name["wrong field name"]
    assert "expected a file" in by_name["json body"]
    for bomb in ("bomb png 50000^2 (Pillow's own guard)", "bomb png 1500^2 (our cap only)"):
        assert f"limit of {MAX_PIXELS} pixels" in by_name[bomb], by_name[bomb]
        assert "max_image_pixels" in by_name[bomb]
    assert "no pixel data" in by_name["dicom without pixel data"]
    assert "transfer syntax" in by_name["dicom unsupported transfer syntax"]
    assert "per-request budget" in by_name["batch over the per-request pixel budget"]
    assert SECRET_PATIENT_ID not in server["log"].read_text(errors="replace")


# --- bounds: streaming limits, budgets, busy answers, /analyze bounds ---------------------
BOUNDARY = "xyzzy"
MP = f"multipart/form-data; boundary={BOUNDARY}"


class RawUpload:
    """One POST over a raw socket: headers, then body pieces on demand; the server's answer
    is read whenever it comes (before the body ends, too)."""

    def __init__(self, port: int, route: str, length: int | None, timeout: float = 15.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.length = length
        self.sent = 0
        head = [f"POST {route} HTTP/1.1", "Host: 127.0.0.1", f"X-API-Key: {API_KEY}",
                f"Content-Type: {MP}"]  # fmt: skip
        head.append(
            f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked"
        )
        self.sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())

    def answered(self) -> bool:
        import select

        return bool(select.select([self.sock], [], [], 0)[0])

    def send(self, data: bytes) -> None:
        frame = data if self.length is not None else b"%x\r\n%b\r\n" % (len(data), data)
        self.sock.sendall(frame)
        self.sent += len(data)

    def send_until_answered(self, pieces: Any) -> None:
        try:
            for piece in pieces:
                if self.answered():
                    return
                self.send(piece)
        except OSError:
            return  # closed by the server while sending: its answer is there to read

    def answer(self) -> tuple[int, dict[str, str], dict[str, Any]]:
        """(status, headers, JSON body); status 0 when nothing came within the timeout."""
        import json

        data = b""
        try:
            while b"\r\n\r\n" not in data:
                got = self.sock.recv(65536)
                if not got:
                    break
                data += got
            head, _, body = data.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            headers = dict(ln.lower().split(": ", 1) for ln in lines[1:] if ": " in ln)
            need = int(headers.get("content-length", "0"))
            while len(body) < need:
                got = self.sock.recv(65536)
                if not got:
                    break
                body += got
            return int(lines[0].split()[1]), headers, json.loads(body or b"{}")
        except (OSError, ValueError, IndexError):
            return 0, {}, {}

    def close(self) -> None:
        self.sock.close()


def _file_part_head(field: str, filename: str = "a.npy") -> bytes:
    disp = f'form-data; name="{field}"; filename="{filename}"'
    return f"--{BOUNDARY}\r\nContent-Disposition: {disp}\r\n\r\n".encode()


def _assert_busy(status: int, headers: dict[str, str], body: dict[str, Any]) -> None:
    assert status == 503, (status, body)
    assert headers.get("retry-after") == str(RETRY_AFTER), headers
    assert "server busy" in body.get("error", ""), body
    assert "unexpected error" not in body["error"]


def test_a_file_part_over_its_limit_is_refused_while_it_streams(server: dict[str, Any]) -> None:
    """A chunked /predict_batch whose first file would be 64 MiB: 413 naming the per-file limit
    once that part passes it, long before the body's own limit (old code: buffered to the
    body limit, then a generic 'request body over the limit')."""
    up = RawUpload(server["port"], "/predict_batch", None)
    try:
        pieces = [_file_part_head("images")] + [b"\0" * 16384] * 4096
        up.send_until_answered(pieces)
        status, _, body = up.answer()
    finally:
        up.close()
    assert status == 413, (status, body)
    assert f"over the limit of {MAX_UPLOAD} bytes (MAMMO_MAX_UPLOAD_BYTES)" in body["error"]
    assert "field 'images' (part 1)" in body["error"]
    assert up.sent < 16 * 2**20  # cut off early (socket buffers hold a few MiB), not at 64 MiB


def test_a_body_over_the_inflight_budget_is_refused_from_its_length(
    server: dict[str, Any],
) -> None:
    """4 files of 200 KiB each are within the per-file and part limits, but the body is over
    the in-flight budget: 413 from the Content-Length alone, no byte of the body read."""
    length = MAX_BATCH * 200 * 1024 + 2000
    up = RawUpload(server["port"], "/predict_batch", length)
    try:
        status, _, body = up.answer()
    finally:
        up.close()
    assert status == 413, (status, body)
    assert "MAMMO_SERVE_INFLIGHT_BYTES" in body["error"] and str(INFLIGHT) in body["error"]


def test_no_room_for_bytes_is_a_503_with_retry_after_before_buffering(
    server: dict[str, Any],
) -> None:
    """Four slow uploads hold most of the memory budget; another body that does not fit gets
    503 with Retry-After and our message within the busy wait, without its body being read;
    a chunked one as soon as its chunks stop fitting. Once the slow ones end, room is back."""
    logged = len(server["log"].read_text(errors="replace"))
    slow = [RawUpload(server["port"], "/predict_batch", SLOW_BODY) for _ in range(4)]
    try:
        for up in slow:
            up.send(_file_part_head("images"))
        time.sleep(0.5)  # the guard has reserved the slow bodies' shares
        other = RawUpload(server["port"], "/predict", 200 * 1024)  # headers only
        try:
            _assert_busy(*other.answer())
        finally:
            other.close()
        chunked = RawUpload(server["port"], "/predict", None)  # chunked: refused as it comes
        try:
            chunked.send_until_answered([_file_part_head("image")] + [b"\0" * 16384] * 15)
            _assert_busy(*chunked.answer())
        finally:
            chunked.close()
    finally:
        for up in slow:
            up.close()
    time.sleep(0.5)
    assert httpx.get(f"{server['url']}/readyz").status_code == 200
    png = encode(np.zeros((64, 64), np.uint8), "PNG")
    again = server["client"].post("/predict", files={"image": ("a.png", png)})
    assert again.status_code == 200, again.text  # the slow uploads' shares were given back
    assert "Traceback" not in server["log"].read_text(errors="replace")[logged:]


def test_a_second_film_while_one_is_analysed_is_a_503_before_its_body(
    server: dict[str, Any],
) -> None:
    slow = RawUpload(server["port"], "/analyze", 300 * 1024)
    try:
        slow.send(_file_part_head("image", "film.png"))
        time.sleep(0.3)
        other = RawUpload(server["port"], "/analyze", 200 * 1024)  # headers only
        try:
            status, headers, body = other.answer()
        finally:
            other.close()
        _assert_busy(status, headers, body)
        assert "film analyses already in progress (limit 1)" in body["error"]
    finally:
        slow.close()


def test_an_upload_its_client_abandons_is_finished_at_once(server: dict[str, Any]) -> None:
    """A client that closes its connection mid-body: the request ends at once (logged with
    our 400), instead of waiting out BentoML's 60-s traffic timeout, whose middleware only
    lets a request finish once something was sent (old code: the request stayed open for
    60 s, and a SIGTERM waited for it, 20 s in ``stop_process``, then SIGKILL: a deploy's
    old backend was killed mid-request)."""
    logged = len(server["log"].read_text(errors="replace"))
    up = RawUpload(server["port"], "/analyze", 300 * 1024)
    up.send(_file_part_head("image", "film.png"))
    time.sleep(0.3)
    up.close()
    deadline = time.monotonic() + 30  # the old code answered after 60 s
    while time.monotonic() < deadline:
        new = server["log"].read_text(errors="replace")[logged:]
        if "path=/analyze,type=multipart/form-data; boundary=xyzzy,length=307200" in new:
            break
        time.sleep(0.2)
    line = [ln for ln in new.splitlines() if "length=307200" in ln]
    assert line and "(status=400," in line[0], new[-2000:]
    assert "Traceback" not in new


def _film_png(height: int, width: int, seed: int) -> bytes:
    from mammo_pipeline.data.synthetic_film import make_film

    return encode(make_film(height, width, lesion="mass", seed=seed).pixels, "PNG")


def test_four_concurrent_films_one_analysed_the_others_busy(server: dict[str, Any]) -> None:
    """Four films at once: each answer is 200 or our 503 (Retry-After, 'server busy'), never
    BentoML's 'An unexpected error', nothing logged as a traceback; memory stays within the
    bound above rest."""
    film = _film_png(700, 500, seed=4)  # 0.35 megapixels, SYNTHETIC, under MAX_UPLOAD
    answers: list[httpx.Response] = []
    start = threading.Barrier(4)

    def one() -> None:
        with httpx.Client(base_url=server["url"], headers={"X-API-Key": API_KEY}) as c:
            start.wait()
            answers.append(c.post("/analyze", files={"image": ("f.png", film)}, timeout=60))

    rest = RssSampler(server["pid"])._sample()
    logged = len(server["log"].read_text(errors="replace"))
    with RssSampler(server["pid"]) as rss:
        threads = [threading.Thread(target=one) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    statuses = sorted(r.status_code for r in answers)
    print(f"\nfour concurrent films: {statuses}; peak {(rss.peak - rest) / 2**20:.0f} MiB above "
          f"rest {rest / 2**20:.0f} MiB (tiny model, SYNTHETIC films)")  # fmt: skip
    assert len(answers) == 4 and 200 in statuses, [(r.status_code, r.text[:200]) for r in answers]
    for r in answers:
        if r.status_code != 200:
            _assert_busy(r.status_code, dict(r.headers), r.json())
    text = server["log"].read_text(errors="replace")[logged:]
    assert "Traceback" not in text and "Exception on /analyze" not in text
    assert rss.peak - rest < ABOVE_REST_BOUND


def test_analyze_bounds_are_checked_from_the_header_before_decoding(
    server: dict[str, Any],
) -> None:
    """A 1 x 30000 PNG at 2.0 mm/px would be 20 x 600000 px at 0.1 mm/px (12 M px, over the
    8 M limit): 413 before resampling. A 900 x 900 film at 0.3 mm/px with stride_fraction
    0.05 would lay 26,244 windows: 422 naming the cap and the stride."""
    client: httpx.Client = server["client"]
    line = encode(np.full((1, 30000), 200, np.uint8), "PNG")
    resp = client.post("/analyze", files={"image": ("l.png", line)},
                       data={"pixel_spacing_mm": "2.0"})  # fmt: skip
    assert resp.status_code == 413, resp.text
    assert "MAMMO_ANALYSIS_MAX_PIXELS" in resp.json()["error"]
    assert f"over the limit of {MAX_FILM_PIXELS} px" in resp.json()["error"]
    film = encode(np.zeros((900, 900), np.uint8), "PNG")  # refused from its header alone
    resp = client.post("/analyze", files={"image": ("f.png", film)},
                       data={"pixel_spacing_mm": "0.3", "stride_fraction": "0.05"})  # fmt: skip
    assert resp.status_code == 422, resp.text
    error = resp.json()["error"]
    assert "stride_fraction 0.05 (15 px)" in error and "26244 windows" in error
    assert f"limit of {MAX_WINDOWS} windows per film (MAMMO_ANALYSIS_MAX_WINDOWS)" in error
    assert "stride_fraction 0.43 or more fits" in error


def test_the_service_logs_whether_auth_is_on(server: dict[str, Any]) -> None:
    assert "authentication ON" in server["log"].read_text(errors="replace")


# --- a model that outputs NaN ---------------------------------------------------------------
def _register_nan_model(settings: Settings) -> str:
    """A tiny model whose output bias is NaN (so every output is NaN), registered vetted."""
    import mlflow

    from mammo_pipeline.common.mlflow_access import configure_mlflow
    from tests.signed_versions import sign_as_gate
    from tests.test_service import model_requirements, tiny_model

    model = tiny_model(7)
    dense = model.layers[-1]
    kernel, bias = dense.get_weights()
    dense.set_weights([kernel, np.full_like(bias, np.nan)])
    assert np.isnan(model.predict(np.zeros((1, 32, 32, 1)), verbose=0)).all()
    configure_mlflow(settings)
    with mlflow.start_run():
        info = mlflow.keras.log_model(
            model,
            name="model",
            pip_requirements=model_requirements(),
            metadata={"decision_threshold": 0.5, "image_size": 32},
        )
    mv = mlflow.register_model(info.model_uri, settings.registered_model_name)
    client = mlflow.MlflowClient(
        settings.mlflow_tracking_uri, registry_uri=settings.mlflow_tracking_uri
    )
    name = settings.registered_model_name
    client.set_model_version_tag(name, mv.version, "decision_threshold", "0.5")
    client.set_model_version_tag(name, mv.version, "gate", "passed")
    sign_as_gate(settings, str(mv.version))  # vetted means signed, as the gate signs
    client.set_registered_model_alias(name, "champion", mv.version)
    return str(mv.version)


@pytest.fixture(scope="module")
def nan_registry(tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, str]:
    """A store whose champion is the NaN model, read (never written) by the tests below."""
    root = tmp_path_factory.mktemp("nan_model")
    settings = make_settings(root, auth="none")
    return settings, _register_nan_model(settings)


def test_a_nan_model_is_never_ready_and_fails_the_smoke_test(
    nan_registry: tuple[Settings, str], tmp_path: Path
) -> None:
    from mammo_pipeline.serving import backend
    from mammo_pipeline.serving.smoke import smoke_image, smoke_test
    from mammo_pipeline.serving.state import DeployError

    settings, version = nan_registry
    pid, url, log = _start(settings, tmp_path)
    try:
        deadline = time.monotonic() + 180
        while "self-check failed" not in log.read_text(errors="replace"):
            assert time.monotonic() < deadline, log.read_text(errors="replace")[-2000:]
            assert is_alive(pid), log.read_text(errors="replace")[-2000:]
            time.sleep(0.5)
        for _ in range(50):  # the HTTP server comes up just after the service's __init__
            try:
                if httpx.get(f"{url}/livez", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        text = log.read_text(errors="replace")
        assert "authentication OFF because MAMMO_AUTH=none was set" in text
        assert httpx.get(f"{url}/readyz").status_code == 503
        resp = httpx.post(f"{url}/predict", files={"image": ("s.png", smoke_image())})
        assert resp.status_code == 503, resp.text
        assert "self-check" in resp.json()["error"] and "nan" in resp.json()["error"].lower()
        assert httpx.get(f"{url}/model").status_code == 503
        metrics = httpx.get(f"{url}/metrics").text
        line = [ln for ln in metrics.splitlines() if ln.startswith("mammo_nonfinite_scores")]
        assert any('endpoint="self_check"' in ln and float(ln.split()[-1]) >= 1 for ln in line), (
            line
        )
        with pytest.raises(DeployError, match="model outputs NaN on the smoke image"):
            smoke_test(settings, url, version)
    finally:
        backend.stop_process(pid)


def test_smoke_test_names_nan_from_the_in_process_model(
    nan_registry: tuple[Settings, str],
) -> None:
    """A service that answers a number while the registry's model gives NaN in process:
    computed by the smoke test itself, or on the thread the deploy starts with green."""
    import json
    import socketserver
    from http.server import BaseHTTPRequestHandler

    from mammo_pipeline.serving.smoke import expected_in_background, smoke_test
    from mammo_pipeline.serving.state import DeployError

    settings, version = nan_registry

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's API
            self.rfile.read(int(self.headers["content-length"]))
            body = json.dumps({"probability": 0.4, "model_version": version}).encode()
            self.send_response(200)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    with socketserver.TCPServer(("127.0.0.1", 0), Handler) as httpd:
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{httpd.server_address[1]}"
        try:
            with pytest.raises(DeployError, match="model outputs NaN on the smoke image"):
                smoke_test(settings, url, version)
            expected = expected_in_background(settings, version)
            with pytest.raises(DeployError, match="in-process probability nan"):
                smoke_test(settings, url, version, expected)
            assert expected.done()
        finally:
            httpd.shutdown()
