"""Image decoding: every container and mode a chest dataset holds, bad files, the preview CLI."""

from __future__ import annotations

import io
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.data import images
from core.data.dicomwrite import write_dicom
from core.data.images import ImageError, inspect_image, read_image

RNG = np.random.default_rng(0)


def gray(h: int = 48, w: int = 64) -> np.ndarray:
    """A gradient with noise: every test image has structure, so a wrong transform shows."""
    y, x = np.mgrid[:h, :w]
    return ((x * 3 + y * 2) % 256 ^ RNG.integers(0, 16, (h, w))).astype(np.uint8)


def colour(h: int = 48, w: int = 64) -> np.ndarray:
    g = gray(h, w)
    return np.stack([g, 255 - g, (g // 2 + 64).astype(np.uint8)], axis=-1)


def save(img: Image.Image, path: Path, fmt: str | None = None, **kw) -> Path:
    img.save(path, format=fmt, **kw)
    return path


# ---------------------------------------------------------------- containers and modes


def test_8bit_png_is_exact(tmp_path):
    a = gray()
    p = save(Image.fromarray(a), tmp_path / "a.png")
    out = read_image(p)
    assert out.dtype == np.uint8 and np.array_equal(out, a)
    assert out.flags.writeable  # torch.from_numpy and in-place augmentation write to it
    info = inspect_image(p)
    assert (info.format, info.mode, info.bit_depth, info.width, info.height) == ("PNG", "L", 8, 64, 48)
    assert info.photometric == "" and info.n_bytes == p.stat().st_size


@pytest.mark.parametrize("top", [4095, 65535, 1000])
def test_16bit_png_is_scaled_by_its_bit_range_not_clipped(tmp_path, top):
    a = np.linspace(0, top, 48 * 64).reshape(48, 64).astype(np.uint16)
    p = save(Image.fromarray(a), tmp_path / "a16.png")
    assert inspect_image(p).bit_depth == 16
    out = read_image(p)
    full = 2 ** int(top).bit_length() - 1  # 12-bit data divides by 4095, 10-bit by 1023
    assert np.abs(out.astype(int) - np.rint(a / full * 255)).max() <= 1
    assert out.max() == round(top / full * 255)


def test_palette_png_gray_and_colour(tmp_path):
    a = gray()
    p = save(Image.fromarray(a).convert("P"), tmp_path / "p.png")
    g = Image.fromarray(a).quantize(256)  # a palette of grays
    gp = save(g, tmp_path / "gp.png")
    assert Image.open(gp).mode == "P"
    expected = np.asarray(g.convert("L"))
    assert np.array_equal(read_image(gp, keep_color=True), expected)  # gray palette: 2-D
    c = Image.fromarray(colour()).quantize(64)
    cp = save(c, tmp_path / "cp.png")
    out = read_image(cp, keep_color=True)
    assert out.shape == (48, 64, 3) and np.array_equal(out, np.asarray(c.convert("RGB")))
    assert read_image(p).shape == (48, 64)


def test_rgba_is_composited_on_black(tmp_path):
    a = gray()
    alpha = np.full_like(a, 255)
    alpha[:, :10] = 0  # transparent padding on the left
    alpha[:, 10:20] = 128
    rgba = np.dstack([a, a, a, alpha])
    p = save(Image.fromarray(rgba, "RGBA"), tmp_path / "a.png")
    out = read_image(p, keep_color=True)
    assert out.shape == (48, 64)  # gray content stays gray
    assert (out[:, :10] == 0).all()
    assert np.abs(out[:, 10:20].astype(int) - a[:, 10:20].astype(int) * 128 / 255).max() <= 1
    assert np.array_equal(out[:, 20:], a[:, 20:])


def test_cmyk_jpeg_comes_back_as_rgb(tmp_path):
    rgb = colour()
    p = save(Image.fromarray(rgb).convert("CMYK"), tmp_path / "c.jpg", quality=95)
    assert Image.open(p).mode == "CMYK"
    out = read_image(p, keep_color=True)
    assert out.shape == (48, 64, 3)
    assert np.abs(out.astype(int) - rgb).mean() < 6


def test_rgb_of_gray_content_is_gray_even_with_keep_color(tmp_path):
    a = gray()
    png = save(Image.fromarray(np.dstack([a, a, a])), tmp_path / "g.png")
    jpg = save(Image.fromarray(np.dstack([a, a, a])), tmp_path / "g.jpg", quality=90)
    assert np.array_equal(read_image(png, keep_color=True), a)
    assert read_image(jpg, keep_color=True).shape == (48, 64)  # chroma noise is not colour


def test_colour_is_kept_only_when_asked(tmp_path):
    rgb = colour()
    p = save(Image.fromarray(rgb), tmp_path / "c.png")
    assert np.array_equal(read_image(p, keep_color=True), rgb)
    g = read_image(p)
    assert g.shape == (48, 64) and np.array_equal(g, np.asarray(Image.fromarray(rgb).convert("L")))
    assert np.array_equal(images.read_gray(p), g)


def test_a_small_coloured_arrow_on_a_radiograph_counts_as_colour(tmp_path):
    a = np.dstack([gray(100, 100)] * 3)
    a[40:44, 30:60] = (255, 0, 0)  # 1.2% of the pixels
    p = save(Image.fromarray(a), tmp_path / "arrow.png")
    assert read_image(p, keep_color=True).ndim == 3


@pytest.mark.parametrize("ext,fmt", [("bmp", "BMP"), ("tif", "TIFF"), ("gif", "GIF")])
def test_bmp_tiff_gif(tmp_path, ext, fmt):
    a = gray()
    p = save(Image.fromarray(a), tmp_path / f"a.{ext}")
    assert inspect_image(p).format == fmt
    assert np.array_equal(read_image(p), a)


def test_extension_lies_content_decides(tmp_path):
    a = gray()
    png_as_jpg = save(Image.fromarray(a), tmp_path / "really_png.jpg", fmt="PNG")
    jpg_as_png = save(Image.fromarray(a), tmp_path / "really_jpeg.png", fmt="JPEG", quality=95)
    dcm_as_png = tmp_path / "really_dicom.png"
    write_dicom(dcm_as_png, a)
    assert inspect_image(png_as_jpg).format == "PNG"
    assert inspect_image(jpg_as_png).format == "JPEG"
    assert inspect_image(dcm_as_png).format == "DICOM"
    assert np.array_equal(read_image(png_as_jpg), a)
    assert np.abs(read_image(jpg_as_png).astype(int) - a).mean() < 3
    assert np.array_equal(read_image(dcm_as_png), a)


def test_exif_orientation_is_applied(tmp_path):
    a = np.zeros((20, 40), np.uint8)
    a[:5, :5] = 255  # a bright corner: top-left as stored
    img = Image.fromarray(a)
    exif = img.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    p = save(img, tmp_path / "rot.jpg", exif=exif.tobytes(), quality=95)
    out = read_image(p)
    assert out.shape == (40, 20)
    assert out[:5, -5:].mean() > 200 and out[:5, :5].mean() < 50  # the corner moved top-right
    info = inspect_image(p)
    assert (info.width, info.height) == (20, 40)


# ---------------------------------------------------------------- bad files


def jpeg_bytes(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def test_truncated_jpeg(tmp_path):
    data = jpeg_bytes(gray(256, 256))
    p = tmp_path / "cut.jpg"
    p.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(ImageError, match="truncated JPEG"):
        inspect_image(p)
    with pytest.raises(ImageError, match="truncated JPEG"):
        read_image(p)


def test_truncated_png(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(gray(256, 256)).save(buf, format="PNG")
    p = tmp_path / "cut.png"
    p.write_bytes(buf.getvalue()[:-200])
    with pytest.raises(ImageError, match="PNG"):
        inspect_image(p)
    with pytest.raises(ImageError, match="PNG"):
        read_image(p)


def test_text_named_png_empty_file_garbage_dcm_missing_file(tmp_path):
    text = tmp_path / "notes.png"
    text.write_text("patient 12, follow-up in two weeks\n" * 20)
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    garbage = tmp_path / "garbage.dcm"
    garbage.write_bytes(np.random.default_rng(1).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    lfs = tmp_path / "lfs.png"
    lfs.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 12345\n")
    cases = [
        (text, "not an image (text file?)"),
        (empty, "empty file"),
        (garbage, "not a readable DICOM file"),
        (lfs, "Git LFS pointer"),
        (tmp_path / "gone.png", "file not found"),
    ]
    for path, reason in cases:
        for fn in (inspect_image, read_image):
            with pytest.raises(ImageError) as exc:
                fn(path)
            assert reason in exc.value.reason and str(exc.value).startswith(str(path))


def test_bomb_guard_refuses_from_the_header(tmp_path, monkeypatch):
    monkeypatch.setattr(images, "MAX_PIXELS", 1000)
    p = save(Image.fromarray(gray(40, 30)), tmp_path / "big.png")
    d = tmp_path / "big.dcm"
    write_dicom(d, gray(40, 30))
    for path in (p, d):
        for fn in (inspect_image, read_image):
            with pytest.raises(ImageError, match=r"image too large \(30 x 40 pixels, limit 1,000 pixels\)"):
                fn(path)


def test_image_error_is_a_data_error_with_path_and_reason():
    from core.errors import DataError

    e = ImageError("x/y.png", "empty file")
    assert isinstance(e, DataError) and str(e) == "x/y.png: empty file"
    assert (e.path, e.reason) == ("x/y.png", "empty file")
    again = pickle.loads(pickle.dumps(e))  # crosses process boundaries in the data loader
    assert str(again) == str(e)


# ---------------------------------------------------------------- helpers


def test_looks_like_image(tmp_path):
    bare = tmp_path / "IM0001"
    write_dicom(bare, gray(), preamble=False)
    meta = tmp_path / "IM0002"
    write_dicom(meta, gray())
    notes = tmp_path / "README"
    notes.write_text("not an image")
    (tmp_path / "x.csv").write_text("a,b\n")
    assert images.looks_like_image(tmp_path / "a.PNG") and images.looks_like_image(tmp_path / "a.dicom")
    assert images.looks_like_image(bare) and images.looks_like_image(meta)
    assert not images.looks_like_image(notes) and not images.looks_like_image(tmp_path / "x.csv")


def test_read_image_bytes_matches_read_image(tmp_path):
    a = gray()
    p = save(Image.fromarray(a), tmp_path / "a.png")
    d = tmp_path / "a.dcm"
    write_dicom(d, a, photometric="MONOCHROME1")
    for path in (p, d):
        assert np.array_equal(images.read_image_bytes(path.read_bytes(), path.name), read_image(path))
    with pytest.raises(ImageError, match="upload.png: not an image"):
        images.read_image_bytes(b"hello there, plain text", "upload.png")
    with pytest.raises(ImageError, match="upload.dcm: truncated DICOM"):
        images.read_image_bytes(d.read_bytes()[:-500], "upload.dcm")


def test_resize_gray_averages_and_encode_png_round_trips():
    checker = (np.indices((256, 256)).sum(axis=0) % 2 * 255).astype(np.uint8)
    small = images.resize_gray(checker, 32)
    assert small.shape == (32, 32) and small.dtype == np.uint8
    assert np.abs(small.astype(int) - 127).max() <= 2  # area averaging, not aliasing to 0/255
    wide = images.resize_gray(gray(48, 64), 100)
    assert wide.shape == (100, 100)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(images.encode_png(small)))), small)


# ---------------------------------------------------------------- preview command


def run_cli(argv, capsys):
    from core.cli import main

    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_preview_cli_writes_png_and_prints_json(tmp_path, capsys):
    src = tmp_path / "scan"  # a DICOM without an extension
    write_dicom(src, gray(48, 64).astype(np.uint16) * 16, bits_stored=12, photometric="MONOCHROME1")
    out = tmp_path / "sub" / "p.png"
    code, stdout, _ = run_cli(["preview", str(src), "--out", str(out), "--size", "32", "--json"], capsys)
    assert code == 0
    assert json.loads(stdout) == {"width": 32, "height": 24, "source_format": "DICOM"}
    written = np.asarray(Image.open(out))
    assert written.shape == (24, 32)
    full = tmp_path / "full.png"
    code, stdout, _ = run_cli(["preview", str(src), "--out", str(full), "--json"], capsys)
    assert json.loads(stdout)["width"] == 64
    assert np.array_equal(np.asarray(Image.open(full)), read_image(src))


def test_preview_cli_bad_input_is_one_line_and_status_2(tmp_path, capsys):
    bad = tmp_path / "garbage.dcm"
    bad.write_bytes(b"\x01\x02\x03" * 400)
    code, stdout, err = run_cli(["preview", str(bad), "--out", str(tmp_path / "o.png")], capsys)
    assert code == 2 and stdout == ""
    assert err.count("\n") == 1 and "garbage.dcm" in err
    assert not (tmp_path / "o.png").exists()


# ---------------------------------------------------------------- real samples


def real_images(root: Path) -> list[Path]:
    skip = {".csv", ".md", ".txt", ".xlsx"}
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() not in skip)


@pytest.mark.shared_data
def test_every_real_cohen_and_covid_ct_image_decodes(shared_data):
    paths = real_images(shared_data / "cohen-covid-cxr" / "images") + real_images(
        shared_data / "covid-ct" / "CT_COVID"
    )
    paths += real_images(shared_data / "covid-ct" / "CT_NonCOVID")
    assert len(paths) > 350
    seen = set()
    for p in paths:
        info = inspect_image(p)
        img = images.read_gray(p)
        assert img.dtype == np.uint8 and img.shape == (info.height, info.width), p
        assert img.std() > 5, p  # an image, not a flat field from a wrong decode
        seen.add((info.format, info.mode, p.suffix.lower()))
    # The quirks the samples are known to hold were all met.
    assert {("PNG", "RGBA", ".jpg"), ("JPEG", "RGB", ".png"), ("PNG", "P", ".png")} <= seen
