"""The monitoring report against a real MLflow store and a real prediction log, through the
library and the ``mammo monitor`` command: unshifted SYNTHETIC traffic raises no alert,
shifted traffic does (and tags the version), feedback gives realised sensitivity with its
interval, the HTML and JSON are logged on the version's run; feedback from a CSV is
idempotent and bad values are one-line refusals."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mammo_pipeline.config import Settings
from mammo_pipeline.monitoring.feedback import make_feedback
from mammo_pipeline.monitoring.report import monitor_report
from mammo_pipeline.monitoring.store import open_store
from tests.monitoring_helpers import make_served_version, traffic, truth_of

pytestmark = pytest.mark.slow  # a real MLflow store, TensorFlow for the reference inputs
BIN = Path(sys.executable).parent
HOUR = 3600.0


@pytest.fixture
def world(tmp_path, monkeypatch):
    values = {
        "data_dir": str(tmp_path / "data"),
        "mlflow_tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "mlflow_artifact_location": str(tmp_path / "mlartifacts"),
        "monitor_window_hours": "1",
    }
    for k, v in values.items():
        monkeypatch.setenv(f"MAMMO_{k.upper()}", v)
    s = Settings()
    return s, make_served_version(s)


def _log(s: Settings, records) -> None:
    store = open_store(s)
    store.add(records)
    store.close()


def test_unshifted_traffic_raises_no_alert_and_logs_the_report(world):
    s, v = world
    now = time.time()
    _log(s, traffic(600, v, start=now - 3 * HOUR, span_s=3 * HOUR - 1))
    report = monitor_report(s, now - 3 * HOUR, until=now)
    assert not report.alerts, report.alert_reason
    assert [w.sufficient for w in report.windows] == [True, True, True]
    assert report.summary["reference_data"] == "SYNTHETIC data"
    assert "600 declared SYNTHETIC" in report.summary["caption"]
    from mammo_pipeline.common.mlflow_access import mlflow_client

    client = mlflow_client(s)
    run_id = report.summary["run_id"]
    logged = {a.path for a in client.list_artifacts(run_id, "monitoring")}
    assert {
        "monitoring/latest.html",
        "monitoring/latest.json",
        "monitoring/reference_inputs.json",
    } <= logged
    html = report.local_html.read_text()
    assert html.count("data:image/png;base64,") >= 4 and "SYNTHETIC" in html
    tags = client.get_model_version(s.registered_model_name, v).tags
    assert tags["monitoring"] == "ok"


def test_shifted_traffic_alerts_and_tags_the_version(world):
    s, v = world
    now = time.time()
    _log(s, traffic(300, v, start=now - 3 * HOUR, span_s=HOUR - 1))
    _log(s, traffic(400, v, start=now - 2 * HOUR, span_s=2 * HOUR - 1, seed=5, brightness=40))
    report = monitor_report(s, now - 3 * HOUR, until=now)
    assert [a.kind for a in report.alerts] == ["drift"]
    assert "input_mean" in report.alert_reason
    tags = (
        __import__("mammo_pipeline.common.mlflow_access", fromlist=["x"])
        .mlflow_client(s)
        .get_model_version(s.registered_model_name, v)
        .tags
    )
    assert tags["monitoring"] == "alert" and "input_mean" in tags["monitoring_reason"]
    assert "/" in tags["monitoring_window"]


def test_feedback_gives_realised_sensitivity_and_a_low_one_alerts(world):
    s, v = world
    now = time.time()
    recs = traffic(300, v, start=now - HOUR, span_s=HOUR - 1)
    _log(s, recs)
    store = open_store(s)
    truth = truth_of(recs)
    store.add_feedback(
        [
            make_feedback(r.request_id, "malignant" if t else "normal", "biopsy", "a")
            for r, t in zip(recs, truth, strict=True)
        ]
    )
    report = monitor_report(s, now - HOUR, until=now, log=False)
    sens = report.summary["performance"]["sensitivity"]
    positives = sum(truth)
    assert sens["n"] == positives and sens["low"] < sens["point"] < sens["high"]
    assert not report.alerts
    # a model that missed these lesions: every positive outcome said "negative"
    missed = traffic(200, v, start=now - HOUR, span_s=HOUR - 1, seed=11, score_shift=-6)
    store.add(missed)
    store.add_feedback([make_feedback(r.request_id, "benign", "follow-up", "b") for r in missed])
    store.close()
    report = monitor_report(s, now - HOUR, until=now, log=False)
    assert "sensitivity" in [a.kind for a in report.alerts], report.summary["performance"]


def _mammo(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "mammo"), *args], capture_output=True, text=True, timeout=180)


def test_cli_feedback_is_idempotent_and_refuses_bad_values(world, tmp_path):
    s, v = world
    recs = traffic(3, v, start=time.time() - 60, span_s=30)
    _log(s, recs)
    good = tmp_path / "fb.csv"
    good.write_text(
        "request_id,outcome,source\n"
        f"{recs[0].request_id},malignant,biopsy\n{recs[1].request_id},normal,reader\n"
    )
    r = _mammo("monitor", "feedback", str(good))
    assert r.returncode == 0 and "2 outcome(s) recorded, 0 already" in r.stdout, r.stderr
    r = _mammo("monitor", "feedback", str(good))
    assert r.returncode == 0 and "0 outcome(s) recorded, 2 already" in r.stdout, r.stderr
    cases = {
        "request_id,outcome,source\nabc,malignant,biopsy\n": "unknown request_id 'abc'",
        f"request_id,outcome,source\n{recs[2].request_id},cancer,biopsy\n": "line 2: outcome",
        f"request_id,outcome,source\n{recs[0].request_id},benign,biopsy\n": "already recorded",
        "request_id,outcome\nx,benign\n": "missing column(s) source",
    }
    for body, message in cases.items():
        bad = tmp_path / "bad.csv"
        bad.write_text(body)
        r = _mammo("monitor", "feedback", str(bad))
        assert r.returncode == 1, r.stdout
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], r.stderr
    r = _mammo("monitor", "feedback", str(tmp_path / "missing.csv"))
    assert r.returncode == 1 and "no such file" in r.stderr


def test_cli_report_status_and_refusals(world):
    s, v = world
    now = time.time()
    _log(s, traffic(150, v, start=now - 1800, span_s=1700))
    r = _mammo("monitor", "status")
    assert r.returncode == 0 and f"v{v}: 150 records" in r.stdout and "no alert" in r.stdout, (
        r.stdout + r.stderr
    )
    r = _mammo("monitor", "report", "--since", "2h", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["records"] == 150
    r = _mammo("monitor", "report", "--since", "yesterday")
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "--since 'yesterday'" in r.stderr
    r = _mammo("monitor", "report", "--version", "99")
    assert r.returncode == 1 and r.stderr.startswith("error: no reference for"), r.stderr
