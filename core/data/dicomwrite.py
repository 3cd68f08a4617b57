"""Write DICOM files from arrays (the demo dataset and the tests use it).

Writes a Digital X-Ray / Secondary Capture style dataset with the header fields real chest
radiographs carry, optionally stored as MONOCHROME1, with a rescale and a VOI window, and
optionally compressed (RLE Lossless needs no extra encoder).
"""
from __future__ import annotations

import datetime as _dt
import os
from typing import Any

import numpy as np

DX_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.1.1"


def write_dicom(
    path: str | os.PathLike[str],
    pixels: np.ndarray,
    *,
    photometric: str = "MONOCHROME2",
    bits_stored: int | None = None,
    rescale_slope: float | None = None,
    rescale_intercept: float | None = None,
    window: tuple[float, float] | None = None,
    header: dict[str, Any] | None = None,
    compress: str | None = None,
    preamble: bool = True,
) -> None:
    """Write ``pixels`` (2-D uint8/uint16, stored values) as a DICOM file.

    ``photometric`` is the stored interpretation: for MONOCHROME1 pass pixels already
    inverted (bright = low value). ``header`` adds or overrides DICOM keywords
    (PatientID, PatientAge "045Y", PatientSex, ViewPosition, ...). ``compress`` is None or
    "rle" (RLE Lossless). ``preamble=False`` writes a bare dataset without the 128-byte
    preamble and file meta, as some old files are.
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, RLELossless, generate_uid

    pixels = np.ascontiguousarray(pixels)
    if pixels.ndim != 2 or pixels.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"write_dicom needs a 2-D uint8 or uint16 array, got {pixels.dtype} {pixels.shape}")
    bits_alloc = pixels.dtype.itemsize * 8
    bits_stored = bits_stored or bits_alloc

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = DX_IMAGE_STORAGE
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = DX_IMAGE_STORAGE
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "DX"
    ds.BodyPartExamined = "CHEST"
    ds.StudyDate = _dt.date(2020, 1, 1).strftime("%Y%m%d")
    ds.PatientName = "Anonymous"
    ds.PatientID = ""
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = bits_alloc
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 0
    if rescale_slope is not None or rescale_intercept is not None:
        ds.RescaleSlope = f"{rescale_slope if rescale_slope is not None else 1.0:g}"
        ds.RescaleIntercept = f"{rescale_intercept if rescale_intercept is not None else 0.0:g}"
        ds.RescaleType = "US"
    if window is not None:
        ds.WindowCenter = f"{window[0]:g}"
        ds.WindowWidth = f"{window[1]:g}"
    for key, value in (header or {}).items():
        setattr(ds, key, value)

    if compress == "rle":
        ds.compress(RLELossless, pixels, generate_instance_uid=False)
    elif compress is None:
        ds.PixelData = pixels.tobytes()
    else:
        raise ValueError(f"unknown compression {compress!r}; valid: rle")
    if preamble:
        ds.save_as(os.fspath(path), enforce_file_format=True)
    else:
        # A bare implicit-VR dataset: no preamble, no "DICM", no file meta (as old CR files are).
        del ds.file_meta
        ds.save_as(os.fspath(path), enforce_file_format=False, implicit_vr=True, little_endian=True)
