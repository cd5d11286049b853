"""Shared helpers of the engine.imageio tests: a probe that expects one source, the
probe/read consistency check, a small valid DICOM CT writer and a file truncator."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from engine import imageio
from engine.imageio import Source

from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid


def one_source(path) -> Source:
    srcs = imageio.probe(path)
    assert len(srcs) == 1, srcs
    return srcs[0]


def consistent(src: Source, arr: np.ndarray) -> None:
    """What probe promised is what read_slice delivers."""
    assert arr.shape[:2] == (src.height, src.width)
    assert str(arr.dtype) == src.dtype
    assert (arr.ndim == 3) == (src.channels == 3)
    assert arr.flags.c_contiguous


def write_dicom(path, pixels, *, series_uid="1.2.826.0.1.1", position=(0.0, 0.0, 0.0),
                orientation=(1, 0, 0, 0, 1, 0), instance=1, slope=1.0, intercept=-1024.0,
                signed=False, bits_stored=12, frames=None, pixel_data=True, preamble=True,
                description="CT AX", modality="CT"):
    """A small but valid DICOM CT image (explicit VR little endian)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = "1.2.826.0.1.0"
    ds.SeriesInstanceUID = series_uid
    ds.Modality = modality
    ds.SeriesDescription = description
    ds.SeriesNumber = 3
    if instance is not None:
        ds.InstanceNumber = instance
    if position is not None:
        ds.ImagePositionPatient = [float(v) for v in position]
    if orientation is not None:
        ds.ImageOrientationPatient = [float(v) for v in orientation]
    ds.PixelSpacing = [0.7, 0.7]
    ds.SliceThickness = 1.0
    pixels = np.asarray(pixels)
    ds.Rows, ds.Columns = pixels.shape[-2:]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 1 if signed else 0
    if slope is not None:
        ds.RescaleSlope = slope
        ds.RescaleIntercept = intercept
    if frames:
        ds.NumberOfFrames = frames
    if pixel_data:
        ds.PixelData = pixels.astype(np.int16 if signed else np.uint16).tobytes()
    if preamble:
        ds.save_as(str(path), enforce_file_format=True)
    else:  # a raw dataset without the 128-byte preamble (old exports)
        ds.save_as(str(path), enforce_file_format=False, implicit_vr=False, little_endian=True)
    return path


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
