"""Trainer: fine-tuning and training from scratch of MaskLoop's Mask R-CNN models.

    trainer = Trainer(TrainConfig(epochs=20), callbacks=[print])
    result = trainer.fit(Snapshot.from_project(project), run_dir, run_id="run-1", cancel=token)

or, for a project (snapshot, run folder, registration):

    result = train_project(project, TrainConfig(...), callbacks=[...], cancel=token)

Rules (DESIGN.md section 5): no sys.exit, no process-wide settings changed (the global
torch RNG is seeded inside `torch.random.fork_rng`, so the caller's RNG state is left as
it was; thread counts are not touched), cancel is checked between iterations, a
checkpoint that can resume is written every epoch and on cancel.

Progress is a stream of events (engine.model.progress): every callback gets every
event dict; the run's log.jsonl gets them all as JSON lines. Callbacks may be plain
callables `cb(event)` or `Callback` objects with hooks (detectron2 style): before_train,
before_step, after_step, after_epoch, after_train, on_event.

Resume: `last.pt` in the run folder holds the model, optimizer, LR-schedule position
(the global iteration), epoch and iteration, best score, early-stop counter and the
torch RNG state; data order and augmentation are functions of (seed, epoch, index), so a
run cancelled at any iteration and resumed gives the same weights as an uninterrupted
run (same seed, CPU).

Under torchrun (WORLD_SIZE > 1, process group initialised by the caller, e.g. the CLI)
the model is wrapped in DistributedDataParallel, each rank trains on its share of every
epoch (DistributedSampler-style), and only rank 0 validates, writes checkpoints and
logs; cancel, early stop and non-finite losses are agreed on by all ranks.
"""
from __future__ import annotations

import copy
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence

import torch
from torch import nn

from ..annotations import ItemAnnotation
from ..errors import CancelledError, CheckpointError, MaskLoopError
from ..fsutil import atomic_write_json
from ..jobs import CancelToken
from . import build as mbuild
from .data import (Augment, DataError, EpochBatches, InstanceDataset, Snapshot, collate, epoch_batches,
                   largest_object)
from .anchor_matching import use_chunked_anchor_matching
from .mask_targets import lean_mask_targets
from .normalize import default_policy, validate_policy
from .progress import JsonlWriter, make_event

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("cosine", "step", "constant")
AMP_MODES = ("auto", "bf16", "fp16", "off")
MONITORS = ("mask_AP", "mask_AP50", "acc50")


class TrainingError(MaskLoopError):
    """Training stopped: kind is "oom", "data", "cancelled" or "internal" (as in the
    JSON-lines error event)."""

    def __init__(self, message: str, kind: str = "internal", path=None, field=None):
        self.kind = kind
        super().__init__(message, path, field)


# --------------------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------------------

@dataclass
class TrainConfig:
    """Everything a run needs; None means "choose for the device and base" (resolve())."""
    arch: str = "auto"                 # r18fpn on CPU, r50fpn on CUDA
    base: str = "auto"                 # scratch | coco | imagenet | checkpoint path; auto: coco when cached
    epochs: int = 30
    batch_size: Optional[int] = None   # per process: 2 on CPU, 4 on CUDA
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
    monitor: str = "mask_AP"           # the validation score that picks the best model
    early_stop: int = 0                # stop after this many epochs without improvement (0: never)
    include_unreviewed: bool = False
    crop: Optional[int] = None         # random crops of images larger than this: 512 CPU, 1024 CUDA
    scale_jitter: Optional[tuple] = None  # e.g. (0.8, 1.25)
    augment: bool = True
    num_workers: Optional[int] = None  # data loader processes: 0 on CPU, up to 4 on CUDA
    rois_per_image: Optional[int] = None   # sampled RoIs per image for the heads: 512 CUDA, 128 CPU
    rpn_post_nms_train: Optional[int] = None  # proposals kept per image in training: 2000 CUDA, 1000 CPU
    norm: Optional[str] = None         # bn | gn | frozen (build default: bn scratch, frozen pretrained)
    trainable_layers: Optional[int] = None
    anchor_sizes: Optional[tuple] = None
    normalization: Optional[dict] = None  # the intensity policy; default from the data (or the base model)
    val_score_threshold: float = 0.05  # predictions kept for AP during validation
    val_tile: Optional[int] = None     # tile size for validating big images (Predictor default)
    keep_last: bool = False            # keep last.pt (optimizer state) after a finished run
    min_box_size: int = 1              # instances narrower than this (px) are dropped from the data
    cache_mb: int = 1024               # raw images kept in memory per process

    def to_json(self) -> dict:
        d = asdict(self)
        for k in ("milestones", "scale_jitter", "anchor_sizes"):
            if d[k] is not None:
                d[k] = list(d[k])
        return d

    @classmethod
    def from_json(cls, d: Optional[dict]) -> "TrainConfig":
        d = dict(d or {})
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        for k in ("milestones", "scale_jitter", "anchor_sizes"):
            if known.get(k) is not None:
                known[k] = tuple(known[k])
        return cls(**known)

    def validate(self) -> None:
        def bad(msg, fld):
            raise MaskLoopError(msg, field=fld)
        if self.arch != "auto" and self.arch not in mbuild.ARCHS:
            bad(f"unknown architecture {self.arch!r} (known: {', '.join(mbuild.ARCHS)})", "arch")
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
        if self.normalization is not None:
            validate_policy(self.normalization)


