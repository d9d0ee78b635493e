"""Training end to end on SYNTHETIC tfrecords with a real MLflow SQLite store under tmp.

One training (32 px, random weights, feature cache) is shared by most tests; one more runs
the augmented + fine-tuning path; the learning test (slow) trains at 48 px on 400 records.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mammo_pipeline.config import Settings
from mammo_pipeline.errors import ConfigError
from mammo_pipeline.registry.gate import TEST_METRICS
from mammo_pipeline.training.evaluate import LABEL_RECALL_METRICS, choose_threshold

ARTIFACTS = {
    "training_curves.png",
    "data/manifest.json",
    "evaluation/confusion_matrix.png",
    "evaluation/roc_pr_curves.png",
    "evaluation/metrics.json",
    "evaluation/test_predictions.csv",
    "data/split.json",
}


def _settings(store: Path, test_dir: Path, **kw) -> Settings:
    base = dict(
        mlflow_tracking_uri=f"sqlite:///{store}/mlflow.db",
        mlflow_artifact_location=str(store / "art"),
        weights="none",
        image_size=32,
        epochs=2,
        batch_size=32,
        augment=False,
        head_units=(32, 16),
        val_fraction=0.25,
        test_dir=test_dir,
        target_recall=0.85,
    )
    return Settings(**{**base, **kw})


def _files(d: Path) -> list[Path]:
    return sorted(d.glob("*.tfrecords"))


@pytest.fixture(scope="module")
def trained(synthetic_dir, tmp_path_factory):
    from mammo_pipeline.training.train import train_model

    store = tmp_path_factory.mktemp("mlflow")
    settings = _settings(store, synthetic_dir)
    result = train_model(
        settings, files=_files(synthetic_dir), run_tags={"airflow_run_id": "manual__t1"}
    )
    return settings, result


def _run(settings, run_id):
    import mlflow

    return mlflow.MlflowClient(settings.mlflow_tracking_uri).get_run(run_id)


def _artifacts(settings, run_id, path=""):
    import mlflow

    client = mlflow.MlflowClient(settings.mlflow_tracking_uri)
    out = set()
    for f in client.list_artifacts(run_id, path):
        out |= _artifacts(settings, run_id, f.path) if f.is_dir else {f.path}
    return out


def test_run_metrics_tags_params(trained):
    settings, result = trained
    run = _run(settings, result.run_id)
    names = set(TEST_METRICS) | set(LABEL_RECALL_METRICS.values())
    names |= {"decision_threshold", "val_roc_auc", "loss", "val_auc", "learning_rate"}
    names |= {"test_recall_calcification", "test_recall_mass", "test_roc_auc_mass"}
    names |= {"split_groups", "split_leakage", "split_validation_positives"}
    assert names <= set(run.data.metrics), names - set(run.data.metrics)
    assert run.data.metrics["split_leakage"] == 0  # no validation positive has a copy in train
    assert len(run.data.tags["test_predictions_sha256"]) == 64
    tags = run.data.tags
    assert tags["weights_source"] == "none" and tags["weights_random"] == "true"
    assert tags["synthetic"] == "true" and tags["airflow_run_id"] == "manual__t1"
    assert tags["data_manifest_sha256"] == result.data_manifest_sha256
    assert tags["test_manifest_sha256"] == result.test_manifest_sha256
    assert tags["git_commit"] and tags["feature_cache"] == "true"
    assert run.data.params["image_size"] == "32" and run.data.params["epochs"] == "2"
    assert run.data.metrics["decision_threshold"] == pytest.approx(result.decision_threshold)
    history = _history(settings, result.run_id, "val_auc")
    assert len(history) == len(result.history["val_auc"]) >= 1
    json.dumps(result.to_dict())  # XCom-safe


def _history(settings, run_id, key):
    import mlflow

    return mlflow.MlflowClient(settings.mlflow_tracking_uri).get_metric_history(run_id, key)


def test_artifacts_and_dataset_input(trained):
    settings, result = trained
    assert ARTIFACTS <= _artifacts(settings, result.run_id)
    run = _run(settings, result.run_id)
    inputs = run.inputs.dataset_inputs
    assert len(inputs) == 1 and inputs[0].dataset.digest == result.data_manifest_sha256[:32]


def test_threshold_meets_target_recall_on_validation(trained):
    import mlflow

    from mammo_pipeline.data.grouped_split import assign_validation
    from mammo_pipeline.data.pipeline import PipelineOptions, make_dataset, read_labels
    from mammo_pipeline.training.evaluate import predict_scores

    settings, result = trained
    model = mlflow.keras.load_model(result.model_uri)
    files = _files(Path(settings.test_split))
    split = assign_validation(files, settings.val_fraction, settings.seed, progress=False)
    opts = PipelineOptions(image_size=32, subset="validation", split=split)
    scores = predict_scores(model, make_dataset(files, opts))
    y = read_labels(files, opts) > 0
    recall = (scores[y] >= result.decision_threshold).mean()
    assert recall >= settings.target_recall


def test_logged_model_loads_in_fresh_process(trained, tmp_path):
    import mlflow

    settings, result = trained
    x = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 1)).astype("float32")
    np.save(tmp_path / "x.npy", x)
    model = mlflow.keras.load_model(result.model_uri)
    here = np.asarray(model.predict(x, verbose=0))
    info = mlflow.models.get_model_info(result.model_uri)
    assert info.metadata["decision_threshold"] == pytest.approx(result.decision_threshold)
    assert info.metadata["image_size"] == 32 and info.signature is not None
    code = (
        "import sys, numpy as np, mlflow; mlflow.set_tracking_uri(sys.argv[1]); "
        "m = mlflow.keras.load_model(sys.argv[2]); "
        "print(m.input_shape, m.output_shape); "
        "np.save(sys.argv[4], np.asarray(m.predict(np.load(sys.argv[3]), verbose=0)))"
    )
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            settings.mlflow_tracking_uri,
            result.model_uri,
            str(tmp_path / "x.npy"),
            str(tmp_path / "y.npy"),
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "(None, 32, 32, 1) (None, 1)" in out.stdout
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), here, rtol=1e-5, atol=1e-6)


def test_evaluate_cli_relogs_same_metrics(trained, monkeypatch):
    from typer.testing import CliRunner

    from mammo_pipeline.cli.main import app
    from mammo_pipeline.config import get_settings

    settings, result = trained
    monkeypatch.setenv("MAMMO_MLFLOW_TRACKING_URI", settings.mlflow_tracking_uri)
    monkeypatch.setenv("MAMMO_TEST_DIR", str(settings.test_split))
    get_settings.cache_clear()
    out = CliRunner().invoke(app, ["evaluate", "--run-id", result.run_id])
    assert out.exit_code == 0, out.output
    assert result.run_id in out.output and "test_roc_auc" in out.output
    run = _run(settings, result.run_id)
    assert run.data.metrics["test_roc_auc"] == pytest.approx(result.metrics["test_roc_auc"])


def test_augmented_fine_tuning_path(synthetic_dir, tmp_path, recwarn):
    """Augmentation on (no feature cache) and a phase-2 epoch: same model structure. Keras
    gives no false alarm on the way: the datasets know their length, so there is no "Your
    input ran out of data" and no "shuffle=True ... will be ignored" (issue #22, item 7)."""
    import mlflow

    from mammo_pipeline.training.train import train_model

    settings = _settings(
        tmp_path, synthetic_dir, augment=True, epochs=1, fine_tune_epochs=1, trainable_blocks=1
    )
    result = train_model(settings, files=_files(synthetic_dir), overrides={"batch_size": 40})
    alarms = [str(w.message) for w in recwarn if "ran out of data" in str(w.message)
              or "shuffle=True" in str(w.message)]  # fmt: skip
    assert alarms == []
    assert not result.feature_cache and len(result.history["loss"]) == 2
    model = mlflow.keras.load_model(result.model_uri)
    assert [layer.name for layer in model.layers] == [
        "image",
        "to_rgb",
        "vgg_preprocess",
        "vgg16",
        "pool",
        "head",
    ]
    assert _run(settings, result.run_id).data.params["batch_size"] == "40"


