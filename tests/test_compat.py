"""Each upstream bug that ``mammo_pipeline.common.compat`` works around, reproduced on the pinned
version. These tests FAIL once upstream fixes the bug: then delete the workaround (and the test).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mammo_pipeline.common import compat

ROOT = Path(__file__).resolve().parents[1]


def _run(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"},
    )


@pytest.mark.slow
def test_mlflow_still_resolves_logged_models_through_the_global_uri(tmp_path: Path) -> None:
    """Upstream: compat.MLFLOW_GLOBAL_URI_ISSUE. Registering ``models:/<id>`` with an explicit
    client, from a fresh process whose global URI is not the store, still fails."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    log = _run(
        f"""
        import mlflow, numpy as np
        from mlflow import MlflowClient
        client = MlflowClient(tracking_uri="{uri}", registry_uri="{uri}")
        exp = client.create_experiment("e", artifact_location="{(tmp_path / "art").as_uri()}")
        mlflow.set_tracking_uri("{uri}")
        class Echo(mlflow.pyfunc.PythonModel):
            def predict(self, context, model_input):
                return model_input
        with mlflow.start_run(experiment_id=exp) as run:
            info = mlflow.pyfunc.log_model(name="model", python_model=Echo())
        print(info.model_id, run.info.run_id)
        """,
        tmp_path,
    )
    assert log.returncode == 0, log.stderr[-2000:]
    model_id, run_id = log.stdout.split()[-2:]
    fresh = tmp_path / "elsewhere"
    fresh.mkdir()
    register = _run(
        f"""
        from mlflow import MlflowClient
        client = MlflowClient(tracking_uri="{uri}", registry_uri="{uri}")
        client.create_registered_model("m")
        client.create_model_version("m", source="models:/{model_id}", run_id="{run_id}",
                                    model_id="{model_id}")
        print("REGISTERED")
        """,
        fresh,  # another working directory: the default global store is not ours there
    )
    assert "REGISTERED" not in register.stdout, (
        "MLflow now registers a LoggedModel without the global tracking URI: remove "
        "compat.before_registering_logged_model (" + compat.MLFLOW_GLOBAL_URI_ISSUE + ")"
    )
    assert "not found" in register.stderr.lower()


def test_bentoml_still_fetches_text_form_fields_as_urls(tmp_path: Path) -> None:
    """Upstream: compat.BENTOML_MULTIPART_ISSUE. Unpatched, a text value where a file is
    expected is fetched as a URL and a failure escapes as a non-4xx exception."""
    out = _run(
        """
        import asyncio
        from _bentoml_impl.serde import MultipartSerde
        from bentoml.exceptions import BadInput
        try:
            asyncio.run(MultipartSerde.ensure_file("not-a-url"))
        except BadInput:
            print("BADINPUT")
        except Exception as exc:
            print("ESCAPED", type(exc).__module__, type(exc).__name__)
        """,
        tmp_path,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "ESCAPED httpx" in out.stdout, (
        "BentoML no longer fetches text form fields as URLs (or maps the failure to a 4xx): "
        "remove compat.harden_bentoml_multipart (" + compat.BENTOML_MULTIPART_ISSUE + ")"
        f"; got {out.stdout!r}"
    )


def test_hardened_multipart_refuses_text_fields() -> None:
    import asyncio

    from bentoml.exceptions import BadInput

    compat.harden_bentoml_multipart()
    from _bentoml_impl.serde import MultipartSerde

    with pytest.raises(BadInput, match="URLs are not fetched"):
        asyncio.run(MultipartSerde.ensure_file("http://127.0.0.1:9/x"))
