"""The box and mask heads as prompts run them, and the detections whose masks the
feature cache keeps.

- PromptHeads: RoIAlign + the model's box head and box predictor, or its mask head and
  mask predictor, on a few boxes. On a CPU that computes bf16 in hardware
  (device.cpu_native_bf16) and a predictor that runs fp32, the heads run from a bf16
  (channels-last) copy of their weights: oneDNN's bf16 convolutions and matrix products
  take about half the fp32 time per box here (docs/benchmarks.md, prompt latency); the
  masks stay within a stated IoU of fp32's (tests/engine/test_model_prompts.py). Box
  decoding stays fp32. The copy is made once per predictor; a copy rather than autocast,
  so that the weights are not cast again on every call and the predictor's own model is
  left as it is. A predictor that already runs reduced precision (amp) keeps its heads.
- top_detections: what `predict` would detect in a window from the box head's cached
  outputs (class-wise NMS, scores down to CLICK_MIN_SCORE, the best CACHED_DETECTIONS), so
  the cache can hold their masks and a click inside one is a lookup.
"""
from __future__ import annotations

import copy
import math
from typing import Optional

import numpy as np
import torch
from torch import nn
from torchvision.ops import boxes as box_ops
from torchvision.ops import roi_align
from torchvision.ops.poolers import LevelMapper

from .device import cpu_native_bf16

CACHED_DETECTIONS = 100     # detections whose masks are computed when an item is cached
CLICK_MIN_SCORE = 0.05      # torchvision's default box score threshold: "any score" but noise
MASK_CHUNK = 32             # RoIs per mask-head call while caching (bounds the memory)


def bf16_heads_pay(predictor) -> bool:
    """True where the bf16 copy of the heads is faster than the fp32 heads: a CPU that
    computes bf16 natively (the caller checks that the predictor runs fp32)."""
    dev = getattr(predictor, "device", torch.device("cpu"))
    return torch.device(dev).type == "cpu" and cpu_native_bf16()


class PromptHeads:
    """The model's box and mask heads on boxes in transformed coordinates."""

    def __init__(self, predictor, bf16: Optional[bool] = None):
        rh = predictor.model.roi_heads
        self.box_pool, self.mask_pool = rh.box_roi_pool, rh.mask_roi_pool
        box_net = nn.Sequential(rh.box_head, rh.box_predictor)
        mask_net = nn.Sequential(rh.mask_head, rh.mask_predictor)
        # a predictor that runs reduced precision already wraps its heads in Autocast (fp32
        # outputs): a bf16 copy of those would feed fp32 into bf16 layers, so it keeps them
        runs_fp32 = getattr(predictor, "amp_dtype", None) is None
        self.bf16 = runs_fp32 and (bf16_heads_pay(predictor) if bf16 is None else bool(bf16))
        if self.bf16:
            box_net, mask_net = (copy.deepcopy(n).to(torch.bfloat16).to(memory_format=torch.channels_last)
                                 for n in (box_net, mask_net))
        self.box_net, self.mask_net = box_net.eval(), mask_net.eval()

    def pool(self, pooler, features, boxes: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
        return pool_few(pooler, features, boxes, image_size)

    def _input(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(torch.bfloat16, memory_format=torch.channels_last) if self.bf16 else x

    def box(self, features, boxes: torch.Tensor, image_size: tuple[int, int]
            ) -> tuple[torch.Tensor, torch.Tensor]:
        """fp32 (class logits (N, C), box regression (N, 4C))."""
        with torch.inference_mode():
            logits, reg = self.box_net(self._input(self.pool(self.box_pool, features, boxes, image_size)))
            return logits.float(), reg.float()

    def mask(self, features, boxes: torch.Tensor, classes: torch.Tensor,
             image_size: tuple[int, int]) -> np.ndarray:
        """Mask probabilities (N, M, M) of the given classes."""
        with torch.inference_mode():
            logits = self.mask_net(self._input(self.pool(self.mask_pool, features, boxes, image_size)))
            picked = logits[torch.arange(len(boxes)), classes].float()
            return picked.sigmoid().cpu().numpy()


def top_detections(class_probs: torch.Tensor, refined: torch.Tensor, nms_thresh: float, limit: int = CACHED_DETECTIONS, min_score: float = CLICK_MIN_SCORE
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(boxes (K, 4), classes (K,), scores (K,), proposal index (K,)), best score first:
    torchvision's postprocess_detections (per-class boxes, small ones dropped, class-wise
    NMS) on cached probabilities (boxes already clipped), a low score floor, at most `limit`."""
    n, c = class_probs.shape
    scores = class_probs[:, 1:].reshape(-1)
    boxes = refined[:, 1:].reshape(-1, 4)
    classes = torch.arange(1, c, device=scores.device).repeat(n)
    proposal = torch.arange(n, device=scores.device).repeat_interleave(c - 1)
    keep = torch.nonzero(scores > min_score)[:, 0]
    keep = keep[box_ops.remove_small_boxes(boxes[keep], 1e-2)]
    keep = keep[box_ops.batched_nms(boxes[keep], scores[keep], classes[keep], nms_thresh)][:limit]
    return boxes[keep], classes[keep], scores[keep], proposal[keep]


def pool_few(pooler, features, boxes: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
    """`pooler(features, [boxes], [image_size])` of torchvision's MultiScaleRoIAlign, with
    RoIAlign run on the levels the boxes map to only (a prompt's one or two boxes use one
    level; the pooler visits every level and sets up its scales on each call)."""
    feats = [v for k, v in features.items() if k in pooler.featmap_names]
    # the pooler's own rules: power-of-two scales from the height, FPN level by box size
    scales = [2.0 ** round(math.log2(f.shape[-2] / image_size[0])) for f in feats]
    mapper = LevelMapper(int(-math.log2(scales[0])), int(-math.log2(scales[-1])),
                         canonical_scale=pooler.canonical_scale, canonical_level=pooler.canonical_level)
    levels = mapper([boxes]) if len(feats) > 1 else torch.zeros(len(boxes), dtype=torch.long)
    rois = torch.cat([torch.zeros_like(boxes[:, :1]), boxes], 1)
    out = feats[0].new_empty((len(boxes), feats[0].shape[1]) + tuple(pooler.output_size))
    for lv in torch.unique(levels).tolist():
        idx = torch.nonzero(levels == lv)[:, 0]
        out[idx] = roi_align(feats[lv], rois[idx], pooler.output_size, spatial_scale=scales[lv],
                             sampling_ratio=pooler.sampling_ratio).to(out.dtype)
    return out