def test_choose_threshold():
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    s = np.array([0.1, 0.2, 0.35, 0.6, 0.3, 0.7, 0.8, 0.9])
    t = choose_threshold(y, s, 0.75)
    assert t == pytest.approx(0.7)  # recall 3/4, precision 1
    t = choose_threshold(y, s, 1.0)
    assert (s[y == 1] >= t).all() and t == pytest.approx(0.3)
    assert choose_threshold(np.zeros(3), np.ones(3), 0.9) == 0.5


def test_overrides_and_missing_weights(synthetic_dir, tmp_path):
    from mammo_pipeline.overrides import apply_overrides
    from mammo_pipeline.training.train import train_model

    settings = _settings(tmp_path, synthetic_dir)
    assert apply_overrides(settings, {"epochs": 5, "max_records": None}).epochs == 5
    with pytest.raises(ConfigError, match="unknown"):
        apply_overrides(settings, {"colour": "red"})
    with pytest.raises(ConfigError, match="unknown"):  # gate settings are not training's
        apply_overrides(settings, {"min_recall": 0.5})
    assert apply_overrides(settings, {"min_recall": 0.5}, allowed={"min_recall"}).min_recall == 0.5
    with pytest.raises(ConfigError, match="invalid"):
        apply_overrides(settings, {"epochs": 0})
    with pytest.raises(ConfigError, match="does not exist"):
        train_model(
            settings, files=_files(synthetic_dir), overrides={"weights": str(tmp_path / "vgg16.h5")}
        )


