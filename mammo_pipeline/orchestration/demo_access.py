"""How a person reaches the demo's service: its API key (made once, kept private under
``.demo/``) and the shell lines that use it (``make demo``'s closing instructions;
:mod:`.demo` writes the files and prints the lines); and the demo's signing pair under
``.demo/keys`` (:func:`key_pair`)."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from mammo_pipeline.common.environment import REPO_ROOT
from mammo_pipeline.config import CONFIG_FILE_ENV


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path``, readable by its owner only (it carries the API key)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(path, 0o600)  # an older file keeps its mode through O_TRUNC


def api_key(key_file: Path) -> str:
    """The key kept in ``key_file``; made there (``secrets.token_urlsafe``) the first time, so
    a running service and ``source .demo/env`` agree across demos."""
    try:
        key = key_file.read_text().strip()
    except FileNotFoundError:
        key = ""
    if not key:
        key = secrets.token_urlsafe(32)  # URL-safe: no quoting needed in a shell or a header
        write_private(key_file, key + "\n")
    return key


def key_pair(directory: Path) -> dict[str, str]:
    """The demo's signing settings, its pair made once in ``directory`` (as `mammo keys init
    --out` does): the Airflow tasks sign evaluations, gate decisions and approvals with the
    private key; the service and the deployer trust the public one."""
    from mammo_pipeline.common.signing import PRIVATE_KEY_FILE, PUBLIC_KEY_FILE, write_key_pair

    if not (directory / PRIVATE_KEY_FILE).is_file():
        write_key_pair(directory)
    return {
        "signing_key": str(directory / PRIVATE_KEY_FILE),
        "trusted_keys": str(directory / PUBLIC_KEY_FILE),
    }


def _shown(path: Path) -> str:
    """``path`` relative to the repository when it is inside it (as a person types it)."""
    return str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else str(path)


def shell_usage(url: str, sample: Path, *, env_file: Path, key_file: Path) -> list[str]:
    """How to use the demo from a shell: ``source`` the env file (config file and API key),
    then ``mammo`` and ``curl`` with the key in the header the service reads."""
    return [
        f"source {_shown(env_file)}   # sets {CONFIG_FILE_ENV}, MAMMO_API_KEY, mammo on PATH",
        "mammo registry list",
        f"mammo predict {_shown(sample)}   # sends the key for you",
        f'curl -H "Authorization: Bearer $MAMMO_API_KEY" -F image=@{_shown(sample)} {url}/predict',
        f"(the service requires that key; it is kept in {_shown(key_file)}, never committed)",
    ]
