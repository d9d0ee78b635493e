"""Film-level evaluation: the trained model run through :func:`~mammo_pipeline.analysis.analyze`
(what ``/analyze`` serves) on every film of the film set, and the film threshold.

Runs inside :func:`mammo_pipeline.training.evaluate.evaluate_model` when the film set
(``settings.film_test_split``, :mod:`mammo_pipeline.data.film_set`) exists; a missing set
means no film metrics (said once in the log), a broken one is an error.

**Film threshold** (the operating point of ``/analyze``, whose image score is the largest
window probability):

* ``film_validation``: chosen on the films of role ``validation`` with the tile rule
  (:func:`~.evaluate.choose_threshold`: the highest precision with recall >= target_recall),
  when they include at least one film with a lesion;
* ``window_corrected``: otherwise, from the tile threshold ``t`` and the median number ``W``
  of windows scored per film: ``t_film = t ** (1 / W)``. If a negative window's probability
  were uniform on [0, 1], one window exceeds ``t`` with probability ``1 - t`` and the max of
  ``W`` independent windows exceeds ``t ** (1 / W)`` with the same probability, so a
  negative film is called positive about as often as a negative tile. Windows overlap and
  real scores are not uniform: it is a stop-gap, named as such in the run.

**Metrics** (on the films of role ``test``; intervals and definitions in
:mod:`mammo_pipeline.stats.film`): ``film_roc_auc`` with ``film_roc_auc_low`` /
``film_roc_auc_high`` (DeLong, 95 %), ``film_froc_sens_at_0_5fp``, ``film_froc_sens_at_1fp``,
``film_froc_sens_at_2fp``, ``film_top1_hit_rate``, ``film_topk_hit_rate`` (k =
``film_top_k``), ``film_n``, ``film_positives``, ``film_lesions``, ``film_threshold`` and, at
it, ``film_sensitivity`` and ``film_specificity``. Tags: ``film_threshold_method``,
``film_set_sha256`` (the manifest digest), ``film_predictions_sha256``.

**Artifacts** (``evaluation/``): ``film_predictions.csv`` (one row per film: id, role, label,
lesions, film score, the top-k regions as JSON ``[probability, hit lesion or -1, x0, y0, x1,
y1]``; floats written with ``repr``), ``froc.png`` and ``film_heatmap_<id>.png`` for a few
films, every figure naming SYNTHETIC data and the weights.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mammo_pipeline.config import Settings
from mammo_pipeline.errors import DataError, MammoError

logger = logging.getLogger(__name__)

FILM_PREDICTIONS_FILE = "film_predictions.csv"
FILM_PREDICTIONS_DIGEST_TAG = "film_predictions_sha256"
FILM_SET_DIGEST_TAG = "film_set_sha256"
FILM_THRESHOLD_METRIC = "film_threshold"
FILM_THRESHOLD_METHOD_TAG = "film_threshold_method"
#: Regions kept per film: enough for FROC up to 2 false positives per image and beyond.
FILM_TOP_K = 10
#: Films drawn as annotated heatmaps.
HEATMAPS = 3
HEADER = ("film_id", "role", "label_normal", "n_lesions", "score", "regions")
METHODS = ("film_validation", "window_corrected")


@dataclass(frozen=True)
class FilmPredictions:
    """One model's ``/analyze`` answers on a film set (the gate's film evidence)."""

    film_ids: tuple[str, ...]
    roles: tuple[str, ...]
    labels: np.ndarray  # (n,) 0/1
    n_lesions: np.ndarray  # (n,)
    scores: np.ndarray  # (n,)
    #: per film: [probability, hit lesion index or -1, x0, y0, x1, y1] per region
    regions: tuple[tuple[tuple[float, int, int, int, int, int], ...], ...]

    def __post_init__(self) -> None:
        n = len(self.film_ids)
        if not (len(self.roles) == len(self.regions) == n) or self.scores.shape != (n,):
            raise DataError(None, "film predictions: columns of different lengths")
        if not np.isfinite(self.scores).all():
            i = int(np.flatnonzero(~np.isfinite(self.scores))[0])
            raise DataError(None, f"film predictions: score of {self.film_ids[i]} not finite")

    def __len__(self) -> int:
        return len(self.film_ids)

    def subset(self, role: str) -> FilmPredictions:
        keep = [i for i, r in enumerate(self.roles) if r == role]
        return FilmPredictions(
            tuple(self.film_ids[i] for i in keep),
            tuple(self.roles[i] for i in keep),
            self.labels[keep],
            self.n_lesions[keep],
            self.scores[keep],
            tuple(self.regions[i] for i in keep),
        )

    def candidates(self, role: str = "test"):
        """The :class:`~mammo_pipeline.stats.film.FilmCandidates` of the films of ``role``."""
        from mammo_pipeline.stats.film import FilmCandidates

        part = self.subset(role)
        return FilmCandidates.build(
            part.labels,
            part.scores,
            [[(r[0], r[1]) for r in film] for film in part.regions],
            n_lesions=part.n_lesions,
            film_ids=part.film_ids,
            source=f"{FILM_PREDICTIONS_FILE} ({role} films)",
        )

    def to_csv(self) -> bytes:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(HEADER)
        for i, film in enumerate(self.film_ids):
            regions = [[float(r[0]), *(int(v) for v in r[1:])] for r in self.regions[i]]
            writer.writerow((film, self.roles[i], int(self.labels[i]), int(self.n_lesions[i]),
                             repr(float(self.scores[i])), json.dumps(regions)))  # fmt: skip
        return buf.getvalue().encode()

    def write(self, path: Path) -> str:
        """Write the CSV; returns its sha256."""
        from mammo_pipeline.training.predictions import write_evidence

        return write_evidence(path, self.to_csv())


def parse_film_predictions(data: bytes, source: str = FILM_PREDICTIONS_FILE) -> FilmPredictions:
    """Read the CSV; a malformed row is a :class:`DataError` naming the row."""
    rows = list(csv.reader(io.StringIO(data.decode("utf-8"))))
    if not rows or tuple(rows[0]) != HEADER:
        raise DataError(source, f"not a film predictions file (header {','.join(HEADER)})")
    ids, roles, labels, lesions, scores, regions = [], [], [], [], [], []
    for number, row in enumerate(rows[1:], start=2):
        try:
            film, role, label, n_les, score, reg = row
            value = float(score)
            if not math.isfinite(value):
                raise ValueError(f"score {score!r} is not finite")
            parsed = tuple(
                (float(r[0]), int(r[1]), int(r[2]), int(r[3]), int(r[4]), int(r[5]))
                for r in json.loads(reg)
            )
            if any(not math.isfinite(r[0]) for r in parsed):
                raise ValueError("a region score is not finite")
        except (ValueError, TypeError, IndexError) as exc:
            raise DataError(source, f"row {number}: {exc}") from None
        ids.append(film)
        roles.append(role)
        labels.append(int(label))
        lesions.append(int(n_les))
        scores.append(value)
        regions.append(parsed)
    if len(set(ids)) != len(ids):
        raise DataError(source, "duplicate film ids")
    return FilmPredictions(tuple(ids), tuple(roles), np.asarray(labels, dtype=np.int64),
                           np.asarray(lesions, dtype=np.int64),
                           np.asarray(scores, dtype=np.float64), tuple(regions))  # fmt: skip


def window_corrected_threshold(tile_threshold: float, windows: float) -> float:
    """``t ** (1 / W)`` (see the module docstring); ``W < 1`` counts as one window."""
    return float(tile_threshold) ** (1.0 / max(float(windows), 1.0))


def choose_film_threshold(
    predictions: FilmPredictions, tile_threshold: float, target_recall: float, windows: float
) -> tuple[float, str]:
    """(threshold, method): on the validation films when they hold a lesion, else corrected."""
    from mammo_pipeline.training.evaluate import choose_threshold

    val = predictions.subset("validation")
    if len(val) and int(val.labels.sum()) > 0:
        return choose_threshold(val.labels, val.scores, target_recall), "film_validation"
    return window_corrected_threshold(tile_threshold, windows), "window_corrected"


@dataclass
class FilmEvaluation:
    metrics: dict[str, float]
    tags: dict[str, str]
    artifacts: list[Path] = field(default_factory=list)
    predictions: FilmPredictions | None = None
    threshold: float = math.nan
    method: str = ""
    summary: dict[str, Any] = field(default_factory=dict)


def checked_predict(model) -> Callable[[np.ndarray], np.ndarray]:
    """``model.predict_on_batch`` as float64 (N,), refusing a non-finite output."""

    def predict_batch(x: np.ndarray) -> np.ndarray:
        out = np.asarray(model.predict_on_batch(x), dtype=np.float64).reshape(-1)
        if not np.isfinite(out).all():
            raise MammoError("the model returned a non-finite probability on a film window")
        return out

    return predict_batch


def _hit(lesions: Sequence[Any], box) -> int:
    for j, lesion in enumerate(lesions):
        if lesion.centre_in(box.x0, box.y0, box.x1, box.y1):
            return j
    return -1


def film_evaluation(
    model,
    settings: Settings,
    tile_threshold: float,
    out_dir: Path,
    *,
    synthetic: bool = False,
    weights: str = "",
    progress: bool = True,
) -> FilmEvaluation | None:
    """Analyse every film of ``settings.film_test_split``; None when there is no film set."""
    from tqdm.auto import tqdm

    from mammo_pipeline.analysis import analyze, render_heatmap
    from mammo_pipeline.data.film_set import is_film_set, load_film_set
    from mammo_pipeline.stats.film import summarize
    from mammo_pipeline.training import plots

    root = settings.film_test_split
    if not is_film_set(root):
        logger.warning("no film set at %s: no film-level metrics for this run", root)
        print(f"no film set at {root}: no film-level metrics for this run")
        return None
    films = load_film_set(root)  # a broken set is an error naming the file
    synthetic = synthetic or films.synthetic
    image_size = int(model.input_shape[1])
    predict_batch = checked_predict(model)
    results: dict[str, Any] = {}
    ids, roles, labels, lesions, scores, regions, windows = [], [], [], [], [], [], []
    for record, pixels in tqdm(films, total=len(films), desc="film evaluation", unit="film",
                               disable=not progress):  # fmt: skip
        result = analyze(
            pixels,
            predict_batch=predict_batch,
            image_size=image_size,
            threshold=float(tile_threshold),
            pixel_spacing_mm=record.pixel_spacing_mm,
            top_k=FILM_TOP_K,
        )
        results[record.film_id] = result
        ids.append(record.film_id)
        roles.append(record.role)
        labels.append(record.label_normal)
        lesions.append(len(record.lesions))
        scores.append(result.score)
        windows.append(result.tiles_scored)
        regions.append(tuple(
            (float(r.probability), _hit(record.lesions, r.box), r.box.x0, r.box.y0, r.box.x1,
             r.box.y1) for r in result.regions
        ))  # fmt: skip
    predictions = FilmPredictions(tuple(ids), tuple(roles), np.asarray(labels, dtype=np.int64),
                                  np.asarray(lesions, dtype=np.int64),
                                  np.asarray(scores, dtype=np.float64), tuple(regions))  # fmt: skip
    threshold, method = choose_film_threshold(
        predictions, tile_threshold, settings.target_recall, float(np.median(windows))
    )
    tags = {FILM_THRESHOLD_METHOD_TAG: method, FILM_SET_DIGEST_TAG: films.digest}
    metrics: dict[str, float] = {FILM_THRESHOLD_METRIC: threshold}
    test = predictions.subset("test")
    out_dir.mkdir(parents=True, exist_ok=True)
    artifacts: list[Path] = []
    summary: dict[str, Any] = {}
    if len(test) == 0:
        print(f"film set {root} has no films of role test: no film-level metrics")
    else:
        candidates = predictions.candidates("test")
        stats = summarize(candidates)
        summary = stats.to_dict()
        metrics.update(stats.metrics())
        called = test.scores >= threshold
        pos, neg = test.labels == 1, test.labels == 0
        metrics["film_sensitivity"] = float(called[pos].mean()) if pos.any() else math.nan
        metrics["film_specificity"] = float((~called[neg]).mean()) if neg.any() else math.nan
        from mammo_pipeline.stats.film import froc_curve

        fp, sens = froc_curve(candidates)
        artifacts.append(plots.froc_plot(fp, sens, out_dir / "froc.png", summary=stats,
                                         synthetic=synthetic, weights=weights))  # fmt: skip
    path = out_dir / FILM_PREDICTIONS_FILE
    tags[FILM_PREDICTIONS_DIGEST_TAG] = predictions.write(path)
    artifacts.append(path)
    for film_id in _heatmap_films(test):
        record = next(r for r in films.records if r.film_id == film_id)
        boxes = ", ".join(f"({b.x0},{b.y0})-({b.x1},{b.y1})" for b in record.lesions) or "none"
        caption = (f"film {film_id} ({record.role}); lesion boxes: {boxes}; film threshold "
                   f"{threshold:.3f} ({method}); weights: {weights or 'unknown'}")  # fmt: skip
        out = out_dir / f"film_heatmap_{film_id}.png"
        result = results[film_id]
        label = "positive" if result.score >= threshold else "negative"
        result = dataclasses.replace(result, threshold=threshold, label=label)  # film's point
        render_heatmap(films.pixels(record), result, out, caption=caption, synthetic=synthetic)
        artifacts.append(out)
    return FilmEvaluation(metrics, tags, artifacts, predictions, threshold, method, summary)


def _heatmap_films(test: FilmPredictions) -> list[str]:
    """The two highest-scoring films with lesions and the highest-scoring one without."""
    order = np.argsort(-test.scores, kind="stable")
    pos = [test.film_ids[i] for i in order if test.labels[i] == 1][: HEATMAPS - 1]
    neg = [test.film_ids[i] for i in order if test.labels[i] == 0][:1]
    return pos + neg
