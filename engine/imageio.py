"""Image I/O for CT and microscopy: files, TIFF stacks and DICOM series -> raw arrays.

`probe(path)` describes what a file or folder holds as `Source`s, reading headers only.
`read_slice(source, i)` decodes exactly one slice (one TIFF page, one DICOM file or frame).
Raw values are kept (uint8/uint16/int16/float32, ...); DICOM is rescaled to HU. Display
goes through `to_uint8` (window/level or percentiles), which never changes the data.

Every failure a user can cause raises ImageReadError naming the file (and slice): cv2,
tifffile and pydicom errors never escape, and truncated files are detected rather than
padded with zeros.

Nothing here imports Qt or torch; pydicom (slow to import) is imported on first use.
"""
from __future__ import annotations

import logging
import math
import os
import re
import struct
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterator, Optional, Sequence

import cv2
import numpy as np
import tifffile

from .geometry import VoxelGeometry, optional_from_json
from .errors import ImageReadError, MaskLoopError
from .fsutil import atomic_write_bytes

__all__ = [
    "Source", "probe", "read_slice", "read_image", "to_uint8", "auto_window",
    "WINDOW_PRESETS", "write_png", "KINDS",
]

KINDS = ("image", "stack", "dicom_series", "dicom_multiframe")

# (center, width) in HU; the usual radiology defaults.
WINDOW_PRESETS: dict[str, tuple[float, float]] = {
    "soft tissue": (40.0, 400.0),
    "bone": (400.0, 1800.0),
    "lung": (-600.0, 1500.0),
    "brain": (40.0, 80.0),
}

# Suffixes that promise an image: such a file that cannot be read is an error, while
# other unreadable files in a scanned folder are just skipped.
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".jpe", ".bmp", ".dib", ".tif", ".tiff",
                  ".dcm", ".dicom", ".dic", ".ima"}
_DICOM_SUFFIXES = {".dcm", ".dicom", ".dic", ".ima"}


# --- Source ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Source:
    """One openable thing: a plain image, a TIFF stack, a DICOM series or multi-frame file."""

    kind: str                    # "image" | "stack" | "dicom_series" | "dicom_multiframe"
    path: str                    # the file, or the folder of a DICOM series
    files: tuple[str, ...] = ()  # dicom_series: slice files relative to path, in slice order
    n_slices: int = 1
    height: int = 0
    width: int = 0
    dtype: str = "uint8"         # numpy dtype of what read_slice returns
    channels: int = 1            # 1 (grey) or 3 (RGB)
    modality: str = ""           # "CT", "MR", ... for DICOM, "" otherwise
    name: str = ""               # display name
    geometry: Optional[VoxelGeometry] = None  # voxel size, origin, direction when the data has them

    def to_json(self) -> dict:
        return {
            "kind": self.kind, "path": self.path, "files": list(self.files),
            "n_slices": self.n_slices, "height": self.height, "width": self.width,
            "dtype": self.dtype, "channels": self.channels, "modality": self.modality,
            "name": self.name,
            **({"geometry": self.geometry.to_json()} if self.geometry is not None else {}),
        }

    @classmethod
    def from_json(cls, d: dict) -> "Source":
        # KeyError/TypeError/ValueError on malformed input: the project names the field.
        kind = str(d["kind"])
        if kind not in KINDS:
            raise ValueError(f"unknown source kind {kind!r}")
        files = d.get("files") or []
        if not isinstance(files, (list, tuple)):
            raise TypeError("'files' must be a list")
        src = cls(
            kind=kind, path=str(d["path"]), files=tuple(str(f) for f in files),
            n_slices=int(d["n_slices"]), height=int(d["height"]), width=int(d["width"]),
            dtype=str(np.dtype(d.get("dtype", "uint8"))), channels=int(d.get("channels", 1)),
            modality=str(d.get("modality", "")), name=str(d.get("name", "")),
            geometry=optional_from_json(d.get("geometry")),
        )
        if src.n_slices < 1 or src.height < 1 or src.width < 1 or src.channels not in (1, 3):
            raise ValueError("n_slices, height, width must be >= 1 and channels 1 or 3")
        if kind == "dicom_series" and len(src.files) != src.n_slices:
            raise ValueError(f"{len(src.files)} files for {src.n_slices} slices")
        return src


# --- file type detection --------------------------------------------------------------

