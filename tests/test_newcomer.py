"""The newcomer path: after `make demo` the CLI sees the demo's state; read-only commands never
create a store; errors are one line that names the file; the demo's processes stay few and
local. Commands run as a user runs them (subprocess, real console entry point)."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def mammo(*args: str, cwd: Path, env: dict[str, str] | None = None):
    base = {k: v for k, v in os.environ.items() if not k.startswith("MAMMO_")}
    base["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [sys.executable, "-m", "mammo_pipeline.cli.main", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**base, **(env or {})},
        timeout=300,
    )


def test_read_only_registry_commands_name_the_store_and_create_nothing(tmp_path: Path) -> None:
    r = mammo("registry", "list", cwd=tmp_path)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert f"{tmp_path}/mlflow.db" in r.stderr and "nothing was created" in r.stderr
    assert "source .demo/env" in r.stderr
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "mlruns").exists()
    r = mammo("registry", "show", "1", cwd=tmp_path)
    assert r.returncode == 1 and not (tmp_path / "mlflow.db").exists()


@pytest.mark.slow
def test_config_file_points_every_command_at_the_same_registry(tmp_path: Path) -> None:
    """What `source .demo/env` does: MAMMO_CONFIG_FILE alone makes `mammo registry list`
    show the registered champion, from any working directory."""
    from tests.test_service import make_settings, register_model

    settings = make_settings(tmp_path / "demo")
    version = register_model(settings, seed=1)
    config = tmp_path / "mammo.toml"
    config.write_text(
        f'data_dir = "{settings.data_dir}"\n'
        f'mlflow_tracking_uri = "{settings.mlflow_tracking_uri}"\n'
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    r = mammo("registry", "list", cwd=elsewhere, env={"MAMMO_CONFIG_FILE": str(config)})
    assert r.returncode == 0, r.stderr
    assert "champion" in r.stdout and f"\n{version} " in "\n" + r.stdout.split("\n", 1)[1]
    assert f"registry: SQLite file {tmp_path}/demo/mlflow.db" in r.stdout
    assert not (elsewhere / "mlflow.db").exists()


def test_demo_writes_its_settings_for_the_cli(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    from mammo_pipeline.config import Settings
    from mammo_pipeline.orchestration import demo

    monkeypatch.setattr(demo, "DEMO_DIR", tmp_path)
    monkeypatch.setattr(demo, "CONFIG_FILE", tmp_path / "mammo.toml")
    monkeypatch.setattr(demo, "ENV_FILE", tmp_path / "env")
    monkeypatch.setattr(demo, "KEY_FILE", tmp_path / "api_key")
    settings = demo.write_config()
    written = tomllib.loads((tmp_path / "mammo.toml").read_text())
    assert written["image_size"] == 64 and written["weights"] == "none"
    env_file = (tmp_path / "env").read_text()
    key = (tmp_path / "api_key").read_text().strip()
    assert len(key) >= 32 and settings.api_key == key
    assert f"export MAMMO_API_KEY={key}\n" in env_file  # `source .demo/env` carries the key
    monkeypatch.setenv("MAMMO_CONFIG_FILE", str(tmp_path / "mammo.toml"))
    monkeypatch.setenv("MAMMO_API_KEY", key)
    assert Settings() == settings  # the CLI reads exactly what the demo runs with
    assert f"export MAMMO_CONFIG_FILE={tmp_path / 'mammo.toml'}" in env_file
    assert f"{Path(sys.executable).parent}:$PATH" in env_file


def test_demo_airflow_is_small_and_local() -> None:
    from mammo_pipeline.config import Settings
    from mammo_pipeline.orchestration import demo

    env = demo.demo_env(Settings(**demo.DEMO_SETTINGS))
    assert env["AIRFLOW__API__HOST"] == "127.0.0.1"
    assert int(env["AIRFLOW__CORE__PARALLELISM"]) <= 4  # Airflow's default 32 idle workers
    assert env["MAMMO_IMAGE_SIZE"] == "64"
    assert os.environ.get("MAMMO_IMAGE_SIZE") is None  # the caller's environment is untouched


def test_serve_without_champion_is_one_line(tmp_path: Path) -> None:
    from tests.test_service import make_settings

    settings = make_settings(tmp_path)
    from mammo_pipeline.common.mlflow_access import mlflow_client

    mlflow_client(settings).search_experiments()  # an empty store exists
    env = {"MAMMO_MLFLOW_TRACKING_URI": settings.mlflow_tracking_uri, "MAMMO_AUTH": "none"}
    r = mammo("serve", cwd=tmp_path, env=env)
    assert r.returncode == 1, r.stdout + r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "champion" in lines[0] and "Traceback" not in r.stderr, r.stderr


def test_predict_errors_name_the_file(tmp_path: Path) -> None:
    image = tmp_path / "scan.png"
    image.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    r = mammo("predict", str(image), "--url", "http://127.0.0.1:9", cwd=tmp_path)
    assert r.returncode == 1 and str(image) in r.stderr and "Traceback" not in r.stderr


def test_stop_prints_text(tmp_path: Path) -> None:
    r = mammo("stop", cwd=tmp_path, env={"MAMMO_DATA_DIR": str(tmp_path / "data")})
    assert r.returncode == 0 and r.stdout.strip() == "nothing was running"


def test_package_metadata_uses_an_spdx_license() -> None:
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert meta["project"]["license"] == "Apache-2.0"
    assert "--durations=15" in meta["tool"]["pytest"]["ini_options"]["addopts"]
