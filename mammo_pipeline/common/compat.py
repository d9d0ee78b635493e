"""Workarounds for upstream bugs of the pinned libraries, in one place.

Each entry names the upstream issue and has a test in ``tests/test_compat.py`` that
reproduces the bug on the pinned version and FAILS once upstream has fixed it: that failure
is the signal to delete the workaround.

1. MLflow (3.17): ``SqlAlchemyStore.create_model_version`` resolves a ``models:/<model_id>``
   source with a default MLflow client, i.e. the process-wide tracking URI, not the
   client's own; registering a LoggedModel from a fresh process therefore fails with "Logged
   model ... not found" unless the global URI points at the same store.
   Upstream: https://github.com/mlflow/mlflow/issues/23367 (and the TODO it quotes in
   ``mlflow/store/model_registry/sqlalchemy_store.py``). Workaround:
   :func:`before_registering_logged_model`.
2. BentoML (1.4): a text form field where an API expects a file makes BentoML's multipart
   deserializer fetch the text as a URL, and a malformed multipart body escapes as a 500.
   Upstream: https://github.com/bentoml/BentoML/pull/5436 (error handling for failed file
   downloads in JSONSerde and MultipartSerde, open). BentoML has no public hook for request
   deserialization, so :func:`harden_bentoml_multipart` wraps the private
   ``_bentoml_impl.serde.MultipartSerde`` (the only private import in the project).
"""

from __future__ import annotations

from typing import Any

from mammo_pipeline.config import Settings

MLFLOW_GLOBAL_URI_ISSUE = "https://github.com/mlflow/mlflow/issues/23367"
BENTOML_MULTIPART_ISSUE = "https://github.com/bentoml/BentoML/pull/5436"


def before_registering_logged_model(settings: Settings) -> None:
    """Workaround 1: point MLflow's global URI at the configured store before
    ``create_model_version(source="models:/<id>")``."""
    from mammo_pipeline.common.mlflow_access import use_store

    use_store(settings)


def harden_bentoml_multipart() -> None:
    """Workaround 2: file fields accept only uploads (never a URL to fetch) and malformed
    multipart/form bodies become 400s. Idempotent."""
    from _bentoml_impl import serde  # private: see the module docstring
    from bentoml.exceptions import BadInput
    from starlette.exceptions import HTTPException
    from starlette.formparsers import MultiPartException

    cls = serde.MultipartSerde
    if getattr(cls, "_mammo_hardened", False):
        return
    original_parse = cls.parse_request

    async def ensure_file(obj: Any) -> Any:
        from starlette.datastructures import UploadFile

        if isinstance(obj, UploadFile):
            return obj
        raise BadInput("expected an uploaded file, got a text field (URLs are not fetched)")

    async def parse_request(self: Any, request: Any, model_cls: Any) -> Any:
        try:
            return await original_parse(self, request, model_cls)
        except (HTTPException, MultiPartException) as exc:
            detail = getattr(exc, "detail", None) or getattr(exc, "message", None) or str(exc)
            raise BadInput(f"malformed multipart body: {detail}") from None
        except (UnicodeDecodeError, KeyError) as exc:
            raise BadInput(f"malformed form body: {type(exc).__name__}") from None

    cls.ensure_file = staticmethod(ensure_file)  # type: ignore[method-assign]
    cls.parse_request = parse_request  # type: ignore[method-assign]
    cls._mammo_hardened = True  # type: ignore[attr-defined]
