"""Training configuration: TrainConfig (plain data, saved with a run), how "auto"
values are resolved for a device, and the learning-rate schedule."""
from __future__ import annotations

import copy
import math
import os
from dataclasses import asdict, dataclass
from typing import Optional, Sequence

import numpy as np
import torch

from ..errors import MaskLoopError
from .architectures import ARCHS
from .normalize import validate_policy
from .weights import coco_weights_cached, imagenet_weights_cached

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("cosine", "step", "constant")
AMP_MODES = ("auto", "bf16", "fp16", "off")
MONITORS = ("mask_AP", "mask_AP50", "acc50")
ANCHOR_MODES = ("fit", "default")
BUDGET_EARLY_STOP = 5  # validations without improvement that end a budgeted run early


@dataclass
class TrainConfig:
    """Everything a run needs; None means "choose for the device and base" (resolve())."""
    arch: str = "auto"                 # r18fpn_lite on CPU, r50fpn on CUDA
    base: str = "auto"                 # scratch | coco | imagenet | checkpoint path; auto: auto_base()
    epochs: int = 30
    batch_size: Optional[int] = None   # per process: 2 on CPU (more steps beat bigger batches there), 4 on CUDA
    optimizer: str = "adamw"
    lr: Optional[float] = None         # adamw: 1e-3 scratch / 2e-4 pretrained; sgd: 0.02 / 0.01 (x batch/16 ... see resolve)
    weight_decay: Optional[float] = None  # adamw 0.05, sgd 1e-4 (never on norm layers and biases)
    momentum: float = 0.9
    schedule: str = "cosine"           # after warm-up: cosine to min_lr_factor, step (x0.1 at milestones), constant
    milestones: tuple = (0.67, 0.89)   # step schedule: fractions of the run
    min_lr_factor: float = 0.01
    warmup_iters: Optional[int] = None  # linear warm-up; default 10% of the run, 10..500
    grad_clip: float = 10.0            # max gradient norm (0: off)
    amp: str = "auto"                  # auto: CUDA bf16 where supported, else fp16; CPU off. bf16/fp16: on any device
    channels_last: Optional[bool] = None  # default on CUDA
    device: str = "auto"
    seed: int = 0
    val_fraction: float = 0.2
    monitor: str = "acc50"             # the validation score that picks the best model (ties: mask AP50)
    early_stop: Optional[int] = None   # stop after this many epochs without improvement (0: never);
                                       # None: BUDGET_EARLY_STOP under a time budget, else never
    include_unreviewed: bool = False
    crop: Optional[int] = None         # random crops of images larger than this: CUDA 1024, CPU cpu_crop()
    scale_jitter: Optional[tuple] = None  # e.g. (0.8, 1.25)
    augment: bool = True
    num_workers: Optional[int] = None  # data loader processes: 0 on CPU, up to 4 on CUDA
    rois_per_image: Optional[int] = None   # sampled RoIs per image for the heads: 512 CUDA, 128 CPU
    rpn_post_nms_train: Optional[int] = None  # proposals kept per image in training: 2000 CUDA, 1000 CPU
    norm: Optional[str] = None         # bn | gn | frozen (build default: bn scratch, frozen pretrained)
    trainable_layers: Optional[int] = None
    anchor_sizes: Optional[tuple] = None   # per FPN level a size or sizes; None: see `anchors`
    anchor_ratios: Optional[tuple] = None  # anchor height/width; None: 0.5, 1, 2 (or fitted)
    anchors: str = "fit"               # fit: layout fitted to the training objects (scratch, imagenet
                                       # bases; +0.03-0.04 acc50 in 8-minute runs, docs/benchmarks.md)
    normalization: Optional[dict] = None  # the intensity policy; default from the data (or the base model)
    val_score_threshold: float = 0.05  # predictions kept for AP during validation
    val_tile: Optional[int] = None     # tile size for validating big images (Predictor default)
    keep_last: bool = False            # keep last.pt (optimizer state) after a finished run
    min_box_size: int = 1              # instances narrower than this (px) are dropped from the data
    cache_mb: int = 1024               # raw images kept in memory per process
    minutes: Optional[float] = None    # time budget: the run plans its length to end inside it
    max_iters: Optional[int] = None    # total iterations (set by the time budget's plan); None: epochs x iters

    def to_json(self) -> dict:
        d = asdict(self)
        for k in ("milestones", "scale_jitter", "anchor_sizes", "anchor_ratios"):
            if d[k] is not None:
                d[k] = [list(v) if isinstance(v, tuple) else v for v in d[k]]
        return d

    @classmethod
    def from_json(cls, d: Optional[dict]) -> "TrainConfig":
        d = dict(d or {})
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        for k in ("milestones", "scale_jitter", "anchor_sizes", "anchor_ratios"):
            if known.get(k) is not None:
                known[k] = tuple(tuple(v) if isinstance(v, list) else v for v in known[k])
        return cls(**known)

    def validate(self) -> None:
        def bad(msg, fld):
            raise MaskLoopError(msg, field=fld)
        if self.arch != "auto" and self.arch not in ARCHS:
            bad(f"unknown architecture {self.arch!r} (known: {', '.join(ARCHS)})", "arch")
        if int(self.epochs) < 1:
            bad(f"epochs must be >= 1, got {self.epochs}", "epochs")
        if self.batch_size is not None and int(self.batch_size) < 1:
            bad(f"batch size must be >= 1, got {self.batch_size}", "batch_size")
        if self.optimizer not in OPTIMIZERS:
            bad(f"unknown optimizer {self.optimizer!r} (known: {', '.join(OPTIMIZERS)})", "optimizer")
        if self.schedule not in SCHEDULES:
            bad(f"unknown schedule {self.schedule!r} (known: {', '.join(SCHEDULES)})", "schedule")
        if self.amp not in AMP_MODES:
            bad(f"unknown amp mode {self.amp!r} (known: {', '.join(AMP_MODES)})", "amp")
        if self.monitor not in MONITORS:
            bad(f"unknown monitor {self.monitor!r} (known: {', '.join(MONITORS)})", "monitor")
        if self.lr is not None and not (float(self.lr) > 0 and math.isfinite(float(self.lr))):
            bad(f"learning rate must be > 0, got {self.lr}", "lr")
        if not 0.0 <= float(self.val_fraction) < 1.0:
            bad(f"val fraction must be in [0, 1), got {self.val_fraction}", "val_fraction")
        if self.crop is not None and int(self.crop) and int(self.crop) < 32:
            bad(f"crop must be 0 (off) or >= 32 px, got {self.crop}", "crop")
        if self.scale_jitter is not None:
            lo, hi = (float(v) for v in self.scale_jitter)
            if not 0 < lo <= hi:
                bad(f"scale jitter needs 0 < lo <= hi, got {self.scale_jitter}", "scale_jitter")
        if self.anchors not in ANCHOR_MODES:
            bad(f"unknown anchors mode {self.anchors!r} (known: {', '.join(ANCHOR_MODES)})", "anchors")
        if self.minutes is not None and not (float(self.minutes) > 0 and math.isfinite(float(self.minutes))):
            bad(f"minutes must be > 0, got {self.minutes}", "minutes")
        if self.max_iters is not None and int(self.max_iters) < 1:
            bad(f"max_iters must be >= 1, got {self.max_iters}", "max_iters")
        if self.normalization is not None:
            validate_policy(self.normalization)


