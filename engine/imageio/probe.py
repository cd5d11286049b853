"""probe(): what files and folders hold, as Sources, from headers only."""
from __future__ import annotations

import os
import stat
from dataclasses import replace
from pathlib import Path
from typing import Iterable

from ..errors import ImageReadError
from ..jobs import check, report
from .dicom_header import dicom_info
from .dicom_series import SeriesCollector
from .plain import probe_plain
from .sniff import DICOM_SUFFIXES, IMAGE_SUFFIXES, has_dicm_marker, natural_key, sniff
from .source import Source
from .tiff import probe_tiff

_EXPECTED = "PNG, JPEG, BMP, TIFF or DICOM"


def probe(path) -> list[Source]:
    """Describe a file (one Source) or a folder (its images and DICOM series, recursively).

    Reads headers only: no slice of a stack or series is decoded. A folder's DICOM files
    (with or without a .dcm suffix) are grouped by SeriesInstanceUID into series ordered
    along the slice normal. Raises ImageReadError naming the file at fault.
    """
    return probe_paths([path])


def probe_paths(paths: Iterable, progress=None, cancel=None) -> list[Source]:
    """Describe several files and folders together: DICOM files of one series selected
    one by one form that series, exactly as when their folder is given."""
    paths = [Path(p) for p in paths]
    col = SeriesCollector()
    for k, p in enumerate(paths):
        check(cancel)
        report(progress, k, len(paths), f"reading {p.name}")
        if p.is_dir():
            before = len(col.entries)
            _collect_folder(p, col, cancel)
            if len(col.entries) == before and not _all_known(p, col):
                raise ImageReadError(f"no images in this folder (expected {_EXPECTED} files)", p)
        elif not p.exists():
            raise ImageReadError("file not found", p)
        else:
            _collect_file(p, col)
    report(progress, len(paths), len(paths), "")
    return _disambiguate_names(col.sources())


def _collect_file(p: Path, col: SeriesCollector) -> None:
    kind = sniff(p)
    if kind is None:
        raise ImageReadError(f"unsupported file type {p.suffix or '(no suffix)'!r}: expected "
                             f"{_EXPECTED}", p)
    if kind != "dicom":
        col.add_source(_probe_non_dicom(p, kind))
        return
    info = dicom_info(p, strict=True)
    if info is None:
        raise ImageReadError("DICOM file holds no image (no Rows/Columns)", p)
    col.add_dicom(info)


def _collect_folder(folder: Path, col: SeriesCollector, cancel=None) -> None:
    for dirpath, dirnames, filenames in os.walk(folder):
        check(cancel)
        dirnames[:] = sorted((d for d in dirnames if not d.startswith(".")), key=natural_key)
        for name in sorted(filenames, key=natural_key):
            p = Path(dirpath) / name
            if name.startswith(".") or not _is_regular(p):
                continue  # hidden files; pipes and devices would block or never end
            suffix = p.suffix.lower()
            kind = sniff(p)
            if kind is None:
                if suffix in IMAGE_SUFFIXES:
                    raise ImageReadError("not a readable image (unknown or corrupt content)", p)
                continue  # json, txt, ...: not ours
            if kind != "dicom":
                col.add_source(_probe_non_dicom(p, kind))
                continue
            strict = suffix in DICOM_SUFFIXES
            try:
                info = dicom_info(p, strict=strict)
            except ImageReadError:
                if strict or has_dicm_marker(p):
                    raise
                continue  # only its first bytes looked like a dataset: not ours after all
            if info is not None:  # None: DICOMDIR, structured report, ...: no image
                col.add_dicom(info)


def _all_known(folder: Path, col: SeriesCollector) -> bool:
    # A folder whose DICOM files were all given already adds no entry, yet is not empty.
    return any(folder in i.path.parents for infos in col.series.values() for i in infos)


def _is_regular(p: Path) -> bool:
    try:
        return stat.S_ISREG(os.stat(p).st_mode)
    except OSError:
        return False  # a broken link: nothing to read


def _disambiguate_names(sources: list[Source]) -> list[Source]:
    # Two series called "Axial" in one folder: tell them apart in the image list.
    counts: dict[str, int] = {}
    for s in sources:
        counts[s.name] = counts.get(s.name, 0) + 1
    return [replace(s, name=f"{s.name} ({Path(s.path).name}/{s.files[0]})")
            if s.kind == "dicom_series" and counts[s.name] > 1 else s for s in sources]


def _probe_non_dicom(p: Path, kind: str) -> Source:
    return probe_tiff(p) if kind == "tiff" else probe_plain(p, kind)
