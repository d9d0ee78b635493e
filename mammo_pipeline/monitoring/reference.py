"""The served version's reference: what its own held-out evaluation looked like.

- **Scores**: the per-tile predictions its evaluation logged (``evaluation/test_predictions.
  csv``, read back through :func:`mammo_pipeline.registry.evidence.load_evidence`, so the
  digest recorded at evaluation is checked); its decision threshold; the expected positive
  rate = the share of held-out tiles at or above the threshold. When the run was evaluated on
  a film set, the ``test`` films' ``/analyze`` scores and the film threshold, the reference of
  ``/analyze`` traffic.
- **Input statistics**: mean, std and saturated fraction of the model input of every
  held-out test tile, computed with the service's own preprocessing
  (:func:`mammo_pipeline.data.preprocess.prepare_image` at the version's image size) from the
  test split the version was evaluated on (its manifest digest must match the run's
  ``test_manifest_sha256``). Training does not log input statistics today; the held-out split
  is drawn from the same sources as the training data, is fixed per version and is what the
  version's scores were measured on. Computed once per version and logged on its run as
  ``monitoring/reference_inputs.json``; later reports read it back. Without a matching test
  split input drift is reported as unavailable, with the reason (never as "no drift").
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np

from mammo_pipeline.common.mlflow_access import mlflow_client, quiet_artifact_downloads
from mammo_pipeline.config import Settings
from mammo_pipeline.errors import MammoError
from mammo_pipeline.monitoring.records import SATURATED_AT, STAT_DECIMALS

INPUTS_ARTIFACT_DIR: Final = "monitoring"
INPUTS_ARTIFACT: Final = "reference_inputs.json"
INPUT_FIELDS: Final = ("input_mean", "input_std", "saturated_fraction")
_BATCH = 256


class MonitorError(MammoError):
    """Monitoring cannot be computed (no served version, no reference, no store)."""


@dataclass
class VersionReference:
    model_name: str
    version: str
    run_id: str
    threshold: float
    synthetic: bool
    weights: str
    tile_scores: np.ndarray
    tile_positive: np.ndarray
    film_scores: np.ndarray | None = None
    film_threshold: float | None = None
    inputs: dict[str, np.ndarray] | None = None
    inputs_note: str = ""

    @property
    def expected_positive_rate(self) -> float:
        return float(np.mean(self.tile_scores >= self.threshold))

    @property
    def expected_film_positive_rate(self) -> float | None:
        if self.film_scores is None or self.film_threshold is None or not self.film_scores.size:
            return None
        return float(np.mean(self.film_scores >= self.film_threshold))

    @property
    def data_label(self) -> str:
        """What data the reference (and the version) is: for every figure's caption."""
        return "SYNTHETIC data" if self.synthetic else "data not marked synthetic"

    def caption(self) -> str:
        return (
            f"{self.model_name} v{self.version} (run {self.run_id[:8]}, weights "
            f"{self.weights or 'unknown'}), reference: its held-out test set, {self.data_label}"
        )


def served_version(settings: Settings, version: str | None = None) -> str:
    """``version``, or the version the ``champion`` alias points at."""
    if version:
        return str(version)
    from mammo_pipeline.registry.names import CHAMPION
    from mammo_pipeline.registry.store import read_aliases

    aliases = read_aliases(mlflow_client(settings), settings.registered_model_name)
    if CHAMPION not in aliases:
        raise MonitorError(
            f"{settings.registered_model_name} has no champion: nothing is served to monitor "
            "(name one with --version V)"
        )
    return aliases[CHAMPION]


def load_reference(settings: Settings, version: str) -> VersionReference:
    """The reference of ``version``; :class:`MonitorError` when its evidence is unusable."""
    from mammo_pipeline.registry.evidence import load_evidence

    client = mlflow_client(settings)
    name = settings.registered_model_name
    ev = load_evidence(client, name, version)
    if not ev.usable:
        raise MonitorError(f"no reference for {name} v{version}: {ev.problem or 'no evidence'}")
    assert ev.predictions is not None and ev.threshold is not None and ev.run_id is not None
    run = client.get_run(ev.run_id)
    ref = VersionReference(
        model_name=name,
        version=str(version),
        run_id=ev.run_id,
        threshold=float(ev.threshold),
        synthetic=ev.synthetic,
        weights=run.data.tags.get("weights_source", ""),
        tile_scores=np.asarray(ev.predictions.scores, dtype=np.float64),
        tile_positive=ev.predictions.positive.astype(bool),
    )
    if ev.film_predictions is not None:
        films = ev.film_predictions.subset("test")
        film_t = ev.metrics.get("film_threshold")
        if len(films) and film_t is not None and np.isfinite(film_t):
            ref.film_scores = np.asarray(films.scores, dtype=np.float64)
            ref.film_threshold = float(film_t)
    image_size = _image_size(run, settings)
    ref.inputs, ref.inputs_note = reference_inputs(
        settings, client, ev.run_id, ev.test_manifest_sha256, image_size
    )
    return ref


