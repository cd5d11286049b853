"""The windowed mask-target projection gives torchvision's targets from small windows."""
from __future__ import annotations

import pytest
import torch
from torchvision.models.detection import roi_heads as tv_roi_heads

from engine.model import build as B
from engine.model import mask_targets as MT

TV_PROJECT = tv_roi_heads.project_masks_on_boxes


def random_case(seed: int, height=300, width=400, objects=60, rois=200):
    """Random objects (some touching the image border) and jittered proposals matched to
    them, clipped to the image as torchvision's RPN does; a few are degenerate (< 1 px)."""
    g = torch.Generator().manual_seed(seed)
    masks = torch.zeros(objects, height, width, dtype=torch.uint8)
    gt = []
    for i in range(objects):
        x0 = int(torch.randint(-20, width - 5, (1,), generator=g).clamp(min=0))
        y0 = int(torch.randint(-20, height - 5, (1,), generator=g).clamp(min=0))
        x1 = min(width, x0 + int(torch.randint(3, 90, (1,), generator=g)))
        y1 = min(height, y0 + int(torch.randint(3, 90, (1,), generator=g)))
        masks[i, y0:y1, x0:x1] = (torch.rand(y1 - y0, x1 - x0, generator=g) > 0.3).to(torch.uint8)
        gt.append([x0, y0, x1, y1])
    gt = torch.tensor(gt, dtype=torch.float32)
    idx = torch.randint(0, objects, (rois,), generator=g)
    boxes = gt[idx] + (torch.rand(rois, 4, generator=g) - 0.5) * 24
    boxes[:5, 2:] = boxes[:5, :2] + 0.4  # degenerate: RoIAlign stretches them to 1 px
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
    boxes[:, 2:] = torch.maximum(boxes[:, 2:], boxes[:, :2])
    boxes[5] = torch.tensor([0.0, 0.0, width, height])  # the whole image
    return masks, boxes, idx


@pytest.mark.parametrize("chunk", [MT.CHUNK_ELEMENTS, 3000])
@pytest.mark.parametrize("seed", [0, 1])
def test_same_targets_as_torchvision(seed, chunk, monkeypatch):
    monkeypatch.setattr(MT, "CHUNK_ELEMENTS", chunk)  # 3000: one object per chunk, windows differ
    masks, boxes, idx = random_case(seed)
    ref = TV_PROJECT(masks, boxes, idx, 28)
    ours = MT.project_masks_on_boxes(masks, boxes, idx, 28)
    assert ours.shape == ref.shape == (len(boxes), 28, 28) and ours.dtype == ref.dtype
    # coordinates shifted into a window round differently in the last bit: ~1e-5 at 400 px
    assert (ours - ref).abs().max() < 1e-4
    assert ref.abs().sum() > 1000  # the case has real content to disagree on


def test_edge_rows_and_columns_are_sampled_like_torchvision():
    """Objects on every border, with boxes reaching the last row and column."""
    h, w = 64, 80
    masks = torch.zeros(4, h, w, dtype=torch.uint8)
    masks[0, :10, :12] = 1
    masks[1, -9:, -7:] = 1
    masks[2, 20:40, -1:] = 1
    masks[3, -1:, 30:50] = 1
    boxes = torch.tensor([[0, 0, 12, 10], [w - 7.5, h - 9.25, w, h], [w - 1, 20, w, 40], [30, h - 1, 50, h],
                          [w - 0.3, h - 0.3, w, h]], dtype=torch.float32)
    idx = torch.tensor([0, 1, 2, 3, 1])
    ref = TV_PROJECT(masks, boxes, idx, 14)
    assert (MT.project_masks_on_boxes(masks, boxes, idx, 14) - ref).abs().max() < 1e-5


def test_no_rois_or_no_objects():
    masks = torch.zeros(3, 20, 20, dtype=torch.uint8)
    assert MT.project_masks_on_boxes(masks, torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), 28).shape == (0, 28, 28)


