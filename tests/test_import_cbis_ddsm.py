"""CBIS-DDSM importer on tiny copies of the official layout written by the tests (pydicom
DICOMs in the published folder layout, the four description CSVs with their real columns)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from mammo_pipeline.cli.data_import import import_app
from mammo_pipeline.data.example_codec import decode_tile
from mammo_pipeline.data.importers.cbis_ddsm import import_cbis_ddsm
from mammo_pipeline.data.importers.common import (
    CsvFormatError,
    ImportFailedError,
    OutputExistsError,
    StrictImportError,
)
from mammo_pipeline.data.importers.runner import ImportResult
from mammo_pipeline.data.numpy_split import load_split
from mammo_pipeline.data.tfrecord_io import iter_records
from mammo_pipeline.errors import MammoError
from tests.formats import (
    SECRET_BIRTH_DATE,
    SECRET_PATIENT_ID,
    SECRET_PATIENT_NAME,
    CbisDataset,
    CbisLesion,
)

CENTER = 149  # pixel index of a 299-px tile's centre


def standard(root: Path) -> CbisDataset:
    """Four patients, five lesions of all four kinds; two images per split."""
    ds = CbisDataset(root)
    ds.add_image(
        patient="P_00001", split="train", lesions=[CbisLesion((300, 150), 25, "MALIGNANT", "mass")]
    )
    ds.add_image(
        patient="P_00002",
        split="train",
        side="RIGHT",
        view="MLO",
        lesions=[
            CbisLesion((200, 100), 8, "BENIGN", "calc"),
            CbisLesion((450, 120), 30, "BENIGN_WITHOUT_CALLBACK", "mass"),
        ],
        seed=1,
    )
    ds.add_image(
        patient="P_00003", split="test", lesions=[CbisLesion((300, 150), 10, "MALIGNANT", "calc")]
    )
    ds.add_image(
        patient="P_00004",
        split="test",
        view="MLO",
        lesions=[CbisLesion((250, 130), 20, "BENIGN", "mass")],
        seed=3,
    )
    return ds


def run(ds: CbisDataset, **kwargs) -> tuple[ImportResult, list[str]]:
    warnings: list[str] = []
    kwargs.setdefault("progress", False)
    result = import_cbis_ddsm(
        ds.csv_dir,
        ds.dicom_root,
        ds.root / "landing",
        ds.root / "test",
        warn=warnings.append,
        **kwargs,
    )
    return result, warnings


def tiles_of(result: ImportResult) -> list[tuple[dict, np.ndarray]]:
    """Every tile written, read back from the files, with its report entry."""
    by_file: dict[str, list[np.ndarray]] = {}
    for path in result.outputs.train_files:
        by_file[path.name] = [decode_tile(r).pixels() for r in iter_records(path)]
    if result.outputs.test_data:
        split = load_split(result.outputs.test_data)
        by_file[result.outputs.test_data.name] = [np.asarray(i[..., 0]) for i in split.images]
    return [(t, by_file[t["file"]][t["record"]]) for t in result.report["tiles"]]


def disc_stats(tile: np.ndarray) -> tuple[float, float, float]:
    """Diameter (from the area) and centroid (row, col) of the bright disc in a tile."""
    lit = tile > 128
    rows, cols = np.nonzero(lit)
    return 2.0 * np.sqrt(lit.sum() / np.pi), float(rows.mean()), float(cols.mean())


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> tuple[ImportResult, list[str]]:
    ds = standard(tmp_path_factory.mktemp("cbis"))
    ds.write_csvs()
    return run(ds, normals_per_image=2, seed=5)


def test_counts_per_label_and_split(imported) -> None:
    result, warnings = imported
    assert result.outputs.counts["train"] == {0: 4, 1: 1, 2: 1, 3: 0, 4: 1}
    assert result.outputs.counts["test"] == {0: 4, 1: 0, 2: 1, 3: 1, 4: 0}
    assert warnings == [] and result.report["skipped"] == []
    assert result.report["data"] == "REAL" and result.report["source"] == "CBIS-DDSM"
    on_disk = tiles_of(result)
    train_labels = sorted(t["label"] for t, _ in on_disk if t["split"] == "train")
    assert train_labels == [0, 0, 0, 0, 1, 2, 4]
    split = load_split(result.outputs.test_data)
    assert sorted(split.labels.tolist()) == [0, 0, 0, 0, 2, 3]
    for path in result.outputs.train_files:
        for raw in iter_records(path):
            tile = decode_tile(raw)
            assert tile.label_normal == int(tile.label > 0)


def test_tiles_are_at_0_1_mm_and_centred_on_the_lesion(imported) -> None:
    result, _ = imported
    lesion = next(
        (t, px) for t, px in tiles_of(result) if t["patient"] == "P_00001" and t["kind"] == "lesion"
    )
    entry, tile = lesion
    # A disc of radius 25 px at 0.2 mm/px is 10 mm across: 100 px at 0.1 mm/px.
    diameter, row, col = disc_stats(tile)
    assert diameter == pytest.approx(100, abs=3)
    assert row == pytest.approx(CENTER, abs=1.5) and col == pytest.approx(CENTER, abs=1.5)
    assert entry["lesion_mm"] == pytest.approx(10.2, abs=0.3)
    assert entry["downscale"] == 1.0 and entry["spacing_from_file"] is True


def test_normal_tiles_avoid_every_lesion_of_the_image(imported) -> None:
    result, _ = imported
    entries = [t for t, _ in tiles_of(result)]
    for image in {t["image"] for t in entries}:
        lesions = [t["box_px"] for t in entries if t["image"] == image and t["kind"] == "lesion"]
        normals = [
            (t["box_px"], px)
            for t, px in tiles_of(result)
            if t["image"] == image and t["kind"] == "normal"
        ]
        assert len(normals) == 2
        for box, px in normals:
            assert px.max() < 200  # no bright lesion pixel inside
            for les in lesions:  # box_px: the one Box's dict (x1/y1 exclusive)
                apart = (
                    box["y1"] <= les["y0"]
                    or box["y0"] >= les["y1"]
                    or box["x1"] <= les["x0"]
                    or box["x0"] >= les["x1"]
                )
                assert apart, (image, box, les)
    # P_00002's image is in both the mass and the calc CSV: one image, both lesions avoided.
    assert len([t for t in entries if t["image"] == "P_00002_RIGHT_MLO"]) == 4


def test_normal_positions_are_seeded(tmp_path: Path) -> None:
    ds = standard(tmp_path)
    ds.write_csvs()
    first, _ = run(ds, seed=5, name="a")
    again, _ = run(ds, seed=5, name="b", report_path=tmp_path / "b.json")
    other, _ = run(ds, seed=6, name="c", report_path=tmp_path / "c.json")

    def boxes(r: ImportResult) -> list:
        return [t["box_px"] for t in r.report["tiles"] if t["kind"] == "normal"]

    assert boxes(first) == boxes(again) and boxes(first) != boxes(other)


def test_lesion_at_the_border_stays_centred_with_black_padding(tmp_path: Path) -> None:
    ds = CbisDataset(tmp_path)
    ds.add_image(patient="P_00010", split="train", lesions=[CbisLesion((20, 15), 12)])
    ds.write_csvs()
    result, _ = run(ds, normals_per_image=0)
    ((entry, tile),) = tiles_of(result)
    assert entry["padded_at_border"] is True
    diameter, row, col = disc_stats(tile)
    assert row == pytest.approx(CENTER, abs=1.5) and col == pytest.approx(CENTER, abs=1.5)
    assert diameter == pytest.approx(50, abs=3)
    # The lesion's centre is 4.1 mm from the top edge: everything above that is outside
    # the image and black.
    assert (tile[: CENTER - 45, :] == 0).all() and (tile[:, : CENTER - 35] == 0).all()


def test_large_lesion_is_downscaled_and_recorded(tmp_path: Path) -> None:
    ds = CbisDataset(tmp_path)
    ds.add_image(patient="P_00011", split="train", lesions=[CbisLesion((300, 150), 100)])
    ds.write_csvs()
    result, _ = run(ds, normals_per_image=0)
    ((entry, tile),) = tiles_of(result)
    (record,) = result.report["downscaled_lesions"]
    # 201 px at 0.2 mm = 40.2 mm; window = box + 10% = 443 px at 0.1 mm -> factor 443/299.
    assert record["lesion_mm"] == pytest.approx(40.2, abs=0.3)
    assert record["downscale"] == pytest.approx(443 / 299, abs=0.01)
    assert record["patient"] == "P_00011" and record["row"] == 1
    diameter, row, col = disc_stats(tile)
    assert diameter == pytest.approx(400 / (443 / 299), abs=4)
    assert row == pytest.approx(CENTER, abs=1.5) and col == pytest.approx(CENTER, abs=1.5)


def test_default_spacing_when_the_dicom_has_none(tmp_path: Path) -> None:
    ds = CbisDataset(tmp_path)
    ds.add_image(
        patient="P_00012", split="train", spacing=None, lesions=[CbisLesion((300, 150), 40)]
    )
    ds.write_csvs()
    result, _ = run(ds)
    lesion = next((t, px) for t, px in tiles_of(result) if t["kind"] == "lesion")
    # 0.05 mm default: a disc 80 px across is 4 mm, i.e. 40 px at 0.1 mm.
    assert disc_stats(lesion[1])[0] == pytest.approx(40, abs=2.5)
    assert lesion[0]["spacing_from_file"] is False
    assert lesion[0]["pixel_spacing_mm"] == [0.05, 0.05]
    assert result.report["images_with_default_spacing"] == 1
    assert result.report["parameters"]["default_spacing_mm"] == 0.05
    # The image is only 30 x 20 mm at 0.1 mm/px: no room for a normal tile, and it says so.
    assert [n["kind"] for n in result.report["notes"]] == ["normal_shortfall"]


def test_missing_roi_file_is_skipped_with_file_and_row(tmp_path: Path) -> None:
    ds = standard(tmp_path)
    ds.add_image(
        patient="P_00020", split="train", lesions=[CbisLesion((300, 150), 20)], skip_mask_file=True
    )
    ds.write_csvs()
    result, warnings = run(ds)
    (skipped,) = result.report["skipped"]
    assert skipped["file"].endswith("mass_case_description_train_set.csv")
    assert skipped["row"] == 3 and "ROI mask file not found" in skipped["reason"]
    assert any("mass_case_description_train_set.csv row 3" in w for w in warnings)
    # The rest is imported; the image with an unlocated lesion gives no normal tiles.
    assert result.outputs.counts["train"] == {0: 4, 1: 1, 2: 1, 3: 0, 4: 1}
    assert any(
        n["kind"] == "no_normals" and "P_00020" in n["image"] for n in result.report["notes"]
    )


def test_missing_image_file_is_skipped(tmp_path: Path) -> None:
    ds = standard(tmp_path)
    ds.write_csvs()
    row = ds.rows[("mass", "test")][0]
    (ds.dicom_root / row["image file path"].strip()).unlink()
    result, warnings = run(ds)
    (skipped,) = result.report["skipped"]
    assert "image file not found" in skipped["reason"] and skipped["row"] == 1
    assert result.outputs.counts["test"][2] == 0 and len(warnings) == 1


def test_strict_mode_fails_and_writes_nothing(tmp_path: Path) -> None:
    ds = standard(tmp_path)
    ds.add_image(
        patient="P_00020", split="train", lesions=[CbisLesion((300, 150), 20)], skip_mask_file=True
    )
    ds.write_csvs()
    with pytest.raises(StrictImportError, match="row 3: skipped: ROI mask file not found"):
        run(ds, strict=True)
    assert_nothing_written(ds.root)


def assert_nothing_written(root: Path) -> None:
    for folder in (root / "landing", root / "test"):
        leftovers = list(folder.rglob("*")) if folder.exists() else []
        assert leftovers == [], leftovers


def test_nothing_importable_is_an_error_and_leaves_nothing(tmp_path: Path) -> None:
    ds = CbisDataset(tmp_path)
    ds.add_image(patient="P_00030", split="train", lesions=[CbisLesion((300, 150), 20)])
    ds.write_csvs()
    shutil.rmtree(ds.dicom_root)
    ds.dicom_root.mkdir()
    with pytest.raises(ImportFailedError, match="nothing could be imported") as err:
        run(ds)
    assert "\n" not in str(err.value)
    assert_nothing_written(ds.root)


def test_patient_in_both_official_splits_is_kept_in_test_only(tmp_path: Path) -> None:
    ds = standard(tmp_path)
    ds.add_image(patient="P_00005", split="train", lesions=[CbisLesion((300, 150), 20)], seed=7)
    ds.add_image(
        patient="P_00005",
        split="test",
        side="RIGHT",
        lesions=[CbisLesion((300, 150), 9, "BENIGN", "calc")],
        seed=8,
    )
    ds.write_csvs()
    result, warnings = run(ds)
    patients = {
        s: {t["patient"] for t in result.report["tiles"] if t["split"] == s}
        for s in ("train", "test")
    }
    assert "P_00005" in patients["test"] and "P_00005" not in patients["train"]
    assert patients["train"].isdisjoint(patients["test"])
    (excluded,) = result.report["excluded_patients"]
    assert excluded["patient"] == "P_00005"
    assert excluded["train_rows_dropped"] == ["mass_case_description_train_set.csv row 3"]
    assert any("both official splits" in w for w in warnings)


def test_malformed_csv_is_a_one_line_error_naming_file_and_columns(tmp_path: Path) -> None:
    ds = standard(tmp_path)
    ds.write_csvs(drop_column="pathology")
    with pytest.raises(CsvFormatError) as err:
        run(ds)
    message = str(err.value)
    assert "calc_case_description_test_set.csv" in message or "mass_case" in message
    assert "missing column(s): 'pathology'" in message and "\n" not in message
    assert_nothing_written(ds.root)


def test_swapped_mask_and_crop_columns_are_recognised(tmp_path: Path) -> None:
    ds = CbisDataset(tmp_path)
    ds.add_image(
        patient="P_00040",
        split="train",
        lesions=[CbisLesion((300, 150), 25)],
        swap_mask_and_crop=True,
    )
    ds.write_csvs()
    result, warnings = run(ds, normals_per_image=0)
    ((entry, tile),) = tiles_of(result)
    assert disc_stats(tile)[0] == pytest.approx(100, abs=3)
    assert [n["kind"] for n in result.report["notes"]] == ["mask_path_swapped"]
    assert warnings == []


def test_tcia_folder_names_are_found_by_series_uid(tmp_path: Path) -> None:
    """The TCIA download names folders by date/description, not by the UIDs in the CSVs."""
    ds = CbisDataset(tmp_path)
    ds.add_image(patient="P_00050", split="train", lesions=[CbisLesion((300, 150), 25)])
    ds.write_csvs()
    moved = tmp_path / "tcia"
    for case in sorted(ds.dicom_root.iterdir()):
        for n, dcm in enumerate(sorted(case.rglob("*.dcm"))):
            target = (
                moved
                / "CBIS-DDSM"
                / case.name
                / "07-20-2016-DDSM-NA"
                / f"1.00000{n}-x"
                / f"1-{n + 1}.dcm"
            )
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(dcm, target)
    shutil.rmtree(ds.dicom_root)
    moved.rename(ds.dicom_root)
    result, warnings = run(ds, normals_per_image=1)
    assert result.outputs.counts["train"] == {0: 1, 1: 0, 2: 0, 3: 0, 4: 1}
    assert warnings == []


def test_existing_outputs_are_refused_unless_overwrite(tmp_path: Path) -> None:
    ds = standard(tmp_path)
    ds.write_csvs()
    first, _ = run(ds)
    before = first.outputs.train_files[0].read_bytes()
    with pytest.raises(OutputExistsError, match="already exists"):
        run(ds)
    again, _ = run(ds, overwrite=True)
    assert again.outputs.train_files[0].read_bytes() == before


def test_no_patient_identifier_from_the_dicom_header_reaches_any_output(tmp_path: Path) -> None:
    ds = standard(tmp_path)
    ds.add_image(
        patient="P_00020", split="train", lesions=[CbisLesion((300, 150), 20)], skip_mask_file=True
    )
    ds.write_csvs()
    # One image that cannot be decoded, to exercise the error path too.
    row = ds.rows[("mass", "test")][0]
    broken = ds.dicom_root / row["image file path"].strip()
    broken.write_bytes(broken.read_bytes()[:-100])
    result, warnings = run(ds)
    texts = [result.outputs.report.read_text(), *warnings]
    for secret in (SECRET_PATIENT_NAME, SECRET_PATIENT_ID, SECRET_BIRTH_DATE, "Confidential"):
        assert all(secret not in text for text in texts)
    assert any("image unreadable" in s["reason"] for s in result.report["skipped"])


def test_cli_end_to_end(tmp_path: Path) -> None:
    ds = standard(tmp_path)
    ds.write_csvs()
    out, test_out = tmp_path / "landing", tmp_path / "test"
    args = ["cbis-ddsm", "--csv-dir", str(ds.csv_dir), "--dicom-root", str(ds.dicom_root)]
    args += ["--out", str(out), "--test-out", str(test_out), "--normals-per-image", "1"]
    result = CliRunner().invoke(import_app, [*args, "--seed", "3", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "Importing REAL data (not synthetic)" in result.output
    assert "REAL CBIS-DDSM train: 5 tiles" in result.output
    assert "REAL CBIS-DDSM test: 4 tiles" in result.output
    report = json.loads((test_out / "cbis_ddsm_import_report.json").read_text())
    assert report["counts"]["train"] == {"0": 2, "1": 1, "2": 1, "3": 0, "4": 1}
    assert [p.name for p in out.iterdir()] == ["cbis_ddsm_train_000.tfrecords"]
    assert len(load_split(test_out / "cbis_ddsm_test_data.npy")) == 4
    for secret in (SECRET_PATIENT_NAME, SECRET_PATIENT_ID):
        assert secret not in result.output


def test_cli_error_is_one_line(tmp_path: Path) -> None:
    ds = standard(tmp_path)
    ds.write_csvs(drop_column="image file path")
    args = ["cbis-ddsm", "--csv-dir", str(ds.csv_dir), "--dicom-root", str(ds.dicom_root)]
    args += ["--out", str(tmp_path / "l"), "--test-out", str(tmp_path / "t"), "--no-progress"]
    result = CliRunner().invoke(import_app, args)
    # The `mammo` entry point prints a MammoError as one line, without a traceback.
    assert result.exit_code != 0 and isinstance(result.exception, MammoError)
    assert "missing column(s): 'image file path'" in str(result.exception)
    assert "\n" not in str(result.exception)
    assert not (tmp_path / "l").exists() and not (tmp_path / "t").exists()


def test_mammo_entry_point_prints_one_error_line(tmp_path: Path) -> None:
    """Through the real `mammo` entry point: exit 1, one 'error:' line, no traceback."""
    import os
    import subprocess
    import sys

    ds = standard(tmp_path)
    ds.write_csvs(drop_column="pathology")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAMMO_")}
    proc = subprocess.run(
        [sys.executable, "-m", "mammo_pipeline.cli.main", "data", "import", "cbis-ddsm"]
        + ["--csv-dir", str(ds.csv_dir), "--dicom-root", str(ds.dicom_root)]
        + ["--out", str(tmp_path / "l"), "--test-out", str(tmp_path / "t"), "--no-progress"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert "missing column(s): 'pathology'" in lines[0] and "Traceback" not in proc.stderr
    assert "REAL" in proc.stdout


def test_official_test_films_are_kept_as_a_film_set(tmp_path: Path) -> None:
    """The official test split's full-field films, with their ROI boxes, become the film set
    of film-level evaluation; a film finer than 0.1 mm/px is stored at 0.1 mm/px."""
    from mammo_pipeline.data.film_set import load_film_set

    ds = standard(tmp_path)
    ds.add_image(
        patient="P_00005",
        split="test",
        lesions=[CbisLesion((600, 300), 40, "MALIGNANT", "mass")],
        shape=(1200, 800),
        spacing=(0.05, 0.05),
        seed=4,
    )
    ds.write_csvs()
    result, _ = run(ds, normals_per_image=0, films_out=tmp_path / "test_films")
    film_set = load_film_set(tmp_path / "test_films")
    by_group = {r.group: r for r in film_set.records}
    assert sorted(by_group) == ["P_00003", "P_00004", "P_00005"]  # test patients only
    assert {r.role for r in film_set.records} == {"test"} and not film_set.synthetic
    (lesion,) = by_group["P_00003"].lesions
    assert lesion.label == 3 and lesion.centre_in(149, 299, 151, 301)  # (row 300, col 150)
    fine = by_group["P_00005"]
    assert fine.pixel_spacing_mm == pytest.approx(0.1)
    (big,) = fine.lesions
    assert big.centre_in(148, 298, 152, 302)  # (row 600, col 300) at half the resolution
    assert result.film_set["by_role"] == {"validation": 0, "test": 3}
