"""engine.model.build: architectures, native scale, base weights, checkpoints."""
from __future__ import annotations

import pickle
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

from engine.errors import CheckpointError
from engine.model import build as B
from engine.model import weights as W
from engine.model.normalize import percentile_policy

POLICY = percentile_policy()
# fewer proposals and sampled RoIs than the defaults keep these CPU tests quick
QUICK = dict(rpn_pre_nms_top_n_test=200, rpn_post_nms_top_n_test=200, rpn_pre_nms_top_n_train=300,
             rpn_post_nms_top_n_train=300, box_batch_size_per_image=64)


def _has(model, cls) -> bool:
    return any(isinstance(m, cls) for m in model.modules())


@pytest.fixture(scope="module")
def r18():
    torch.manual_seed(0)
    m = B.build_model("r18fpn", 3, detections_per_img=100, **QUICK)
    m.eval()
    return m


@pytest.fixture(scope="module")
def r18_ckpt(tmp_path_factory, r18):
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    B.save_checkpoint(path, r18, label_names=["rock", "pore"], normalization=POLICY,
                      config={"epochs": 3, "lr": 0.01}, metrics={"mask_AP": np.float64(0.25)}, epoch=2,
                      run="run-test")
    return path


# --- architectures ---------------------------------------------------------------------

@pytest.mark.parametrize("arch", B.ARCHS)
def test_every_arch_builds_from_scratch_with_trainable_norm(arch):
    torch.manual_seed(0)
    m = B.build_model(arch, 4)
    assert m.maskloop_config["arch"] == arch
    assert m.roi_heads.box_predictor.cls_score.out_features == 4
    assert m.roi_heads.mask_predictor.mask_fcn_logits.out_channels == 4
    # scratch: real BatchNorm (trainable), no frozen BN with random statistics
    assert _has(m, nn.BatchNorm2d) and not _has(m, FrozenBatchNorm2d)
    assert all(p.requires_grad for p in m.backbone.parameters())
    assert m.roi_heads.detections_per_img == 1000
    assert m.rpn._post_nms_top_n["testing"] >= 1000


def test_groupnorm_option():
    m = B.build_model("r18fpn", 2, norm="gn")
    assert _has(m, nn.GroupNorm) and not _has(m, nn.BatchNorm2d)


def test_r18fpn_trains_and_predicts_on_a_tiny_image(r18):
    torch.manual_seed(0)
    m = B.build_model("r18fpn", 2, detections_per_img=100, **QUICK)
    assert m.rpn._post_nms_top_n == {"training": 300, "testing": 200}
    assert m.roi_heads.fg_bg_sampler.batch_size_per_image == 64
    m.train()
    img = torch.rand(3, 96, 128)
    masks = torch.zeros(1, 96, 128, dtype=torch.uint8)
    masks[0, 20:50, 30:70] = 1
    target = {"boxes": torch.tensor([[30.0, 20.0, 70.0, 50.0]]), "labels": torch.tensor([1]), "masks": masks}
    losses = m([img], [target])
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    assert m.backbone.body.conv1.weight.grad is not None
    m.eval()
    m.roi_heads.detections_per_img = 5
    with torch.inference_mode():
        out = m([img])[0]
    assert set(out) >= {"boxes", "labels", "scores", "masks"}
    assert out["masks"].shape[-2:] == (96, 128)


def test_native_resolution_no_silent_resize(r18):
    seen = []
    h = r18.backbone.register_forward_pre_hook(lambda mod, args: seen.append(tuple(args[0].shape)))
    try:
        r18.roi_heads.detections_per_img = 3
        with torch.inference_mode():
            r18([torch.rand(3, 200, 320)])
            images, _ = r18.transform([torch.rand(3, 512, 512)])
    finally:
        h.remove()
        r18.roi_heads.detections_per_img = 100
    assert seen[0] == (1, 3, 224, 320)  # padded to a multiple of 32 only, never 800 px
    assert images.image_sizes == [(512, 512)]
    # the mean/std of the transform match normalize()'s [0, 1] output, not 0..255
    assert max(r18.transform.image_mean) <= 1.0 and max(r18.transform.image_std) <= 1.0


