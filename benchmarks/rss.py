"""Resident memory of process trees, for the serving benchmarks (shared by ``load.py`` and
``hostile.py``; nothing to measure on its own)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable


def tree_rss(pids: Iterable[int]) -> int:
    """Bytes resident in ``pids`` and all their descendants (processes that are gone: 0)."""
    import psutil

    total = 0
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            procs = [proc, *proc.children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
        for p in procs:
            try:
                total += p.memory_info().rss
            except psutil.Error:
                pass
    return total


class PeakRss(threading.Thread):
    """Peak of :func:`tree_rss` over ``pids_of()``, sampled every ``every_s`` until
    :meth:`stop`."""

    def __init__(self, pids_of: Callable[[], Iterable[int]], every_s: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.pids_of, self.every_s, self.peak = pids_of, every_s, 0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.wait(self.every_s):
            self.peak = max(self.peak, tree_rss(self.pids_of()))

    def stop(self) -> int:
        """Stop sampling; the peak, including one last sample."""
        self._halt.set()
        self.join()
        self.peak = max(self.peak, tree_rss(self.pids_of()))
        return self.peak


if __name__ == "__main__":  # `make bench` runs every file here
    print("benchmarks/rss.py: a helper of the serving benchmarks, nothing to measure")
