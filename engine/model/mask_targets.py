"""Mask-head training targets without full-image float masks.

torchvision's `project_masks_on_boxes` converts every ground-truth mask of an image to
float before RoIAlign samples the M x M target of each positive proposal:
`gt_masks[:, None].to(rois)` is N x H x W x 4 bytes per image (1000 nuclei of a 1024 px
crop: 4 GiB, on the GPU, every step) although each proposal reads only a window around
its own object.

`project_masks_on_boxes` here gives the same targets (up to float rounding, ~1e-6) from
small windows: for each ground-truth object that has positive proposals it cuts the
window those proposals' RoIAlign samples can touch, gathers the windows in one indexing
kernel (objects sorted by window size and cut into chunks of bounded memory) and runs
RoIAlign on the windows with the boxes shifted. The windows keep torchvision's edge
handling: a window stops at the image border only where the image does.

`PackedMasks` holds an image's ground-truth masks cropped to their boxes in one flat
uint8 buffer: the Trainer's targets carry it instead of an N x H x W array, so dense
images cost their objects' pixels, not N full planes, in the data loader, in pinned memory,
in the host-to-GPU copy and on the GPU. The projection reads its windows straight from it.

`lean_mask_targets()` swaps the projection into torchvision for the duration of a `with`
block (the Trainer's forward pass); outside the block torchvision is untouched, so the
plain torchvision baseline in benchmarks/ measures torchvision.
"""
from __future__ import annotations

import contextlib
import threading

import numpy as np
import torch
from torchvision.models.detection import roi_heads as tv_roi_heads
from torchvision.ops import roi_align

# Elements (H x W x objects) converted to float at once: 16 M = 64 MB of float32.
CHUNK_ELEMENTS = 1 << 24

_patch_lock = threading.RLock()


class PackedMasks:
    """Binary masks of one image, each cropped to its box, in one flat uint8 buffer.

    boxes: (N, 4) int64 x0, y0, x1, y1 of each crop; offsets: (N,) int64 start of each crop
    (row-major, x1 - x0 wide) in `data`; size: (height, width) of the image.
    """

    def __init__(self, data: torch.Tensor, boxes: torch.Tensor, offsets: torch.Tensor, size) -> None:
        self.data, self.boxes, self.offsets = data, boxes, offsets
        self.size = (int(size[0]), int(size[1]))

    @classmethod
    def from_crops(cls, crops, height: int, width: int) -> "PackedMasks":
        """crops: (mask (h, w) array, x0, y0) per object, each inside the image."""
        boxes = torch.zeros((len(crops), 4), dtype=torch.int64)
        offsets = torch.zeros((len(crops),), dtype=torch.int64)
        parts, at = [], 0
        for k, (m, x0, y0) in enumerate(crops):
            h, w = m.shape
            boxes[k] = torch.tensor([x0, y0, x0 + w, y0 + h])
            offsets[k] = at
            parts.append(np.ascontiguousarray(m, dtype=np.uint8).reshape(-1))
            at += h * w
        data = torch.from_numpy(np.concatenate(parts)) if parts else torch.zeros((0,), dtype=torch.uint8)
        return cls(data, boxes, offsets, (height, width))

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    @property
    def shape(self) -> tuple[int, int, int]:
        return (len(self), *self.size)

    @property
    def device(self) -> torch.device:
        return self.data.device

    def to(self, device, non_blocking: bool = False) -> "PackedMasks":
        return PackedMasks(self.data.to(device, non_blocking=non_blocking),
                           self.boxes.to(device, non_blocking=non_blocking),
                           self.offsets.to(device, non_blocking=non_blocking), self.size)

    def pin_memory(self) -> "PackedMasks":  # DataLoader(pin_memory=True) calls this
        return PackedMasks(self.data.pin_memory(), self.boxes.pin_memory(), self.offsets.pin_memory(), self.size)

    def windows(self, objects: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor, hm: int, wm: int) -> torch.Tensor:
        """(K, hm, wm) uint8: the masks of `objects` seen through windows at (xs, ys),
        zero outside each object's crop, in one gather."""
        b = self.boxes[objects]
        h, w = b[:, 3] - b[:, 1], b[:, 2] - b[:, 0]
        ly = ys[:, None] + torch.arange(hm, device=ys.device) - b[:, 1:2]   # (K, hm)
        lx = xs[:, None] + torch.arange(wm, device=xs.device) - b[:, 0:1]   # (K, wm)
        inside = ((ly >= 0) & (ly < h[:, None]))[:, :, None] & ((lx >= 0) & (lx < w[:, None]))[:, None, :]
        idx = (self.offsets[objects][:, None, None] + ly.clamp(min=0)[:, :, None] * w[:, None, None]
               + lx.clamp(min=0)[:, None, :])
        if self.data.numel() == 0:
            return torch.zeros(idx.shape, dtype=torch.uint8, device=idx.device)
        return torch.where(inside, self.data[idx.clamp(max=self.data.numel() - 1)], 0).to(torch.uint8)

    def full(self) -> torch.Tensor:
        """The (N, H, W) uint8 masks torchvision's own code expects."""
        out = torch.zeros((len(self), *self.size), dtype=torch.uint8, device=self.device)
        for k, (x0, y0, x1, y1) in enumerate(self.boxes.tolist()):
            o = int(self.offsets[k])
            out[k, y0:y1, x0:x1] = self.data[o:o + (y1 - y0) * (x1 - x0)].view(y1 - y0, x1 - x0)
        return out


