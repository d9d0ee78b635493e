"""Film sets: whole mammograms with lesion boxes, for film-level evaluation (``/analyze``).

A film set is a directory::

    <dir>/films.json               the manifest (below)
    <dir>/films/<film_id>.png      8- or 16-bit grayscale PNG, larger = denser

``films.json``::

    {"schema": "mammo.film_set/1", "source": "...", "synthetic": true|false,
     "n_films": N, "digest": "<sha256 of the canonical JSON of the entries>",
     "films": [{"film_id", "file" (relative, "films/<id>.png"), "sha256" (of the PNG bytes),
                "label_normal" (1 when it has a lesion), "lesions": [{"x0", "y0", "x1", "y1",
                "label"}] (original pixels, x1/y1 exclusive; label 1..4 of the data contract),
                "pixel_spacing_mm", "role" ("validation" | "test"), "group" (the patient:
                one patient's films share one role), "synthetic", "height", "width"}]}

Writing (the importers and the synthetic generator use exactly this)::

    writer = FilmSetWriter(out_dir, source="MIAS", synthetic=False)
    writer.add(film_id, pixels, pixel_spacing_mm=0.2, lesions=[(x0, y0, x1, y1, label)],
               role="test", group=patient_id)
    manifest = writer.close()      # -> FilmSetManifest

``pixels`` is a 2-D array: uint8 and uint16 are written as they are; any other dtype
(float intensities, int32, ...) is rescaled linearly to the full uint16 range (the
analysis preprocessing is affine-invariant). Lesions are dicts with those keys or
``(x0, y0, x1, y1, label)`` tuples. A duplicate film id, a box outside the film, a label
outside 1..4 or a role other than validation/test is refused at ``add``; one patient
(``group``) in both roles is refused at ``close``. The set is built in a staging directory
beside ``out_dir`` and renamed into place at ``close`` (a reader never sees half a set; an
existing set at ``out_dir`` is replaced).

Reading: :func:`load_film_set` checks the manifest (schema, digest) and every file's
sha256, and raises :class:`~mammo_pipeline.errors.DataError` naming the file on any
problem; iterating the :class:`FilmSet` yields ``(FilmRecord, pixels)``.
:func:`make_film_set` writes a SYNTHETIC set (films from :mod:`.synthetic_film`).

Longer than 400 lines because the format's writer, reader and checks belong together with
the record types they share (one place defines the contract).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mammo_pipeline.errors import DataError, MammoError

SCHEMA = "mammo.film_set/1"
MANIFEST_FILE = "films.json"
FILMS_DIR = "films"
ROLES = ("validation", "test")


@dataclass(frozen=True)
class Lesion:
    """A lesion's box in the film's original pixels (x1/y1 exclusive) and its 1..4 label."""

    x0: int
    y0: int
    x1: int
    y1: int
    label: int

    @property
    def centre(self) -> tuple[float, float]:
        """(x, y) of the box centre, in pixels."""
        return (self.x0 + self.x1) / 2.0, (self.y0 + self.y1) / 2.0

    def centre_in(self, x0: float, y0: float, x1: float, y1: float) -> bool:
        """True when the centre lies in the box ``[x0, x1) x [y0, y1)``."""
        cx, cy = self.centre
        return x0 <= cx < x1 and y0 <= cy < y1

    @classmethod
    def of(cls, value: Any) -> Lesion:
        if isinstance(value, Lesion):
            return value
        if isinstance(value, Mapping):
            return cls(*(int(value[k]) for k in ("x0", "y0", "x1", "y1", "label")))
        x0, y0, x1, y1, label = value
        return cls(int(x0), int(y0), int(x1), int(y1), int(label))


@dataclass(frozen=True)
class FilmRecord:
    """One film's manifest entry."""

    film_id: str
    file: str
    sha256: str
    label_normal: int
    lesions: tuple[Lesion, ...]
    pixel_spacing_mm: float
    role: str
    group: str
    synthetic: bool
    height: int
    width: int

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["lesions"] = [asdict(x) for x in self.lesions]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FilmRecord:
        return cls(
            film_id=str(d["film_id"]),
            file=str(d["file"]),
            sha256=str(d["sha256"]),
            label_normal=int(d["label_normal"]),
            lesions=tuple(Lesion.of(x) for x in d["lesions"]),
            pixel_spacing_mm=float(d["pixel_spacing_mm"]),
            role=str(d["role"]),
            group=str(d["group"]),
            synthetic=bool(d["synthetic"]),
            height=int(d["height"]),
            width=int(d["width"]),
        )


