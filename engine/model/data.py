"""Compatibility names: the training-data API as it was imported before the split.

New code imports from the job modules: engine.model.snapshot (Snapshot, TrainItem,
ImageRef, DataError), engine.model.transforms (Augment and the joint transforms) and
engine.model.dataset (InstanceDataset, collate, epoch batches).
"""
from __future__ import annotations

from .dataset import EpochBatches, InstanceDataset, collate, epoch_batches, to_target  # noqa: F401
from .snapshot import DataError, ImageRef, Snapshot, TrainItem, largest_object, stack_group  # noqa: F401
from .transforms import (Augment, InstanceCrop, apply_augment, crop_instances, hflip_instances,  # noqa: F401
                         rot90_instances, scale_instances, vflip_instances)
