"""Thumbnails on disk in the workspace (``cache/thumbs/``), so a gallery page is a few file
reads once each image has been seen.

A thumbnail is the image as the app shows it (colour kept where real, DICOM windowed),
shrunk so its longest side is ``size`` and centred on a black ``size`` x ``size`` square,
stored as JPEG. Its file name is a hash of the
image's path, size in bytes, modification time and the thumbnail size: an edited image gets
a new thumbnail, and an old one is simply never read again.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from core.progress import ProgressFn, no_progress

DEFAULT_SIZE = 192
QUALITY = 85
VERSION = 2


@dataclass(frozen=True)
class Thumb:
    path: str
    data: bytes | None  # JPEG bytes, None when the image cannot be read
    error: str = ""


def thumb_path(path: str, size: int, workspace: str | os.PathLike[str] | None = None) -> Path | None:
    """Where the thumbnail of ``path`` at ``size`` lives; None when the image is gone."""
    from core.workspace import cache_dir

    try:
        st = os.stat(path)
    except OSError:
        return None
    key = hashlib.sha1(f"v{VERSION}\0{path}\0{st.st_size}\0{st.st_mtime_ns}\0{size}".encode()).hexdigest()
    return cache_dir("thumbs", workspace) / key[:2] / f"{key}.jpg"


def thumbnail(path: str, size: int = DEFAULT_SIZE, workspace: str | os.PathLike[str] | None = None) -> Thumb:
    """The thumbnail of one image, from the cache or made (and cached) now."""
    from core.data.images import ImageError

    where = thumb_path(path, size, workspace)
    if where is None:
        return Thumb(path, None, "file not found")
    try:
        return Thumb(path, where.read_bytes())
    except FileNotFoundError:
        pass
    try:
        data = make_thumbnail(path, size)
    except ImageError as exc:
        return Thumb(path, None, exc.reason)
    _store(where, data)
    return Thumb(path, data)


def thumbnails(
    paths: Sequence[str],
    size: int = DEFAULT_SIZE,
    *,
    workspace: str | os.PathLike[str] | None = None,
    progress: ProgressFn = no_progress,
    workers: int | None = None,
) -> list[Thumb]:
    """Thumbnails of ``paths`` in order; missing ones are made in parallel threads (Pillow
    and the DICOM decoders release the GIL while decoding)."""
    out: list[Thumb] = []
    workers = workers or min(4, (os.cpu_count() or 2) * 2)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for i, thumb in enumerate(pool.map(lambda p: thumbnail(p, size, workspace), paths)):
            out.append(thumb)
            progress(i + 1, len(paths), "thumbnails")
    return out


def make_thumbnail(path: str, size: int = DEFAULT_SIZE) -> bytes:
    from PIL import Image

    from core.data.images import preview

    img, _ = preview(path, longest=size)
    # Letterboxed on black (the colour of air on a film) so a gallery grid stays even.
    canvas = Image.new("RGB" if img.ndim == 3 else "L", (size, size))
    canvas.paste(Image.fromarray(img), ((size - img.shape[1]) // 2, (size - img.shape[0]) // 2))
    buf = io.BytesIO()
    canvas.save(buf, format="JPEG", quality=QUALITY)
    return buf.getvalue()


def _store(where: Path, data: bytes) -> None:
    from core.fileio import atomic_write_bytes

    try:
        atomic_write_bytes(where, data)
    except OSError:  # a full or read-only disk makes the gallery slower, not broken
        pass
