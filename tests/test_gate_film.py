"""The gate judges what /analyze serves: film-level non-regression through a real MLflow store
(SQLite in tmp). Versions carry tile evidence (a real model evaluated on the held-out split,
tests.signed_versions) and film evidence (film_predictions.csv + digest tags) the way
evaluation logs and signs them, without training."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from mammo_pipeline.config import Settings

mlflow = pytest.importorskip("mlflow")

from mammo_pipeline import registry  # noqa: E402
from mammo_pipeline.registry.report_html import render_html, statistics_lines  # noqa: E402
from mammo_pipeline.training.film_eval import FilmPredictions  # noqa: E402
from tests.evidence_helpers import fixed_labels, scores_for  # noqa: E402
from tests.signed_versions import evaluated_run  # noqa: E402

THRESHOLD = 0.5
FILM_SET = "f" * 64
_names = itertools.count()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    root = tmp_path_factory.mktemp("mlflow")
    return Settings(
        mlflow_tracking_uri=f"sqlite:///{root}/mlflow.db",
        mlflow_artifact_location=str(root / "art"),
        mlflow_experiment="mammo-film-test",
        data_dir=root / "data",  # the held-out split the gate re-scores, the signing key
    )


def film_predictions(signal: float, n: int = 60, seed: int = 0) -> FilmPredictions:
    """``n`` test films (half with one lesion) + 10 validation films, 10 regions each scoring
    U(0, 0.6); the lesion's region scores U(0, 0.6) + 0.4 ``signal``; same noise per seed."""
    rng = np.random.default_rng(seed)
    total = n + 10
    labels = (np.arange(total) % 2).astype(np.int64)
    base = rng.uniform(0.0, 0.6, size=(total, 10))
    regions = []
    for i in range(total):
        film = [(float(b), -1, 0, 0, 10, 10) for b in base[i]]
        if labels[i]:
            film[3] = (min(1.0, float(base[i, 3]) + 0.4 * signal), 0, 0, 0, 10, 10)
        regions.append(tuple(sorted(film, key=lambda r: -r[0])))
    return FilmPredictions(
        film_ids=tuple(f"film{i:03d}" for i in range(total)),
        roles=tuple("validation" if i >= n else "test" for i in range(total)),
        labels=labels,
        n_lesions=labels.copy(),
        scores=np.asarray([r[0][0] for r in regions]),
        regions=tuple(regions),
    )


def make_version(s: Settings, tile_signal: float, film_signal: float | None) -> str:
    """A version evaluated (and signed) like the evaluate stage does: tile predictions of a
    real model on the held-out split, plus film predictions when ``film_signal`` is given."""
    root = s.data_dir / "runs" / f"{s.registered_model_name}-{tile_signal}-{film_signal}"
    root.mkdir(parents=True, exist_ok=True)
    film: dict = {}
    if film_signal is not None:
        films = film_predictions(film_signal)
        film_path = root / f"film_predictions-{next(_names)}" / "film_predictions.csv"
        film_path.parent.mkdir()
        film = {
            "evaluation_artifacts": (film_path,),
            "evaluation_metrics": {"film_threshold": 0.7, "film_roc_auc": 0.9},
            "evaluation_tags": {"film_predictions_sha256": films.write(film_path),
                                "film_set_sha256": FILM_SET,
                                "film_threshold_method": "film_validation"},
        }  # fmt: skip
    labels = fixed_labels()
    run_id = evaluated_run(
        s,
        labels,
        scores_for(labels, tile_signal),
        THRESHOLD,
        tags={"synthetic": "true", "weights_source": "none"},
        **film,
    )
    return registry.register_run(s, run_id).version


def fresh(store: Settings) -> Settings:
    return store.model_copy(update={"registered_model_name": f"film{next(_names)}"})


