"""The CUDA code paths (marker `gpu`, skipped without CUDA; benchmarks/gpu_check.sh runs them):
autocast inference against fp32, channels_last, batched tiles, an AMP training step,
NCCL + DistributedDataParallel with world size 1, and a real CUDA out-of-memory error
reported as an "oom" error event."""
from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.demo import synthetic_project
from engine.model.predict import Predictor
from engine.model.train import Callback, TrainConfig, TrainingError, train_project
from engine.project import Project

pytestmark = pytest.mark.gpu
REPO = Path(__file__).resolve().parents[2]


def _config(**kw) -> TrainConfig:
    base = dict(arch="r18fpn", base="scratch", epochs=2, batch_size=2, device="cuda", seed=0, val_fraction=0.0,
                keep_last=True)
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def src(tmp_path_factory):
    root = tmp_path_factory.mktemp("gpu") / "p"
    synthetic_project(root, "nuclei", 12, 128, seed=0)
    return root


@pytest.fixture
def proj(src, tmp_path):
    shutil.copytree(src, tmp_path / "p")
    return Project.open(tmp_path / "p")


@pytest.fixture(scope="module")
def trained(src, tmp_path_factory):
    """A model that finds the nuclei (seconds on a GPU): comparisons need real detections,
    not the near-0.5 scores of random weights whose order any rounding shuffles."""
    root = tmp_path_factory.mktemp("gpu-trained") / "p"
    shutil.copytree(src, root)
    proj = Project.open(root)
    res = train_project(proj, _config(epochs=25, val_fraction=0.15), callbacks=[])
    assert res.best["mask_AP50"] > 0.5, res.history
    return proj, res.model_path


def _iou(a, b, shape) -> float:
    ma, mb = np.zeros(shape, bool), np.zeros(shape, bool)
    ma[a.y0:a.y0 + a.height, a.x0:a.x0 + a.mask.shape[1]] = a.mask
    mb[b.y0:b.y0 + b.height, b.x0:b.x0 + b.mask.shape[1]] = b.mask
    union = (ma | mb).sum()
    return float((ma & mb).sum() / union) if union else 1.0


