"""Writers of small files in the documented real formats, for tests (no mocks).

- DICOM Part 10 files written by pydicom (native or encapsulated transfer syntaxes),
- PGM images (binary P5 and ASCII P2, 8 or 16 bit, with header comments),
- CBIS-DDSM description CSVs with the published column names (path cells ending in a
  newline, as in the published files) and the official folder layout,
- MIAS ``Info.txt`` files,
- simple mammogram-like pictures: a bright half-ellipse of tissue on a dark background, with
  discs planted at known positions and sizes.

Everything here is SYNTHETIC test data shaped like the real formats.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

MG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.1.2"  # Digital Mammography X-Ray Image (presentation)

#: Identifiers written into test DICOM headers; they must never appear in any output.
SECRET_PATIENT_NAME = "Confidential^Jane^Q"
SECRET_PATIENT_ID = "MRN-SECRET-778899"
SECRET_BIRTH_DATE = "19510203"


def make_dicom(
    pixels: np.ndarray | None,
    *,
    spacing: tuple[float, float] | None = None,
    imager_spacing: tuple[float, float] | None = None,
    photometric: str = "MONOCHROME2",
    bits_stored: int | None = None,
    window: tuple[float, float] | None = None,
    voi_lut: tuple[int, int, Sequence[int]] | None = None,
    rescale: tuple[float, float] | None = None,
    transfer_syntax: str | None = None,
    encapsulated_frames: list[bytes] | None = None,
    series_uid: str | None = None,
    study_uid: str | None = None,
    patient_name: str = SECRET_PATIENT_NAME,
    patient_id: str = SECRET_PATIENT_ID,
):
    """A pydicom Dataset of a mammogram. ``pixels`` None: no Pixel Data element.
    ``voi_lut`` is (first mapped value, bits per entry, LUT data).
    ``encapsulated_frames``: write those bytes as compressed frames under ``transfer_syntax``."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.sequence import Sequence as DicomSequence
    from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MG_SOP_CLASS
    instance = generate_uid()
    meta.MediaStorageSOPInstanceUID = instance
    meta.TransferSyntaxUID = UID(transfer_syntax or ExplicitVRLittleEndian)
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = MG_SOP_CLASS
    ds.SOPInstanceUID = instance
    ds.Modality = "MG"
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.PatientBirthDate = SECRET_BIRTH_DATE
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = series_uid or generate_uid()
    if pixels is not None and encapsulated_frames is None:
        arr = np.asarray(pixels)
        bits = bits_stored or arr.dtype.itemsize * 8
        ds.set_pixel_data(arr, photometric, bits, generate_instance_uid=False)
        if transfer_syntax is not None:
            ds.file_meta.TransferSyntaxUID = UID(transfer_syntax)
    elif encapsulated_frames is not None:
        arr = np.asarray(pixels) if pixels is not None else np.zeros((8, 8), np.uint16)
        ds.Rows, ds.Columns = arr.shape
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = photometric
        ds.BitsAllocated = 16
        ds.BitsStored = bits_stored or 16
        ds.HighBit = ds.BitsStored - 1
        ds.PixelRepresentation = 0
        ds.PixelData = encapsulate(encapsulated_frames)
        ds["PixelData"].VR = "OB"
    else:
        ds.PhotometricInterpretation = photometric
        ds.SamplesPerPixel = 1
    if spacing is not None:
        ds.PixelSpacing = [f"{spacing[0]:g}", f"{spacing[1]:g}"]
    if imager_spacing is not None:
        ds.ImagerPixelSpacing = [f"{imager_spacing[0]:g}", f"{imager_spacing[1]:g}"]
    if window is not None:
        ds.WindowCenter = f"{window[0]:g}"
        ds.WindowWidth = f"{window[1]:g}"
    if voi_lut is not None:
        first, depth, data = voi_lut
        item = Dataset()
        item.LUTDescriptor = [len(data), first, depth]
        item.LUTData = np.asarray(data, dtype="<u2").tobytes()
        item["LUTData"].VR = "OW"
        ds.VOILUTSequence = DicomSequence([item])
    if rescale is not None:
        ds.RescaleSlope = f"{rescale[0]:g}"
        ds.RescaleIntercept = f"{rescale[1]:g}"
    return ds


