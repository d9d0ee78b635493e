"""A diverging training run stops with one clear line and a FAILED MLflow run (never a
scikit-learn traceback about NaN); an out-of-range option is checked once, by the settings."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.faults
REPO = Path(__file__).resolve().parents[2]


def _mammo(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("MAMMO_")}
    return subprocess.run(
        [sys.executable, "-m", "mammo_pipeline.cli.main", *args],
        capture_output=True,
        text=True,
        env={**base, **env, "PYTHONPATH": str(REPO)},
        timeout=600,
        cwd=REPO,
    )


@pytest.mark.slow
def test_diverging_training_stops_with_one_line_and_a_failed_run(synthetic_dir, tmp_path):
    from mammo_pipeline.common.mlflow_access import mlflow_client
    from mammo_pipeline.config import Settings

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    env = {
        "MAMMO_MLFLOW_TRACKING_URI": uri,
        "MAMMO_MLFLOW_ARTIFACT_LOCATION": str(tmp_path / "art"),
        "MAMMO_TEST_DIR": str(synthetic_dir),
        "MAMMO_WEIGHTS": "none",
        "MAMMO_IMAGE_SIZE": "32",
        "MAMMO_EPOCHS": "3",
        "MAMMO_HEAD_UNITS": "[16, 8]",
        "MAMMO_VAL_FRACTION": "0.25",
    }
    r = _mammo("train", "--data", str(synthetic_dir), "--learning-rate", "1e12", "--no-augment",
               env=env)  # fmt: skip
    assert r.returncode == 1, r.stdout[-2000:] + r.stderr[-2000:]
    assert "Traceback" not in r.stderr and "ValueError" not in r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert (
        last.startswith("error: training diverged at epoch ") and "lower the learning rate" in last
    )
    runs = mlflow_client(Settings(mlflow_tracking_uri=uri)).search_runs(
        [
            e.experiment_id
            for e in mlflow_client(Settings(mlflow_tracking_uri=uri)).search_experiments()
        ]
    )
    assert len(runs) == 1 and runs[0].info.status == "FAILED"
    assert runs[0].data.tags["failure_reason"].startswith("training diverged at epoch")


def test_learning_rate_range_is_checked_once(tmp_path):
    r = _mammo("train", "--learning-rate", "0", env={"MAMMO_DATA_DIR": str(tmp_path)})
    assert r.returncode == 1 and "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    assert "learning_rate=0.0: Input should be greater than 0" in lines[0]
