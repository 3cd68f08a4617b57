"""Image decoding in one place: every pixel the app, the CLI and training see comes from here.

Files are recognised by their content, never by their extension alone (datasets hold PNGs
named ``.jpg``, JPEGs named ``.png`` and DICOMs without any extension). Everything decodes
to ``uint8``: ``HxW`` grayscale, or ``HxWx3`` RGB when asked and the source is truly colour.

Choices worth knowing:
- EXIF orientation is applied, so arrays are upright as a viewer shows them.
- 16-bit (and 32-bit integer) images are scaled by their actual bit range, the smallest
  ``2**b - 1`` that holds the maximum (12-bit data in a 16-bit PNG divides by 4095), never
  clipped and never divided by the dtype maximum.
- Transparent pixels (RGBA, LA, palette with transparency) are composited on black, the
  colour of air on a radiograph, so padding does not turn into white borders.
- An RGB image whose channels are equal up to JPEG chroma noise is grayscale: colour needs
  at least 0.1% of pixels whose channels differ by more than 16 levels (arrows, labels).
- Float images (TIFF mode F) are stretched from their minimum to their maximum.
- Images above ``MAX_PIXELS`` are refused from their header, before any decoding.
- Returned arrays are writeable and own their memory.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from core.errors import DataError

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp", ".dcm", ".dicom"}
)
# Files next to images that are certainly not images: never worth a DICOM header parse.
NON_IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    ".csv .tsv .txt .md .json .xlsx .xls .xml .html .htm .pdf .py .ipynb .yaml .yml .zip .gz .tar"
    " .nii .npy .npz .pt .pth".split()
)
MAX_PIXELS = 16384 * 16384

# Formats PIL may claim a file as (JPEG also yields MPO, phone JPEGs). Restricting the list
# keeps lenient plugins (TGA, SPIDER, ...) from "recognising" a text file or a bare DICOM.
_PIL_FORMATS = ("PNG", "JPEG", "BMP", "TIFF", "GIF", "WEBP", "JPEG2000", "PPM")
_COLOR_SPREAD = 16
_COLOR_SHARE = 0.001
_PNG_LIKE = ("PNG",)
_JPEG_LIKE = ("JPEG", "MPO")


class ImageError(DataError):
    """A file that cannot be read as an image; the message names the file and the reason."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = os.fspath(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self):  # picklable across worker processes despite the two-argument init
        return (type(self), (self.path, self.reason))


@dataclass(frozen=True)
class ImageInfo:
    format: str
    mode: str
    bit_depth: int
    width: int
    height: int
    photometric: str
    n_bytes: int


# ---------------------------------------------------------------- public API


def looks_like_image(path: str | os.PathLike[str]) -> bool:
    """True for an image extension, or an extension-less/unknown file that is a DICOM."""
    ext = os.path.splitext(os.fspath(path))[1].lower()
    if ext in IMAGE_EXTENSIONS:
        return True
    if ext in NON_IMAGE_EXTENSIONS:
        return False
    from core.data import dicom

    return dicom.is_dicom(path)


def inspect_image(path: str | os.PathLike[str]) -> ImageInfo:
    """Cheap validation from the header plus completeness checks; no full pixel decoding of
    PNG, JPEG or DICOM. Raises ``ImageError`` with the reason a scan reports."""
    label = os.fspath(path)
    with _open(label) as fp:
        size = _size(fp)
        kind, img = _identify(fp, label, size)
        if kind == "DICOM":
            from core.data import dicom

            return dicom.inspect(fp, label, size)
        assert img is not None
        with img:
            return _inspect_pil(img, fp, label, size)


def read_image(path: str | os.PathLike[str], *, keep_color: bool = False) -> np.ndarray:
    """Decode any supported image to uint8 (see the module docstring for the rules)."""
    label = os.fspath(path)
    with _open(label) as fp:
        return decode(fp, label, keep_color=keep_color)[0]


def read_gray(path: str | os.PathLike[str]) -> np.ndarray:
    """``HxW`` uint8: the one call the training cache uses."""
    return read_image(path)


def read_image_bytes(data: bytes, name: str, *, keep_color: bool = False) -> np.ndarray:
    """The same decoding for uploaded bytes; ``name`` is only used in error messages."""
    return decode(io.BytesIO(data), name, keep_color=keep_color)[0]


def resize_gray(img: np.ndarray, size: int) -> np.ndarray:
    """Square ``size x size`` uint8 (aspect not kept), antialiased when shrinking."""
    if size <= 0:
        raise ValueError(f"size must be positive, got {size}")
    return resize(img, size, size)


