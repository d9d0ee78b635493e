"""Authentication fails closed (issue #19, item 1).

With ``MAMMO_AUTH=key`` (the default) and no ``MAMMO_API_KEY``, a real ``bentoml serve``
refuses to start with one line naming both remedies (the CLI's ``serve`` / ``deploy`` /
``serving-node`` refuse the same way: ``tests/test_cli_refusals.py``); the request guard lets
nothing through without the key; an explicit ``MAMMO_AUTH=none`` serves and the log says that
setting is why; ``make demo`` makes a key once and says how to send it; the compose shape
cannot start without one.
"""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
from pathlib import Path

import httpx
import pytest

from mammo_pipeline.config import Settings
from tests.test_service import make_settings, register_model

KEY = "fail-closed-key-0123456789"


def test_the_refusal_is_one_line_naming_both_remedies() -> None:
    from mammo_pipeline.common.auth import NO_KEY_REFUSAL, auth_refusal

    assert "\n" not in NO_KEY_REFUSAL
    assert "MAMMO_API_KEY=" in NO_KEY_REFUSAL and "MAMMO_AUTH=none" in NO_KEY_REFUSAL
    assert Settings().auth == "key" and auth_refusal(Settings()) == NO_KEY_REFUSAL
    assert auth_refusal(Settings(api_key=KEY)) is None
    assert auth_refusal(Settings(auth="none")) is None


def test_bentoml_serve_refuses_to_start_without_a_key(tmp_path: Path) -> None:
    """Before any worker (no model is loaded, nothing listens): one line, exit 1. The old
    service started and answered /predict to anyone, logging 'MAMMO_AUTH=none'."""
    from mammo_pipeline.common.environment import REPO_ROOT
    from mammo_pipeline.common.net import free_port
    from mammo_pipeline.common.processes import spawn
    from mammo_pipeline.serving import backend

    settings = make_settings(tmp_path, auth="key")  # the default, and no key
    log = tmp_path / "server.log"
    cmd = backend.serve_command("127.0.0.1", free_port())
    proc = spawn(cmd, env=backend.child_env(settings), log=log, cwd=REPO_ROOT)
    try:
        code = proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        backend.stop_process(proc.pid)
        pytest.fail(f"bentoml serve started without a key: {log.read_text()[-2000:]}")
    lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    assert code != 0, lines
    assert len(lines) == 1 and "MAMMO_API_KEY=" in lines[0] and "MAMMO_AUTH=none" in lines[0]
    from mammo_pipeline.common.auth import NO_KEY_REFUSAL

    assert lines == [f"error: {NO_KEY_REFUSAL}"]


# --- the request guard, in process ------------------------------------------------------------
def _guard_status(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], headers: dict) -> int:
    """The status the service's guard gives ``POST /predict`` with ``headers`` (401: refused;
    503: let through, to a service whose model is not loaded in this test)."""
    from mammo_pipeline.config import get_settings
    from serving.service import RequestGuard

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()

    async def app(scope, receive, send) -> None:  # never reached by a POST /predict here
        raise AssertionError("the guard passed a request on")

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/predict",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
    }
    asyncio.run(RequestGuard(app)(scope, receive, send))
    get_settings.cache_clear()
    return sent[0]["status"]


def test_the_guard_needs_the_key_and_never_fails_open(monkeypatch: pytest.MonkeyPatch) -> None:
    keyed = {"MAMMO_API_KEY": KEY}
    assert _guard_status(monkeypatch, keyed, {}) == 401
    assert _guard_status(monkeypatch, keyed, {"Authorization": "Bearer wrong"}) == 401
    assert _guard_status(monkeypatch, keyed, {"Authorization": f"Bearer {KEY}"}) == 503
    assert _guard_status(monkeypatch, keyed, {"X-API-Key": KEY}) == 503
    monkeypatch.delenv("MAMMO_API_KEY")
    # were the start-up refusal bypassed, the default (key, none set) still lets nothing in
    assert _guard_status(monkeypatch, {}, {}) == 401
    assert _guard_status(monkeypatch, {}, {"Authorization": "Bearer anything"}) == 401
    assert _guard_status(monkeypatch, {"MAMMO_AUTH": "none"}, {}) == 503  # said explicitly


