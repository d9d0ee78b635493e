"""The service's API-key convention, used by the service, the CLI client and the deployer.

A client sends ``Authorization: Bearer KEY`` (preferred) or ``X-API-Key: KEY``.

Authentication fails closed: with ``MAMMO_AUTH=key`` (the default) and no ``MAMMO_API_KEY``,
no server starts (:func:`require_auth_configured`, one line: :data:`NO_KEY_REFUSAL`) and the
service's guard answers no request; serving without a key takes an explicit ``MAMMO_AUTH=none``.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping

from mammo_pipeline.config import Settings
from mammo_pipeline.errors import ConfigError

API_KEY_HEADER = "x-api-key"
AUTHORIZATION_HEADER = "authorization"

#: The one line every server start (``bentoml serve``, ``mammo serve`` / ``deploy``) refuses
#: with when authentication is on and no key is set: both remedies, no default that is open.
NO_KEY_REFUSAL = (
    "refusing to serve: authentication is on (MAMMO_AUTH=key, the default) but no key is set; "
    "set MAMMO_API_KEY=<a long random key> (clients send 'Authorization: Bearer <key>'), "
    "or set MAMMO_AUTH=none to serve without authentication"
)


def auth_refusal(settings: Settings) -> str | None:
    """:data:`NO_KEY_REFUSAL` when a server must not start with ``settings``, else None."""
    return NO_KEY_REFUSAL if settings.auth == "key" and not settings.api_key else None


def require_auth_configured(settings: Settings) -> None:
    """Raise :class:`ConfigError` (:data:`NO_KEY_REFUSAL`) unless a server may start."""
    if problem := auth_refusal(settings):
        raise ConfigError(problem)


def auth_description(settings: Settings) -> str:
    """The service's start-up line about authentication, naming the setting that decided."""
    if settings.auth_enabled:
        return (
            "authentication ON (MAMMO_API_KEY is set): predictions need "
            "Authorization: Bearer KEY or X-API-Key: KEY"
        )
    if settings.auth == "none":
        return (
            "authentication OFF because MAMMO_AUTH=none was set: anyone who reaches this "
            "port may predict"
        )
    return f"authentication ON but no key is set, so every prediction is refused: {NO_KEY_REFUSAL}"


def auth_headers(api_key: str | None) -> dict[str, str]:
    """Request headers that carry ``api_key`` (none when no key is configured)."""
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def presented_key(headers: Mapping[bytes, bytes]) -> str:
    """The key a request presents (lower-cased header names, raw ASGI bytes), or ``""``."""
    given = headers.get(API_KEY_HEADER.encode(), b"").decode("latin-1").strip()
    auth = headers.get(AUTHORIZATION_HEADER.encode(), b"").decode("latin-1").strip()
    if not given and auth.lower().startswith("bearer "):
        given = auth[7:].strip()
    return given


def key_matches(given: str, expected: str) -> bool:
    """Constant-time comparison; an empty presented key never matches."""
    return bool(given) and hmac.compare_digest(given.encode(), expected.encode())