def auto_base(arch: str) -> str:
    """The starting weights "auto" picks, without a download: COCO weights in the torch
    cache, else the ImageNet backbone in the cache, else scratch (the Train dialog shows it)."""
    if coco_weights_cached(arch):
        return "coco"
    if imagenet_weights_cached(arch):
        return "imagenet"
    return "scratch"


def default_arch(cuda: bool) -> str:
    """What arch "auto" trains: r18fpn_lite on a CPU (about 5x the steps of r18fpn per
    second, the issue-10 benchmark's pick, docs/benchmarks.md), r50fpn on CUDA."""
    return "r50fpn" if cuda else "r18fpn_lite"


def base_kind(base: str) -> str:
    """scratch, coco, imagenet, or checkpoint (a MaskLoop model file)."""
    return base if base in ("scratch", "coco", "imagenet") else "checkpoint"


CPU_CROP_RANGE = (256, 512)


def cpu_crop(object_extents: Sequence[int] = ()) -> int:
    """The CPU training crop: small crops give more steps per minute (256 px: ~1.6x the
    images per second of 512 px on r18fpn_lite, docs/benchmarks.md) but should hold whole
    objects: twice the 90th-percentile object extent, within CPU_CROP_RANGE, a multiple of 32."""
    lo, hi = CPU_CROP_RANGE
    if not len(object_extents):
        return lo
    want = 2 * float(np.percentile(np.asarray(object_extents, dtype=float), 90))
    return int(min(hi, max(lo, 32 * math.ceil(want / 32))))


