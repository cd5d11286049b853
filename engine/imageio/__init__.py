"""Image I/O for CT and microscopy: files, TIFF stacks and DICOM series -> raw arrays.

`probe(path)` describes what a file or folder holds as `Source`s, reading headers only.
`read_slice(source, i)` decodes exactly one slice (one TIFF page, one DICOM file or frame).
Raw values are kept (uint8/uint16/int16/float32, ...); DICOM is rescaled (HU for CT). Display
goes through `to_uint8` (window/level or percentiles), which never changes the data.

Every failure a user can cause raises ImageReadError naming the file (and slice): cv2,
tifffile and pydicom errors never escape, and truncated files are detected rather than
padded with zeros.

Nothing here imports Qt or torch; pydicom (slow to import) is imported on first use.

Modules: source (Source), sniff (type from content), plain (PNG/JPEG/BMP), tiff, dicom_header
and dicom_pixeldata (header facts, frame-count checks), dicom (one file), dicom_series
(grouping, order), geometry_from (VoxelGeometry from headers), probe, read, display
(window/level), describe (mm/µm text).
"""
from .describe import describe_source, format_length, format_spacing
from .display import WINDOW_PRESETS, auto_window, to_uint8
from .plain import write_png
from .probe import probe, probe_paths
from .read import read_image, read_slice
from .sniff import IMAGE_SUFFIXES
from .source import KINDS, Source

__all__ = [
    "Source", "probe", "probe_paths", "read_slice", "read_image", "to_uint8", "auto_window",
    "WINDOW_PRESETS", "write_png", "KINDS", "IMAGE_SUFFIXES",
    "describe_source", "format_length", "format_spacing",
]
