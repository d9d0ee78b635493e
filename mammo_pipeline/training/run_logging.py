"""What a training run records in MLflow besides per-epoch metrics: parameters, provenance
tags, the data manifest as the run's dataset input, and the model itself.

The model is logged with the documented ``mlflow.keras.log_model`` arguments: a signature
inferred from a real prediction, the threshold and input size as model metadata, and the
exact requirements. No ``input_example`` is passed: MLflow 3.17's Keras flavour writes it
before creating the model directory (FileNotFoundError), and the signature already says what
the model takes.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mammo_pipeline.common.mlflow_access import git_commit
from mammo_pipeline.config import Settings
from mammo_pipeline.data.manifest import DataManifest
from mammo_pipeline.training.model import weights_source

if TYPE_CHECKING:
    from mammo_pipeline.training.train import TrainData

#: Name under which a training run logs its model (the registry registers it from there).
MODEL_NAME_IN_RUN = "model"

#: Settings logged as run parameters.
PARAM_FIELDS = (
    "image_size",
    "weights",
    "head_units",
    "dropout",
    "trainable_blocks",
    "batch_size",
    "epochs",
    "fine_tune_epochs",
    "learning_rate",
    "fine_tune_learning_rate",
    "early_stopping_patience",
    "val_fraction",
    "max_records",
    "augment",
    "cache",
    "shuffle_buffer",
    "seed",
    "target_recall",
)


def run_params(s: Settings, data: TrainData, mixed: bool, cached: bool) -> dict[str, Any]:
    from mammo_pipeline.training.train import class_weights

    params: dict[str, Any] = {f: getattr(s, f) for f in PARAM_FIELDS}
    params.update(
        n_train=data.n_train,
        n_val=data.n_val,
        mixed_precision=mixed,
        feature_cache=cached,
        class_weight=json.dumps(class_weights(data.label_counts)),
        train_label_counts=json.dumps(data.label_counts),
        optimizer="adam+cosine_decay",
        keras_backend=keras_backend(),
    )
    if data.split is not None:
        summary = data.split.summary()
        params.update(
            split_rule=summary["split"],
            split_max_distance=summary["max_distance"],
            split_hash_version=summary["hash_version"],
        )
    return params


def split_metrics(data: TrainData) -> dict[str, float]:
    """Figures of the train/validation split, logged as metrics (``split_leakage``: the
    validation positives with a near-copy in train; the aim is 0)."""
    if data.split is None:
        return {}
    summary = data.split.summary()
    return {
        f"split_{k}": float(summary[k])
        for k in (
            "records",
            "groups",
            "validation_records",
            "validation_positives",
            "validation_groups",
            "positive_groups",
            "validation_positive_groups",
            "leakage",
        )
    }


def keras_backend() -> str:
    import keras

    return keras.backend.backend()


def run_tags(s: Settings, manifest: DataManifest, airflow_run_id: str | None) -> dict[str, str]:
    tags = {
        "weights_source": weights_source(s.weights),
        "weights_random": str(s.weights == "none").lower(),
        "git_commit": git_commit(),
        "synthetic": str(manifest.synthetic).lower(),
        "data_manifest_sha256": manifest.sha256,
        "mlflow.note.content": _note(s, manifest),
    }
    if airflow_run_id:
        tags["airflow_run_id"] = airflow_run_id
    return tags


def _note(s: Settings, manifest: DataManifest) -> str:
    parts = [f"VGG16 transfer learning at {s.image_size}px on {manifest.total_records} records."]
    if s.weights == "none":
        parts.append("RANDOM weights (weights=none): not a useful model, for tests/demos.")
    if manifest.synthetic:
        parts.append("Trained on SYNTHETIC data.")
    return " ".join(parts)


def log_dataset(manifest: DataManifest, out: Path) -> None:
    """The manifest as the run's MLflow dataset input and as ``data/manifest.json``."""
    import mlflow
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    path = manifest.write(out / "manifest.json")
    mlflow.log_artifact(str(path), "data")
    source_uri = str(Path(manifest.files[0].path).parent) if manifest.files else str(path)
    with warnings.catch_warnings():  # "can be interpreted in multiple ways": all local
        warnings.simplefilter("ignore", UserWarning)
        source = resolve_dataset_source(source_uri)
    dataset = MetaDataset(
        source=source,
        name=f"mammo-train-{manifest.total_records}",
        digest=manifest.sha256[:32],
    )
    mlflow.log_input(
        dataset,
        context="training",
        tags={"manifest_sha256": manifest.sha256, "synthetic": str(manifest.synthetic).lower()},
    )


def log_keras_model(model, threshold: float, image_size: int, tags: dict[str, str]):
    """``mlflow.keras.log_model`` with signature and the threshold/input-size metadata."""
    import keras
    import mlflow
    from mlflow.models import infer_signature

    example = np.full((1, image_size, image_size, 1), 128.0, dtype=np.float32)
    signature = infer_signature(example, np.asarray(model.predict(example, verbose=0)))
    requirements = [f"keras=={keras.__version__}", f"mlflow=={mlflow.__version__}", "numpy"]
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        requirements.append(f"tensorflow=={tf.__version__}")
    return mlflow.keras.log_model(
        model,
        name=MODEL_NAME_IN_RUN,
        signature=signature,
        pip_requirements=requirements,
        metadata={"decision_threshold": float(threshold), "image_size": int(image_size)},
        tags={k: v for k, v in tags.items() if not k.startswith("mlflow.")},
    )