def test_the_log_line_names_the_setting_that_decided() -> None:
    from mammo_pipeline.common.auth import auth_description

    assert auth_description(Settings(api_key=KEY)).startswith("authentication ON")
    off = auth_description(Settings(auth="none"))
    assert off.startswith("authentication OFF because MAMMO_AUTH=none was set")
    assert "MAMMO_AUTH=none" not in auth_description(Settings(api_key=KEY))
    assert "OFF" not in auth_description(Settings())  # never "off" unless someone said so


@pytest.mark.slow
def test_auth_none_serves_without_a_key_and_logs_why(tmp_path: Path) -> None:
    from mammo_pipeline.common.net import free_port
    from mammo_pipeline.serving import backend
    from mammo_pipeline.serving.smoke import smoke_image

    settings = make_settings(tmp_path, auth="none")
    register_model(settings, seed=2)
    port, log = free_port(), tmp_path / "server.log"
    pid, log = backend.start_backend(settings, None, port, log=log)
    try:
        url = f"http://127.0.0.1:{port}"
        backend.wait_ready(url, pid, 180, log)
        resp = httpx.post(f"{url}/predict", files={"image": ("s.png", smoke_image())}, timeout=60)
        assert resp.status_code == 200, resp.text
        assert 0.0 <= resp.json()["probability"] <= 1.0
        text = log.read_text(errors="replace")
        assert "authentication OFF because MAMMO_AUTH=none was set" in text
    finally:
        backend.stop_process(pid)


# --- make demo --------------------------------------------------------------------------------
def test_demo_makes_a_key_once_keeps_it_private_and_says_how_to_send_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from mammo_pipeline.common.auth import auth_refusal, key_matches, presented_key
    from mammo_pipeline.orchestration import demo, demo_access

    for name, path in {
        "DEMO_DIR": tmp_path,
        "CONFIG_FILE": tmp_path / "mammo.toml",
        "ENV_FILE": tmp_path / "env",
        "KEY_FILE": tmp_path / "api_key",
    }.items():
        monkeypatch.setattr(demo, name, path)  # fmt: skip
    first = demo.write_config()
    again = demo.write_config()
    key = first.api_key
    assert key and len(key) >= 40 and again.api_key == key  # made once, then reused
    assert auth_refusal(first) is None and first.auth == "key"
    for private in (tmp_path / "api_key", tmp_path / "env"):
        assert stat.S_IMODE(os.stat(private).st_mode) == 0o600, private
    assert f"export MAMMO_API_KEY={key}\n" in (tmp_path / "env").read_text()
    assert demo.demo_env(first)["MAMMO_API_KEY"] == key  # what Airflow's deploy task serves with

    usage = demo_access.shell_usage(
        "http://127.0.0.1:3000",
        tmp_path / "sample.npy",
        env_file=demo.ENV_FILE,
        key_file=demo.KEY_FILE,
    )
    assert usage[0].startswith(f"source {tmp_path / 'env'}")
    (curl,) = [line for line in usage if line.startswith("curl ")]
    header = curl.split('-H "', 1)[1].split('"', 1)[0].replace("$MAMMO_API_KEY", key)
    name, value = header.split(": ", 1)
    assert key_matches(presented_key({name.lower().encode(): value.encode()}), key)
    assert "http://127.0.0.1:3000/predict" in curl


# --- the compose shape ------------------------------------------------------------------------
def test_compose_cannot_start_the_service_without_a_key(monkeypatch: pytest.MonkeyPatch) -> None:
    from mammo_pipeline.common.auth import auth_refusal
    from tests.test_compose import compose, env_example, interpolate

    service = compose()["services"]["bentoml"]["environment"]
    assert service["MAMMO_AUTH"] == "key"
    values = env_example()
    for key, value in service.items():  # the service's settings, as its container reads them
        if key.startswith("MAMMO_"):
            monkeypatch.setenv(key, interpolate(str(value), values))
    settings = Settings()
    assert auth_refusal(settings) is None and settings.api_key == values["MAMMO_API_KEY"]
    without = {k: v for k, v in values.items() if k != "MAMMO_API_KEY"}
    with pytest.raises(AssertionError, match="MAMMO_API_KEY"):
        interpolate(service["MAMMO_API_KEY"], without)
    with pytest.raises(AssertionError, match="MAMMO_API_KEY"):
        interpolate(service["MAMMO_API_KEY"], {**without, "MAMMO_API_KEY": ""})
