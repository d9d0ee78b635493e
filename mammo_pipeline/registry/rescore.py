"""Evidence the gate checks itself: the registered model re-scores a random subset of the
held-out test tiles and must reproduce the logged predictions.

At gate time, on the gating worker:

1. the held-out test set here (``settings.test_split``) must be the one the version was
   evaluated on (its manifest digest equals the run's ``test_manifest_sha256``), and the
   predictions must list exactly its tiles with its labels;
2. the registered model's files (``models:/<name>/<version>``, downloaded as the service
   downloads them) must have the digest the evaluation signed;
3. the model is loaded with ``mlflow.keras.load_model`` (the service's loader), and
   ``settings.gate_rescore_tiles`` tiles drawn with a seed chosen now
   (:func:`secrets.randbits`, recorded in the decision) go through the evaluation's own input
   path (:func:`~mammo_pipeline.data.pipeline.numpy_dataset`,
   :func:`~mammo_pipeline.training.evaluate.predict_scores`);
4. every re-scored probability must be within ``settings.gate_rescore_tolerance`` (default
   1e-4) of the logged one.

Why a random subset is enough for the forgeries that matter, and what it costs: see
``docs/threat-model.md``. A problem is returned as text and fails ``evidence_intact``.
"""

from __future__ import annotations

import secrets
import tempfile
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from mammo_pipeline.config import Settings

if TYPE_CHECKING:
    from mammo_pipeline.registry.evidence import Evidence


@dataclass(frozen=True)
class Rescore:
    """What one re-scoring checked (kept in the gate decision, signed with it)."""

    tiles: int
    of: int
    seed: int
    tolerance: float
    max_abs_diff: float
    differing: int
    worst_tile: str
    model_sha256: str
    test_manifest_sha256: str
    seconds: float
    load_seconds: float
    score_seconds: float

    @property
    def passed(self) -> bool:
        return self.differing == 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        what = (
            f"re-scored {self.tiles} of {self.of} held-out tiles with the registered model "
            f"(seed {self.seed}): "
        )
        if self.passed:
            return what + (
                f"all within {self.tolerance:g} of the logged predictions "
                f"(max |Δ| {self.max_abs_diff:.1e}; {self.seconds:.1f} s)"
            )
        return what + (
            f"{self.differing} of {self.tiles} differ from the logged predictions by more than "
            f"{self.tolerance:g} (largest |Δ| {self.max_abs_diff:.3g}, tile {self.worst_tile}): "
            "the predictions were not made by this model"
        )


def test_set_problem(settings: Settings, evidence: Evidence) -> str | None:
    """Why the held-out test set here is not the one ``evidence`` was evaluated on."""
    from mammo_pipeline.data.manifest import build_manifest, held_out_files
    from mammo_pipeline.data.numpy_split import find_splits, load_split
    from mammo_pipeline.errors import DataError
    from mammo_pipeline.training.predictions import tile_ids_for

    assert evidence.predictions is not None
    try:
        here = build_manifest(held_out_files(settings.test_split)).sha256
    except DataError as exc:
        return f"no held-out test set to re-score on here ({exc})"
    if here != evidence.test_manifest_sha256:
        return (
            f"the held-out test set here ({settings.test_split}, test_manifest_sha256 "
            f"{here[:12]}) is not the one v{evidence.version} was evaluated on "
            f"({(evidence.test_manifest_sha256 or 'none')[:12]}): cannot re-score"
        )
    ids: list[str] = []
    labels: list[np.ndarray] = []
    for path in find_splits(settings.test_split):
        split = load_split(path)
        ids += tile_ids_for(path.name, len(split))
        labels.append(np.asarray(split.labels, dtype=np.int64))
    if tuple(ids) != evidence.predictions.tile_ids:
        return "the logged predictions do not list the held-out test set's tiles in its order"
    if not np.array_equal(np.concatenate(labels), evidence.predictions.labels):
        return "the logged predictions carry other labels than the held-out test set"
    return None


