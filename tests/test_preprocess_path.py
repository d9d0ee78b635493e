"""The one preprocessing path (imaging.preprocess), end to end on SYNTHETIC films written in
real file formats: every format gives the same prepared film and the same /analyze answer,
the importer's tile at a window is the window /analyze scores, a mirrored film gives
mirrored regions and the same score, and no scored window has less breast than the
normal-tile rule."""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mammo_pipeline.analysis import analyze
from mammo_pipeline.analysis.tiling import iter_tile_batches, plan_tiles
from mammo_pipeline.data.importers.tiling import lesion_tile, normal_tiles, prepare
from mammo_pipeline.data.schema import SOURCE_SIZE, TILE_MM_PER_PX
from mammo_pipeline.data.synthetic_film import make_film
from mammo_pipeline.imaging.dicom import read_dicom
from mammo_pipeline.imaging.preprocess import (
    MIN_BREAST_FRACTION,
    TILE_SIZE,
    Box,
    breast_coverage,
    prepare_film,
)
from mammo_pipeline.serving.image_io import decode_upload
from tests.formats import dicom_bytes, write_pgm

LIMITS = dict(max_bytes=1 << 28, max_pixels=1 << 26)


def mean_model(x: np.ndarray) -> np.ndarray:
    """A flip-invariant stand-in model: a function of the tile's mean only."""
    return x.astype(np.float64).mean(axis=(1, 2, 3)) / 255.0


