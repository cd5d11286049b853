"""Compatibility names: the inference API as it was imported before the split.

New code imports from the job modules: engine.model.predictor (Predictor, paste_in_box),
engine.model.tiling (tiles and seams) and engine.model.device (devices, autocast, fusion).
"""
from __future__ import annotations

from .device import Autocast, amp_dtype, apply_autocast, fuse_conv_bn, resolve_device  # noqa: F401
from .predictor import DEFAULT_TILE, Predictor, paste_in_box  # noqa: F401
from .tiling import merge_tiles, tile_grid, tile_starts  # noqa: F401
