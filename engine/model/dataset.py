"""The training dataset and its batches.

`InstanceDataset` yields (image (3, H, W) float32, target {"boxes", "labels", "masks"})
with the model's normalisation policy (engine.model.normalize) applied exactly as at
inference, then the augmentations of engine.model.transforms. Randomness comes from
(seed, epoch, index) only, so a sample is the same in any worker process and after a
resume. The final target holds masks as an (N, H, W) array for torchvision's own code,
or, for the Trainer (packed_masks=True), still cropped, as PackedMasks
(engine.model.mask_targets). `epoch_batches` / `EpochBatches`: the reproducible,
rank-aware batch order of an epoch.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np
import torch

from ..errors import ImageReadError, MaskLoopError
from .mask_targets import PackedMasks
from .normalize import intensity_bounds, normalize, range_policy, validate_policy
from .snapshot import DataError, TrainItem
from .transforms import Augment, InstanceCrop, apply_augment


# --------------------------------------------------------------------------------------
# the dataset
# --------------------------------------------------------------------------------------

def to_target(insts: list[InstanceCrop], height: int, width: int, *, packed: bool = False) -> dict:
    """torchvision target: boxes (N, 4) float32 xyxy, labels (N,) int64, masks (N, H, W)
    uint8, or with packed=True masks as PackedMasks (the crops only; the Trainer's
    windowed mask targets read them, torchvision's own code cannot)."""
    n = len(insts)
    boxes = torch.zeros((n, 4), dtype=torch.float32)
    labels = torch.zeros((n,), dtype=torch.int64)
    crops = []
    for k, it in enumerate(insts):
        m = it.mask
        rows = np.flatnonzero(m.any(axis=1))
        cols = np.flatnonzero(m.any(axis=0))
        r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
        crops.append((m[r0:r1, c0:c1], it.x0 + c0, it.y0 + r0))
        boxes[k] = torch.tensor([it.x0 + c0, it.y0 + r0, it.x0 + c1, it.y0 + r1], dtype=torch.float32)
        labels[k] = it.cls
    if packed:
        masks = PackedMasks.from_crops(crops, height, width)
    else:
        masks = torch.zeros((n, height, width), dtype=torch.uint8)
        mv = masks.numpy()
        for k, (m, x0, y0) in enumerate(crops):
            mv[k, y0:y0 + m.shape[0], x0:x0 + m.shape[1]] = m
    return {"boxes": boxes, "labels": labels, "masks": masks}


class InstanceDataset(torch.utils.data.Dataset):
    """(image tensor (3, H, W) float32, target dict) per training item.

    The policy is the model's normalisation (the same function as at inference).
    Raw images are cached in memory up to `cache_bytes` (per process).
    """

    def __init__(self, items: Sequence[TrainItem], policy: dict, augment: Optional[Augment] = None, *,
                 seed: int = 0, cache_bytes: int = 1 << 30, packed_masks: bool = False):
        self.items = list(items)
        self.policy = validate_policy(policy)
        self.augment = augment if augment is not None else Augment.none()
        self.seed = int(seed)
        self.epoch = 0
        self.cache_bytes = int(cache_bytes)
        self.packed_masks = bool(packed_masks)  # targets' masks as PackedMasks (the Trainer's)
        self._cache: dict[int, tuple[np.ndarray, tuple[float, float]]] = {}
        self._cached = 0

    def __len__(self) -> int:
        return len(self.items)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def raw(self, idx: int) -> tuple[np.ndarray, tuple[float, float]]:
        """(raw pixels, (lo, hi) of the normalisation) of item idx, cached."""
        hit = self._cache.get(idx)
        if hit is not None:
            return hit
        it = self.items[idx]
        try:
            img = it.ref.load()
        except MaskLoopError:
            raise
        except Exception as e:  # a decoder's own exception type: name the file
            raise ImageReadError(f"cannot read training image ({e})", it.ref.describe()) from None
        if tuple(img.shape[:2]) != (it.height, it.width):
            raise DataError(f"image is {img.shape[1]}x{img.shape[0]} but its annotation is "
                            f"{it.width}x{it.height}", it.ref.describe(), it.key)
        if img.dtype.kind == "f" and not np.isfinite(img).any():
            raise DataError("image has no finite pixel values", it.ref.describe(), it.key)
        bounds = intensity_bounds(img, self.policy)
        if self._cached + img.nbytes <= self.cache_bytes:
            self._cache[idx] = (img, bounds)
            self._cached += img.nbytes
        return img, bounds

    def image(self, idx: int) -> np.ndarray:
        """The normalised (H, W, 3) float32 image, exactly as inference sees it."""
        img, (lo, hi) = self.raw(idx)
        if self.policy["kind"] == "percentile":
            if not hi > lo:
                hi = lo + 1.0
            return normalize(img, range_policy(lo, hi))
        return normalize(img, self.policy)

    def rng(self, idx: int, epoch: Optional[int] = None) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch if epoch is None else int(epoch), int(idx)])

    def __getitem__(self, key):
        """key: an index (augmented for the current epoch) or an (epoch, index) pair, which
        is what EpochBatches yields, so persistent worker processes need no epoch update."""
        if isinstance(key, tuple):
            epoch, idx = int(key[0]), int(key[1])
        else:
            epoch, idx = self.epoch, int(key)
        it = self.items[idx]
        image = self.image(idx)
        insts = [InstanceCrop(inst.mask, inst.x0, inst.y0, c) for inst, c in zip(it.instances, it.classes)]
        image, insts = apply_augment(image, insts, self.augment, self.rng(idx, epoch))
        H, W = image.shape[:2]
        target = to_target(insts, H, W, packed=self.packed_masks)
        target["image_id"] = torch.tensor(idx, dtype=torch.int64)
        x = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
        return x, target


def collate(batch):
    """Lists of images and targets (torchvision detection models take lists)."""
    return [b[0] for b in batch], [b[1] for b in batch]


class EpochBatches:
    """A batch sampler whose batches are set per epoch (set()), yielding (epoch, index)
    pairs; one DataLoader with persistent workers serves the whole run."""

    def __init__(self) -> None:
        self.batches: list[list] = []

    def set(self, batches: list[list[int]], epoch: int) -> None:
        self.batches = [[(int(epoch), int(i)) for i in b] for b in batches]

    def __iter__(self):
        return iter(list(self.batches))

    def __len__(self) -> int:
        return len(self.batches)


def epoch_batches(n: int, batch_size: int, epoch: int, seed: int, *, shuffle: bool = True,
                  rank: int = 0, world: int = 1) -> list[list[int]]:
    """The batches of one epoch for one rank: a seeded permutation of range(n) (the same on
    every rank), padded to a multiple of `world` and dealt out like DistributedSampler,
    then cut into batches. Every rank gets the same number of batches."""
    if n <= 0:
        return []
    if shuffle:
        g = torch.Generator()
        g.manual_seed(int(seed) * 100003 + int(epoch))
        order = torch.randperm(n, generator=g).tolist()
    else:
        order = list(range(n))
    if world > 1:
        total = int(math.ceil(n / world)) * world
        order = (order * (total // n + 1))[:total]
        order = order[rank:total:world]
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