def _resolve_device(name) -> torch.device:
    from .predict import resolve_device
    return resolve_device(name)


def _base_kind(base: str) -> str:
    return base if base in ("scratch", "coco", "imagenet") else "checkpoint"


def resolve_config(cfg: TrainConfig, device: torch.device) -> TrainConfig:
    """A copy with every 'auto'/None replaced by the value used (saved with the run)."""
    cfg = copy.deepcopy(cfg)
    cuda = device.type == "cuda"
    if cfg.arch == "auto":
        cfg.arch = "r50fpn" if cuda else "r18fpn"
    if cfg.base == "auto":
        cfg.base = "scratch"
        if cfg.arch in mbuild._COCO:
            from torchvision.models.detection import mask_rcnn as tv_mask_rcnn
            w = getattr(tv_mask_rcnn, mbuild._COCO[cfg.arch]).COCO_V1
            if mbuild.weights_file(w).is_file():
                cfg.base = "coco"
    pretrained = _base_kind(cfg.base) != "scratch"
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
        cfg.crop = 1024 if cuda else 512
    if cfg.num_workers is None:
        cfg.num_workers = min(4, max(0, (os.cpu_count() or 1) - 1)) if cuda else 0
    if cfg.rois_per_image is None:
        cfg.rois_per_image = 512 if cuda else 128
    if cfg.rpn_post_nms_train is None:
        cfg.rpn_post_nms_train = 2000 if cuda else 1000
    cfg.validate()
    return cfg


def init_predictors(model: nn.Module) -> None:
    """Small initial weights for freshly made class-specific layers (as detectron2 does).

    torchvision initialises the mask logits with kaiming fan_out (std 1 for a 1x1 conv
    with 2 outputs), which gives an initial mask loss around 10 and a violent first few
    hundred iterations from scratch; std 0.001 (masks, boxes) and 0.01 (class scores)
    start every prediction near "don't know".
    """
    m = mbuild.unwrap(model)
    rh = m.roi_heads
    bp = rh.box_predictor
    with torch.no_grad():
        nn.init.normal_(bp.cls_score.weight, std=0.01)
        nn.init.zeros_(bp.cls_score.bias)
        nn.init.normal_(bp.bbox_pred.weight, std=0.001)
        nn.init.zeros_(bp.bbox_pred.bias)
        mp = getattr(rh, "mask_predictor", None)
        if mp is not None and hasattr(mp, "mask_fcn_logits"):
            nn.init.normal_(mp.mask_fcn_logits.weight, std=0.001)
            nn.init.zeros_(mp.mask_fcn_logits.bias)


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


# --------------------------------------------------------------------------------------
# callbacks and results
# --------------------------------------------------------------------------------------

class Callback:
    """Base class for Trainer hooks; every method is optional. `trainer` exposes model,
    optimizer, epoch, iter, global_iter, config, run_id, cancel and request_stop()."""

    def on_event(self, event: dict) -> None: ...
    def before_train(self, trainer: "Trainer") -> None: ...
    def before_step(self, trainer: "Trainer") -> None: ...
    def after_step(self, trainer: "Trainer") -> None: ...
    def after_epoch(self, trainer: "Trainer") -> None: ...
    def after_train(self, trainer: "Trainer") -> None: ...


class _FnCallback(Callback):
    def __init__(self, fn: Callable[[dict], None]):
        self.fn = fn

    def on_event(self, event: dict) -> None:
        self.fn(event)


@dataclass
class FitResult:
    run: str
    run_dir: Path
    model_path: Optional[Path]          # best model (model.pt)
    best: dict                          # metrics of the best epoch, with "epoch"
    history: list                       # per epoch: {"epoch", "metrics", "train_loss", "lr"}
    epochs_run: int
    stopped_early: bool = False
    train_items: int = 0
    val_items: int = 0
    val_keys: list = field(default_factory=list)
    config: dict = field(default_factory=dict)

    def score(self, monitor: str = "mask_AP") -> Optional[float]:
        v = self.best.get(monitor)
        return float(v) if isinstance(v, (int, float)) else None


# --------------------------------------------------------------------------------------
# distributed helpers (no-ops without an initialised process group)
# --------------------------------------------------------------------------------------

def _dist():
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        return dist
    return None


def dist_info() -> tuple[int, int, int]:
    """(world_size, rank, local_rank) of the initialised process group, else (1, 0, 0)."""
    d = _dist()
    if d is None:
        return 1, 0, 0
    return d.get_world_size(), d.get_rank(), int(os.environ.get("LOCAL_RANK", d.get_rank()))


def _is_oom(e: BaseException) -> bool:
    if isinstance(e, getattr(torch.cuda, "OutOfMemoryError", ())):
        return True
    if isinstance(e, (MemoryError,)):
        return True
    msg = str(e)
    return isinstance(e, RuntimeError) and ("out of memory" in msg or "can't allocate memory" in msg
                                            or "not enough memory" in msg)


def _short(e: BaseException) -> str:
    msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {msg[:300]}" if msg else type(e).__name__


# --------------------------------------------------------------------------------------
# the trainer
# --------------------------------------------------------------------------------------

