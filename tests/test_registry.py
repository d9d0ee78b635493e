"""Registry, gate, promotion and human review against a real MLflow store (SQLite in tmp).

One store per module (MLflow's migrations cost seconds per new database); every test works on
its own registered model name so that cases do not interfere.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from mammo_pipeline.common.mlflow_access import mlflow_client
from mammo_pipeline.config import Settings
from mammo_pipeline.errors import MammoError

mlflow = pytest.importorskip("mlflow")

from mammo_pipeline import registry  # noqa: E402
from mammo_pipeline.registry.report_html import render_html  # noqa: E402
from mammo_pipeline.registry.store import read_aliases  # noqa: E402

DATA_DIGEST = "d" * 64
TEST_DIGEST = "t" * 64
GOOD = {
    "test_precision": 0.45,
    "test_recall": 0.86,
    "test_f1": 0.59,
    "test_accuracy": 0.88,
    "test_specificity": 0.88,
    "test_roc_auc": 0.90,
    "test_pr_auc": 0.61,
    "decision_threshold": 0.42,
    "val_roc_auc": 0.91,
}
_names = itertools.count()


def tiny_png(width: int = 4, height: int = 3) -> bytes:
    """A valid grey PNG without matplotlib or Pillow."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    raw = b"".join(b"\x00" + bytes([128] * width) for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


class _Echo(mlflow.pyfunc.PythonModel):
    """A trivial model: the registry must not care about the flavour."""

    def predict(self, model_input: list[str], params: dict | None = None) -> list[str]:
        return model_input


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    root = tmp_path_factory.mktemp("mlflow")
    s = Settings(
        mlflow_tracking_uri=f"sqlite:///{root}/mlflow.db",
        mlflow_artifact_location=str(root / "art"),
        mlflow_experiment="mammo-test",
    )
    (root / "plots").mkdir()
    for name in ("confusion_matrix.png", "roc_pr_curves.png", "training_curves.png"):
        (root / "plots" / name).write_bytes(tiny_png())
    return s


def model_settings(store: Settings, **kw) -> Settings:
    """The shared store under a fresh registered model name."""
    return store.model_copy(update={"registered_model_name": f"m{next(_names)}", **kw})


def make_run(
    s: Settings,
    metrics: dict | None = None,
    *,
    test_digest: str | None = TEST_DIGEST,
    drop: tuple[str, ...] = (),
    log_model: bool = True,
) -> str:
    """A finished training run shaped like the train stage's (metrics, tags, plots, model)."""
    from mammo_pipeline.common.mlflow_access import configure_mlflow

    configure_mlflow(s)
    values = {k: v for k, v in {**GOOD, **(metrics or {})}.items() if k not in drop}
    tags = {
        "data_manifest_sha256": DATA_DIGEST,
        "git_commit": "abc123",
        "weights_source": "none",
        "synthetic": "true",
    }
    if test_digest:
        tags["test_manifest_sha256"] = test_digest
    plots = Path(s.mlflow_tracking_uri.removeprefix("sqlite:///")).parent / "plots"
    with mlflow.start_run() as run:
        mlflow.log_metrics(values)
        mlflow.set_tags(tags)
        for png in sorted(plots.iterdir()):
            mlflow.log_artifact(str(png))
        mlflow.log_dict({k: str(v) for k, v in values.items()}, "metrics.json")
        if log_model:
            mlflow.pyfunc.log_model(
                name="model",
                python_model=_Echo(),
                pip_requirements=["mlflow"],
                metadata={"decision_threshold": 0.42, "image_size": 64},
            )
    return run.info.run_id


def new_version(s: Settings, metrics: dict | None = None, **kw) -> str:
    return registry.register_run(s, make_run(s, metrics, **kw), airflow_run_id="af-1").version


def client(s: Settings):
    return mlflow_client(s)


def aliases(s: Settings) -> dict[str, str]:
    return read_aliases(client(s), s.registered_model_name)


def tags(s: Settings, version: str) -> dict[str, str]:
    return client(s).get_model_version(s.registered_model_name, version).tags


def champion_of(s: Settings, metrics: dict | None = None, **kw) -> str:
    v = new_version(s, metrics, **kw)
    decision, result = registry.gate_and_apply(s, v)
    assert decision.passed and result.champion == v, decision.reasons
    return v


# --------------------------------------------------------------------------------------------
# registration