def test_fixed_scale_and_classic_resize_are_opt_in():
    m = B.build_model("r18fpn", 2, scale=2.0)
    images, targets = m.transform([torch.rand(3, 50, 60)],
                                  [{"boxes": torch.tensor([[10.0, 10.0, 20.0, 30.0]]), "labels": torch.tensor([1]),
                                    "masks": torch.ones(1, 50, 60, dtype=torch.uint8)}])
    assert images.image_sizes == [(100, 120)]
    assert targets[0]["boxes"].tolist() == [[20.0, 20.0, 40.0, 60.0]]
    assert targets[0]["masks"].shape == (1, 100, 120)
    # the Trainer's packed masks are resampled the same way
    from engine.model.mask_targets import PackedMasks
    packed = PackedMasks.from_crops([(np.ones((50, 60), bool), 0, 0)], 50, 60)
    _, t2 = m.transform([torch.rand(3, 50, 60)], [{"boxes": torch.tensor([[10.0, 10.0, 20.0, 30.0]]),
                                                   "labels": torch.tensor([1]), "masks": packed}])
    assert torch.equal(t2[0]["masks"], targets[0]["masks"])
    m2 = B.build_model("r18fpn", 2, min_size=400, max_size=600)
    m2.eval()
    images, _ = m2.transform([torch.rand(3, 100, 100)])
    assert images.image_sizes == [(400, 400)]


def test_detection_limit_above_1000_is_a_setting():
    m = B.build_model("r18fpn", 2, detections_per_img=2500)
    assert m.roi_heads.detections_per_img == 2500
    # two proposals per allowed detection: the RPN's NMS leaves several on each object
    assert m.rpn._pre_nms_top_n["testing"] == 5000 and m.rpn._post_nms_top_n["testing"] == 5000
    B.set_detections_per_img(m, 4000)
    assert m.roi_heads.detections_per_img == 4000 and m.rpn._post_nms_top_n["testing"] == 8000
    B.set_detections_per_img(m, 10)  # a lower limit keeps the proposals
    assert m.roi_heads.detections_per_img == 10 and m.rpn._post_nms_top_n["testing"] == 8000


def test_bad_arguments():
    with pytest.raises(ValueError):
        B.build_model("vgg16", 2)
    with pytest.raises(ValueError):
        B.build_model("r18fpn", 1)
    with pytest.raises(ValueError):
        B.build_model("r18fpn", 2, norm="instance")
    with pytest.raises(CheckpointError, match="no COCO"):
        B.build_model("r18fpn", 2, base="coco")


# --- base weights: cache first, clear error offline, never a hang ---------------------------

def test_coco_offline_gives_a_clear_error_quickly(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.delenv("MASKLOOP_OFFLINE", raising=False)
    calls = []

    def offline(url, dst, stall_s=None):
        calls.append(url)
        raise OSError("Network is unreachable")

    monkeypatch.setattr(W, "download", offline)
    t = time.monotonic()
    with pytest.raises(CheckpointError) as ei:
        B.build_model("r50fpn", 3, base="coco")
    assert time.monotonic() - t < 30
    msg = str(ei.value)
    assert calls and "maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth" in msg
    assert str(tmp_path / "hub" / "checkpoints") in msg and "--base scratch" in msg
    assert "Network is unreachable" in msg and "\n" not in msg


def test_offline_env_does_not_try_the_network(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setenv("MASKLOOP_OFFLINE", "1")
    monkeypatch.setattr(W, "download", lambda *a, **k: pytest.fail("must not download"))
    with pytest.raises(CheckpointError, match="maskrcnn_resnet50_fpn_v2_coco"):
        B.build_model("r50fpn_v2", 2, base="coco")
    with pytest.raises(CheckpointError, match="resnet18-f37072fd.pth"):
        B.build_model("r18fpn", 2, base="imagenet")


def test_download_never_hangs(tmp_path, monkeypatch):
    """A black-holed connection (urlopen blocks forever) gives up after the stall limit."""
    import threading
    import urllib.request
    block = threading.Event()
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: block.wait(60))
    t = time.monotonic()
    with pytest.raises(TimeoutError):
        B.download("https://example.invalid/x-0000.pth", tmp_path / "x-0000.pth", stall_s=0.5)
    block.set()
    assert time.monotonic() - t < 5
    assert not (tmp_path / "x-0000.pth").exists()


def test_coco_weights_from_the_cache_replace_the_class_heads(tmp_path, monkeypatch):
    """A COCO file in the torch cache is used (no network); heads are re-made for 2 classes."""
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setattr(W, "download", lambda *a, **k: pytest.fail("must not download"))
    torch.manual_seed(1)
    fake = B.construct(B.default_config("r50fpn", 91, base="coco"))
    state = fake.state_dict()
    target = tmp_path / "hub" / "checkpoints" / "maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth"
    target.parent.mkdir(parents=True)
    torch.save(state, target)
    m = B.build_model("r50fpn", 3, base="coco")
    assert torch.equal(m.backbone.body.layer1[0].conv1.weight, state["backbone.body.layer1.0.conv1.weight"])
    assert torch.equal(m.roi_heads.box_head.fc6.weight, state["roi_heads.box_head.fc6.weight"])
    assert m.roi_heads.box_predictor.cls_score.out_features == 3
    assert m.roi_heads.mask_predictor.mask_fcn_logits.out_channels == 3
    assert _has(m, FrozenBatchNorm2d)  # pretrained statistics stay frozen
    assert m.transform.image_mean == B.IMAGENET_MEAN
    # a corrupt cached file: a clear error that names it
    target.write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match="delete the file"):
        B.build_model("r50fpn", 3, base="coco")


