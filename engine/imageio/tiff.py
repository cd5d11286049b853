"""TIFF stacks through tifffile: headers only for probing, one page per read."""
from __future__ import annotations

import logging
import mmap
import re
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import tifffile

from ..errors import ImageReadError, MaskLoopError
from .sniff import file_size
from .geometry_from import tiff_geometry
from .source import Source


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
def tiff_guard(p: Path, field: Optional[str] = None) -> Iterator[None]:
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


def tiff_layout(page, p: Path) -> tuple[int, int, int, str]:
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


def check_page_extent(page, size: int, p: Path, field: Optional[str] = None) -> None:
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


def probe_tiff(p: Path) -> Source:
    size = file_size(p)
    with tiff_guard(p):
        with tifffile.TiffFile(p) as tif:
            if not tif.series or len(tif.series[0]) == 0:
                raise ImageReadError("TIFF contains no images", p)
            s = tif.series[0]
            n = _n_slices(s)
            h, w, ch, dtype = tiff_layout(s.keyframe, p)
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
                check_page_extent(last, size, p)
            geometry = _geometry(tif, s, n)
    return Source("stack" if n > 1 else "image", str(p), (), n, h, w, dtype, ch, "", p.stem,
                  geometry=geometry)


def _geometry(tif, series, n: int):
    # A scale is a bonus: odd resolution tags never make an image unreadable.
    try:
        return tiff_geometry(series.keyframe, tif.imagej_metadata, n)
    except (ValueError, TypeError, KeyError, AttributeError):
        return None


# A page at least this big may be memory-mapped (read_slice(mapped=True)): below it an
# eager read costs little and holds no mapping of the file.
MAP_MIN_BYTES = 32 << 20


def read_tiff(p: Path, index: int, n_expected: Optional[int], field: Optional[str],
              mapped: bool = False) -> np.ndarray:
    size = file_size(p)
    with tiff_guard(p, field):
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
                check_page_extent(page, size, p, field)
                if mapped:
                    view = map_page(p, page, tif.byteorder)
                    if view is not None:
                        return view
                arr = decode_page(p, page)
    return normalise_tiff(arr.reshape(page.shaped), p)


def map_page(p: Path, page, byteorder: str) -> Optional[np.ndarray]:
    """A large page stored as read_slice returns it (uncompressed, contiguous, native byte
    order, 1 or 3 interleaved samples of a kept dtype) as a read-only view of the file,
    mapped into memory: nothing is read until used, and then only the pages of the file
    that are touched. None when the page is not such a page or the file cannot be mapped;
    the caller then decodes it. The extent was checked against the file size."""
    sep, depth, h, w, contig = page.shaped
    if page.nbytes < MAP_MIN_BYTES or sep != 1 or depth != 1 or contig not in (1, 3):
        return None
    if not page.is_memmappable or page.dtype is None:
        return None
    dt = np.dtype(page.dtype).newbyteorder(byteorder)
    if _out_dtype(dt) != dt:  # big-endian, bool, float16/64: converted when read
        return None
    off, nbytes = int(page.dataoffsets[0]), int(page.nbytes)
    start = off - off % mmap.ALLOCATIONGRANULARITY  # map only this page's bytes
    try:
        with open(p, "rb") as fh:
            mm = mmap.mmap(fh.fileno(), off + nbytes - start, access=mmap.ACCESS_READ, offset=start)
    except (OSError, ValueError):  # e.g. a file system without mmap: read it instead
        return None
    arr = np.frombuffer(mm, dt, count=h * w * contig, offset=off - start)  # keeps mm alive
    return arr.reshape((h, w) if contig == 1 else (h, w, 3))


def decode_page(p: Path, page) -> np.ndarray:
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


def normalise_tiff(a: np.ndarray, p: Path) -> np.ndarray:
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


def read_tiff_first(p: Path) -> np.ndarray:
    """First page of series 0, whatever the page count."""
    size = file_size(p)
    with tiff_guard(p):
        with tifffile.TiffFile(p) as tif:
            if not tif.series or len(tif.series[0]) == 0:
                raise ImageReadError("TIFF contains no images", p)
            page = tif.series[0][0]
            tiff_layout(page, p)
            check_page_extent(page, size, p)
            arr = decode_page(p, page)
    return normalise_tiff(arr.reshape(page.shaped), p)