def test_better_on_tiles_worse_on_films_is_refused(store, tmp_path):
    s = fresh(store)
    champion = make_version(s, tile_signal=3.0, film_signal=2.0)
    decision, result = registry.gate_and_promote(s, champion)
    assert decision.passed and result.champion == champion, decision.reasons
    tags = registry.review_context(s, champion).tags
    assert tags["film_threshold"] == "0.7" and tags["film_threshold_method"] == "film_validation"
    from mammo_pipeline.serving.model_loader import describe_version

    point = describe_version(s, champion).film_operating_point()
    assert point == {"threshold": 0.7, "method": "film_validation"}  # what /analyze applies

    candidate = make_version(s, tile_signal=3.6, film_signal=0.3)
    decision = registry.gate_version(s, candidate)
    assert not decision.passed
    tile_checks = {c.name: c.passed for c in decision.checks if ":" in c.name}
    assert tile_checks["not_worse_than_champion:roc_auc"]  # better on tiles
    assert not tile_checks["not_worse_than_champion:film_roc_auc"]
    assert any("film_roc_auc" in r and "champion v1" in r for r in decision.reasons), (
        decision.reasons
    )
    vs = decision.statistics["films_vs_champion"]
    assert vs["n"] == 60 and vs["n_resamples"] == 1000
    lines = "\n".join(statistics_lines(decision))
    assert "film ROC AUC" in lines and "60 films" in lines and "SYNTHETIC" in lines
    json.dumps(decision.to_dict(), allow_nan=False)

    ctx = registry.review_context(s, candidate, decision)
    page = render_html(ctx)
    assert "film_roc_auc" in page and "60 films" in page


def test_same_films_pass_and_a_changed_film_file_fails(store):
    s = fresh(store)
    champion = make_version(s, 3.0, 2.0)
    assert registry.gate_and_promote(s, champion)[0].passed
    same = make_version(s, 3.0, 2.0)
    decision = registry.gate_version(s, same)
    assert decision.passed, decision.reasons
    assert {"not_worse_than_champion:film_froc_sens_at_1fp"} <= {c.name for c in decision.checks}
    assert decision.is_consistent()

    # a champion judged on films: a candidate without film evidence fails closed (it could
    # be worse at what /analyze serves, unseen)
    bare = make_version(s, 3.0, None)
    decision = registry.gate_version(s, bare)
    assert not decision.passed
    assert any("has no film evidence" in r for r in decision.reasons), decision.reasons

    # evaluated on another film set: not comparable, refused (never silently skipped)
    other = make_version(s, 3.0, 2.0)
    client = mlflow.MlflowClient(s.mlflow_tracking_uri)
    run_id = client.get_model_version(s.registered_model_name, other).run_id
    client.set_tag(run_id, "film_set_sha256", "e" * 64)
    decision = registry.gate_version(s, other)
    assert not decision.passed
    assert any("different film set" in r for r in decision.reasons), decision.reasons

    # a champion from before film-level evaluation: the candidate is judged on tiles, and
    # the skip is recorded; /analyze falls back to the tile threshold, flagged
    older = fresh(store)
    first = make_version(older, 3.0, None)
    assert registry.gate_and_promote(older, first)[0].passed
    decision = registry.gate_version(older, make_version(older, 3.0, 2.0))
    assert decision.passed and "films_vs_champion_skipped" in decision.statistics
    from mammo_pipeline.serving.model_loader import describe_version

    info = describe_version(older, first)
    assert info.film_operating_point() == {"threshold": THRESHOLD, "method": "tile_fallback"}

    # the film predictions replaced after evaluation: the evidence is refused
    tampered = make_version(s, 3.0, 2.0)
    client = mlflow.MlflowClient(s.mlflow_tracking_uri)
    run_id = client.get_model_version(s.registered_model_name, tampered).run_id
    client.set_tag(run_id, "film_predictions_sha256", "0" * 64)
    decision = registry.gate_version(s, tampered)
    assert not decision.passed
    assert any("film evidence was changed" in r for r in decision.reasons), decision.reasons