def test_register_is_idempotent_and_uses_the_logged_model(store):
    s = model_settings(store)
    run_id = make_run(s)
    first = registry.register_run(s, run_id, airflow_run_id="af-7")
    again = registry.register_run(s, run_id)  # a retried Airflow task
    assert first.created and not again.created
    assert first.version == again.version == "1"
    assert first.source.startswith("models:/m-") and first.model_id
    found = client(s).search_model_versions(f"name = '{s.registered_model_name}'")
    assert len(found) == 1 and found[0].run_id == run_id
    t = tags(s, "1")
    assert t["gate"] == "pending"
    assert t["test_precision"] == "0.45" and t["decision_threshold"] == "0.42"
    assert t["data_manifest_sha256"] == DATA_DIGEST and t["git_commit"] == "abc123"
    assert t["airflow_run_id"] == "af-7"
    assert client(s).get_run(run_id).data.tags["registered_model_version"].endswith("/1")
    assert json.loads(json.dumps(first.to_dict()))["version"] == "1"


def test_register_refuses_runs_without_a_model(store):
    s = model_settings(store)
    with pytest.raises(MammoError, match="no logged model named 'model'"):
        registry.register_run(s, make_run(s, log_model=False))
    with pytest.raises(MammoError, match="not found"):
        registry.register_run(s, "0" * 32)


# --------------------------------------------------------------------------------------------
# the gate-case table

CASES = [
    # id, candidate metrics, dropped metrics, candidate digest, champion (metrics, digest) or
    # None, expected pass, expected reason fragment
    ("pass_beats_champion", {"test_roc_auc": 0.93}, (), TEST_DIGEST, ({}, TEST_DIGEST), True, ""),
    (
        "precision_below",
        {"test_precision": 0.29},
        (),
        TEST_DIGEST,
        None,
        False,
        "test_precision = 0.2900 is below the threshold 0.3000",
    ),
    (
        "recall_below",
        {"test_recall": 0.79},
        (),
        TEST_DIGEST,
        None,
        False,
        "test_recall = 0.7900 is below the threshold 0.8000",
    ),
    (
        "exactly_at_threshold",
        {"test_precision": 0.30, "test_recall": 0.80},
        (),
        TEST_DIGEST,
        None,
        True,
        "",
    ),
    (
        "nan_metric",
        {"test_precision": float("nan")},
        (),
        TEST_DIGEST,
        None,
        False,
        "test_precision is NaN",
    ),
    ("missing_metric", {}, ("test_recall",), TEST_DIGEST, None, False, "test_recall is missing"),
    ("no_champion_yet", {}, (), TEST_DIGEST, None, True, ""),
    ("within_tolerance", {"test_roc_auc": 0.89}, (), TEST_DIGEST, ({}, TEST_DIGEST), True, ""),
    (
        "champion_better_beyond_tolerance",
        {"test_roc_auc": 0.85},
        (),
        TEST_DIGEST,
        ({}, TEST_DIGEST),
        False,
        "test_roc_auc = 0.8500 is worse than champion v1",
    ),
    (
        "champion_on_other_test_set",
        {"test_roc_auc": 0.99},
        (),
        TEST_DIGEST,
        ({}, "e" * 64),
        False,
        "different test set",
    ),
    (
        "champion_without_test_digest",
        {},
        (),
        TEST_DIGEST,
        ({}, None),
        False,
        "champion run has no test_manifest_sha256",
    ),
]