def _same_detections(ref, got, shape, iou=0.85, score_tol=0.05):
    """Every confident reference instance has a twin (mask IoU, score) in `got`."""
    sure = [r for r in ref if r.score >= 0.6]
    assert sure, "the reference found nothing confident"
    for r in sure:
        best = max(got, key=lambda g: _iou(r, g, shape), default=None)
        assert best is not None and _iou(r, best, shape) >= iou
        assert abs(best.score - r.score) <= score_tol
    assert abs(len([g for g in got if g.score >= 0.5]) - len([r for r in ref if r.score >= 0.5])) <= \
        max(1, len(ref) // 10)


def test_autocast_inference_equals_fp32_within_tolerance(trained):
    proj, model_path = trained
    fp32 = Predictor(model_path, "cuda", amp=False, channels_last=False)
    amp = Predictor(model_path, "cuda")  # the default on CUDA: bf16/fp16 autocast, channels_last
    assert fp32.amp_dtype is None and amp.amp_dtype in (torch.bfloat16, torch.float16)
    cpu = Predictor(model_path, "cpu")
    for it in proj.items[:4]:
        img = proj.load_image(it.id)
        ref = fp32.predict(img, score_threshold=0.3)
        _same_detections(ref, amp.predict(img, score_threshold=0.3), img.shape[:2])
        _same_detections(cpu.predict(img, score_threshold=0.3), ref, img.shape[:2], iou=0.95, score_tol=0.01)


def test_channels_last_and_reduced_precision_reach_the_backbone(trained):
    _, model_path = trained
    p = Predictor(model_path, "cuda")
    assert p.channels_last
    seen = []
    p.model.backbone.body.layer1.register_forward_hook(lambda m, i, o: seen.append((o.dtype, o.is_contiguous(
        memory_format=torch.channels_last), o.device.type)))
    p.predict(np.zeros((128, 128), np.uint16), score_threshold=0.5)
    assert seen and all(s == (p.amp_dtype, True, "cuda") for s in seen), seen


def test_batched_tiles_equal_one_at_a_time(trained):
    proj, model_path = trained
    imgs = [proj.load_image(it.id) for it in proj.items[:6]]
    p = Predictor(model_path, "cuda", batch_size=4)
    many = p.predict_many(imgs, score_threshold=0.3)
    for img, got in zip(imgs, many):
        _same_detections(p.predict(img, score_threshold=0.3), got, img.shape[:2], iou=0.95, score_tol=0.02)
    # a large image cut into tiles that go through the model in batches
    big = np.tile(imgs[0], (3, 3))
    tiled = Predictor(model_path, "cuda", batch_size=4, tile=160)
    untiled = Predictor(model_path, "cuda", tile=0)
    _same_detections(untiled.predict(big, score_threshold=0.3), tiled.predict(big, score_threshold=0.3),
                     big.shape[:2], iou=0.8, score_tol=0.1)


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_amp_training_step(proj, amp):
    if amp == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    events = []
    res = train_project(proj, _config(amp=amp, channels_last=True), callbacks=[events.append])
    losses = [e["loss"] for e in events if e["event"] == "iter"]
    assert losses and all(math.isfinite(v) for v in losses)
    assert events[0]["device"].startswith("cuda")
    state = torch.load(res.run_dir / "last.pt", weights_only=True)["extra"]["trainer"]
    assert ("scaler" in state) == (amp == "fp16")
    assert torch.cuda.max_memory_allocated() > 0


def test_cuda_out_of_memory_is_an_oom_error_event(proj):
    class Hog(Callback):
        def before_step(self, trainer):
            total = torch.cuda.get_device_properties(0).total_memory
            torch.empty(4 * total, dtype=torch.uint8, device="cuda")  # a real CUDA OOM

    events = []
    with pytest.raises(TrainingError) as e:
        train_project(proj, _config(), callbacks=[events.append, Hog()])
    assert e.value.kind == "oom" and "--batch-size" in str(e.value)
    assert events[-1]["event"] == "error" and events[-1]["kind"] == "oom"
    torch.cuda.empty_cache()
    train_project(proj, _config(epochs=1), callbacks=[])  # the device is usable again


DDP_SCRIPT = textwrap.dedent("""
    import math, os, torch, torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP
    from engine.model.build import build_model
    dist.init_process_group("nccl")
    assert dist.get_backend() == "nccl" and dist.get_world_size() == 1
    torch.cuda.set_device(0)
    torch.manual_seed(0)
    model = build_model("r18fpn", 2).cuda().train().to(memory_format=torch.channels_last)
    ddp = DDP(model, device_ids=[0])
    opt = torch.optim.SGD(ddp.parameters(), lr=0.01)
    img = torch.rand(3, 256, 256, device="cuda")
    m = torch.zeros(1, 256, 256, dtype=torch.uint8, device="cuda"); m[0, 40:90, 50:120] = 1
    tgt = {"boxes": torch.tensor([[50., 40., 120., 90.]], device="cuda"),
           "labels": torch.ones(1, dtype=torch.int64, device="cuda"), "masks": m}
    before = model.backbone.body.conv1.weight.detach().clone()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = sum(ddp([img], [tgt]).values())
    loss.backward(); opt.step()
    t = torch.ones(1, device="cuda"); dist.all_reduce(t)
    assert math.isfinite(loss.item()) and t.item() == 1.0
    assert not torch.equal(before, model.backbone.body.conv1.weight)
    dist.destroy_process_group()
    print("ddp-ok")
""")


def test_nccl_ddp_world_size_one(tmp_path):
    """torchrun --nproc_per_node 1: NCCL process group, DDP-wrapped AMP step, all_reduce."""
    script = tmp_path / "ddp1.py"
    script.write_text(DDP_SCRIPT)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1", str(script)]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
    assert r.returncode == 0 and "ddp-ok" in r.stdout, r.stderr[-3000:]
