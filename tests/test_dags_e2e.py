"""The DAGs end to end with `airflow dags test` on tiny SYNTHETIC data: SQLite Airflow, SQLite
MLflow, a real BentoML process. Validation, then retraining that ends with a champion and a
live service answering a prediction; a failing gate leaves a challenger and deploys nothing;
a manual trigger with invalid Params is refused."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from mammo_pipeline.config import Settings
from mammo_pipeline.orchestration.airflow_env import airflow_env
from tests.conftest import TINY_RUN_SETTINGS

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Env:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.values = {
            "data_dir": str(root / "data"),
            "mlflow_tracking_uri": f"sqlite:///{root / 'mlflow.db'}",
            "mlflow_artifact_location": str(root / "mlartifacts"),
            "airflow_home": str(root / "airflow"),
            **TINY_RUN_SETTINGS,
            "serve_port": str(_free_port()),
        }
        os.environ.update({f"MAMMO_{k.upper()}": v for k, v in self.values.items()})
        os.environ["BENTOML_HOME"] = str(root / "bentoml")
        self.settings = Settings()
        self.env = airflow_env(self.settings, api_port=_free_port())

    def run(self, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(BIN / "airflow"), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.root,
        )


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from mammo_pipeline.data.synthetic import generate

    root = tmp_path_factory.mktemp("e2e")
    saved = dict(os.environ)
    w = Env(root)
    ds = generate(
        root / "incoming", 160, files=2, positive_fraction=0.3, seed=5, test_n=60, progress=False
    )
    w.settings.test_split.mkdir(parents=True)
    for p in (ds.test_data, ds.test_labels):
        os.replace(p, w.settings.test_split / Path(p).name)
    w.settings.landing.mkdir(parents=True)
    for f in ds.train_files:
        os.replace(f, w.settings.landing / Path(f).name)
    assert w.run("db", "migrate").returncode == 0
    assert w.run("pools", "set", "mammo_gpu", "1", "GPU training slots").returncode == 0
    yield w
    from mammo_pipeline.serving.deploy import stop_service

    stop_service(w.settings)
    os.environ.clear()
    os.environ.update(saved)


def _client(w: Env):
    import mlflow

    uri = w.settings.mlflow_tracking_uri
    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)


def _aliases(w: Env) -> dict[str, str]:
    model = _client(w).get_registered_model(w.settings.registered_model_name)
    return {k: str(v) for k, v in model.aliases.items()}


def test_validate_then_retrain_deploys_a_champion(world):
    r = world.run("dags", "test", "mammo_validate_incoming")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    validated = sorted(p.name for p in world.settings.validated.glob("*.tfrecords"))
    assert len(validated) == 2 and not list(world.settings.landing.glob("*.tfrecords"))

    r = world.run("dags", "test", "mammo_retrain")
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-5000:]
    assert "state=success" in out
    aliases = _aliases(world)
    assert aliases.get("champion") == "1"
    version = _client(world).get_model_version(world.settings.registered_model_name, "1")
    assert version.tags["gate"] == "passed"
    assert version.tags.get("airflow_run_id", "").startswith("manual__")
    run = _client(world).get_run(version.run_id)
    assert run.data.tags["data_docs"].endswith("index.html")  # validation linked from the run
    assert {"test_precision", "test_recall", "decision_threshold"} <= set(run.data.metrics)
    # the live service answers with the champion
    url = f"http://127.0.0.1:{world.settings.serve_port}"
    with urllib.request.urlopen(f"{url}/model", timeout=30) as resp:
        meta = json.loads(resp.read())
    assert str(meta["version"]) == "1"
    sample = world.root / "tile.npy"
    np.save(sample, np.load(world.settings.test_split / "synthetic_test_data.npy")[0])
    r = subprocess.run(
        [str(BIN / "mammo"), "predict", str(sample), "--url", url],
        capture_output=True,
        text=True,
        timeout=60,
        env=world.env,
    )
    assert r.returncode == 0, r.stderr
    assert '"model_version": "1"' in r.stdout or "version 1" in r.stdout, r.stdout


def test_failing_gate_leaves_a_challenger_and_deploys_nothing(world):
    before = _aliases(world)
    conf = json.dumps({"min_precision": 1.0, "min_recall": 1.0, "epochs": 1})
    r = world.run("dags", "test", "mammo_retrain", "-c", conf)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-5000:]
    after = _aliases(world)
    assert after["champion"] == before["champion"]
    assert after["challenger"] != before["champion"]
    tags = (
        _client(world)
        .get_model_version(world.settings.registered_model_name, after["challenger"])
        .tags
    )
    assert tags["gate"] == "failed" and "test_precision" in tags["gate_reasons"]
    assert "nothing is deployed" in out
    from mammo_pipeline.serving.deploy import read_state

    assert str(read_state(world.settings)["backend"]["version"]) == before["champion"]
    url = f"http://127.0.0.1:{world.settings.serve_port}/model"
    with urllib.request.urlopen(url, timeout=30) as resp:
        assert str(json.loads(resp.read())["version"]) == before["champion"]


def test_invalid_params_are_refused(world):
    assert world.run("dags", "reserialize").returncode == 0
    r = world.run("dags", "trigger", "mammo_retrain", "-c", json.dumps({"epochs": -1}))
    assert r.returncode != 0
    assert "Invalid input for param epochs" in r.stdout + r.stderr
    r = world.run("dags", "trigger", "mammo_retrain", "-c", json.dumps({"learning_rate": "x"}))
    assert r.returncode != 0
