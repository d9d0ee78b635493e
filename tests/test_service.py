"""The BentoML service as a real ``bentoml serve`` subprocess with a tiny registered champion.

One server (module scope, API key set, small upload limit) answers all request tests: good
images of every format match the in-process prediction, batches, concurrency, a corpus of bad
requests all get 4xx and leave the service ready, the API key is enforced.
"""

from __future__ import annotations

import io
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from mammo_pipeline.config import Settings
from tests.test_serving_io import bomb_png, encode

API_KEY = "test-key-123"
MAX_UPLOAD = 64 * 1024
MARKER = b"PIXEL-MARKER-7f3a9c"


# --- helpers shared with test_deploy ------------------------------------------------------
def make_settings(root: Path, **extra: Any) -> Settings:
    """Settings of an isolated registry, data dir and BentoML home under ``root``; without an
    ``api_key``, explicitly ``auth="none"`` (no service starts on the default without a key)."""
    extra.setdefault("auth", "key" if extra.get("api_key") else "none")
    return Settings(
        data_dir=root / "data",
        mlflow_tracking_uri=f"sqlite:///{root}/mlflow.db",
        mlflow_artifact_location=str(root / "mlartifacts"),
        serve_side_port=0,
        **extra,
    )


def tiny_model(seed: int, channels: int = 1):
    """Input(32, 32, channels) -> Rescaling -> Conv -> GAP -> Dense(1, sigmoid)."""
    import keras

    keras.utils.set_random_seed(seed)
    inp = keras.Input((32, 32, channels))
    x = keras.layers.Rescaling(1.0 / 255.0)(inp)
    x = keras.layers.Conv2D(4, 3, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(1, activation="sigmoid", bias_initializer="zeros")(x)
    return keras.Model(inp, out)


def model_requirements() -> list[str]:
    """The pip requirements training logs with a model (``log_keras_model``). Given, MLflow
    does not infer them in a subprocess that imports TensorFlow: about 10 s a model."""
    import keras
    import mlflow
    import tensorflow as tf

    return [f"keras=={keras.__version__}", f"mlflow=={mlflow.__version__}", "numpy",
            f"tensorflow=={tf.__version__}"]  # fmt: skip


def register_model(
    settings: Settings,
    seed: int,
    *,
    threshold: float = 0.5,
    channels: int = 1,
    aliases: tuple[str, ...] = ("champion",),
) -> str:
    """Log a tiny model the way training does, register it, tag it, set ``aliases``."""
    import mlflow

    from mammo_pipeline.common.mlflow_access import configure_mlflow
    from tests.signed_versions import sign_as_gate

    configure_mlflow(settings)
    model = tiny_model(seed, channels)
    with mlflow.start_run():
        mlflow.log_metrics(
            {"decision_threshold": threshold, "test_recall": 0.9, "test_precision": 0.5}
        )
        info = mlflow.keras.log_model(
            model,
            name="model",
            pip_requirements=model_requirements(),
            metadata={"decision_threshold": threshold, "image_size": 32},
        )
    mv = mlflow.register_model(info.model_uri, settings.registered_model_name)
    client = mlflow.MlflowClient(
        settings.mlflow_tracking_uri, registry_uri=settings.mlflow_tracking_uri
    )
    name = settings.registered_model_name
    client.set_model_version_tag(name, mv.version, "decision_threshold", str(threshold))
    client.set_model_version_tag(name, mv.version, "gate", "passed")  # vetted, as after training
    sign_as_gate(settings, str(mv.version))  # and signed, as the gate signs its decisions
    for alias in aliases:
        client.set_registered_model_alias(name, alias, mv.version)
    return str(mv.version)


def in_process(model: Any, data: bytes) -> float:
    """The prediction of ``model`` on an upload, through the same decoding code."""
    from mammo_pipeline.serving.image_io import decode_image, to_model_input

    gray = decode_image(data, max_bytes=1 << 30, max_pixels=1 << 30)
    x = to_model_input(gray, int(model.input_shape[1]))[np.newaxis]
    return float(model.predict(x, verbose=0).reshape(-1)[0])


# --- the server -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    from mammo_pipeline.common.net import free_port
    from mammo_pipeline.serving import backend

    root = tmp_path_factory.mktemp("service")
    settings = make_settings(root, api_key=API_KEY, max_upload_bytes=MAX_UPLOAD)
    version = register_model(settings, seed=3, threshold=0.5)
    port = free_port()
    log = root / "server.log"
    # no MAMMO_SERVE_VERSION: the service resolves the champion alias itself
    pid, log = backend.start_backend(settings, None, port, log=log)
    url = f"http://127.0.0.1:{port}"
    try:
        backend.wait_ready(url, pid, 180, log)
        from mammo_pipeline.serving.model_loader import load_from_registry

        model = load_from_registry(settings, version)
        client = httpx.Client(base_url=url, headers={"X-API-Key": API_KEY}, timeout=60)
        yield {"url": url, "client": client, "model": model, "version": version, "log": log}
        client.close()
    finally:
        backend.stop_process(pid)


@pytest.fixture(scope="module")
def images() -> dict[str, bytes]:
    rng = np.random.default_rng(11)
    g8 = rng.integers(0, 256, size=(90, 70), dtype=np.uint8)
    g16 = rng.integers(0, 65536, size=(120, 100), dtype=np.uint16)
    return {
        "png": encode(g8, "PNG"),
        "jpeg": encode(g8, "JPEG", quality=90),
        "png16": encode(g16, "PNG"),
        "tiff16": encode(g16, "TIFF"),
        "pgm": encode(g8, "PPM"),
        "npy": encode(g16, "npy"),
        "npy_float": encode(g8.astype(np.float32) / 255.0, "npy"),
    }


def post_image(client: httpx.Client, data: bytes, name: str = "x") -> httpx.Response:
    return client.post("/predict", files={"image": (name, data)})


pytestmark = pytest.mark.slow


def test_model_endpoint_reports_served_version(server: dict[str, Any]) -> None:
    resp = server["client"].get("/model")
    assert resp.status_code == 200, resp.text
    info = resp.json()
    assert info["name"] == "mammo-vgg16" and info["version"] == server["version"]
    assert "champion" in info["aliases"]
    assert info["threshold"] == 0.5 and info["image_size"] == 32
    assert info["metrics"]["test_recall"] == pytest.approx(0.9)
    assert info["trained_at"] and info["bento_tag"] == f"mammo-vgg16:v{server['version']}"
    assert len(info["model_sha256"]) == 64 and len(info["signed_by"]) == 16  # verified at load


@pytest.mark.parametrize("kind", ["png", "jpeg", "png16", "tiff16", "pgm", "npy", "npy_float"])
def test_predict_matches_in_process(
    server: dict[str, Any], images: dict[str, bytes], kind: str
) -> None:
    resp = post_image(server["client"], images[kind], f"img.{kind}")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    expected = in_process(server["model"], images[kind])
    assert abs(body["probability"] - expected) <= 1e-5
    assert body["label"] == ("positive" if body["probability"] >= 0.5 else "negative")
    assert body["threshold"] == 0.5
    assert body["model_name"] == "mammo-vgg16" and body["model_version"] == server["version"]


def test_batch_endpoint_keeps_order(server: dict[str, Any], images: dict[str, bytes]) -> None:
    kinds = ["png", "png16", "npy", "jpeg"]
    files = [("images", (f"{k}.bin", images[k])) for k in kinds]
    resp = server["client"].post("/predict_batch", files=files)
    assert resp.status_code == 200, resp.text
    answers = resp.json()
    assert len(answers) == len(kinds)
    for kind, answer in zip(kinds, answers, strict=True):
        assert abs(answer["probability"] - in_process(server["model"], images[kind])) <= 1e-5
        assert answer["model_version"] == server["version"]


def test_concurrent_requests_are_batched_correctly(
    server: dict[str, Any], images: dict[str, bytes]
) -> None:
    kinds = list(images) * 3
    expected = {k: in_process(server["model"], images[k]) for k in images}
    with ThreadPoolExecutor(8) as pool:
        resps = list(pool.map(lambda k: post_image(server["client"], images[k]), kinds))
    for kind, resp in zip(kinds, resps, strict=True):
        assert resp.status_code == 200, resp.text
        assert abs(resp.json()["probability"] - expected[kind]) <= 1e-5


def _bad_requests(png: bytes) -> dict[str, dict[str, Any]]:
    obj = io.BytesIO()
    np.save(obj, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    return {
        "not an image": {"files": {"image": ("a.png", b"hello " + MARKER)}},
        "empty body": {"content": b""},
        "empty file": {"files": {"image": ("a.png", b"")}},
        "truncated png": {"files": {"image": ("a.png", png[: len(png) // 2])}},
        "bomb png 50000x50000": {"files": {"image": ("bomb.png", bomb_png())}},
        "over the size limit": {"files": {"image": ("big.npy", b"\x93NUMPY" + MARKER * 5000)}},
        "npy float64 rank 4": {
            "files": {"image": ("a.npy", encode(np.zeros((1, 4, 4, 2)), "npy"))}
        },
        "npy object dtype": {"files": {"image": ("a.npy", obj.getvalue())}},
        "npy int64": {"files": {"image": ("a.npy", encode(np.ones((4, 4), np.int64), "npy"))}},
        "text field (url)": {"data": {"image": "http://169.254.169.254/latest"}},
        "wrong field name": {"files": {"picture": ("a.png", png)}},
        "json body": {"json": {"image": "/etc/passwd"}},
        "garbage json": {"content": b"{not json", "headers": {"content-type": "application/json"}},
        "multipart no boundary": {
            "content": b"zz",
            "headers": {"content-type": "multipart/form-data"},
        },
        "raw image bytes": {"content": png, "headers": {"content-type": "image/png"}},
    }


def test_bad_requests_get_4xx_and_service_stays_ready(
    server: dict[str, Any], images: dict[str, bytes]
) -> None:
    client: httpx.Client = server["client"]
    failures = []
    for name, kwargs in _bad_requests(images["png"]).items():
        resp = client.post("/predict", **kwargs)
        if not 400 <= resp.status_code < 500 or not isinstance(resp.json(), dict):
            failures.append(f"{name}: HTTP {resp.status_code} {resp.text[:120]}")
    # batch endpoint: one bad image among good ones, too many images, chunked over-limit body
    bad_batch = [("images", ("a.png", images["png"])), ("images", ("b.png", b"nope"))]
    resp = client.post("/predict_batch", files=bad_batch)
    if resp.status_code != 400 or "image 1" not in resp.json()["error"]:
        failures.append(f"bad batch: HTTP {resp.status_code} {resp.text[:120]}")
    resp = client.post("/predict_batch", files=[("images", ("a.png", images["png"]))] * 40)
    if not 400 <= resp.status_code < 500:
        failures.append(f"batch over the limit: HTTP {resp.status_code}")

    def chunks():
        yield b"--b\r\nContent-Disposition: form-data; name=image; filename=a\r\n\r\n"
        for _ in range(40):
            yield MARKER * 256

    resp = client.post(
        "/predict", content=chunks(), headers={"content-type": "multipart/form-data; boundary=b"}
    )
    if resp.status_code != 413:
        failures.append(f"chunked over-limit: HTTP {resp.status_code}")
    assert not failures, failures

    assert httpx.get(f"{server['url']}/readyz").status_code == 200
    assert post_image(client, images["png"]).status_code == 200
    assert MARKER not in server["log"].read_bytes()  # no upload content in the logs


def test_api_key_enforced(server: dict[str, Any], images: dict[str, bytes]) -> None:
    url = server["url"]
    files = {"image": ("a.png", images["png"])}
    assert httpx.post(f"{url}/predict", files=files).status_code == 401
    assert httpx.get(f"{url}/model").status_code == 401
    wrong = {"Authorization": "Bearer nope"}
    assert httpx.post(f"{url}/predict", files=files, headers=wrong).status_code == 401
    right = {"Authorization": f"Bearer {API_KEY}"}
    assert httpx.post(f"{url}/predict", files=files, headers=right).status_code == 200
    # probes and metrics stay open for the orchestrator
    assert httpx.get(f"{url}/readyz").status_code == 200
    assert httpx.get(f"{url}/livez").status_code == 200
    metrics = httpx.get(f"{url}/metrics")
    assert metrics.status_code == 200 and "bentoml" in metrics.text


def test_cli_predict(
    server: dict[str, Any], images: dict[str, bytes], tmp_path: Path, monkeypatch
) -> None:
    from typer.testing import CliRunner

    from mammo_pipeline.cli.main import app

    path = tmp_path / "x.png"
    path.write_bytes(images["png"])
    monkeypatch.setenv("MAMMO_API_KEY", API_KEY)
    result = CliRunner().invoke(app, ["predict", str(path), "--url", server["url"], "--json"])
    assert result.exit_code == 0, result.output
    body = json.loads(result.output)
    assert abs(body["probability"] - in_process(server["model"], images["png"])) <= 1e-5
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"nope")
    result = CliRunner().invoke(app, ["predict", str(bad), "--url", server["url"]])
    assert result.exit_code != 0


# --- without a server -------------------------------------------------------------------------
def test_a_non_finite_score_is_an_error_never_a_label() -> None:
    from types import SimpleNamespace

    from bentoml.exceptions import BentoMLException

    from serving.service import MammoClassifier

    service = object.__new__(MammoClassifier.inner)  # the answer logic, no model loaded
    service.threshold = 0.5
    service.info = SimpleNamespace(name="mammo-vgg16", version="7")
    assert service._answer(0.7)["label"] == "positive"
    assert service._answer(0.2)["label"] == "negative"
    for bad in (float("nan"), float("inf"), -float("inf"), 1.5, -0.1):
        with pytest.raises(BentoMLException) as err:
            service._answer(bad)
        assert err.value.error_code == 500, bad


_CLOSURE = r"""
import ast, json, sys
from importlib.metadata import packages_distributions
from pathlib import Path
import serving.service, mammo_pipeline.serving.model_loader  # what the service imports
repo = Path.cwd().resolve()
ours = ("mammo_pipeline", "serving")
files, dists = [], set()
by_module = packages_distributions()
for name, module in list(sys.modules.items()):
    path = getattr(module, "__file__", None)
    if name.split(".")[0] not in ours or not path:
        continue
    files.append(str(Path(path).resolve().relative_to(repo)))
    # third-party modules our modules import at module level (lazy imports are not checked)
    for node in ast.parse(Path(path).read_text()).body:
        if isinstance(node, ast.Import):
            tops = [a.name.split(".")[0] for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            tops = [node.module.split(".")[0]]
        else:
            continue
        for top in tops:
            if top not in ours and top not in sys.stdlib_module_names:
                dists.update(by_module.get(top, [top]))
print(json.dumps({"files": sorted(files), "dists": sorted(dists)}))
"""


def _requirement_closure(names: set[str]) -> set[str]:
    """``names`` and everything they require (this environment's metadata, no extras)."""
    from importlib.metadata import PackageNotFoundError, requires

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    todo, seen = [canonicalize_name(n) for n in names], set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            reqs = requires(name) or []
        except PackageNotFoundError:
            continue
        for line in reqs:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(canonicalize_name(req.name))
    return seen


def test_bento_holds_the_service_import_closure(tmp_path: Path) -> None:
    """`bentoml build` of serving/bentofile.yaml ships every project module the service imports,
    and its package list brings every third-party distribution they import at module level."""
    import subprocess
    import sys

    import yaml
    from packaging.utils import canonicalize_name

    from mammo_pipeline.common.environment import REPO_ROOT

    env = {**os.environ, "BENTOML_HOME": str(tmp_path / "home")}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    build = subprocess.run(
        [sys.executable, "-m", "bentoml", "build", "-f", "serving/bentofile.yaml", "."],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr[-2000:]
    (bento,) = (tmp_path / "home" / "bentos" / "mammo-classifier").glob("*/bento.yaml")
    shipped = {str(p.relative_to(bento.parent / "src")) for p in bento.parent.rglob("src/**/*.py")}
    closure = subprocess.run(
        [sys.executable, "-c", _CLOSURE], cwd=REPO_ROOT, env=env, capture_output=True,
        text=True, timeout=300,
    )  # fmt: skip
    assert closure.returncode == 0, closure.stderr[-2000:]
    imported = json.loads(closure.stdout.strip().splitlines()[-1])
    assert "serving/service.py" in imported["files"]
    missing = sorted(set(imported["files"]) - shipped)
    assert not missing, f"bentofile.yaml does not ship {missing}"

    spec = yaml.safe_load((REPO_ROOT / "serving" / "bentofile.yaml").read_text())
    listed = {line.split("==")[0] for line in spec["python"]["packages"]}
    covered = _requirement_closure(listed)
    uncovered = sorted(
        d for d in {canonicalize_name(d) for d in imported["dists"]} if d not in covered
    )
    assert not uncovered, f"bentofile.yaml's packages do not bring {uncovered}"
