"""Monitoring end to end (#21 "Done when"): a real `bentoml serve` of a tiny model registered
with its evaluation's reference (held-out test split, per-tile predictions, manifest digest;
signed as the gate signs), real traffic through ``/predict_batch`` into the real prediction
log, outcomes through ``POST /feedback``, and the report computed in this process by
:func:`mammo_pipeline.monitoring.report.monitor_report` over explicit periods.

Traffic is sent in phases of one batch, each at the start of its own slot of ``P`` seconds
(``P`` from a warm-up batch's duration, a few seconds): the report's windows are the slots
(``monitor_window_hours = P / 3600``), so which window holds which phase is known, with no
race against the clock. Phases: three windows of tiles drawn like the held-out test split,
then two windows of the first two batches darkened (gain 0.6, as a new scanner or window
would give). All data SYNTHETIC; the model is random-init (``tiny_model``)."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.monitoring_helpers import register_monitored_model, scanner_tiles
from tests.test_service import API_KEY, make_settings
from tests.test_serving_io import encode

pytestmark = pytest.mark.slow

BATCH = 24  # tiles a phase sends: one /predict_batch
MIN_WINDOW = 20  # monitor_min_window_size: a phase's window is judged
UNSHIFTED = 3  # windows of in-distribution traffic
SHIFTED = 2  # then windows of darkened traffic (= monitor_consecutive_windows by default)
GAIN = 0.6  # the darker scanner
OUTCOME = {0: "normal", 1: "benign", 2: "benign", 3: "malignant", 4: "malignant"}


def _send(client: httpx.Client, tiles: np.ndarray) -> list[dict[str, Any]]:
    files = [("images", (f"{i}.png", encode(t, "PNG"))) for i, t in enumerate(tiles)]
    resp = client.post("/predict_batch", files=files)
    assert resp.status_code == 200, resp.text
    return resp.json()


def _wait_logged(settings, ids: list[str], since: float, timeout: float = 30.0) -> dict:
    """The store's records of ``ids`` once all are written (the log writes asynchronously)."""
    from mammo_pipeline.monitoring.store import open_store

    deadline = time.time() + timeout
    while True:
        store = open_store(settings)
        try:
            rows = {r.request_id: r for r in store.records(since=since) if r.request_id in ids}
        finally:
            store.close()
        if len(rows) == len(ids) or time.time() > deadline:
            return rows
        time.sleep(0.3)


@pytest.fixture(scope="module")
def monitored(tmp_path_factory: pytest.TempPathFactory):
    """The service, then every phase of traffic; the settings the reports use."""
    from mammo_pipeline.common.net import free_port
    from mammo_pipeline.serving import backend

    root = tmp_path_factory.mktemp("monitored_e2e")
    settings = make_settings(root, api_key=API_KEY)
    version = register_monitored_model(settings, seed=5)
    port = free_port()
    pid, log = backend.start_backend(settings, None, port, log=root / "server.log")
    url = f"http://127.0.0.1:{port}"
    client = httpx.Client(base_url=url, headers={"X-API-Key": API_KEY}, timeout=60)
    try:
        backend.wait_ready(url, pid, 180, log)
        warm, _ = scanner_tiles(BATCH, seed=99)
        began = time.time()
        _send(client, warm)  # before the period: warms the batcher, sizes the slots
        slot = max(2.0, 4.0 * (time.time() - began))
        tiles = [scanner_tiles(BATCH, seed=10 + i) for i in range(UNSHIFTED)]
        shifted = [scanner_tiles(BATCH, seed=10 + i, gain=GAIN) for i in range(SHIFTED)]
        anchor = math.ceil(time.time()) + 0.5
        phases = []
        for i, (batch, labels) in enumerate([*tiles, *shifted]):
            time.sleep(max(0.0, anchor + i * slot + 0.05 - time.time()))
            phases.append((_send(client, batch), labels))
        ids = [a["request_id"] for answers, _ in phases for a in answers]
        rows = _wait_logged(settings, ids, since=anchor)
        assert len(rows) == len(ids), f"{len(ids) - len(rows)} records never reached the log"
        for i, (answers, _) in enumerate(phases):
            times = [rows[a["request_id"]].time for a in answers]
            start, end = anchor + i * slot, anchor + (i + 1) * slot
            # a precondition, not a timing assertion: each phase must sit in its own window
            assert start <= min(times) and max(times) < end, (
                f"phase {i} logged at {min(times) - anchor:.2f}..{max(times) - anchor:.2f} s, "
                f"outside its slot {i * slot:.2f}..{(i + 1) * slot:.2f} s (machine overloaded?)"
            )
        report_settings = make_settings(
            root,
            api_key=API_KEY,
            monitor_window_hours=slot / 3600.0,
            monitor_min_window_size=MIN_WINDOW,
        )
        yield {
            "settings": report_settings,
            "client": client,
            "version": version,
            "anchor": anchor,
            "slot": slot,
            "phases": phases,
        }
    finally:
        client.close()
        backend.stop_process(pid)


