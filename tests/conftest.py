"""Shared fixtures: an isolated environment per test and tiny data made on the spot."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _absl_never_closes_a_capture_stream() -> None:
    """absl's log handler, installed when TensorFlow is first imported, keeps the stream
    ``sys.stderr`` was then; when a later ``logging.config.dictConfig`` (Airflow's, on import)
    removes it, absl closes that stream unless it is the *current* ``sys.stderr``. Under
    pytest's capture it is an earlier test's capture stream, and closing it failed the next
    test ("I/O operation on closed file", then "lost sys.stderr"). Outside pytest the stream is
    the real stderr, so only the tests need this: the handler flushes and never closes it."""
    try:
        from absl.logging import PythonHandler
    except ImportError:
        return

    def close(self: PythonHandler) -> None:
        self.flush()
        logging.Handler.close(self)

    PythonHandler.close = close  # type: ignore[method-assign]


_absl_never_closes_a_capture_stream()


@pytest.fixture(autouse=True)
def _isolated_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """No MAMMO_* variable from the developer's shell leaks into a test; the settings cache
    is cleared around each test."""
    from mammo_pipeline.config import get_settings

    for key in list(os.environ):
        if key.startswith("MAMMO_"):
            monkeypatch.delenv(key, raising=False)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


#: MAMMO_* values for DAG runs on small SYNTHETIC data with the gate ON: 64 px, random
#: weights, the head fitted on cached VGG16 features (no augmentation), the demo's real
#: thresholds (precision >= 0.30, recall >= 0.70), BentoML side ports chosen free (shared by
#: the end-to-end tests). Measured on 400 single-view training tiles (30 % positive, 2 files)
#: and 100 test tiles (SYNTHETIC; generate seeds 5 / 6 / 7): test precision 0.48 / 0.60 /
#: 0.61, recall 0.93 / 0.93 / 0.83, ROC AUC 0.85 / 0.89 / 0.88; training is deterministic on
#: a CPU (a retrain gives the same scores). Much smaller or multi-view data (120 tiles, 4
#: views per lesion) does NOT clear these thresholds.
TINY_RUN_SETTINGS: dict[str, str] = {
    "image_size": "64",
    "weights": "none",
    "epochs": "60",
    "early_stopping_patience": "10",
    "val_fraction": "0.25",
    "batch_size": "32",
    "augment": "false",
    "head_units": "[32, 16]",
    "min_precision": "0.3",
    "min_recall": "0.7",
    "serve_side_port": "0",
    # explicit: no service starts without a key unless MAMMO_AUTH=none says so
    "auth": "none",
}


def make_tiles(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` random 299x299 uint8 tiles with labels cycling through 0..4."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 299, 299), dtype=np.uint8)
    labels = np.arange(n) % 5
    return images, labels


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small SYNTHETIC data set shared (read-only) by the tests of a session."""
    from mammo_pipeline.data.synthetic import generate

    out = tmp_path_factory.mktemp("synthetic")
    generate(out, 120, files=3, positive_fraction=0.25, seed=7, test_n=40, progress=False)
    return out


# --- running under pytest-xdist (`make test`: -n 2 --dist loadscope) ---------------------------
# loadscope hands each module to one worker as a whole, in order: a module-scoped fixture (a
# server, a store, a trained model) is made once and the ordered end-to-end runs stay in order.
# (Not loadgroup: with pytest 9.2 it silently stops grouping, pytest-xdist issue #1386.)
#: Modules in the order they are handed to the workers (Makefile: --no-loadscope-reorder),
#: longest first (seconds of one serial run on 2 cores), so that no worker is left alone with a
#: long module at the end; the rest follow in collection order. Only the order changes.
LONGEST_FIRST = (
    "test_dags_e2e.py",  # ~450 s: validation, 5 trainings, approvals, deploys
    "test_distributed.py",  # ~330 s: Celery, PostgreSQL, Redis, MLflow server
    "test_registry.py",
    "test_monitoring_dag.py",  # an alert-triggered retrain through airflow dags test
    "test_train.py",
    "test_deploy_faults.py",
    "test_deploy.py",
    "test_service.py",
    "test_service_hostile.py",
    "test_analyze_service.py",
)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under xdist, the longest modules first (a stable sort: order within a module is kept)."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
        items.sort(key=lambda item: rank.get(Path(str(item.path)).name, len(rank)))
