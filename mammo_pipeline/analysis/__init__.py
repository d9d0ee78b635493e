"""Whole-mammogram analysis: sliding tiles at the training scale over the breast (the film
prepared by :mod:`mammo_pipeline.imaging.preprocess`, as for training), per-tile scores
aggregated to an image score with located regions, and a heatmap picture.

Arrays in, results out (no file formats here): callers decode images and know the pixel
spacing. See :func:`analyze` and :func:`render_heatmap`.

May import: config, errors, common, data (preprocessing, the contract's scale) and imaging.
Never training, registry, serving, orchestration or cli: the model comes in as a callable.
"""

from mammo_pipeline.analysis.analyze import (
    AGGREGATION,
    DEFAULT_PIXEL_SPACING_MM,
    AnalysisResult,
    Region,
    TileGrid,
    analyze,
)
from mammo_pipeline.analysis.bounds import check_film_bounds
from mammo_pipeline.analysis.errors import (
    AnalysisError,
    AnalysisInputError,
    AnalysisTimeError,
    FilmTooLargeError,
    ModelOutputError,
    NoBreastTissueError,
    NonFiniteScoreError,
    TooManyWindowsError,
)
from mammo_pipeline.analysis.heatmap import probability_map, render_heatmap
from mammo_pipeline.imaging.preprocess import Box

__all__ = [
    "AGGREGATION",
    "DEFAULT_PIXEL_SPACING_MM",
    "AnalysisError",
    "AnalysisInputError",
    "AnalysisResult",
    "AnalysisTimeError",
    "Box",
    "FilmTooLargeError",
    "ModelOutputError",
    "NoBreastTissueError",
    "NonFiniteScoreError",
    "Region",
    "TileGrid",
    "TooManyWindowsError",
    "analyze",
    "check_film_bounds",
    "probability_map",
    "render_heatmap",
]
