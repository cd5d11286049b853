"""The mask head as prompts run it, and the detections whose masks the feature cache keeps.

- MaskHead: RoIAlign + the model's mask head and mask predictor on a few boxes. On a CPU
  that computes bf16 in hardware (device.cpu_native_bf16) and a predictor that runs fp32,
  the head and predictor run from a bf16, channels-last copy of their weights (oneDNN's
  bf16 convolutions): about half the fp32 time per box here (docs/benchmarks.md, prompt
  latency), the mask within a stated IoU of fp32's (tests/engine/test_model_prompts.py).
  The copy is made once per predictor; a copy rather than autocast, so that the weights
  are not cast again on every call and the predictor's own model is left as it is.
  A predictor that already runs reduced precision (amp) keeps its own heads.
- top_detections: what `predict` would detect in a window from the box head's cached
  outputs (class-wise NMS, scores down to CLICK_MIN_SCORE, the best CACHED_DETECTIONS), so
  the cache can hold their masks and a click inside one is a lookup.
"""
from __future__ import annotations

import copy
from typing import Optional

import numpy as np
import torch
from torch import nn
from torchvision.ops import boxes as box_ops

from .device import cpu_native_bf16

CACHED_DETECTIONS = 100     # detections whose masks are computed when an item is cached
CLICK_MIN_SCORE = 0.05      # torchvision's default box score threshold: "any score" but noise
MASK_CHUNK = 32             # RoIs per mask-head call while caching (bounds the memory)


def bf16_heads_pay(predictor) -> bool:
    """True where the bf16 copy of the mask head is faster than what the predictor runs."""
    dev = getattr(predictor, "device", torch.device("cpu"))
    return (torch.device(dev).type == "cpu" and getattr(predictor, "amp_dtype", None) is None
            and cpu_native_bf16())


class MaskHead:
    """Mask probabilities (N, M, M) for boxes (transformed coordinates) and their classes."""

    def __init__(self, predictor, bf16: Optional[bool] = None):
        rh = predictor.model.roi_heads
        self.pool = rh.mask_roi_pool
        net = nn.Sequential(rh.mask_head, rh.mask_predictor)
        self.bf16 = bf16_heads_pay(predictor) if bf16 is None else bool(bf16)
        if self.bf16:
            net = copy.deepcopy(net).to(torch.bfloat16).to(memory_format=torch.channels_last)
        self.net = net.eval()

    def __call__(self, features, boxes: torch.Tensor, classes: torch.Tensor,
                 image_size: tuple[int, int]) -> np.ndarray:
        with torch.inference_mode():
            x = self.pool(features, [boxes], [image_size])
            if self.bf16:
                x = x.to(torch.bfloat16, memory_format=torch.channels_last)
            logits = self.net(x)
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