def _windows(lo: torch.Tensor, hi: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-object [start, end) along one axis that holds every RoIAlign sample between
    lo and hi plus its bilinear neighbour, clamped to [0, size)."""
    start = (torch.floor(lo) - 1).clamp(0, size - 1)
    end = (torch.floor(hi) + 2).clamp(1, size)
    return start.long(), torch.maximum(end.long(), start.long() + 1)


def project_masks_on_boxes(gt_masks, boxes: torch.Tensor, matched_idxs: torch.Tensor,
                           M: int) -> torch.Tensor:
    """Drop-in for torchvision.models.detection.roi_heads.project_masks_on_boxes; gt_masks
    is an (N, H, W) tensor or PackedMasks."""
    n_rois = boxes.shape[0]
    if n_rois == 0 or gt_masks.shape[0] == 0:
        return boxes.new_zeros((n_rois, M, M))
    packed = isinstance(gt_masks, PackedMasks)
    height, width = gt_masks.shape[-2:]
    matched = matched_idxs.long()
    objects, roi_object = torch.unique(matched, return_inverse=True)
    n_obj = objects.shape[0]
    # RoIAlign (aligned=False) samples inside [x1, x1 + max(x2 - x1, 1)] of each box
    x_hi = torch.maximum(boxes[:, 2], boxes[:, 0] + 1)
    y_hi = torch.maximum(boxes[:, 3], boxes[:, 1] + 1)
    inf = torch.full((n_obj,), float("inf"), dtype=boxes.dtype, device=boxes.device)
    x_lo_o = inf.scatter_reduce(0, roi_object, boxes[:, 0], "amin")
    y_lo_o = inf.scatter_reduce(0, roi_object, boxes[:, 1], "amin")
    x_hi_o = (-inf).scatter_reduce(0, roi_object, x_hi, "amax")
    y_hi_o = (-inf).scatter_reduce(0, roi_object, y_hi, "amax")
    x0, x1 = _windows(x_lo_o, x_hi_o, width)
    y0, y1 = _windows(y_lo_o, y_hi_o, height)
    span_w, span_h = x1 - x0, y1 - y0
    # objects by window size, so that one big rock does not size the windows of small grains
    order = torch.argsort(span_w * span_h)
    spans = torch.stack([span_h[order], span_w[order]], 1).cpu().tolist()  # the one sync
    out = boxes.new_empty((n_rois, M, M))
    start = 0
    while start < n_obj:
        # grow the chunk while count x common window stays in budget (at least one object)
        hm, wm = spans[start]
        stop = start + 1
        while stop < n_obj:
            h, w = max(hm, spans[stop][0]), max(wm, spans[stop][1])
            if (stop + 1 - start) * h * w > CHUNK_ELEMENTS:
                break
            hm, wm, stop = h, w, stop + 1
        chunk = order[start:stop]
        # windows of a common size hm x wm, moved inward where they would leave the image;
        # a moved window still holds the object's samples and keeps interior edges interior
        ys = torch.minimum(y0[chunk], torch.tensor(height - hm, device=y0.device))
        xs = torch.minimum(x0[chunk], torch.tensor(width - wm, device=x0.device))
        if packed:
            crops = gt_masks.windows(objects[chunk], ys, xs, hm, wm)
        else:
            rows = ys[:, None] + torch.arange(hm, device=ys.device)
            cols = xs[:, None] + torch.arange(wm, device=xs.device)
            crops = gt_masks[objects[chunk][:, None, None], rows[:, :, None], cols[:, None, :]]
        # which RoIs belong to this chunk, and where their object's window sits in it
        slot = torch.full((n_obj,), -1, dtype=torch.long, device=boxes.device)
        slot[chunk] = torch.arange(stop - start, device=boxes.device)
        roi_slot = slot[roi_object]
        mine = torch.nonzero(roi_slot >= 0).squeeze(1)
        k = roi_slot[mine]
        shift = torch.stack([xs[k], ys[k], xs[k], ys[k]], 1).to(boxes.dtype)
        rois = torch.cat([k[:, None].to(boxes.dtype), boxes[mine] - shift], 1)
        out[mine] = roi_align(crops[:, None].to(boxes.dtype), rois, (M, M), 1.0)[:, 0]
        start = stop
    return out


@contextlib.contextmanager
def lean_mask_targets():
    """torchvision's Mask R-CNN loss uses the windowed projection inside the block."""
    with _patch_lock:
        original = tv_roi_heads.project_masks_on_boxes
        tv_roi_heads.project_masks_on_boxes = project_masks_on_boxes
        try:
            yield
        finally:
            tv_roi_heads.project_masks_on_boxes = original
