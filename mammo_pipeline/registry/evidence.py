"""What the gate knows about one model version: its run's logged metrics and threshold, the
test set it was evaluated on, and its per-tile test predictions, read back from the run's
artifact and checked against the digest recorded at evaluation; when the run was evaluated on
a film set too, its per-film ``/analyze`` answers (``evaluation/film_predictions.csv``),
re-checked against ``film_predictions_sha256`` the same way (a changed file fails the gate).

Loading never raises for a problem with the version's data: the problem is kept in
:attr:`Evidence.problem` and fails the gate (fail closed).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mammo_pipeline.common.jsonsafe import finite_or_none
from mammo_pipeline.common.mlflow_access import quiet_artifact_downloads
from mammo_pipeline.training.predictions import (
    PREDICTIONS_DIGEST_TAG,
    PREDICTIONS_FILE,
    TilePredictions,
    parse_predictions,
    sha256_of,
)
from mammo_pipeline.training.signed_evaluation import EVALUATION_SIGNATURE_TAG

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from mammo_pipeline.training.film_eval import FilmPredictions

#: Where evaluation logs the predictions on the run.
PREDICTIONS_ARTIFACT = f"evaluation/{PREDICTIONS_FILE}"


@dataclass
class Evidence:
    """One version's evidence; ``problem`` says why it cannot be used (None when it can)."""

    version: str
    run_id: str | None = None
    run_status: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    threshold: float | None = None
    test_manifest_sha256: str | None = None
    predictions: TilePredictions | None = None
    predictions_sha256: str | None = None
    synthetic: bool = False
    problem: str | None = None
    #: per-film answers on the film set with that set's manifest digest (None: not evaluated
    #: on films, e.g. an older run)
    film_predictions: FilmPredictions | None = None
    film_set_sha256: str | None = None
    film_predictions_sha256: str | None = None
    #: the run's signed evaluation record (tag ``signed_evaluation``), as stored
    signed_evaluation: str | None = None
    #: what the gate found checking the evidence itself (:mod:`.attestation`): the signed
    #: evaluation's key and digests, the re-scoring (:mod:`.rescore`)
    attested: dict[str, Any] | None = None

    @property
    def usable(self) -> bool:
        return self.problem is None and self.predictions is not None and self.threshold is not None


def load_evidence(client: MlflowClient, name: str, version: str) -> Evidence:
    """Read version ``version`` of ``name`` with its run and predictions artifact."""
    ev = Evidence(version=str(version))
    try:
        mv = client.get_model_version(name, str(version))
        ev.run_id = mv.run_id or None
        if not ev.run_id:
            ev.problem = f"v{version} has no training run: no evidence"
            return ev
        run = client.get_run(ev.run_id)
        ev.run_status = run.info.status
        ev.metrics = dict(run.data.metrics)
        tags = run.data.tags
        ev.test_manifest_sha256 = tags.get("test_manifest_sha256") or None
        ev.synthetic = tags.get("synthetic") == "true"
        ev.signed_evaluation = tags.get(EVALUATION_SIGNATURE_TAG) or None
        ev.threshold = finite_or_none(ev.metrics.get("decision_threshold"))
        if ev.threshold is None:
            ev.threshold = finite_or_none(run.data.params.get("decision_threshold"))
        expected = tags.get(PREDICTIONS_DIGEST_TAG)
        if not expected:
            ev.problem = (
                f"v{version}: run {ev.run_id} has no per-tile test predictions "
                f"({PREDICTIONS_DIGEST_TAG} tag missing): re-run `mammo evaluate --run-id "
                f"{ev.run_id}`"
            )
            return ev
        data, ev.predictions_sha256 = _verified_artifact(
            client, ev, PREDICTIONS_ARTIFACT, expected, "evidence"
        )
        if data is None:
            return ev
        ev.predictions = parse_predictions(data, f"run {ev.run_id}: {PREDICTIONS_ARTIFACT}")
        _load_film_evidence(client, ev, tags)
        if ev.threshold is None:
            ev.problem = f"v{version}: run {ev.run_id} has no finite decision_threshold"
    except Exception as exc:  # noqa: BLE001 - any failure to read the evidence fails closed
        ev.problem = f"v{version}: cannot read its evidence: {type(exc).__name__}: {exc}"
    return ev


def _load_film_evidence(client: MlflowClient, ev: Evidence, tags: dict[str, str]) -> None:
    """Read the film predictions when the run has them; a digest mismatch is a problem."""
    from mammo_pipeline.training.film_eval import (
        FILM_PREDICTIONS_DIGEST_TAG,
        FILM_PREDICTIONS_FILE,
        FILM_SET_DIGEST_TAG,
        parse_film_predictions,
    )

    expected = tags.get(FILM_PREDICTIONS_DIGEST_TAG)
    if not expected or ev.run_id is None:
        return
    artifact = f"evaluation/{FILM_PREDICTIONS_FILE}"
    data, ev.film_predictions_sha256 = _verified_artifact(
        client, ev, artifact, expected, "film evidence"
    )
    if data is None:
        return
    ev.film_predictions = parse_film_predictions(data, f"run {ev.run_id}: {artifact}")
    ev.film_set_sha256 = tags.get(FILM_SET_DIGEST_TAG) or None


def _verified_artifact(
    client: MlflowClient, ev: Evidence, artifact: str, expected: str, what: str
) -> tuple[bytes | None, str]:
    """(bytes, sha256) of a run's evidence artifact; the bytes are None when the digest is
    not the one recorded at evaluation, and ``ev.problem`` says the ``what`` was changed."""
    assert ev.run_id is not None
    with tempfile.TemporaryDirectory() as tmp, quiet_artifact_downloads():
        data = Path(client.download_artifacts(ev.run_id, artifact, tmp)).read_bytes()
    digest = sha256_of(data)
    if digest != expected:
        ev.problem = (
            f"v{ev.version}: {artifact} of run {ev.run_id} does not match the digest recorded "
            f"at evaluation ({digest[:12]} != {expected[:12]}): the {what} was changed"
        )
        return None, digest
    return data, digest
