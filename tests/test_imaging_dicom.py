"""Reading whole mammograms: DICOM (pydicom-written files), PGM, resampling, display window."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import pytest

from mammo_pipeline.imaging import (
    ImageReadError,
    MedicalImage,
    breast_mask,
    display_window,
    to_display_uint8,
)
from mammo_pipeline.imaging.dicom import DicomError, read_dicom
from mammo_pipeline.imaging.pgm import PgmError, read_pgm
from mammo_pipeline.imaging.preprocess import extract_tile
from mammo_pipeline.imaging.resample import resample_to_spacing
from tests.formats import (
    SECRET_BIRTH_DATE,
    SECRET_PATIENT_ID,
    SECRET_PATIENT_NAME,
    breast_picture,
    dicom_bytes,
    write_dicom,
    write_pgm,
)

SECRETS = (SECRET_PATIENT_NAME, SECRET_PATIENT_ID, SECRET_BIRTH_DATE, "Confidential")

RAMP12 = (np.arange(12, dtype=np.uint16).reshape(3, 4) * 300).astype(np.uint16)


# --- DICOM: pixel values -------------------------------------------------------------------


def test_16bit_monochrome2_values_and_spacing(tmp_path: Path) -> None:
    pixels = np.array([[0, 1000, 65535], [7, 30000, 40000]], dtype=np.uint16)
    path = write_dicom(tmp_path / "a.dcm", pixels, spacing=(0.05, 0.07))
    image = read_dicom(path)
    assert isinstance(image, MedicalImage)
    assert image.pixels.dtype == np.float32 and image.pixels.shape == (2, 3)
    np.testing.assert_array_equal(image.pixels, pixels.astype(np.float32))
    assert image.pixel_spacing_mm == (0.05, 0.07)
    assert image.bits_stored == 16
    assert image.source == "dicom"
    from_bytes = read_dicom(dicom_bytes(pixels, spacing=(0.05, 0.07)))
    np.testing.assert_array_equal(from_bytes.pixels, image.pixels)


def test_8bit_and_spacing_fallbacks(tmp_path: Path) -> None:
    pixels = np.array([[0, 128, 255]], dtype=np.uint8)
    imager = read_dicom(write_dicom(tmp_path / "a.dcm", pixels, imager_spacing=(0.1, 0.1)))
    np.testing.assert_array_equal(imager.pixels, [[0.0, 128.0, 255.0]])
    assert imager.bits_stored == 8
    assert imager.pixel_spacing_mm == (0.1, 0.1)  # ImagerPixelSpacing when no PixelSpacing
    both = write_dicom(tmp_path / "b.dcm", pixels, spacing=(0.2, 0.2), imager_spacing=(0.1, 0.1))
    assert read_dicom(both).pixel_spacing_mm == (0.2, 0.2)  # PixelSpacing wins
    assert read_dicom(write_dicom(tmp_path / "c.dcm", pixels)).pixel_spacing_mm is None


def test_12bit_monochrome1_is_inverted_over_the_stored_range(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "m1.dcm", RAMP12, bits_stored=12, photometric="MONOCHROME1")
    image = read_dicom(path)
    assert image.bits_stored == 12
    # MONOCHROME1: 0 is white, so larger stored values are *less* dense: 4095 - v.
    np.testing.assert_array_equal(image.pixels, 4095.0 - RAMP12.astype(np.float32))
    m2 = read_dicom(write_dicom(tmp_path / "m2.dcm", RAMP12, bits_stored=12))
    np.testing.assert_array_equal(m2.pixels, RAMP12.astype(np.float32))


def test_signed_monochrome1_is_inverted_over_the_signed_range(tmp_path: Path) -> None:
    signed = np.array([[-100, 0, 100]], dtype=np.int16)
    image = read_dicom(write_dicom(tmp_path / "s.dcm", signed, photometric="MONOCHROME1"))
    # Signed 16-bit range is -32768..32767, so v becomes (-32768 + 32767) - v.
    np.testing.assert_array_equal(image.pixels, [[99.0, -1.0, -101.0]])


def test_window_is_applied(tmp_path: Path) -> None:
    center, width = 1650.0, 1000.0
    image = read_dicom(
        write_dicom(tmp_path / "w.dcm", RAMP12, bits_stored=12, window=(center, width))
    )
    # DICOM PS3.3 C.11.2.1.2.1 (LINEAR) onto the 12-bit output range 0..4095.
    x = RAMP12.astype(np.float64)
    c, w = center - 0.5, width - 1
    expected = np.clip(((x - c) / w + 0.5) * 4095, 0, 4095)
    expected[x <= c - w / 2] = 0
    expected[x > c + w / 2] = 4095
    np.testing.assert_allclose(image.pixels, expected, rtol=1e-5, atol=1e-3)
    assert image.pixels[0, 0] == 0 and image.pixels[2, 3] == 4095


def test_window_then_monochrome1_inversion(tmp_path: Path) -> None:
    windowed = read_dicom(
        write_dicom(tmp_path / "a.dcm", RAMP12, bits_stored=12, window=(1650, 1000))
    )
    inverted = read_dicom(
        write_dicom(
            tmp_path / "b.dcm",
            RAMP12,
            bits_stored=12,
            window=(1650, 1000),
            photometric="MONOCHROME1",
        )
    )
    np.testing.assert_allclose(inverted.pixels, 4095.0 - windowed.pixels, atol=1e-3)


def test_voi_lut_is_applied(tmp_path: Path) -> None:
    lut = [min(2 * i, 65535) for i in range(4096)]
    image = read_dicom(
        write_dicom(tmp_path / "lut.dcm", RAMP12, bits_stored=12, voi_lut=(0, 16, lut))
    )
    np.testing.assert_array_equal(image.pixels, 2.0 * RAMP12.astype(np.float32))


def test_rescale_is_applied(tmp_path: Path) -> None:
    image = read_dicom(
        write_dicom(tmp_path / "r.dcm", RAMP12, bits_stored=12, rescale=(2.0, -100.0))
    )
    np.testing.assert_allclose(image.pixels, RAMP12 * 2.0 - 100.0)


# --- DICOM: errors -------------------------------------------------------------------------


def test_no_pixel_data(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "nopix.dcm", None)
    with pytest.raises(DicomError) as err:
        read_dicom(path)
    assert str(path) in str(err.value) and "no pixel data" in str(err.value)
    assert err.value.status == 422


def test_not_a_dicom(tmp_path: Path) -> None:
    path = tmp_path / "x.dcm"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 200)
    with pytest.raises(DicomError) as err:
        read_dicom(path)
    assert err.value.status == 415 and "not a DICOM" in str(err.value)
    with pytest.raises(DicomError, match="no such file"):
        read_dicom(tmp_path / "missing.dcm")


def test_compressed_transfer_syntax_without_decoder_is_named(tmp_path: Path) -> None:
    from pydicom.pixels import get_decoder
    from pydicom.uid import JPEGLosslessSV1

    if get_decoder(JPEGLosslessSV1).is_available:
        pytest.skip("a JPEG Lossless decoder is installed here")
    path = write_dicom(
        tmp_path / "jpegls.dcm",
        RAMP12,
        transfer_syntax=JPEGLosslessSV1,
        encapsulated_frames=[b"\xff\xd8\xff\xd9"],
    )
    with pytest.raises(DicomError) as err:
        read_dicom(path)
    message = str(err.value)
    assert "1.2.840.10008.1.2.4.70" in message and "JPEG Lossless" in message
    assert err.value.status == 415 and "\n" not in message


def test_unknown_transfer_syntax_is_named(tmp_path: Path) -> None:
    private = "1.2.826.0.1.3680043.9.9999.42"
    path = write_dicom(
        tmp_path / "private.dcm", RAMP12, transfer_syntax=private, encapsulated_frames=[b"\x00\x01"]
    )
    with pytest.raises(DicomError) as err:
        read_dicom(path)
    assert private in str(err.value) and "not supported" in str(err.value)


def test_multiframe_and_colour_are_refused(tmp_path: Path) -> None:
    frames = np.zeros((2, 4, 4), dtype=np.uint16)
    with pytest.raises(DicomError, match="multi-frame DICOM \\(2 frames\\)"):
        read_dicom(write_dicom(tmp_path / "mf.dcm", frames))
    rgb = np.zeros((4, 4, 3), dtype=np.uint8)
    with pytest.raises(DicomError, match="colour"):
        read_dicom(write_dicom(tmp_path / "rgb.dcm", rgb, photometric="RGB"))


def test_truncated_pixel_data(tmp_path: Path) -> None:
    from pydicom import dcmread

    path = write_dicom(tmp_path / "t.dcm", RAMP12, bits_stored=12)
    ds = dcmread(path)
    ds.PixelData = ds.PixelData[:6]
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(DicomError, match="pixel data could not be decoded") as err:
        read_dicom(path)
    assert err.value.status == 422


def test_no_patient_identifier_in_results_errors_or_logs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from pydicom import dcmread
    from pydicom.uid import JPEGLosslessSV1

    caplog.set_level(logging.DEBUG)
    good = write_dicom(tmp_path / "good.dcm", RAMP12, bits_stored=12, spacing=(0.1, 0.1))
    truncated = write_dicom(tmp_path / "trunc.dcm", RAMP12, bits_stored=12)
    ds = dcmread(truncated)
    ds.PixelData = ds.PixelData[:6]
    ds.save_as(truncated, enforce_file_format=True)
    bad = [
        write_dicom(tmp_path / "nopix.dcm", None),
        write_dicom(
            tmp_path / "jpeg.dcm",
            RAMP12,
            transfer_syntax=JPEGLosslessSV1,
            encapsulated_frames=[b"\xff\xd8\xff\xd9"],
        ),
        write_dicom(tmp_path / "mf.dcm", np.zeros((2, 4, 4), dtype=np.uint16)),
        truncated,
    ]
    texts = [repr(read_dicom(good)), repr(read_dicom(good.read_bytes()))]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for path in bad:
            with pytest.raises(ImageReadError) as err:
                read_dicom(path)
            texts.append(str(err.value))
    texts.extend(str(w.message) for w in caught)
    texts.extend(record.getMessage() for record in caplog.records)
    blob = "\n".join(texts)
    for secret in SECRETS:
        assert secret not in blob


# --- PGM -----------------------------------------------------------------------------------


def test_pgm_binary_8bit_with_comments(tmp_path: Path) -> None:
    pixels = np.arange(30, dtype=np.uint8).reshape(5, 6) * 8
    path = write_pgm(tmp_path / "a.pgm", pixels, comments=["# MIAS style", "# second comment"])
    image = read_pgm(path, pixel_spacing_mm=(0.2, 0.2))
    np.testing.assert_array_equal(image.pixels, pixels.astype(np.float32))
    assert image.pixel_spacing_mm == (0.2, 0.2) and image.bits_stored == 8
    assert image.source == "pgm"
    assert read_pgm(path.read_bytes()).pixel_spacing_mm is None


def test_pgm_binary_16bit_big_endian_and_ascii(tmp_path: Path) -> None:
    pixels = np.array([[0, 256, 65535], [1, 4095, 300]], dtype=np.uint16)
    image = read_pgm(write_pgm(tmp_path / "b.pgm", pixels, maxval=65535))
    np.testing.assert_array_equal(image.pixels, pixels.astype(np.float32))
    assert image.bits_stored == 16
    ascii_image = read_pgm(write_pgm(tmp_path / "c.pgm", pixels, maxval=65535, binary=False))
    np.testing.assert_array_equal(ascii_image.pixels, pixels.astype(np.float32))
    twelve = read_pgm(write_pgm(tmp_path / "d.pgm", pixels.clip(0, 4095), maxval=4095))
    assert twelve.bits_stored == 12


def test_pgm_errors_name_the_file(tmp_path: Path) -> None:
    path = write_pgm(tmp_path / "t.pgm", np.zeros((10, 10), dtype=np.uint8))
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(PgmError, match="t.pgm: PGM raster is truncated"):
        read_pgm(path)
    png = tmp_path / "x.pgm"
    png.write_bytes(b"\x89PNG....")
    with pytest.raises(PgmError, match="not a PGM") as err:
        read_pgm(png)
    assert err.value.status == 415
    over = tmp_path / "o.pgm"
    over.write_bytes(b"P2\n2 1\n100\n5 200\n")
    with pytest.raises(PgmError, match="exceeds maxval 100"):
        read_pgm(over)


# --- resampling, tiles, display ------------------------------------------------------------


def test_resample_to_spacing_scales_and_antialiases() -> None:
    stripes = np.tile(np.array([0.0, 100.0], dtype=np.float32), (40, 20))  # 1-px columns
    down, scale = resample_to_spacing(stripes, 0.05, 0.1)
    assert down.shape == (20, 20) and scale == (0.5, 0.5)
    # Anti-aliased: the 1-px stripes average out instead of aliasing into 0/100 columns.
    assert np.allclose(down[2:-2, 2:-2], 50.0, atol=3.0)
    up, scale = resample_to_spacing(np.ones((10, 12), np.float32), (0.2, 0.2), 0.1)
    assert up.shape == (20, 24) and scale == (2.0, 2.0)
    with pytest.raises(ValueError):
        resample_to_spacing(stripes, 0.0, 0.1)


def test_extract_tile_centres_and_pads() -> None:
    img = np.zeros((50, 60), dtype=np.uint8)
    img[10, 20] = 255
    tile = extract_tile(img, (10.0, 20.0), 11, 11)
    assert tile.shape == (11, 11) and tile[5, 5] == 255 and tile.sum() == 255
    corner = extract_tile(np.full((50, 60), 7, np.uint8), (0.0, 0.0), 11, 11, fill=0)
    assert (corner[:5, :] == 0).all() and (corner[5:, 5:] == 7).all()
    shrunk = extract_tile(np.full((50, 60), 9, np.uint8), (25.0, 30.0), 20, 10)
    assert shrunk.shape == (10, 10) and (shrunk == 9).all()


def test_breast_mask_keeps_the_largest_blob_and_display_window() -> None:
    picture = breast_picture((200, 160), tissue=1000.0, seed=1)
    picture[5:15, 140:155] = 4000.0  # a bright film label away from the breast
    mask = breast_mask(picture)
    assert mask[100, 10] and not mask[10, 150] and not mask[190, 150]
    lo, hi = display_window(picture, mask)
    # the label does not stretch the window; its low end reaches the skin line, which the
    # one breast mask (imaging.mask, skin-line aware) keeps (was 800 < lo: a tighter mask)
    assert lo < 900 and 1000 < hi < 1300
    tile = to_display_uint8(picture, (lo, hi))
    assert tile.dtype == np.uint8 and tile[10, 150] == 255 and tile[195, 155] == 0
    assert (to_display_uint8(np.full((4, 4), 3.0)) == 0).all()
    with pytest.raises(ValueError, match="NaN"):
        to_display_uint8(np.array([[np.nan, 1.0]]))


def test_files_written_by_other_software_read_alike_across_transfer_syntaxes() -> None:
    """pydicom's own sample files (not written by these tests): one MR image stored as
    implicit/explicit VR, big endian, RLE and JPEG 2000 lossless decodes to the same pixels."""
    from pydicom.data import get_testdata_file

    names = [
        "MR_small.dcm",
        "MR_small_implicit.dcm",
        "MR_small_bigendian.dcm",
        "MR_small_RLE.dcm",
        "MR_small_jp2klossless.dcm",
    ]
    paths = [get_testdata_file(n) for n in names]
    if any(p is None for p in paths):
        pytest.skip("pydicom's sample files are not installed")
    images = [read_dicom(p) for p in paths]
    for image in images[1:]:
        np.testing.assert_array_equal(image.pixels, images[0].pixels)
        assert image.pixel_spacing_mm == images[0].pixel_spacing_mm == (0.3125, 0.3125)
    assert images[0].pixels.shape == (64, 64) and np.ptp(images[0].pixels) > 0
