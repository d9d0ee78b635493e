"""Model versions made the way the pipeline makes them, for the registry, gate and serving tests.

* :func:`lookup_model`: a real Keras model whose score on held-out tile ``i`` is chosen (tile
  ``i`` of :func:`write_onehot_split` has one bright pixel at position ``i``; the model is
  Flatten -> Dense(1, sigmoid) with the logit of score ``i`` as weight ``i``). The gate's
  re-scoring therefore reproduces exactly the scores a test asks for.
* :func:`evaluated_run`: a finished run with that model logged as training logs it, evaluated
  on the held-out split by the evaluation's own code (``held_out_predictions``,
  ``log_evaluation``: predictions CSV, digests, the signed evaluation).
* :func:`sign_as_gate`: for fixtures that write ``gate=passed`` by hand to get a served
  version: the real signed decision the gate would write, with the real model files' digest
  and the settings' key (the embedded default under the data dir). Not a bypass: the
  deployer and the service verify it like any other.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from mammo_pipeline.config import Settings

SIDE = 299
SPLIT = "synthetic_test"


def model_requirements() -> list[str]:
    """What training logs with a model (given: MLflow's inference takes ~10 s a model)."""
    import keras
    import mlflow
    import tensorflow as tf

    return [f"keras=={keras.__version__}", f"mlflow=={mlflow.__version__}", "numpy",
            f"tensorflow=={tf.__version__}"]  # fmt: skip


def write_onehot_split(directory: Path, labels: np.ndarray) -> None:
    """``<SPLIT>_data.npy`` (tile i: pixel i = 255, the rest 0) and ``<SPLIT>_labels.npy``."""
    n = int(labels.size)
    assert n <= SIDE * SIDE
    directory.mkdir(parents=True, exist_ok=True)
    images = np.lib.format.open_memmap(
        directory / f"{SPLIT}_data.npy", mode="w+", dtype=np.uint8, shape=(n, SIDE, SIDE, 1)
    )
    flat = images.reshape(n, SIDE * SIDE)
    flat[np.arange(n), np.arange(n)] = 255
    images.flush()
    del flat, images
    np.save(directory / f"{SPLIT}_labels.npy", np.asarray(labels, dtype=np.int64))


def ensure_test_split(settings: Settings, labels: np.ndarray) -> None:
    """``settings.test_split`` holds the one-hot split of ``labels`` (hard links to one copy
    per label set under the data dir; a split with other labels there is an error)."""
    target = settings.test_split
    labels_file = target / f"{SPLIT}_labels.npy"
    if labels_file.is_file():
        assert np.array_equal(np.load(labels_file), labels), (
            f"{target} holds another test set: give this model its own test_dir"
        )
        return
    key = hashlib.sha256(np.asarray(labels, dtype=np.int64).tobytes()).hexdigest()[:16]
    cache = settings.data_dir / "test_sets" / key
    if not (cache / f"{SPLIT}_labels.npy").is_file():
        write_onehot_split(cache, labels)
    target.mkdir(parents=True, exist_ok=True)
    for path in cache.iterdir():
        os.link(path, target / path.name)


def lookup_model(scores: np.ndarray):
    """Input(299, 299, 1) -> Flatten -> Dense(1, sigmoid): ``scores[i]`` on one-hot tile i."""
    import keras

    s = np.clip(np.asarray(scores, dtype=np.float64), 1e-7, 1 - 1e-7)
    kernel = np.zeros((SIDE * SIDE, 1), dtype=np.float32)
    kernel[: s.size, 0] = np.log(s / (1.0 - s)) / 255.0
    inp = keras.Input((SIDE, SIDE, 1))
    out = keras.layers.Dense(1, activation="sigmoid", use_bias=False, name="probability")(
        keras.layers.Flatten()(inp)
    )
    model = keras.Model(inp, out)
    model.layers[-1].set_weights([kernel])
    return model


def evaluated_run(
    settings: Settings,
    labels: np.ndarray,
    scores: np.ndarray,
    threshold: float = 0.5,
    *,
    tags: Mapping[str, str] | None = None,
    metrics: Mapping[str, float] | None = None,
    artifacts: tuple[tuple[Path, str | None], ...] = (),
    with_predictions: bool = True,
    log_model: bool = True,
    relog: Mapping[str, float] | None = None,
    evaluation_tags: Mapping[str, str] | None = None,
    evaluation_metrics: Mapping[str, float] | None = None,
    evaluation_artifacts: tuple[Path, ...] = (),
) -> str:
    """A finished, evaluated (and signed) run of :func:`lookup_model`; returns its id.
    ``with_predictions=False``: trained but never evaluated (no predictions, no signature);
    ``relog``: metrics logged over the evaluation's afterwards (a forged run);
    ``evaluation_*``: more of what the evaluation logs and signs (film-level evaluation)."""
    import mlflow

    from mammo_pipeline.common.mlflow_access import configure_mlflow, mlflow_client
    from mammo_pipeline.data.manifest import build_manifest, held_out_files
    from mammo_pipeline.training.evaluate import (
        Evaluation,
        binary_metrics,
        held_out_predictions,
        log_evaluation,
    )

    configure_mlflow(settings)
    ensure_test_split(settings, labels)
    model = lookup_model(scores)
    with mlflow.start_run() as run:
        mlflow.set_tags(dict(tags or {}))
        mlflow.log_metrics({"decision_threshold": threshold, **(metrics or {})})
        for path, where in artifacts:
            mlflow.log_artifact(str(path), where)
        info = None
        if log_model:
            info = mlflow.keras.log_model(
                model,
                name="model",
                pip_requirements=model_requirements(),
                metadata={"decision_threshold": threshold, "image_size": SIDE},
            )
    run_id = run.info.run_id
    if with_predictions and info is not None:
        preds = held_out_predictions(model, settings)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "test_predictions.csv"
            digest = preds.write(path)
            evaluation = Evaluation(
                metrics={
                    **binary_metrics(preds.positive, preds.scores, threshold),
                    **(evaluation_metrics or {}),
                },
                threshold=threshold,
                test_manifest_sha256=build_manifest(held_out_files(settings.test_split)).sha256,
                artifacts=[path, *evaluation_artifacts],
                predictions_sha256=digest,
                tags=dict(evaluation_tags or {}),
            )
            log_evaluation(settings, run_id, evaluation, info.model_id)
    if relog:
        client = mlflow_client(settings)
        for key, value in relog.items():
            client.log_metric(run_id, key, value)
    return run_id


def sign_as_gate(settings: Settings, version: str, **payload: Any) -> str:
    """Sign ``version`` as a passing gate decision with the settings' key, over its registered
    files; returns the record (also written to the version's tag)."""
    from mammo_pipeline.common.mlflow_access import mlflow_client
    from mammo_pipeline.registry.attestation import decision_record, registered_files_sha256
    from mammo_pipeline.registry.names import SIGNED_DECISION
    from mammo_pipeline.registry.policy import GatePolicy

    client = mlflow_client(settings)
    name = settings.registered_model_name
    mv = client.get_model_version(name, str(version))
    digest = registered_files_sha256(settings, name, str(version))
    fields: dict[str, Any] = {
        "name": name,
        "version": str(version),
        "run_id": mv.run_id,
        "verdict": "passed",
        "awaiting_approval": False,
        "policy": GatePolicy.from_settings(settings),
        "champion": None,
        "baseline": None,
        "evidence": {"model_sha256": digest},
    }
    fields.update(payload)
    record = decision_record(settings, **fields)
    client.set_model_version_tag(name, str(version), SIGNED_DECISION, record)
    return record
