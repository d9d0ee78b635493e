"""The service's API-key convention, used by the service, the CLI client and the deployer.

A client sends ``Authorization: Bearer KEY`` (preferred) or ``X-API-Key: KEY``.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping

API_KEY_HEADER = "x-api-key"
AUTHORIZATION_HEADER = "authorization"


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
