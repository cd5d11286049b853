"""probe(): what a file or folder holds, as Sources, from headers only."""
from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from ..errors import ImageReadError
from .dicom import dicom_info, probe_dicom_file, series_source, source_from_info
from .plain import probe_plain
from .sniff import DICOM_SUFFIXES, IMAGE_SUFFIXES, natural_key, sniff
from .source import Source
from .tiff import probe_tiff


def probe(path) -> list[Source]:
    """Describe a file (one Source) or a folder (its images and DICOM series, recursively).

    Reads headers only: no slice of a stack or series is decoded. A folder's DICOM files
    (with or without a .dcm suffix) are grouped by SeriesInstanceUID into series ordered
    along the slice normal. Raises ImageReadError naming the file at fault.
    """
    p = Path(path)
    if p.is_dir():
        return _probe_folder(p)
    if not p.exists():
        raise ImageReadError("file not found", p)
    kind = sniff(p)
    if kind is None:
        raise ImageReadError(f"unsupported file type {p.suffix or '(no suffix)'!r}: expected "
                             "PNG, JPEG, BMP, TIFF or DICOM", p)
    if kind == "dicom":
        return [probe_dicom_file(p)]
    return [_probe_non_dicom(p, kind)]


def _probe_folder(folder: Path) -> list[Source]:
    entries: list = []       # Source, or a series key standing for its place in the order
    series: dict[tuple, list] = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted((d for d in dirnames if not d.startswith(".")), key=natural_key)
        for name in sorted(filenames, key=natural_key):
            if name.startswith("."):
                continue
            p = Path(dirpath) / name
            suffix = p.suffix.lower()
            kind = sniff(p)
            if kind is None:
                if suffix in IMAGE_SUFFIXES:
                    raise ImageReadError("not a readable image (unknown or corrupt content)", p)
                continue  # json, txt, ...: not ours
            if kind != "dicom":
                entries.append(_probe_non_dicom(p, kind))
                continue
            info = dicom_info(p, strict=suffix in DICOM_SUFFIXES)
            if info is None:
                continue  # DICOMDIR, structured report, ...: no image
            if info.frames > 1:
                entries.append(source_from_info(info, "dicom_multiframe"))
                continue
            key = (info.series_uid or str(p.parent), info.rows, info.cols, info.samples)
            if key not in series:
                series[key] = []
                entries.append(key)
            series[key].append(info)
    out: list[Source] = []
    for e in entries:
        out.append(e if isinstance(e, Source) else series_source(series[e]))
    return _disambiguate_names(out)


def _disambiguate_names(sources: list[Source]) -> list[Source]:
    # Two series called "Axial" in one folder: tell them apart in the image list.
    counts: dict[str, int] = {}
    for s in sources:
        counts[s.name] = counts.get(s.name, 0) + 1
    return [replace(s, name=f"{s.name} ({Path(s.path).name}/{s.files[0]})")
            if s.kind == "dicom_series" and counts[s.name] > 1 else s for s in sources]


def _probe_non_dicom(p: Path, kind: str) -> Source:
    return probe_tiff(p) if kind == "tiff" else probe_plain(p, kind)
