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
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from mammo_pipeline.common.auth import auth_headers
from mammo_pipeline.common.environment import settings_env
from mammo_pipeline.config import Settings

BIN = Path(sys.executable).parent
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


def _iv(d: dict[str, Any]) -> str:
    return f"{d['point']:.3f} [{d['low']:.3f}, {d['high']:.3f}] (n={d['n']})"


def monitor_report_cli(settings: Settings, since: str) -> dict[str, Any]:
    """``mammo monitor report --since SINCE --json`` (quiet: the command mutes TensorFlow's
    start-up lines), its JSON summary."""
    out = subprocess.run(
        [str(BIN / "mammo"), "monitor", "report", "--since", since, "--json"],
        capture_output=True, text=True, timeout=600, env=settings_env(settings),
    )  # fmt: skip
    if out.returncode != 0:
        raise RuntimeError(f"mammo monitor report failed: {(out.stderr or out.stdout)[-300:]}")
    return json.loads(out.stdout[out.stdout.index("{") :])


def run_monitoring_act(settings: Settings, say: Callable[[str], None] = print) -> bool:
    """Send the three windows, run the monitor, print what it found; True on an alert."""
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
    send_window(url, key, sample, batch)
    time.sleep(WINDOW_S)
    shifted = send_window(url, key, darker, batch)
    wait_until = time.time() + WINDOW_S
    fed = send_feedback(url, key, shifted, labels[:n] > 0)  # known weeks later in real life
    time.sleep(max(0.0, wait_until - time.time()))
    send_window(url, key, darker, batch)
    say(f"  {3 * n} predictions logged, {fed} outcomes sent to POST /feedback; "
        "mammo monitor report --since 10m:")  # fmt: skip
    summary = monitor_report_cli(settings, "10m")  # the windows end now: the last two shifted
    sens = (summary.get("performance") or {}).get("sensitivity")
    if sens and sens.get("n"):
        say(f"  realised sensitivity {_iv(sens)}")
    for alert in summary.get("alerts", []):
        say(f"  ALERT ({alert.get('kind')}): {alert.get('reason')}")
    if summary.get("alert"):
        say(
            "  (the version is tagged monitoring=alert; with MAMMO_RETRAIN_ON_ALERT=true the "
            "alert Asset triggers mammo_retrain, whose candidate still faces the full gate)"
        )
    else:
        judged = [w for w in summary.get("windows", []) if w.get("sufficient")]
        say(f"  no alert ({len(judged)} judged windows; "
            f"drifting: {sum(bool(w.get('drifts')) for w in judged)})")  # fmt: skip
    say(f"  monitoring report: {settings.reports / 'monitoring'} (newest report-v*.html), and "
        f"on run {summary.get('run_id')} under monitoring/")  # fmt: skip
    return bool(summary.get("alert"))
