"""The loop (segment → correct → retrain) as part of the main window: gui.loop.Loop."""
from .loop import Loop

__all__ = ["Loop"]