@pytest.mark.parametrize(
    ("cand", "drop", "digest", "champ", "passed", "reason"),
    [pytest.param(*c[1:], id=c[0]) for c in CASES],
)
def test_gate_case(store, cand, drop, digest, champ, passed, reason):
    s = model_settings(store)
    champ_v = champion_of(s, champ[0], test_digest=champ[1]) if champ else None
    v = new_version(s, cand, drop=drop, test_digest=digest)

    decision = registry.gate_version(s, v)
    assert decision.passed is passed, decision.reasons
    assert decision.champion_version == champ_v
    if reason:
        assert any(reason in r for r in decision.reasons), decision.reasons
    for check in decision.checks:  # every check carries what it compared
        assert check.op and check.name
    json.dumps(decision.to_dict(), allow_nan=False)

    result = registry.apply_decision(s, v, decision.to_dict())  # as it comes back from XCom
    a, t = aliases(s), tags(s, v)
    assert t["gate"] == ("passed" if passed else "failed")
    assert (reason in t["gate_reasons"]) if reason else t["gate_reasons"] == "all checks passed"
    assert t["data_manifest_sha256"] == DATA_DIGEST and t["git_commit"] == "abc123"
    assert t["airflow_run_id"] == "af-1" and t["decision_threshold"] == "0.42"
    assert [c["name"] for c in json.loads(t["gate_checks"])] == [c.name for c in decision.checks]
    for m in ("test_precision", "test_recall", "test_roc_auc"):
        expected = {**GOOD, **cand}[m]
        if m in drop:
            assert m not in t
        elif math.isnan(expected):
            assert math.isnan(float(t[m]))
        else:
            assert float(t[m]) == expected
    if passed:
        assert a.get("champion") == v and "challenger" not in a
        assert a.get("previous") == champ_v  # None when there was no champion
        assert result.aliases_set.get("champion") == v
    else:
        assert a.get("challenger") == v
        assert a.get("champion") == champ_v and "previous" not in a
    # The decision is visible on the run: report + JSON + run tag.
    run_id = decision.run_id
    files = {f.path for f in client(s).list_artifacts(run_id, "review")}
    assert {f"review/version-{v}.html", f"review/gate_decision-{v}.json"} <= files
    assert client(s).get_run(run_id).data.tags["gate"] == t["gate"]
    assert result.report_artifact == f"review/version-{v}.html"


def test_review_report_shows_decision_thresholds_champion_and_plots(store, tmp_path):
    s = model_settings(store)
    champion_of(s)
    v = new_version(s, {"test_recall": 0.5})
    registry.gate_and_apply(s, v)
    run_id = client(s).get_model_version(s.registered_model_name, v).run_id
    local = client(s).download_artifacts(run_id, f"review/version-{v}.html", str(tmp_path))
    page = Path(local).read_text()
    assert "gate: FAILED" in page and "SYNTHETIC DATA" in page
    assert "test_recall = 0.5000 is below the threshold 0.8000" in page
    assert "champion v1" in page and "&gt;= 0.8000" in page
    assert page.count("data:image/png;base64,") == 3
    assert "<td class='FAIL'>FAIL</td>" in page and "<td class='PASS'>PASS</td>" in page
    decision = json.loads(
        Path(
            client(s).download_artifacts(run_id, f"review/gate_decision-{v}.json", str(tmp_path))
        ).read_text()
    )
    assert decision["passed"] is False and decision["champion_version"] == "1"


# --------------------------------------------------------------------------------------------
# promotion guards


def test_forged_or_stale_pass_is_applied_as_fail(store):
    s = model_settings(store)
    champion_of(s)
    v = new_version(s, {"test_recall": 0.1})
    d = registry.gate_version(s, v).to_dict()
    forged = {**d, "passed": True, "reasons": []}
    r = registry.apply_decision(s, v, forged)
    assert r.verdict == "failed" and aliases(s)["champion"] == "1"
    assert "checks do not support it" in tags(s, v)["gate_reasons"]

    good = new_version(s)
    decision = registry.gate_version(s, good)
    champion_of(s, {"test_roc_auc": 0.95})  # v4 becomes champion meanwhile
    r = registry.apply_decision(s, good, decision)
    assert r.verdict == "failed" and "champion changed since the gate ran" in r.reasons[-1]
    assert aliases(s)["champion"] == "4" and aliases(s)["challenger"] == good
    with pytest.raises(MammoError, match="about version"):
        registry.apply_decision(s, "1", decision)


def test_require_approval_parks_a_passing_version_as_challenger(store):
    s = model_settings(store, require_approval=True)
    v = new_version(s)
    decision, result = registry.gate_and_apply(s, v)
    assert decision.passed and result.awaiting_approval
    assert aliases(s) == {"challenger": v}
    assert tags(s, v)["gate"] == "passed" and tags(s, v)["awaiting_approval"] == "true"
    registry.approve(s, v, "looked at the curves", who="carol")
    assert aliases(s) == {"champion": v}
    assert "awaiting_approval" not in tags(s, v)


def test_gate_of_unknown_version_cannot_run(store):
    s = model_settings(store)
    with pytest.raises(MammoError, match="has no version 9"):
        registry.gate_version(s, 9)


# --------------------------------------------------------------------------------------------
# human review