def _subset(settings: Settings, indices: np.ndarray):
    """A :class:`NumpySplit` of the test tiles at global ``indices`` (files in name order)."""
    from mammo_pipeline.data.numpy_split import NumpySplit, find_splits, load_split

    images, labels = [], []
    offset = 0
    splits = [load_split(p) for p in find_splits(settings.test_split)]
    for split in splits:
        local = indices[(indices >= offset) & (indices < offset + len(split))] - offset
        images += [np.asarray(split.images[i]) for i in local]
        labels += [int(split.labels[i]) for i in local]
        offset += len(split)
    first = splits[0]
    return NumpySplit("rescore", first.data_path, first.labels_path,
                      np.stack(images), np.asarray(labels, dtype=np.int64))  # fmt: skip


def rescore(
    settings: Settings,
    name: str,
    version: str,
    evidence: Evidence,
    signed_model_sha256: str | None,
) -> Rescore | str:
    """Re-score ``version`` on a random subset of the held-out tiles; a :class:`Rescore`, or
    the text of the problem that prevents it. The model files must have the digest the
    evaluation signed (None: the caller already failed the signature; re-score anyway)."""
    import mlflow

    from mammo_pipeline.common.mlflow_access import quiet_artifact_downloads, store_uri, use_store
    from mammo_pipeline.common.signing import directory_sha256
    from mammo_pipeline.data.pipeline import PipelineOptions, numpy_dataset
    from mammo_pipeline.training.evaluate import predict_scores

    assert evidence.predictions is not None
    started = time.perf_counter()
    problem = test_set_problem(settings, evidence)
    if problem is not None:
        return problem
    use_store(settings)
    with tempfile.TemporaryDirectory(prefix="mammo-rescore-") as tmp, quiet_artifact_downloads():
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{name}/{version}",
            dst_path=tmp,
            tracking_uri=store_uri(settings.mlflow_tracking_uri),
        )
        digest = directory_sha256(local)
        if signed_model_sha256 is not None and digest != signed_model_sha256:
            return (
                f"the registered model's files (sha256 {digest[:12]}) are not the files the "
                f"signed evaluation scored ({signed_model_sha256[:12]}): the artifact was "
                "swapped after evaluation"
            )
        loaded = time.perf_counter()
        model = mlflow.keras.load_model(local)
        load_seconds = time.perf_counter() - loaded
    n = len(evidence.predictions)
    k = min(settings.gate_rescore_tiles, n)
    seed = secrets.randbits(63)
    indices = np.sort(np.random.default_rng(seed).choice(n, size=k, replace=False))
    scoring = time.perf_counter()
    split = _subset(settings, indices)
    opts = PipelineOptions(image_size=int(model.input_shape[1]), batch_size=settings.batch_size)
    scores = predict_scores(model, numpy_dataset(split, opts))
    score_seconds = time.perf_counter() - scoring
    bad = np.flatnonzero(~np.isfinite(scores))
    if bad.size:
        tile = evidence.predictions.tile_ids[int(indices[bad[0]])]
        return f"the registered model outputs a non-finite score on held-out tile {tile}"
    diffs = np.abs(scores - evidence.predictions.scores[indices])
    worst = int(np.argmax(diffs))
    return Rescore(
        tiles=k,
        of=n,
        seed=seed,
        tolerance=settings.gate_rescore_tolerance,
        max_abs_diff=float(diffs[worst]),
        differing=int((diffs > settings.gate_rescore_tolerance).sum()),
        worst_tile=evidence.predictions.tile_ids[int(indices[worst])],
        model_sha256=digest,
        test_manifest_sha256=evidence.test_manifest_sha256 or "",
        seconds=round(time.perf_counter() - started, 3),
        load_seconds=round(load_seconds, 3),
        score_seconds=round(score_seconds, 3),
    )