def test_imagenet_backbone_from_the_cache(tmp_path, monkeypatch):
    import torchvision
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setattr(W, "download", lambda *a, **k: pytest.fail("must not download"))
    torch.manual_seed(2)
    state = torchvision.models.resnet18(weights=None).state_dict()
    target = B.weights_file(torchvision.models.ResNet18_Weights.IMAGENET1K_V1)
    assert target.name == "resnet18-f37072fd.pth"
    target.parent.mkdir(parents=True)
    torch.save(state, target)
    m = B.build_model("r18fpn", 2, base="imagenet")
    assert torch.equal(m.backbone.body.layer2[0].conv1.weight, state["layer2.0.conv1.weight"])
    assert _has(m, FrozenBatchNorm2d) and m.maskloop_config["trainable_layers"] == 3
    assert not m.backbone.body.conv1.weight.requires_grad and m.backbone.body.layer4[0].conv1.weight.requires_grad


# --- checkpoints ---------------------------------------------------------------------------

def test_checkpoint_round_trip_is_identical(r18, r18_ckpt):
    ck = B.load_checkpoint(r18_ckpt)
    assert ck["arch"] == "r18fpn" and ck["label_names"] == ["rock", "pore"] and ck["epoch"] == 2
    assert ck["metrics"] == {"mask_AP": 0.25} and ck["config"]["lr"] == 0.01 and ck["run"] == "run-test"
    m2 = B.model_from_checkpoint(ck, expected_labels=["rock", "pore"])
    sd1, sd2 = r18.state_dict(), m2.state_dict()
    assert sd1.keys() == sd2.keys() and all(torch.equal(sd1[k], sd2[k]) for k in sd1)
    torch.manual_seed(3)
    img = torch.rand(3, 128, 160)
    for m in (r18, m2):
        m.roi_heads.detections_per_img = 10
    with torch.inference_mode():
        a, b = r18([img])[0], m2([img])[0]
    r18.roi_heads.detections_per_img = 100
    assert len(a["scores"]) > 0
    for k in ("boxes", "labels", "scores", "masks"):
        assert torch.equal(a[k], b[k]), k


def test_checkpoint_is_plain_data_and_atomic(r18_ckpt, tmp_path, r18):
    # loadable with weights_only (no pickled classes) and no temp files left behind
    raw = torch.load(r18_ckpt, weights_only=True)
    assert raw["format"] == B.CHECKPOINT_FORMAT
    assert [p.name for p in r18_ckpt.parent.iterdir()] == ["model.pt"]
    with pytest.raises(TypeError):
        B.save_checkpoint(tmp_path / "bad.pt", r18, label_names=["a", "b"], normalization=POLICY,
                          config={"fn": print})
    assert not list(tmp_path.iterdir())
    with pytest.raises(ValueError):  # wrong number of names for the heads
        B.save_checkpoint(tmp_path / "bad.pt", r18, label_names=["a"], normalization=POLICY)