def test_content_split_is_deterministic_and_disjoint(synthetic_dir):
    from mammo_pipeline.data.pipeline import PipelineOptions, make_dataset

    files = _files(synthetic_dir)

    def keys(subset, order):
        opts = PipelineOptions(image_size=16, batch_size=64, subset=subset, val_fraction=0.25)
        return {img.tobytes() for b in make_dataset(order, opts) for img in b[0].numpy()}

    train, val = keys("train", files), keys("validation", files)
    assert not train & val and len(train) + len(val) == 120 and 10 <= len(val) <= 50
    assert keys("validation", files[::-1]) == val  # file order does not matter
    assert keys("validation", files[1:]) <= val  # a file's records keep their side


@pytest.mark.slow
def test_model_learns_synthetic_task(tmp_path):
    """CLI `mammo train` at 64 px on 500 SYNTHETIC records with a randomly initialised VGG16
    (ImageNet weights cannot be downloaded here): test ROC AUC well above chance. The frozen
    random base still gives features the trained head separates (lesions sit near the
    centre of ROI tiles, as in the public data set)."""
    from typer.testing import CliRunner

    from mammo_pipeline.cli.main import app
    from mammo_pipeline.config import get_settings
    from mammo_pipeline.data.synthetic import generate

    weights = "none"
    data = tmp_path / "data"
    generate(data, 500, files=4, positive_fraction=0.3, seed=11, test_n=200, progress=False)
    env = {
        "MAMMO_MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db",
        "MAMMO_MLFLOW_ARTIFACT_LOCATION": str(tmp_path / "art"),
        "MAMMO_TEST_DIR": str(data),
        "MAMMO_WEIGHTS": weights,
        "MAMMO_AUGMENT": "false",
        "MAMMO_EARLY_STOPPING_PATIENCE": "5",
        "MAMMO_VAL_FRACTION": "0.2",
    }
    get_settings.cache_clear()
    out = CliRunner(env=env).invoke(
        app,
        [
            "train",
            "--data",
            str(data),
            "--image-size",
            "64",
            "--epochs",
            "25",
            "--batch-size",
            "32",
        ],
    )
    assert out.exit_code == 0, out.output[-3000:]
    assert "MLflow run id:" in out.output and "SYNTHETIC" in out.output
    auc = float(out.output.split("test_roc_auc")[1].split()[0])
    assert auc >= 0.7, out.output[-2000:]