def test_approve_reject_rollback(store):
    s = model_settings(store)
    v1 = champion_of(s)
    v2 = new_version(s, {"test_recall": 0.7})
    assert not registry.gate_and_apply(s, v2)[0].passed
    assert aliases(s) == {"champion": v1, "challenger": v2}

    with pytest.raises(MammoError, match="needs a reason"):
        registry.approve(s, v2, "  ")
    r = registry.approve(s, v2, "recall fine on the 2025 audit set", who="alice")
    assert (r.champion_before, r.champion_after, r.previous_after) == (v1, v2, v1)
    assert aliases(s) == {"champion": v2, "previous": v1}
    t = tags(s, v2)
    assert t["gate"] == "manual" and t["gate_auto"] == "failed"
    assert t["review"] == "approved" and t["review_by"] == "alice"
    assert t["review_reason"] == "recall fine on the 2025 audit set" and t["review_at"]
    assert "below the threshold" in t["gate_reasons_auto"]
    assert not registry.approve(s, v2, "again", who="alice").changed

    with pytest.raises(MammoError, match="is the champion"):
        registry.reject(s, v2, "no")

    r = registry.rollback(s, "deploy smoke test failed", who="bob")
    assert (r.champion_before, r.champion_after, r.previous_after) == (v2, v1, None)
    assert aliases(s) == {"champion": v1}
    assert tags(s, v2)["review"] == "rolled_back" and tags(s, v2)["review_by"] == "bob"
    assert tags(s, v1)["reinstated_reason"] == "deploy smoke test failed"
    with pytest.raises(MammoError, match="no 'previous' version"):
        registry.rollback(s)

    r = registry.reject(s, v2, "too many false negatives", who="dora")
    assert tags(s, v2)["review"] == "rejected" and r.champion_after == v1
    d = registry.gate_version(s, v2, min_recall=0.5)  # would pass the thresholds now...
    assert not d.passed and "rejected by dora" in d.reasons[-1]  # ...but a person said no

    # Every manual action stays on record, and the report shows who, when, why.
    history = json.loads(tags(s, v2)["review_history"])
    assert [(h["action"], h["by"]) for h in history] == [
        ("approved", "alice"),
        ("rolled_back", "bob"),
        ("rejected", "dora"),
    ]
    ctx = registry.review_context(s, v2)
    assert ctx.tags["review_by"] == "dora" and ctx.decision is not None
    page = render_html(ctx)
    assert "review: REJECTED" in page and "too many false negatives" in page
    assert "recall fine on the 2025 audit set" in page and "Why the automatic gate failed" in page


def test_rollback_walks_back_the_champion_history(store):
    s = model_settings(store)
    v1 = champion_of(s)
    v2 = champion_of(s, {"test_roc_auc": 0.91})
    v3 = champion_of(s, {"test_roc_auc": 0.92})
    assert aliases(s) == {"champion": v3, "previous": v2}
    assert registry.rollback(s).champion_after == v2
    assert aliases(s) == {"champion": v2, "previous": v1}
    assert registry.rollback(s).champion_after == v1
    assert aliases(s) == {"champion": v1}


def test_rollback_without_champion(store):
    with pytest.raises(MammoError, match="no champion"):
        registry.rollback(model_settings(store))


def test_list_and_show(store):
    s = model_settings(store)
    v1 = champion_of(s)
    v2 = new_version(s, {"test_precision": 0.2})
    registry.gate_and_apply(s, v2)
    rows = registry.list_versions(s)
    assert [(r.version, r.aliases, r.gate) for r in rows] == [
        (v2, ["challenger"], "failed"),
        (v1, ["champion"], "passed"),
    ]
    assert rows[0].metrics["test_precision"] == 0.2
    ctx = registry.review_context(s, v2)
    assert ctx.champion_version == v1 and ctx.champion_metrics["test_precision"] == 0.45
    assert any(k.endswith("confusion_matrix.png") for k in ctx.links)
    assert f"review/version-{v2}.html" in ctx.links


# --------------------------------------------------------------------------------------------
# the command line