def test_resume_state_round_trips(tmp_path):
    m = B.build_model("r18fpn", 2, **QUICK)
    opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.01, momentum=0.9)
    sched = torch.optim.lr_scheduler.StepLR(opt, 5)
    m.train()
    loss = sum(m([torch.rand(3, 64, 64)], [{"boxes": torch.tensor([[5.0, 5.0, 30.0, 30.0]]),
                                            "labels": torch.tensor([1]),
                                            "masks": torch.ones(1, 64, 64, dtype=torch.uint8)}]).values())
    loss.backward()
    opt.step()
    sched.step()
    p = B.save_checkpoint(tmp_path / "last.pt", m, label_names=["x"], normalization=POLICY,
                          optimizer=opt, scheduler=sched, epoch=0)
    ck = B.load_checkpoint(p)
    opt2 = torch.optim.SGD([q for q in m.parameters() if q.requires_grad], lr=0.5, momentum=0.9)
    opt2.load_state_dict(ck["optimizer"])
    assert opt2.param_groups[0]["lr"] == 0.01
    assert ck["scheduler"]["last_epoch"] == 1


@pytest.mark.parametrize("case", ["garbage", "empty", "truncated", "state_dict", "foreign_pickle", "json",
                                  "missing_keys", "other_format", "folder", "missing"])
def test_bad_checkpoints_give_checkpoint_error_naming_the_file(case, tmp_path, r18_ckpt, r18):
    path = tmp_path / "model.pt"
    if case == "garbage":
        path.write_bytes(b"\x00\x01garbage" * 100)
    elif case == "empty":
        path.write_bytes(b"")
    elif case == "truncated":
        data = r18_ckpt.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif case == "state_dict":
        torch.save(r18.state_dict(), path)
    elif case == "foreign_pickle":
        torch.save({"format": B.CHECKPOINT_FORMAT, "payload": zipfile.ZipInfo("x")}, path)
    elif case == "json":
        path.write_text('{"format": "maskloop-checkpoint"}')
    elif case == "missing_keys":
        ck = torch.load(r18_ckpt, weights_only=True)
        del ck["label_names"]
        torch.save(ck, path)
    elif case == "other_format":
        torch.save({"format": "detectron2", "model": {}}, path)
    elif case == "folder":
        path.mkdir()
    with pytest.raises(CheckpointError) as ei:
        B.load_checkpoint(path)
    assert str(path) in str(ei.value) and "\n" not in str(ei.value)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_pickled_code_is_never_executed(tmp_path):
    class Evil:
        def __reduce__(self):
            return (Path.touch, (tmp_path / "pwned",))

    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"format": B.CHECKPOINT_FORMAT, "x": Evil()}, f)
    with pytest.raises(CheckpointError):
        B.load_checkpoint(path)
    assert not (tmp_path / "pwned").exists()


def test_tampered_weights_and_labels(tmp_path, r18_ckpt):
    ck = torch.load(r18_ckpt, weights_only=True)
    ck["state_dict"]["roi_heads.box_head.fc6.weight"] = torch.zeros(3, 3)
    torch.save(ck, tmp_path / "shape.pt")
    with pytest.raises(CheckpointError, match="fc6"):
        B.model_from_checkpoint(tmp_path / "shape.pt")
    ck = torch.load(r18_ckpt, weights_only=True)
    ck["label_names"] = ["rock", "pore", "extra"]
    torch.save(ck, tmp_path / "labels.pt")
    with pytest.raises(CheckpointError, match="label"):
        B.load_checkpoint(tmp_path / "labels.pt")


def test_class_mismatch_with_the_project(r18_ckpt):
    ck = B.load_checkpoint(r18_ckpt)
    with pytest.raises(CheckpointError, match="pore") as ei:
        B.model_from_checkpoint(ck, expected_labels=["rock", "grain"])
    assert str(r18_ckpt) in str(ei.value)
    with pytest.raises(CheckpointError):
        B.model_from_checkpoint(ck, expected_labels=["pore", "rock"], exact=True)
    # a project with more labels than the model can still use it
    B.check_labels(ck, ["rock", "pore", "air"])


def test_fine_tune_base_from_checkpoint(r18, r18_ckpt):
    same = B.build_model("r18fpn", 3, base=r18_ckpt, label_names=["rock", "pore"])
    assert torch.equal(same.roi_heads.box_predictor.cls_score.weight, r18.roi_heads.box_predictor.cls_score.weight)
    other = B.build_model("r18fpn", 2, base=str(r18_ckpt), label_names=["nucleus"])
    assert other.roi_heads.box_predictor.cls_score.out_features == 2
    assert torch.equal(other.backbone.body.conv1.weight, r18.backbone.body.conv1.weight)
    assert other.maskloop_config["num_classes"] == 2
    with pytest.raises(CheckpointError, match="r18fpn"):
        B.build_model("r50fpn", 3, base=r18_ckpt)
