"""Ports and HTTP polling on this machine (deploy, demo and tests share them)."""

from __future__ import annotations

import socket
import time
import urllib.error
import urllib.request

from mammo_pipeline.errors import MammoError


def free_port(preferred: int = 0, avoid: set[int] | None = None, host: str = "127.0.0.1") -> int:
    """``preferred`` when it can be bound (and is not in ``avoid``), else an ephemeral port."""
    avoid = avoid or set()
    for candidate in ([preferred] if preferred else []) + [0, 0, 0]:
        if candidate in avoid:
            continue
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((host, candidate))
            except OSError:
                continue
            port = int(sock.getsockname()[1])
            if port not in avoid:
                return port
    raise MammoError(f"no free TCP port on {host}")


def client_host(host: str) -> str:
    """The address a local client uses to reach a server bound to ``host``."""
    return "127.0.0.1" if host in ("0.0.0.0", "::", "") else host


def wait_http(url: str, timeout: float, ok: tuple[int, ...] = (200,)) -> bool:
    """Poll ``url`` until it answers one of ``ok`` status codes or ``timeout`` passes."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=3) as resp:
                if resp.status in ok:
                    return True
        except (urllib.error.URLError, OSError, ValueError):
            pass
        time.sleep(1.0)
    return False
