"""MIAS importer on small PGM films and an Info.txt written by the tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from mammo_pipeline.cli.data_import import import_app
from mammo_pipeline.data.example_codec import decode_tile
from mammo_pipeline.data.importers.common import (
    CsvFormatError,
    ImportFailedError,
    StrictImportError,
)
from mammo_pipeline.data.importers.mias import import_mias, patient_of, split_of
from mammo_pipeline.data.importers.runner import ImportResult
from mammo_pipeline.data.numpy_split import load_split
from mammo_pipeline.data.tfrecord_io import iter_records
from tests.formats import breast_picture, disc_mask, write_mias_info, write_pgm

SIZE = 512  # films: 512 x 512 at 0.2 mm (the real ones are 1024 x 1024)
CENTER = 149


def film(
    path: Path, lesions: list[tuple[int, int, int]] = (), *, seed: int = 0, size: int = SIZE
) -> None:
    """An 8-bit film; lesions are (x, y from the BOTTOM, radius) as in Info.txt."""
    img = breast_picture((size, size), tissue=110.0, background=8.0, seed=seed)
    for x, y, r in lesions:
        img[disc_mask((size, size), (size - 1 - y, x), r)] = 240.0
    write_pgm(path, np.clip(np.rint(img), 0, 255).astype(np.uint8), comments=["# mini-MIAS"])


def build(
    root: Path, rows: list[str], films: dict[str, list[tuple[int, int, int]]], size: int = SIZE
) -> Path:
    for n, (ref, lesions) in enumerate(sorted(films.items())):
        film(root / "films" / f"{ref}.pgm", lesions, seed=n, size=size)
    return write_mias_info(root / "Info.txt", rows)


def run(root: Path, **kwargs) -> tuple[ImportResult, list[str]]:
    warnings: list[str] = []
    kwargs.setdefault("progress", False)
    result = import_mias(
        root / "Info.txt",
        root / "films",
        root / "landing",
        root / "test",
        warn=warnings.append,
        **kwargs,
    )
    return result, warnings


def tiles_of(result: ImportResult) -> list[tuple[dict, np.ndarray]]:
    by_file: dict[str, list[np.ndarray]] = {}
    for path in result.outputs.train_files:
        by_file[path.name] = [decode_tile(r).pixels() for r in iter_records(path)]
    if result.outputs.test_data:
        split = load_split(result.outputs.test_data)
        by_file[result.outputs.test_data.name] = [np.asarray(i[..., 0]) for i in split.images]
    return [(t, by_file[t["file"]][t["record"]]) for t in result.report["tiles"]]


def disc_stats(tile: np.ndarray) -> tuple[float, float, float]:
    lit = tile > 200
    rows, cols = np.nonzero(lit)
    return 2.0 * np.sqrt(lit.sum() / np.pi), float(rows.mean()), float(cols.mean())


ROWS = [
    "MIAS database: truth data (a title line, ignored)",
    "mdb001 G CIRC B 150 120 20",
    "mdb002 F NORM",
    "mdb003 D CALC M 120 300 8",
    "mdb003 D SPIC M 140 160 15",
    "mdb004 G CALC B",  # no coordinates: cannot centre a tile
]
FILMS = {
    "mdb001": [(150, 120, 20)],
    "mdb002": [],
    "mdb003": [(120, 300, 8), (140, 160, 15)],
    "mdb004": [],
}


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> tuple[ImportResult, list[str]]:
    root = tmp_path_factory.mktemp("mias")
    build(root, ROWS, FILMS)
    return run(root, test_fraction=0.0, normals_per_image=1)


def test_labels_counts_and_skips(imported) -> None:
    result, warnings = imported
    # CIRC B -> benign mass (2); CALC M -> malignant calc (3); SPIC M -> malignant mass (4);
    # normals: one per film, except mdb004 whose lesion has no location.
    assert result.outputs.counts["train"] == {0: 3, 1: 0, 2: 1, 3: 1, 4: 1}
    assert result.outputs.counts["test"] == {0: 0, 1: 0, 2: 0, 3: 0, 4: 0}
    assert result.outputs.test_data is None
    (skipped,) = result.report["skipped"]
    assert skipped["row"] == 6 and "no lesion coordinates" in skipped["reason"]
    assert skipped["reason"].startswith("mdb004")
    assert len(warnings) == 1 and "Info.txt row 6" in warnings[0]
    assert result.report["info_lines_ignored"] == 1
    assert any(n["kind"] == "no_normals" and n["image"] == "mdb004" for n in result.report["notes"])
    assert result.report["data"] == "REAL" and result.report["source"] == "MIAS"


def test_y_is_measured_from_the_bottom_and_scale_is_0_1_mm(imported) -> None:
    result, _ = imported
    entry, tile = next(
        (t, px) for t, px in tiles_of(result) if t["image"] == "mdb001" and t["kind"] == "lesion"
    )
    assert entry["y_from_bottom"] == 120
    # Radius 20 px at 0.2 mm: 8 mm across, 80 px at 0.1 mm, centred in the tile. (Had y been
    # read from the top, the tile would be centred on plain tissue.)
    diameter, row, col = disc_stats(tile)
    assert diameter == pytest.approx(80, abs=3)
    assert row == pytest.approx(CENTER, abs=1.5) and col == pytest.approx(CENTER, abs=1.5)
    assert entry["lesion_mm"] == pytest.approx(8.0, abs=0.1)


def test_several_lesions_of_one_film(imported) -> None:
    result, _ = imported
    lesions = [t for t, _ in tiles_of(result) if t["image"] == "mdb003" and t["kind"] == "lesion"]
    assert sorted((t["mias_class"], t["severity"], t["label"]) for t in lesions) == [
        ("CALC", "M", 3),
        ("SPIC", "M", 4),
    ]
    normal = [px for t, px in tiles_of(result) if t["image"] == "mdb003" and t["kind"] == "normal"]
    assert len(normal) == 1 and normal[0].max() < 200  # no lesion pixel in the normal tile


def test_patients_never_cross_the_split(tmp_path: Path) -> None:
    refs = [f"mdb{n:03d}" for n in range(1, 13)]  # six patients (left/right film pairs)
    rows = [f"{ref} G CIRC {'BM'[n % 2]} 100 150 12" for n, ref in enumerate(refs)]
    build(tmp_path, rows, {ref: [(100, 150, 12)] for ref in refs}, size=256)
    result, _ = run(tmp_path, test_fraction=0.5, seed=11, normals_per_image=1)
    split_of_patient: dict[str, set[str]] = {}
    for t in result.report["tiles"]:
        split_of_patient.setdefault(t["patient"], set()).add(t["split"])
    assert len(split_of_patient) == 6 and all(len(s) == 1 for s in split_of_patient.values())
    assert {next(iter(s)) for s in split_of_patient.values()} == {"train", "test"}
    assert patient_of("mdb001") == patient_of("mdb002") != patient_of("mdb003")
    # The rule is a stable function of (seed, patient); another seed moves patients.
    for patient, splits in split_of_patient.items():
        assert splits == {split_of(patient, 11, 0.5)}
    assert any({split_of(p, 12, 0.5)} != s for p, s in split_of_patient.items())
    test = load_split(tmp_path / "test" / "mias_test_data.npy")
    assert len(test) == result.outputs.total("test") > 0
    assert sorted(test.labels.tolist()) == sorted(
        t["label"] for t in result.report["tiles"] if t["split"] == "test"
    )


def test_missing_film_and_bad_rows_are_skipped_with_reasons(tmp_path: Path) -> None:
    rows = [
        "mdb001 G CIRC B 150 120 20",
        "mdb002 G CIRC",  # no severity
        "mdb005 G CIRC B 150 120 20",  # no film file
        "mdb006 G BLOB B 150 120 20",  # unknown class
        "mdb007 G CIRC B 900 120 20",  # outside the 512 x 512 film
    ]
    build(tmp_path, rows, {"mdb001": [(150, 120, 20)], "mdb002": [], "mdb007": []})
    result, warnings = run(tmp_path, normals_per_image=0, test_fraction=0.0)
    reasons = {s["row"]: s["reason"] for s in result.report["skipped"]}
    assert "needs severity B or M" in reasons[2]
    assert "film file not found" in reasons[3]
    assert "unknown class 'BLOB'" in reasons[4]
    assert "outside the 512x512 film" in reasons[5]
    assert len(warnings) == 4 and result.outputs.total() == 1


def test_info_without_rows_is_a_one_line_error(tmp_path: Path) -> None:
    write_mias_info(tmp_path / "Info.txt", ["just some text", "and more"])
    (tmp_path / "films").mkdir()
    with pytest.raises(CsvFormatError, match="Info.txt: no MIAS rows") as err:
        run(tmp_path)
    assert "\n" not in str(err.value)


def test_failures_leave_nothing_behind(tmp_path: Path) -> None:
    build(tmp_path, ["mdb001 G CIRC B 150 120 20", "mdb003 G CALC B"], {"mdb001": [(150, 120, 20)]})
    with pytest.raises(StrictImportError, match="row 2: skipped"):
        run(tmp_path, strict=True)
    (tmp_path / "films" / "mdb001.pgm").unlink()
    with pytest.raises(ImportFailedError):
        run(tmp_path)
    for folder in (tmp_path / "landing", tmp_path / "test"):
        assert not folder.exists()  # not even empty folders (issue #22, item 8)


def test_cli_end_to_end(tmp_path: Path) -> None:
    build(tmp_path, ROWS, FILMS)
    args = ["mias", "--info", str(tmp_path / "Info.txt"), "--films", str(tmp_path / "films")]
    args += ["--out", str(tmp_path / "landing"), "--test-out", str(tmp_path / "test")]
    args += ["--test-fraction", "0", "--normals-per-image", "2", "--no-progress"]
    result = CliRunner().invoke(import_app, args)
    assert result.exit_code == 0, result.output
    assert "Importing REAL data (not synthetic): MIAS" in result.output
    assert "REAL MIAS train: 9 tiles" in result.output
    report = json.loads((tmp_path / "test" / "mias_import_report.json").read_text())
    assert report["counts"]["train"] == {"0": 6, "1": 0, "2": 1, "3": 1, "4": 1}
    assert report["parameters"]["pixel_spacing_mm"] == 0.2
    assert [p.name for p in (tmp_path / "landing").iterdir()] == ["mias_train_000.tfrecords"]


def test_lesion_centred_on_the_background_is_skipped_never_a_black_tile(tmp_path: Path) -> None:
    """mini-MIAS mdb212's centre lies on the film background: it used to become an all-black
    "benign calcification" tile, and validation then quarantined the whole import file."""
    rows = ["mdb001 G CIRC B 150 120 20", "mdb001 G CALC B 500 500 6"]  # top-right corner
    build(tmp_path, rows, {"mdb001": [(150, 120, 20)]})
    result, warnings = run(tmp_path, normals_per_image=0, test_fraction=0.0)
    (skipped,) = result.report["skipped"]
    assert skipped["row"] == 2 and "on the film background" in skipped["reason"]
    assert [w for w in warnings if "row 2" in w and "background" in w]
    lesion_tiles = [px for t, px in tiles_of(result) if t["kind"] == "lesion"]
    assert len(lesion_tiles) == 1 and all(px.mean() > 20 for px in lesion_tiles)


def test_absent_films_are_one_summary_line_with_the_list_in_the_report(tmp_path: Path) -> None:
    """Importing a subset of MIAS printed one warning per absent film (310 lines)."""
    absent = [f"mdb{n:03d} G NORM" for n in range(5, 45)]
    build(tmp_path, ["mdb001 G CIRC B 150 120 20", *absent], {"mdb001": [(150, 120, 20)]})
    result, warnings = run(tmp_path, normals_per_image=0, test_fraction=0.0)
    assert len(warnings) == 1 and "40 input file(s)" in warnings[0]
    assert len(result.report["missing_files"]) == 40
    assert all(s["reason"].endswith(".pgm") for s in result.report["skipped"])


def test_spacing_is_from_the_file_only_when_the_file_has_one(imported) -> None:
    """PGM carries no pixel size: the report said spacing_from_file: true for MIAS."""
    result, _ = imported
    assert {t["spacing_from_file"] for t in result.report["tiles"]} == {False}
    assert {tuple(t["pixel_spacing_mm"]) for t in result.report["tiles"]} == {(0.2, 0.2)}


def test_note_instead_of_coordinates_is_described_as_such(tmp_path: Path) -> None:
    rows = ["mdb001 G CIRC B 150 120 20", "mdb003 F CALC B *NOTE 3*"]
    build(tmp_path, rows, {"mdb001": [(150, 120, 20)], "mdb003": []})
    result, _ = run(tmp_path, normals_per_image=0, test_fraction=0.0)
    (skipped,) = result.report["skipped"]
    assert "note '*NOTE 3*' where x, y and radius belong" in skipped["reason"]
    assert "not numbers" not in skipped["reason"]


def test_held_out_patients_whole_films_are_kept_as_a_film_set(tmp_path: Path) -> None:
    """Film-level evaluation needs the held-out patients' whole films with their lesions'
    places, under the same patient split as the tiles."""
    from mammo_pipeline.data.film_set import load_film_set

    build(tmp_path, ROWS[1:], FILMS)
    films_dir = tmp_path / "test_films"
    result, _ = run(tmp_path, test_fraction=1.0, normals_per_image=0, films_out=films_dir)
    film_set = load_film_set(films_dir)
    by_id = {record.film_id: record for record in film_set.records}
    # mdb004's lesion has no coordinates: its film cannot be scored for localisation
    assert sorted(by_id) == ["mdb001", "mdb002", "mdb003"]
    assert not film_set.synthetic and {r.role for r in by_id.values()} == {"test"}
    assert any(
        n["kind"] == "film_not_kept" and n["film"] == "mdb004" for n in result.report["notes"]
    )
    assert result.film_set and result.film_set["digest"] == film_set.digest
    mdb001 = by_id["mdb001"]
    assert mdb001.pixel_spacing_mm == 0.2 and (mdb001.height, mdb001.width) == (SIZE, SIZE)
    (lesion,) = mdb001.lesions
    assert lesion.label == 2 and lesion.centre_in(150, SIZE - 1 - 120, 151, SIZE - 120)
    assert (lesion.x1 - lesion.x0) == pytest.approx(40, abs=2)  # radius 20 px
    assert by_id["mdb002"].label_normal == 0 and len(by_id["mdb003"].lesions) == 2
    pixels = film_set.pixels(mdb001)
    assert pixels.shape == (SIZE, SIZE) and pixels[SIZE - 1 - 120, 150] > pixels[5, SIZE - 5]


def test_validation_films_come_from_patients_held_out_of_training(tmp_path: Path) -> None:
    from mammo_pipeline.data.film_set import load_film_set

    refs = {f"mdb{n:03d}": [(150, 120, 20)] if n % 2 else [] for n in range(1, 13)}
    rows = [f"{ref} G CIRC B 150 120 20" if lesions else f"{ref} G NORM"
            for ref, lesions in refs.items()]  # fmt: skip
    build(tmp_path, rows, refs)
    films_dir = tmp_path / "test_films"
    result, _ = run(tmp_path, test_fraction=0.0, validation_films=0.5, films_out=films_dir)
    film_set = load_film_set(films_dir)
    validation = {r.group for r in film_set.with_role("validation")}
    assert validation and {r.role for r in film_set.records} == {"validation"}
    trained = {t["patient"] for t in result.report["tiles"]}
    assert trained and not (trained & validation)  # never both trained on and validating
    assert result.report["patients"]["validation_films"] == len(validation)


def test_existing_film_set_is_refused_unless_overwrite(tmp_path: Path) -> None:
    from mammo_pipeline.data.importers.common import OutputExistsError

    build(tmp_path, ROWS[1:3], {"mdb001": [(150, 120, 20)], "mdb002": []})
    films_dir = tmp_path / "test_films"
    run(tmp_path, test_fraction=1.0, films_out=films_dir)
    with pytest.raises(OutputExistsError, match="test_films"):
        run(tmp_path, test_fraction=1.0, films_out=films_dir)
