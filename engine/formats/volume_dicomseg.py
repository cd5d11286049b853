"""DICOM-SEG label volumes (highdicom).

Reading: a BINARY or LABELMAP Segmentation; its segments' numbers are the values and
their SegmentLabel the names. Segments must not overlap (a label volume holds one value
per voxel). `read` keeps the highdicom object so the import can take the pixels frame
by frame for the DICOM series the SEG references (`pixels_for_series`), which needs no
geometry; otherwise the SEG's own plane positions give the volume and its geometry.

Writing needs the source series: the SEG references its study, series and every slice
(SOP Instance UID), as 3D Slicer and PACS viewers expect, and takes its geometry from
them. Values are written as segments 1..N in ascending value order (DICOM numbers
segments from 1 without gaps). A stack that is not a DICOM series has nothing to
reference: the export refuses it and names the formats that fit.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ..errors import FormatError
from ..fsutil import atomic_write_bytes
from ..geometry import VoxelGeometry
from .volume import LabelVolume

SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"


def read(path) -> LabelVolume:
    import highdicom as hd
    import pydicom
    path = Path(path)
    try:
        ds = pydicom.dcmread(str(path))
    except Exception as e:  # noqa: BLE001
        raise FormatError(f"cannot read DICOM ({e})", path) from None
    if str(ds.get("SOPClassUID", "")) != SEG_SOP_CLASS:
        raise FormatError(f"not a DICOM Segmentation (Modality {ds.get('Modality', '?')}); "
                          f"add images with 'maskloop add'", path, "SOPClassUID")
    try:
        seg = hd.seg.Segmentation.from_dataset(ds, copy=False)
    except Exception as e:  # noqa: BLE001
        raise FormatError(f"cannot read DICOM-SEG ({e})", path) from None
    if seg.segmentation_type.value == "FRACTIONAL":
        raise FormatError("a FRACTIONAL segmentation is not a label volume (BINARY or LABELMAP only)",
                          path, "SegmentationType")
    names = {int(k): str(seg.get_segment_description(k).segment_label) for k in seg.segment_numbers}
    series = [str(s.SeriesInstanceUID) for s in ds.get("ReferencedSeriesSequence", [])]
    data, geom = None, None
    try:
        v = seg.get_volume(combine_segments=True, dtype=np.uint16 if max(names, default=0) > 255 else np.uint8)
        data = np.asarray(v.array)
        aff = np.asarray(v.affine, dtype=float)   # LPS, indices (slice, row, column)
        # highdicom: columns of affine[:3,:3] are the (slice, row, column) steps
        steps = aff[:3, :3]
        sp = np.linalg.norm(steps, axis=0)
        direction = np.stack([steps[:, 2] / sp[2], steps[:, 1] / sp[1], steps[:, 0] / sp[0]], axis=1)
        geom = VoxelGeometry((sp[0], sp[1], sp[2]), tuple(aff[:3, 3]), tuple(map(tuple, direction)))
    except Exception as e:  # noqa: BLE001 - irregular frames: only the series route works
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        if "overlap" in reason.lower():
            raise FormatError(f"segments overlap ({reason}); a label volume holds one value per voxel",
                              path) from None
        data = None
        geom_error = reason
    else:
        geom_error = None
    return LabelVolume(data if data is not None else np.zeros((0, 0, 0), np.uint8), geom, names,
                       {"seg": seg, "series": series, "volume_error": geom_error})


def pixels_for_series(vol: LabelVolume, sop_uids: Sequence[str], path) -> Optional[np.ndarray]:
    """(z, y, x) values on the given source slices, or None when the SEG does not
    reference them."""
    seg = vol.extra.get("seg")
    if seg is None:
        return None
    try:
        referenced = {str(r[2]) for r in seg.get_source_image_uids()}
    except Exception:  # noqa: BLE001
        return None
    if not referenced or not referenced <= set(map(str, sop_uids)):
        return None
    try:
        arr = seg.get_pixels_by_source_instance(list(sop_uids), combine_segments=True,
                                                assert_missing_frames_are_empty=True)
    except Exception as e:  # noqa: BLE001
        raise FormatError(f"cannot read the segments for the referenced series "
                          f"({str(e).splitlines()[0] if str(e) else type(e).__name__})", path) from None
    return np.asarray(arr)


def write(path, vol: LabelVolume, reference=None) -> None:
    """reference: the source series' pydicom datasets in slice order (headers suffice)."""
    import highdicom as hd
    from pydicom.sr.codedict import codes
    if not reference:
        raise FormatError("DICOM-SEG needs the DICOM series it segments; this stack is not a DICOM "
                          "series: export it with --volume-format nrrd, nifti or tiff", path)
    data = vol.data
    values = [int(v) for v in np.unique(data) if v]
    if not values:
        raise FormatError("nothing to write: the stack has no annotations", path)
    lut = np.zeros(int(max(values)) + 1, dtype=np.uint16)
    lut[values] = np.arange(1, len(values) + 1)
    seg_values = lut[data] if values != list(range(1, len(values) + 1)) else data
    dtype = np.uint8 if len(values) <= 255 else np.uint16
    descs = [hd.seg.SegmentDescription(
        segment_number=k, segment_label=vol.names.get(v, f"segment {v}")[:64],
        segmented_property_category=codes.SCT.Tissue, segmented_property_type=codes.SCT.Tissue,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL)
        for k, v in enumerate(values, start=1)]
    seg_type = "BINARY" if len(values) <= 64 else "LABELMAP"  # many objects: one frame per slice
    try:
        seg = hd.seg.Segmentation(
            source_images=list(reference), pixel_array=np.ascontiguousarray(seg_values.astype(dtype)),
            segmentation_type=seg_type, segment_descriptions=descs,
            series_instance_uid=hd.UID(), series_number=9000, sop_instance_uid=hd.UID(), instance_number=1,
            manufacturer="MaskLoop", manufacturer_model_name="MaskLoop", software_versions="MaskLoop",
            device_serial_number="0", series_description="MaskLoop segmentation", omit_empty_frames=True)
    except Exception as e:  # noqa: BLE001
        raise FormatError(f"cannot build the DICOM-SEG ({str(e).splitlines()[0] if str(e) else e})", path) from None
    buf = io.BytesIO()
    seg.save_as(buf)
    atomic_write_bytes(path, buf.getvalue())