class Trainer:
    def __init__(self, config: Optional[TrainConfig | dict] = None,
                 callbacks: Iterable[Callback | Callable[[dict], None]] = ()):
        if config is None:
            config = TrainConfig()
        elif isinstance(config, dict):
            config = TrainConfig.from_json(config)
        config.validate()
        self.config = config
        self.callbacks: list[Callback] = [cb if isinstance(cb, Callback) else _FnCallback(cb) for cb in callbacks]
        self.model: Optional[nn.Module] = None
        self.optimizer = None
        self.epoch = 0
        self.iter = 0
        self.global_iter = 0
        self.run_id: Optional[str] = None
        self.cancel: Optional[CancelToken] = None
        self.device: Optional[torch.device] = None
        self.last_loss: Optional[dict] = None
        self._stop = False
        self._log: Optional[JsonlWriter] = None
        self._display_root: Optional[Path] = None
        self._rank = 0
        self._world = 1
        self.started = False  # True once the "start" event went out (setup succeeded)
        self._largest = 0     # largest training object (px), saved with the model

    # -- public -------------------------------------------------------------------------
    def request_stop(self) -> None:
        """Finish after the current iteration as if cancelled (saves, reports cancelled)."""
        self._stop = True

    def fit(self, data: Snapshot, run_dir, *, run_id: Optional[str] = None, resume: bool = False,
            cancel: Optional[CancelToken] = None, display_root=None, log_path=None) -> FitResult:
        """Train on `data` into `run_dir` (model.pt, last.pt, config.json, metrics.json, log.jsonl).

        resume=True continues from run_dir/last.pt (its config wins over this trainer's,
        except device and data-loader settings). display_root: paths in events are shown
        relative to it (the project root). Raises TrainingError (kind oom/data/internal)
        or CancelledError after reporting the matching "error" event.
        """
        run_dir = Path(run_dir)
        self.run_id = run_id or run_dir.name
        self.cancel = cancel
        self._stop = False
        self.started = False
        self._world, self._rank, local_rank = dist_info()
        self._display_root = Path(display_root) if display_root is not None else None
        if self._rank == 0:
            run_dir.mkdir(parents=True, exist_ok=True)
            self._log = JsonlWriter(log_path or run_dir / "log.jsonl")
        try:
            device = _resolve_device(self.config.device)
            if device.type == "cuda" and self._world > 1:
                device = torch.device("cuda", local_rank)
            self.device = device
            rng_devices = [device.index if device.index is not None else torch.cuda.current_device()] \
                if device.type == "cuda" else []
            with torch.random.fork_rng(devices=rng_devices):
                return self._fit(data, run_dir, resume)
        except CancelledError as e:
            self._emit("error", kind="cancelled", message=e.message)
            raise
        except TrainingError as e:
            self._emit("error", kind=e.kind, message=e.one_line())
            raise
        except KeyboardInterrupt:
            self._emit("error", kind="cancelled", message="interrupted")
            raise
        except MaskLoopError as e:  # unreadable image, bad annotation or base checkpoint, ...
            self._emit("error", kind="data", message=e.one_line())
            raise
        except BaseException as e:
            if _is_oom(e):
                msg = (f"out of memory ({_short(e)}); try a smaller --batch-size or --crop, "
                       f"or --device cpu")
                self._emit("error", kind="oom", message=msg)
                raise TrainingError(msg, "oom") from e
            msg = f"internal error: {_short(e)}"
            self._emit("error", kind="internal", message=msg)
            raise TrainingError(msg, "internal") from e
        finally:
            if self._log is not None:
                self._log.close()
                self._log = None

    # -- events -------------------------------------------------------------------------
    def _emit(self, event_name: str, **fields) -> None:
        if self._rank != 0:
            return
        ev = make_event(event_name, **fields)
        if self._log is not None:
            self._log(ev)
        for cb in self.callbacks:
            cb.on_event(ev)

    def _hook(self, name: str) -> None:
        for cb in self.callbacks:
            getattr(cb, name)(self)

    def _shown(self, path: Path) -> str:
        if self._display_root is not None:
            try:
                return Path(os.path.relpath(path, self._display_root)).as_posix()
            except ValueError:
                pass
        return str(path)

    # -- the run --------------------------------------------------------------------------
    def _fit(self, data: Snapshot, run_dir: Path, resume: bool) -> FitResult:
        t_start = time.monotonic()
        last_path, best_path, model_path = run_dir / "last.pt", run_dir / "best.pt", run_dir / "model.pt"
        state: dict = {}
        ckpt = None
        if resume:
            if not last_path.exists():
                raise TrainingError("nothing to resume: the run has no last.pt (it finished, or never "
                                    "completed an iteration)", "data", last_path)
            ckpt = mbuild.load_checkpoint(last_path)
            state = dict((ckpt.get("extra") or {}).get("trainer") or {})
            if not state:
                raise CheckpointError("not a resumable checkpoint (no trainer state)", last_path)
            saved = TrainConfig.from_json(ckpt.get("config"))
            for k in ("device", "num_workers", "cache_mb"):
                setattr(saved, k, getattr(self.config, k))
            cfg = resolve_config(saved, self.device)
            if self.device.type != "cuda":
                cfg.amp, cfg.channels_last = "off", False
        else:
            cfg = resolve_config(self.config, self.device)
        self.resolved = cfg
        labels = list(data.label_names)
        if not labels:
            raise DataError("the training data has no classes")
        if ckpt is not None and list(ckpt["label_names"]) != labels:
            raise CheckpointError(f"the run was trained on classes {ckpt['label_names']}, the data has {labels}",
                                  last_path, "label_names")
        torch.manual_seed(cfg.seed)
        np_seed = cfg.seed  # numpy randomness is per-sample: (seed, epoch, index)

        # data ---------------------------------------------------------------------------
        train_idx, val_idx = data.split(cfg.val_fraction, cfg.seed)
        if not train_idx:
            raise DataError("no training items: mark some items as reviewed (or use --include-unreviewed)")
        train_items = [data.items[i] for i in train_idx]
        self._largest = largest_object(data.items)  # saved with the model: the Predictor's tile overlap
        val_items = [data.items[i] for i in val_idx]

        # model and normalisation ----------------------------------------------------------
        base_ckpt = None
        if ckpt is not None:
            model = mbuild.model_from_checkpoint(ckpt)  # strict load; train mode is set per epoch
            policy = ckpt["normalization"]
        else:
            kind = _base_kind(cfg.base)
            if kind == "checkpoint":
                base_ckpt = mbuild.load_checkpoint(cfg.base)
            policy = cfg.normalization or (base_ckpt["normalization"] if base_ckpt else None)
            if policy is None:
                samples = []
                probe = InstanceDataset(train_items[:3], {"kind": "range", "min": 0, "max": 1})
                for i in range(len(probe)):
                    samples.append(probe.raw(i)[0])
                policy = default_policy(samples)
            kw = {}
            if cfg.anchor_sizes is not None:
                kw["anchor_sizes"] = list(cfg.anchor_sizes)
            model = mbuild.build_model(cfg.arch if kind != "checkpoint" else base_ckpt["arch"],
                                       len(labels) + 1, base=base_ckpt if base_ckpt is not None else cfg.base,
                                       label_names=labels, norm=cfg.norm, trainable_layers=cfg.trainable_layers,
                                       **kw)
            if kind == "checkpoint":
                cfg.arch = base_ckpt["arch"]
            fresh = kind != "checkpoint" or list(base_ckpt["label_names"]) != labels
            if fresh:
                init_predictors(model)
        policy = validate_policy(policy)
        cfg.normalization = policy
        self.resolved = cfg
        m = model
        m.roi_heads.fg_bg_sampler.batch_size_per_image = int(cfg.rois_per_image)
        m.rpn._post_nms_top_n["training"] = int(cfg.rpn_post_nms_train)
        m.rpn._pre_nms_top_n["training"] = int(cfg.rpn_post_nms_train)
        use_chunked_anchor_matching(m)  # dense images: no gt x anchors IoU matrix (same matches)
        device = self.device
        model.to(device)
        if cfg.channels_last:
            model.to(memory_format=torch.channels_last)
            if hasattr(model.transform, "channels_last"):
                model.transform.channels_last = True
        if self._world > 1 and device.type == "cuda" and model.maskloop_config.get("norm") == "bn":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        self.model = model

        # optimizer (no weight decay on norm layers and biases) ------------------------------
        decay, no_decay = [], []
        for name, p in model.named_parameters():
            if not p.requires_grad:
                continue
            (no_decay if p.ndim <= 1 else decay).append(p)
        groups = [{"params": decay, "weight_decay": cfg.weight_decay},
                  {"params": no_decay, "weight_decay": 0.0}]
        if cfg.optimizer == "sgd":
            opt = torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)
        else:
            opt = torch.optim.AdamW(groups, lr=cfg.lr)
        self.optimizer = opt
        # An explicit bf16/fp16 runs on any device (CPU autocast too: the same code path as
        # CUDA, which is how the tests exercise it); fp16 needs loss scaling, bf16 does not.
        amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.amp)
        scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)

        train_model: nn.Module = model
        if self._world > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP
            train_model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None,
                              find_unused_parameters=False)

        aug = Augment(crop=int(cfg.crop)) if cfg.augment else Augment.none(crop=int(cfg.crop))
        if cfg.scale_jitter:
            aug.scale_jitter = tuple(float(v) for v in cfg.scale_jitter)
        train_ds = InstanceDataset(train_items, policy, aug, seed=np_seed, cache_bytes=cfg.cache_mb << 20,
                                   packed_masks=True)  # read by lean_mask_targets() in the step
        val_ds = InstanceDataset(val_items, policy, None, seed=np_seed, cache_bytes=cfg.cache_mb << 20)
        bs = int(cfg.batch_size)
        ipe = len(epoch_batches(len(train_ds), bs, 1, cfg.seed, rank=self._rank, world=self._world))
        total = ipe * int(cfg.epochs)
        warmup = cfg.warmup_iters if cfg.warmup_iters is not None else int(min(500, max(10, 0.1 * total)))
        warmup = min(int(warmup), max(0, total - 1))
        cfg.warmup_iters = warmup

        # state ----------------------------------------------------------------------------
        start_epoch, start_iter = 1, 0
        best = {}
        best_score = -math.inf
        bad_epochs = 0
        history: list = []
        if ckpt is not None:
            if "optimizer" in ckpt:
                opt.load_state_dict(ckpt["optimizer"])
            if state.get("scaler") and scaler.is_enabled():
                scaler.load_state_dict(state["scaler"])
            start_epoch, start_iter = int(state["epoch"]), int(state["iter"])
            if state.get("epoch_done"):  # saved after validation: the next epoch starts
                start_epoch, start_iter = start_epoch + 1, 0
            best = dict(state.get("best") or {})
            best_score = float(state.get("best_score", -math.inf))
            bad_epochs = int(state.get("bad_epochs", 0))
            history = list(state.get("history") or [])
            rng = state.get("rng_cpu")
            if isinstance(rng, torch.Tensor):
                torch.set_rng_state(rng)
            if device.type == "cuda" and isinstance(state.get("rng_cuda"), torch.Tensor):
                torch.cuda.set_rng_state(state["rng_cuda"], device)
        self.global_iter = (start_epoch - 1) * ipe + start_iter

        if self._rank == 0:
            atomic_write_json(run_dir / "config.json", self._config_json(cfg, data, train_items, val_items, policy))
            if not (run_dir / "snapshot.json").exists():
                atomic_write_json(run_dir / "snapshot.json", data.to_json(), indent=None)
        self._emit("start", epochs=int(cfg.epochs), iters_per_epoch=ipe, device=str(device),
                   train_items=len(train_items), val_items=len(val_items), run=self.run_id,
                   arch=cfg.arch, base=cfg.base, world_size=self._world, resumed=bool(ckpt is not None),
                   start_epoch=start_epoch, start_iter=start_iter, dropped=dict(data.dropped),
                   instances=sum(len(it.instances) for it in train_items), batch_size=bs,
                   normalization=policy)
        self.started = True
        self._hook("before_train")

        t_iter_sum, n_timed, t_val_sum, n_val = 0.0, 0, 0.0, 0
        stopped_early = False
        gen = torch.Generator()  # the loader draws its worker seeds here, not from the global RNG
        gen.manual_seed(cfg.seed)
        sampler = EpochBatches()
        workers = int(cfg.num_workers)
        loader = torch.utils.data.DataLoader(
            train_ds, batch_sampler=sampler, collate_fn=collate, num_workers=workers, generator=gen,
            pin_memory=device.type == "cuda", persistent_workers=workers > 0)
        in_step = False
        epoch = start_epoch
        self.epoch, self.iter = start_epoch, start_iter
        loss_sum, loss_n = 0.0, 0
        try:
            for epoch in range(start_epoch, int(cfg.epochs) + 1):
                self.epoch = epoch
                train_ds.set_epoch(epoch)
                batches = epoch_batches(len(train_ds), bs, epoch, cfg.seed, rank=self._rank, world=self._world)
                first = start_iter if epoch == start_epoch else 0
                sampler.set(batches[first:], epoch)
                train_model.train()
                loss_sum, loss_n = 0.0, 0
                if epoch == start_epoch and ckpt is not None and not state.get("epoch_done"):
                    loss_sum, loss_n = float(state.get("loss_sum", 0.0)), int(state.get("loss_n", 0))
                self.iter = first
                t0 = time.monotonic()
                for images, targets in loader:
                    self._check_stop()
                    self.iter += 1
                    f = lr_factor(cfg, self.global_iter, total, warmup)
                    for g in opt.param_groups:
                        g["lr"] = cfg.lr * f
                    images = [im.to(device, non_blocking=True) for im in images]
                    targets = [{k: v.to(device, non_blocking=True) for k, v in t.items()} for t in targets]
                    self._hook("before_step")
                    in_step = True
                    with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None), \
                            lean_mask_targets():
                        loss_dict = train_model(images, targets)
                    names = sorted(loss_dict)
                    stacked = torch.stack([loss_dict[k].detach().float() for k in names])
                    loss = sum(loss_dict[k] for k in names)
                    values = stacked.cpu()
                    finite = bool(torch.isfinite(values).all())
                    if self._agree(not finite):
                        in_step = False
                        opt.zero_grad(set_to_none=True)
                        bad = ", ".join(f"{k}={float(v):.4g}" for k, v in zip(names, values.tolist()))
                        keys = ", ".join(train_items[int(t["image_id"])].key for t in targets)
                        kind = "data" if not all(bool(torch.isfinite(im).all()) for im in images) else "internal"
                        raise TrainingError(
                            f"the loss became non-finite at epoch {epoch}, iteration {self.iter} ({bad}; items "
                            f"{keys}); training diverged: try a lower --lr, keep gradient clipping on, or check "
                            f"these items' annotations", kind)
                    opt.zero_grad(set_to_none=True)
                    scaler.scale(loss).backward()
                    if cfg.grad_clip and cfg.grad_clip > 0:
                        scaler.unscale_(opt)
                        torch.nn.utils.clip_grad_norm_(model.parameters(), float(cfg.grad_clip))
                    scaler.step(opt)
                    scaler.update()
                    in_step = False
                    self.global_iter += 1
                    lv = float(values.sum())
                    loss_sum += lv
                    loss_n += 1
                    self.last_loss = dict(zip(names, values.tolist()))
                    dt = time.monotonic() - t0
                    t0 = time.monotonic()
                    if not (epoch == start_epoch and self.iter == first + 1):
                        t_iter_sum += dt
                        n_timed += 1
                    avg = t_iter_sum / n_timed if n_timed else dt
                    remaining_iters = total - self.global_iter
                    val_each = (t_val_sum / n_val) if n_val else avg * max(1, len(val_items)) * 0.5
                    eta = remaining_iters * avg + (int(cfg.epochs) - epoch + 1) * (val_each if val_items else 0)
                    self._emit("iter", epoch=epoch, iter=self.iter, loss=lv,
                               losses={k: float(v) for k, v in zip(names, values.tolist())},
                               lr=float(opt.param_groups[0]["lr"]), eta_s=float(eta))
                    self._hook("after_step")
                self._check_stop()
                start_iter = 0
                # end of epoch: validate, checkpoint, early stop (rank 0 decides)
                tv = time.monotonic()
                metrics = {}
                if self._rank == 0 and val_items:
                    metrics = self._validate(model, val_ds, labels, policy, cfg)
                    t_val_sum += time.monotonic() - tv
                    n_val += 1
                train_loss = loss_sum / loss_n if loss_n else None
                improved = False
                if self._rank == 0:
                    score = metrics.get(cfg.monitor) if metrics else None
                    if score is None:  # no validation data: the latest epoch is the best
                        improved = True
                    else:
                        tie = metrics.get("mask_AP50", 0.0)
                        improved = (score > best_score + 1e-9) or (abs(score - best_score) <= 1e-9 and
                                                                     tie > best.get("mask_AP50", -1.0))
                    if improved:
                        best_score = score if score is not None else best_score
                        best = {"epoch": epoch, **{k: v for k, v in metrics.items() if isinstance(v, (int, float))}}
                        bad_epochs = 0
                    else:
                        bad_epochs += 1
                    history.append({"epoch": epoch, "metrics": _scalars(metrics), "train_loss": train_loss,
                                    "lr": float(opt.param_groups[0]["lr"])})
                    if improved:
                        mbuild.save_checkpoint(best_path, model, label_names=labels, normalization=policy,
                                               config=cfg.to_json(), metrics=_scalars(metrics), epoch=epoch,
                                               run=self.run_id, extra={"largest_object": self._largest})
                    self._save_last(last_path, model, opt, scaler, cfg, labels, policy, epoch, ipe,
                                    best, best_score, bad_epochs, history, metrics, epoch_done=True)
                stop_early = bool(cfg.early_stop) and bad_epochs >= int(cfg.early_stop) and epoch < int(cfg.epochs)
                stop_early = self._agree(stop_early, src_rank_only=True)
                self._emit("epoch", epoch=epoch, metrics=_main_metrics(metrics),
                           checkpoint=self._shown(last_path), best=improved, train_loss=train_loss,
                           all_metrics=_scalars(metrics), model=self._shown(best_path),
                           early_stop=stop_early)
                self._hook("after_epoch")
                if stop_early:
                    stopped_early = True
                    break
        except (CancelledError, KeyboardInterrupt):
            # a consistent state (between two steps) is saved; an interrupt inside a step
            # leaves the checkpoint of the last epoch
            if self._rank == 0 and not in_step:
                self._save_last(last_path, model, opt, scaler, cfg, labels, policy, self.epoch, ipe,
                                best, best_score, bad_epochs, history, None, it=self.iter,
                                partial_loss=(loss_sum, loss_n))
                self._write_metrics(run_dir, "cancelled", best, history, cfg, train_items, val_items, data)
            raise CancelledError(f"cancelled at epoch {self.epoch}, iteration {self.iter}; "
                                 f"resume with --resume {self.run_id}")
        # done ----------------------------------------------------------------------------
        if self._rank == 0 and best_path.exists():
            os.replace(best_path, model_path)  # a finished run (Project.list_models) has model.pt
        result = FitResult(self.run_id, run_dir, model_path if model_path.exists() else None, best, history,
                           epoch, stopped_early, len(train_items), len(val_items),
                           [it.key for it in val_items], cfg.to_json())
        if self._rank == 0:
            self._write_metrics(run_dir, "done", best, history, cfg, train_items, val_items, data,
                                stopped_early=stopped_early, seconds=time.monotonic() - t_start)
            if not cfg.keep_last and last_path.exists():
                last_path.unlink()
        self._hook("after_train")
        self._emit("done", run=self.run_id, model=self._shown(model_path), best=best,
                   epochs_run=epoch, stopped_early=stopped_early, seconds=round(time.monotonic() - t_start, 2))
        d = _dist()
        if d is not None:
            d.barrier()
        return result

    # -- pieces ---------------------------------------------------------------------------
    def _check_stop(self, local: bool = False) -> None:
        wanted = self._stop or (self.cancel is not None and self.cancel.cancelled)
        if (wanted if local else self._agree(wanted)):
            raise CancelledError()

    def _agree(self, flag: bool, src_rank_only: bool = False) -> bool:
        """Under DDP: True on every rank when any rank (or rank 0 only) says True."""
        d = _dist()
        if d is None:
            return bool(flag)
        dev = self.device if self.device is not None and self.device.type == "cuda" else torch.device("cpu")
        t = torch.tensor([1.0 if flag else 0.0], device=dev)
        if src_rank_only:
            d.broadcast(t, src=0)
        else:
            d.all_reduce(t, op=d.ReduceOp.MAX)
        return bool(t.item() > 0)

    def _validate(self, model: nn.Module, val_ds: InstanceDataset, labels, policy, cfg) -> dict:
        from .evaluate import evaluate
        from .predict import Predictor
        kw = {}
        if cfg.val_tile:
            kw["tile"] = int(cfg.val_tile)
        was_training = model.training
        pred = Predictor.from_model(model, labels, policy, device=self.device, run=self.run_id, copy_model=True,
                                    largest_object=self._largest or None, **kw)
        limit_proposals(pred, val_ds.items)
        pairs = []
        try:
            for i, it in enumerate(val_ds.items):
                self._check_stop(local=True)
                raw, _ = val_ds.raw(i)
                insts = pred.predict(raw, score_threshold=cfg.val_score_threshold, cancel=self.cancel)
                gt = ItemAnnotation(it.key, it.height, it.width, list(it.instances), "reviewed")
                pairs.append((gt, insts))
        finally:
            del pred
            model.train(was_training)
        return evaluate(pairs, labels, acc_score_threshold=0.5, per_class=False)

    def _save_last(self, path, model, opt, scaler, cfg, labels, policy, epoch, ipe, best, best_score,
                   bad_epochs, history, metrics, it: Optional[int] = None, epoch_done: bool = False,
                   partial_loss: tuple = (0.0, 0)) -> None:
        st = {"epoch": int(epoch), "iter": int(ipe if it is None else it), "epoch_done": bool(epoch_done),
              "global_iter": int(self.global_iter),
              "best": best, "best_score": float(best_score) if math.isfinite(best_score) else -1e30,
              "bad_epochs": int(bad_epochs), "history": history, "rng_cpu": torch.get_rng_state(),
              "loss_sum": float(partial_loss[0]), "loss_n": int(partial_loss[1])}
        if self.device is not None and self.device.type == "cuda":
            st["rng_cuda"] = torch.cuda.get_rng_state(self.device)
        if scaler.is_enabled():
            st["scaler"] = scaler.state_dict()
        mbuild.save_checkpoint(path, model, label_names=labels, normalization=policy, config=cfg.to_json(),
                               metrics=_scalars(metrics or {}), epoch=int(epoch), optimizer=opt,
                               run=self.run_id, extra={"trainer": st})

    def _config_json(self, cfg, data, train_items, val_items, policy) -> dict:
        return {"run": self.run_id, "arch": cfg.arch, "base": cfg.base, "labels": list(data.label_names),
                "normalization": policy, "train": cfg.to_json(), "data": {
                    "origin": data.origin, "train_items": [it.key for it in train_items],
                    "val_items": [it.key for it in val_items], "dropped": dict(data.dropped)},
                "world_size": self._world, "torch": str(torch.__version__)}

    def _write_metrics(self, run_dir, status, best, history, cfg, train_items, val_items, data, **extra) -> None:
        out = {"status": status, "monitor": cfg.monitor, "best": best,
               **{k: best.get(k) for k in ("mask_AP", "mask_AP50", "acc50") if k in best},
               "epoch": best.get("epoch"), "history": history, "train_items": len(train_items),
               "val_items": len(val_items), "dropped": dict(data.dropped), **extra}
        atomic_write_json(run_dir / "metrics.json", _jsonable(out))