def _sniff(path: Path, field: Optional[str] = None) -> Optional[str]:
    """File type from its first bytes ('png', 'jpeg', 'bmp', 'tiff', 'dicom') or None.

    Content decides, not the suffix: DICOM files often have no suffix at all.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except FileNotFoundError:
        raise ImageReadError("file not found", path, field) from None
    except IsADirectoryError:
        raise ImageReadError("is a folder, not a file", path, field) from None
    except OSError as e:
        raise ImageReadError(f"cannot read file ({e.strerror or e})", path, field) from None
    return _sniff_bytes(head, path.suffix.lower())


def _sniff_bytes(head: bytes, suffix: str) -> Optional[str]:
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "dicom"
    if head.startswith(b"BM") and len(head) >= 26 and \
            struct.unpack("<I", head[14:18])[0] in (12, 40, 52, 56, 64, 108, 124):
        return "bmp"  # "BM" alone is too common a start; the DIB header size pins it
    # DICOM without the 128-byte preamble (older exports) only when the name says so
    if suffix in _DICOM_SUFFIXES and len(head) >= 8:
        return "dicom"
    return None


def _file_size(path: Path) -> int:
    try:
        return os.stat(path).st_size
    except OSError as e:
        raise ImageReadError(f"cannot read file ({e.strerror or e})", path) from None


_NAT = re.compile(r"(\d+)")


def _natural_key(s: str):
    # slice_2 before slice_10
    return [int(t) if t.isdigit() else t.lower() for t in _NAT.split(s)]


# --- probe ----------------------------------------------------------------------------

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
    kind = _sniff(p)
    if kind is None:
        raise ImageReadError(f"unsupported file type {p.suffix or '(no suffix)'!r}: expected "
                             "PNG, JPEG, BMP, TIFF or DICOM", p)
    if kind == "dicom":
        return [_probe_dicom_file(p)]
    return [_probe_plain(p, kind)]


def _probe_plain(p: Path, kind: str) -> Source:
    if kind == "tiff":
        return _probe_tiff(p)
    if kind == "png":
        h, w, dtype, ch = _png_header(p)
    elif kind == "jpeg":
        h, w, dtype, ch = _jpeg_header(p)
    else:  # bmp: palette files decode grey or colour depending on the palette; just decode
        arr = _decode_cv2(p, "bmp")
        h, w = arr.shape[:2]
        dtype, ch = str(arr.dtype), (3 if arr.ndim == 3 else 1)
    return Source("image", str(p), (), 1, int(h), int(w), dtype, ch, "", p.stem)


def _probe_folder(folder: Path) -> list[Source]:
    entries: list = []       # Source, or a series key standing for its place in the order
    series: dict[tuple, list] = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted((d for d in dirnames if not d.startswith(".")), key=_natural_key)
        for name in sorted(filenames, key=_natural_key):
            if name.startswith("."):
                continue
            p = Path(dirpath) / name
            suffix = p.suffix.lower()
            kind = _sniff(p)
            if kind is None:
                if suffix in IMAGE_SUFFIXES:
                    raise ImageReadError("not a readable image (unknown or corrupt content)", p)
                continue  # json, txt, ...: not ours
            if kind != "dicom":
                entries.append(_probe_plain(p, kind))
                continue
            info = _dicom_info(p, strict=suffix in _DICOM_SUFFIXES)
            if info is None:
                continue  # DICOMDIR, structured report, ...: no image
            if info.frames > 1:
                entries.append(_source_from_info(info, "dicom_multiframe"))
                continue
            key = (info.series_uid or str(p.parent), info.rows, info.cols, info.samples)
            if key not in series:
                series[key] = []
                entries.append(key)
            series[key].append(info)
    out: list[Source] = []
    for e in entries:
        out.append(e if isinstance(e, Source) else _series_source(series[e]))
    return _disambiguate_names(out)


def _disambiguate_names(sources: list[Source]) -> list[Source]:
    # Two series called "Axial" in one folder: tell them apart in the image list.
    counts: dict[str, int] = {}
    for s in sources:
        counts[s.name] = counts.get(s.name, 0) + 1
    return [replace(s, name=f"{s.name} ({Path(s.path).name}/{s.files[0]})")
            if s.kind == "dicom_series" and counts[s.name] > 1 else s for s in sources]


# --- PNG / JPEG / BMP -----------------------------------------------------------------

_PNG_COLOR = {0: 1, 2: 3, 3: 3, 4: 1, 6: 3}   # colour type -> channels after decoding (no alpha)


def _png_header(p: Path) -> tuple[int, int, str, int]:
    size = _file_size(p)
    with open(p, "rb") as f:
        head = f.read(33)
        f.seek(max(0, size - 4096))
        tail = f.read()
    if len(head) < 33 or head[12:16] != b"IHDR":
        raise ImageReadError("corrupt PNG (no IHDR header)", p)
    w, h, depth, ctype = struct.unpack(">IIBB", head[16:26])
    if ctype not in _PNG_COLOR or depth not in (1, 2, 4, 8, 16) or w == 0 or h == 0:
        raise ImageReadError(f"corrupt PNG header (colour type {ctype}, depth {depth})", p)
    if b"IEND" not in tail:
        raise ImageReadError("truncated PNG (no end chunk)", p)
    return h, w, ("uint16" if depth == 16 else "uint8"), _PNG_COLOR[ctype]


def _jpeg_header(p: Path) -> tuple[int, int, str, int]:
    size = _file_size(p)
    with open(p, "rb") as f:
        f.seek(max(0, size - 2048))
        tail = f.read()
    if b"\xff\xd9" not in tail:
        # cameras may append data after the image; only then read the whole file
        if not _jpeg_complete(p.read_bytes()):
            raise ImageReadError("truncated JPEG (no end-of-image marker)", p)
    try:
        from PIL import Image  # labelme's dependency; reads the header only
    except ImportError:
        arr = _decode_cv2(p, "jpeg")
        return arr.shape[0], arr.shape[1], "uint8", (3 if arr.ndim == 3 else 1)
    try:
        with Image.open(p) as im:
            w, h = im.size
            mode = im.mode
            orientation = im.getexif().get(0x0112, 1)
    except Exception as e:  # noqa: BLE001 - PIL raises many types for bad input
        raise ImageReadError(f"corrupt JPEG ({e})", p) from None
    if orientation in (5, 6, 7, 8):  # cv2 applies EXIF rotation when decoding, like labelme
        w, h = h, w
    return h, w, "uint8", (1 if mode in ("L", "1", "I", "I;16") else 3)


def _jpeg_complete(data: bytes) -> bool:
    # The end-of-image marker must follow the last start-of-scan (an EXIF thumbnail has
    # its own EOI before the main image, so "contains FFD9" alone is not enough).
    sos = data.rfind(b"\xff\xda")
    return sos >= 0 and data.find(b"\xff\xd9", sos) > 0


_CV2_FLAGS = cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR  # keeps 16 bit and grey; drops alpha


def _decode_cv2(p: Path, kind: str) -> np.ndarray:
    """Decode PNG/JPEG/BMP to raw values, (H, W) or (H, W, 3) RGB."""
    try:
        data = p.read_bytes()  # not cv2.imread: it fails on non-ASCII paths on Windows
    except FileNotFoundError:
        raise ImageReadError("file not found", p) from None
    except OSError as e:
        raise ImageReadError(f"cannot read file ({e.strerror or e})", p) from None
    # Detect truncation ourselves: clearer than cv2's None (and older cv2 decodes a cut
    # JPEG as grey-filled without complaint).
    if kind == "jpeg" and not _jpeg_complete(data):
        raise ImageReadError("truncated JPEG (no end-of-image marker)", p)
    if kind == "png" and b"IEND" not in data[-4096:]:
        raise ImageReadError("truncated PNG (no end chunk)", p)
    if kind == "bmp" and len(data) >= 6 and len(data) < struct.unpack("<I", data[2:6])[0]:
        raise ImageReadError(f"truncated BMP ({len(data)} of {struct.unpack('<I', data[2:6])[0]} bytes)", p)
    flags = _CV2_FLAGS
    if kind == "png" and len(data) > 25 and data[25] in (0, 4):
        # grey (+ alpha or tRNS): ANYCOLOR would expand it to colour
        flags = cv2.IMREAD_GRAYSCALE | cv2.IMREAD_ANYDEPTH
    if kind != "jpeg":
        flags |= cv2.IMREAD_IGNORE_ORIENTATION  # labelme rotates JPEGs only
    try:
        arr = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    except cv2.error as e:
        raise ImageReadError(f"cannot decode {kind.upper()} ({str(e).strip().splitlines()[-1]})", p) from None
    if arr is None:  # cv2 reports failure by returning None
        raise ImageReadError(f"cannot decode {kind.upper()}: corrupt or truncated file", p)
    if arr.ndim == 3:
        if arr.shape[2] == 4:
            arr = cv2.cvtColor(arr, cv2.COLOR_BGRA2RGB)
        elif arr.shape[2] == 3:
            cv2.cvtColor(arr, cv2.COLOR_BGR2RGB, dst=arr)  # in place: no second 3-channel copy
        elif arr.shape[2] == 1:
            arr = arr[:, :, 0]
    return arr


# --- TIFF -----------------------------------------------------------------------------

# tifffile logs (rather than raises) when the IFD chain is cut off; then it would just
# report fewer pages. These messages mean the file is damaged.
_TIFF_DAMAGE = ("corrupted tag list", "invalid offset to page", "invalid page offset",
                "invalid next page", "failed to read", "missing data", " is missing ")


class _LogCapture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.thread = threading.get_ident()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread == self.thread:
            self.messages.append(record.getMessage())


@contextmanager
def _tiff_guard(p: Path, field: Optional[str] = None) -> Iterator[None]:
    """Turn tifffile's exceptions and damage warnings into ImageReadError."""
    log = logging.getLogger("tifffile")
    cap = _LogCapture()
    log.addHandler(cap)
    err: Optional[MaskLoopError] = None
    try:
        yield
    except MaskLoopError as e:
        err = e
    except FileNotFoundError:
        err = ImageReadError("file not found", p, field)
    except MemoryError:
        err = ImageReadError("not enough memory to decode this TIFF page", p, field)
    except Exception as e:  # noqa: BLE001 - tifffile raises ValueError, struct.error, ...
        msg = str(e).strip() or type(e).__name__
        m = re.match(r"<COMPRESSION\.(\w+)[^>]*> requires the 'imagecodecs' package", msg)
        if m:
            msg = f"{m.group(1)} compression needs the imagecodecs package (pip install imagecodecs)"
        err = ImageReadError(f"cannot read TIFF: {msg}", p, field)
    finally:
        log.removeHandler(cap)
    # A damaged IFD chain explains any other symptom (such as a page count that changed).
    for m in cap.messages:
        low = m.lower()
        if any(k in low for k in _TIFF_DAMAGE):
            # strip tifffile's "<tifffile.TiffFile 'x.tif'>" prefix: the path is ours to name
            detail = re.sub(r"^<[^>]*>\s*", "", m)
            raise ImageReadError(f"corrupt or truncated TIFF ({detail})", p, field)
    if err is not None:
        raise err


