"""Dashboards (#21 item 5): the service's Prometheus metrics, the compose stack's Prometheus
configuration and the provisioned Grafana dashboard.

- ``mammo_pipeline/serving/prediction_metrics.py``: ``observe`` / ``on_drop`` / ``on_written``
  update the metrics, in one process (prometheus_client's default registry) and in BentoML's
  multiprocess mode (what a ``bentoml serve`` worker's ``/metrics`` collects); a missing or
  non-finite score counts as ``error``, never as a negative.
- ``docker/grafana/dashboards/mammo.json``, checked statically: every panel's data source is a
  provisioned one (``docker/grafana/datasources.yml``), every PromQL expression names only
  metrics of ``prediction_metrics`` or BentoML's own (names read from a running service's
  ``/metrics``, BentoML 1.4), every SQL names only tables and columns of the monitoring store;
  the SQL also runs on a real PostgreSQL store (skipped without one, except in CI).
- ``docker/prometheus/prometheus.yml``: ``promtool check config``, and a real ``prometheus``
  (Debian package) scraping a real ``bentoml serve`` service with that file's job (target and
  interval rewritten): the target is up, BentoML's /predict counter is above 0, and every
  dashboard query is accepted by Prometheus' own parser.
- The monitoring report's row for the dashboards (``mammo_monitor_reports``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml

from mammo_pipeline.monitoring.records import InputStats, PredictionRecord
from mammo_pipeline.monitoring.store import (
    _FEEDBACK_COLS,
    _SQL,
    FEEDBACK_TABLE,
    RECORDS_TABLE,
    REPORT_COLUMNS,
    REPORTS_TABLE,
    SQLiteStore,
)
from mammo_pipeline.serving import prediction_metrics as pm
from tests.test_monitoring_store import postgres_store  # noqa: F401 - a fresh database
from tests.test_service import images, post_image, server  # noqa: F401 - the service fixture

REPO = Path(__file__).resolve().parents[1]
DASHBOARD = REPO / "docker" / "grafana" / "dashboards" / "mammo.json"
DATASOURCES = REPO / "docker" / "grafana" / "datasources.yml"
PROVIDERS = REPO / "docker" / "grafana" / "dashboards.yml"
PROMETHEUS_CONF = REPO / "docker" / "prometheus" / "prometheus.yml"
PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
needs_prometheus = pytest.mark.skipif(
    PROMETHEUS is None or PROMTOOL is None,
    reason="no prometheus/promtool binary (apt-get install prometheus)",
)

#: BentoML 1.4's own series of a ``@bentoml.service`` (read from a running service's /metrics;
#: ``test_prometheus_scrapes_a_real_service`` checks they are really there).
BENTOML_METRICS = frozenset(
    {
        "bentoml_service_request_total",
        "bentoml_service_request_in_progress",
        "bentoml_service_last_request_timestamp_seconds",
        *(f"bentoml_service_request_duration_seconds{s}" for s in ("_bucket", "_sum", "_count")),
    }
)
PROMQL_WORDS = frozenset(
    "sum avg min max count rate irate increase histogram_quantile clamp_min clamp_max by "
    "without on ignoring group_left group_right and or unless bool offset".split()
)
SQL_WORDS = frozenset(
    "select as from where and or not is null order by group limit desc asc case when then "
    "else end join on count floor to_timestamp".split()
)
SQL_ALIASES = frozenset({"p", "f"})
STORE_COLUMNS = frozenset(_SQL.values()) | set(_FEEDBACK_COLS) | set(REPORT_COLUMNS)
STORE_TABLES = frozenset({RECORDS_TABLE, FEEDBACK_TABLE, REPORTS_TABLE})


# ------------------------------------------------------------------------ the metrics
def record(**kw: Any) -> PredictionRecord:
    values: dict[str, Any] = {
        "request_id": "r" * 32,
        "model_name": "mammo-vgg16",
        "model_version": "7",
        "endpoint": "predict",
        "status": "ok",
        "score": 0.83,
        "label": "positive",
        "threshold": 0.5,
        "time": time.time(),
        "inputs": InputStats(input_mean=120.0, input_std=40.0, saturated_fraction=0.0),
    }
    values.update(kw)
    return PredictionRecord(**values)


def sample(name: str, **labels: str) -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_observe_counts_labels_scores_and_inputs():
    from prometheus_client import REGISTRY, generate_latest

    v = "dash-1"
    before = {
        lab: sample("mammo_predictions_total", model_version=v, endpoint="predict", label=lab)
        for lab in ("positive", "negative", "error")
    }
    pm.observe(record(model_version=v))
    pm.observe(record(model_version=v, score=0.2, label="negative"))
    # a model that gave no valid score: an error, never a negative, and no score observed
    pm.observe(record(model_version=v, status="nonfinite", score=None, label=None))
    pm.observe(record(model_version=v, status="error", score=None, label=None))
    # an "ok" record that nevertheless carries a NaN is an error too (observe never raises)
    pm.observe(record(model_version=v, score=float("nan")))
    after = {
        lab: sample("mammo_predictions_total", model_version=v, endpoint="predict", label=lab)
        for lab in before
    }
    assert {k: after[k] - before[k] for k in before} == {"positive": 1, "negative": 1, "error": 3}
    labels = {"model_version": v, "endpoint": "predict"}
    assert sample("mammo_prediction_score_count", **labels) == 2
    assert sample("mammo_prediction_score_sum", **labels) == pytest.approx(1.03)
    assert sample("mammo_prediction_score_bucket", **labels, le="0.25") == 1
    assert sample("mammo_prediction_score_bucket", **labels, le="0.85") == 2
    assert sample("mammo_input_mean_count", model_version=v) == 5
    assert sample("mammo_input_mean_bucket", model_version=v, le="120.0") == 5
    assert sample("mammo_input_std_sum", model_version=v) == pytest.approx(200.0)
    assert sample("mammo_input_saturated_fraction_bucket", model_version=v, le="0.0") == 5
    # unknown input statistics are simply not observed
    pm.observe(record(model_version=v, inputs=InputStats()))
    assert sample("mammo_input_mean_count", model_version=v) == 5
    text = generate_latest(REGISTRY).decode()
    exported = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line[:1] != "#"}
    assert pm.METRIC_NAMES <= exported, pm.METRIC_NAMES - exported


def test_logger_callbacks_count_drops_and_writes(tmp_path: Path):
    from mammo_pipeline.monitoring.writer import PredictionLogger

    written0 = sample("mammo_prediction_log_written_total")
    dropped0 = sample("mammo_prediction_log_dropped_total", reason="invalid")
    log = PredictionLogger(
        lambda: SQLiteStore(tmp_path / "p.sqlite"), on_drop=pm.on_drop, on_written=pm.on_written
    )
    log.log(record(request_id="a" * 32))
    log.log(record(request_id="b" * 32, score=2.0))  # invalid: dropped, counted
    assert log.flush(30)
    log.close()
    assert sample("mammo_prediction_log_written_total") - written0 == 1
    assert sample("mammo_prediction_log_dropped_total", reason="invalid") - dropped0 == 1
    pm.on_drop("something-else", 2)  # an unknown reason does not make a new series name
    assert sample("mammo_prediction_log_dropped_total", reason="other") >= 2


def test_metrics_in_bentoml_multiprocess_mode(tmp_path: Path):
    """What a ``bentoml serve`` worker does: PROMETHEUS_MULTIPROC_DIR set before the service
    module (and so this one) is imported; /metrics collects the directory's files."""
    script = textwrap.dedent(
        """
        import sys
        from mammo_pipeline.serving import prediction_metrics as pm
        from tests.test_dashboards import record
        pm.observe(record())
        pm.observe(record(endpoint="analyze", status="nonfinite", score=None, label=None))
        pm.on_drop("queue_full", 3)
        pm.on_written(5)
        from prometheus_client import CollectorRegistry, generate_latest
        from prometheus_client.multiprocess import MultiProcessCollector
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        sys.stdout.write(generate_latest(registry).decode())
        """
    )
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True,
        timeout=120, check=True,
    ).stdout  # fmt: skip
    from prometheus_client.parser import text_string_to_metric_families

    values = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(out)
        for s in fam.samples
    }
    names = {name for name, _ in values}
    assert pm.METRIC_NAMES <= names, pm.METRIC_NAMES - names
    key = (("endpoint", "analyze"), ("label", "error"), ("model_version", "7"))
    assert values[("mammo_predictions_total", key)] == 1
    assert values[("mammo_prediction_log_dropped_total", (("reason", "queue_full"),))] == 3
    assert values[("mammo_prediction_log_written_total", ())] == 5


