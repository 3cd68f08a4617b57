"""DICOM: the display pipeline, encodings, headers for the index, PHI masking, real samples."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, RLELossless, generate_uid

from core.data import dicom, images
from core.data.dicomwrite import write_dicom
from core.data.images import ImageError, inspect_image, read_image


def chest(h: int = 64, w: int = 80, top: int = 4095, seed: int = 0) -> np.ndarray:
    """A 12-bit frontal-radiograph-like pattern (dark lungs, bright mediastinum) with noise."""
    y, x = np.mgrid[:h, :w] / np.array([h, w])[:, None, None]
    body = 0.25 + 0.6 * np.exp(-(((x - 0.5) / 0.08) ** 2)) + 0.3 * (np.abs(x - 0.5) > 0.4)
    noise = np.random.default_rng(seed).normal(0, 0.03, (h, w))
    return np.clip((body + 0.1 * y + noise) * top / 1.3, 0, top).astype(np.uint16)


def read_ds(path) -> Dataset:
    return pydicom.dcmread(path, force=True)


# ---------------------------------------------------------------- display pipeline


def test_monochrome1_is_the_inverse_of_its_monochrome2_twin(tmp_path):
    v = chest()
    m2, m1 = tmp_path / "m2.dcm", tmp_path / "m1.dcm"
    for window in ((2000, 3000), None):  # the file's window, then the robust min-max
        write_dicom(m2, v, bits_stored=12, window=window)
        write_dicom(m1, v, bits_stored=12, window=window, photometric="MONOCHROME1")
        a, b = read_image(m2).astype(int), read_image(m1).astype(int)
        assert np.abs(a + b - 255).max() <= 1, window
        assert a.std() > 30


def test_a_monochrome1_radiograph_shows_like_its_monochrome2_original(tmp_path):
    v = chest()
    m2, m1 = tmp_path / "m2.dcm", tmp_path / "m1.dcm"
    write_dicom(m2, v, bits_stored=12, window=(2000, 3000))
    # Detectors that store MONOCHROME1 write bone as low values; the window mirrors too.
    write_dicom(
        m1, (4095 - v).astype(np.uint16), bits_stored=12, photometric="MONOCHROME1", window=(2095, 3000)
    )
    shown = read_image(m1)
    assert np.abs(shown.astype(int) - read_image(m2)).max() <= 1
    assert shown[:, 37:43].mean() > shown[:, 15:25].mean() + 40  # bright mediastinum, dark lungs


def test_rescale_then_window_follow_the_standard(tmp_path):
    v = chest()
    p = tmp_path / "r.dcm"
    # Stored values v map to 2v - 1000; the window is written in those output units.
    write_dicom(p, v, bits_stored=12, rescale_slope=2, rescale_intercept=-1000, window=(3000, 4000))
    out = read_image(p).astype(float)
    hu = 2.0 * v - 1000
    c, w = 3000 - 0.5, 4000 - 1.0
    expected = np.clip((hu - c) / w + 0.5, 0, 1) * 255
    assert np.abs(out - expected).max() <= 1
    assert out.min() == 0 and out.max() > 200  # the window clips, so it was really applied


def test_a_window_in_other_units_falls_back_to_the_data_range(tmp_path):
    p = tmp_path / "w.dcm"
    write_dicom(p, chest(), bits_stored=12, window=(-600, 1500))  # a lung window without rescale
    out = read_image(p)
    assert out.std() > 30  # not one flat grey


def test_12_bit_data_in_16_bit_words_uses_bits_stored(tmp_path):
    v = chest()
    clean, dirty = tmp_path / "clean.dcm", tmp_path / "dirty.dcm"
    write_dicom(clean, v, bits_stored=12)
    # Unused high bits set in a patch (an old overlay plane): they must not change the image.
    marked = v.copy()
    marked[10:20, 10:30] |= 0x8000
    write_dicom(dirty, marked, bits_stored=12)
    a = read_image(clean)
    assert a.max() >= 250 and a.min() <= 5  # full contrast, not v / 65535
    assert np.array_equal(a, read_image(dirty))
    assert inspect_image(clean).bit_depth == 12


def test_rle_compressed_decodes_equal_to_uncompressed(tmp_path):
    v = chest()
    raw, rle = tmp_path / "raw.dcm", tmp_path / "rle.dcm"
    write_dicom(raw, v, bits_stored=12, window=(2000, 3000))
    write_dicom(rle, v, bits_stored=12, window=(2000, 3000), compress="rle")
    assert read_ds(rle).file_meta.TransferSyntaxUID == RLELossless
    assert np.array_equal(read_image(raw), read_image(rle))
    assert inspect_image(rle).format == "DICOM"


def test_no_preamble_no_meta_file_reads(tmp_path):
    v = chest()
    full, bare = tmp_path / "full.dcm", tmp_path / "bare"
    write_dicom(full, v, bits_stored=12, photometric="MONOCHROME1", header={"PatientAge": "045Y"})
    write_dicom(
        bare, v, bits_stored=12, photometric="MONOCHROME1", header={"PatientAge": "045Y"}, preamble=False
    )
    assert bare.read_bytes()[128:132] != b"DICM"
    assert dicom.is_dicom(bare) and dicom.is_dicom(full)
    header = dicom.read_header(bare)
    assert "PixelData" not in header
    assert dicom.header_fields(header)["PatientAge"] == 45
    assert np.array_equal(read_image(bare), read_image(full))
    info = inspect_image(bare)
    assert (info.format, info.photometric, info.width, info.height) == ("DICOM", "MONOCHROME1", 80, 64)


def dataset(pixels: np.ndarray, transfer_syntax=ExplicitVRLittleEndian, **extra) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = transfer_syntax
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "OT"
    ds.Rows, ds.Columns = pixels.shape[-2:]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    for key, value in extra.items():
        setattr(ds, key, value)
    return ds


def test_multi_frame_shows_the_middle_frame(tmp_path):
    frames = np.stack([np.full((16, 20), v, np.uint16) for v in (100, 2000, 4000)])
    frames[:, :, :10] = 0  # a dark half, so the min-max stretch has a range
    ds = dataset(frames, NumberOfFrames=3, BitsStored=12, HighBit=11)
    ds.PixelData = frames.tobytes()
    p = tmp_path / "mf.dcm"
    ds.save_as(p, enforce_file_format=True)
    out = read_image(p)
    assert out.shape == (16, 20)
    with_window = tmp_path / "mfw.dcm"
    ds.WindowCenter, ds.WindowWidth = 2048, 4096
    ds.save_as(with_window, enforce_file_format=True)
    assert abs(int(read_image(with_window)[0, 15]) - round(2000 / 4095 * 255)) <= 1


def test_big_endian_matches_little_endian(tmp_path):
    v = chest()
    le = tmp_path / "le.dcm"
    write_dicom(le, v, bits_stored=12, window=(2000, 3000))
    ds = dataset(v, ExplicitVRBigEndian, BitsStored=12, HighBit=11, WindowCenter=2000, WindowWidth=3000)
    ds.PixelData = v.astype(">u2").tobytes()
    be = tmp_path / "be.dcm"
    ds.save_as(be, enforce_file_format=True, little_endian=False, implicit_vr=False)
    assert read_ds(be).file_meta.TransferSyntaxUID == ExplicitVRBigEndian
    assert np.array_equal(read_image(be), read_image(le))


def test_voi_lut_sequence_is_applied(tmp_path):
    v = chest()
    ds = dataset(v, BitsStored=12, HighBit=11)
    item = Dataset()
    item.LUTDescriptor = [4096, 0, 12]
    item.add_new(0x00283006, "US", [4095 - i for i in range(4096)])  # LUTData: an inverting LUT
    ds.VOILUTSequence = [item]
    ds.PixelData = v.tobytes()
    p = tmp_path / "voi.dcm"
    ds.save_as(p, enforce_file_format=True)
    expected = np.rint((4095 - v) / 4095 * 255)
    assert np.abs(read_image(p).astype(int) - expected).max() <= 1


def test_rgb_dicom_stays_colour(tmp_path):
    rgb = np.zeros((8, 10, 3), np.uint8)
    rgb[..., 0] = 200
    ds = dataset(rgb[..., 0], SamplesPerPixel=3, PhotometricInterpretation="RGB", PlanarConfiguration=0)
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelData = rgb.tobytes()
    p = tmp_path / "rgb.dcm"
    ds.save_as(p, enforce_file_format=True)
    assert np.array_equal(read_image(p, keep_color=True), rgb)
    assert read_image(p).shape == (8, 10)


# ---------------------------------------------------------------- bad DICOMs


def test_missing_decoder_names_the_syntax_and_the_package(tmp_path, monkeypatch):
    from pydicom.pixels import get_decoder

    p = tmp_path / "rle.dcm"
    write_dicom(p, chest(), compress="rle")
    decoder = get_decoder(RLELossless)
    monkeypatch.setattr(decoder, "_available", {})
    monkeypatch.setattr(decoder, "_unavailable", {"pylibjpeg": ("pylibjpeg>=2.0", "pylibjpeg-rle>=2.0")})
    for fn in (inspect_image, read_image):
        with pytest.raises(ImageError, match=r"no decoder installed for RLE Lossless .*pylibjpeg-rle"):
            fn(p)


@pytest.mark.filterwarnings("ignore:End of file reached before delimiter")
def test_truncated_and_pixel_less_dicoms_are_reported(tmp_path):
    p = tmp_path / "ok.dcm"
    write_dicom(p, chest())
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(p.read_bytes()[:-3000])
    for fn in (inspect_image, read_image):
        with pytest.raises(ImageError, match="truncated DICOM"):
            fn(cut)
    rle = tmp_path / "rle.dcm"
    write_dicom(rle, chest(), compress="rle")
    cut_rle = tmp_path / "cut_rle.dcm"
    cut_rle.write_bytes(rle.read_bytes()[:-500])
    with pytest.raises(ImageError, match="truncated DICOM"):
        inspect_image(cut_rle)
    ds = read_ds(p)
    del ds.PixelData
    none = tmp_path / "none.dcm"
    ds.save_as(none)
    for fn in (inspect_image, read_image):
        with pytest.raises(ImageError, match="DICOM without pixel data"):
            fn(none)


def test_read_header_rejects_non_dicom(tmp_path):
    p = tmp_path / "x.dcm"
    p.write_bytes(b"\x00" * 10 + b"garbage" * 100)
    with pytest.raises(ImageError, match="x.dcm"):
        dicom.read_header(p)
    assert not dicom.is_dicom(p)


# ---------------------------------------------------------------- headers


@pytest.mark.parametrize(
    "raw,years",
    [
        ("045Y", 45),
        ("62", 62),
        ("006M", 0.5),
        ("002W", 0.038),
        ("010D", 0.027),
        (" 70Y ", 70),
        ("", None),
        (None, None),
        ("abc", None),
        ("999Y", None),
    ],
)
def test_patient_age(raw, years):
    assert dicom.parse_age(raw) == years


@pytest.mark.filterwarnings("ignore:Invalid value for VR AS")  # bare "062" as RSNA writes it
def test_header_fields_normalise_and_never_raise(tmp_path):
    p = tmp_path / "h.dcm"
    header = {"PatientID": "P001", "PatientAge": "062", "PatientSex": "F ", "ViewPosition": "PA"}
    write_dicom(p, chest(), bits_stored=12, header=header)
    f = dicom.header_fields(dicom.read_header(p))
    assert f["PatientID"] == "P001" and f["PatientAge"] == 62 and f["PatientSex"] == "F"
    assert f["ViewPosition"] == "PA" and f["Modality"] == "DX" and f["BodyPartExamined"] == "CHEST"
    assert (f["Rows"], f["Columns"], f["BitsStored"]) == (64, 80, 12)
    assert f["PhotometricInterpretation"] == "MONOCHROME2"
    assert f["TransferSyntax"] == "Explicit VR Little Endian"
    assert set(f) == set(dicom.HEADER_FIELDS)
    empty = dicom.header_fields(Dataset())
    assert set(empty) == set(dicom.HEADER_FIELDS) and all(v is None for v in empty.values())
    blank_sex = Dataset()
    blank_sex.PatientSex = ""
    assert dicom.header_fields(blank_sex)["PatientSex"] is None


def test_header_table_masks_phi(tmp_path):
    p = tmp_path / "phi.dcm"
    header = {
        "PatientName": "DOE^JANE",
        "PatientID": "SMITH^JOHN",
        "InstitutionName": "General Hospital",
        "PatientBirthDate": "19500101",
        "AccessionNumber": "A123",
        "StudyDescription": "CHEST PA",
    }
    write_dicom(p, chest(), header=header)
    ds = read_ds(p)
    rows = {kw: (tag, value) for tag, kw, value in dicom.header_table(ds)}
    for kw in ("PatientName", "PatientID", "InstitutionName", "PatientBirthDate", "AccessionNumber"):
        assert rows[kw][1] == dicom.MASK, kw
    assert rows["PatientName"][0] == "(0010,0010)"
    assert rows["StudyDescription"][1] == "CHEST PA"
    assert "PixelData" not in rows and "TransferSyntaxUID" in rows  # file meta is listed
    plain = {kw: value for _, kw, value in dicom.header_table(ds, mask_phi=False)}
    assert plain["PatientName"] == "DOE^JANE" and plain["PatientID"] == "SMITH^JOHN"
    ds.PatientID = "c64d5667-a776-4f95-9e21-bfabafb07740"  # a code, not a name: shown
    assert {kw: v for _, kw, v in dicom.header_table(ds)}["PatientID"] == ds.PatientID


@pytest.mark.parametrize(
    "value,is_name",
    [
        ("DOE^JOHN", True),
        ("John Smith", True),
        ("O'Neil", True),
        ("12345", False),
        ("ANON", False),
        ("c64d5667-a776-4f95", False),
        ("PAT001", False),
        ("", False),
    ],
)
def test_looks_like_name(value, is_name):
    assert dicom.looks_like_name(value) is is_name


# ---------------------------------------------------------------- real samples


@pytest.mark.shared_data
def test_every_real_dicom_decodes_or_fails_clearly(shared_data):
    paths = [
        p
        for p in (shared_data / "dicom-samples").rglob("*")
        if p.is_file() and p.suffix not in (".md", ".csv")
    ]
    paths += sorted((shared_data / "rsna-pneumonia" / "stage_2_train_images").glob("*.dcm"))
    assert len(paths) >= 11
    for p in paths:
        info = inspect_image(p)
        assert info.format == "DICOM" and info.width > 0 and info.bit_depth > 0
        if p.name == "JPEG-lossy.dcm":  # 12-bit JPEG that only GDCM decodes
            with pytest.raises(ImageError, match="cannot decode JPEG Extended"):
                read_image(p)
            continue
        img = read_image(p, keep_color=True)
        assert img.dtype == np.uint8 and img.shape[:2] == (info.height, info.width), p
        assert img.std() > 10, p
        fields = dicom.header_fields(dicom.read_header(p))
        assert fields["Rows"] == info.height and fields["Columns"] == info.width


@pytest.mark.shared_data
@pytest.mark.parametrize("name", ["nema-wg04/RG1_J2KI.dcm", "fo-dicom/CR-MONO1-10-chest"])
def test_real_monochrome1_chests_look_like_radiographs(shared_data, name):
    img = read_image(shared_data / "dicom-samples" / name).astype(float)
    h, w = img.shape
    rows = slice(h // 4, h // 2)
    lungs = (
        img[rows, int(0.2 * w) : int(0.35 * w)].mean() + img[rows, int(0.65 * w) : int(0.8 * w)].mean()
    ) / 2
    mediastinum = img[rows, int(0.45 * w) : int(0.55 * w)].mean()
    assert mediastinum > lungs + 40  # bright mediastinum, dark lungs: MONOCHROME1 was inverted


@pytest.mark.shared_data
def test_real_header_quirks(shared_data):
    d = shared_data / "dicom-samples"
    dx = dicom.header_fields(dicom.read_header(d / "highdicom" / "dx_image.dcm"))
    assert dx["PatientAge"] == 5 and dx["PatientSex"] == "F" and dx["ViewPosition"] is None
    cr = dicom.header_fields(dicom.read_header(d / "fo-dicom" / "CR-MONO1-10-chest"))
    assert cr["PatientAge"] is None and cr["BitsStored"] == 10 and cr["ViewPosition"] == "PA"
    rsna = next((shared_data / "rsna-pneumonia" / "stage_2_train_images").glob("*.dcm"))
    fields = dicom.header_fields(dicom.read_header(rsna))
    assert isinstance(fields["PatientAge"], float) and fields["PatientID"] == rsna.stem
    assert images.looks_like_image(d / "fo-dicom" / "CR-MONO1-10-chest")
