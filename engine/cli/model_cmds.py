"""Model subcommands: segment, train, evaluate, demo (DESIGN.md section 6).

    maskloop segment PROJECT [--model RUN_OR_PATH] [--items all|new|ID...] [--score 0.5] [--tile N] [--overlap N]
                     [--device auto|cpu|cuda] [--resume]
    maskloop train PROJECT [--arch NAME] [--base scratch|coco|imagenet|active|RUN_OR_PATH] [--epochs N] [--minutes N]
                   [--device auto|cpu|cuda] [--progress jsonl] [--batch-size N] [--lr X]
                   [--optimizer adamw|sgd] [--seed N] [--val-fraction F] [--crop N]
                   [--scale-jitter LO,HI] [--early-stop N] [--include-unreviewed] [--workers N]
                   [--resume RUN] [--no-activate] [--coco FILE [--coco-images DIR]] [--amp auto|bf16|fp16|off]
    maskloop evaluate PROJECT [--model RUN_OR_PATH] [--items all|val|ID...] [--score 0.05] [--tile N] [--overlap N]
                      [--device auto|cpu|cuda] [--json]
    maskloop demo [DIR]

torch is imported inside the handlers only, so `maskloop info` and friends never load it.
`segment` under torchrun shares the items out over the ranks (engine.model.batch_segment).
`train` under torchrun (WORLD_SIZE > 1) initialises the process group (NCCL on CUDA,
gloo on CPU) and trains with DistributedDataParallel; rank 0 alone writes and prints.
Ctrl+C (or SIGTERM) during train saves a resumable checkpoint and reports "cancelled";
a second Ctrl+C stops at once.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path
from typing import Optional

from ..errors import CancelledError, MaskLoopError, ProjectError
from ..jobs import CancelToken, TerminalProgress
from ..results import DEFAULT_SCORE
from .argtypes import MIN_TILE, check_tiling, number, tile_size, usage_error

ARCH_CHOICES = ("auto", "r18fpn", "r18fpn_lite", "r50fpn", "r50fpn_v2", "r101fpn", "x101fpn")
DEFAULT_EPOCHS = 30
BUDGET_EPOCH_CAP = 10000   # --minutes without --epochs: the budget decides


_positive_int = number(int, 1)
_nonneg_int = number(int, 0)
_score = number(float, 0.0, 1.0)
_positive_float = number(float, 0.0, low_open=True)
_val_fraction = number(float, 0.0, 1.0, high_open=True)


def _jitter(text: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LO,HI (e.g. 0.8,1.25), got {text!r}") from None
    if not 0 < lo <= hi:
        raise argparse.ArgumentTypeError(f"needs 0 < LO <= HI, got {text}")
    return lo, hi


def _add_predictor_args(p) -> None:
    """--tile, --overlap and --device: how segment and evaluate run the Predictor."""
    p.add_argument("--tile", type=tile_size, default=None, metavar="N",
                   help=f"tile size for large images (default 1024, at least {MIN_TILE}; 0: never tile)")
    p.add_argument("--overlap", type=_nonneg_int, default=None, metavar="N",
                   help="tile overlap in px (default: tile/8, widened to the largest object the model "
                        "was trained on)")
    p.add_argument("--device", default="auto", help="auto (CUDA, MPS, CPU), cpu, cuda, cuda:N")
    p.set_defaults(cross_checks=[_check_tiling], subparser=p)


def _check_tiling(args):
    if args.overlap is None or args.tile is not None:
        return check_tiling(args, 0)
    from ..model.predictor import DEFAULT_TILE  # imports torch: only when the default matters
    return check_tiling(args, DEFAULT_TILE)


def register(subparsers) -> None:
    p = subparsers.add_parser("segment", help="auto-segment items with a model",
                              description="Run a model on items and save the results as 'predicted'. "
                                          "Reviewed items are never overwritten.")
    p.add_argument("project", metavar="PROJECT")
    p.add_argument("--model", default=None, metavar="RUN_OR_PATH",
                   help="run id or model file (default: the project's active model)")
    p.add_argument("--items", nargs="+", default=["all"], metavar="all|new|ID",
                   help="which items: all (default), new (never segmented or annotated), or item ids")
    p.add_argument("--score", type=_score, default=DEFAULT_SCORE,
                   help=f"score threshold (default {DEFAULT_SCORE})")
    p.add_argument("--resume", action="store_true",
                   help="skip the items an interrupted run of the same command already wrote")
    _add_predictor_args(p)
    p.set_defaults(func=cmd_segment)

    p = subparsers.add_parser("train", help="train a model on the reviewed items",
                              description="Train (or fine-tune) a Mask R-CNN on the project's reviewed items. "
                                          "The run is saved in models/<run-id>/ and becomes the active model "
                                          "if it validates at least as well as the current one.")
    p.add_argument("project", metavar="PROJECT")
    p.add_argument("--arch", default="auto", choices=ARCH_CHOICES,
                   help="architecture (default auto: r18fpn_lite on CPU, r50fpn on CUDA)")
    p.add_argument("--base", default="auto", metavar="scratch|coco|imagenet|active|RUN_OR_PATH",
                   help="starting weights (default auto: COCO weights when they are in the torch cache, "
                        "else a cached ImageNet backbone, else scratch; nothing is downloaded); "
                        "'active' = the project's active model")
    p.add_argument("--epochs", type=_positive_int, default=None, metavar="N",
                   help=f"epochs (default {DEFAULT_EPOCHS}; with --minutes: at most N)")
    p.add_argument("--minutes", type=_positive_float, default=None, metavar="N",
                   help="time budget: plan the run (iterations, LR schedule) to end within N minutes, "
                        "validating and saving as usual")
    p.add_argument("--device", default="auto", help="auto (CUDA, MPS, CPU), cpu, cuda, cuda:N")
    p.add_argument("--progress", choices=("bar", "jsonl"), default="bar",
                   help="jsonl: one JSON event per line on stdout (for programs); bar: a terminal bar")
    p.add_argument("--batch-size", type=_positive_int, default=None, metavar="N",
                   help="images per step and process (default 2 on CPU, 4 on CUDA)")
    p.add_argument("--lr", type=_positive_float, default=None, metavar="X", help="base learning rate")
    p.add_argument("--optimizer", choices=("adamw", "sgd"), default="adamw")
    p.add_argument("--schedule", choices=("cosine", "step", "constant"), default="cosine",
                   help="LR decay after the warm-up (default cosine)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--val-fraction", type=_val_fraction, default=0.2, metavar="F",
                   help="share of reviewed items held out for validation (default 0.2)")
    p.add_argument("--crop", type=_nonneg_int, default=None, metavar="N",
                   help="train on random N x N crops of larger images (default 1024 CUDA; CPU: twice the "
                        "90th-percentile object size, 256-512; 0: whole images)")
    p.add_argument("--anchors", choices=("fit", "default"), default="fit",
                   help="anchor layout of a new model: fitted to the training objects (default) or the "
                        "architecture's fixed sizes")
    p.add_argument("--scale-jitter", type=_jitter, default=None, metavar="LO,HI",
                   help="random rescaling, e.g. 0.8,1.25 (default off: native resolution)")
    p.add_argument("--no-augment", action="store_true", help="no flips, rotations or intensity changes")
    p.add_argument("--early-stop", type=_nonneg_int, default=None, metavar="N",
                   help="stop after N epochs without a better validation score (0: never; "
                        "default: 5 with --minutes, else never)")
    p.add_argument("--include-unreviewed", action="store_true",
                   help="also train on items that are not reviewed (their current instances)")
    p.add_argument("--workers", type=_nonneg_int, default=None, metavar="N", help="data loader processes")
    p.add_argument("--resume", default=None, metavar="RUN", help="continue a cancelled run")
    p.add_argument("--no-activate", action="store_true", help="do not change the active model")
    p.add_argument("--coco", default=None, metavar="FILE",
                   help="train on a COCO instances file instead of the reviewed items (its categories "
                        "are added to the project's labels; the run is saved in the project)")
    p.add_argument("--coco-images", default=None, metavar="DIR",
                   help="folder the COCO file's image paths are relative to (default: the file's folder)")
    p.add_argument("--amp", choices=("auto", "bf16", "fp16", "off"), default="auto",
                   help="mixed precision (default auto: bf16 or fp16 on CUDA, off on CPU)")
    p.set_defaults(func=cmd_train)

    p = subparsers.add_parser("evaluate", help="score a model on reviewed items",
                              description="Run a model on reviewed items and print COCO mask AP, AP50 and "
                                          "the accuracy TP/(TP+FP+FN) at IoU 0.5. Nothing is saved.")
    p.add_argument("project", metavar="PROJECT")
    p.add_argument("--model", default=None, metavar="RUN_OR_PATH",
                   help="run id or model file (default: the active model)")
    p.add_argument("--items", nargs="+", default=["all"], metavar="all|val|ID",
                   help="all reviewed items (default), val (the model's own validation items), or item ids")
    p.add_argument("--score", type=_score, default=0.05,
                   help="keep predictions above this score for AP (default 0.05; acc50 uses 0.5)")
    _add_predictor_args(p)
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.set_defaults(func=cmd_evaluate)

    p = subparsers.add_parser("demo", help="create a sample project",
                              description="Create a sample project from synthetic CT-like (rock grains, "
                                          "16-bit stack) and microscopy-like (nuclei) images, a few reviewed.")
    p.add_argument("dir", nargs="?", default="maskloop-demo", metavar="DIR",
                   help="a new or empty folder (default ./maskloop-demo)")
    p.add_argument("--size", type=_positive_int, default=256, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_demo)


# --------------------------------------------------------------------------------------
# segment
# --------------------------------------------------------------------------------------

def _select_items(project, tokens: list[str]) -> list[str]:
    if tokens == ["all"]:
        return [it.id for it in project.items]
    if tokens == ["new"]:
        st = project.statuses()
        return [it.id for it in project.items if st.get(it.id) == "new"]
    if "all" in tokens or "new" in tokens:
        raise ProjectError("--items takes 'all', 'new' or item ids, not a mix", field="--items")
    for t in tokens:
        project.item(t)  # ProjectError naming the unknown id
    return list(dict.fromkeys(tokens))


def _tiling(args) -> Optional[dict]:
    """Predictor tile/overlap arguments of segment and evaluate (None: a usage error, reported)."""
    kw = {}
    if args.tile is not None:
        kw["tile"] = args.tile
    if args.overlap is not None:  # checked against the tile at parse time (argtypes.check_tiling)
        kw["overlap"] = args.overlap
    return kw


def cmd_segment(args) -> int:
    from ..project import Project
    proj = Project.open(args.project)
    ids = _select_items(proj, args.items)
    model_path = proj.resolve_model(args.model)
    if not ids:
        print("nothing to segment (no matching items)")
        return 0
    from ..model.predictor import Predictor
    tiling = _tiling(args)
    if tiling is None:
        return 2
    # under torchrun the items are shared out over the ranks (engine.model.batch_segment)
    from ..model import distributed
    from ..model.batch_segment import run_key, segment_distributed
    from ..objects import link_after_segment  # slices of a stack: instances become 3-D objects
    started = distributed.init_from_env(args.device)
    try:
        _, rank, _ = distributed.dist_info()
        pred = Predictor(model_path, device=args.device, expected_labels=proj.labels, **tiling)
        res = segment_distributed(proj, pred, ids, score_threshold=args.score, tile=args.tile, resume=args.resume,
                                  key=run_key(model_path, ids, args.score, args.tile, args.overlap),
                                  progress=TerminalProgress("segmenting") if rank == 0 else None,
                                  after=lambda done: link_after_segment(proj, done))
    finally:
        if started:
            distributed.shutdown()
    if rank != 0:
        return 0
    t = res["total"]
    extra = (f"; skipped {t['skipped']} reviewed item(s)" if t["skipped"] else "") + \
        (f"; {t['resumed']} item(s) already done by the interrupted run" if t["resumed"] else "")
    print(f"segmented {t['predicted']} item(s) with {pred.run or model_path}: {t['instances']} instance(s){extra}"
          + (f" on {res['world']} processes" if res["world"] > 1 else ""))
    linked = t["after"]
    if linked:
        print(f"linked them across slices into {linked['objects']} 3-D object(s) on {linked['stacks']} stack(s)")
    return 0


# --------------------------------------------------------------------------------------
# train
# --------------------------------------------------------------------------------------

class _Signals:
    """First SIGINT/SIGTERM: cancel gracefully (checkpoint, 'cancelled'); second: interrupt."""

    def __init__(self, token: CancelToken, quiet: bool):
        self.token, self.quiet = token, quiet
        self.old = {}

    def _handler(self, signum, frame):
        if self.token.cancelled:
            raise KeyboardInterrupt
        self.token.cancel()
        if not self.quiet:
            print("\nstopping after this iteration (press Ctrl+C again to stop at once)", file=sys.stderr)

    def __enter__(self):
        import threading
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                try:
                    self.old[sig] = signal.signal(sig, self._handler)
                except (ValueError, OSError):
                    pass
        return self

    def __exit__(self, *exc):
        for sig, h in self.old.items():
            try:
                signal.signal(sig, h)
            except (ValueError, OSError):
                pass


class _EndTracker:
    """Forwards events; `ensure_end` writes an "error" event when the stream has not
    ended yet (a failure before the Trainer could report it), so a program reading the
    JSON lines always sees how the run ended."""

    def __init__(self, sink):
        self.sink, self.ended = sink, False

    def __call__(self, ev: dict) -> None:
        if ev.get("event") in ("done", "error"):
            self.ended = True
        self.sink(ev)

    def ensure_end(self, kind: str, message: str) -> None:
        if not self.ended:
            self({"event": "error", "kind": kind if kind in ("oom", "data", "cancelled", "internal") else "data",
                  "message": message})


def describe_weights(base) -> str:
    """'scratch', 'COCO weights', 'ImageNet weights', 'run RUN' or 'file NAME'."""
    from ..runs import weights_kind
    kind = weights_kind(base)
    if kind == "run":
        return f"run {Path(str(base)).parent.name}"
    if kind == "path":
        return f"file {Path(str(base)).name}"
    return {"scratch": "scratch", "coco": "COCO weights", "imagenet": "ImageNet weights"}[kind]


def _resolve_base(proj, base: str) -> str:
    if base in ("auto", "scratch", "coco", "imagenet"):
        return base
    if base == "active":
        return str(proj.resolve_model(None))
    return str(proj.resolve_model(base))


def cmd_train(args) -> int:
    from ..project import Project
    if args.coco_images and not args.coco:
        return usage_error("train", "--coco-images needs --coco")
    if args.minutes and args.resume:
        return usage_error("train", "--minutes does not go with --resume (a resumed run continues its own plan)")
    if args.coco and (args.resume or args.include_unreviewed):
        return usage_error("train", "--coco trains on the COCO file: it does not go with "
                                     + ("--resume" if args.resume else "--include-unreviewed"))
    proj = Project.open(args.project)
    jsonl = args.progress == "jsonl"
    base = _resolve_base(proj, args.base) if not args.resume else "auto"
    from ..model import distributed
    from ..model.train import TrainConfig, maybe_activate, train_project, dist_info
    from ..events import JsonlWriter, activated_event
    from ..model.progress import TerminalBar
    epochs = args.epochs or (BUDGET_EPOCH_CAP if args.minutes else DEFAULT_EPOCHS)
    cfg = TrainConfig(arch=args.arch, base=base, epochs=epochs, minutes=args.minutes,
                      batch_size=args.batch_size, lr=args.lr,
                      optimizer=args.optimizer, schedule=args.schedule, device=args.device, seed=args.seed,
                      val_fraction=args.val_fraction, crop=args.crop, scale_jitter=args.scale_jitter,
                      anchors=args.anchors,
                      augment=not args.no_augment, early_stop=args.early_stop,
                      include_unreviewed=args.include_unreviewed, num_workers=args.workers, amp=args.amp)
    cfg.validate()
    if args.resume and not jsonl and os.environ.get("RANK", "0") == "0":
        print(f"resuming {args.resume} with its saved settings (device and workers from this command)",
              file=sys.stderr)
    started = distributed.init_from_env(args.device)
    try:
        world, rank, _ = dist_info()
        callbacks = []
        sink = _EndTracker(JsonlWriter(stream=sys.stdout)) if jsonl and rank == 0 else None
        if rank == 0:
            callbacks.append(sink if sink is not None else TerminalBar(sys.stderr))
        token = CancelToken()
        with _Signals(token, quiet=jsonl or rank != 0):
            try:
                result = train_project(proj, cfg, callbacks=callbacks, cancel=token, resume=args.resume,
                                       coco=args.coco, coco_images=args.coco_images)
            except CancelledError as e:
                if sink is not None:
                    sink.ensure_end("cancelled", e.message)
                if rank == 0:
                    print(f"maskloop train: {e.message}", file=sys.stderr)
                return 1
            except MaskLoopError as e:  # e.g. no reviewed items: fails before the Trainer reports
                if sink is not None:
                    sink.ensure_end(getattr(e, "kind", "data"), e.one_line())
                raise
            except KeyboardInterrupt:
                if sink is not None:
                    sink.ensure_end("cancelled", "interrupted")
                raise
            except Exception as e:
                if sink is not None:
                    sink.ensure_end("internal", f"{type(e).__name__}: {e}")
                raise
        if rank != 0:
            return 0
        best = result.best
        summary = ", ".join(f"{k} {best[k]:.3f}" for k in ("mask_AP", "mask_AP50", "acc50") if k in best)
        out = sys.stderr if jsonl else sys.stdout
        print(f"trained {result.run} ({result.config.get('arch')} from {describe_weights(result.config.get('base'))}, "
              f"{result.epochs_run} epoch(s), "
              f"{result.train_items} train / {result.val_items} val items)"
              + (f"; best epoch {best.get('epoch')}: {summary}" if summary else ""), file=out)
        proj = Project.open(args.project)  # the manifest may have changed meanwhile
        if args.no_activate:
            active = proj.active_model == result.run
            message = f"left the active model as it is (--no-activate): {proj.active_model or 'none'}"
        else:
            active, message = maybe_activate(proj, result, device=args.device)
        verdict = activated_event(result.run, active, message)
        with JsonlWriter(result.run_dir / "log.jsonl") as log:  # the run's log keeps the verdict too
            log(verdict)
        if sink is not None:
            sink(verdict)
        print(message, file=out)
        return 0
    finally:
        if started:
            distributed.shutdown()


# --------------------------------------------------------------------------------------
# evaluate
# --------------------------------------------------------------------------------------

def cmd_evaluate(args) -> int:
    from ..project import Project
    proj = Project.open(args.project)
    model_path = proj.resolve_model(args.model)
    if args.items == ["all"]:
        ids = None
    elif args.items == ["val"]:
        cfg_file = Path(model_path).parent / "config.json"
        try:
            ids = list(json.loads(cfg_file.read_text(encoding="utf-8"))["data"]["val_items"])
        except (OSError, ValueError, KeyError, TypeError):
            raise ProjectError("the model has no record of its validation items", cfg_file) from None
        known = {it.id for it in proj.items}
        ids = [i for i in ids if i in known]
        if not ids:
            raise ProjectError("none of the model's validation items are in this project", cfg_file)
    else:
        ids = _select_items(proj, args.items)
    from ..model.evaluate import evaluate_project
    from ..model.predictor import Predictor
    tiling = _tiling(args)
    if tiling is None:
        return 2
    pred = Predictor(model_path, device=args.device, expected_labels=proj.labels, **tiling)
    res = evaluate_project(proj, pred, ids, score_threshold=args.score, tile=args.tile,
                           progress=TerminalProgress("evaluating"))
    if not res.get("items"):
        raise ProjectError("no reviewed items to evaluate on: review some items first", proj.manifest_path)
    from ..runs import read_run
    run = read_run(Path(model_path).parent)
    if args.json:
        print(json.dumps({"model": str(model_path), **res,
                          "training": {"seconds": run.seconds, "minutes": run.minutes, "base": run.base}}, indent=1))
        return 0
    print(f"model {pred.run or model_path} on {len(res['items'])} reviewed item(s): "
          f"{res['gt_instances']} true and {res['pred_instances']} predicted instance(s)")
    if run.seconds is not None:
        print(f"  trained   {run.seconds / 60:.1f} min" + (f" (budget {run.minutes:g} min)" if run.minutes else "")
              + (f", from {run.base}" if run.base else ""))
    print(f"  mask_AP   {res['mask_AP']:.3f}")
    print(f"  mask_AP50 {res['mask_AP50']:.3f}")
    print(f"  mask_AP75 {res['mask_AP75']:.3f}")
    print(f"  acc50     {res['acc50']:.3f}   (TP {res['tp']}, FP {res['fp']}, FN {res['fn']} at score >= 0.5)")
    for name, pc in (res.get("per_class") or {}).items():
        print(f"  {name}: AP {pc['AP']:.3f}, AP50 {pc['AP50']:.3f}")
    return 0


# --------------------------------------------------------------------------------------
# demo
# --------------------------------------------------------------------------------------

def cmd_demo(args) -> int:
    from ..demo import build_demo
    root = Path(args.dir)
    proj = build_demo(root, size=args.size, progress=TerminalProgress("building demo"))
    st = proj.statuses()
    n_rev = sum(1 for s in st.values() if s == "reviewed")
    print(f"created demo project {root} with {len(proj.items)} item(s), {n_rev} reviewed "
          f"(labels: {', '.join(proj.labels.names())})")
    print(f"next: maskloop train {root} --epochs 10   then   maskloop segment {root}   "
          f"or open it: maskloop {root}")
    return 0
