"""DICOM reading: headers for the dataset index, a header table for the UI, pixels as shown.

Writing lives in ``core.data.dicomwrite``. Display follows the DICOM grayscale pipeline:
stored values -> modality LUT (LUT sequence or rescale slope/intercept) -> VOI (LUT
sequence, else the first window, else a robust min-max) -> MONOCHROME1 inversion. A
Presentation LUT Shape of INVERSE on a MONOCHROME1 image restates that same inversion, so it
is not applied a second time.

``PatientAge`` becomes years as a float (``"045Y"`` -> 45.0, bare ``"62"`` -> 62.0,
``"006M"`` -> 0.5, ``"010D"`` -> 0.027); empty, unparseable or over 130 years -> None.
"""

from __future__ import annotations

import logging
import os
import re
import struct
from collections.abc import Iterator
from typing import IO, Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from core.data import images
from core.data.images import ImageError, ImageInfo

log = logging.getLogger(__name__)


class _DropPluginTracebacks(logging.Filter):
    """pydicom logs a traceback for every decoding plugin that fails, then raises an error
    that lists them all; that error becomes our one-line ImageError, so the tracebacks would
    only break the one-line contract of the CLI."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno >= logging.ERROR and record.exc_info)


logging.getLogger("pydicom.pixels.decoders.base").addFilter(_DropPluginTracebacks())

PHI_FIELDS: tuple[str, ...] = tuple(
    """PatientName PatientBirthDate PatientBirthTime PatientBirthName PatientMotherBirthName
    OtherPatientIDs OtherPatientIDsSequence OtherPatientNames PatientAddress PatientTelephoneNumbers
    PatientTelecomInformation MedicalRecordLocator MilitaryRank BranchOfService
    PatientInsurancePlanCodeSequence PatientComments IssuerOfPatientID InstitutionName
    InstitutionAddress InstitutionalDepartmentName StationName ReferringPhysicianName
    ReferringPhysicianAddress ReferringPhysicianTelephoneNumbers PerformingPhysicianName
    NameOfPhysiciansReadingStudy PhysiciansOfRecord RequestingPhysician OperatorsName
    ResponsiblePerson AccessionNumber StudyID DeviceSerialNumber RequestAttributesSequence""".split()
)
MASK = "•••"
HEADER_FIELDS: tuple[str, ...] = tuple(
    """PatientID PatientAge PatientSex ViewPosition Modality BodyPartExamined Rows Columns
    PhotometricInterpretation BitsStored BitsAllocated NumberOfFrames PixelSpacing StudyDescription
    SeriesDescription Manufacturer ManufacturerModelName StudyInstanceUID SeriesInstanceUID
    TransferSyntax""".split()
)
_INT_FIELDS = frozenset({"Rows", "Columns", "BitsStored", "BitsAllocated", "NumberOfFrames"})
_PIXEL_TAGS = (0x7FE00010, 0x7FE00008, 0x7FE00009)  # PixelData, Float-, DoubleFloatPixelData
# Tags a real dataset has and a forced parse of random bytes does not.
_IMAGE_TAGS = (0x00080016, 0x00080060, 0x0020000D, 0x00280010, 0x7FE00010)
_PIXEL_TAG_BYTES = (b"\xe0\x7f\x10\x00", b"\x7f\xe0\x00\x10")
_DECODER_HINTS = {
    "JPEG": "pip install pylibjpeg pylibjpeg-libjpeg (or python-gdcm)",
    "JPEG-LS": "pip install pylibjpeg pylibjpeg-libjpeg (or python-gdcm)",
    "JPEG 2000": "pip install pylibjpeg pylibjpeg-openjpeg (or python-gdcm)",
    "RLE": "pip install pylibjpeg pylibjpeg-rle",
}
_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([YMWD]?)\s*$", re.IGNORECASE)
_AGE_UNIT_PER_YEAR = {"Y": 1.0, "M": 12.0, "W": 365.25 / 7, "D": 365.25}
_NAME_PLACEHOLDERS = frozenset({"ANON", "ANONYMOUS", "ANONYMIZED", "UNKNOWN", "NONE", "NA", "N/A", "TEST"})


# ---------------------------------------------------------------- recognising and reading


def has_dicom_magic(head: bytes) -> bool:
    return len(head) >= 132 and head[128:132] == b"DICM"


def bare_dicom_signature(head: bytes) -> bool:
    """A dataset written without preamble and file meta starts with a low group-0000/0002/0008
    element; no image container PIL reads starts like that."""
    if len(head) < 8:
        return False
    for fmt in ("<HH", ">HH"):
        group, element = struct.unpack(fmt, head[:4])
        if group in (0x0000, 0x0002, 0x0008) and element < 0x0100:
            return True
    return False


def is_dicom(path: str | os.PathLike[str]) -> bool:
    try:
        with open(path, "rb") as fp:
            head = fp.read(132)
            if has_dicom_magic(head):
                return True
            if not bare_dicom_signature(head):
                return False
            read_dataset(fp, os.fspath(path), stop_before_pixels=True)
            return True
    except (OSError, ImageError):
        return False


def read_header(path: str | os.PathLike[str]) -> Dataset:
    """The header only (no pixel bytes read); works without preamble or file meta."""
    label = os.fspath(path)
    try:
        with open(label, "rb") as fp:
            return read_dataset(fp, label, stop_before_pixels=True)
    except FileNotFoundError:
        raise ImageError(label, "file not found") from None
    except OSError as exc:
        raise ImageError(label, f"cannot open ({exc.strerror or exc})") from None


def read_dataset(
    fp: IO[bytes], label: str, *, stop_before_pixels: bool = False, defer_size: int | None = None
) -> Dataset:
    """Parse a DICOM from an open binary file with ``force=True``; raises ImageError."""
    fp.seek(0)
    head = fp.read(132)
    fp.seek(0)
    if not head:
        raise ImageError(label, "empty file")
    try:
        ds = pydicom.dcmread(fp, force=True, stop_before_pixels=stop_before_pixels, defer_size=defer_size)
    except Exception as exc:  # noqa: BLE001 - parsing untrusted bytes fails in many ways
        raise ImageError(label, f"unreadable DICOM ({_one_line(exc)})") from None
    if not has_dicom_magic(head) and not any(tag in ds for tag in _IMAGE_TAGS):
        raise ImageError(label, "not a readable DICOM file (no DICM marker and no valid header)")
    _ensure_transfer_syntax(ds)
    _fill_image_defaults(ds)
    return ds


def _ensure_transfer_syntax(ds: Dataset) -> None:
    # Files without file meta carry no transfer syntax; pydicom guessed the encoding while
    # parsing, and its pixel handlers need that guess written down.
    meta = getattr(ds, "file_meta", None)
    if meta is None:
        meta = ds.file_meta = pydicom.dataset.FileMetaDataset()
    if meta.get("TransferSyntaxUID"):
        return
    implicit, little = ds.original_encoding
    if implicit in (True, None):
        meta.TransferSyntaxUID = ImplicitVRLittleEndian
    else:
        meta.TransferSyntaxUID = ExplicitVRLittleEndian if little else ExplicitVRBigEndian


def _fill_image_defaults(ds: Dataset) -> None:
    # Old ACR-NEMA style files omit the elements every modern file has.
    if "Rows" not in ds or "BitsAllocated" not in ds:
        return
    defaults = {"SamplesPerPixel": 1, "PhotometricInterpretation": "MONOCHROME2", "PixelRepresentation": 0}
    for key, value in defaults.items():
        if key not in ds:
            setattr(ds, key, value)
    if "BitsStored" not in ds:
        ds.BitsStored = ds.BitsAllocated


def transfer_syntax(ds: Dataset) -> UID:
    return UID(str(ds.file_meta.get("TransferSyntaxUID", ImplicitVRLittleEndian)))


# ---------------------------------------------------------------- cheap validation


def inspect(fp: IO[bytes], label: str, size: int) -> ImageInfo:
    """Header, pixel-data presence and length, decoder availability; no decoding."""
    # defer_size makes pydicom record where PixelData starts and how long it claims to be
    # without reading it into memory.
    ds = read_dataset(fp, label, defer_size=1024)
    meta_class = str(ds.file_meta.get("MediaStorageSOPClassUID", ""))
    if meta_class == "1.2.840.10008.1.3.10":
        raise ImageError(label, "a DICOMDIR (an index of other files), not an image")
    rows, cols = _int(ds, "Rows"), _int(ds, "Columns")
    pixel = next((ds.get_item(t, keep_deferred=True) for t in _PIXEL_TAGS if t in ds), None)
    if pixel is None:
        raise ImageError(label, _missing_pixels_reason(fp))
    if not rows or not cols:
        raise ImageError(label, "DICOM without Rows/Columns")
    images.check_size(label, cols, rows)
    ts = transfer_syntax(ds)
    if ts.is_encapsulated:
        _check_decoder(ds, label)
    else:
        _check_native_length(ds, pixel, label, size, ts)
    photometric = str(ds.get("PhotometricInterpretation", "")).strip()
    bits = _int(ds, "BitsStored") or _int(ds, "BitsAllocated") or 0
    return ImageInfo("DICOM", photometric, bits, cols, rows, photometric, size)


def _missing_pixels_reason(fp: IO[bytes]) -> str:
    fp.seek(0)
    data = fp.read()
    # pydicom drops an encapsulated PixelData whose closing delimiter is past the end.
    if any(tag in data for tag in _PIXEL_TAG_BYTES):
        return "truncated DICOM (pixel data cut short)"
    return "DICOM without pixel data"


def _check_native_length(ds: Dataset, pixel: Any, label: str, size: int, ts: UID) -> None:
    from pydicom.pixels.utils import get_expected_length

    try:
        expected = get_expected_length(ds, "bytes")
    except Exception as exc:  # noqa: BLE001 - malformed image module
        raise ImageError(label, f"DICOM image header incomplete ({_one_line(exc)})") from None
    stated = getattr(pixel, "length", None)
    if stated is None:  # element already read (small images are not deferred)
        stated = len(pixel.value or b"")
    if stated < expected:
        raise ImageError(label, f"DICOM pixel data too short ({stated} of {expected} bytes)")
    tell = getattr(pixel, "value_tell", None)
    # Deflated datasets are inflated in memory, so file offsets mean nothing there.
    if tell is not None and not ts.is_deflated and tell + expected > size:
        present = max(size - tell, 0)
        raise ImageError(label, f"truncated DICOM (pixel data has {present} of {expected} bytes)")


def _check_decoder(ds: Dataset, label: str) -> None:
    from pydicom.pixels import get_decoder

    ts = transfer_syntax(ds)
    try:
        decoder = get_decoder(ts)
    except NotImplementedError:
        raise ImageError(label, f"unsupported DICOM transfer syntax {ts.name} ({ts})") from None
    if not decoder.is_available:
        missing = "; ".join(decoder.missing_dependencies) or "no plugin"
        raise ImageError(label, f"no decoder installed for {ts.name} ({missing}); {_hint(ts)}")


def _hint(ts: UID) -> str:
    name = ts.name
    for key in ("JPEG 2000", "JPEG-LS", "RLE", "JPEG"):
        if key in name:
            return _DECODER_HINTS[key]
    return "pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg pylibjpeg-rle"


# ---------------------------------------------------------------- header fields


def parse_age(value: object) -> float | None:
    """DICOM Age String (``nnnY/M/W/D``) or a bare number -> years; None when unusable."""
    if value is None:
        return None
    match = _AGE.match(str(value))
    if not match:
        return None
    years = float(match[1]) / _AGE_UNIT_PER_YEAR[(match[2] or "Y").upper()]
    return round(years, 3) if years <= 130 else None


def header_fields(ds: Dataset) -> dict[str, object]:
    """Normalised index columns (``HEADER_FIELDS``); a missing or malformed field is None."""
    out: dict[str, object] = {}
    for key in HEADER_FIELDS:
        try:
            out[key] = _field(ds, key)
        except Exception:  # noqa: BLE001 - one malformed value must not drop the file
            out[key] = None
    return out


def _field(ds: Dataset, key: str) -> object:
    if key == "TransferSyntax":
        meta = getattr(ds, "file_meta", None)
        uid = meta.get("TransferSyntaxUID") if meta is not None else None
        return UID(str(uid)).name if uid else None
    if key == "PatientAge":
        return parse_age(ds.get("PatientAge"))
    if key == "PixelSpacing":
        spacing = ds.get("PixelSpacing") or ds.get("ImagerPixelSpacing")
        return float(spacing[0]) if spacing else None
    if key in _INT_FIELDS:
        return _int(ds, key)
    text = _text(ds.get(key))
    if key == "PatientSex" and text:
        text = text.upper()
    return text


def _int(ds: Dataset, key: str) -> int | None:
    value = ds.get(key)
    if value is None or value == "":
        return None
    return int(value)


def _text(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, (list, tuple, MultiValue)):
        value = "\\".join(str(v) for v in value)
    text = str(value).strip()
    return text or None


# ---------------------------------------------------------------- header table


def looks_like_name(value: object) -> bool:
    """A PatientID that is a person's name rather than a code: a DICOM name separator ``^``,
    or letters (and spaces, commas, hyphens, apostrophes) without a single digit."""
    text = str(value or "").strip()
    if not text:
        return False
    if "^" in text:
        return True
    if any(ch.isdigit() for ch in text) or text.upper() in _NAME_PLACEHOLDERS:
        return False
    letters = sum(ch.isalpha() for ch in text)
    return letters >= 2 and all(ch.isalpha() or ch in " ,.-'" for ch in text)


def header_table(ds: Dataset, mask_phi: bool = True) -> list[tuple[str, str, str]]:
    """``(tag, keyword, value)`` for every element but pixel data, file meta first, nested
    sequence items as ``Parent[i].Child``. With ``mask_phi`` identifying values read ``•••``."""
    rows: list[tuple[str, str, str]] = []
    meta = getattr(ds, "file_meta", None)
    if meta is not None:
        rows.extend(_rows(meta, "", mask_phi, False, 0))
    rows.extend(_rows(ds, "", mask_phi, False, 0))
    return rows


def _rows(
    ds: Dataset, prefix: str, mask_phi: bool, masked: bool, depth: int
) -> Iterator[tuple[str, str, str]]:
    for elem in ds:
        if elem.tag in _PIXEL_TAGS:
            continue
        keyword = elem.keyword or elem.name
        tag = f"({elem.tag.group:04X},{elem.tag.element:04X})"
        hide = mask_phi and (masked or _is_phi(elem))
        if elem.VR == "SQ":
            rows_here = f"{len(elem.value)} item(s)"
            yield tag, prefix + keyword, rows_here
            if depth < 4:
                for i, item in enumerate(elem.value):
                    yield from _rows(item, f"{prefix}{keyword}[{i}].", mask_phi, hide, depth + 1)
            continue
        text = _short_text(elem)
        yield tag, prefix + keyword, (MASK if hide and text else text)


def _is_phi(elem: Any) -> bool:
    if elem.keyword in PHI_FIELDS or elem.VR == "PN":
        return True
    return elem.keyword == "PatientID" and looks_like_name(elem.value)


def _short_text(elem: Any, limit: int = 120) -> str:
    try:
        value = elem.value
    except Exception:  # noqa: BLE001 - an undecodable value is still worth a row
        return "<unreadable>"
    if isinstance(value, (bytes, bytearray)):
        return f"<{len(value)} bytes>"
    text = _text(value) or ""
    if elem.VR == "UI" and value:
        name = UID(str(value)).name
        text = f"{text} ({name})" if name != str(value) else text
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ---------------------------------------------------------------- pixels


def to_uint8(ds: Dataset, *, label: str | None = None) -> np.ndarray:
    """Pixels as a viewer shows them: ``HxW`` uint8, or ``HxWx3`` for colour data.
    ``label`` names the source in errors (default: the dataset's file name)."""
    label = label or str(getattr(ds, "filename", None) or "<DICOM dataset>")
    if not any(t in ds for t in _PIXEL_TAGS):
        raise ImageError(label, "DICOM without pixel data")
    rows, cols = _int(ds, "Rows"), _int(ds, "Columns")
    if not rows or not cols:
        raise ImageError(label, "DICOM without Rows/Columns")
    images.check_size(label, cols, rows)
    arr = _decode_frame(ds, label)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    if photometric == "PALETTE COLOR":
        return _palette_to_rgb(arr, ds, label)
    if arr.ndim == 3:
        return _color_to_uint8(arr, _int(ds, "BitsStored") or 8)
    shown = _display_gray(arr, ds)
    if photometric == "MONOCHROME1":
        shown = 1.0 - shown
    return np.rint(shown * 255.0).astype(np.uint8)


def _decode_frame(ds: Dataset, label: str) -> np.ndarray:
    from pydicom.pixels import pixel_array
    from pydicom.pixels.utils import get_nr_frames

    ts = transfer_syntax(ds)
    _check_decoder(ds, label)
    if not ts.is_encapsulated and "PixelData" in ds:
        from pydicom.pixels.utils import get_expected_length

        expected, have = get_expected_length(ds, "bytes"), len(ds.PixelData)
        if have < expected:
            raise ImageError(label, f"truncated DICOM (pixel data has {have} of {expected} bytes)")
    n_frames = get_nr_frames(ds, warn=False)
    try:
        # Only the middle frame is decoded: it is what a multi-frame file shows.
        return pixel_array(ds, index=n_frames // 2, correct_unused_bits=True)
    except Exception as exc:  # noqa: BLE001 - every plugin failure becomes one clear line
        raise ImageError(label, f"cannot decode {ts.name} pixel data ({_one_line(exc)})") from None


def _display_gray(arr: np.ndarray, ds: Dataset) -> np.ndarray:
    """Modality then VOI transform, as floats in [0, 1] (before MONOCHROME1 inversion)."""
    has_modality = bool(ds.get("ModalityLUTSequence")) or "RescaleSlope" in ds or "RescaleIntercept" in ds
    values = arr
    if has_modality:
        try:
            values = _apply_modality(arr, ds)
        except Exception as exc:  # noqa: BLE001 - a broken LUT should not hide the image
            log.warning("%s: modality LUT ignored (%s)", getattr(ds, "filename", ""), _one_line(exc))
            values = arr
    shown = _apply_voi(values, ds)
    if shown is not None:
        return shown
    bits = _int(ds, "BitsStored") or 8
    if not has_modality and bits <= 8 and not ds.get("PixelRepresentation"):
        return arr.astype(np.float32) / 255.0  # 8-bit data without a window is display-ready
    return _robust_minmax(values)


def _apply_modality(arr: np.ndarray, ds: Dataset) -> np.ndarray:
    from pydicom.pixels import apply_modality_lut

    if ds.get("ModalityLUTSequence"):
        return apply_modality_lut(arr, ds)
    # pydicom rescales only when both values are present; a lone one is common in the wild.
    slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
    intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
    return arr.astype(np.float32) * slope + intercept


def _apply_voi(values: np.ndarray, ds: Dataset) -> np.ndarray | None:
    """VOI LUT sequence, else the first window; None when neither is usable."""
    lut = ds.get("VOILUTSequence")
    if lut and lut[0].get("LUTDescriptor") and lut[0].get("LUTData") is not None:
        try:
            return _apply_voi_lut_sequence(values, ds)
        except Exception as exc:  # noqa: BLE001 - fall back to the window
            log.warning("%s: VOI LUT ignored (%s)", getattr(ds, "filename", ""), _one_line(exc))
    window = _first_window(ds)
    if window is None:
        return None
    shown = _window(values.astype(np.float32), *window, str(ds.get("VOILUTFunction", "LINEAR")).upper())
    # A window written for other units (HU on a file without its rescale) shows one flat
    # grey; the data's own range is more useful than nothing.
    if float(shown.max() - shown.min()) < 1.0 / 255 and float(values.max() - values.min()) > 0:
        return None
    return shown


def _apply_voi_lut_sequence(values: np.ndarray, ds: Dataset) -> np.ndarray:
    from pydicom.pixels import apply_voi

    first_map = int(ds.VOILUTSequence[0].LUTDescriptor[1])
    n_entries = int(ds.VOILUTSequence[0].LUTDescriptor[0]) or 2**16
    # The LUT's own output range, not its nominal bit depth (descriptors often overstate it).
    table = apply_voi(np.arange(first_map, first_map + n_entries, dtype=np.int64), ds, 0)
    lo, hi = float(table.min()), float(table.max())
    out = apply_voi(np.rint(values).astype(np.int64), ds, 0).astype(np.float32)
    return np.zeros_like(out) if hi <= lo else (out - lo) / (hi - lo)


def _first_window(ds: Dataset) -> tuple[float, float] | None:
    try:
        center, width = _first(ds.get("WindowCenter")), _first(ds.get("WindowWidth"))
        if center in (None, "") or width in (None, ""):
            return None
        center, width = float(center), float(width)
    except (TypeError, ValueError, IndexError):
        return None
    return (center, width) if width > 0 else None


def _first(value: Any) -> Any:
    if value is None or isinstance(value, (str, bytes, int, float)):
        return value
    return value[0]  # MultiValue: several windows, the first is the default


def _window(x: np.ndarray, center: float, width: float, function: str) -> np.ndarray:
    """PS3.3 C.11.2.1.2 windowing to [0, 1]; works in place on ``x`` (a float copy)."""
    if function == "SIGMOID":
        return 1.0 / (1.0 + np.exp(-4.0 * (x - center) / width))
    if function == "LINEAR_EXACT":
        c, w = center, width
    else:
        c, w = center - 0.5, width - 1.0
        if w <= 0:
            return (x > c).astype(np.float32)
    x -= c - 0.5 * w
    x *= 1.0 / w
    return np.clip(x, 0.0, 1.0, out=x)


def _robust_minmax(values: np.ndarray) -> np.ndarray:
    """Stretch the 0.5th..99.5th percentile to [0, 1]: burned-in labels at the maximum
    stored value would otherwise squeeze the anatomy into a few grey levels."""
    x = values.astype(np.float32)
    step = max(1, int(np.sqrt(x.size / 250_000)))
    sample = x[::step, ::step]
    lo, hi = np.percentile(sample, [0.5, 99.5])
    if hi <= lo:
        lo, hi = float(x.min()), float(x.max())
    if hi <= lo:
        return np.zeros_like(x)
    return np.clip((x - lo) / (hi - lo), 0.0, 1.0)


def _color_to_uint8(arr: np.ndarray, bits_stored: int) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr
    top = float(2**bits_stored - 1)
    return np.rint(np.clip(arr.astype(np.float64), 0, top) * (255.0 / top)).astype(np.uint8)


def _palette_to_rgb(arr: np.ndarray, ds: Dataset, label: str) -> np.ndarray:
    from pydicom.pixels import apply_color_lut

    try:
        rgb = apply_color_lut(arr, ds)
    except Exception as exc:  # noqa: BLE001 - malformed palette
        raise ImageError(label, f"unusable DICOM palette ({_one_line(exc)})") from None
    rgb = rgb[..., :3]
    return _color_to_uint8(rgb, 16 if rgb.dtype == np.uint16 else 8)


def _one_line(exc: BaseException) -> str:
    text = ""
    for part in (ln.strip() for ln in str(exc).splitlines()):
        if part:
            text += ("" if not text else " " if text.endswith(":") else "; ") + part
    text = text.replace(
        "Unable to decode as exceptions were raised by all available plugins:", "all plugins failed:"
    )
    return text[:400] or type(exc).__name__
