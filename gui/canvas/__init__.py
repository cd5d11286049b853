"""The canvas: image + mask overlay in a QGraphicsView, and its tools (one module each)."""
from .view import CanvasView
from .widget import CanvasWidget

__all__ = ["CanvasView", "CanvasWidget"]
