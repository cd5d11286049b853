"""Setting up a training run: the resumed checkpoint, the model with its starting
weights and normalisation, and the optimizer (used by engine.model.trainer)."""
from __future__ import annotations

import torch
from torch import nn

from ..errors import CheckpointError, MaskLoopError
from .anchor_fit import fit_anchors, instance_boxes
from .anchor_matching import use_chunked_anchor_matching
from .checkpoint import load_checkpoint, model_from_checkpoint
from .config import TrainConfig, base_kind, resolve_config
from .dataset import InstanceDataset
from .normalize import default_policy, validate_policy
from .weights import build_model, init_predictors


class TrainingError(MaskLoopError):
    """Training stopped: kind is "oom", "data", "cancelled" or "internal" (as in the
    JSON-lines error event)."""

    def __init__(self, message: str, kind: str = "internal", path=None, field=None):
        self.kind = kind
        super().__init__(message, path, field)


def restore(trainer, last_path) -> tuple[dict, dict, TrainConfig]:
    """(checkpoint, trainer state, resolved config) of a run to resume from last.pt; its
    config wins over the trainer's except device and data-loader settings."""
    if not last_path.exists():
        raise TrainingError("nothing to resume: the run has no last.pt (it finished, or never "
                            "completed an iteration)", "data", last_path)
    ckpt = load_checkpoint(last_path)
    state = dict((ckpt.get("extra") or {}).get("trainer") or {})
    if not state:
        raise CheckpointError("not a resumable checkpoint (no trainer state)", last_path)
    saved = TrainConfig.from_json(ckpt.get("config"))
    for k in ("device", "num_workers", "cache_mb"):
        setattr(saved, k, getattr(trainer.config, k))
    cfg = resolve_config(saved, trainer.device)
    if trainer.device.type != "cuda":
        cfg.amp, cfg.channels_last = "off", False
    return ckpt, state, cfg


def build_for_training(trainer, train_items, ckpt, cfg: TrainConfig, labels) -> tuple[nn.Module, dict]:
    """The model to train (on the trainer's device) and its normalisation policy: from the
    resumed checkpoint, or built on the configured base (the policy of a base checkpoint,
    else cfg.normalization, else one measured on the first training images)."""
    if ckpt is not None:
        model = model_from_checkpoint(ckpt)  # strict load; train mode is set per epoch
        policy = ckpt["normalization"]
    else:
        kind = base_kind(cfg.base)
        base_ckpt = load_checkpoint(cfg.base) if kind == "checkpoint" else None
        policy = cfg.normalization or (base_ckpt["normalization"] if base_ckpt else None)
        if policy is None:
            probe = InstanceDataset(train_items[:3], {"kind": "range", "min": 0, "max": 1})
            policy = default_policy([probe.raw(i)[0] for i in range(len(probe))])
        if base_ckpt is None and kind != "coco":
            fit_anchor_layout(cfg, train_items)
        kw = {k: list(getattr(cfg, k)) for k in ("anchor_sizes", "anchor_ratios") if getattr(cfg, k) is not None}
        model = build_model(cfg.arch if base_ckpt is None else base_ckpt["arch"], len(labels) + 1,
                            base=base_ckpt if base_ckpt is not None else cfg.base, label_names=labels,
                            norm=cfg.norm, trainable_layers=cfg.trainable_layers, **kw)
        if base_ckpt is not None:
            cfg.arch = base_ckpt["arch"]
        if base_ckpt is None or list(base_ckpt["label_names"]) != labels:
            init_predictors(model)  # fresh class heads
    policy = validate_policy(policy)
    cfg.normalization = policy
    model.roi_heads.fg_bg_sampler.batch_size_per_image = int(cfg.rois_per_image)
    model.rpn._post_nms_top_n["training"] = int(cfg.rpn_post_nms_train)
    model.rpn._pre_nms_top_n["training"] = int(cfg.rpn_post_nms_train)
    use_chunked_anchor_matching(model)  # dense images: no gt x anchors IoU matrix (same matches)
    model.to(trainer.device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
        if hasattr(model.transform, "channels_last"):
            model.transform.channels_last = True
    if trainer.world > 1 and trainer.device.type == "cuda" and model.maskloop_config.get("norm") == "bn":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model, policy


def fit_anchor_layout(cfg: TrainConfig, train_items) -> None:
    """Anchors fitted to the training objects (cfg.anchors == "fit", sizes not given): a
    new model's RPN gets positives for most objects (docs/benchmarks.md; the default). A COCO or
    checkpoint base keeps the anchors its RPN was trained with. Sets cfg in place, so the
    run's config and the checkpoint record the layout."""
    if cfg.anchors != "fit" or cfg.anchor_sizes is not None:
        return
    kw = {"ratio_sets": (tuple(cfg.anchor_ratios),)} if cfg.anchor_ratios else {}
    fit = fit_anchors(instance_boxes(train_items), **kw)
    if fit is not None:
        cfg.anchor_sizes, cfg.anchor_ratios = fit.sizes, fit.ratios


def make_optimizer(model: nn.Module, cfg: TrainConfig, device: torch.device, world: int):
    """(optimizer, grad scaler, autocast dtype or None, the module to call: DDP-wrapped
    under torchrun). No weight decay on norm layers and biases."""
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optimizer == "sgd":
        opt = torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)
    else:
        opt = torch.optim.AdamW(groups, lr=cfg.lr)
    # An explicit bf16/fp16 runs on any device (CPU autocast too: the same code path as
    # CUDA, which is how the tests exercise it); fp16 needs loss scaling, bf16 does not.
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.amp)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    train_model: nn.Module = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP
        train_model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None,
                          find_unused_parameters=False)
    return opt, scaler, amp_dtype, train_model
