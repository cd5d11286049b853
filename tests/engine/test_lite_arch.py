"""r18fpn_lite, the CPU default: a narrow pyramid and light heads on a ResNet-18 body
(docs/benchmarks.md, issue 10: about 5x the training steps of r18fpn per CPU second)."""
from __future__ import annotations

import pytest
import torch
import torchvision
from torchvision.ops.misc import FrozenBatchNorm2d

from engine.model import build as B
from engine.model import weights as W
from engine.model.architectures import LITE_FPN_CHANNELS, count_parameters
from engine.model.config import TrainConfig, cpu_crop, resolve_config
from engine.model.normalize import percentile_policy


def test_lite_is_narrow_where_the_cpu_time_went():
    lite, full = B.build_model("r18fpn_lite", 3), B.build_model("r18fpn", 3)
    assert lite.backbone.out_channels == LITE_FPN_CHANNELS < full.backbone.out_channels == 256
    assert all(b[0].out_channels == LITE_FPN_CHANNELS for b in lite.backbone.fpn.layer_blocks)
    assert len(lite.rpn.head.conv) == 1  # one 3x3 conv in the RPN head (r18fpn: one too; v2: two)
    # the same ResNet-18 body, so ImageNet backbone weights still fit
    assert lite.backbone.body.layer4[1].conv2.weight.shape == full.backbone.body.layer4[1].conv2.weight.shape
    assert count_parameters(lite) < 0.5 * count_parameters(full)


def test_lite_checkpoint_round_trip_rebuilds_the_same_model(tmp_path):
    torch.manual_seed(0)
    m = B.build_model("r18fpn_lite", 2, detections_per_img=50)
    m.eval()
    path = B.save_checkpoint(tmp_path / "model.pt", m, label_names=["nucleus"], normalization=percentile_policy())
    m2 = B.model_from_checkpoint(B.load_checkpoint(path), expected_labels=["nucleus"])
    img = torch.rand(3, 96, 128)
    with torch.no_grad():
        a, b = m([img])[0], m2([img])[0]
    assert torch.equal(a["boxes"], b["boxes"]) and torch.equal(a["scores"], b["scores"])


def test_lite_starts_from_a_cached_imagenet_backbone(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setattr(W, "download", lambda *a, **k: pytest.fail("must not download"))
    torch.manual_seed(2)
    state = torchvision.models.resnet18(weights=None).state_dict()
    target = B.weights_file(torchvision.models.ResNet18_Weights.IMAGENET1K_V1)
    target.parent.mkdir(parents=True)
    torch.save(state, target)
    m = B.build_model("r18fpn_lite", 2, base="imagenet")
    assert torch.equal(m.backbone.body.layer3[0].conv1.weight, state["layer3.0.conv1.weight"])
    assert any(isinstance(x, FrozenBatchNorm2d) for x in m.modules())
    assert not m.backbone.body.conv1.weight.requires_grad and m.backbone.body.layer4[0].conv1.weight.requires_grad


def test_lite_trains_a_step():
    torch.manual_seed(0)
    m = B.build_model("r18fpn_lite", 2)
    m.train()
    masks = torch.zeros(1, 96, 128, dtype=torch.uint8)
    masks[0, 20:50, 30:70] = 1
    target = {"boxes": torch.tensor([[30.0, 20.0, 70.0, 50.0]]), "labels": torch.tensor([1]), "masks": masks}
    loss = sum(m([torch.rand(3, 96, 128)], [target]).values())
    loss.backward()
    assert torch.isfinite(loss) and m.backbone.fpn.layer_blocks[0][0].weight.grad is not None


def test_cpu_one_click_defaults_are_the_benchmarked_recipe():
    cfg = resolve_config(TrainConfig(), torch.device("cpu"), object_extents=[20, 30, 40] * 10)
    assert (cfg.arch, cfg.batch_size, cfg.crop, cfg.anchors) == ("r18fpn_lite", 2, 256, "fit")
    gpu = resolve_config(TrainConfig(), torch.device("cuda"))
    assert (gpu.arch, gpu.batch_size, gpu.crop) == ("r50fpn", 4, 1024)


@pytest.mark.parametrize("extents, crop", [([], 256), ([30] * 50, 256), ([150] * 50, 320), ([400] * 5, 512),
                                           ([20] * 95 + [500] * 5, 256)])
def test_cpu_crop_holds_most_objects_whole(extents, crop):
    assert cpu_crop(extents) == crop
    assert resolve_config(TrainConfig(crop=384), torch.device("cpu"), extents).crop == 384  # an explicit crop wins