def entries_digest(films: Sequence[FilmRecord]) -> str:
    """sha256 of the canonical JSON of the entries (what the gate compares film sets by)."""
    text = json.dumps([f.to_dict() for f in films], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class FilmSetManifest:
    source: str
    synthetic: bool
    films: tuple[FilmRecord, ...]
    digest: str = ""
    schema: str = SCHEMA

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": self.schema,
            "source": self.source,
            "synthetic": self.synthetic,
            "n_films": len(self.films),
            "digest": self.digest,
            "films": [f.to_dict() for f in self.films],
        }

    def count(self, role: str | None = None) -> tuple[int, int]:
        """(films, films with lesions) in ``role`` (all roles when None)."""
        chosen = [f for f in self.films if role is None or f.role == role]
        return len(chosen), sum(f.label_normal for f in chosen)


def _as_pixels(pixels: Any, film_id: str) -> np.ndarray:
    a = np.asarray(pixels)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if a.ndim != 2 or min(a.shape) < 16:
        raise MammoError(f"film {film_id!r}: expected a 2-D image of at least 16x16, got {a.shape}")
    if a.dtype in (np.uint8, np.uint16):
        return a
    f = a.astype(np.float64)
    if not np.isfinite(f).all():
        raise MammoError(f"film {film_id!r}: pixels hold NaN or infinite values")
    lo, hi = float(f.min()), float(f.max())
    scale = 65535.0 / (hi - lo) if hi > lo else 0.0
    return np.round((f - lo) * scale).astype(np.uint16)


def _png_bytes(pixels: np.ndarray, synthetic: bool = False) -> bytes:
    """PNG bytes; a SYNTHETIC film carries the provenance marker (:mod:`.provenance`)."""
    from mammo_pipeline.data.provenance import png_bytes

    return png_bytes(pixels, synthetic=synthetic)