def test_training_losses_match_torchvision_and_the_patch_is_scoped():
    torch.manual_seed(0)
    model = B.build_model("r18fpn", 2).train()
    masks, boxes, _ = random_case(3, 160, 192, objects=25, rois=10)
    gt_boxes = []
    for m in masks:
        ys, xs = torch.nonzero(m, as_tuple=True)
        gt_boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    target = {"boxes": torch.tensor(gt_boxes, dtype=torch.float32), "labels": torch.ones(25, dtype=torch.int64),
              "masks": masks}
    image = torch.rand(3, 160, 192)

    def losses():
        torch.manual_seed(1)  # the same proposal sampling in both runs
        return {k: float(v.detach()) for k, v in model([image], [target]).items()}

    ref = losses()
    with MT.lean_mask_targets():
        assert tv_roi_heads.project_masks_on_boxes is MT.project_masks_on_boxes
        ours = losses()
    assert tv_roi_heads.project_masks_on_boxes is TV_PROJECT
    assert ref.keys() == ours.keys()
    for k in ref:
        assert ours[k] == pytest.approx(ref[k], rel=1e-5, abs=1e-6), k


# --- packed masks: the crops only, through the data loader and the projection ----------------

def packed_case(seed=0):
    masks, boxes, idx = random_case(seed)
    crops = []
    for m in masks.numpy():
        ys, xs = m.any(1).nonzero()[0], m.any(0).nonzero()[0]
        crops.append((m[ys[0]:ys[-1] + 1, xs[0]:xs[-1] + 1].astype(bool), int(xs[0]), int(ys[0])))
    return masks, MT.PackedMasks.from_crops(crops, *masks.shape[1:]), boxes, idx


def test_packed_masks_hold_the_same_masks_in_their_crops_only():
    masks, packed, _, _ = packed_case()
    assert packed.shape == tuple(masks.shape) and len(packed) == masks.shape[0]
    assert torch.equal(packed.full(), masks)
    assert packed.data.numel() < masks.numel() / 10  # crops, not N full planes
    moved = packed.to("cpu", non_blocking=True)
    assert torch.equal(moved.full(), masks)


def test_packed_masks_give_the_same_targets(monkeypatch):
    masks, packed, boxes, idx = packed_case(1)
    ref = MT.project_masks_on_boxes(masks, boxes, idx, 28)
    assert torch.equal(MT.project_masks_on_boxes(packed, boxes, idx, 28), ref)  # the same windows
    monkeypatch.setattr(MT, "CHUNK_ELEMENTS", 3000)
    assert torch.equal(MT.project_masks_on_boxes(packed, boxes, idx, 28),
                       MT.project_masks_on_boxes(masks, boxes, idx, 28))
    empty = MT.PackedMasks.from_crops([], 20, 30)
    assert empty.shape == (0, 20, 30) and empty.full().shape == (0, 20, 30)


def test_trainer_targets_are_packed_and_survive_worker_processes_and_pinning(tmp_path):
    from engine.demo import synthetic_project
    from engine.model.data import InstanceDataset, Snapshot, collate
    from engine.model.normalize import percentile_policy
    from engine.project import Project
    synthetic_project(tmp_path / "p", "nuclei", 2, 96)
    snap = Snapshot.from_project(Project.open(tmp_path / "p"))
    full = InstanceDataset(snap.items, percentile_policy())
    packed = InstanceDataset(snap.items, percentile_policy(), packed_masks=True)
    loader = torch.utils.data.DataLoader(packed, batch_size=2, collate_fn=collate, num_workers=1,
                                         pin_memory=torch.cuda.is_available())
    (_, targets), = list(loader)
    for k, t in enumerate(targets):
        assert isinstance(t["masks"], MT.PackedMasks)
        assert torch.equal(t["masks"].full(), full[k][1]["masks"])


def test_training_losses_with_packed_targets_equal_torchvision():
    torch.manual_seed(0)
    model = B.build_model("r18fpn", 2).train()
    masks, packed, _, _ = packed_case(2)
    gt = packed.boxes.float()
    image = torch.rand(3, *masks.shape[1:])

    def losses(m):
        torch.manual_seed(1)
        t = {"boxes": gt, "labels": torch.ones(len(gt), dtype=torch.int64), "masks": m}
        return {k: float(v.detach()) for k, v in model([image], [t]).items()}

    ref = losses(masks)
    with MT.lean_mask_targets():
        ours = losses(packed)
    for k in ref:
        assert ours[k] == pytest.approx(ref[k], rel=1e-5, abs=1e-6), k
