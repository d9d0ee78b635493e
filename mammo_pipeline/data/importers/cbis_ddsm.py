"""Importer for CBIS-DDSM in its official layout: four description CSVs, full-field DICOMs and
ROI mask DICOMs, into contract tiles.

Input
- ``csv_dir`` holds ``{mass,calc}_case_description_{train,test}_set.csv`` (a missing one is
  reported, at least one is needed). Columns used: ``patient_id``, ``left or right breast``,
  ``image view``, ``abnormality id``, ``abnormality type``, ``pathology``, ``image file path``,
  ``ROI mask file path`` and, when present, ``cropped image file path``. Path cells are
  stripped (the published files end many of them with a newline). Rows are numbered from 1,
  the header not counted.
- ``dicom_root``: the CSV paths are relative to it. When a path does not exist as written (the
  TCIA download names its folders differently from the CSVs), the file is looked up by the
  SeriesInstanceUID that the CSV path carries (its second-to-last component) under the
  case folder (``<root>/<case>`` or ``<root>/*/<case>``).

Rules
- Label: calcification/mass x BENIGN or BENIGN_WITHOUT_CALLBACK (benign) / MALIGNANT.
- Split: the official one. A patient found in both the train and the test CSVs (mass and
  calc were split separately) is *excluded from train* and kept in test, so the official
  test set is unchanged and no patient crosses the split; each is listed in the report.
- An image is (patient, side, view): rows of the mass and calc CSVs that describe the same
  mammogram are one image, so its normal tiles avoid every lesion of both.
- ROI mask: nonzero = lesion; the tile is centred on the mask's bounding box. If the file at
  the ROI path has not the full image's shape but the one at the cropped-image path has
  (the two columns are swapped for some rows of the published CSVs), that one is used and a
  note is recorded. A missing or mismatched mask skips the row with the reason.
- Pixel size: from the DICOM, else ``default_spacing_mm`` (0.05 mm: DDSM films were
  digitised at 42-50 um and CBIS-DDSM's DICOMs carry no spacing), recorded in the report.

Longer than 400 lines because the official layout's quirks (two CSV dialects, swapped
mask/crop columns, TCIA folder names, patients in both splits) are handled next to the
rows they concern, so each rule is read where it is applied.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
from tqdm.auto import tqdm

from mammo_pipeline.data.importers.common import (
    TARGET_MM_PER_PX,
    CsvFormatError,
    ImportLog,
    LesionKind,
    Split,
    Warn,
    lesion_label,
    stable_rng,
)
from mammo_pipeline.data.importers.films import FilmRole, import_outputs, validation_patient
from mammo_pipeline.data.importers.runner import (
    ImportResult,
    Lesion,
    finish,
    import_image,
    report_header,
)
from mammo_pipeline.data.importers.tiling import Box, prepare
from mammo_pipeline.errors import DataError
from mammo_pipeline.imaging import ImageReadError, MedicalImage
from mammo_pipeline.imaging.dicom import read_dicom
from mammo_pipeline.imaging.preprocess import MIN_BREAST_FRACTION

SOURCE = "CBIS-DDSM"
#: Pixel size assumed for DICOMs without PixelSpacing (DDSM scanners: 42-50 um).
DEFAULT_SPACING_MM = 0.05

CSV_FILES: dict[tuple[LesionKind, Split], str] = {
    ("mass", "train"): "mass_case_description_train_set.csv",
    ("mass", "test"): "mass_case_description_test_set.csv",
    ("calcification", "train"): "calc_case_description_train_set.csv",
    ("calcification", "test"): "calc_case_description_test_set.csv",
}
REQUIRED_COLUMNS: tuple[str, ...] = (
    "patient_id",
    "left or right breast",
    "image view",
    "abnormality id",
    "abnormality type",
    "pathology",
    "image file path",
    "ROI mask file path",
)
CROP_COLUMN = "cropped image file path"
PATHOLOGY_MALIGNANT = {"MALIGNANT": True, "BENIGN": False, "BENIGN_WITHOUT_CALLBACK": False}
ABNORMALITY_TYPES: dict[str, LesionKind] = {"mass": "mass", "calcification": "calcification"}


@dataclass(frozen=True)
class CbisRow:
    """One abnormality of one mammogram, as described by a CSV row."""

    csv: Path
    row: int
    split: Split
    patient: str
    side: str
    view: str
    abnormality_id: str
    kind: LesionKind
    malignant: bool
    image_path: str
    mask_path: str
    crop_path: str | None

    @property
    def label(self) -> int:
        return lesion_label(self.kind, self.malignant)

    @property
    def image_key(self) -> tuple[str, str, str]:
        return self.patient, self.side, self.view

    def provenance(self) -> dict[str, object]:
        return {
            "csv": self.csv.name,
            "row": self.row,
            "abnormality_id": self.abnormality_id,
            "lesion_type": self.kind,
            "pathology_malignant": self.malignant,
        }


def read_description_csv(path: Path, split: Split, log: ImportLog) -> list[CbisRow]:
    """Parse one description CSV. Malformed file (missing columns): :class:`CsvFormatError`;
    a bad row is skipped through ``log`` with its row number and reason."""
    try:
        fh = open(path, newline="", encoding="utf-8-sig")  # noqa: SIM115
    except OSError as exc:
        raise DataError(path, f"cannot open ({exc.strerror})") from exc
    rows: list[CbisRow] = []
    with fh:
        reader = csv.reader(fh)
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration as exc:
            raise CsvFormatError(path, "empty file (no header row)") from exc
        except csv.Error as exc:
            raise CsvFormatError(path, f"not a readable CSV ({exc})") from exc
        missing = [c for c in REQUIRED_COLUMNS if c not in header]
        if missing:
            raise CsvFormatError(path, "missing column(s): " + ", ".join(repr(c) for c in missing))
        index = {name: i for i, name in enumerate(header)}
        try:
            for number, cells in enumerate(reader, start=1):
                if not any(c.strip() for c in cells):
                    continue
                row = _parse_row(path, number, split, cells, index, log)
                if row is not None:
                    rows.append(row)
        except csv.Error as exc:
            raise CsvFormatError(path, f"not a readable CSV after row {len(rows)} ({exc})") from exc
    return rows


def _parse_row(
    path: Path, number: int, split: Split, cells: list[str], index: dict[str, int], log: ImportLog
) -> CbisRow | None:
    if len(cells) < len(index):
        log.skip(path, number, f"{len(cells)} cells, expected {len(index)}")
        return None

    def cell(name: str) -> str:
        return cells[index[name]].strip() if name in index else ""

    kind = ABNORMALITY_TYPES.get(cell("abnormality type").lower())
    if kind is None:
        log.skip(path, number, f"unknown abnormality type {cell('abnormality type')!r}")
        return None
    pathology = cell("pathology").upper()
    if pathology not in PATHOLOGY_MALIGNANT:
        log.skip(path, number, f"unknown pathology {cell('pathology')!r}")
        return None
    for name in ("patient_id", "image file path", "ROI mask file path"):
        if not cell(name):
            log.skip(path, number, f"empty {name!r}")
            return None
    return CbisRow(
        csv=path,
        row=number,
        split=split,
        patient=cell("patient_id"),
        side=cell("left or right breast").upper(),
        view=cell("image view").upper(),
        abnormality_id=cell("abnormality id"),
        kind=kind,
        malignant=PATHOLOGY_MALIGNANT[pathology],
        image_path=cell("image file path"),
        mask_path=cell("ROI mask file path"),
        crop_path=cell(CROP_COLUMN) or None,
    )


class DicomLocator:
    """Finds the file a CSV path names: as written, else by its SeriesInstanceUID."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._series: dict[Path, dict[str, list[Path]]] = {}

    @staticmethod
    def _parts(rel: str) -> tuple[str, ...] | None:
        parts = PurePosixPath(rel.strip().replace("\\", "/")).parts
        if not parts or parts[0] == "/" or ".." in parts:
            return None
        return parts

    def _index(self, case_dir: Path) -> dict[str, list[Path]]:
        if case_dir not in self._series:
            import pydicom

            index: dict[str, list[Path]] = defaultdict(list)
            for f in sorted(case_dir.rglob("*.dcm")):
                try:
                    ds = pydicom.dcmread(
                        f, stop_before_pixels=True, specific_tags=["SeriesInstanceUID"]
                    )
                    index[str(ds.get("SeriesInstanceUID", ""))].append(f)
                except Exception:  # noqa: BLE001 - unreadable files are simply not indexed
                    continue
            self._series[case_dir] = dict(index)
        return self._series[case_dir]

    def exact(self, rel: str) -> Path | None:
        """The file at the CSV path as written, if it exists."""
        parts = self._parts(rel)
        if parts is None:
            return None
        path = self.root.joinpath(*parts)
        return path if path.is_file() else None

    def find(self, rel: str) -> list[Path]:
        """Candidate files for a CSV path (empty when none exists)."""
        exact = self.exact(rel)
        if exact is not None:
            return [exact]
        parts = self._parts(rel)
        if parts is None:
            return []
        if len(parts) < 3:
            return []
        case, series_uid = parts[0], parts[-2]
        found: list[Path] = []
        for case_dir in [self.root / case, *sorted(self.root.glob(f"*/{case}"))]:
            if case_dir.is_dir():
                found.extend(self._index(case_dir).get(series_uid, []))
        return found