def _tiff_layout(page, p: Path) -> tuple[int, int, int, str]:
    """(height, width, channels, dtype) that read_slice will return for this page."""
    sep, depth, h, w, contig = page.shaped
    samples = sep * contig
    if depth != 1:
        raise ImageReadError(f"unsupported TIFF: volumetric pages (depth {depth})", p)
    if samples > 4:
        raise ImageReadError(f"unsupported TIFF: {samples} samples per pixel (1-4 supported)", p)
    if page.dtype is None or np.dtype(page.dtype).kind == "c":
        raise ImageReadError(f"unsupported TIFF sample format ({page.bitspersample}-bit "
                             f"{'complex' if page.dtype is not None else 'unknown'})", p)
    channels = 3 if samples >= 3 else 1
    return int(h), int(w), channels, str(_out_dtype(page.dtype))


def _out_dtype(dt) -> np.dtype:
    dt = np.dtype(dt)
    if dt == np.bool_:
        return np.dtype(np.uint8)
    if dt.kind == "f":
        return np.dtype(np.float32)  # float16 is slow everywhere, float64 needlessly big
    return dt.newbyteorder("=")


def _check_page_extent(page, size: int, p: Path, field: Optional[str] = None) -> None:
    offsets, counts = page.dataoffsets, page.databytecounts
    if not offsets:
        raise ImageReadError("TIFF page has no image data", p, field)
    end = max(int(o) + int(c) for o, c in zip(offsets, counts))
    if end > size:
        raise ImageReadError(f"truncated TIFF (page data ends at byte {end}, file has {size})", p, field)


