"""DICOM series: single-frame files grouped by SeriesInstanceUID (and image size and
orientation) and ordered along the slice normal, whether they come from a folder or from
a selection of files."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .dicom import hu_dtype, source_from_info
from .dicom_header import DicomInfo
from .geometry_from import dicom_geometry
from .sniff import natural_key
from .source import Source


def series_key(info: DicomInfo) -> tuple:
    """Files with the same key are slices of one series. Orientation is part of it: a
    localizer filed under the axial series' UID is not one of its slices."""
    ori = tuple(round(v, 3) for v in info.orientation) if info.orientation else None
    return (info.series_uid or str(info.path.parent), info.rows, info.cols, info.samples, ori)


def order_series(infos: list[DicomInfo]) -> list[DicomInfo]:
    """Slice order: position along the slice normal, else InstanceNumber, else file name."""
    ori = next((i.orientation for i in infos if i.orientation), None)
    if ori and all(i.position for i in infos):
        normal = np.cross(np.asarray(ori[:3]), np.asarray(ori[3:]))
        if np.linalg.norm(normal) > 1e-6:
            return sorted(infos, key=lambda i: (float(np.dot(normal, i.position)),
                                                i.instance or 0, natural_key(i.path.name)))
    if all(i.instance is not None for i in infos):
        return sorted(infos, key=lambda i: (i.instance, natural_key(i.path.name)))
    return sorted(infos, key=lambda i: natural_key(str(i.path)))


def series_source(infos: list[DicomInfo]) -> Source:
    """One Source for the files of one series (a lone file stays a plain image)."""
    if len(infos) == 1:
        return source_from_info(infos[0], "image")
    infos = order_series(infos)
    folder = Path(os.path.commonpath([str(i.path.parent) for i in infos]))
    files = tuple(i.path.relative_to(folder).as_posix() for i in infos)
    first = infos[0]
    name = first.description or folder.name or first.path.stem
    geometry = dicom_geometry([i.position for i in infos], first.orientation,
                              first.pixel_spacing, first.slice_gap)
    window = next((i.window for i in infos if i.window), None)
    unit = "HU" if all(i.unit == "HU" for i in infos) else ""
    return Source("dicom_series", str(folder), files, len(infos), first.rows, first.cols,
                  str(hu_dtype(infos)), 3 if first.samples == 3 else 1, first.modality, name,
                  geometry=geometry, window=window, unit=unit)


class SeriesCollector:
    """Collects DICOM files in the order met; `sources()` puts each series where its first
    file was met, multi-frame files as they are."""

    def __init__(self) -> None:
        self.entries: list = []          # Source, or a series key standing for its place
        self.series: dict[tuple, list[DicomInfo]] = {}

    def add_source(self, src: Source) -> None:
        self.entries.append(src)

    def add_dicom(self, info: DicomInfo) -> None:
        if info.frames > 1:
            self.entries.append(source_from_info(info, "dicom_multiframe"))
            return
        key = series_key(info)
        if key not in self.series:
            self.series[key] = []
            self.entries.append(key)
        if all(i.path != info.path for i in self.series[key]):
            self.series[key].append(info)

    def sources(self) -> list[Source]:
        return [e if isinstance(e, Source) else series_source(self.series[e]) for e in self.entries]
