"""Deploys under faults, against real ``bentoml serve`` processes and a real MLflow registry:
unvetted versions (rejected, never gated, a hand-moved alias) are never served, a model whose
artifact disappeared fails the deploy while the old version keeps serving, and a blue/green
switch under load fails no request."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import httpx
import pytest

from mammo_pipeline.common.mlflow_access import mlflow_client
from mammo_pipeline.common.net import free_port
from mammo_pipeline.serving import deploy
from mammo_pipeline.serving.backend import stop_process
from mammo_pipeline.serving.state import read_state
from tests.test_rollback_serves import _cli
from tests.test_service import make_settings, register_model

pytestmark = pytest.mark.faults


def _png() -> bytes:
    import io

    import numpy as np
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.full((40, 40), 120, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _tag(settings, version: str, **tags: str) -> None:
    client = mlflow_client(settings)
    for key, value in tags.items():
        client.set_model_version_tag(settings.registered_model_name, version, key, value)


@pytest.mark.slow
def test_unvetted_versions_are_never_deployed(tmp_path: Path, monkeypatch) -> None:
    from mammo_pipeline.errors import ConfigError
    from mammo_pipeline.serving.model_loader import describe_version

    settings = make_settings(tmp_path, serve_port=free_port())
    name = settings.registered_model_name
    v1 = register_model(settings, seed=1, aliases=())
    _tag(settings, v1, gate="failed", gate_reasons="test_recall below the threshold")
    v2 = register_model(settings, seed=2, aliases=())
    _tag(settings, v2, review="rejected", review_by="dora", review_reason="misses calcs")
    v3 = register_model(settings, seed=3, aliases=())
    _tag(settings, v3, gate="pending")
    v4 = register_model(settings, seed=4, aliases=())  # issue #18, scenario 4
    _tag(settings, v4, gate="passed", awaiting_approval="true")

    for version, words in ((v1, "gate=failed"), (v2, "rejected by dora"), (v3, "gate=pending"),
                           (v4, "awaits a person's approval")):  # fmt: skip
        result = deploy.deploy_version(settings, version)
        assert not result.ok and "refusing to deploy" in result.message, result.to_dict()
        assert words in result.message and result.backend_pid is None  # nothing was started
        with pytest.raises(ConfigError, match="refusing to serve"):
            describe_version(settings, version)  # the service itself refuses too
    # a serving host with a read-only registry user writes nothing and leaves the record
    # (deploy=failed, the champion moved back) to a writer's record_deploy task
    read_only = settings.model_copy(update={"deploy_records_registry": False})
    fresh = register_model(settings, seed=5, aliases=())
    _tag(settings, fresh, gate="pending")
    result = deploy.deploy_version(read_only, fresh)
    assert not result.ok and result.record_pending and result.version == fresh
    assert "deploy" not in mlflow_client(settings).get_model_version(name, fresh).tags
    out = _cli(monkeypatch, settings, "deploy", "--version", v4)  # the public CLI refuses too
    said = out.output + str(out.exception or "")  # main() prints a MammoError as one line
    assert out.exit_code != 0 and "awaits a person's approval" in said, said
    # A champion alias moved by hand in the MLflow UI is not enough.
    mlflow_client(settings).set_registered_model_alias(name, "champion", v1)
    result = deploy.deploy_version(settings)
    assert not result.ok and "refusing to deploy" in result.message
    assert read_state(settings) == {}


@pytest.mark.slow
def test_deploys_under_load_fail_no_request(tmp_path: Path) -> None:
    """Under a steady load on the live port: a deploy whose model files vanished from the
    artifact store fails while the old version keeps serving, then a good version takes over;
    no request fails at any point."""
    port = free_port()
    settings = make_settings(tmp_path, serve_port=port, serve_ready_timeout_s=150)
    name = settings.registered_model_name
    client = mlflow_client(settings)
    pids: list[int] = []
    counts = {"ok": 0, "failed": 0}
    stop = threading.Event()
    image = _png()

    def load() -> None:
        with httpx.Client(timeout=30) as http:
            while not stop.is_set():
                try:
                    r = http.post(
                        f"http://127.0.0.1:{port}/predict",
                        files={"image": ("x.png", image, "image/png")},
                    )
                    counts["ok" if r.status_code == 200 else "failed"] += 1
                except httpx.HTTPError:
                    counts["failed"] += 1

    workers = [threading.Thread(target=load) for _ in range(4)]
    try:
        v1 = register_model(settings, seed=1)
        first = deploy.deploy_version(settings)
        assert first.ok, first.to_dict()
        pids += [first.backend_pid, read_state(settings)["proxy"]["pid"]]
        for w in workers:
            w.start()
        time.sleep(1.0)

        v2 = register_model(settings, seed=2)
        client.set_registered_model_alias(name, "previous", v1)
        model_id = client.get_model_version(name, v2).source.removeprefix("models:/")
        shutil.rmtree(client.get_logged_model(model_id).artifact_location.removeprefix("file://"))
        broken = deploy.deploy_version(settings)
        pids.append(broken.backend_pid)
        assert not broken.ok, broken.to_dict()
        live = httpx.get(f"http://127.0.0.1:{port}/model", timeout=10).json()
        assert live["version"] == v1  # blue kept serving
        assert str(client.get_model_version_by_alias(name, "champion").version) == v1
        assert client.get_model_version(name, v2).tags["deploy"] == "failed"

        v3 = register_model(settings, seed=3)
        client.set_registered_model_alias(name, "previous", v1)
        good = deploy.deploy_version(settings)
        pids.append(good.backend_pid)
        assert good.ok, good.to_dict()
        time.sleep(1.0)
        stop.set()
        for w in workers:
            w.join()
        print(
            f"\nunder load: failed deploy of v{v2} (model files deleted), then v{v1} -> v{v3}: "
            f"{counts['ok']} requests ok, {counts['failed']} failed"
        )
        assert counts["ok"] > 20 and counts["failed"] == 0
        assert httpx.get(f"http://127.0.0.1:{port}/model", timeout=10).json()["version"] == v3
    finally:
        stop.set()
        for w in workers:
            if w.is_alive():
                w.join()
        deploy.stop_service(settings)
        for pid in pids:
            stop_process(pid)
