"""The service's side of monitoring (#21 items 1, 2, 5) on a real `bentoml serve`: every
answer carries a request_id and one privacy-safe record per image reaches the prediction log;
POST /feedback records outcomes idempotently, with 4xx for unknown ids and bad values;
/metrics exports the prediction metrics; and a log that cannot be written never fails or
slows a prediction: the drops are counted."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.test_service import API_KEY, make_settings, post_image, register_model
from tests.test_serving_io import encode

pytestmark = pytest.mark.slow


def _start(root: Path, **extra: Any):
    from mammo_pipeline.common.net import free_port
    from mammo_pipeline.serving import backend

    settings = make_settings(root, api_key=API_KEY, **extra)
    register_model(settings, seed=5, threshold=0.5)
    port = free_port()
    pid, log = backend.start_backend(settings, None, port, log=root / "server.log")
    url = f"http://127.0.0.1:{port}"
    backend.wait_ready(url, pid, 180, log)
    client = httpx.Client(base_url=url, headers={"X-API-Key": API_KEY}, timeout=60)
    return settings, pid, client


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory):
    from mammo_pipeline.serving import backend

    settings, pid, client = _start(tmp_path_factory.mktemp("monitored"))
    try:
        yield {"settings": settings, "client": client}
    finally:
        client.close()
        backend.stop_process(pid)


def _tile(seed: int) -> bytes:
    return encode(np.random.default_rng(seed).integers(0, 256, (40, 30), np.uint8), "PNG")


def _records(settings, ids: list[str], timeout: float = 20.0) -> dict[str, Any]:
    from mammo_pipeline.monitoring.store import open_store

    deadline = time.time() + timeout
    while True:
        store = open_store(settings)
        rows = {r.request_id: r for r in store.records(since=0) if r.request_id in ids}
        if len(rows) == len(ids) or time.time() > deadline:
            return rows
        time.sleep(0.3)


def test_every_answer_has_a_request_id_and_a_record(logged) -> None:
    client, settings = logged["client"], logged["settings"]
    one = post_image(client, _tile(1), "patient_name_42.png")
    assert one.status_code == 200, one.text
    files = [("images", (f"{i}.png", _tile(10 + i))) for i in range(3)]
    many = client.post("/predict_batch", files=files)
    assert many.status_code == 200, many.text
    answers = [one.json(), *many.json()]
    ids = [a["request_id"] for a in answers]
    assert len(set(ids)) == 4 and all(len(i) == 32 for i in ids)
    rows = _records(settings, ids)
    assert set(rows) == set(ids)
    for answer in answers:
        rec = rows[answer["request_id"]]
        assert rec.status == "ok" and rec.score == pytest.approx(answer["probability"], abs=1e-9)
        assert rec.label == answer["label"] and rec.model_version == answer["model_version"]
        assert (rec.inputs.width, rec.inputs.height) == (30, 40)
        assert rec.inputs.input_mean is not None and rec.latency_ms is not None
    assert [rows[i].endpoint for i in ids] == ["predict", *["predict_batch"] * 3]
    # no client file name anywhere in the log
    log_dir = Path(settings.data_dir) / "monitoring"
    assert not any(b"patient_name_42" in p.read_bytes() for p in log_dir.rglob("*") if p.is_file())


def test_feedback_is_recorded_once_and_refuses_what_it_cannot_use(logged) -> None:
    client, settings = logged["client"], logged["settings"]
    rid = post_image(client, _tile(2)).json()["request_id"]
    body = {"request_id": rid, "outcome": "malignant", "source": "biopsy", "who": "dr-lee"}
    first = client.post("/feedback", json=body)
    assert first.status_code == 200, first.text
    assert first.json()["added"] == 1
    again = client.post("/feedback", json=body)
    assert again.status_code == 200 and again.json()["unchanged"] == 1
    other = client.post("/feedback", json={**body, "outcome": "normal"})
    assert other.status_code == 409 and "error" in other.json()
    unknown = client.post("/feedback", json={**body, "request_id": "0" * 32})
    assert unknown.status_code == 404, unknown.text
    bad = client.post("/feedback", json={**body, "outcome": "maybe"})
    assert bad.status_code == 422 and "outcome" in bad.json()["error"]
    anonymous = httpx.post(f"{client.base_url}/feedback", json=body, timeout=30)
    assert anonymous.status_code == 401
    from mammo_pipeline.monitoring.store import open_store

    (pair,) = [(r, f) for r, f in open_store(settings).labelled(since=0) if r.request_id == rid]
    fb = pair[1]
    assert fb.outcome == "malignant" and fb.source == "biopsy" and "dr-lee" in fb.who


def test_metrics_export_predictions_by_version_and_label(logged) -> None:
    client = logged["client"]
    assert post_image(client, _tile(3)).status_code == 200
    text = httpx.get(f"{client.base_url}/metrics", timeout=30).text
    lines = [ln for ln in text.splitlines() if ln.startswith("mammo_predictions_total{")]
    assert any('model_version="1"' in ln and 'endpoint="predict"' in ln for ln in lines), lines
    assert "mammo_prediction_score_bucket" in text
    assert "mammo_prediction_log_written_total" in text


def test_an_unwritable_log_never_fails_a_prediction(tmp_path: Path) -> None:
    from mammo_pipeline.serving import backend

    blocker = tmp_path / "not_a_directory"
    blocker.write_text("a file where the log's folder would be")
    settings, pid, client = _start(
        tmp_path, monitor_store_uri=f"sqlite:///{blocker}/predictions.sqlite"
    )
    try:
        codes = [post_image(client, _tile(20 + i)).status_code for i in range(5)]
        assert codes == [200] * 5
        deadline = time.time() + 20
        dropped = 0.0
        while time.time() < deadline and dropped < 5:
            text = httpx.get(f"{client.base_url}/metrics", timeout=30).text
            dropped = sum(
                float(ln.rsplit(" ", 1)[1])
                for ln in text.splitlines()
                if ln.startswith("mammo_prediction_log_dropped_total{")
                and 'reason="write_error"' in ln
            )
            time.sleep(0.5)
        assert dropped >= 5, text
    finally:
        client.close()
        backend.stop_process(pid)
