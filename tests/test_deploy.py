"""Blue/green deploy against real ``bentoml serve`` processes and a real MLflow registry:
a first deploy, a switch to a new champion, a failing version that leaves the old one serving
with the alias rolled back, and ``stop_service``."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from mammo_pipeline.common.net import free_port
from mammo_pipeline.common.processes import is_alive
from mammo_pipeline.serving import deploy
from mammo_pipeline.serving.backend import stop_process
from mammo_pipeline.serving.state import read_state
from tests.test_service import make_settings, register_model


def live_version(port: int) -> str:
    return httpx.get(f"http://127.0.0.1:{port}/model", timeout=10).json()["version"]


def test_deploy_without_champion_fails_cleanly(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, serve_port=free_port())
    result = deploy.deploy_version(settings)
    assert not result.ok and "champion" in result.message
    json.dumps(result.to_dict())  # JSON-serialisable for Airflow's XCom
    assert read_state(settings) == {}
    with pytest.raises(deploy.DeployError):
        result.raise_for_status()


@pytest.mark.slow
def test_blue_green_switch_and_failed_deploy_keeps_old(tmp_path: Path) -> None:
    from mlflow import MlflowClient

    port = free_port()
    settings = make_settings(tmp_path, serve_port=port, serve_ready_timeout_s=150)
    name = settings.registered_model_name
    client = MlflowClient(settings.mlflow_tracking_uri, registry_uri=settings.mlflow_tracking_uri)
    pids: list[int] = []
    try:
        v1 = register_model(settings, seed=1)
        first = deploy.deploy_version(settings)
        assert first.ok, first.to_dict()
        pids.append(first.backend_pid)
        assert first.version == v1 and live_version(port) == v1
        assert first.smoke_abs_diff is not None and first.smoke_abs_diff <= 1e-5
        state = read_state(settings)
        assert state["backend"]["version"] == v1 and state["proxy"]["port"] == port
        pids.append(state["proxy"]["pid"])

        # a new champion: green starts beside blue, takes over the live port, blue stops
        v2 = register_model(settings, seed=2)
        client.set_registered_model_alias(name, "previous", v1)
        second = deploy.deploy_version(settings)
        assert second.ok, second.to_dict()
        pids.append(second.backend_pid)
        assert second.version == v2 and second.previous_version == v1
        assert live_version(port) == v2
        assert not is_alive(first.backend_pid)
        assert client.get_model_version(name, v2).tags["deploy"] == "live"

        # a broken version (wrong input shape) promoted to champion: deploy fails, v2 keeps
        # serving, the alias goes back to v2 and v3 is tagged
        v3 = register_model(settings, seed=3, channels=3)
        client.set_registered_model_alias(name, "previous", v2)
        third = deploy.deploy_version(settings)
        pids.append(third.backend_pid)
        assert not third.ok and third.version == v3
        assert "input shape" in third.message, third.message
        assert third.alias_rolled_back_to == v2
        assert str(client.get_model_version_by_alias(name, "champion").version) == v2
        aliases = {k: str(v) for k, v in client.get_registered_model(name).aliases.items()}
        assert aliases.get("previous") != v2  # previous never points at the champion
        assert client.get_model_version(name, v3).tags["review"] == "rolled_back"
        tags = client.get_model_version(name, v3).tags
        assert tags["deploy"] == "failed" and "input shape" in tags["deploy_reason"]
        assert live_version(port) == v2 and is_alive(second.backend_pid)
        assert not is_alive(third.backend_pid)
        assert read_state(settings)["backend"]["version"] == v2

        stopped = deploy.stop_service(settings)
        assert set(stopped) == {"backend", "proxy"}
        assert not is_alive(second.backend_pid)
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2)
    finally:
        for pid in pids:
            stop_process(pid)
