"""Trainer: fine-tuning and training from scratch of MaskLoop's Mask R-CNN models.

    trainer = Trainer(TrainConfig(epochs=20), callbacks=[print])
    result = trainer.fit(Snapshot.from_project(project), run_dir, run_id="run-1", cancel=token)

Rules (DESIGN.md section 5): no sys.exit, no process-wide settings changed (the global
torch RNG is seeded inside `torch.random.fork_rng`, so the caller's RNG state is left as
it was; thread counts are not touched), cancel is checked between iterations, a
checkpoint that can resume is written every epoch and on cancel.

The loop here does the optimisation steps; everything else is a hook
(engine.model.hooks: log, cancel, ETA, validation and early stop, checkpoints, time
budget). Progress is a stream of events (engine.events): every callback gets every
event dict; the run's log.jsonl gets them all as JSON lines. Callbacks may be plain
callables `cb(event)` or `Callback` objects with the hooks' methods.

Resume: `last.pt` in the run folder holds the model, optimizer, LR-schedule position
(the global iteration), epoch and iteration, best score, early-stop counter and the
torch RNG state; data order and augmentation are functions of (seed, epoch, index), so a
run cancelled at any iteration and resumed gives the same weights as an uninterrupted
run (same seed, CPU).

Under torchrun (WORLD_SIZE > 1, process group initialised by the caller, e.g. the CLI)
the model is wrapped in DistributedDataParallel, each rank trains on its share of every
epoch (DistributedSampler-style), and only rank 0 validates, writes checkpoints and
logs; cancel, early stop, the time budget's plan and non-finite losses are agreed on by
all ranks.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Optional

import torch

from ..errors import CancelledError, CheckpointError, MaskLoopError
from ..events import make_event
from ..fsutil import atomic_write_json
from ..jobs import CancelToken
from ..runs import config_record, now_iso as _now_iso, read_run, weights_kind
from . import distributed
from .config import TrainConfig, default_warmup, lr_factor, resolve_config
from .dataset import EpochBatches, InstanceDataset, collate, epoch_batches
from .hooks import Callback, FnCallback, JsonLog, default_hooks, jsonable, scalars
from .mask_targets import lean_mask_targets
from .setup import TrainingError, build_for_training, make_optimizer, restore
from .snapshot import DataError, Snapshot, largest_object, object_extents


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

    @property
    def weights(self) -> str:
        """What the run started from: scratch, coco, imagenet, run or path."""
        return weights_kind(self.config.get("base"))


def _is_oom(e: BaseException) -> bool:
    if isinstance(e, (getattr(torch.cuda, "OutOfMemoryError", ()), MemoryError)):
        return True
    msg = str(e)
    return isinstance(e, RuntimeError) and ("out of memory" in msg or "can't allocate memory" in msg
                                            or "not enough memory" in msg)


def _short(e: BaseException) -> str:
    msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {msg[:300]}" if msg else type(e).__name__


class Trainer:
    def __init__(self, config: Optional[TrainConfig | dict] = None,
                 callbacks: Iterable[Callback | Callable[[dict], None]] = ()):
        if config is None:
            config = TrainConfig()
        elif isinstance(config, dict):
            config = TrainConfig.from_json(config)
        config.validate()
        self.config = config
        self.callbacks: list[Callback] = [cb if isinstance(cb, Callback) else FnCallback(cb) for cb in callbacks]
        self.hooks: list[Callback] = []
        self.model = self.optimizer = self.device = self.run_id = self.cancel = None
        self.epoch = self.iter = self.global_iter = 0
        self.last_loss: dict = {}
        self._stop = False
        self._display_root: Optional[Path] = None
        self.rank, self.world = 0, 1
        self.started = False  # True once the "start" event went out (setup succeeded)

    # -- public -------------------------------------------------------------------------
    def request_stop(self) -> None:
        """Finish after the current iteration as if cancelled (saves, reports cancelled)."""
        self._stop = True

    def stop_wanted(self) -> bool:
        return self._stop or (self.cancel is not None and self.cancel.cancelled)

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
        self.run_dir = run_dir
        self.cancel = cancel
        self._stop = False
        self.started = False
        self.hooks = []
        self.world, self.rank, local_rank = distributed.dist_info()
        self._display_root = Path(display_root) if display_root is not None else None
        log = None
        if self.rank == 0:
            run_dir.mkdir(parents=True, exist_ok=True)
            log = JsonLog(log_path or run_dir / "log.jsonl")
            self.hooks = [log]
        try:
            from .device import resolve_device
            device = resolve_device(self.config.device)
            if device.type == "cuda" and self.world > 1:
                device = torch.device("cuda", local_rank)
            self.device = device
            rng_devices = [device.index if device.index is not None else torch.cuda.current_device()] \
                if device.type == "cuda" else []
            with torch.random.fork_rng(devices=rng_devices):
                return self._fit(data, run_dir, resume)
        except CancelledError as e:
            self.emit("error", kind="cancelled", message=e.message)
            raise
        except TrainingError as e:
            self.emit("error", kind=e.kind, message=e.one_line())
            raise
        except KeyboardInterrupt:
            self.emit("error", kind="cancelled", message="interrupted")
            raise
        except MaskLoopError as e:  # unreadable image, bad annotation or base checkpoint, ...
            self.emit("error", kind="data", message=e.one_line())
            raise
        except BaseException as e:
            if _is_oom(e):
                msg = f"out of memory ({_short(e)}); try a smaller --batch-size or --crop, or --device cpu"
                self.emit("error", kind="oom", message=msg)
                raise TrainingError(msg, "oom") from e
            msg = f"internal error: {_short(e)}"
            self.emit("error", kind="internal", message=msg)
            raise TrainingError(msg, "internal") from e
        finally:
            if log is not None:
                log.close()

    # -- events and hooks ---------------------------------------------------------------
    def emit(self, event_name: str, **fields) -> None:
        """Send an event to the log and every callback (rank 0 only)."""
        if self.rank != 0:
            return
        ev = make_event(event_name, **fields)
        for cb in self.hooks + self.callbacks:
            cb.on_event(ev)

    def _call(self, name: str) -> None:
        for cb in self.hooks + self.callbacks:
            getattr(cb, name)(self)

    def shown(self, path: Path) -> str:
        """A path as events show it: relative to the project root when there is one."""
        if self._display_root is not None:
            try:
                return Path(os.path.relpath(path, self._display_root)).as_posix()
            except ValueError:
                pass
        return str(path)

    # -- the plan ------------------------------------------------------------------------
    def planned_epochs(self) -> int:
        return max(1, math.ceil(self.total / self.ipe))

    def set_total(self, total: int, *, auto_warmup: bool = False) -> None:
        """A new length of the run (the time budget's plan): the LR schedule follows it."""
        self.total = max(int(total), self.global_iter)
        cfg = self.resolved
        cfg.max_iters = self.total
        cfg.epochs = self.planned_epochs()
        if auto_warmup:
            self.warmup = cfg.warmup_iters = default_warmup(self.total)
        if self.rank == 0:  # the run's config records the plan
            atomic_write_json(self.run_dir / "config.json", jsonable(self._config_record(cfg, self.data, self.policy)))

    # -- the run --------------------------------------------------------------------------
    def _fit(self, data: Snapshot, run_dir: Path, resume: bool) -> FitResult:
        self.t_start = time.monotonic()
        self.data = data
        self.resumed = resume
        self.created = read_run(run_dir).created_text if resume else None  # a resume keeps the date
        ckpt, state = None, {}
        if resume:
            ckpt, state, cfg = restore(self, run_dir / "last.pt")
        else:
            cfg = resolve_config(self.config, self.device, object_extents(data.items))
        self.resolved = cfg
        self.labels = list(data.label_names)
        if not self.labels:
            raise DataError("the training data has no classes")
        if ckpt is not None and list(ckpt["label_names"]) != self.labels:
            raise CheckpointError(f"the run was trained on classes {ckpt['label_names']}, the data has "
                                  f"{self.labels}", run_dir / "last.pt", "label_names")
        torch.manual_seed(cfg.seed)  # numpy randomness is per sample: (seed, epoch, index)
        train_idx, val_idx = data.split(cfg.val_fraction, cfg.seed)
        if not train_idx:
            raise DataError("no training items: mark some items as reviewed (or use --include-unreviewed)")
        self.train_items = [data.items[i] for i in train_idx]
        self.val_items = [data.items[i] for i in val_idx]
        self.largest = largest_object(data.items)  # saved with the model: the Predictor's tile overlap
        self.model, self.policy = build_for_training(self, self.train_items, ckpt, cfg, self.labels)
        device = self.device
        opt, self.scaler, amp_dtype, train_model = make_optimizer(self.model, cfg, device, self.world)
        self.optimizer, scaler, policy = opt, self.scaler, self.policy
        train_ds = InstanceDataset(self.train_items, policy, cfg_augment(cfg), seed=cfg.seed,
                                   cache_bytes=cfg.cache_mb << 20, packed_masks=True)
        self.val_ds = InstanceDataset(self.val_items, policy, None, seed=cfg.seed, cache_bytes=cfg.cache_mb << 20)
        bs = int(cfg.batch_size)
        self.ipe = len(epoch_batches(len(train_ds), bs, 1, cfg.seed, rank=self.rank, world=self.world))
        self.cap = self.ipe * int(cfg.epochs)
        self.total = int(cfg.max_iters) if cfg.max_iters else self.cap
        warmup = cfg.warmup_iters if cfg.warmup_iters is not None else default_warmup(self.total)
        self.warmup = cfg.warmup_iters = min(int(warmup), max(0, self.total - 1))
        start_epoch, start_iter = self._restore_state(ckpt, state, opt, scaler)
        self.global_iter = (start_epoch - 1) * self.ipe + start_iter
        if self.rank == 0:
            atomic_write_json(run_dir / "config.json", jsonable(self._config_record(cfg, data, policy)))
            if not (run_dir / "snapshot.json").exists():
                atomic_write_json(run_dir / "snapshot.json", data.to_json(), indent=None)
        self.deadline = self.t_start + 60.0 * cfg.minutes if cfg.minutes and not resume else None
        self.hooks += default_hooks(self, run_dir)
        self.emit("start", epochs=self.planned_epochs(), iters_per_epoch=self.ipe, device=str(device),
                  train_items=len(self.train_items), val_items=len(self.val_items), run=self.run_id,
                  arch=cfg.arch, base=cfg.base, weights=weights_kind(cfg.base), world_size=self.world,
                  resumed=bool(ckpt is not None), start_epoch=start_epoch, start_iter=start_iter,
                  dropped=dict(data.dropped), instances=sum(len(it.instances) for it in self.train_items),
                  batch_size=bs, normalization=policy, minutes=cfg.minutes)
        self.started = True
        self._call("before_train")
        gen = torch.Generator()  # the loader draws its worker seeds here, not from the global RNG
        gen.manual_seed(cfg.seed)
        sampler = EpochBatches()
        workers = int(cfg.num_workers)
        loader = torch.utils.data.DataLoader(
            train_ds, batch_sampler=sampler, collate_fn=collate, num_workers=workers, generator=gen,
            pin_memory=device.type == "cuda", persistent_workers=workers > 0)
        self.in_step, self.stopped_early, self.stop_early = False, False, False
        self.metrics, self.improved, self.train_loss = {}, False, None
        self.epoch, self.iter = start_epoch, start_iter
        try:
            while self.epoch <= self.planned_epochs():
                first = start_iter if self.epoch == start_epoch else 0
                train_ds.set_epoch(self.epoch)
                sampler.set(epoch_batches(len(train_ds), bs, self.epoch, cfg.seed, rank=self.rank,
                                          world=self.world)[first:], self.epoch)
                train_model.train()
                self.loss_sum, self.loss_n = 0.0, 0
                if self.epoch == start_epoch and ckpt is not None and not state.get("epoch_done"):
                    self.loss_sum, self.loss_n = float(state.get("loss_sum", 0.0)), int(state.get("loss_n", 0))
                self.iter = first
                self._call("before_epoch")
                for images, targets in loader:
                    if self.global_iter >= self.total:
                        break  # the plan (time budget) ends this epoch early
                    self._call("before_step")
                    self.iter += 1
                    self._step(train_model, opt, scaler, amp_dtype, images, targets)
                    self._call("after_step")
                self._call("before_validation")
                self._call("after_epoch")
                if self.stop_early:
                    self.stopped_early = True
                    break
                self.epoch += 1
        except (CancelledError, KeyboardInterrupt):
            for cb in self.hooks + self.callbacks:
                cb.on_cancel(self)
            raise CancelledError(f"cancelled at epoch {self.epoch}, iteration {self.iter}; "
                                 f"resume with --resume {self.run_id}")
        epochs_run = min(self.epoch, self.planned_epochs())
        self._call("after_train")
        model_path = run_dir / "model.pt"
        result = FitResult(self.run_id, run_dir, model_path if model_path.exists() else None, self.best,
                           self.history, epochs_run, self.stopped_early, len(self.train_items),
                           len(self.val_items), [it.key for it in self.val_items], cfg.to_json())
        self.emit("done", run=self.run_id, model=self.shown(model_path), best=self.best, epochs_run=epochs_run,
                  stopped_early=self.stopped_early, seconds=round(time.monotonic() - self.t_start, 2))
        distributed.barrier()
        return result

    def _step(self, train_model, opt, scaler, amp_dtype, images, targets) -> None:
        """One optimisation step: LR of the schedule, forward, a finite-loss check agreed by
        all ranks, backward with gradient clipping, optimizer step."""
        cfg, device = self.resolved, self.device
        f = lr_factor(cfg, self.global_iter, self.total, self.warmup)
        for g in opt.param_groups:
            g["lr"] = cfg.lr * f
        images = [im.to(device, non_blocking=True) for im in images]
        targets = [{k: v.to(device, non_blocking=True) for k, v in t.items()} for t in targets]
        self.in_step = True
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None), lean_mask_targets():
            loss_dict = train_model(images, targets)
        names = sorted(loss_dict)
        values = torch.stack([loss_dict[k].detach().float() for k in names]).cpu()
        loss = sum(loss_dict[k] for k in names)
        if distributed.agree(not bool(torch.isfinite(values).all()), device):
            self.in_step = False
            opt.zero_grad(set_to_none=True)
            bad = ", ".join(f"{k}={float(v):.4g}" for k, v in zip(names, values.tolist()))
            keys = ", ".join(self.train_items[int(t["image_id"])].key for t in targets)
            kind = "data" if not all(bool(torch.isfinite(im).all()) for im in images) else "internal"
            raise TrainingError(
                f"the loss became non-finite at epoch {self.epoch}, iteration {self.iter} ({bad}; items "
                f"{keys}); training diverged: try a lower --lr, keep gradient clipping on, or check "
                f"these items' annotations", kind)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if cfg.grad_clip and cfg.grad_clip > 0:
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), float(cfg.grad_clip))
        scaler.step(opt)
        scaler.update()
        self.in_step = False
        self.global_iter += 1
        self.step_loss = float(values.sum())
        self.loss_sum += self.step_loss
        self.loss_n += 1
        self.last_loss = dict(zip(names, values.tolist()))

    def _restore_state(self, ckpt, state, opt, scaler) -> tuple[int, int]:
        """Position, best epoch, early-stop counter, history and RNG of a resumed run."""
        self.best, self.best_score, self.bad_epochs, self.history = {}, -math.inf, 0, []
        if ckpt is None:
            return 1, 0
        if "optimizer" in ckpt:
            opt.load_state_dict(ckpt["optimizer"])
        if state.get("scaler") and scaler.is_enabled():
            scaler.load_state_dict(state["scaler"])
        start_epoch, start_iter = int(state["epoch"]), int(state["iter"])
        if state.get("epoch_done"):  # saved after validation: the next epoch starts
            start_epoch, start_iter = start_epoch + 1, 0
        self.best = dict(state.get("best") or {})
        self.best_score = float(state.get("best_score", -math.inf))
        self.bad_epochs = int(state.get("bad_epochs", 0))
        self.history = list(state.get("history") or [])
        if isinstance(state.get("rng_cpu"), torch.Tensor):
            torch.set_rng_state(state["rng_cpu"])
        if self.device.type == "cuda" and isinstance(state.get("rng_cuda"), torch.Tensor):
            torch.cuda.set_rng_state(state["rng_cuda"], self.device)
        return start_epoch, start_iter

    # -- used by the hooks ----------------------------------------------------------------
    def validate(self, items: Optional[list] = None) -> dict:
        """Metrics of the model being trained on the validation items, or on `items` of
        them (the time budget times one); a copy of the model predicts."""
        from .predictor import Predictor
        from .validation import score_items
        cfg = self.resolved
        ds = self.val_ds if items is None else InstanceDataset(items, self.policy, None, seed=cfg.seed)
        kw = {"tile": int(cfg.val_tile)} if cfg.val_tile else {}
        was_training = self.model.training
        pred = Predictor.from_model(self.model, self.labels, self.policy, device=self.device, run=self.run_id,
                                    copy_model=True, largest_object=self.largest or None, **kw)
        try:
            return score_items(pred, ds, self.labels, score_threshold=cfg.val_score_threshold,
                               cancel=self.cancel, before_item=self._check_stop_local)
        finally:
            del pred
            self.model.train(was_training)

    def _check_stop_local(self) -> None:
        if self.stop_wanted():
            raise CancelledError()

    def save_model(self, path: Path, metrics: dict) -> None:
        from .checkpoint import save_checkpoint
        save_checkpoint(path, self.model, label_names=self.labels, normalization=self.policy,
                        config=self.resolved.to_json(), metrics=scalars(metrics), epoch=self.epoch,
                        run=self.run_id, extra={"largest_object": self.largest})

    def save_state(self, path: Path, *, epoch_done: bool) -> None:
        """last.pt: everything a resume needs, at the end of an epoch or between two steps."""
        from .checkpoint import save_checkpoint
        st = {"epoch": int(self.epoch), "iter": int(self.iter), "epoch_done": bool(epoch_done),
              "global_iter": int(self.global_iter), "best": self.best,
              "best_score": float(self.best_score) if math.isfinite(self.best_score) else -1e30,
              "bad_epochs": int(self.bad_epochs), "history": self.history, "rng_cpu": torch.get_rng_state(),
              "loss_sum": float(0.0 if epoch_done else self.loss_sum),
              "loss_n": int(0 if epoch_done else self.loss_n)}
        if self.device is not None and self.device.type == "cuda":
            st["rng_cuda"] = torch.cuda.get_rng_state(self.device)
        if self.scaler.is_enabled():
            st["scaler"] = self.scaler.state_dict()
        save_checkpoint(path, self.model, label_names=self.labels, normalization=self.policy,
                        config=self.resolved.to_json(), metrics=scalars(self.metrics if epoch_done else {}),
                        epoch=int(self.epoch), optimizer=self.optimizer, run=self.run_id, extra={"trainer": st})

    def _config_record(self, cfg, data, policy) -> dict:
        self.created = self.created or _now_iso()
        return config_record(run=self.run_id, created=self.created, arch=cfg.arch, base=cfg.base,
                             labels=data.label_names,
                             normalization=policy, train=cfg.to_json(), origin=data.origin,
                             train_keys=[it.key for it in self.train_items],
                             val_keys=[it.key for it in self.val_items], dropped=data.dropped,
                             world_size=self.world, torch_version=str(torch.__version__))


def cfg_augment(cfg):
    from .transforms import Augment
    aug = Augment(crop=int(cfg.crop)) if cfg.augment else Augment.none(crop=int(cfg.crop))
    if cfg.scale_jitter:
        aug.scale_jitter = tuple(float(v) for v in cfg.scale_jitter)
    return aug