def resize(img: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize a uint8 gray or RGB array; Pillow's bilinear filter widens its support when
    shrinking, so downscaling averages (no aliasing of ribs and noise)."""
    if img.shape[1] == width and img.shape[0] == height:
        return img
    out = Image.fromarray(np.ascontiguousarray(img)).resize((width, height), Image.Resampling.BILINEAR)
    return _writeable(np.asarray(out))


def preview(path: str | os.PathLike[str], longest: int | None = None) -> tuple[np.ndarray, str]:
    """The image as the app shows it (colour kept where it is real), optionally resized so
    its longest side is ``longest``; returns the array and the source format."""
    label = os.fspath(path)
    with _open(label) as fp:
        img, fmt = decode(fp, label, keep_color=True)
    if longest:
        height, width = img.shape[:2]
        scale = longest / max(height, width)
        img = resize(img, max(1, round(width * scale)), max(1, round(height * scale)))
    return img, fmt


def encode_png(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    # Level 3 is ~3x faster than the default 6 for a few percent more bytes.
    Image.fromarray(np.ascontiguousarray(img)).save(buf, format="PNG", compress_level=3)
    return buf.getvalue()


def decode(fp: IO[bytes], label: str, *, keep_color: bool = False) -> tuple[np.ndarray, str]:
    """Decode an open binary file; returns the uint8 array and the source container format."""
    size = _size(fp)
    kind, img = _identify(fp, label, size)
    if kind == "DICOM":
        from core.data import dicom

        arr = dicom.to_uint8(dicom.read_dataset(fp, label), label=label)
        fmt = "DICOM"
    else:
        assert img is not None
        with img:
            fmt = _format_name(img)
            arr = _decode_pil(img, label, fmt)
    return _writeable(_color_policy(arr, keep_color)), fmt


def _writeable(arr: np.ndarray) -> np.ndarray:
    # Arrays over Pillow's bytes are read-only; torch.from_numpy and in-place augmentation
    # need to own their memory.
    return arr if arr.flags.writeable else arr.copy()


def check_size(label: str, width: int, height: int) -> None:
    """The decompression-bomb guard, shared by PIL images and DICOM."""
    if width * height > MAX_PIXELS:
        raise ImageError(label, f"image too large ({width} x {height} pixels, limit {MAX_PIXELS:,} pixels)")


# ---------------------------------------------------------------- identification


@contextmanager
def _open(path: str) -> Iterator[IO[bytes]]:
    try:
        fp = open(path, "rb")  # noqa: SIM115 - closed by the context manager
    except FileNotFoundError:
        raise ImageError(path, "file not found") from None
    except IsADirectoryError:
        raise ImageError(path, "is a folder, not an image") from None
    except OSError as exc:
        raise ImageError(path, f"cannot open ({exc.strerror or exc})") from None
    with fp:
        yield fp


def _size(fp: IO[bytes]) -> int:
    size = fp.seek(0, io.SEEK_END)
    fp.seek(0)
    return size


def _identify(fp: IO[bytes], label: str, size: int) -> tuple[str, Image.Image | None]:
    """("DICOM", None) or ("PIL", opened image); raises ImageError for anything else."""
    from core.data import dicom

    if size == 0:
        raise ImageError(label, "empty file")
    head = fp.read(512)
    fp.seek(0)
    if dicom.has_dicom_magic(head) or dicom.bare_dicom_signature(head):
        return "DICOM", None
    try:
        img = Image.open(fp, formats=_PIL_FORMATS)
    except Image.DecompressionBombError as exc:
        raise ImageError(label, f"image too large ({exc})") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise ImageError(label, _not_image_reason(head, label)) from None
    check_size(label, *img.size)
    return "PIL", img


def _not_image_reason(head: bytes, label: str) -> str:
    if head.startswith(b"version https://git-lfs"):
        return "not an image (a Git LFS pointer; run `git lfs pull`)"
    low = head.lstrip().lower()
    if low.startswith((b"<!doctype html", b"<html")):
        return "not an image (an HTML page, a failed download?)"
    if head.startswith(b"\x1f\x8b"):
        return "not an image (gzip data, e.g. a .nii.gz volume)"
    if head.startswith(b"PK\x03\x04"):
        return "not an image (a zip archive)"
    if _is_text(head):
        return "not an image (text file?)"
    if os.path.splitext(label)[1].lower() in (".dcm", ".dicom"):
        return "not a readable DICOM file (no DICM marker and no valid header)"
    return "not an image (unknown format)"


def _is_text(head: bytes) -> bool:
    if b"\x00" in head:
        return False
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        # A multi-byte character cut at the end of the sample is still text.
        text = head[:-4].decode("utf-8", errors="replace")
        if "\ufffd" in text:
            return False
    printable = sum(ch.isprintable() or ch in "\r\n\t" for ch in text)
    return printable >= 0.95 * max(len(text), 1)


def _format_name(img: Image.Image) -> str:
    # MPO is a JPEG with extra frames (phone cameras); users know it as JPEG.
    return "JPEG" if img.format == "MPO" else str(img.format)


# ---------------------------------------------------------------- PIL images


def _inspect_pil(img: Image.Image, fp: IO[bytes], label: str, size: int) -> ImageInfo:
    fmt = _format_name(img)
    width, height = img.size
    if _exif_orientation(img) in (5, 6, 7, 8):
        width, height = height, width
    info = ImageInfo(fmt, img.mode, _bit_depth(img), width, height, "", size)
    try:
        if fmt in _PNG_LIKE:
            # Walks every chunk and its CRC up to IEND without inflating IDAT; it must start
            # on a freshly opened image.
            fp.seek(0)
            with Image.open(fp, formats=_PNG_LIKE) as fresh:
                fresh.verify()
        elif fmt in _JPEG_LIKE:
            _check_jpeg_complete(fp, label)
        else:
            # BMP, TIFF, GIF, WEBP are rare in chest datasets: a full decode is affordable.
            img.load()
    except ImageError:
        raise
    except Exception as exc:  # noqa: BLE001 - any decoder failure means the file is damaged
        raise ImageError(label, _damage_reason(fmt, exc)) from None
    return info


def _check_jpeg_complete(fp: IO[bytes], label: str) -> None:
    fp.seek(0)
    data = fp.read()
    # The last scan (SOS, FFDA) must be followed by an EOI (FFD9). Entropy-coded data never
    # holds FFD9, and an EXIF thumbnail's EOI comes before the main image's scans.
    if data.rfind(b"\xff\xd9") < data.rfind(b"\xff\xda"):
        raise ImageError(label, "truncated JPEG (no end-of-image marker after the last scan)")


def _damage_reason(fmt: str, exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if "truncated" in text.lower() or isinstance(exc, EOFError):
        return f"truncated {fmt} ({text})"
    return f"corrupt {fmt} ({text})"


def _exif_orientation(img: Image.Image) -> int:
    if img.format == "PNG" and "exif" not in img.info:
        # Pillow would decode the whole PNG to look for an eXIf chunk after the pixels;
        # orientation there is rare enough for a cheap scan to skip.
        return 1
    try:
        return int(img.getexif().get(0x0112, 1))
    except Exception:  # noqa: BLE001 - a broken EXIF block must not reject a good image
        return 1


def _bit_depth(img: Image.Image) -> int:
    mode = img.mode
    if mode == "1":
        return 1
    if mode.startswith("I;16") or (mode == "I" and img.format == "PNG"):
        return 16
    if mode in ("I", "F"):
        return 32
    return 8


def _decode_pil(img: Image.Image, label: str, fmt: str) -> np.ndarray:
    try:
        return _pil_to_uint8(ImageOps.exif_transpose(img))
    except Image.DecompressionBombError as exc:
        raise ImageError(label, f"image too large ({exc})") from None
    except Exception as exc:  # noqa: BLE001 - any decoder failure means the file is damaged
        raise ImageError(label, _damage_reason(fmt, exc)) from None


def _pil_to_uint8(img: Image.Image) -> np.ndarray:
    mode = img.mode
    if mode == "L":
        return np.asarray(img)
    if mode.startswith("I") or mode == "F":
        return _scale_high_depth(np.asarray(img), is_float=mode == "F")
    if mode in ("P", "PA"):
        has_alpha = mode == "PA" or "transparency" in img.info
        img = img.convert("RGBA" if has_alpha else "RGB")
        mode = img.mode
    if mode in ("LA", "La", "RGBA", "RGBa"):
        return _on_black(np.asarray(img.convert("LA" if mode.startswith("L") else "RGBA")))
    if mode == "1":
        return np.asarray(img.convert("L"))
    return np.asarray(img.convert("RGB"))  # RGB, CMYK, YCbCr, LAB, HSV, RGBX


def _scale_high_depth(arr: np.ndarray, is_float: bool) -> np.ndarray:
    values = arr.astype(np.float64)
    lo, hi = float(values.min()), float(values.max())
    if is_float:
        scale_lo, scale_hi = lo, hi
    else:
        scale_lo = min(lo, 0.0)
        bits = max(8, int(hi - scale_lo).bit_length())
        scale_hi = scale_lo + (2**bits - 1)
    if scale_hi <= scale_lo:
        return np.zeros(arr.shape, np.uint8)
    return np.rint((values - scale_lo) * (255.0 / (scale_hi - scale_lo))).astype(np.uint8)


def _on_black(arr: np.ndarray) -> np.ndarray:
    alpha = arr[..., -1:].astype(np.uint16)
    out = (arr[..., :-1].astype(np.uint16) * alpha + 127) // 255
    out = out.astype(np.uint8)
    return out[..., 0] if out.shape[-1] == 1 else out


def _color_policy(arr: np.ndarray, keep_color: bool) -> np.ndarray:
    if arr.ndim == 2:
        return arr
    if keep_color and is_truly_color(arr):
        return np.ascontiguousarray(arr)
    return np.asarray(Image.fromarray(np.ascontiguousarray(arr)).convert("L"))


def is_truly_color(rgb: np.ndarray) -> bool:
    """True when enough pixels carry colour to matter (see the module docstring)."""
    spread = rgb.max(axis=2) - rgb.min(axis=2)
    return bool(np.count_nonzero(spread > _COLOR_SPREAD) >= _COLOR_SHARE * spread.size)