def _mask_bbox(mask: MedicalImage) -> tuple[int, int, int, int] | None:
    """(top, left, bottom, right) edge box of the lit (nonzero) pixels, None when empty."""
    pixels = mask.pixels
    if float(pixels.max()) <= float(pixels.min()):
        return None
    lit = pixels > float(pixels.min())
    rows = np.flatnonzero(lit.any(axis=1))
    cols = np.flatnonzero(lit.any(axis=0))
    return int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1


def _locate_mask(
    row: CbisRow, image_shape: tuple[int, int], locator: DicomLocator, log: ImportLog
) -> tuple[int, int, int, int] | None:
    """The ROI box of ``row`` in full-image pixels, or None (the row is then skipped)."""
    exact = locator.exact(row.mask_path)
    crops = locator.find(row.crop_path) if row.crop_path else []
    candidates = list(dict.fromkeys([*locator.find(row.mask_path), *crops]))
    missing = "" if exact else f"ROI mask file not found: {row.mask_path}"
    if not candidates:
        log.skip(row.csv, row.row, missing)
        return None
    missing = f"{missing}; " if missing else ""
    shapes = []
    for path in candidates:
        try:
            mask = read_dicom(path)
        except ImageReadError as exc:
            shapes.append(f"{path.name}: {exc}")
            continue
        if mask.shape != image_shape:
            shapes.append(f"{path.name}: {mask.shape[0]}x{mask.shape[1]}")
            continue
        if exact is not None and path != exact:
            log.note(
                "mask_path_swapped",
                f"{row.csv.name} row {row.row}: the ROI mask is the file at the cropped-image "
                "path (columns swapped in the CSV)",
                csv=row.csv.name,
                row=row.row,
            )
        box = _mask_bbox(mask)
        if box is None:
            log.skip(row.csv, row.row, f"ROI mask is empty: {path}")
        return box
    log.skip(
        row.csv,
        row.row,
        f"{missing}no ROI mask with the image's shape {image_shape[0]}x{image_shape[1]} "
        f"({'; '.join(shapes)})",
    )
    return None