def _png(arr: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def film():
    return make_film(1300, 900, lesion="mass", seed=7, mm_per_px=0.1)


@pytest.fixture(scope="module")
def uploads(film, tmp_path_factory) -> dict[str, tuple[bytes, bool]]:
    """The same 8-bit film in every format the service takes: (bytes, DICOM hint)."""
    px = film.pixels
    wide = px.astype(np.uint16) * 257
    pgm = write_pgm(tmp_path_factory.mktemp("pgm") / "film.pgm", px).read_bytes()
    spacing = (0.1, 0.1)
    return {
        "dicom_monochrome2": (dicom_bytes(px, spacing=spacing), True),
        "dicom_monochrome1": (
            dicom_bytes((255 - px).astype(np.uint8), spacing=spacing, photometric="MONOCHROME1"),
            True,
        ),
        "dicom_monochrome1_16bit": (
            dicom_bytes(
                (65535 - wide).astype(np.uint16), spacing=spacing, photometric="MONOCHROME1"
            ),  # fmt: skip
            True,
        ),
        "pgm8": (pgm, False),
        "png8": (_png(px), False),
        "png16_x257": (_png(wide), False),
    }


def _decode(data: bytes, dicom: bool):
    """As the service's /analyze does: a whole film, the DICOM's spacing when it has one."""
    decoded = decode_upload(data, dicom=dicom, whole_image=True, **LIMITS)
    spacing = decoded.pixel_spacing_mm
    return decoded, spacing, ("dicom" if spacing is not None else None)


def test_every_format_gives_the_same_prepared_film_and_answer(film, uploads) -> None:
    prepared, answers = {}, {}
    for name, (data, dicom) in uploads.items():
        decoded, spacing, source = _decode(data, dicom)
        assert decoded.gray is None and decoded.intensities.dtype == np.float32, name
        prepared[name] = prepare_film(decoded.intensities, spacing_mm=spacing or TILE_MM_PER_PX)
        answers[name] = analyze(
            decoded.intensities, predict_batch=mean_model, image_size=64, threshold=0.5,
            pixel_spacing_mm=spacing, spacing_source=source,
        )  # fmt: skip
    ref = prepared["png8"]
    ref_answer = answers["png8"]
    assert ref_answer.tiles_scored > 5
    for name in uploads:
        np.testing.assert_array_equal(prepared[name].pixels, ref.pixels, err_msg=name)
        np.testing.assert_array_equal(prepared[name].breast, ref.breast, err_msg=name)
        a = answers[name]
        assert abs(a.score - ref_answer.score) < 1e-4, name
        assert [r.box for r in a.regions] == [r.box for r in ref_answer.regions], name
        np.testing.assert_allclose(
            a.grid.probabilities, ref_answer.grid.probabilities, atol=1e-4, err_msg=name
        )
    assert answers["dicom_monochrome1"].spacing_source == "dicom"
    assert answers["pgm8"].spacing_source == "default"


def test_importer_tile_is_the_window_analyze_scores(film, uploads) -> None:
    data, _ = uploads["dicom_monochrome1"]
    imported = prepare(read_dicom(data), default_spacing_mm=None)  # the importers' call
    decoded, spacing, source = _decode(data, True)
    served = prepare_film(decoded.intensities, spacing_mm=spacing, spacing_source=source)
    np.testing.assert_array_equal(imported.pixels, served.pixels)
    assert imported.spacing_from_file and served.spacing_from_file

    seen: list[np.ndarray] = []

    def recorder(x: np.ndarray) -> np.ndarray:
        seen.extend(x[..., 0])  # image_size 299: the model input is the tile, as float
        return np.full(len(x), 0.1)

    result = analyze(decoded.intensities, predict_batch=recorder, image_size=SOURCE_SIZE,
                     threshold=0.5, pixel_spacing_mm=spacing, spacing_source=source)  # fmt: skip
    plan = plan_tiles(served)
    assert len(seen) == result.tiles_scored == len(plan.kept) > 5
    for (r, c), scored in zip(plan.kept, seen, strict=True):
        top, left = plan.ys[r], plan.xs[c]
        box = Box(x0=left, y0=top, x1=left + TILE_SIZE, y1=top + TILE_SIZE)
        tile = lesion_tile(imported, box).pixels  # the importer's cut at that window
        assert tile.dtype == np.uint8
        np.testing.assert_array_equal(tile, scored.astype(np.uint8))
        assert np.array_equal(tile.astype(np.float32), scored)  # byte for byte
    # normal training tiles come from the same film and the same cutter
    rng = np.random.default_rng(0)
    for pixels, box in normal_tiles(imported, [], 3, rng):
        r, c = int(box.y0), int(box.x0)
        np.testing.assert_array_equal(pixels, imported.pixels[r : r + TILE_SIZE, c : c + TILE_SIZE])


def exact_mean_model(x: np.ndarray) -> np.ndarray:
    """Exactly flip-invariant: an integer sum of the (uint8-valued) 299-px tile."""
    return x.astype(np.int64).sum(axis=(1, 2, 3)) / (255.0 * x[0].size)


@pytest.mark.parametrize("mm", [0.1, 0.07])
def test_mirrored_film_gives_mirrored_regions_and_the_same_score(mm) -> None:
    film = make_film(1400, 950, lesion="mass", seed=11, mm_per_px=mm)
    flipped = np.ascontiguousarray(film.pixels[:, ::-1])
    w = film.pixels.shape[1]
    # At 299 px the model input is the uint8 window itself: the path is mirror-exact.
    run = dict(predict_batch=exact_mean_model, image_size=SOURCE_SIZE, threshold=0.5,
               top_k=5, pixel_spacing_mm=mm)  # fmt: skip
    a, b = analyze(film.pixels, **run), analyze(flipped, **run)
    assert a.tiles_scored == b.tiles_scored > 5
    assert b.score == a.score
    mirrored = [Box(w - r.box.x1, r.box.y0, w - r.box.x0, r.box.y1) for r in a.regions]
    assert [r.box for r in b.regions] == mirrored
    assert [r.probability for r in b.regions] == [r.probability for r in a.regions]
    np.testing.assert_array_equal(b.grid.probabilities, a.grid.probabilities[:, ::-1])
    # At 64 px TensorFlow's resize (the training op) adds ~1e-9 of float noise, no more.
    run.update(predict_batch=mean_model, image_size=64)
    a, b = analyze(film.pixels, **run), analyze(flipped, **run)
    assert b.score == pytest.approx(a.score, abs=1e-6)
    assert [r.box for r in b.regions][:1] == [
        Box(w - r.box.x1, r.box.y0, w - r.box.x0, r.box.y1) for r in a.regions
    ][:1]


def test_no_scored_window_has_less_breast_than_the_normal_tile_rule() -> None:
    # one constant for the importer's normal tiles and /analyze
    default = inspect.signature(normal_tiles).parameters["min_breast_fraction"].default
    assert default is MIN_BREAST_FRACTION
    assert inspect.signature(analyze).parameters["min_breast_fraction"].default is default
    for seed, mm in ((3, 0.1), (4, 0.05)):
        film = make_film(1600, 1100, lesion="none", seed=seed, mm_per_px=mm)
        prepared = prepare_film(film.pixels, spacing_mm=mm)
        plan = plan_tiles(prepared)
        assert plan.kept and len(plan.kept) < plan.coverage.size
        for r, c in plan.kept:
            cov = breast_coverage(prepared, plan.ys[r], plan.xs[c])
            assert cov >= MIN_BREAST_FRACTION and cov == pytest.approx(plan.coverage[r, c])
        for r in range(len(plan.ys)):
            for c in range(len(plan.xs)):
                assert ((r, c) in plan.kept) == (plan.coverage[r, c] >= MIN_BREAST_FRACTION)
        result = analyze(film.pixels, predict_batch=mean_model, image_size=32, threshold=0.5,
                         pixel_spacing_mm=mm)  # fmt: skip
        assert result.min_breast_fraction == MIN_BREAST_FRACTION
        assert result.tiles_scored == len(plan.kept)
        # every batch handed out is cut from the prepared film
        assert sum(len(cells) for cells, _ in iter_tile_batches(plan, 16)) == len(plan.kept)


def test_heavier_than_8_bit_tiles_keep_the_tile_rule(film) -> None:
    """A tile (not a film) is not re-stretched: 8-bit as is, 16-bit / 257."""
    tile = film.pixels[500:799, 200:499]
    for data in (_png(tile), _png(tile.astype(np.uint16) * 257)):
        decoded = decode_upload(data, **LIMITS)
        assert decoded.intensities is None
        np.testing.assert_array_equal(decoded.gray[..., 0], tile)


def test_tile_scale_is_defined_once() -> None:
    import mammo_pipeline.data.importers.common as common
    import mammo_pipeline.data.schema as schema
    import mammo_pipeline.imaging.preprocess as pre

    assert schema.TILE_MM_PER_PX is pre.TILE_MM_PER_PX is common.TARGET_MM_PER_PX
    assert schema.SOURCE_SIZE is pre.TILE_SIZE
    root = Path(__file__).resolve().parents[1] / "mammo_pipeline"
    assert "TRAINING_MM_PER_PX" not in (root / "analysis" / "__init__.py").read_text()
    assert not (root / "analysis" / "breast_mask.py").exists()
