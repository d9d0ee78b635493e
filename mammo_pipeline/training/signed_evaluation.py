"""The signed evaluation: what the evaluating process attests about a run, as an Ed25519-signed
record (:mod:`mammo_pipeline.common.signing`) in the run's tag ``signed_evaluation``
(copied onto the model version at registration).

Payload (``kind`` ``mammo.evaluation``): the run id, the model's URI and the SHA-256 of its
files (the files evaluated), the digests of the per-tile test predictions and of the test
manifest, the decision threshold, the finite test metrics, the film-level tags (film
predictions and film set digests), and when it was signed. The gate accepts evidence only
when its digests are the signed ones; a file, tag or metric edited after evaluation no longer
matches, and only a holder of the signing key can sign anew.
"""

from __future__ import annotations

import logging
import math
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mammo_pipeline.config import Settings
from mammo_pipeline.errors import ConfigError

if TYPE_CHECKING:
    from mammo_pipeline.training.evaluate import Evaluation

log = logging.getLogger(__name__)

#: Run tag (and version tag) holding the signed evaluation.
EVALUATION_SIGNATURE_TAG = "signed_evaluation"
EVALUATION_KIND = "mammo.evaluation"


def model_files_sha256(settings: Settings, model_uri: str) -> str:
    """SHA-256 of the files of the logged model at ``model_uri`` (downloaded to a temp dir)."""
    import mlflow

    from mammo_pipeline.common.mlflow_access import quiet_artifact_downloads, store_uri
    from mammo_pipeline.common.signing import directory_sha256

    with tempfile.TemporaryDirectory(prefix="mammo-digest-") as tmp, quiet_artifact_downloads():
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=model_uri,
            dst_path=tmp,
            tracking_uri=store_uri(settings.mlflow_tracking_uri),
        )
        return directory_sha256(Path(local))


def evaluation_payload(
    run_id: str, model_uri: str, model_sha256: str, evaluation: Evaluation
) -> dict[str, Any]:
    metrics = {
        k: float(v)
        for k, v in sorted(evaluation.metrics.items())
        if isinstance(v, int | float) and math.isfinite(float(v))
    }
    return {
        "kind": EVALUATION_KIND,
        "run_id": run_id,
        "model_uri": model_uri,
        "model_sha256": model_sha256,
        "predictions_sha256": evaluation.predictions_sha256,
        "test_manifest_sha256": evaluation.test_manifest_sha256,
        "decision_threshold": float(evaluation.threshold),
        "metrics": metrics,
        "tags": dict(sorted(evaluation.tags.items())),
        "signed_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def sign_evaluation(
    settings: Settings,
    run_id: str,
    evaluation: Evaluation,
    model_uri: str,
    model_sha256: str | None = None,
) -> str | None:
    """Sign the evaluation of ``run_id`` and tag the run with it; returns the record, or None
    (with a warning) when this process holds no signing key: the gate then refuses the run
    until it is evaluated where the key is."""
    from mammo_pipeline.common.mlflow_access import mlflow_client
    from mammo_pipeline.common.signing import sign, signing_key

    try:
        key = signing_key(settings)
    except ConfigError as exc:
        log.warning("evaluation of run %s left unsigned: %s", run_id, exc)
        return None
    digest = model_sha256 or model_files_sha256(settings, model_uri)
    record = sign(evaluation_payload(run_id, model_uri, digest, evaluation), key)
    mlflow_client(settings).set_tag(run_id, EVALUATION_SIGNATURE_TAG, record)
    return record