def _mammo(s: Settings, *args: str, reviewer: str = "erin") -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAMMO_")}
    env.update(
        MAMMO_MLFLOW_TRACKING_URI=s.mlflow_tracking_uri,
        MAMMO_MLFLOW_ARTIFACT_LOCATION=s.mlflow_artifact_location,
        MAMMO_REGISTERED_MODEL_NAME=s.registered_model_name,
        MAMMO_REVIEWER=reviewer,
    )
    return subprocess.run(
        [sys.executable, "-m", "mammo_pipeline.cli.main", "registry", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def _mammo_in_process(s: Settings, monkeypatch: pytest.MonkeyPatch, *args: str) -> str:
    """Cheaper than a subprocess (MLflow's import and SQLite start cost ~3 s per process)."""
    from typer.testing import CliRunner

    from mammo_pipeline.cli.main import app
    from mammo_pipeline.config import get_settings

    monkeypatch.setenv("MAMMO_MLFLOW_TRACKING_URI", s.mlflow_tracking_uri)
    monkeypatch.setenv("MAMMO_REGISTERED_MODEL_NAME", s.registered_model_name)
    get_settings.cache_clear()
    result = CliRunner().invoke(app, ["registry", *args])
    get_settings.cache_clear()
    assert result.exit_code == 0, (result.output, result.exception)
    return result.output


def test_cli_gate_list_approve_rollback(store, monkeypatch, capsys):
    s = model_settings(store)
    run_id = make_run(s)
    # A fresh process registers a LoggedModel (MLflow resolves models:/ via the global URI).
    out = _mammo(s, "register", "--run-id", run_id, "--airflow-run-id", "af-9")
    assert out.returncode == 0, out.stderr
    assert f"run {run_id} registered as {s.registered_model_name} version 1" in out.stdout
    again = _mammo_in_process(s, monkeypatch, "register", "--run-id", run_id, "--json")
    assert json.loads(again)["created"] is False and json.loads(again)["version"] == "1"
    v1 = "1"
    v2 = new_version(s, {"test_precision": 0.25})

    out = _mammo(s, "gate", "--version", v1)
    assert out.returncode == 0, out.stderr
    rows = {line.split()[1]: line.split() for line in out.stdout.splitlines()[3:5]}
    assert rows["min_precision"][:5] == ["PASS", "min_precision", "0.4500", ">=", "0.3000"]
    assert rows["min_recall"][:5] == ["PASS", "min_recall", "0.8600", ">=", "0.8000"]
    assert "verdict: PASSED" in out.stdout and "champion -> v1" in out.stdout

    out = _mammo(s, "gate", "--version", v2, "--strict")
    assert out.returncode == 2, out.stderr
    rows = {line.split()[1]: line.split() for line in out.stdout.splitlines()[3:9]}
    assert rows["min_precision"][:5] == ["FAIL", "min_precision", "0.2500", ">=", "0.3000"]
    assert rows["same_test_set"][0] == "PASS"
    assert rows["not_worse_than_champion:test_precision"][:5] == [
        "FAIL",
        "not_worse_than_champion:test_precision",
        "0.2500",
        ">=",
        "0.4300",
    ]
    assert "verdict: FAILED" in out.stdout and "challenger -> v2" in out.stdout
    assert "Traceback" not in out.stderr and "Downloading" not in out.stderr

    out = _mammo(s, "list")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[1].split()[:4] == ["version", "aliases", "gate", "review"]
    assert lines[3].split()[:3] == ["2", "challenger", "failed"]
    assert lines[4].split()[:3] == ["1", "champion", "passed"]

    out = _mammo(s, "approve", v2, "--reason", "precision ok for screening")
    assert out.returncode == 0, out.stderr
    assert "v2 is now the champion" in out.stdout and "by erin" in out.stdout

    shown = _mammo_in_process(s, monkeypatch, "show", v2)
    assert "gate: manual" in shown and "champion: none" in shown and "review: approved" in shown
    assert "confusion_matrix.png: file://" in shown

    out = _mammo(s, "rollback", "--reason", "smoke test", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["champion_after"] == "1"

    # Could not run -> exit 1 with a one-line error (main() in-process: a subprocess costs ~3 s).
    from mammo_pipeline.cli.main import main
    from mammo_pipeline.config import get_settings

    monkeypatch.setenv("MAMMO_MLFLOW_TRACKING_URI", s.mlflow_tracking_uri)
    monkeypatch.setenv("MAMMO_REGISTERED_MODEL_NAME", s.registered_model_name)
    monkeypatch.setattr(sys, "argv", ["mammo", "registry", "rollback"])
    get_settings.cache_clear()
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == 1
    err = capsys.readouterr().err
    assert err.splitlines()[-1].startswith("error: ") and "no 'previous' version" in err
    assert "Traceback" not in err