def _n_slices(s) -> int:
    # A "truncated" series (ImageJ > 4 GB, tifffile truncate=True) has one IFD for all slices.
    if s.is_truncated:
        return max(1, int(np.prod(s.shape, dtype=np.int64)) // max(1, s.keyframe.size))
    return len(s)


def _probe_tiff(p: Path) -> Source:
    size = _file_size(p)
    with _tiff_guard(p):
        with tifffile.TiffFile(p) as tif:
            if not tif.series or len(tif.series[0]) == 0:
                raise ImageReadError("TIFF contains no images", p)
            s = tif.series[0]
            n = _n_slices(s)
            h, w, ch, dtype = _tiff_layout(s.keyframe, p)
            off = s.dataoffset if s.keyframe.compression == 1 else None
            if off is not None:  # contiguous: the whole stack must fit in the file
                end = off + n * s.keyframe.nbytes
                if end > size:
                    raise ImageReadError(f"truncated TIFF (data ends at byte {end}, file has {size})", p)
            elif s.is_truncated:
                raise ImageReadError("unsupported TIFF: compressed single-IFD stack", p)
            else:  # check the last page, where a cut-off file shows
                last = s[n - 1]
                if last is None:
                    raise ImageReadError(f"TIFF page {n - 1} is missing", p)
                _check_page_extent(last, size, p)
    return Source("stack" if n > 1 else "image", str(p), (), n, h, w, dtype, ch, "", p.stem)


def _read_tiff(p: Path, index: int, n_expected: Optional[int], field: Optional[str]) -> np.ndarray:
    size = _file_size(p)
    with _tiff_guard(p, field):
        with tifffile.TiffFile(p) as tif:
            arr = None
            # When series 0 is every page of the file (the usual stack), go straight to
            # page `index` and skip building the series, which visits every IFD.
            if n_expected is not None and len(tif.pages) == n_expected:
                page = tif.pages[index]
            else:
                s = tif.series[0] if tif.series else None
                got = 0 if s is None else _n_slices(s)
                if s is None or (n_expected is not None and got != n_expected):
                    raise ImageReadError(f"file changed: {got} slices, expected {n_expected}", p, field)
                if not 0 <= index < got:
                    raise ImageReadError(f"slice {index} out of range (file has {got})", p, field)
                page = None if s.is_truncated else s[index]
                if page is None and s.is_truncated and s.dataoffset is not None:
                    # ImageJ > 4 GB / truncated files: one IFD describes every slice
                    key = s.keyframe
                    off = s.dataoffset + index * key.nbytes
                    if off + key.nbytes > size:
                        raise ImageReadError(f"truncated TIFF (slice data ends past byte {size})", p, field)
                    arr = tif.filehandle.read_array(tif.byteorder + key.dtype.char, key.size, off)
                    arr = arr.reshape(key.shaped)
                    page = key
            if page is None:
                raise ImageReadError("TIFF page is missing", p, field)
            if arr is None:
                _check_page_extent(page, size, p, field)
                arr = _decode_page(p, page)
    return _normalise_tiff(arr.reshape(page.shaped), p)


def _decode_page(p: Path, page) -> np.ndarray:
    """One TIFF page as (sep, depth, H, W, contig); Pillow steps in for codecs that
    tifffile only has through imagecodecs (LZW, as scanners and ImageJ write it)."""
    try:
        return page.asarray(squeeze=False)
    except ValueError as e:
        if "imagecodecs" not in str(e) or not isinstance(page.index, int):
            raise
        err = e
    try:
        from PIL import Image
        with Image.open(p) as im:
            im.seek(page.index)
            a = np.asarray(im)
    except Exception:  # noqa: BLE001 - Pillow cannot either: report tifffile's reason
        raise err from None
    sep, depth, h, w, contig = page.shaped
    samples = sep * contig
    want = (h, w) if samples == 1 else (h, w, samples)
    # Pillow reduces some layouts (16-bit RGB) to 8 bit: never return changed values
    if a.shape != want or a.dtype.newbyteorder("=") != page.dtype.newbyteorder("="):
        raise err
    return a.reshape(1, 1, h, w, samples)


def _normalise_tiff(a: np.ndarray, p: Path) -> np.ndarray:
    """(sep, depth, H, W, contig) -> (H, W) or (H, W, 3), C-contiguous, supported dtype."""
    sep, depth, h, w, contig = a.shape
    if depth != 1:
        raise ImageReadError(f"unsupported TIFF: volumetric pages (depth {depth})", p)
    if sep > 1:
        a = a[:, 0, :, :, 0].transpose(1, 2, 0)  # planar RGB -> interleaved (copied below)
    else:
        a = a[0, 0]
    if a.shape[-1] == 1:
        a = a[..., 0]
    elif a.shape[-1] == 2:
        a = a[..., 0]  # grey + alpha (or a second channel we cannot show)
    elif a.shape[-1] > 3:
        a = a[..., :3]  # RGBA -> RGB
    out = _out_dtype(a.dtype)
    if a.dtype != out:
        a = a.astype(out)
    return np.ascontiguousarray(a)  # no copy when already contiguous


# --- DICOM ----------------------------------------------------------------------------

def _pydicom():
    import pydicom  # noqa: F401 - imported lazily: it takes half a second
    import pydicom.pixels  # noqa: F401
    return pydicom


@dataclass
class _DicomInfo:
    path: Path
    series_uid: str
    rows: int
    cols: int
    samples: int
    frames: int
    modality: str
    description: str
    series_number: Optional[int]
    instance: Optional[int]
    position: Optional[tuple[float, float, float]]
    orientation: Optional[tuple[float, ...]]
    raw_dtype: np.dtype
    raw_range: tuple[float, float]
    rescales: list = field(default_factory=list)   # (slope, intercept) per frame


_PIXEL_TAGS = (0x7FE00010, 0x7FE00008, 0x7FE00009)   # PixelData, FloatPixelData, DoubleFloat...
_LONG_VRS = {b"OB", b"OW", b"OF", b"OD", b"OL", b"OV", b"UN", b"SQ", b"UT", b"UC", b"UR"}


def _dicom_info(p: Path, strict: bool = True) -> Optional[_DicomInfo]:
    """Header facts of one DICOM file (pixel data not read).

    None for a valid DICOM file that holds no image (DICOMDIR, reports); ImageReadError for
    an image whose pixel data is missing or cut off, or (strict) for unreadable files.
    """
    pydicom = _pydicom()
    try:
        with open(p, "rb") as f:
            ds = pydicom.dcmread(f, stop_before_pixels=True, force=True)
            if "Rows" in ds and "Columns" in ds:
                state, pixel_tag = _pixel_element_state(ds, f, os.fstat(f.fileno()).st_size)
    except FileNotFoundError:
        raise ImageReadError("file not found", p) from None
    except OSError as e:
        raise ImageReadError(f"cannot read file ({e.strerror or e})", p) from None
    except Exception as e:  # noqa: BLE001 - pydicom raises InvalidDicomError, ValueError, ...
        raise ImageReadError(f"not a readable DICOM file ({e})", p) from None
    if "Rows" not in ds or "Columns" not in ds:
        if strict and "SOPClassUID" not in ds and not getattr(ds, "file_meta", None):
            raise ImageReadError("not a DICOM file", p)
        return None
    if state == "missing":
        raise ImageReadError("DICOM file has no pixel data", p)
    if state == "truncated":
        raise ImageReadError("truncated DICOM file (pixel data cut off)", p)
    try:
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        rows, cols = int(ds.Rows), int(ds.Columns)
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
        raw_dtype, raw_range = _dicom_raw_type(ds, pixel_tag)
        pos_ = ds.get("ImagePositionPatient")
        ori = ds.get("ImageOrientationPatient")
        inst = ds.get("InstanceNumber")
        sn = ds.get("SeriesNumber")
        info = _DicomInfo(
            path=p, series_uid=str(ds.get("SeriesInstanceUID", "") or ""), rows=rows, cols=cols,
            samples=samples, frames=frames, modality=str(ds.get("Modality", "") or ""),
            description=str(ds.get("SeriesDescription", "") or "").strip(),
            series_number=int(sn) if sn not in (None, "") else None,
            instance=int(inst) if inst not in (None, "") else None,
            position=tuple(float(v) for v in pos_) if pos_ and len(pos_) == 3 else None,
            orientation=tuple(float(v) for v in ori) if ori and len(ori) == 6 else None,
            raw_dtype=raw_dtype, raw_range=raw_range,
            rescales=[_dicom_rescale(ds, k) for k in range(frames)],
        )
    except ImageReadError:
        raise
    except Exception as e:  # noqa: BLE001 - malformed values (non-numeric strings, ...)
        raise ImageReadError(f"unsupported or malformed DICOM header ({e})", p) from None
    if rows < 1 or cols < 1 or frames < 1:
        raise ImageReadError(f"DICOM image of size {rows}x{cols}x{frames}", p)
    if samples not in (1, 3):
        raise ImageReadError(f"unsupported DICOM: {samples} samples per pixel", p)
    return info


def _pixel_element_state(ds, f, size: int) -> tuple[str, int]:
    """('ok' | 'missing' | 'truncated' | 'unknown', tag) of the pixel data element.

    `f` is positioned where dcmread(stop_before_pixels=True) stopped: at that element's
    tag if there is one. Only element and fragment headers are read, never pixel values.
    """
    pos = f.tell()
    tail = f.read(12)
    meta = getattr(ds, "file_meta", None)
    ts = meta.get("TransferSyntaxUID") if meta is not None else None
    if ts is not None and ts == "1.2.840.10008.1.2.1.99":
        return "unknown", _PIXEL_TAGS[0]   # deflated: file offsets mean nothing
    if ts is not None:
        try:
            implicit, little = ts.is_implicit_VR, ts.is_little_endian
        except Exception:  # noqa: BLE001 - private/unknown syntax
            implicit, little = False, True
    else:
        implicit, little = getattr(ds, "original_encoding", (True, True))
        implicit = True if implicit is None else implicit
        little = True if little is None else little
    if len(tail) < 8:
        return "missing", 0
    e = "<" if little else ">"
    group, elem = struct.unpack(e + "HH", tail[:4])
    tag = (group << 16) | elem
    if tag not in _PIXEL_TAGS:
        return "missing", 0
    if implicit:
        (length,), header = struct.unpack(e + "I", tail[4:8]), 8
    elif tail[4:6] in _LONG_VRS:
        if len(tail) < 12:
            return "truncated", tag
        (length,), header = struct.unpack(e + "I", tail[8:12]), 12
    else:
        (length,), header = struct.unpack(e + "H", tail[6:8]), 8
    if length == 0xFFFFFFFF:
        return _fragments_state(f, pos + header, size), tag
    if length == 0:
        return "missing", tag
    if pos + header + length > size:
        return "truncated", tag
    try:
        need = (int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1) or 1)
                * int(ds.get("NumberOfFrames", 1) or 1) * int(ds.get("BitsAllocated", 16)) + 7) // 8
        if tag == _PIXEL_TAGS[0] and length < need:
            return "truncated", tag
    except Exception:  # noqa: BLE001
        pass
    return "ok", tag