def _save(ds, target) -> None:
    uid = ds.file_meta.TransferSyntaxUID
    # A private transfer syntax does not say how the data set is encoded: explicit VR LE.
    encoding = {} if uid.is_transfer_syntax else {"implicit_vr": False, "little_endian": True}
    ds.save_as(target, enforce_file_format=True, **encoding)


def write_dicom(path: Path, pixels: np.ndarray | None, **kwargs) -> Path:
    """Write :func:`make_dicom` as a Part 10 file (preamble, DICM, file meta)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    _save(make_dicom(pixels, **kwargs), path)
    return path


def dicom_bytes(pixels: np.ndarray | None, **kwargs) -> bytes:
    import io

    buf = io.BytesIO()
    _save(make_dicom(pixels, **kwargs), buf)
    return buf.getvalue()


def write_pgm(
    path: Path,
    pixels: np.ndarray,
    *,
    maxval: int | None = None,
    binary: bool = True,
    comments: Iterable[str] = ("# SYNTHETIC test film",),
) -> Path:
    """A PGM file: P5 (big-endian 16-bit when maxval > 255) or P2, comments in the header."""
    arr = np.asarray(pixels)
    h, w = arr.shape
    maxval = maxval if maxval is not None else (255 if arr.max(initial=0) <= 255 else 65535)
    lines = ["P5" if binary else "P2", *comments, f"{w} {h}", str(maxval)]
    header = ("\n".join(lines) + "\n").encode()
    if binary:
        dtype = ">u2" if maxval > 255 else "u1"
        body = arr.astype(dtype).tobytes()
    else:
        body = "\n".join(" ".join(str(int(v)) for v in row) for row in arr).encode() + b"\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(header + body)
    return path


# --- pictures ------------------------------------------------------------------------------


def breast_picture(
    shape: tuple[int, int], *, tissue: float, background: float = 0.0, seed: int = 0
) -> np.ndarray:
    """float64 picture: a half-ellipse of textured tissue against the left edge."""
    rng = np.random.default_rng(seed)
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    inside = ((yy - h / 2) / (0.48 * h)) ** 2 + (xx / (0.9 * w)) ** 2 <= 1.0
    img = np.full(shape, background, dtype=np.float64)
    texture = tissue * (1.0 + 0.05 * rng.standard_normal(shape))
    img[inside] = texture[inside]
    return img


def disc_mask(shape: tuple[int, int], center_rc: tuple[float, float], radius: float) -> np.ndarray:
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    return (yy - center_rc[0]) ** 2 + (xx - center_rc[1]) ** 2 <= radius**2


# --- CBIS-DDSM -----------------------------------------------------------------------------

MASS_COLUMNS = [
    "patient_id",
    "breast_density",
    "left or right breast",
    "image view",
    "abnormality id",
    "abnormality type",
    "mass shape",
    "mass margins",
    "assessment",
    "pathology",
    "subtlety",
    "image file path",
    "cropped image file path",
    "ROI mask file path",
]
CALC_COLUMNS = [
    "patient_id",
    "breast density",
    "left or right breast",
    "image view",
    "abnormality id",
    "abnormality type",
    "calc type",
    "calc distribution",
    "assessment",
    "pathology",
    "subtlety",
    "image file path",
    "cropped image file path",
    "ROI mask file path",
]
CSV_NAMES = {
    ("mass", "train"): "mass_case_description_train_set.csv",
    ("mass", "test"): "mass_case_description_test_set.csv",
    ("calc", "train"): "calc_case_description_train_set.csv",
    ("calc", "test"): "calc_case_description_test_set.csv",
}


@dataclass
class CbisLesion:
    center_rc: tuple[float, float]
    radius_px: float
    pathology: str = "MALIGNANT"
    kind: str = "mass"  # "mass" or "calc"


@dataclass
class CbisDataset:
    """Builds a tiny CBIS-DDSM copy: DICOMs in the official folder layout and the CSVs."""

    root: Path
    rows: dict[tuple[str, str], list[dict[str, str]]] = field(default_factory=dict)

    @property
    def dicom_root(self) -> Path:
        return self.root / "dicom"

    @property
    def csv_dir(self) -> Path:
        return self.root / "csv"

    def add_image(
        self,
        *,
        patient: str,
        split: str,
        side: str = "LEFT",
        view: str = "CC",
        shape: tuple[int, int] = (600, 400),
        spacing: tuple[float, float] | None = (0.2, 0.2),
        lesions: Sequence[CbisLesion] = (),
        tissue: float = 1200.0,
        lesion_value: float = 3000.0,
        seed: int = 0,
        swap_mask_and_crop: bool = False,
        skip_mask_file: bool = False,
        bits_stored: int = 12,
    ) -> np.ndarray:
        """Write one full-field image with its lesions' ROI masks and crops; add CSV rows.
        Returns the full-field picture (uint16)."""
        from pydicom.uid import generate_uid

        img = breast_picture(shape, tissue=tissue, seed=seed)
        for lesion in lesions:
            img[disc_mask(shape, lesion.center_rc, lesion.radius_px)] = lesion_value
        img = np.clip(np.rint(img), 0, 2**bits_stored - 1).astype(np.uint16)
        stage = "Training" if split == "train" else "Test"
        kinds = {lesion.kind for lesion in lesions} or {"mass"}
        full_paths = {}
        for kind in kinds:
            prefix = f"{'Mass' if kind == 'mass' else 'Calc'}-{stage}_{patient}_{side}_{view}"
            study, series = generate_uid(), generate_uid()
            rel = f"{prefix}/{study}/{series}/000000.dcm"
            write_dicom(
                self.dicom_root / rel,
                img,
                spacing=spacing,
                bits_stored=bits_stored,
                study_uid=study,
                series_uid=series,
            )
            full_paths[kind] = rel
        counters: dict[str, int] = {}
        for lesion in lesions:
            counters[lesion.kind] = counters.get(lesion.kind, 0) + 1
            abn = counters[lesion.kind]
            prefix = (
                f"{'Mass' if lesion.kind == 'mass' else 'Calc'}-{stage}_{patient}_{side}_{view}"
            )
            study, series = generate_uid(), generate_uid()
            folder = f"{prefix}_{abn}/{study}/{series}"
            mask = disc_mask(shape, lesion.center_rc, lesion.radius_px).astype(np.uint8) * 255
            r, c = (int(v) for v in lesion.center_rc)
            rad = int(lesion.radius_px) + 5
            crop = img[max(r - rad, 0) : r + rad, max(c - rad, 0) : c + rad]
            crop_rel, mask_rel = f"{folder}/000000.dcm", f"{folder}/000001.dcm"
            if not skip_mask_file:
                write_dicom(self.dicom_root / mask_rel, mask, bits_stored=8, series_uid=series)
            write_dicom(
                self.dicom_root / crop_rel, crop, bits_stored=bits_stored, series_uid=series
            )
            if swap_mask_and_crop:
                crop_rel, mask_rel = mask_rel, crop_rel
            self.add_row(
                lesion.kind,
                split,
                {
                    "patient_id": patient,
                    "left or right breast": side,
                    "image view": view,
                    "abnormality id": str(abn),
                    "abnormality type": "mass" if lesion.kind == "mass" else "calcification",
                    "pathology": lesion.pathology,
                    "image file path": full_paths[lesion.kind] + "\n",
                    "cropped image file path": crop_rel + "\n",
                    "ROI mask file path": mask_rel + "\n",
                },
            )
        return img

    def add_row(self, kind: str, split: str, values: dict[str, str]) -> None:
        defaults = {
            "breast_density": "2",
            "breast density": "2",
            "mass shape": "OVAL",
            "mass margins": "CIRCUMSCRIBED",
            "calc type": "PLEOMORPHIC",
            "calc distribution": "CLUSTERED",
            "assessment": "4",
            "subtlety": "3",
        }
        self.rows.setdefault((kind, split), []).append({**defaults, **values})

    def write_csvs(self, *, drop_column: str | None = None, all_four: bool = True) -> Path:
        """Write the description CSVs (all four, empty ones with only a header)."""
        self.csv_dir.mkdir(parents=True, exist_ok=True)
        keys = list(CSV_NAMES) if all_four else list(self.rows)
        for key in keys:
            columns = MASS_COLUMNS if key[0] == "mass" else CALC_COLUMNS
            columns = [c for c in columns if c != drop_column]
            with open(self.csv_dir / CSV_NAMES[key], "w", newline="") as fh:
                writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
                writer.writeheader()
                writer.writerows(self.rows.get(key, []))
        return self.csv_dir


def write_mias_info(path: Path, lines: Iterable[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path
