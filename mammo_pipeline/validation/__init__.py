"""Validation of incoming tfrecord files with Great Expectations.

One module per job:

- :mod:`.profile`   stream a file into one row of small numbers per record + file facts;
- :mod:`.gx_context` open the committed GX file context (``expectations/``) and run its checkpoint;
- :mod:`.verdict`   turn a GX validation result into reasons in words and numbers;
- :mod:`.movement`  atomic, never-overwriting moves into ``validated/`` and ``quarantine/``;
- :mod:`.ledger`    the sha256 ledger (idempotence) and the content-hash index of validated data;
- :mod:`.reference` / :mod:`.drift` the reference profile of training data and drift statistics;
- :mod:`.result`    the typed, JSON-serialisable result returned to the CLI, DAG and MLflow;
- :mod:`.run`       :func:`validate_landing`, the one entry point that ties them together.

The rules themselves live only in the expectation suite under ``expectations/gx/expectations/``.
Nothing heavy (pandas, GX) is imported by importing this package.

May import: config, errors, common and data. Never training, registry, serving,
orchestration or cli.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["ValidationRunResult", "FileResult", "validate_landing"]

if TYPE_CHECKING:
    from mammo_pipeline.validation.result import FileResult, ValidationRunResult
    from mammo_pipeline.validation.run import validate_landing


def __getattr__(name: str) -> Any:
    if name in ("ValidationRunResult", "FileResult"):
        from mammo_pipeline.validation import result

        return getattr(result, name)
    if name == "validate_landing":
        from mammo_pipeline.validation.run import validate_landing

        return validate_landing
    raise AttributeError(name)
