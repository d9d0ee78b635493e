"""Every refusal of the ``mammo`` command exits non-zero with one ``error:`` line (issue #19,
item 5), run in process through :func:`mammo_pipeline.cli.main.main` (what the console script
calls: its exit code and stderr are what a shell sees).

The refusals: serve and deploy (no key, an unvetted or unknown version), the registry's
review commands (approve, reject, rollback, pin, show, gate), data, validate, train and
predict. Nothing here starts a server: the functions that would (``serve_foreground``, the
deployer's ``start_backend``, ``serving-node``'s ``execvp``) are replaced by recorders, so a
refusal that comes too late is a failure, not a replaced test process.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest

from mammo_pipeline.config import Settings


def run_mammo(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, str, list[str]]:
    """``mammo ARGS`` in process: (exit code, stdout, non-empty stderr lines)."""
    from mammo_pipeline.cli.main import main
    from mammo_pipeline.config import get_settings

    monkeypatch.setattr(sys, "argv", ["mammo", *args])
    get_settings.cache_clear()
    capsys.readouterr()
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        get_settings.cache_clear()
    out = capsys.readouterr()
    return code, out.out, [ln for ln in out.err.splitlines() if ln.strip()]


def assert_refused(result: tuple[int, str, list[str]], *says: str) -> str:
    """Non-zero exit, one ``error:`` line on stderr containing every ``says``; the line."""
    code, out, err = result
    assert code != 0, (code, out, err)
    assert len(err) == 1 and err[0].startswith("error: "), err
    for part in says:
        assert part in err[0], (part, err[0])
    assert "Traceback" not in out
    return err[0]


@pytest.fixture(scope="module")
def registry_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One MLflow SQLite store for the module (its tables take seconds to create)."""
    from mammo_pipeline.common.mlflow_access import mlflow_client

    root = tmp_path_factory.mktemp("refusals")
    mlflow_client(Settings(mlflow_tracking_uri=f"sqlite:///{root}/mlflow.db")).search_experiments()
    return root


