"""A registry action that moves the champion changes what is served (issue #22, item 1).

Fast: :func:`follow_champion`'s decision on a state file (nothing live, another registry,
``--no-deploy``, a failed deploy). Slow, against real ``bentoml serve`` processes and a real
MLflow registry: approving a version awaiting approval deploys it; a rollback under a small
load on 127.0.0.1 switches ``/model`` without a failed request; ``--no-deploy`` leaves the
service untouched and prints the deploy command; ``mammo status`` prints the live version,
its health and the mismatch with the champion; with nothing live the command says so.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from mammo_pipeline.common.net import free_port
from mammo_pipeline.common.processes import is_alive
from mammo_pipeline.serving import deploy
from mammo_pipeline.serving.backend import stop_process
from mammo_pipeline.serving.state import read_state, registry_identity, state_path, write_state
from tests.test_service import make_settings, register_model


def _live_state(settings, version: str, **extra: Any) -> None:
    """A state file whose backend is this (alive) test process, serving ``version``."""
    backend = {"pid": os.getpid(), "port": 1, "version": version}
    write_state(settings, {"backend": backend, "proxy": {}, **extra})


def test_nothing_live_says_so_and_names_the_command(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    follow = deploy.follow_champion(settings, "2", "1")
    assert follow.ok and follow.action == "not_live" and follow.command == "mammo deploy"
    assert "no deployment is live" in follow.message and "`mammo deploy`" in follow.message
    assert not settings.serving_dir.exists()  # nothing created
    write_state(settings, {"backend": {"pid": 2**22 + 7, "version": "2"}})  # a dead process
    assert deploy.follow_champion(settings, "2", "1").action == "not_live"


def test_follow_decisions_on_a_live_state(tmp_path: Path, monkeypatch) -> None:
    settings = make_settings(tmp_path)
    calls: list[str] = []

    def fake_deploy(s, version):
        calls.append(str(version))
        return deploy.DeployResult(
            ok=False, version=str(version), message="smoke test: |diff| 0.3",
            alias_rolled_back_to="2",
        )  # fmt: skip

    monkeypatch.setattr(deploy, "deploy_version", fake_deploy)
    _live_state(settings, "2", registry=registry_identity(settings))
    skipped = deploy.follow_champion(settings, "2", "1", deploy=False)
    assert skipped.ok and skipped.action == "skipped" and not calls
    assert skipped.command == "mammo deploy --version 1" and "keeps serving v2" in skipped.message
    assert deploy.follow_champion(settings, "1", "2").action == "already_serving"
    unchanged = deploy.follow_champion(settings, "1", "1")  # a pin: the champion did not move
    assert unchanged.action == "unchanged" and "serves v2" in unchanged.message and not calls

    failed = deploy.follow_champion(settings, "2", "1")
    assert calls == ["1"] and not failed.ok and failed.action == "failed"
    assert "smoke test" in failed.message and "v2 keeps serving" in failed.message
    assert "moved back to v2" in failed.message

    other = make_settings(tmp_path / "other")
    _live_state(settings, "2", registry=registry_identity(other) | {"model": "someone-else"})
    assert deploy.follow_champion(settings, "2", "1").action == "other_registry"
    assert calls == ["1"]  # a deployment of another registry is never replaced


# --- real services --------------------------------------------------------------------------
def _cli(monkeypatch, settings, *args: str):
    """``mammo ARGS`` in this process (a subprocess costs ~3 s of imports)."""
    from typer.testing import CliRunner

    from mammo_pipeline.cli.main import app
    from mammo_pipeline.config import get_settings

    env = {
        "MAMMO_DATA_DIR": str(settings.data_dir),
        "MAMMO_MLFLOW_TRACKING_URI": settings.mlflow_tracking_uri,
        "MAMMO_MLFLOW_ARTIFACT_LOCATION": settings.mlflow_artifact_location,
        "MAMMO_SERVE_PORT": str(settings.serve_port),
        "MAMMO_SERVE_SIDE_PORT": "0",
        "MAMMO_SERVE_READY_TIMEOUT_S": str(settings.serve_ready_timeout_s),
        "MAMMO_AUTH": settings.auth,  # what the live service was started with (none here)
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    try:
        return CliRunner().invoke(app, list(args))
    finally:
        get_settings.cache_clear()


def _png() -> bytes:
    import io

    import numpy as np
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.full((32, 32), 120, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.slow
def test_approve_and_rollback_change_what_is_served(tmp_path: Path, monkeypatch) -> None:
    from mammo_pipeline.common.mlflow_access import mlflow_client

    port = free_port()
    settings = make_settings(tmp_path, serve_port=port, serve_ready_timeout_s=150)
    name = settings.registered_model_name
    client = mlflow_client(settings)
    url = f"http://127.0.0.1:{port}"
    pids: list[int] = []
    counts = {"ok": 0, "failed": 0}
    failures: list[str] = []
    stop = threading.Event()
    image = _png()

    def served() -> str:
        return httpx.get(f"{url}/model", timeout=10).json()["version"]

    def load() -> None:
        with httpx.Client(timeout=30) as http:
            while not stop.is_set():
                try:
                    r = http.post(f"{url}/predict", files={"image": ("x.png", image, "image/png")})
                    counts["ok" if r.status_code == 200 else "failed"] += 1
                    if r.status_code != 200:
                        failures.append(f"HTTP {r.status_code}: {r.text[:200]}")
                except httpx.HTTPError as exc:
                    counts["failed"] += 1
                    failures.append(f"{type(exc).__name__}: {exc}")

    workers = [threading.Thread(target=load, daemon=True) for _ in range(3)]
    try:
        v1 = register_model(settings, seed=1)
        first = deploy.deploy_version(settings)
        assert first.ok, first.to_dict()
        pids += [first.backend_pid, read_state(settings)["proxy"]["pid"]]

        # (c) a version that passed the gate and awaits approval: approving it deploys it
        v2 = register_model(settings, seed=2, aliases=("challenger",))
        for key, value in {
            "awaiting_approval": "true",
            "gate_champion_version": v1,
            "gate_baseline_version": "none",
        }.items():
            client.set_model_version_tag(name, v2, key, value)
        out = _cli(monkeypatch, settings, "registry", "approve", v2, "--reason", "ok for screening")
        assert out.exit_code == 0, (out.output, out.exception)
        assert f"v{v2} is now the champion" in out.output
        assert f"deployed v{v2} blue/green (was v{v1})" in out.output, out.output
        assert served() == v2 and not is_alive(first.backend_pid)
        pids.append(read_state(settings)["backend"]["pid"])

        # (a) rollback while live, under load: /model changes, no request fails
        for w in workers:
            w.start()
        time.sleep(1.0)
        started = time.monotonic()
        out = _cli(monkeypatch, settings, "registry", "rollback", "--reason", "v2 worse")
        switch_s = time.monotonic() - started
        assert out.exit_code == 0, (out.output, out.exception)
        assert f"champion v{v2} -> v{v1}" in out.output and f"deployed v{v1}" in out.output
        assert served() == v1
        pids.append(read_state(settings)["backend"]["pid"])
        time.sleep(1.0)
        stop.set()
        for w in workers:
            w.join(timeout=60)
        print(
            f"\nrollback v{v2} -> v{v1} through the CLI under load (3 threads): "
            f"{switch_s:.1f} s, {counts['ok']} requests ok, {counts['failed']} failed"
        )
        assert counts["ok"] > 10 and counts["failed"] == 0, failures[:5]

        # (d) mammo status: the live version read from the service, healthy, since when
        out = _cli(monkeypatch, settings, "status")
        assert out.exit_code == 0, (out.output, out.exception)
        assert f"champion:   v{v1} (gate passed" in out.output, out.output
        assert f"live:       v{v1} at {url} since " in out.output and "healthy" in out.output
        assert "WARNING" not in out.output

        # (b) --no-deploy: the registry moves, the service does not; the command is printed
        backend_pid = read_state(settings)["backend"]["pid"]
        out = _cli(
            monkeypatch,
            settings,
            "registry",
            "approve",
            v2,
            "--reason",
            "re-approve",
            "--no-deploy",
        )
        assert out.exit_code == 0, (out.output, out.exception)
        assert f"v{v2} is now the champion" in out.output
        assert f"mammo deploy --version {v2}" in out.output and f"serving v{v1}" in out.output
        assert served() == v1 and read_state(settings)["backend"]["pid"] == backend_pid
        out = _cli(monkeypatch, settings, "status")
        assert f"live:       v{v1}" in out.output and "WARNING" in out.output
        print(out.output)

        # nothing live here: one line naming the command
        deploy.stop_service(settings)
        out = _cli(monkeypatch, settings, "registry", "rollback", "--reason", "back to v1")
        assert out.exit_code == 0, (out.output, out.exception)
        assert "no deployment is live on this machine" in out.output
        assert "`mammo deploy`" in out.output and not state_path(settings).exists()
        out = _cli(monkeypatch, settings, "status")
        assert out.exit_code == 0 and "nothing answers" in out.output
    finally:
        stop.set()
        deploy.stop_service(settings)
        for pid in pids:
            stop_process(pid)
