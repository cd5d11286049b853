"""Chunked RPN anchor matching gives torchvision's matches exactly."""
from __future__ import annotations

import pytest
import torch
from torchvision.models.detection import _utils as det_utils
from torchvision.ops import box_iou

from engine.model import anchor_matching as AM
from engine.model import build as B


def boxes(g, n, size=512, max_wh=80):
    xy = torch.rand(n, 2, generator=g) * size
    wh = torch.rand(n, 2, generator=g) * max_wh + 2
    return torch.cat([xy, xy + wh], 1)


@pytest.mark.parametrize("low_quality", [True, False])
@pytest.mark.parametrize("chunk", [AM.CHUNK_ELEMENTS, 997])
def test_same_matches_as_torchvision(low_quality, chunk, monkeypatch):
    monkeypatch.setattr(AM, "CHUNK_ELEMENTS", chunk)  # 997: ~20 anchors a chunk, hundreds of chunks
    g = torch.Generator().manual_seed(0)
    gt = boxes(g, 50)
    anchors = torch.cat([boxes(g, 4000), gt[:5], gt[:5]])  # exact copies: ties for the best
    ref = det_utils.Matcher(0.7, 0.3, allow_low_quality_matches=low_quality)(box_iou(gt, anchors))
    ours = AM.ChunkedMatcher(0.7, 0.3, allow_low_quality_matches=low_quality)(AM.box_pairs(gt, anchors))
    assert torch.equal(ours, ref)
    assert (ref >= 0).sum() >= 10 and (ref == -1).any() and (ref == -2).any()  # all three kinds occur


def test_a_plain_matrix_still_works_and_empty_inputs_fail_like_torchvision():
    m = AM.ChunkedMatcher(0.5, 0.5)
    q = torch.tensor([[0.9, 0.1], [0.2, 0.6]])
    assert torch.equal(m(q), det_utils.Matcher(0.5, 0.5)(q))
    with pytest.raises(ValueError, match="No ground-truth"):
        m(AM.box_pairs(torch.zeros(0, 4), torch.ones(3, 4)))


def test_training_losses_unchanged():
    torch.manual_seed(0)
    model = B.build_model("r18fpn", 2).train()
    g = torch.Generator().manual_seed(1)
    gt = boxes(g, 30, size=150, max_wh=40).clamp(0, 190)
    masks = torch.zeros(30, 192, 192, dtype=torch.uint8)
    for k, (x0, y0, x1, y1) in enumerate(gt.round().int().tolist()):
        masks[k, y0:y1, x0:x1] = 1
    target = {"boxes": gt, "labels": torch.ones(30, dtype=torch.int64), "masks": masks}
    image = torch.rand(3, 192, 192, generator=g)

    def losses():
        torch.manual_seed(2)
        return {k: float(v.detach()) for k, v in model([image], [target]).items()}

    ref = losses()
    AM.use_chunked_anchor_matching(model)
    AM.use_chunked_anchor_matching(model)  # idempotent
    assert isinstance(model.rpn.proposal_matcher, AM.ChunkedMatcher)
    assert losses() == ref
