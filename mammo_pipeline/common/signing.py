"""Ed25519 signatures over canonical JSON records, the keys that make them, and the digest of a
model's files (in the spirit of OpenSSF model signing: sign the files' digest, verify before
use). The records themselves (a signed evaluation, a signed gate decision or approval) are
built by the stages that make them; this module only signs and verifies.

Keys:

* The **signing key** (private, PEM PKCS#8, file mode 0600) is held by the processes that
  evaluate and gate (the Airflow workers): ``MAMMO_SIGNING_KEY``.
* The **trusted keys** (public, PEM) are what the deployer and the service accept:
  ``MAMMO_TRUSTED_KEYS``, a list of files or folders (every ``*.pub`` inside). Trusting
  several keys is how a key is rotated: trust old and new, sign with the new, drop the old
  once nothing served was signed by it. A process that holds a signing key also trusts its
  own public key.
* **Embedded default** (neither variable set): a pair under ``<data dir>/keys`` made on
  first use by whoever signs first, and its public key trusted; so one machine works with no
  configuration, and its signatures stay bound to that machine's key.

A signed record (the value of a tag) is ``{"payload": {...}, "key_id": ..., "signature": ...}``:
the Ed25519 signature (base64) over the payload's canonical JSON (sorted keys, no spaces,
ASCII, no NaN), ``key_id`` the first 16 hex digits of the SHA-256 of the raw public key.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mammo_pipeline.config import Settings
from mammo_pipeline.errors import ConfigError, MammoError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

KEY_DIR = "keys"
PRIVATE_KEY_FILE = "mammo-signing.key"
PUBLIC_KEY_FILE = "mammo-signing.pub"
#: Written by MLflow into a downloaded ``models:/<name>/<version>`` folder (the registered
#: name and version, differing per download): not part of the model, left out of its digest.
MLFLOW_DOWNLOAD_METADATA = frozenset({"registered_model_meta"})
#: Longest tag value MLflow keeps on every backend (registry.names.MAX_TAG_VALUE).
MAX_RECORD_CHARS = 5000


class SignatureError(MammoError):
    """A signed record is missing, malformed, signed by an untrusted key or edited."""


def canonical_json(payload: Any) -> bytes:
    """The bytes that are signed: sorted keys, no whitespace, ASCII, finite numbers only."""
    return json.dumps(
        payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode("ascii")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def key_id(public_key: Ed25519PublicKey) -> str:
    from cryptography.hazmat.primitives import serialization

    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return sha256_hex(raw)[:16]


# --- key files --------------------------------------------------------------------------
def default_key_dir(settings: Settings) -> Path:
    return settings.data_dir / KEY_DIR


def embedded_default(settings: Settings) -> bool:
    """Neither a signing key nor trusted keys configured: the one-machine default."""
    return settings.signing_key is None and not settings.trusted_keys


def write_key_pair(directory: Path, *, overwrite: bool = False) -> tuple[Path, Path, str]:
    """A new pair in ``directory``: (private key path (mode 0600), public key path, key id).

    Never replaces an existing private key unless ``overwrite``; the private key appears under
    its name complete or not at all (written aside, then linked), so two processes making the
    embedded default at once end with one key (the loser reads the winner's).
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    directory.mkdir(parents=True, exist_ok=True)
    private, public = directory / PRIVATE_KEY_FILE, directory / PUBLIC_KEY_FILE
    if private.exists() and not overwrite:
        raise ConfigError(f"{private} exists: keep it, or pass --force to replace it")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    pub = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".key-")  # mkstemp: mode 0600
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(pem)
        os.chmod(tmp, 0o600)
        if overwrite:
            os.replace(tmp, private)
        else:
            os.link(tmp, private)  # fails if another process made one meanwhile
    finally:
        Path(tmp).unlink(missing_ok=True)
    _write_public(public, pub)
    return private, public, key_id(key.public_key())