def _scalars(metrics: dict) -> dict:
    return {k: v for k, v in (metrics or {}).items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _main_metrics(metrics: dict) -> dict:
    keys = ("mask_AP", "mask_AP50", "acc50", "mask_AP75", "precision50", "recall50")
    return {k: float(metrics[k]) for k in keys if k in metrics}


def _jsonable(obj):
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    return obj


# --------------------------------------------------------------------------------------
# projects: snapshot, run folder, registration, activation
# --------------------------------------------------------------------------------------

def coco_snapshot(project, path, *, images_dir=None, min_size: int = 1) -> Snapshot:
    """A COCO instances file as training data for `project`: its categories that the
    project lacks are added to the project's labels (saved, as an import does), and the
    classes follow the project's label order, so the run segments the project's labels."""
    data = Snapshot.from_coco(path, images_dir=images_dir, min_size=min_size)
    added = [n for n in data.label_names if n not in project.labels]
    if added:
        for name in added:
            project.labels.add(name)
        project.save()
    return data.relabel(project.labels.names())


def train_project(project, config: Optional[TrainConfig] = None, *, callbacks=(), cancel=None,
                  resume: Optional[str] = None, items: Optional[Iterable[str]] = None,
                  run_prefix: str = "run", coco=None, coco_images=None) -> FitResult:
    """Train on a project's reviewed items into a new run folder models/<run-id>/.

    The annotations are read once, now (a snapshot kept in the run folder as snapshot.json;
    a resume reads that, not the current annotations). resume: a run id with last.pt.
    coco: train on a COCO instances file instead (every image counts as reviewed; image
    paths relative to coco_images, default the file's folder); the run is still the project's.
    Under torchrun rank 0 creates the run and the snapshot; the others read them.
    """
    config = config or TrainConfig()
    config.validate()
    world, rank, _ = dist_info()
    d = _dist()
    if resume:
        run_dir = project.models_dir / str(resume)
        if not (run_dir / "last.pt").exists():
            raise TrainingError(f"run {resume!r} has nothing to resume (no last.pt)", "data", run_dir)
        run_id = run_dir.name
        data = load_snapshot(run_dir / "snapshot.json")
    else:
        run_id = None
        if rank == 0:
            if coco is not None:
                data = coco_snapshot(project, coco, images_dir=coco_images, min_size=config.min_box_size)
                if not data.items:
                    raise DataError("the COCO file lists no images to train on", coco, "images")
            else:
                data = Snapshot.from_project(project, include_unreviewed=config.include_unreviewed, items=items,
                                             min_size=config.min_box_size, cancel=cancel)
            if not data.items:
                raise DataError("no reviewed items to train on: review some items first (or use "
                                "--include-unreviewed)", project.manifest_path)
            run_id, run_dir = project.new_run(run_prefix)
            atomic_write_json(run_dir / "snapshot.json", data.to_json(), indent=None)
        if d is not None:
            box = [run_id]
            d.broadcast_object_list(box, src=0)
            run_id = box[0]
        run_dir = project.models_dir / run_id
        if rank != 0:
            data = load_snapshot(run_dir / "snapshot.json")
    trainer = Trainer(config, callbacks)
    try:
        return trainer.fit(data, run_dir, run_id=run_id, resume=bool(resume), cancel=cancel,
                           display_root=project.root)
    except BaseException:
        # a run that failed in its setup (e.g. COCO weights not available, an unreadable
        # base checkpoint) leaves no folder behind; one that trained keeps its log and checkpoints
        if rank == 0 and not resume and not trainer.started:
            shutil.rmtree(run_dir, ignore_errors=True)
        raise


def load_snapshot(path) -> Snapshot:
    from ..project import read_json_file
    return Snapshot.from_json(read_json_file(Path(path), "training snapshot"), path)


def limit_proposals(pred, items) -> None:
    """Validation speed: at most max(100, 3x the most objects of a validation image)
    detections per image (COCO AP counts 100 per image), since the mask head runs on every
    detection, and early in training there are hundreds of low-score ones. Proposals are
    left as the Predictor has them, so validation scores what `segment` will produce.
    The same rule is used whenever two models are compared on validation items."""
    most = max((len(it.instances) for it in items), default=0)
    rh = getattr(getattr(pred, "model", None), "roi_heads", None)
    if rh is not None:
        rh.detections_per_img = int(min(rh.detections_per_img, max(100, 3 * most)))


def score_model_on(model_path, snapshot: Snapshot, keys: Sequence[str], *, device="auto",
                   score_threshold: float = 0.05, cancel=None) -> dict:
    """Metrics of a saved model on the snapshot items `keys` (e.g. another run's val items)."""
    from .evaluate import evaluate
    from .predict import Predictor
    pred = Predictor(model_path, device=device)
    wanted = set(keys)
    pairs = []
    ds = InstanceDataset([it for it in snapshot.items if it.key in wanted], {"kind": "range", "min": 0, "max": 1},
                         cache_bytes=0)
    limit_proposals(pred, ds.items)
    for i, it in enumerate(ds.items):
        raw, _ = ds.raw(i)
        insts = pred.predict(raw, score_threshold=score_threshold, cancel=cancel)
        pairs.append((ItemAnnotation(it.key, it.height, it.width, list(it.instances), "reviewed"), insts))
    return evaluate(pairs, snapshot.label_names, acc_score_threshold=0.5, per_class=False)


def maybe_activate(project, result: FitResult, *, monitor: str = "mask_AP", device="auto") -> tuple[bool, str]:
    """Make the run the active model unless the active model scores better on this run's
    validation items. Returns (activated, a sentence saying what happened and why)."""
    if result.model_path is None:
        return False, f"run {result.run} has no model; the active model is unchanged"
    new_score = result.score(monitor)
    active = project.active_model
    if not active:
        project.set_active_model(result.run)
        return True, f"made {result.run} the active model (there was none)"
    if active == result.run:
        return True, f"{result.run} is already the active model"
    try:
        active_path = project.resolve_model(active)
        ckpt = mbuild.load_checkpoint(active_path)
    except MaskLoopError as e:
        project.set_active_model(result.run)
        return True, f"made {result.run} the active model (the previous one, {active}, cannot be read: {e.message})"
    if list(ckpt["label_names"]) != project.labels.names():
        project.set_active_model(result.run)
        return True, (f"made {result.run} the active model (the previous one, {active}, predicts other classes: "
                      f"{', '.join(ckpt['label_names'])})")
    if new_score is None or not result.val_keys:
        return False, (f"kept {active} as the active model: {result.run} has no validation score to compare "
                       f"(use 'maskloop evaluate' and the Models panel to choose)")
    snap = load_snapshot(result.run_dir / "snapshot.json")
    old = score_model_on(active_path, snap, result.val_keys, device=device)
    old_score = float(old.get(monitor, 0.0))
    if new_score >= old_score:
        project.set_active_model(result.run)
        return True, (f"made {result.run} the active model ({monitor} {new_score:.3f} on its validation items, "
                      f"{active}: {old_score:.3f})")
    return False, (f"kept {active} as the active model ({monitor} {old_score:.3f} on {result.run}'s validation "
                   f"items, {result.run}: {new_score:.3f})")