def _split_patients(rows: list[CbisRow], log: ImportLog) -> list[CbisRow]:
    """Drop the training rows of patients that are also in the test CSVs."""
    by_split: dict[str, set[str]] = {"train": set(), "test": set()}
    for r in rows:
        by_split[r.split].add(r.patient)
    both = sorted(by_split["train"] & by_split["test"])
    for patient in both:
        dropped = [r for r in rows if r.patient == patient and r.split == "train"]
        log.excluded_patients.append(
            {
                "patient": patient,
                "reason": "in both the official train and test CSVs: kept in test only",
                "train_rows_dropped": [f"{r.csv.name} row {r.row}" for r in dropped],
            }
        )
    if both and log.warn is not None:
        log.warn(
            f"{len(both)} patient(s) appear in both official splits; their training rows are "
            "excluded (kept in test) so that no patient crosses the split"
        )
    excluded = set(both)
    return [r for r in rows if not (r.split == "train" and r.patient in excluded)]


def _group(rows: Iterable[CbisRow]) -> dict[tuple[Split, str, str, str], list[CbisRow]]:
    groups: dict[tuple[Split, str, str, str], list[CbisRow]] = defaultdict(list)
    for r in rows:
        groups[(r.split, *r.image_key)].append(r)
    return dict(sorted(groups.items()))


