"""One real training run (SYNTHETIC tiles + a SYNTHETIC film set, 64 px, random VGG16 weights,
the TINY_RUN_SETTINGS recipe) that logs the film-level metrics and artifacts (slow)."""

from __future__ import annotations

import pytest

from tests.conftest import TINY_RUN_SETTINGS

FILM_METRICS = {
    "film_roc_auc",
    "film_roc_auc_low",
    "film_roc_auc_high",
    "film_froc_sens_at_0_5fp",
    "film_froc_sens_at_1fp",
    "film_froc_sens_at_2fp",
    "film_top1_hit_rate",
    "film_topk_hit_rate",
    "film_n",
    "film_positives",
    "film_threshold",
    "film_sensitivity",
    "film_specificity",
}


@pytest.mark.slow
def test_training_logs_film_level_evaluation(tmp_path, capsys):
    import mlflow

    from mammo_pipeline.config import Settings
    from mammo_pipeline.data.synthetic import generate
    from mammo_pipeline.training.train import train_model

    data = tmp_path / "data"
    films = data / "test_films"
    generate(data / "train", 400, files=2, positive_fraction=0.3, seed=5, test_n=100,
             views_per_lesion=1, progress=False, films=20, films_dir=films)  # fmt: skip
    keys = ("image_size", "weights", "epochs", "early_stopping_patience", "val_fraction",
            "batch_size", "augment")  # fmt: skip
    s = Settings(
        data_dir=data,
        test_dir=data / "train",
        mlflow_tracking_uri=f"sqlite:///{tmp_path}/mlflow.db",
        mlflow_artifact_location=str(tmp_path / "art"),
        head_units=(32, 16),
        **{k: TINY_RUN_SETTINGS[k] for k in keys},  # type: ignore[arg-type]
    )
    assert s.film_test_split == data / "test_films"
    result = train_model(s, files=sorted((data / "train").glob("*.tfrecords")))
    run = mlflow.MlflowClient(s.mlflow_tracking_uri).get_run(result.run_id)
    m, tags = run.data.metrics, run.data.tags
    assert FILM_METRICS <= set(m), FILM_METRICS - set(m)
    assert m["film_n"] == 14 and m["film_positives"] == 7  # the test-role films
    assert m["film_roc_auc_low"] <= m["film_roc_auc"] <= m["film_roc_auc_high"]
    assert tags["film_threshold_method"] == "film_validation"
    assert len(tags["film_predictions_sha256"]) == 64 and len(tags["film_set_sha256"]) == 64
    client = mlflow.MlflowClient(s.mlflow_tracking_uri)
    files = {f.path for f in client.list_artifacts(result.run_id, "evaluation")}
    assert {"evaluation/froc.png", "evaluation/film_predictions.csv"} <= files
    assert any(p.startswith("evaluation/film_heatmap_") for p in files)
    with capsys.disabled():
        print(
            f"\nSYNTHETIC film set, 64 px, random weights: film ROC AUC {m['film_roc_auc']:.3f} "
            f"[{m['film_roc_auc_low']:.3f}, {m['film_roc_auc_high']:.3f}], FROC sens@1FP "
            f"{m['film_froc_sens_at_1fp']:.3f}, top-1 hit rate {m['film_top1_hit_rate']:.3f}, "
            f"film threshold {m['film_threshold']:.4f}, tile test ROC AUC {m['test_roc_auc']:.3f}"
        )


def test_missing_film_set_means_no_film_metrics(tmp_path, capsys):
    from mammo_pipeline.config import Settings
    from mammo_pipeline.training.film_eval import film_evaluation

    s = Settings(data_dir=tmp_path)
    assert film_evaluation(object(), s, 0.5, tmp_path / "out") is None
    assert "no film set" in capsys.readouterr().out


def test_broken_film_set_is_an_error(tmp_path):
    from mammo_pipeline.config import Settings
    from mammo_pipeline.data.film_set import make_film_set
    from mammo_pipeline.errors import DataError
    from mammo_pipeline.training.film_eval import film_evaluation

    make_film_set(tmp_path / "test_films", 2, seed=0, height=100, width=80)
    (tmp_path / "test_films" / "films" / "synthetic_film_0001.png").write_bytes(b"broken")
    with pytest.raises(DataError, match="synthetic_film_0001.png"):
        film_evaluation(object(), Settings(data_dir=tmp_path), 0.5, tmp_path / "out")


def _validation_films(scores: list[float], labels: list[int]):
    import numpy as np

    from mammo_pipeline.training.film_eval import FilmPredictions

    n = len(scores)
    return FilmPredictions(
        film_ids=tuple(f"v{i}" for i in range(n)),
        roles=("validation",) * n,
        labels=np.asarray(labels, dtype=np.int64),
        n_lesions=np.asarray(labels, dtype=np.int64),
        scores=np.asarray(scores, dtype=np.float64),
        regions=tuple(((s, -1, 0, 0, 1, 1),) for s in scores),
    )


def test_film_threshold_is_chosen_on_validation_films_else_corrected():
    """The film threshold is the validation films' recall-driven choice (it may lie below the
    tile threshold: a lesion's best window is rarely centred on it as a training tile is);
    without a validation film with a lesion, the tile threshold corrected for the windows."""
    from mammo_pipeline.training.film_eval import choose_film_threshold

    films = _validation_films([0.40, 0.91, 0.95, 0.07, 0.12, 0.23], [1, 1, 1, 0, 0, 0])
    assert choose_film_threshold(films, 0.96, 0.85, 40) == (0.40, "film_validation")
    none = _validation_films([0.97, 0.98], [0, 0])  # no validation film with a lesion
    threshold, method = choose_film_threshold(none, 0.96, 0.85, 40)
    assert method == "window_corrected" and 0.96 < threshold < 1.0
