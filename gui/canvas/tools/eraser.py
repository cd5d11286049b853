"""Eraser: a brush that removes pixels from the selected instances, or, with nothing
selected, from every visible instance under it. Instances erased to nothing are deleted."""
from __future__ import annotations

from .brush import BrushTool


class EraserTool(BrushTool):
    name = "eraser"
    label = "Eraser"
    tip = "Erase from the selected instances, or from all; [ and ] change the size"
    erase = True