def _write_public(path: Path, pem: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".pub-")
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def load_private_key(path: Path) -> Ed25519PrivateKey:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(f"signing key {path}: cannot read it ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"signing key {path}: not an Ed25519 private key")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"trusted key {path}: cannot read it ({exc})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError(f"trusted key {path}: not an Ed25519 public key")
    return key


def signing_key(settings: Settings) -> Ed25519PrivateKey:
    """The key this process signs with: ``MAMMO_SIGNING_KEY``; in the embedded default the
    pair under the data dir (made on first use). Raises :class:`ConfigError` when this process
    holds no key (trusted keys configured but no signing key: e.g. the serving host)."""
    if settings.signing_key is not None:
        if not settings.signing_key.is_file():
            raise ConfigError(
                f"MAMMO_SIGNING_KEY={settings.signing_key}: no such file "
                "(make a pair with `mammo keys init`)"
            )
        return load_private_key(settings.signing_key)
    if not embedded_default(settings):
        raise ConfigError(
            "this process holds no signing key (MAMMO_SIGNING_KEY is unset while "
            "MAMMO_TRUSTED_KEYS is set): evaluations, gate decisions and approvals are signed "
            "only where the key is, e.g. on the Airflow workers"
        )
    private = default_key_dir(settings) / PRIVATE_KEY_FILE
    if not private.is_file():
        try:
            write_key_pair(private.parent)
        except (ConfigError, FileExistsError):
            pass  # made by another process meanwhile
    return load_private_key(private)


def _public_keys_in(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(path.glob("*.pub"))
    if not path.is_file():
        raise ConfigError(f"MAMMO_TRUSTED_KEYS: {path}: no such file or folder")
    return [path]


def trusted_keys(settings: Settings) -> dict[str, Ed25519PublicKey]:
    """key id -> public key of every key this process accepts signatures from."""
    keys: dict[str, Ed25519PublicKey] = {}

    def add(key: Ed25519PublicKey) -> None:
        keys[key_id(key)] = key

    for entry in settings.trusted_keys:
        for path in _public_keys_in(entry):
            add(load_public_key(path))
    if settings.signing_key is not None and settings.signing_key.is_file():
        add(load_private_key(settings.signing_key).public_key())
    if embedded_default(settings):
        directory = default_key_dir(settings)
        if (directory / PUBLIC_KEY_FILE).is_file():
            add(load_public_key(directory / PUBLIC_KEY_FILE))
        elif (directory / PRIVATE_KEY_FILE).is_file():  # public half not written yet
            add(load_private_key(directory / PRIVATE_KEY_FILE).public_key())
    return keys


# --- signed records -----------------------------------------------------------------------
@dataclass(frozen=True)
class Signed:
    """A verified record: its payload and the id of the key that signed it."""

    payload: dict[str, Any]
    key_id: str


def sign(payload: Mapping[str, Any], key: Ed25519PrivateKey) -> str:
    """The signed record of ``payload`` as compact JSON (a tag value). Raises when it would
    not fit an MLflow tag value (a truncated record would never verify)."""
    body = dict(payload)
    signature = key.sign(canonical_json(body))
    record = json.dumps(
        {
            "payload": body,
            "key_id": key_id(key.public_key()),
            "signature": base64.b64encode(signature).decode("ascii"),
        },
        sort_keys=True,
        separators=(",", ":"),
        allow_nan=False,
    )
    if len(record) > MAX_RECORD_CHARS:
        raise MammoError(f"signed record of {len(record)} characters: over {MAX_RECORD_CHARS}")
    return record


def verify(
    record: str | None, trusted: Mapping[str, Ed25519PublicKey], what: str, kinds: Iterable[str]
) -> Signed:
    """The payload of a signed ``record`` whose ``kind`` is one of ``kinds``; raises
    :class:`SignatureError` saying why it cannot be trusted (``what`` names the record)."""
    from cryptography.exceptions import InvalidSignature

    if not record:
        raise SignatureError(f"{what} is not signed (no signed record)")
    try:
        data = json.loads(record)
        payload, kid = data["payload"], str(data["key_id"])
        signature = base64.b64decode(data["signature"], validate=True)
        if not isinstance(payload, dict):
            raise TypeError("payload is not an object")
    except (ValueError, KeyError, TypeError) as exc:
        raise SignatureError(f"{what}: the signed record is malformed ({exc})") from None
    key = trusted.get(kid)
    if key is None:
        known = ", ".join(sorted(trusted)) or "none"
        raise SignatureError(
            f"{what} is signed by key {kid}, which is not trusted here (trusted: {known}; "
            "MAMMO_TRUSTED_KEYS)"
        )
    try:
        key.verify(signature, canonical_json(payload))
    except (InvalidSignature, ValueError):
        raise SignatureError(
            f"{what}: the signature does not match the record (edited after signing)"
        ) from None
    kinds = tuple(kinds)
    if payload.get("kind") not in kinds:
        raise SignatureError(
            f"{what}: a signed {payload.get('kind')!r} record, not {' or '.join(kinds)}"
        )
    return Signed(payload, kid)


# --- the digest of a model's files --------------------------------------------------------
def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def directory_sha256(directory: Path | str) -> str:
    """SHA-256 over the sorted (relative path, SHA-256) pairs of every file under
    ``directory`` (MLflow's per-download metadata left out): the model files' digest."""
    root = Path(directory)
    if not root.is_dir():
        raise MammoError(f"{root}: no model folder to digest")
    entries = [
        (path.relative_to(root).as_posix(), file_sha256(path))
        for path in sorted(root.rglob("*"))
        if path.is_file() and path.relative_to(root).as_posix() not in MLFLOW_DOWNLOAD_METADATA
    ]
    if not entries:
        raise MammoError(f"{root}: no model files to digest")
    return sha256_hex(canonical_json(entries))