def decode_png(data: bytes, source: Path | str) -> np.ndarray:
    """A film PNG as a 2-D uint8 / uint16 array (DataError naming ``source`` otherwise)."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            mode = img.mode
            arr = np.asarray(img)
    except Exception as exc:  # noqa: BLE001 - any decoding failure is the file's fault
        raise DataError(source, f"not a readable PNG ({type(exc).__name__}: {exc})") from None
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        if arr.min() < 0 or arr.max() > 65535:
            raise DataError(source, "16-bit film with values outside 0..65535")
        return arr.astype(np.uint16)
    if mode == "L":
        return arr.astype(np.uint8)
    raise DataError(source, f"film PNG must be 8- or 16-bit grayscale, got mode {mode}")


class FilmSetWriter:
    """Writes a film set (see the module docstring); ``close()`` makes it appear at once."""

    def __init__(self, out_dir: Path | str, *, source: str, synthetic: bool) -> None:
        self.out_dir = Path(out_dir)
        self.source = str(source)
        self.synthetic = bool(synthetic)
        self.out_dir.parent.mkdir(parents=True, exist_ok=True)
        self._staging = Path(
            tempfile.mkdtemp(prefix=f".{self.out_dir.name}.partial-", dir=self.out_dir.parent)
        )
        (self._staging / FILMS_DIR).mkdir()
        self._films: list[FilmRecord] = []
        self._ids: set[str] = set()
        self._closed = False

    def add(
        self,
        film_id: str,
        pixels: Any,
        *,
        pixel_spacing_mm: float,
        lesions: Sequence[Any],
        role: str,
        group: str,
    ) -> FilmRecord:
        if self._closed:
            raise MammoError("film set writer is closed")
        film_id = str(film_id)
        if not film_id or "/" in film_id or "\\" in film_id or film_id.startswith("."):
            raise MammoError(f"film id {film_id!r} cannot be a file name")
        if film_id in self._ids:
            raise MammoError(f"film id {film_id!r} is already in the set (ids must be unique)")
        if role not in ROLES:
            raise MammoError(f"film {film_id!r}: role must be one of {ROLES}, got {role!r}")
        spacing = float(pixel_spacing_mm)
        if not (math.isfinite(spacing) and 0.005 <= spacing <= 2.0):
            raise MammoError(f"film {film_id!r}: pixel spacing {spacing} mm is implausible")
        arr = _as_pixels(pixels, film_id)
        h, w = arr.shape
        boxes = tuple(Lesion.of(x) for x in lesions)
        for b in boxes:
            if not (0 <= b.x0 < b.x1 <= w and 0 <= b.y0 < b.y1 <= h):
                raise MammoError(f"film {film_id!r}: lesion box {b} is outside the {w}x{h} film")
            if b.label not in (1, 2, 3, 4):
                raise MammoError(f"film {film_id!r}: lesion label {b.label} is not 1..4")
        data = _png_bytes(arr, synthetic=self.synthetic)
        rel = f"{FILMS_DIR}/{film_id}.png"
        (self._staging / rel).write_bytes(data)
        record = FilmRecord(
            film_id=film_id,
            file=rel,
            sha256=hashlib.sha256(data).hexdigest(),
            label_normal=int(bool(boxes)),
            lesions=boxes,
            pixel_spacing_mm=spacing,
            role=role,
            group=str(group),
            synthetic=self.synthetic,
            height=int(h),
            width=int(w),
        )
        self._films.append(record)
        self._ids.add(film_id)
        return record

    def close(self) -> FilmSetManifest:
        """Write ``films.json`` and move the set into place; returns the manifest."""
        if self._closed:
            raise MammoError("film set writer is already closed")
        roles: dict[str, set[str]] = {}
        for f in self._films:
            roles.setdefault(f.group, set()).add(f.role)
        crossing = sorted(g for g, r in roles.items() if len(r) > 1)
        if crossing:
            self.abort()
            raise MammoError(f"patient(s) {crossing[:5]} have films in both roles")
        films = tuple(self._films)
        manifest = FilmSetManifest(self.source, self.synthetic, films, entries_digest(films))
        (self._staging / MANIFEST_FILE).write_text(json.dumps(manifest.to_dict(), indent=1))
        old = None
        if self.out_dir.exists():
            old = self.out_dir.with_name(f".{self.out_dir.name}.old-{os.getpid()}")
            os.replace(self.out_dir, old)
        os.replace(self._staging, self.out_dir)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        self._closed = True
        return manifest

    def abort(self) -> None:
        self._closed = True
        shutil.rmtree(self._staging, ignore_errors=True)

    def __enter__(self) -> FilmSetWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None and not self._closed:
            self.abort()


@dataclass
class FilmSet:
    """A verified film set; iterate for ``(record, pixels)`` (each file re-checked)."""

    root: Path
    manifest: FilmSetManifest
    records: list[FilmRecord] = field(default_factory=list)

    @property
    def synthetic(self) -> bool:
        return self.manifest.synthetic or any(r.synthetic for r in self.records)

    @property
    def digest(self) -> str:
        return self.manifest.digest

    def __len__(self) -> int:
        return len(self.records)

    def with_role(self, role: str) -> list[FilmRecord]:
        return [r for r in self.records if r.role == role]

    def pixels(self, record: FilmRecord) -> np.ndarray:
        path = self.root / record.file
        data = _read(path)
        if hashlib.sha256(data).hexdigest() != record.sha256:
            raise DataError(path, "sha256 does not match films.json: the film was changed")
        return decode_png(data, path)

    def __iter__(self) -> Iterator[tuple[FilmRecord, np.ndarray]]:
        for record in self.records:
            yield record, self.pixels(record)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise DataError(path, f"cannot read the film ({exc.strerror or exc})") from None


def is_film_set(path: Path | str) -> bool:
    """True when ``path`` holds a ``films.json`` (it may still be broken)."""
    return (Path(path) / MANIFEST_FILE).is_file()


def load_film_set(path: Path | str) -> FilmSet:
    """Read and verify a film set (manifest digest, every file's sha256 and decoding)."""
    root = Path(path)
    manifest_path = root / MANIFEST_FILE
    try:
        raw = json.loads(manifest_path.read_text())
    except FileNotFoundError:
        raise DataError(manifest_path, "no film set here (films.json missing)") from None
    except (OSError, ValueError) as exc:
        raise DataError(manifest_path, f"unreadable manifest ({exc})") from None
    if not isinstance(raw, dict) or raw.get("schema") != SCHEMA:
        raise DataError(manifest_path, f"not a film set manifest of schema {SCHEMA}")
    try:
        records = [FilmRecord.from_dict(d) for d in raw["films"]]
        manifest = FilmSetManifest(
            str(raw["source"]), bool(raw["synthetic"]), tuple(records), str(raw["digest"])
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(manifest_path, f"malformed entry ({exc!r})") from None
    if entries_digest(records) != manifest.digest:
        raise DataError(manifest_path, "the entries do not match the manifest digest (edited)")
    ids = [r.film_id for r in records]
    if len(set(ids)) != len(ids):
        raise DataError(manifest_path, "duplicate film ids")
    film_set = FilmSet(root, manifest, records)
    for record in records:
        if record.role not in ROLES:
            raise DataError(root / record.file, f"role {record.role!r} is not one of {ROLES}")
        pixels = film_set.pixels(record)
        if pixels.shape != (record.height, record.width):
            raise DataError(root / record.file, f"is {pixels.shape}, films.json says "
                            f"{(record.height, record.width)}")  # fmt: skip
    return film_set


def make_film_set(
    out_dir: Path | str,
    n: int,
    *,
    seed: int,
    mm_per_px: float = 0.2,
    positive_fraction: float = 0.5,
    validation_fraction: float = 0.3,
    height: int = 600,
    width: int = 400,
) -> FilmSetManifest:
    """A SYNTHETIC film set of ``n`` films (one patient each) with a planted mass or
    calcification cluster in ``positive_fraction`` of them; ``validation_fraction`` of each
    class gets role validation. Default size 600 x 400 px at 0.2 mm/px (a 120 x 80 mm
    field: about 1200 x 800 px at the training scale)."""
    from mammo_pipeline.data.synthetic_film import make_film

    if n < 1:
        raise MammoError("a film set needs at least one film")
    rng = np.random.default_rng([seed, 2_024_017])
    n_pos = round(n * positive_fraction)
    positive = np.zeros(n, dtype=bool)
    positive[rng.permutation(n)[:n_pos]] = True
    role = np.array(["test"] * n, dtype=object)
    for cls in (True, False):
        idx = rng.permutation(np.flatnonzero(positive == cls))
        role[idx[: round(idx.size * validation_fraction)]] = "validation"
    writer = FilmSetWriter(out_dir, source=f"SYNTHETIC make_film_set seed {seed}", synthetic=True)
    with writer:
        for i in range(n):
            lesion = ("mass" if rng.random() < 0.5 else "calcification") if positive[i] else "none"
            film = make_film(
                height,
                width,
                lesion=lesion,
                malignant=bool(rng.random() < 0.5),
                seed=int(seed) * 100_003 + i,
                mm_per_px=mm_per_px,
                side="left" if i % 2 == 0 else "right",
                dtype="uint16",
            )
            boxes = [(*film.lesion_box, film.label)] if film.lesion_box is not None else []
            writer.add(
                f"synthetic_film_{i:04d}",
                film.pixels,
                pixel_spacing_mm=mm_per_px,
                lesions=boxes,
                role=str(role[i]),
                group=f"synthetic_patient_{i:04d}",
            )
        return writer.close()
