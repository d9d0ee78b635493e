"""POST /analyze (whole mammograms) and DICOM through a real ``bentoml serve``.

A tiny CNN is trained here on SYNTHETIC tiles (as in ``tests/test_analysis.py``), registered
with gate=passed and served; SYNTHETIC films with a planted mass must be found where it was
planted, score above the same film without it, come with a heatmap PNG, and be refused by
/predict with a pointer to /analyze. DICOM uploads use their pixel spacing and never leak
patient identifiers into the answer or the server log.
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from mammo_pipeline.data.synthetic_film import make_film
from tests.formats import SECRET_PATIENT_ID, SECRET_PATIENT_NAME, dicom_bytes
from tests.test_service import make_settings, model_requirements

pytestmark = pytest.mark.slow

API_KEY = "analyze-key-42"
SIZE = 32
MM = 0.05  # a DICOM-like scale: 2000 x 1200 px = 100 x 60 mm


def _png(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def _register_trained(settings, tmp_path: Path) -> str:
    """Train the tiny CNN of test_analysis on SYNTHETIC tiles; log and register it vetted."""
    import mlflow

    from mammo_pipeline.common.mlflow_access import configure_mlflow
    from tests.signed_versions import sign_as_gate
    from tests.test_analysis import _tiny_cnn, _training_tiles

    x, y = _training_tiles(tmp_path, SIZE)
    model = _tiny_cnn(SIZE)
    model.fit(x, y, epochs=15, batch_size=32, verbose=0, shuffle=True)
    configure_mlflow(settings)
    with mlflow.start_run():
        mlflow.log_metrics({"decision_threshold": 0.5})
        info = mlflow.keras.log_model(
            model,
            name="model",
            pip_requirements=model_requirements(),
            metadata={"decision_threshold": 0.5, "image_size": SIZE},
        )
    mv = mlflow.register_model(info.model_uri, settings.registered_model_name)
    client = mlflow.MlflowClient(
        settings.mlflow_tracking_uri, registry_uri=settings.mlflow_tracking_uri
    )
    name = settings.registered_model_name
    for key, value in {"decision_threshold": "0.5", "gate": "passed", "synthetic": "true",
                       "weights_source": "tiny CNN trained in this test"}.items():  # fmt: skip
        client.set_model_version_tag(name, mv.version, key, value)
    sign_as_gate(settings, str(mv.version))  # vetted means signed, as the gate signs
    client.set_registered_model_alias(name, "champion", mv.version)
    return str(mv.version)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    from mammo_pipeline.common.net import free_port
    from mammo_pipeline.serving import backend

    root = tmp_path_factory.mktemp("analyze")
    settings = make_settings(root, api_key=API_KEY, max_upload_bytes=16 * 1024 * 1024)
    version = _register_trained(settings, root / "train")
    port = free_port()
    log = root / "server.log"
    pid, log = backend.start_backend(settings, None, port, log=log)
    url = f"http://127.0.0.1:{port}"
    try:
        backend.wait_ready(url, pid, 180, log)
        client = httpx.Client(base_url=url, headers={"X-API-Key": API_KEY}, timeout=120)
        yield {"url": url, "client": client, "version": version, "log": log}
        client.close()
    finally:
        backend.stop_process(pid)


def _analyze(client: httpx.Client, data: bytes, name: str = "film.png", **form: Any):
    fields = {k: json.dumps(v) for k, v in form.items()}
    return client.post("/analyze", files={"image": (name, data)}, data=fields)


def _intersects(region: dict[str, Any], box: tuple[int, int, int, int]) -> bool:
    x0, y0, x1, y1 = box
    return min(region["x1"], x1) > max(region["x0"], x0) and min(region["y1"], y1) > max(
        region["y0"], y0
    )


def test_whole_film_regions_heatmap_and_score_order(served: dict[str, Any]) -> None:
    client = served["client"]
    with_mass = make_film(2000, 1200, lesion="mass", malignant=True, seed=1, mm_per_px=MM)
    without = make_film(2000, 1200, lesion="none", seed=1, mm_per_px=MM)
    resp = _analyze(
        client, _png(with_mass.pixels), pixel_spacing_mm=MM, heatmap=True, synthetic=True
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    print(f"SYNTHETIC film with a mass: score {body['score']:.3f}, {body['tiles_scored']} tiles")
    assert body["aggregation"] == "max_tile_probability"
    assert body["model_version"] == served["version"] and body["model_name"] == "mammo-vgg16"
    assert body["scale"] == {"pixel_spacing_mm": MM, "spacing_source": "form",
                             "target_mm_per_px": 0.1}  # fmt: skip
    assert body["tiles_scored"] > 5 and body["regions"]
    top = body["regions"][0]
    assert _intersects(top, with_mass.lesion_box), (top, with_mass.lesion_box)
    assert 0 <= top["x0"] < top["x1"] <= 1200 and 0 <= top["y0"] < top["y1"] <= 2000
    assert body["label"] == ("positive" if body["score"] >= body["threshold"] else "negative")
    png = base64.b64decode(body["heatmap_png_base64"])
    picture = Image.open(io.BytesIO(png))
    assert picture.format == "PNG" and picture.size[1] == 1024
    assert f"v{served['version']}" in body["heatmap_caption"]
    assert "SYNTHETIC" in body["heatmap_caption"]  # trained on SYNTHETIC data (tag)

    clear = _analyze(client, _png(without.pixels), pixel_spacing_mm=MM)
    assert clear.status_code == 200, clear.text
    assert "heatmap_png_base64" not in clear.json()
    assert clear.json()["score"] < body["score"], (clear.json()["score"], body["score"])


def test_predict_refuses_a_whole_film_naming_analyze(served: dict[str, Any]) -> None:
    film = make_film(2000, 1200, lesion="none", seed=2, mm_per_px=MM)
    resp = served["client"].post("/predict", files={"image": ("film.png", _png(film.pixels))})
    assert resp.status_code == 422, resp.text
    assert "/analyze" in resp.json()["error"]
    tile = film.pixels[800:1100, 300:600]  # a tile is still a tile
    assert served["client"].post("/predict", files={"image": ("t.png", _png(tile))}).is_success


def test_one_film_in_two_formats_gets_one_answer(served: dict[str, Any]) -> None:
    """A 16-bit PNG and a DICOM MONOCHROME1 of one film: the one preprocessing path gives the
    same windows, scores and regions over HTTP (the spacing from the form vs the DICOM)."""
    client = served["client"]
    film = make_film(1600, 1000, lesion="mass", seed=4, mm_per_px=MM, dtype="uint16")
    inverted = (65535 - film.pixels.astype(np.int64)).astype(np.uint16)
    dicom = _analyze(client, dicom_bytes(inverted, spacing=(MM, MM), photometric="MONOCHROME1"),
                     name="film.dcm")  # fmt: skip
    png = _analyze(client, _png(film.pixels), pixel_spacing_mm=MM)
    assert dicom.status_code == png.status_code == 200, (dicom.text, png.text)
    a, b = dicom.json(), png.json()
    assert (a["image_format"], b["image_format"]) == ("dicom", "png")
    assert a["tiles_scored"] == b["tiles_scored"] > 0
    assert abs(a["score"] - b["score"]) < 1e-4
    assert [{k: r[k] for k in ("x0", "y0", "x1", "y1")} for r in a["regions"]] == [
        {k: r[k] for k in ("x0", "y0", "x1", "y1")} for r in b["regions"]
    ]


def test_dicom_film_uses_its_spacing_and_never_leaks_identifiers(served: dict[str, Any]) -> None:
    client = served["client"]
    film = make_film(1600, 1000, lesion="mass", seed=4, mm_per_px=MM, dtype="uint16")
    inverted = (65535 - film.pixels.astype(np.int64)).astype(np.uint16)  # MONOCHROME1
    data = dicom_bytes(inverted, spacing=(MM, MM), photometric="MONOCHROME1")
    resp = _analyze(client, data, name=f"{SECRET_PATIENT_ID}.dcm")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["scale"]["spacing_source"] == "dicom"
    assert body["scale"]["pixel_spacing_mm"] == pytest.approx(MM)
    assert body["image_format"] == "dicom" and body["tiles_scored"] > 0
    # a 12-bit DICOM tile through /predict, and the contradiction of spacings
    tile = (np.arange(200 * 200).reshape(200, 200) % 4096).astype(np.uint16)
    small = dicom_bytes(tile, bits_stored=12, spacing=(0.1, 0.1))
    resp = client.post("/predict", files={"image": ("x.dcm", small)})
    assert resp.status_code == 200, resp.text
    resp = _analyze(client, data, pixel_spacing_mm=0.2)
    assert resp.status_code == 422 and "contradicts" in resp.json()["error"]

    no_pixels = dicom_bytes(None)
    resp = client.post("/predict", files={"image": ("a.dcm", no_pixels)})
    assert resp.status_code == 422 and "no pixel data" in resp.json()["error"], resp.text
    unknown_syntax = dicom_bytes(
        tile, transfer_syntax="1.2.826.0.1.3680043.9.9999.42", encapsulated_frames=[b"\x00\x01"]
    )
    resp = _analyze(client, unknown_syntax, name="a.dcm")
    assert 400 <= resp.status_code < 500 and "transfer syntax" in resp.json()["error"], resp.text

    for text in (resp.text, body.__repr__(), served["log"].read_text(errors="replace")):
        assert SECRET_PATIENT_NAME.split("^")[0] not in text
        assert SECRET_PATIENT_ID not in text


def test_cli_predict_writes_the_heatmap(served: dict[str, Any], tmp_path: Path, monkeypatch):
    from typer.testing import CliRunner

    from mammo_pipeline.cli.main import app

    film = make_film(1200, 800, lesion="mass", seed=1, mm_per_px=0.1)
    path = tmp_path / "film.png"
    path.write_bytes(_png(film.pixels))
    out = tmp_path / "heat" / "film.png"
    monkeypatch.setenv("MAMMO_API_KEY", API_KEY)
    args = ["predict", str(path), "--url", served["url"], "--heatmap", str(out), "--synthetic"]
    args += ["--json"]  # the whole answer (the default is a summary for people)
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert body["heatmap_written_to"] == str(out) and "heatmap_png_base64" not in body
    # a PNG carries no pixel spacing: the CLI says loudly which one the service assumed
    assert "WARNING: film.png carries no pixel spacing" in result.stderr
    assert "analysed as 0.1 mm/px" in result.stderr
    assert Image.open(out).format == "PNG"
    # a whole film without --analyze goes to /analyze by its size
    result = CliRunner().invoke(app, ["predict", str(path), "--url", served["url"], "--json"])
    assert result.exit_code == 0, result.output
    assert "regions" in json.loads(result.stdout)
    args += ["--pixel-spacing-mm", "0.1"]
    result = CliRunner().invoke(app, args)  # given spacing: no warning
    assert result.exit_code == 0 and "WARNING" not in result.stderr, result.output
    bad = tmp_path / "bad.dcm"
    bad.write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 10)
    result = CliRunner().invoke(app, ["predict", str(bad), "--url", served["url"]])
    message = result.output + str(result.exception or "")
    assert result.exit_code != 0 and "bad.dcm" in message and "no pixel data" in message
