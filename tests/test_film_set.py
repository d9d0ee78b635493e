"""The film set format (mammo_pipeline.data.film_set): round trip, tamper detection, refusals,
the SYNTHETIC generator and `mammo data synth --films`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mammo_pipeline.data.film_set import (
    FilmSetWriter,
    is_film_set,
    load_film_set,
    make_film_set,
)
from mammo_pipeline.errors import DataError, MammoError


def _write(out: Path) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    films = {
        "a8": rng.integers(0, 256, (40, 30), dtype=np.uint8),
        "b16": rng.integers(0, 65536, (50, 20), dtype=np.uint16),
        "cfloat": rng.normal(1000.0, 50.0, (32, 32)),
    }
    writer = FilmSetWriter(out, source="unit test", synthetic=True)
    writer.add("a8", films["a8"], pixel_spacing_mm=0.1, lesions=[(2, 3, 10, 12, 2)],
               role="validation", group="p1")  # fmt: skip
    writer.add("b16", films["b16"], pixel_spacing_mm=0.07,
               lesions=[{"x0": 0, "y0": 0, "x1": 5, "y1": 5, "label": 3}], role="test",
               group="p2")  # fmt: skip
    writer.add("cfloat", films["cfloat"], pixel_spacing_mm=0.2, lesions=[], role="test",
               group="p3")  # fmt: skip
    with pytest.raises(MammoError, match="already in the set"):
        writer.add("a8", films["a8"], pixel_spacing_mm=0.1, lesions=[], role="test", group="p9")
    with pytest.raises(MammoError, match="outside"):
        writer.add("d", films["a8"], pixel_spacing_mm=0.1, lesions=[(0, 0, 31, 5, 1)],
                   role="test", group="p4")  # fmt: skip
    with pytest.raises(MammoError, match="role"):
        writer.add("e", films["a8"], pixel_spacing_mm=0.1, lesions=[], role="train", group="p5")
    manifest = writer.close()
    assert manifest.count() == (3, 2) and manifest.count("validation") == (1, 1)
    assert len(manifest.digest) == 64
    return films


def test_round_trip(tmp_path):
    out = tmp_path / "films"
    films = _write(out)
    assert is_film_set(out) and not list(tmp_path.glob(".films.partial-*"))
    fs = load_film_set(out)
    assert fs.synthetic and len(fs) == 3 and fs.manifest.source == "unit test"
    got = {r.film_id: (r, px) for r, px in fs}
    assert np.array_equal(got["a8"][1], films["a8"]) and got["a8"][1].dtype == np.uint8
    assert np.array_equal(got["b16"][1], films["b16"]) and got["b16"][1].dtype == np.uint16
    c = got["cfloat"][1]
    assert c.dtype == np.uint16 and c.min() == 0 and c.max() == 65535
    # linear: the rescaled film correlates perfectly with the float intensities
    assert np.corrcoef(c.ravel(), films["cfloat"].ravel())[0, 1] > 0.9999
    rec = got["b16"][0]
    assert rec.label_normal == 1 and rec.lesions[0].label == 3 and rec.role == "test"
    assert rec.lesions[0].centre == (2.5, 2.5) and rec.pixel_spacing_mm == 0.07
    assert got["cfloat"][0].label_normal == 0
    assert [r.film_id for r in fs.with_role("validation")] == ["a8"]


def test_tampered_film_and_manifest_are_named(tmp_path):
    out = tmp_path / "films"
    _write(out)
    png = out / "films" / "b16.png"
    data = bytearray(png.read_bytes())
    data[-20] ^= 0xFF
    png.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"b16\.png.*sha256"):
        load_film_set(out)

    out2 = tmp_path / "films2"
    _write(out2)
    manifest = json.loads((out2 / "films.json").read_text())
    manifest["films"][0]["lesions"] = []
    (out2 / "films.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError, match="digest"):
        load_film_set(out2)
    (out2 / "films" / "a8.png").unlink()
    with pytest.raises(DataError, match="films.json"):
        load_film_set(tmp_path / "nowhere")


def test_patient_in_both_roles_is_refused(tmp_path):
    writer = FilmSetWriter(tmp_path / "x", source="t", synthetic=False)
    img = np.zeros((20, 20), dtype=np.uint8)
    writer.add("1", img, pixel_spacing_mm=0.1, lesions=[], role="test", group="p")
    writer.add("2", img, pixel_spacing_mm=0.1, lesions=[], role="validation", group="p")
    with pytest.raises(MammoError, match="both roles"):
        writer.close()
    assert not (tmp_path / "x").exists() and not list(tmp_path.iterdir())


def test_make_film_set_is_synthetic_with_known_boxes(tmp_path):
    manifest = make_film_set(tmp_path / "s", 6, seed=3, height=200, width=140)
    assert manifest.synthetic and "SYNTHETIC" in manifest.source
    assert manifest.count() == (6, 3)
    assert {f.role for f in manifest.films} == {"validation", "test"}
    fs = load_film_set(tmp_path / "s")
    for record, pixels in fs:
        assert record.synthetic and pixels.dtype == np.uint16 and pixels.shape == (200, 140)
        for lesion in record.lesions:
            box = pixels[lesion.y0 : lesion.y1, lesion.x0 : lesion.x1]
            assert box.size and lesion.label in (1, 2, 3, 4)
    again = make_film_set(tmp_path / "s2", 6, seed=3, height=200, width=140)
    assert again.digest == manifest.digest  # deterministic


def test_cli_synth_films_defaults_to_the_setting(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from mammo_pipeline.cli.main import app

    monkeypatch.setenv("MAMMO_DATA_DIR", str(tmp_path / "data"))
    result = CliRunner().invoke(
        app,
        [
            "data",
            "synth",
            "--out",
            str(tmp_path / "o"),
            "--n",
            "5",
            "--files",
            "1",
            "--films",
            "2",
        ],  # fmt: skip
    )
    assert result.exit_code == 0, result.output
    assert "SYNTHETIC film set (2 films)" in result.output
    assert is_film_set(tmp_path / "data" / "test_films")
