"""Errors of whole-mammogram analysis, each with the HTTP status a service should answer.

All are :class:`~mammo_pipeline.errors.MammoError`, so the CLI prints them as one line.
"""

from __future__ import annotations

from mammo_pipeline.errors import MammoError


class AnalysisError(MammoError):
    """Base class of the errors raised by :mod:`mammo_pipeline.analysis`."""

    status: int = 500


class AnalysisInputError(AnalysisError):
    """The image or a parameter cannot be analysed (bad pixels, spacing, sizes)."""

    status = 400


class NoBreastTissueError(AnalysisError):
    """No part of the image looks like breast tissue, so there is nothing to score."""

    status = 422


class ModelOutputError(AnalysisError):
    """The model answered with the wrong number of scores or values outside 0..1."""

    status = 500


class NonFiniteScoreError(ModelOutputError):
    """The model returned NaN or infinity for a tile: never read as a negative."""


class FilmTooLargeError(AnalysisError):
    """The film would be larger than the configured limit once resampled (checked before)."""

    status = 413


class TooManyWindowsError(AnalysisError):
    """The window grid over the film is larger than the configured cap (stride too small)."""

    status = 422


class AnalysisTimeError(AnalysisError):
    """Scoring the film took longer than its time budget; stopped between two batches."""

    status = 422
