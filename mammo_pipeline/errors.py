"""Errors that carry a message meant for a person (printed by the CLI without a traceback)."""

from __future__ import annotations

from pathlib import Path


class MammoError(Exception):
    """Base class: the message names the problem and, when known, the file."""


class DataError(MammoError):
    """A data file is missing, unreadable or breaks the data contract."""

    def __init__(self, path: Path | str | None, problem: str) -> None:
        self.path = Path(path) if path is not None else None
        self.problem = problem
        super().__init__(f"{path}: {problem}" if path is not None else problem)


class CorruptRecordError(DataError):
    """A tfrecord file whose framing or checksum is broken at a given record."""

    def __init__(self, path: Path | str, index: int, problem: str) -> None:
        self.index = index
        super().__init__(path, f"record {index}: {problem}")


class ConfigError(MammoError):
    """The configuration asks for something that cannot be provided."""


class TrainingDiverged(MammoError):
    """The loss became NaN or infinite: the run is stopped and marked FAILED."""

    def __init__(self, epoch: int, loss: float, learning_rate: float | None = None) -> None:
        self.epoch = epoch
        self.loss = loss
        hint = f" (now {learning_rate:g})" if learning_rate is not None else ""
        super().__init__(
            f"training diverged at epoch {epoch} (loss {loss}): lower the learning rate{hint}"
        )
