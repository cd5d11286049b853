"""RPN anchor matching in column chunks, for images with hundreds of objects.

In training, torchvision's RPN builds the IoU matrix of every ground-truth box against
every anchor of the image (`box_iou(gt, anchors)`, then `Matcher`): N x A floats plus
box_iou's N x A x 2 temporaries. A 1024 px crop has about 261 000 anchors; with 500 nuclei
that is several GB at once, the peak of the whole training step.

`ChunkedMatcher` gives the same matches from the same IoU values, computed for a chunk of
anchors at a time (N x chunk <= CHUNK_ELEMENTS): a first pass finds each anchor's best
ground truth and each ground truth's best IoU, a second pass grants torchvision's
"low-quality" matches (anchors whose IoU equals their ground truth's best). Every IoU is
computed by the same box_iou on the same boxes, so the result is identical, not close.

`use_chunked_anchor_matching(model)` installs it in a built Mask R-CNN's RPN (no
parameters change, so checkpoints are unaffected).
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor
from torchvision.models.detection import _utils as det_utils
from torchvision.ops import box_iou

# Elements of one IoU chunk: 4 M floats = 16 MB (box_iou's temporaries are 2-3x that).
CHUNK_ELEMENTS = 1 << 22


class BoxPairs(NamedTuple):
    """What the RPN's `box_similarity` returns instead of the full IoU matrix."""
    gt: Tensor       # (N, 4)
    anchors: Tensor  # (A, 4)


def box_pairs(gt: Tensor, anchors: Tensor) -> BoxPairs:
    return BoxPairs(gt, anchors)


class ChunkedMatcher(det_utils.Matcher):
    """torchvision's Matcher, given BoxPairs instead of a match-quality matrix."""

    def __call__(self, quality) -> Tensor:
        if not isinstance(quality, BoxPairs):
            return super().__call__(quality)
        gt, anchors = quality
        if gt.shape[0] == 0:
            raise ValueError("No ground-truth boxes available for one of the images during training")
        if anchors.shape[0] == 0:
            raise ValueError("No proposal boxes available for one of the images during training")
        step = max(1, CHUNK_ELEMENTS // gt.shape[0])
        spans = [(s, min(s + step, anchors.shape[0])) for s in range(0, anchors.shape[0], step)]
        matched_vals = torch.empty(anchors.shape[0], dtype=torch.float32, device=anchors.device)
        matches = torch.empty(anchors.shape[0], dtype=torch.long, device=anchors.device)
        best_of_gt = None
        for s, e in spans:
            iou = box_iou(gt, anchors[s:e])
            v, m = iou.max(dim=0)
            matched_vals[s:e], matches[s:e] = v, m
            if self.allow_low_quality_matches:
                b = iou.max(dim=1).values
                best_of_gt = b if best_of_gt is None else torch.maximum(best_of_gt, b)
        all_matches = matches.clone() if self.allow_low_quality_matches else None
        below_low_threshold = matched_vals < self.low_threshold
        between_thresholds = (matched_vals >= self.low_threshold) & (matched_vals < self.high_threshold)
        matches[below_low_threshold] = self.BELOW_LOW_THRESHOLD
        matches[between_thresholds] = self.BETWEEN_THRESHOLDS
        if all_matches is not None:
            for s, e in spans:
                hit = (box_iou(gt, anchors[s:e]) == best_of_gt[:, None]).any(dim=0)
                update = torch.nonzero(hit).squeeze(1) + s
                matches[update] = all_matches[update]
        return matches


def use_chunked_anchor_matching(model) -> None:
    """Make a built torchvision Mask R-CNN's RPN match anchors in chunks."""
    rpn = getattr(model, "module", model).rpn
    old = rpn.proposal_matcher
    if isinstance(old, ChunkedMatcher):
        return
    rpn.proposal_matcher = ChunkedMatcher(old.high_threshold, old.low_threshold,
                                          allow_low_quality_matches=old.allow_low_quality_matches)
    rpn.box_similarity = box_pairs