def _version_tags(settings, version: str) -> dict[str, str]:
    from mammo_pipeline.common.mlflow_access import mlflow_client

    mv = mlflow_client(settings).get_model_version(settings.registered_model_name, version)
    return dict(mv.tags)


def _describe(report) -> str:
    return "\n".join(
        f"window {i}: n={w.n_tiles} judged={w.sufficient} drift={w.drift_reasons}"
        for i, w in enumerate(report.windows)
    )


def test_unshifted_traffic_raises_no_alert(monitored) -> None:
    from mammo_pipeline.monitoring.report import monitor_report

    s, anchor, slot = monitored["settings"], monitored["anchor"], monitored["slot"]
    report = monitor_report(s, since=anchor, until=anchor + UNSHIFTED * slot)
    assert not report.alerts, _describe(report)
    assert [w.n_tiles for w in report.windows] == [BATCH] * UNSHIFTED
    assert all(w.sufficient for w in report.windows)
    # the reference was usable in full: scores and the inputs derived from the test split
    assert all(w.score_drift is not None and len(w.input_drift) == 2 for w in report.windows)
    assert "derived from the held-out test split" in report.summary["reference"]["inputs"]
    assert report.summary["records"] == UNSHIFTED * BATCH
    tags = _version_tags(s, monitored["version"])
    assert tags["monitoring"] == "ok", tags


def test_shifted_traffic_in_consecutive_windows_raises_a_drift_alert(monitored) -> None:
    from mammo_pipeline.monitoring.policy import iso
    from mammo_pipeline.monitoring.report import monitor_report

    s, anchor, slot = monitored["settings"], monitored["anchor"], monitored["slot"]
    n = UNSHIFTED + SHIFTED
    report = monitor_report(s, since=anchor, until=anchor + n * slot)
    assert len(report.windows) == n and all(w.sufficient for w in report.windows)
    assert [w.drifts for w in report.windows[UNSHIFTED:]] == [True] * SHIFTED, _describe(report)
    (alert,) = [a for a in report.alerts if a.kind == "drift"]
    first, last = report.windows[UNSHIFTED], report.windows[-1]
    assert first.start == pytest.approx(anchor + UNSHIFTED * slot)
    assert last.end == pytest.approx(anchor + n * slot)
    assert alert.window == f"{iso(first.start)}/{iso(last.end)}"
    assert f"drift in {SHIFTED} consecutive window(s)" in alert.reason
    assert "input_mean" in alert.reason, alert.reason  # the darker scanner shows in the inputs
    tags = _version_tags(s, monitored["version"])
    assert tags["monitoring"] == "alert" and tags["monitoring_window"] == alert.window, tags
    assert "drift" in tags["monitoring_reason"]
    assert report.local_json is not None and Path(report.local_json).is_file()


def _wilson(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """The 95% Wilson score interval, written out here (not the library's)."""
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def test_feedback_gives_realised_sensitivity_with_its_interval(monitored) -> None:
    from mammo_pipeline.monitoring.report import monitor_report

    s, anchor, slot = monitored["settings"], monitored["anchor"], monitored["slot"]
    client = monitored["client"]
    positives = true_positives = negatives = 0
    for answers, labels in monitored["phases"][:UNSHIFTED]:  # outcomes of the unshifted tiles
        for answer, label in zip(answers, labels, strict=True):
            body = {"request_id": answer["request_id"], "outcome": OUTCOME[int(label)],
                    "source": "biopsy", "who": "e2e-test"}  # fmt: skip
            resp = client.post("/feedback", json=body)
            assert resp.status_code == 200 and resp.json()["added"] == 1, resp.text
            if label > 0:
                positives += 1
                true_positives += answer["label"] == "positive"
            else:
                negatives += 1
    assert positives >= 5 and negatives >= 5  # both rates are estimable
    n_windows = UNSHIFTED + SHIFTED
    report = monitor_report(s, since=anchor, until=anchor + n_windows * slot, log=False)
    assert report.summary["feedback"] == positives + negatives
    sens = report.summary["performance"]["sensitivity"]
    assert sens["n"] == positives
    assert sens["point"] == pytest.approx(true_positives / positives)
    low, high = _wilson(true_positives, positives)
    assert (sens["low"], sens["high"]) == (pytest.approx(low), pytest.approx(high))
    assert report.summary["performance"]["specificity"]["n"] == negatives
    # per window too: each unshifted window's feedback, none on the shifted ones
    assert [w.n_feedback for w in report.windows] == [BATCH] * UNSHIFTED + [0] * SHIFTED
    # the sensitivity alert follows the policy: upper bound below min_recall
    raised = any(a.kind == "sensitivity" for a in report.alerts)
    assert raised == (high < s.min_recall), report.alert_reason