def resolve_config(cfg: TrainConfig, device: torch.device, object_extents: Sequence[int] = ()) -> TrainConfig:
    """A copy with every 'auto'/None replaced by the value used (saved with the run).
    object_extents: the training objects' larger sides (px), for the CPU crop."""
    cfg = copy.deepcopy(cfg)
    cuda = device.type == "cuda"
    if cfg.arch == "auto":
        cfg.arch = default_arch(cuda)
    if cfg.base == "auto":
        cfg.base = auto_base(cfg.arch)
    pretrained = base_kind(cfg.base) != "scratch"
    if cfg.early_stop is None:
        cfg.early_stop = BUDGET_EARLY_STOP if cfg.minutes is not None else 0
    if cfg.batch_size is None:
        cfg.batch_size = 4 if cuda else 2
    if cfg.lr is None:
        if cfg.optimizer == "adamw":
            cfg.lr = 2e-4 if pretrained else 1e-3
        else:
            cfg.lr = (0.01 if pretrained else 0.02) * max(1.0, cfg.batch_size / 8)
    if cfg.weight_decay is None:
        cfg.weight_decay = 0.05 if cfg.optimizer == "adamw" else 1e-4
    if cfg.amp == "auto":
        cfg.amp = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if cuda else "off"
    if cfg.channels_last is None:
        cfg.channels_last = cuda
    if cfg.crop is None:
        cfg.crop = 1024 if cuda else cpu_crop(object_extents)
    if cfg.num_workers is None:
        cfg.num_workers = min(4, max(0, (os.cpu_count() or 1) - 1)) if cuda else 0
    if cfg.rois_per_image is None:
        cfg.rois_per_image = 512 if cuda else 128
    if cfg.rpn_post_nms_train is None:
        cfg.rpn_post_nms_train = 2000 if cuda else 1000
    cfg.validate()
    return cfg


def lr_factor(cfg: TrainConfig, it: int, total: int, warmup: int) -> float:
    """Multiplier of the base LR before global iteration `it` (0-based) of `total`."""
    if warmup > 0 and it < warmup:
        return 0.001 + (1.0 - 0.001) * it / warmup
    if cfg.schedule == "constant":
        return 1.0
    span = max(1, total - warmup)
    t = min(1.0, (it - warmup) / span)
    if cfg.schedule == "step":
        f = 1.0
        for m in cfg.milestones:
            if it >= m * total:
                f *= 0.1
        return f
    lo = cfg.min_lr_factor
    return lo + (1.0 - lo) * 0.5 * (1.0 + math.cos(math.pi * t))


def default_warmup(total: int) -> int:
    """Linear warm-up length for a run of `total` iterations: 10 %, 10..500, < total."""
    return min(int(min(500, max(10, 0.1 * total))), max(0, total - 1))
