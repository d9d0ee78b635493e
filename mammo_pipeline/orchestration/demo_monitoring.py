"""The demo's monitoring act (#21 item 6): after the deploy, the live service receives a
window of in-distribution SYNTHETIC tiles (held-out test tiles), then two windows of the same
tiles darkened as a new scanner's different window would make them, with their known outcomes
sent to ``POST /feedback``; the monitor then compares those windows with the served version's
reference, and the demo prints the alert (or why there is none) and where the report is.

The demo's windows last :data:`WINDOW_S` seconds (``monitor_window_hours`` of the demo's
settings) so that its traffic spans several; a deployment's default is a day. The
``mammo_monitor`` DAG runs the same report every ``monitor_every_minutes``.
"""

from __future__ import annotations

import io
import json
import time
import urllib.request
import uuid
from collections.abc import Callable
from typing import Any

import numpy as np

from mammo_pipeline.common.auth import auth_headers
from mammo_pipeline.config import Settings

#: Seconds per monitoring window in the demo (also written to its settings).
WINDOW_S = 30.0
#: Tiles per window: above ``monitor_min_window_size`` (100), so each window is judged.
TILES_PER_WINDOW = 128
#: The shift: every pixel scaled by this factor (a darker acquisition window).
DARKEN = 0.55


def _post(url: str, key: str | None, path: str, body: bytes, content_type: str) -> Any:
    ask = urllib.request.Request(
        f"{url}{path}", data=body, method="POST",
        headers={**auth_headers(key), "Content-Type": content_type},
    )  # fmt: skip
    with urllib.request.urlopen(ask, timeout=120) as resp:
        return json.loads(resp.read())


def _npy(tile: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, tile)
    return buf.getvalue()


def predict_batch(url: str, key: str | None, tiles: np.ndarray) -> list[dict[str, Any]]:
    """One ``/predict_batch`` request with ``tiles`` as ``.npy`` parts; the answers."""
    boundary = uuid.uuid4().hex
    parts = []
    for i, tile in enumerate(tiles):
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="images"; '
            f'filename="tile{i}.npy"\r\nContent-Type: application/octet-stream\r\n\r\n'.encode()
            + _npy(tile)
            + b"\r\n"
        )
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return _post(url, key, "/predict_batch", body, f"multipart/form-data; boundary={boundary}")


def send_window(url: str, key: str | None, tiles: np.ndarray, batch: int) -> list[dict]:
    answers: list[dict] = []
    for start in range(0, len(tiles), batch):
        answers += predict_batch(url, key, tiles[start : start + batch])
    return answers


def send_feedback(url: str, key: str | None, answers: list[dict], labels: np.ndarray) -> int:
    """The known outcome of each answered tile (lesion -> benign or malignant, else normal)."""
    sent = 0
    for i, (answer, label) in enumerate(zip(answers, labels, strict=True)):
        outcome = ("malignant" if i % 2 else "benign") if label else "normal"
        body = {"request_id": answer["request_id"], "outcome": outcome,
                "source": "biopsy" if label else "follow-up", "who": "demo"}  # fmt: skip
        _post(url, key, "/feedback", json.dumps(body).encode(), "application/json")
        sent += 1
    return sent


def run_monitoring_act(settings: Settings, say: Callable[[str], None] = print) -> bool:
    """Send the three windows, run the monitor, print what it found; True on an alert."""
    from mammo_pipeline.monitoring.report import monitor_report

    url, key = f"http://127.0.0.1:{settings.serve_port}", settings.api_key
    data = next(iter(sorted(settings.test_split.glob("*_data.npy"))))
    tiles = np.load(data, mmap_mode="r")
    labels = np.load(str(data).replace("_data.npy", "_labels.npy"))
    n = min(TILES_PER_WINDOW, len(tiles))
    sample = np.asarray(tiles[:n])
    darker = (sample.astype(np.float32) * DARKEN).round().astype(sample.dtype)
    batch = settings.serve_max_batch_size
    say(
        f"\n• Monitoring: {n} in-distribution SYNTHETIC tiles, then two {WINDOW_S:.0f}-s "
        f"windows of the same tiles darkened x{DARKEN} (a new scanner's window), with outcomes"
    )
    started = time.time()
    send_window(url, key, sample, batch)
    time.sleep(WINDOW_S)
    shifted = send_window(url, key, darker, batch)
    time.sleep(WINDOW_S)
    shifted += send_window(url, key, darker, batch)
    until = time.time() + 1  # the windows end here: the last two hold the shifted traffic
    fed = send_feedback(url, key, shifted, np.concatenate([labels[:n], labels[:n]]) > 0)
    say(f"  {3 * n} predictions logged, {fed} outcomes sent to POST /feedback")
    report = monitor_report(settings, since=started - 1, until=until)
    perf = report.summary.get("performance", {}).get("sensitivity")
    if perf:
        say(f"  realised sensitivity over the period: {perf}")
    if report.alerts:
        say(f"  ALERT: {report.alert_reason}")
        say(
            "  (the version is tagged monitoring=alert; with MAMMO_RETRAIN_ON_ALERT=true the "
            "alert Asset triggers mammo_retrain, whose candidate still faces the full gate)"
        )
    else:
        judged = [w for w in report.summary.get("windows", []) if w.get("sufficient")]
        say(f"  no alert ({len(judged)} judged windows; "
            f"drifting: {sum(bool(w.get('drifts')) for w in judged)})")  # fmt: skip
    say(f"  monitoring report: {report.local_html}")
    return bool(report.alerts)