def _image_size(run: Any, settings: Settings) -> int:
    try:
        return int(run.data.params.get("image_size", settings.image_size))
    except ValueError:
        return settings.image_size


def reference_inputs(
    settings: Settings,
    client: Any,
    run_id: str,
    test_manifest_sha256: str | None,
    image_size: int,
) -> tuple[dict[str, np.ndarray] | None, str]:
    """(input statistics per held-out tile, where they came from or why there are none)."""
    logged = _read_logged(client, run_id)
    if logged is not None:
        return logged, f"logged on run {run_id[:8]} ({INPUTS_ARTIFACT_DIR}/{INPUTS_ARTIFACT})"
    from mammo_pipeline.data.manifest import build_manifest, held_out_files

    try:
        digest = build_manifest(held_out_files(settings.test_split)).sha256
    except MammoError as exc:
        return None, f"input drift unavailable: no held-out test split to derive it from ({exc})"
    if not test_manifest_sha256 or digest != test_manifest_sha256:
        return None, (
            f"input drift unavailable: the test split at {settings.test_split} is not the one "
            f"run {run_id[:8]} was evaluated on (manifest {digest[:12]} != "
            f"{(test_manifest_sha256 or 'none')[:12]})"
        )
    values = compute_input_stats(settings.test_split, image_size)
    note = f"derived from the held-out test split (manifest {digest[:12]}) at {image_size}px"
    try:
        _log_inputs(client, run_id, values, note)
        note += f", logged on run {run_id[:8]}"
    except Exception as exc:  # noqa: BLE001 - a read-only MLflow user can still monitor
        note += f" (not logged on the run: {type(exc).__name__})"
    return values, note


def compute_input_stats(test_dir: Path, image_size: int) -> dict[str, np.ndarray]:
    """Per-tile mean, std and saturated fraction of the model input of every held-out tile."""
    from mammo_pipeline.data.numpy_split import find_splits, load_split
    from mammo_pipeline.data.preprocess import prepare_image

    out: dict[str, list[np.ndarray]] = {k: [] for k in INPUT_FIELDS}
    for path in find_splits(test_dir):
        images = load_split(path).images
        for start in range(0, images.shape[0], _BATCH):
            x = np.asarray(prepare_image(np.asarray(images[start : start + _BATCH]), image_size))
            flat = x.reshape(x.shape[0], -1).astype(np.float64)
            out["input_mean"].append(np.round(flat.mean(axis=1), STAT_DECIMALS))
            out["input_std"].append(np.round(flat.std(axis=1), STAT_DECIMALS))
            out["saturated_fraction"].append((flat >= SATURATED_AT).mean(axis=1))
    if not out["input_mean"]:
        raise MonitorError(f"{test_dir}: no held-out tiles to derive input statistics from")
    return {k: np.concatenate(v) for k, v in out.items()}


def _read_logged(client: Any, run_id: str) -> dict[str, np.ndarray] | None:
    names = {a.path for a in client.list_artifacts(run_id, INPUTS_ARTIFACT_DIR)}
    path = f"{INPUTS_ARTIFACT_DIR}/{INPUTS_ARTIFACT}"
    if path not in names:
        return None
    with tempfile.TemporaryDirectory() as tmp, quiet_artifact_downloads():
        data = json.loads(Path(client.download_artifacts(run_id, path, tmp)).read_text())
    return {k: np.asarray(data[k], dtype=np.float64) for k in INPUT_FIELDS}


def _log_inputs(client: Any, run_id: str, values: dict[str, np.ndarray], note: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / INPUTS_ARTIFACT
        body = {k: [round(float(v), 6) for v in values[k]] for k in INPUT_FIELDS}
        path.write_text(json.dumps({"source": note, **body}))
        client.log_artifact(run_id, str(path), INPUTS_ARTIFACT_DIR)