def import_cbis_ddsm(
    csv_dir: Path | str,
    dicom_root: Path | str,
    out: Path | str,
    test_out: Path | str,
    *,
    normals_per_image: int = 2,
    seed: int = 0,
    default_spacing_mm: float = DEFAULT_SPACING_MM,
    report_path: Path | str | None = None,
    name: str = "cbis_ddsm",
    strict: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    warn: Warn | None = None,
    records_per_file: int = 2000,
    large_lesion_margin: float = 0.1,
    min_breast_fraction: float = MIN_BREAST_FRACTION,
    films_out: Path | str | None = None,
    validation_films: float = 0.0,
) -> ImportResult:
    """Import CBIS-DDSM (official layout) into training tfrecords in ``out`` and the held-out
    numpy split in ``test_out``; the report goes to ``report_path`` (default
    ``<test_out>/<name>_import_report.json``). See the module docstring for the rules.

    ``films_out``: keep the official test split's full-field films there as a film set
    (:mod:`.films`); ``validation_films``: the share of training patients held out of
    training for validation films (0: none)."""
    csv_dir, dicom_root = Path(csv_dir), Path(dicom_root)
    out, test_out = Path(out), Path(test_out)
    for d in (csv_dir, dicom_root):
        if not d.is_dir():
            raise DataError(d, "no such directory")
    if normals_per_image < 0:
        raise ValueError("normals_per_image must be >= 0")
    if not 0.0 <= validation_films < 1.0:
        raise ValueError("validation_films must be within [0, 1)")
    report_file = Path(report_path) if report_path else test_out / f"{name}_import_report.json"
    log = ImportLog(warn=warn, strict=strict)

    rows: list[CbisRow] = []
    csv_found: dict[str, bool] = {}
    for (_, split), filename in CSV_FILES.items():
        path = csv_dir / filename
        csv_found[filename] = path.is_file()
        if path.is_file():
            rows.extend(read_description_csv(path, split, log))
    if not any(csv_found.values()):
        raise DataError(
            csv_dir,
            "none of the CBIS-DDSM description CSVs is here: " + ", ".join(CSV_FILES.values()),
        )
    for filename, found in csv_found.items():
        if not found:
            log.note(
                "csv_missing",
                f"{csv_dir / filename}: not found, its rows are not imported",
                show=True,
            )
    rows = _split_patients(rows, log)
    groups = _group(rows)

    parameters = {
        "normals_per_image": normals_per_image,
        "seed": seed,
        "default_spacing_mm": default_spacing_mm,
        "large_lesion_margin": large_lesion_margin,
        "min_breast_fraction": min_breast_fraction,
        "validation_films": validation_films,
        "strict": strict,
    }
    report = report_header(
        SOURCE, {"csv_dir": str(csv_dir), "dicom_root": str(dicom_root)}, parameters
    )
    report["split_rule"] = (
        "official CBIS-DDSM train/test split; patients in both are excluded from train"
    )
    report["csv_files"] = csv_found
    locator = DicomLocator(dicom_root)
    images_default_spacing = 0
    patients: dict[str, set[str]] = {"train": set(), "test": set(), "validation_films": set()}
    outputs = import_outputs(films_out, source=SOURCE, log=log, name=name, out=out,
                             test_out=test_out, report_file=report_file,
                             records_per_file=records_per_file, overwrite=overwrite)  # fmt: skip
    with outputs as (keeper, writer):
        bar = tqdm(groups.items(), desc=f"{SOURCE} images", unit="image", disable=not progress)
        for (split, patient, side, view), group in bar:
            image_ref = f"{patient}_{side}_{view}"
            role: FilmRole | None = "test" if split == "test" else None
            if split == "train" and validation_patient(patient, seed, validation_films):
                role = "validation"  # held out of training: its film chooses the threshold
            image, image_file = _read_group_image(group, locator, log)
            if image is None:
                continue
            try:
                prepared = prepare(image, default_spacing_mm=default_spacing_mm)
            except ValueError as exc:
                for r in group:
                    log.skip(r.csv, r.row, f"image {image_file}: {exc}")
                continue
            images_default_spacing += int(not prepared.spacing_from_file)
            lesions: list[Lesion] = []
            located = True
            for r in group:
                box = _locate_mask(r, image.shape, locator, log)
                if box is None:
                    located = False
                    continue
                lesions.append(
                    Lesion(
                        Box.from_source(*box, prepared.scale),
                        r.label,
                        r.provenance(),
                        (str(r.csv), r.row),
                        tuple(float(v) for v in box),
                    )
                )
            bucket = import_image(
                writer,
                keeper,
                log,
                prepared,
                image.pixels,
                role=role,
                split=split,
                patient=patient,
                image_ref=image_ref,
                lesions=lesions,
                all_lesions_located=located,
                normals_per_image=normals_per_image,
                rng=stable_rng(seed, image_ref),
                margin=large_lesion_margin,
                min_breast_fraction=min_breast_fraction,
            )
            patients[bucket].add(patient)
        report["images_with_default_spacing"] = images_default_spacing
        report["patients"] = {s: len(p) for s, p in patients.items()}
        return finish(writer, log, report, keeper)


def _read_group_image(
    group: list[CbisRow], locator: DicomLocator, log: ImportLog
) -> tuple[MedicalImage | None, Path | None]:
    """The full-field image of a group: the first of its rows' image paths that reads."""
    problems: list[str] = []
    for rel in dict.fromkeys(r.image_path for r in group):
        for path in locator.find(rel):
            try:
                return read_dicom(path), path
            except ImageReadError as exc:
                problems.append(str(exc))
    for r in group:
        if problems:
            log.skip(r.csv, r.row, f"image unreadable: {problems[0]}")
        else:
            reason = f"image file not found: {group[0].image_path}"
            log.missing(r.csv, r.row, reason, group[0].image_path)
    return None, None


__all__ = [
    "CSV_FILES",
    "DEFAULT_SPACING_MM",
    "REQUIRED_COLUMNS",
    "CbisRow",
    "DicomLocator",
    "TARGET_MM_PER_PX",
    "import_cbis_ddsm",
    "read_description_csv",
]