def _fragments_state(f, pos: int, size: int) -> str:
    """Walk the item headers of encapsulated (compressed) pixel data: a cut-off file shows
    as an item running past the end or a missing sequence delimiter."""
    for _ in range(1 << 20):
        f.seek(pos)
        h = f.read(8)
        if len(h) < 8:
            return "truncated"
        group, elem, length = struct.unpack("<HHI", h)
        if (group, elem) == (0xFFFE, 0xE0DD):
            return "ok"
        if (group, elem) != (0xFFFE, 0xE000) or length == 0xFFFFFFFF:
            return "unknown"  # not what the standard says: let the decoder judge
        pos += 8 + length
        if pos > size:
            return "truncated"
    return "unknown"


def _dicom_raw_type(ds, pixel_tag: int) -> tuple[np.dtype, tuple[float, float]]:
    """dtype pydicom decodes to (after our normalisation) and the range BitsStored allows."""
    if pixel_tag == 0x7FE00008 or pixel_tag == 0x7FE00009:
        return np.dtype(np.float32), (-math.inf, math.inf)
    alloc = int(ds.get("BitsAllocated", 16) or 16)
    stored = int(ds.get("BitsStored", alloc) or alloc)
    signed = int(ds.get("PixelRepresentation", 0) or 0) == 1
    if alloc == 1:
        return np.dtype(np.uint8), (0.0, 1.0)
    if alloc not in (8, 16, 32):
        raise ValueError(f"unsupported BitsAllocated {alloc}")
    dt = np.dtype(("i" if signed else "u") + str(alloc // 8))
    lo, hi = ((-(1 << (stored - 1)), (1 << (stored - 1)) - 1) if signed else (0, (1 << stored) - 1))
    return dt, (float(lo), float(hi))


def _dicom_rescale(ds, frame: int) -> tuple[float, float]:
    """(slope, intercept) of one frame: per-frame group, shared group, then top level."""
    def from_seq(item):
        seq = item.get("PixelValueTransformationSequence") if item is not None else None
        if seq:
            t = seq[0]
            if "RescaleSlope" in t or "RescaleIntercept" in t:
                return float(t.get("RescaleSlope", 1) or 1), float(t.get("RescaleIntercept", 0) or 0)
        return None
    per = ds.get("PerFrameFunctionalGroupsSequence")
    if per and frame < len(per):
        r = from_seq(per[frame])
        if r:
            return r
    shared = ds.get("SharedFunctionalGroupsSequence")
    if shared:
        r = from_seq(shared[0])
        if r:
            return r
    slope = ds.get("RescaleSlope", 1)
    inter = ds.get("RescaleIntercept", 0)
    return float(1 if slope in (None, "") else slope), float(0 if inter in (None, "") else inter)


def _hu_dtype(infos: Sequence[_DicomInfo]) -> np.dtype:
    """One dtype for a whole series: raw when no rescale, int16 HU when it fits, else float32."""
    raws = {i.raw_dtype for i in infos}
    rescales = {r for i in infos for r in i.rescales}
    if rescales <= {(1.0, 0.0)} and len(raws) == 1:
        return raws.pop()
    if any(dt.kind == "f" for dt in raws):
        return np.dtype(np.float32)
    if not all(float(s).is_integer() and float(b).is_integer() for s, b in rescales):
        return np.dtype(np.float32)
    fits = True
    for i in infos:
        lo, hi = i.raw_range
        for s, b in i.rescales:
            ends = (lo * s + b, hi * s + b)
            fits &= min(ends) >= -32768 and max(ends) <= 32767
    # CT stores HU: values beyond int16 are only padding outside the scan (e.g. signed
    # 16-bit storage with intercept -1024), so saturating them loses nothing.
    if fits or all(i.modality == "CT" for i in infos):
        return np.dtype(np.int16)
    return np.dtype(np.float32)


def _rescale(raw: np.ndarray, slope: float, intercept: float, out: np.dtype) -> np.ndarray:
    if raw.dtype == np.bool_:
        raw = raw.view(np.uint8)
    if slope == 1.0 and intercept == 0.0 and raw.dtype == out:
        return raw
    if out == np.int16:
        tmp = raw.astype(np.int32)
        if slope != 1.0:
            tmp *= int(slope)
        if intercept != 0.0:
            tmp += int(intercept)
        np.clip(tmp, -32768, 32767, out=tmp)
        return tmp.astype(np.int16)
    if out.kind == "f":
        res = raw.astype(np.float32)
        if slope != 1.0:
            res *= np.float32(slope)
        if intercept != 0.0:
            res += np.float32(intercept)
        return res
    # identity rescale to another integer type (series mixing signed/unsigned storage)
    return raw.astype(out)


def _source_from_info(info: _DicomInfo, kind: str) -> Source:
    n = info.frames if kind == "dicom_multiframe" else 1
    name = (info.description or info.path.stem) if kind == "dicom_multiframe" else info.path.stem
    return Source(kind, str(info.path), (), n, info.rows, info.cols, str(_hu_dtype([info])),
                  3 if info.samples == 3 else 1, info.modality, name)


def _series_source(infos: list[_DicomInfo]) -> Source:
    if len(infos) == 1:
        return _source_from_info(infos[0], "image")
    infos = _order_series(infos)
    folder = Path(os.path.commonpath([str(i.path.parent) for i in infos]))
    files = tuple(i.path.relative_to(folder).as_posix() for i in infos)
    first = infos[0]
    name = first.description or folder.name or first.path.stem
    return Source("dicom_series", str(folder), files, len(infos), first.rows, first.cols,
                  str(_hu_dtype(infos)), 3 if first.samples == 3 else 1, first.modality, name)


def _order_series(infos: list[_DicomInfo]) -> list[_DicomInfo]:
    """Slice order: position along the slice normal, else InstanceNumber, else file name."""
    ori = next((i.orientation for i in infos if i.orientation), None)
    if ori and all(i.position for i in infos):
        normal = np.cross(np.asarray(ori[:3]), np.asarray(ori[3:]))
        if np.linalg.norm(normal) > 1e-6:
            return sorted(infos, key=lambda i: (float(np.dot(normal, i.position)),
                                                i.instance or 0, _natural_key(i.path.name)))
    if all(i.instance is not None for i in infos):
        return sorted(infos, key=lambda i: (i.instance, _natural_key(i.path.name)))
    return sorted(infos, key=lambda i: _natural_key(str(i.path)))


def _probe_dicom_file(p: Path) -> Source:
    info = _dicom_info(p, strict=True)
    if info is None:
        raise ImageReadError("DICOM file holds no image (no Rows/Columns)", p)
    return _source_from_info(info, "dicom_multiframe" if info.frames > 1 else "image")


def _read_dicom(p: Path, frame: Optional[int], out_dtype: Optional[np.dtype],
                field: Optional[str]) -> np.ndarray:
    pydicom = _pydicom()
    from pydicom.dataset import Dataset
    hdr = Dataset()
    try:
        # index: decode that one frame only (a multi-frame file may hold hundreds)
        arr = pydicom.pixels.pixel_array(str(p), ds_out=hdr, index=frame or 0)
    except FileNotFoundError:
        raise ImageReadError("file not found", p, field) from None
    except MemoryError:
        raise ImageReadError("not enough memory to decode this DICOM file", p, field) from None
    except Exception as e:  # noqa: BLE001 - InvalidDicomError, AttributeError, ValueError, ...
        # The header check names the usual causes (no pixel data, cut-off file) plainly.
        try:
            _dicom_info(p, strict=True)
        except ImageReadError as clear:
            raise ImageReadError(clear.message, p, field) from None
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ImageReadError(f"cannot decode DICOM pixel data ({msg})", p, field) from None
    try:
        slope, intercept = _dicom_rescale(hdr, frame or 0)
        if out_dtype is None:  # read_image: no Source, decide as probe would
            pixel_tag = 0x7FE00008 if arr.dtype.kind == "f" else 0x7FE00010
            raw_dtype, raw_range = _dicom_raw_type(hdr, pixel_tag)
            info = _DicomInfo(p, "", 0, 0, 1, 1, str(hdr.get("Modality", "") or ""), "", None,
                              None, None, None, raw_dtype, raw_range, [(slope, intercept)])
            out_dtype = _hu_dtype([info])
        if arr.dtype.kind == "f" and arr.dtype != np.float32:
            arr = arr.astype(np.float32)
        res = _rescale(arr, slope, intercept, np.dtype(out_dtype))
    except Exception as e:  # noqa: BLE001 - malformed rescale values and the like
        raise ImageReadError(f"unsupported or malformed DICOM header ({e})", p, field) from None
    return np.ascontiguousarray(res)


# --- reading ----------------------------------------------------------------------------

def _resolve(source: Source, base) -> Path:
    p = Path(source.path)
    if base is not None and not p.is_absolute():
        p = Path(base) / p
    return p


def read_slice(source: Source, index: int, base: Optional[Path] = None) -> np.ndarray:
    """Raw values of slice `index` only: (H, W) or (H, W, 3), dtype `source.dtype`.

    Reads one TIFF page, one DICOM file or one frame, never the whole stack. A relative
    `source.path` resolves from `base` (the project root).
    """
    p = _resolve(source, base)
    index = int(index)
    field = f"slice {index}" if source.n_slices > 1 else None
    if not 0 <= index < source.n_slices:
        raise ImageReadError(f"slice {index} out of range (0..{source.n_slices - 1})", p,
                             f"slice {index}")
    if source.kind == "dicom_series":
        fp = p / source.files[index]
        arr = _read_any(fp, None, field, source)
        where = fp
    elif source.kind == "dicom_multiframe":
        arr = _read_dicom(p, index, np.dtype(source.dtype), field)
        where = p
    else:
        arr = _read_any(p, index, field, source)
        where = p
    if arr.shape[:2] != (source.height, source.width):
        raise ImageReadError(f"image changed on disk: {arr.shape[1]}x{arr.shape[0]}, expected "
                             f"{source.width}x{source.height}", where, field)
    if source.channels == 3 and arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)  # a grey-palette file probed as colour
    elif source.channels == 1 and arr.ndim == 3:
        raise ImageReadError("image changed on disk: colour, expected grey", where, field)
    if str(arr.dtype) != source.dtype:
        if arr.dtype.kind in "ui" and np.dtype(source.dtype).kind in "uif" and \
                np.can_cast(arr.dtype, source.dtype):
            arr = arr.astype(source.dtype)  # e.g. one uint16 slice in an int16 series
        else:
            raise ImageReadError(f"image changed on disk: {arr.dtype}, expected {source.dtype}",
                                 where, field)
    return arr


def _read_any(p: Path, index: Optional[int], field: Optional[str],
              source: Optional[Source]) -> np.ndarray:
    kind = _sniff(p, field)
    if kind == "tiff":
        return _read_tiff(p, index or 0, source.n_slices if source is not None else None, field)
    if kind == "dicom":
        out = np.dtype(source.dtype) if source is not None else None
        return _read_dicom(p, None, out, field)
    if kind in ("png", "jpeg", "bmp"):
        return _decode_cv2(p, kind)
    raise ImageReadError(f"unsupported or corrupt file ({p.suffix or 'no suffix'}): expected "
                         "PNG, JPEG, BMP, TIFF or DICOM", p, field)


def read_image(path) -> np.ndarray:
    """A plain 2-D image file's raw values (the first page / frame), (H, W) or (H, W, 3)."""
    p = Path(path)
    if p.is_dir():
        raise ImageReadError("is a folder, not an image file", p)
    if not p.exists():
        raise ImageReadError("file not found", p)
    if _sniff(p) == "tiff":
        # first page of series 0, whatever the page count
        size = _file_size(p)
        with _tiff_guard(p):
            with tifffile.TiffFile(p) as tif:
                if not tif.series or len(tif.series[0]) == 0:
                    raise ImageReadError("TIFF contains no images", p)
                page = tif.series[0][0]
                _tiff_layout(page, p)
                _check_page_extent(page, size, p)
                arr = _decode_page(p, page)
        return _normalise_tiff(arr.reshape(page.shaped), p)
    return _read_any(p, None, None, None)


# --- display ------------------------------------------------------------------------------

def _subsample(a: np.ndarray, target: int = 1 << 20) -> np.ndarray:
    if a.size <= target:
        return a
    if a.ndim >= 2:
        step = int(math.ceil(math.sqrt(a.size / target)))  # a strided view: no copy
        return a[::step, ::step]
    return a.reshape(-1)[:: int(math.ceil(a.size / target))]


def auto_window(arr, percentiles=(0.5, 99.5)) -> tuple[float, float]:
    """(center, width) spanning the given percentiles of the values (a subsample of big images)."""
    a = np.asarray(arr)
    if a.dtype == np.bool_:
        return 0.5, 1.0
    sub = _subsample(a)
    if sub.dtype.kind == "f":
        sub = sub[np.isfinite(sub)]
    if sub.size == 0:
        return 0.5, 1.0
    lo, hi = (float(v) for v in np.percentile(sub, percentiles))
    if hi <= lo:  # e.g. sparse nuclei on black: both percentiles 0; use the full range
        lo, hi = float(sub.min()), float(sub.max())
    if hi <= lo:
        hi = lo + 1.0
    return (lo + hi) / 2.0, hi - lo


def _lut(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    y = (values.astype(np.float64) - lo) * 255.0 / (hi - lo)
    return np.floor(np.clip(y, 0.0, 255.0) + 0.5).astype(np.uint8)


_LUT_INDEX = {
    # dtype -> (values in index order, view dtype used to index)
    "uint8": (lambda: np.arange(256, dtype=np.uint8), np.uint8),
    "int8": (lambda: np.arange(256, dtype=np.uint8).view(np.int8), np.uint8),
    "uint16": (lambda: np.arange(65536, dtype=np.uint16), np.uint16),
    "int16": (lambda: np.arange(65536, dtype=np.uint16).view(np.int16), np.uint16),
}


def _apply_lut(lut: np.ndarray, a: np.ndarray) -> np.ndarray:
    """lut[a] in row bands: one np.take over a whole 8192x8192 image first converts every
    index to int64 (512 MB) and takes 1.6 s; bands of ~64K pixels stay in cache (60 ms)."""
    out = np.empty(a.shape, np.uint8)
    if a.ndim == 0 or a.size == 0:
        out[...] = lut.take(a)
        return out
    row_px = max(1, a.size // max(1, a.shape[0]))
    rows = max(1, (1 << 16) // row_px)
    for y in range(0, a.shape[0], rows):
        lut.take(a[y:y + rows], out=out[y:y + rows])
    return out


def to_uint8(arr, window: Optional[tuple[float, float]] = None,
             percentiles: Optional[tuple[float, float]] = (0.5, 99.5)) -> np.ndarray:
    """Display mapping to uint8 through a window (center, width), else percentiles.

    `percentiles=None` (and no window) maps the dtype's full range (ints; identity for
    uint8) or min..max (floats). 8/16-bit ints go through a lookup table; others through
    float32 maths. Grey or RGB; the input is never modified.
    """
    a = np.asarray(arr)
    if a.dtype == np.bool_:
        return a.view(np.uint8) * np.uint8(255)
    if window is not None:
        c, w = float(window[0]), float(window[1])
        lo, hi = c - w / 2.0, c + w / 2.0
    elif percentiles is None:
        if a.dtype.kind in "ui":
            info = np.iinfo(a.dtype)
            lo, hi = float(info.min), float(info.max)
        else:
            finite = a[np.isfinite(a)] if a.size else a
            lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    else:
        c, w = auto_window(a, percentiles)
        lo, hi = c - w / 2.0, c + w / 2.0
    if not hi > lo:
        # zero width: a threshold at the center
        return np.where(a > lo, np.uint8(255), np.uint8(0))
    spec = _LUT_INDEX.get(a.dtype.name)
    if spec is not None:
        values, view = spec
        lut = _lut(values(), lo, hi)
        return _apply_lut(lut, a.view(view) if a.dtype != view else a)
    scale = 255.0 / (hi - lo)
    if a.dtype in (np.float32, np.float64) and a.ndim in (2, 3):
        # clip first so cv2's |x| cannot fold values below the window back up; NaN -> 0
        t = np.clip(a, a.dtype.type(lo), a.dtype.type(hi))
        return cv2.convertScaleAbs(t, alpha=scale, beta=-lo * scale)
    out = np.empty(a.shape, np.float32)
    np.subtract(a, lo, out=out, casting="unsafe")
    out *= np.float32(scale)
    np.clip(out, 0.0, 255.0, out=out)
    out += np.float32(0.5)
    if a.dtype.kind == "f":
        np.nan_to_num(out, copy=False, nan=0.0)
    return out.astype(np.uint8)


# --- writing ------------------------------------------------------------------------------

def write_png(path, arr) -> None:
    """Write an 8- or 16-bit grey, RGB or RGBA array as PNG, atomically."""
    a = np.asarray(arr)
    if a.dtype not in (np.uint8, np.uint16):
        raise MaskLoopError(f"cannot write {a.dtype} as PNG (uint8 or uint16 only)", path)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim == 3 and a.shape[2] == 3:
        a = cv2.cvtColor(np.ascontiguousarray(a), cv2.COLOR_RGB2BGR)  # cv2 writes BGR
    elif a.ndim == 3 and a.shape[2] == 4:
        a = cv2.cvtColor(np.ascontiguousarray(a), cv2.COLOR_RGBA2BGRA)
    elif a.ndim != 2:
        raise MaskLoopError(f"cannot write an array of shape {a.shape} as PNG", path)
    if a.size == 0:
        raise MaskLoopError("cannot write an empty image", path)
    try:
        ok, buf = cv2.imencode(".png", np.ascontiguousarray(a))
    except cv2.error as e:
        raise MaskLoopError(f"PNG encoding failed ({str(e).strip().splitlines()[-1]})", path) from None
    if not ok:
        raise MaskLoopError("PNG encoding failed", path)
    atomic_write_bytes(path, memoryview(buf).cast("B"))