# ------------------------------------------------------------------------ the dashboard
@cache
def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


@cache
def datasources() -> dict[str, dict[str, Any]]:
    return {d["uid"]: d for d in yaml.safe_load(DATASOURCES.read_text())["datasources"]}


def panels() -> list[dict[str, Any]]:
    return [p for p in dashboard()["panels"] if p["type"] != "row"]


def targets(kind: str) -> list[tuple[str, str]]:
    """(panel title, query) of every target on a data source of type ``kind``."""
    out = []
    for p in panels():
        for t in p["targets"]:
            ds = datasources()[t.get("datasource", p["datasource"])["uid"]]
            if ds["type"] == kind:
                out.append((p["title"], t["expr"] if kind == "prometheus" else t["rawSql"]))
    return out


def promql_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (labels, strings, ranges, grouping and
    Grafana's $variables removed; functions and keywords are not names)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)
    text = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", " ", text)
    words = set(re.findall(r"(?<![\w.$])[A-Za-z_:][\w:]*", text))
    return words - PROMQL_WORDS


def sql_names(sql: str) -> tuple[set[str], set[str]]:
    """(tables, other identifiers) of a panel's SQL: strings, quoted aliases and Grafana's
    macro names removed, SQL keywords and functions dropped."""
    text = re.sub(r"'[^']*'|\"[^\"]*\"|\$__\w+", " ", sql)
    tables = set(re.findall(r"\b(?:from|join)\s+(\w+)", text, re.I))
    words = {w.lower() for w in re.findall(r"\b[A-Za-z_]\w*\b", text)}
    return tables, words - SQL_WORDS - SQL_ALIASES - {t.lower() for t in tables}


def test_dashboard_is_a_grafana_dashboard_on_the_provisioned_sources():
    d = dashboard()
    assert d["uid"] and d["title"] and isinstance(d["schemaVersion"], int)
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for p in d["panels"]:
        g = p["gridPos"]
        assert all(isinstance(g[k], int) for k in "xywh") and g["x"] + g["w"] <= 24, p["title"]
    kinds = {p["type"] for p in panels()}
    assert kinds <= {"timeseries", "heatmap", "table", "stat"}, kinds
    for p in panels():
        assert p["datasource"]["uid"] in datasources(), p["title"]
        assert p["targets"], f"{p['title']}: no query"
        refs = [t["refId"] for t in p["targets"]]
        assert len(refs) == len(set(refs)), p["title"]
        for t in p["targets"]:
            ds = datasources()[t.get("datasource", p["datasource"])["uid"]]
            assert t.get("datasource", ds)["type"] == ds["type"], p["title"]
            if ds["type"] == "prometheus":
                assert t["expr"].strip(), p["title"]
            else:
                assert t["rawSql"].strip() and t["format"] in {"time_series", "table"}
    # what the issue asks for: scores by version, rate, latency, drift, alerts, log drops
    text = json.dumps(d)
    for needed in (
        "mammo_prediction_score_bucket",
        "mammo_predictions_total",
        "bentoml_service_request_duration_seconds_bucket",
        "score_psi",
        "alert_reason",
        "mammo_prediction_log_dropped_total",
        "mammo_input_mean_bucket",
    ):
        assert needed in text, needed


def test_provisioned_sources_and_provider():
    sources = datasources()
    assert {s["type"] for s in sources.values()} == {"prometheus", "grafana-postgresql-datasource"}
    prom = next(s for s in sources.values() if s["type"] == "prometheus")
    assert prom["url"] == "http://prometheus:9090"
    pg = next(s for s in sources.values() if s["type"] != "prometheus")
    # credentials come from the container's environment (Grafana's ${VAR}), never the file
    assert pg["user"].startswith("${") and pg["secureJsonData"]["password"].startswith("${")
    assert pg["jsonData"]["database"].startswith("${")
    (provider,) = yaml.safe_load(PROVIDERS.read_text())["providers"]
    assert provider["type"] == "file" and provider["options"]["path"]


def test_promql_names_only_known_metrics():
    known = pm.METRIC_NAMES | BENTOML_METRICS
    queries = targets("prometheus")
    assert len(queries) >= 8
    for title, expr in queries:
        names = promql_names(expr)
        assert names, f"{title}: no metric in {expr}"
        assert names <= known, f"{title}: unknown metrics {names - known}"
    # the checker sees a wrong name (guard against a checker that passes anything)
    assert promql_names('sum by (le) (rate(mammo_scores_bucket{x="y"}[5m]))') == {
        "mammo_scores_bucket"
    }


def test_sql_names_only_store_tables_and_columns():
    queries = targets("grafana-postgresql-datasource")
    assert len(queries) >= 5
    for title, sql in queries:
        tables, words = sql_names(sql)
        assert tables and tables <= STORE_TABLES, f"{title}: tables {tables}"
        assert words <= STORE_COLUMNS, f"{title}: not store columns {words - STORE_COLUMNS}"
    assert sql_names("SELECT p.scroe FROM mammo_predictions p")[1] == {"scroe"}
    assert sql_names("SELECT ts FROM mammo_scores")[0] == {"mammo_scores"}


def grafana_sql(sql: str, since: float, until: float) -> str:
    """A panel's SQL with Grafana's macros expanded as Grafana does."""
    return re.sub(
        r"\$__unixEpochFilter\(([^)]+)\)",
        lambda m: f"{m.group(1)} >= {since:.0f} AND {m.group(1)} <= {until:.0f}",
        sql,
    )


@pytest.mark.distributed
def test_dashboard_sql_runs_on_a_postgresql_store(postgres_store):  # noqa: F811
    """Every SQL panel against a real PostgreSQL prediction log with records, feedback and
    report rows: each query runs and returns rows."""
    import psycopg2

    from mammo_pipeline.monitoring.feedback import make_feedback
    from tests.monitoring_helpers import traffic

    store = postgres_store
    now = time.time()
    recs = traffic(50, "3", start=now - 3600, span_s=3000)
    store.add(recs)
    store.add_feedback([make_feedback(r.request_id, "benign", "biopsy", "t") for r in recs[:5]])
    for i in range(3):
        store.add_report(report_row_example(now - 1800 + 600 * i, alert=i == 2))
    conn = psycopg2.connect(store.dsn)
    try:
        for title, sql in targets("grafana-postgresql-datasource"):
            with conn.cursor() as cur:
                cur.execute(grafana_sql(sql, now - 86400, now + 60))
                assert cur.fetchall(), f"{title}: no rows"
    finally:
        conn.close()


def report_row_example(ts: float, alert: bool) -> dict[str, Any]:
    return {
        "ts": ts, "model_name": "mammo-vgg16", "model_version": "3", "window_start": ts - 3600,
        "window_end": ts, "n_tiles": 200, "sufficient": 1, "drifts": int(alert),
        "score_psi": 0.05, "score_p_value": 0.4, "input_mean_psi": 0.3 if alert else 0.02,
        "input_mean_p_value": 1e-6 if alert else 0.5, "input_std_psi": 0.01,
        "input_std_p_value": 0.9, "positive_rate": 0.2, "expected_positive_rate": 0.18,
        "sensitivity": 0.8, "sensitivity_low": 0.6, "sensitivity_high": 0.9, "n_feedback": 20,
        "alert": int(alert), "alert_reason": "input_mean drift" if alert else None,
    }  # fmt: skip


def test_report_rows_round_trip_and_are_purged(tmp_path: Path):
    store = SQLiteStore(tmp_path / "p.sqlite")
    store.add_report(report_row_example(1000.0, alert=False))
    store.add_report(report_row_example(2000.0, alert=True))
    store.add_report(report_row_example(2000.0, alert=True))  # the same report again
    rows = store.reports(0)
    assert [r["alert"] for r in rows] == [0, 1]
    assert rows[1]["alert_reason"] == "input_mean drift" and rows[1]["input_mean_psi"] == 0.3
    with pytest.raises(ValueError, match="unknown report columns: psi"):
        store.add_report({"ts": 1.0, "psi": 2.0})
    store.purge(1500.0)
    assert [r["ts"] for r in store.reports(0)] == [2000.0]
    store.close()


# ------------------------------------------------------------------------ Prometheus
@needs_prometheus
def test_promtool_accepts_the_config_and_rejects_a_broken_one(tmp_path: Path):
    ok = subprocess.run(
        [PROMTOOL, "check", "config", str(PROMETHEUS_CONF)], capture_output=True, text=True
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    broken = tmp_path / "broken.yml"
    broken.write_text(PROMETHEUS_CONF.read_text().replace("scrape_configs:", "scrape_config:"))
    bad = subprocess.run([PROMTOOL, "check", "config", str(broken)], capture_output=True)
    assert bad.returncode != 0


def test_config_scrapes_the_compose_service():
    import tests.test_compose as tc

    conf = yaml.safe_load(PROMETHEUS_CONF.read_text())
    (job,) = conf["scrape_configs"]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    (static,) = job["static_configs"]
    (target,) = static["targets"]
    host, port = target.split(":")
    bento = tc.compose()["services"][host]
    assert port in [str(p) for p in bento["expose"]]
    assert "default" in bento["networks"]
    # /metrics is open on the service (no API key): Prometheus sends none
    open_paths = re.search(r"OPEN_PATHS = (.*)", (REPO / "serving" / "service.py").read_text())
    assert open_paths and '"/metrics"' in open_paths.group(1)


def local_config(tmp: Path, target: str) -> Path:
    """docker/prometheus/prometheus.yml with the compose target replaced by ``target`` and a
    1 s scrape interval."""
    conf = yaml.safe_load(PROMETHEUS_CONF.read_text())
    conf["global"].update(scrape_interval="1s", evaluation_interval="1s")
    (job,) = conf["scrape_configs"]
    job["scrape_interval"], job["scrape_timeout"] = "1s", "1s"
    job["static_configs"][0]["targets"] = [target]
    path = tmp / "prometheus.yml"
    path.write_text(yaml.safe_dump(conf))
    return path


def instant(api: str, query: str) -> list[dict[str, Any]]:
    r = httpx.get(f"{api}/api/v1/query", params={"query": query}, timeout=10)
    body = r.json()
    assert r.status_code == 200 and body["status"] == "success", (query, body)
    return body["data"]["result"]


@pytest.mark.slow
@needs_prometheus
def test_prometheus_scrapes_a_real_service(server, images, tmp_path: Path):  # noqa: F811
    from mammo_pipeline.common.net import free_port

    service = server["url"].removeprefix("http://")
    for _ in range(3):
        assert post_image(server["client"], images["png"]).status_code == 200
    metrics = httpx.get(f"{server['url']}/metrics").text
    missing = {m for m in BENTOML_METRICS if f"\n{m}" not in metrics}
    assert not missing, f"BentoML no longer exports {missing}"
    port = free_port()
    api = f"http://127.0.0.1:{port}"
    cmd = [
        PROMETHEUS, f"--config.file={local_config(tmp_path, service)}",
        f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}",
    ]  # fmt: skip
    log = (tmp_path / "prometheus.log").open("w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 90
        up = count = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                up = instant(api, 'up{job="mammo-service"}')
                count = instant(api, 'sum(bentoml_service_request_total{endpoint="/predict"})')
            except (httpx.HTTPError, ValueError, AssertionError):
                up = count = None
            if up and up[0]["value"][1] == "1" and count and float(count[0]["value"][1]) > 0:
                break
            time.sleep(0.5)
        logged = (tmp_path / "prometheus.log").read_text()[-2000:]
        assert proc.poll() is None, f"prometheus exited:\n{logged}"
        assert up and up[0]["value"][1] == "1", f"target not up: {up}\n{logged}"
        assert count and float(count[0]["value"][1]) >= 3, count
        # every dashboard query is valid PromQL for this Prometheus
        for _title, expr in targets("prometheus"):
            instant(api, expr.replace("$__rate_interval", "1m").replace("$__interval", "1m"))
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


# ------------------------------------------------------------------------ the report's row
@pytest.mark.slow
def test_a_logged_report_keeps_its_row_for_the_dashboards(tmp_path, monkeypatch):
    from mammo_pipeline.config import Settings
    from mammo_pipeline.monitoring.report import monitor_report
    from mammo_pipeline.monitoring.store import open_store
    from tests.monitoring_helpers import make_served_version, traffic

    values = {
        "data_dir": str(tmp_path / "data"),
        "mlflow_tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "mlflow_artifact_location": str(tmp_path / "mlartifacts"),
        "monitor_window_hours": "1",
    }
    for k, v in values.items():
        monkeypatch.setenv(f"MAMMO_{k.upper()}", v)
    s = Settings()
    version = make_served_version(s)
    now = time.time()
    store = open_store(s)
    store.add(traffic(300, version, start=now - 3 * 3600, span_s=3599))
    store.add(traffic(400, version, start=now - 7200, span_s=7199, seed=5, brightness=40))
    report = monitor_report(s, now - 3 * 3600, until=now)
    (row,) = store.reports(0)
    store.close()
    assert report.alerts and row["alert"] == 1 and "input_mean" in row["alert_reason"]
    assert row["model_version"] == version and row["ts"] == pytest.approx(now)
    assert row["window_end"] == pytest.approx(now) and row["sufficient"] == 1
    assert row["input_mean_psi"] > s.monitor_psi_threshold and row["drifts"] == 1
    assert 0 <= row["score_psi"] and 0 <= row["positive_rate"] <= 1
    assert row["sensitivity"] is None and row["n_feedback"] == 0
    assert np.isfinite(row["expected_positive_rate"])