_MODELS = iter(range(1, 10_000))


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[Any]:
    """What would have started a server (``serve_foreground``, the deployer's
    ``start_backend``, ``serving-node``'s ``execvp``): recorded, never run."""
    from mammo_pipeline.serving import backend, deploy

    calls: list[Any] = []

    def record(*args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        return 4242, tmp_path / "never.log"

    monkeypatch.setattr(backend, "serve_foreground", record)
    monkeypatch.setattr(deploy, "start_backend", record)
    monkeypatch.setattr(os, "execvp", record)
    return calls


@pytest.fixture
def env(
    monkeypatch: pytest.MonkeyPatch, registry_root: Path, tmp_path: Path, started: list[Any]
) -> Settings:
    """A fresh registered model name in the shared store, data under ``tmp_path``, serving
    open (``MAMMO_AUTH=none``) unless a test says otherwise; nothing can start a server."""
    from mammo_pipeline.config import get_settings

    values = {
        "MAMMO_MLFLOW_TRACKING_URI": f"sqlite:///{registry_root}/mlflow.db",
        "MAMMO_MLFLOW_ARTIFACT_LOCATION": str(registry_root / "mlartifacts"),
        "MAMMO_DATA_DIR": str(tmp_path / "data"),
        "MAMMO_REGISTERED_MODEL_NAME": f"refusal-model-{next(_MODELS)}",
        "MAMMO_AUTH": "none",
    }
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    return get_settings()


def version(settings: Settings, tags: dict[str, str], alias: str | None = None) -> str:
    """A registered version (a real, empty MLflow run) with ``tags`` and ``alias``."""
    from tests.test_policy_params import _version

    return _version(settings, tags, alias)


# --- serve and deploy ---------------------------------------------------------------------
def test_serve_refuses_an_unvetted_version_with_a_non_zero_exit(env, started, monkeypatch, capsys):
    """The known fault: `mammo serve` printed 'serving ...' and handed an unvetted version to
    BentoML, whose service refused it and exited 0."""
    v = version(env, {"gate": "failed", "gate_reasons": "recall 0.41 < 0.80"})
    line = assert_refused(
        run_mammo(monkeypatch, capsys, "serve", "--version", v), f"v{v} is not vetted"
    )
    assert "refusing to serve" in line and not started
    rejected = version(env, {"gate": "passed", "review": "rejected", "review_by": "dora"})
    monkeypatch.setenv("MAMMO_SERVE_VERSION", rejected)
    assert_refused(run_mammo(monkeypatch, capsys, "serve"), "rejected by dora")
    assert not started


def test_serve_and_deploy_refuse_an_unknown_version(env, started, monkeypatch, capsys):
    for command in ("serve", "deploy"):
        assert_refused(run_mammo(monkeypatch, capsys, command, "--version", "99"), "no version 99")
    assert not started


def test_deploy_refuses_an_unvetted_version(env, started, monkeypatch, capsys):
    v = version(env, {"gate": "pending"})
    assert_refused(run_mammo(monkeypatch, capsys, "deploy", "--version", v), "not vetted")
    assert not started


@pytest.mark.parametrize("command", [["serve"], ["deploy"], ["serving-node"]])
def test_serving_commands_refuse_without_a_key(env, started, monkeypatch, capsys, command):
    monkeypatch.delenv("MAMMO_AUTH")  # the default: key, and none is set
    version(env, {"gate": "passed"}, alias="champion")
    line = assert_refused(
        run_mammo(monkeypatch, capsys, *command), "MAMMO_API_KEY=", "MAMMO_AUTH=none"
    )
    from mammo_pipeline.common.auth import NO_KEY_REFUSAL

    assert line == f"error: {NO_KEY_REFUSAL}"  # the one message, defined once
    assert not started and not (env.data_dir / "serving").exists()


# --- the registry -------------------------------------------------------------------------
def test_approve_whose_re_gate_fails_exits_non_zero(env, monkeypatch, capsys):
    """An approval that came after the champion changed is re-gated; when that gate fails the
    version is not promoted: the command said so on stdout but exited 0."""
    version(env, {"gate": "passed"}, alias="champion")
    waiting = version(
        env,
        {"gate": "passed", "awaiting_approval": "true", "gate_champion_version": "none",
         "gate_baseline_version": "none"},
        alias="challenger",
    )  # fmt: skip
    result = run_mammo(monkeypatch, capsys, "registry", "approve", waiting, "--reason", "late")
    assert "re-gated, failed" in result[1]
    assert_refused(result, f"v{waiting} is not the champion", "re-run")


def test_registry_review_refusals(env, started, monkeypatch, capsys):
    def refused(*args: str, says: str) -> None:
        assert_refused(run_mammo(monkeypatch, capsys, "registry", *args), says)

    refused("rollback", says="no champion: nothing to roll back")
    champion = version(env, {"gate": "passed"}, alias="champion")
    refused("rollback", says="no 'previous' version")
    refused("reject", champion, "--reason", "x", says="cannot be rejected")
    refused("approve", champion, "--reason", " ", says="needs a reason")
    rejected = version(env, {"gate": "failed", "review": "rejected", "review_by": "dora"})
    refused("approve", rejected, "--reason", "x", says="--override-rejection")
    unvetted = version(env, {"gate": "failed"})
    refused("pin", unvetted, "--reason", "x", says=f"cannot pin v{unvetted}")
    for args in (["show", "99"], ["gate", "--version", "99"], ["approve", "99", "--reason", "x"]):
        refused(*args, says="no version 99")
    assert not started


def test_registry_commands_refuse_a_missing_store(started, monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("MAMMO_MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/none.db")
    for args in (["registry", "list"], ["registry", "rollback"], ["status"], ["serve"]):
        assert_refused(run_mammo(monkeypatch, capsys, *args), "no MLflow registry")
    assert not (tmp_path / "none.db").exists()


# --- data, validation, training, prediction -------------------------------------------------
def test_data_validate_train_predict_refusals(env, monkeypatch, capsys, tmp_path):
    def refused(*args: str, says: str) -> None:
        assert_refused(run_mammo(monkeypatch, capsys, *args), says)

    refused("validate", says="landing directory does not exist")
    refused("train", says="no such directory")
    refused("train", "--data", str(tmp_path / "missing"), says="no such file or directory")
    refused("data", "inspect", str(tmp_path / "missing"), says="no such file or directory")
    notes = tmp_path / "notes.txt"
    notes.write_text("not a record\n")
    refused("data", "inspect", str(notes), says="not a tfrecord file")
    refused("data", "synth", "--out", str(tmp_path / "s"), "--n", "2", "--files", "5",
            says="cannot exceed")  # fmt: skip
    refused("predict", str(tmp_path / "missing.png"), says="no such file")
    refused("predict", str(notes), "--url", "http://127.0.0.1:9", says="cannot reach")
