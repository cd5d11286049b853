"""Dock panels: image list, labels, instances, window/level (model versions come with the workflow)."""
from .images import ImagesPanel
from .instances import InstancesPanel
from .labels import LabelsPanel
from .window_level import WindowLevelPanel

__all__ = ["ImagesPanel", "InstancesPanel", "LabelsPanel", "WindowLevelPanel"]
