"""Importer for the (mini-)MIAS database: PGM films plus ``Info.txt``, into contract tiles.

``Info.txt`` has one whitespace-separated row per abnormality: reference (``mdb001``),
background tissue (F/G/D), class (CALC, CIRC, SPIC, MISC, ARCH, ASYM or NORM), severity (B/M),
then x, y and radius of the abnormality in pixels. NORM rows have only the first three
columns; some abnormal rows have no coordinates (diffuse findings): those cannot centre a
tile and are skipped with that reason. A film can have several rows. Lines that do not start
with a reference (titles, notes) are ignored and counted in the report.

Rules
- ``y`` is measured from the *bottom* of the film: row index = height - 1 - y.
- Films are 1024 x 1024 8-bit PGM at 200 um per pixel (``pixel_spacing_mm``), upsampled x2 to
  the contract's 0.1 mm per pixel. The lesion box is the circle's bounding square.
- Labels: CALC is a calcification, every other abnormal class a mass; severity B/M gives
  benign/malignant (labels 1-4). NORM films give only normal tiles; abnormal films give
  normal tiles away from their lesions too (none when one of their lesions has no location).
- Patients: films come in left/right pairs, so mdb001/mdb002 are one patient
  (``(n - 1) // 2``). A patient is in the test split when a hash of (seed, patient) falls
  below ``test_fraction``: stable across runs and machines and when films are added.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from mammo_pipeline.data.importers.common import (
    CsvFormatError,
    ImportLog,
    LesionKind,
    Split,
    Warn,
    lesion_label,
    stable_rng,
    stable_unit,
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
from mammo_pipeline.imaging import ImageReadError
from mammo_pipeline.imaging.pgm import read_pgm
from mammo_pipeline.imaging.preprocess import MIN_BREAST_FRACTION

SOURCE = "MIAS"
MIAS_SPACING_MM = 0.2
CLASSES: dict[str, LesionKind | None] = {
    "CALC": "calcification",
    "CIRC": "mass",
    "SPIC": "mass",
    "MISC": "mass",
    "ARCH": "mass",
    "ASYM": "mass",
    "NORM": None,
}
SEVERITIES = {"B": False, "M": True}
_REFERENCE = re.compile(r"^mdb(\d{3})$", re.IGNORECASE)


@dataclass(frozen=True)
class MiasRow:
    """One row of Info.txt; ``kind`` None for NORM; coordinates as written (y from bottom)."""

    line: int
    ref: str
    tissue: str
    mias_class: str
    kind: LesionKind | None
    malignant: bool | None
    x: int | None
    y: int | None
    radius: float | None
    #: Text Info.txt gives where x, y and radius belong (e.g. ``*NOTE 3*``), if any.
    note: str | None = None

    @property
    def located(self) -> bool:
        return self.kind is None or None not in (self.x, self.y, self.radius)


def patient_of(ref: str) -> str:
    """Films mdb(2k+1) and mdb(2k+2) are the left and right breast of one patient."""
    match = _REFERENCE.match(ref)
    if match is None:
        raise ValueError(f"not a MIAS reference: {ref!r}")
    return f"mias_patient_{(int(match.group(1)) - 1) // 2:03d}"


def split_of(patient: str, seed: int, test_fraction: float) -> Split:
    return "test" if stable_unit(patient, seed) < test_fraction else "train"


def parse_info(path: Path, log: ImportLog) -> tuple[list[MiasRow], int]:
    """The rows of Info.txt and the number of non-data lines ignored. A row that starts with
    a reference but is malformed is skipped through ``log`` (file + line + reason)."""
    if not path.is_file():
        raise DataError(path, "no such file")
    try:
        text = path.read_text(encoding="latin-1")
    except OSError as exc:
        raise DataError(path, f"cannot read ({exc.strerror})") from exc
    rows: list[MiasRow] = []
    ignored = 0
    for number, line in enumerate(text.splitlines(), start=1):
        tokens = line.split()
        if not tokens:
            continue
        if not _REFERENCE.match(tokens[0]):
            ignored += 1
            continue
        row = _parse_row(path, number, tokens, log)
        if row is not None:
            rows.append(row)
    if not rows and not log.skipped:
        raise CsvFormatError(
            path, "no MIAS rows (expected lines like 'mdb001 G CIRC B 535 425 197')"
        )
    return rows, ignored


def _parse_row(path: Path, number: int, tokens: list[str], log: ImportLog) -> MiasRow | None:
    ref = tokens[0].lower()
    if len(tokens) < 3:
        log.skip(path, number, f"{ref}: {len(tokens)} column(s), expected at least 3")
        return None
    cls = tokens[2].upper()
    if cls not in CLASSES:
        log.skip(path, number, f"{ref}: unknown class {tokens[2]!r}")
        return None
    kind = CLASSES[cls]
    if kind is None:
        return MiasRow(number, ref, tokens[1].upper(), cls, None, None, None, None, None)
    if len(tokens) < 4 or tokens[3].upper() not in SEVERITIES:
        got = repr(tokens[3]) if len(tokens) >= 4 else "none"
        log.skip(path, number, f"{ref}: abnormal class {cls} needs severity B or M, got {got}")
        return None
    malignant = SEVERITIES[tokens[3].upper()]
    coords = tokens[4:7]
    x = y = radius = None
    if coords and coords[0].startswith("*"):  # a note of the database instead of a location
        note = " ".join(tokens[4:])
        return MiasRow(number, ref, tokens[1].upper(), cls, kind, malignant, None, None, None, note)
    if coords:
        try:
            x, y = int(coords[0]), int(coords[1])
            radius = float(coords[2])
        except (ValueError, IndexError):
            log.skip(path, number, f"{ref}: x, y, radius {' '.join(coords)!r} are not numbers")
            return None
    return MiasRow(number, ref, tokens[1].upper(), cls, kind, malignant, x, y, radius)


def _film_path(films: Path, ref: str) -> Path | None:
    for candidate in (films / f"{ref}.pgm", films / f"{ref.upper()}.PGM", films / f"{ref}.PGM"):
        if candidate.is_file():
            return candidate
    return None


def import_mias(
    info: Path | str,
    films: Path | str,
    out: Path | str,
    test_out: Path | str,
    *,
    test_fraction: float = 0.2,
    seed: int = 0,
    normals_per_image: int = 2,
    pixel_spacing_mm: float = MIAS_SPACING_MM,
    report_path: Path | str | None = None,
    name: str = "mias",
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
    """Import MIAS films into training tfrecords in ``out`` and the held-out numpy split in
    ``test_out`` (report: ``<test_out>/<name>_import_report.json`` unless given).

    ``films_out``: keep the held-out patients' whole films there as a film set
    (:mod:`.films`); ``validation_films``: the share of training patients held out of
    training for validation films (0: none)."""
    info, films = Path(info), Path(films)
    out, test_out = Path(out), Path(test_out)
    if not films.is_dir():
        raise DataError(films, "no such directory")
    if not 0.0 <= test_fraction <= 1.0:
        raise ValueError("test_fraction must be within 0..1")
    if normals_per_image < 0:
        raise ValueError("normals_per_image must be >= 0")
    if not 0.0 <= validation_films < 1.0:
        raise ValueError("validation_films must be within [0, 1)")
    report_file = Path(report_path) if report_path else test_out / f"{name}_import_report.json"
    log = ImportLog(warn=warn, strict=strict)
    rows, ignored = parse_info(info, log)
    by_film: dict[str, list[MiasRow]] = defaultdict(list)
    for r in rows:
        by_film[r.ref].append(r)

    parameters = {
        "test_fraction": test_fraction,
        "seed": seed,
        "normals_per_image": normals_per_image,
        "pixel_spacing_mm": pixel_spacing_mm,
        "large_lesion_margin": large_lesion_margin,
        "min_breast_fraction": min_breast_fraction,
        "validation_films": validation_films,
        "strict": strict,
    }
    report = report_header(SOURCE, {"info": str(info), "films": str(films)}, parameters)
    report["split_rule"] = (
        "by patient (film pair (n-1)//2): test when sha256(seed:patient) < test_fraction"
    )
    report["info_lines_ignored"] = ignored
    patients: dict[str, set[str]] = {"train": set(), "test": set(), "validation_films": set()}
    outputs = import_outputs(films_out, source=SOURCE, log=log, name=name, out=out,
                             test_out=test_out, report_file=report_file,
                             records_per_file=records_per_file, overwrite=overwrite)  # fmt: skip
    with outputs as (keeper, writer):
        bar = tqdm(
            sorted(by_film.items()), desc=f"{SOURCE} films", unit="film", disable=not progress
        )
        for ref, film_rows in bar:
            patient = patient_of(ref)
            split = split_of(patient, seed, test_fraction)
            role: FilmRole | None = "test" if split == "test" else None
            if split == "train" and validation_patient(patient, seed, validation_films):
                role = "validation"  # held out of training: its film chooses the threshold
            path = _film_path(films, ref)
            if path is None:
                expected = films / f"{ref}.pgm"
                for r in film_rows:
                    log.missing(info, r.line, f"{ref}: film file not found: {expected}", expected)
                continue
            try:
                image = read_pgm(path)  # PGM carries no pixel size: the default is used
            except ImageReadError as exc:
                for r in film_rows:
                    log.skip(info, r.line, f"{ref}: film unreadable: {exc}")
                continue
            prepared = prepare(image, default_spacing_mm=pixel_spacing_mm)
            height, width = image.shape
            lesions: list[Lesion] = []
            located = True
            for r in film_rows:
                if r.kind is None:
                    continue
                if not r.located:
                    why = (
                        f"Info.txt has the note {r.note!r} where x, y and radius belong"
                        if r.note
                        else "the row gives no x, y and radius"
                    )
                    log.skip(
                        info, r.line, f"{ref}: no lesion coordinates ({why}), cannot centre a tile"
                    )
                    located = False
                    continue
                assert r.x is not None and r.y is not None and r.radius is not None
                row_index = height - 1 - r.y
                if not (0 <= r.x < width and 0 <= row_index < height) or r.radius < 0:
                    log.skip(
                        info,
                        r.line,
                        f"{ref}: lesion centre x={r.x}, y={r.y} is outside the "
                        f"{width}x{height} film",
                    )
                    located = False
                    continue
                cy, cx = row_index + 0.5, r.x + 0.5  # edge coordinates of the centre
                original = (cy - r.radius, cx - r.radius, cy + r.radius, cx + r.radius)
                box = Box.from_source(*original, prepared.scale)
                provenance = {
                    "info_line": r.line,
                    "mias_class": r.mias_class,
                    "severity": "M" if r.malignant else "B",
                    "x": r.x,
                    "y_from_bottom": r.y,
                    "radius_px": r.radius,
                }
                label = lesion_label(r.kind, bool(r.malignant))
                lesions.append(Lesion(box, label, provenance, (str(info), r.line), original))
            bucket = import_image(
                writer,
                keeper,
                log,
                prepared,
                image.pixels,
                role=role,
                split=split,
                patient=patient,
                image_ref=ref,
                lesions=lesions,
                all_lesions_located=located,
                normals_per_image=normals_per_image,
                rng=stable_rng(seed, ref),
                margin=large_lesion_margin,
                min_breast_fraction=min_breast_fraction,
            )
            patients[bucket].add(patient)
        report["patients"] = {s: len(p) for s, p in patients.items()}
        return finish(writer, log, report, keeper)


__all__ = ["CLASSES", "MIAS_SPACING_MM", "MiasRow", "import_mias", "parse_info", "patient_of"]
