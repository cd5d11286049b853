"""Canvas tools, one module each. A tool is a class with `name`, `label`, `shortcut` and
mouse/key handlers (see base.Tool); CanvasView.register_tool adds more."""
from .base import Tool
from .box_prompt import BoxPromptTool
from .brush import BrushTool
from .eraser import EraserTool
from .magic_wand import MagicWandTool
from .polygon import PolygonTool
from .select import SelectTool
from .split import SplitTool

TOOLS = [SelectTool, PolygonTool, BrushTool, EraserTool, MagicWandTool, SplitTool, BoxPromptTool]

__all__ = ["Tool", "TOOLS", "SelectTool", "PolygonTool", "BrushTool", "EraserTool",
           "MagicWandTool", "SplitTool", "BoxPromptTool"]
