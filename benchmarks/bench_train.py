"""Training throughput: MaskLoop's Trainer against torchvision's reference training loop.

Baseline: torchvision's maskrcnn_resnet50_fpn with its defaults (random init, resize to
800 px, fp32, eager) trained by an inline copy of the reference `train_one_epoch`
(SGD 0.02, momentum 0.9, weight decay 1e-4, linear warm-up, one list of images per step).
MaskLoop: engine.model.train.Trainer on the same synthetic images (16-bit nuclei saved as
TIFF in a project), same architecture (r50fpn) and batch size; native resolution, AMP
(bf16) and channels_last on CUDA; also the CPU default arch r18fpn.

Each configuration runs in its own process (clean peak memory): images/s over the timed
steps after warm-up steps, and peak memory (CUDA: max allocated; CPU: peak RSS). All
steps lie in one epoch, so MaskLoop's per-epoch checkpoint is not in the timing (the
reference loop writes none); no validation (--val-fraction 0).

    python benchmarks/bench_train.py                 # CPU (short), and CUDA when present
    python benchmarks/bench_train.py --device cuda --size 1024 --images 16 --batch 4 --steps 20
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from contender import run_contender  # noqa: E402  (benchmarks/ is the script's folder)


def _peak_cpu_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def make_project(root: Path, n: int, size: int):
    from engine.demo import synthetic_project
    if (root / "maskloop.json").exists():
        from engine.project import Project
        return Project.open(root)
    return synthetic_project(root, "nuclei", n, size, seed=0)


def child_baseline(args) -> dict:
    import numpy as np
    import torch
    import torchvision
    from engine.model.data import InstanceDataset, Snapshot, collate
    from engine.model.normalize import percentile_policy
    torch.manual_seed(0)
    dev = torch.device(args.device)
    proj = make_project(Path(args.project), args.images, args.size)
    snap = Snapshot.from_project(proj)
    # the same images and targets, no augmentation (the reference loop has none either)
    ds = InstanceDataset(snap.items, percentile_policy())
    loader = torch.utils.data.DataLoader(ds, batch_size=args.batch, shuffle=True, collate_fn=collate,
                                         num_workers=0, drop_last=True)
    size_kw = {"min_size": args.baseline_size, "max_size": args.baseline_size} if args.baseline_size else {}
    model = torchvision.models.detection.maskrcnn_resnet50_fpn(weights=None, weights_backbone=None,
                                                               num_classes=len(snap.label_names) + 1, **size_kw)
    model.to(dev)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=0.02, momentum=0.9, weight_decay=1e-4)
    warmup = min(1000, len(loader) - 1)
    scheduler = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=0.001, total_iters=max(1, warmup))
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    total = args.warmup + args.steps
    done, t0, n_img = 0, None, 0
    model.train()
    while done < total:
        for images, targets in loader:  # torchvision references/detection/engine.py: train_one_epoch
            images = [im.to(dev) for im in images]
            targets = [{k: v.to(dev) for k, v in t.items()} for t in targets]
            loss_dict = model(images, targets)
            losses = sum(loss for loss in loss_dict.values())
            loss_value = losses.item()
            if not np.isfinite(loss_value):
                raise SystemExit(f"baseline loss is {loss_value}")
            optimizer.zero_grad()
            losses.backward()
            optimizer.step()
            scheduler.step()
            done += 1
            if done == args.warmup:
                if dev.type == "cuda":
                    torch.cuda.synchronize(dev)
                t0 = time.perf_counter()
            elif done > args.warmup:
                n_img += len(images)
            if done >= total:
                break
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    dt = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else _peak_cpu_mb()
    return {"images_per_s": n_img / dt, "peak_mb": peak, "steps": args.steps}


def child_maskloop(args) -> dict:
    import torch
    from engine.model.train import TrainConfig, train_project
    proj = make_project(Path(args.project), args.images, args.size)
    stamps = []

    def cb(ev):
        if ev["event"] == "iter":
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            stamps.append(time.perf_counter())

    n = len([it for it in proj.items])
    ipe = n // args.batch if n % args.batch == 0 else n // args.batch + 1
    epochs = max(1, -(-(args.warmup + args.steps) // ipe))
    cfg = TrainConfig(arch=args.arch, base="scratch", epochs=epochs, batch_size=args.batch, device=args.device,
                      seed=0, val_fraction=0.0, crop=0, keep_last=False)
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    train_project(proj, cfg, callbacks=[cb])
    steps = min(args.steps, len(stamps) - args.warmup)
    t = stamps[args.warmup - 1:args.warmup + steps]
    dt = t[-1] - t[0]
    peak = torch.cuda.max_memory_allocated() / 2**20 if args.device.startswith("cuda") else _peak_cpu_mb()
    return {"images_per_s": steps * args.batch / dt, "peak_mb": peak, "steps": steps}


def run_child(name: str, args, extra: list[str]) -> dict:
    cmd = [sys.executable, __file__, "--child", name, "--project", args.project, "--device", args.device,
           "--size", str(args.size), "--images", str(args.images), "--batch", str(args.batch),
           "--steps", str(args.steps), "--warmup", str(args.warmup),
           *(["--baseline-size", str(args.baseline_size)] if args.baseline_size else []), *extra]
    try:
        return run_contender(cmd, main, cwd=str(REPO), what=name)
    except RuntimeError as e:
        raise SystemExit(str(e)) from None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default=None, help="cpu or cuda (default: cpu, then cuda when present)")
    ap.add_argument("--size", type=int, default=None, help="image side (default 256 CPU, 1024 CUDA)")
    ap.add_argument("--images", type=int, default=None)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--steps", type=int, default=None, help="timed steps (default 3 CPU, 20 CUDA)")
    ap.add_argument("--warmup", type=int, default=None)
    ap.add_argument("--baseline-size", type=int, default=None,
                    help="resize of the torchvision baseline (default: its own 800 px; small for a dry run)")
    ap.add_argument("--arches", default=None,
                    help="MaskLoop architectures, comma-separated (default r50fpn, and r18fpn on the CPU)")
    ap.add_argument("--json", default=None, help="also write the rows as JSON to this file (gpu_check.sh)")
    ap.add_argument("--child", choices=("baseline", "maskloop"), help=argparse.SUPPRESS)
    ap.add_argument("--project", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--arch", default="r50fpn", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        fn = child_baseline if args.child == "baseline" else child_maskloop
        print(json.dumps(fn(args)))
        return 0
    import torch  # only to see whether CUDA is there
    devices = [args.device] if args.device else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    cpu_threads = torch.get_num_threads()
    report = []
    for dev in devices:
        cuda = dev.startswith("cuda")
        a = argparse.Namespace(**vars(args))
        a.device = dev
        a.size = args.size or (1024 if cuda else 256)
        a.batch = args.batch if not (cuda and args.batch == 2 and args.size is None) else 4
        a.steps = args.steps or (20 if cuda else 3)
        a.warmup = args.warmup if args.warmup is not None else (5 if cuda else 1)
        # one epoch holds every step: MaskLoop's end-of-epoch checkpoint is not timed
        # (the reference loop saves nothing either)
        a.images = args.images or (a.warmup + a.steps) * a.batch
        with tempfile.TemporaryDirectory(prefix="maskloop-bench-train-") as tmp:
            a.project = str(Path(tmp) / "proj")
            make_project(Path(a.project), a.images, a.size)  # the same images for every configuration
            name = torch.cuda.get_device_name(0) if cuda else f"CPU ({os.cpu_count()} cores, {cpu_threads} threads)"
            print(f"device: {name}; {a.images} synthetic nuclei images {a.size}x{a.size} (16-bit), batch {a.batch}, "
                  f"{a.warmup} warm-up + {a.steps} timed steps")
            resize = f"{args.baseline_size} px" if args.baseline_size else "800 px"
            rows = [(f"torchvision reference loop, maskrcnn_resnet50_fpn ({resize} resize, fp32)",
                     run_child("baseline", a, []))]
            arches = args.arches.split(",") if args.arches else ["r50fpn"] + ([] if cuda else ["r18fpn"])
            for arch in arches:
                how = "native res" + (", bf16 AMP, channels_last" if cuda else "") + \
                    (", CPU default" if arch == "r18fpn" and not cuda else "")
                rows.append((f"MaskLoop Trainer, {arch} ({how})", run_child("maskloop", a, ["--arch", arch])))
            base = rows[0][1]["images_per_s"]
            report += [dict(r, device=dev, device_name=name, label=label, size=a.size, batch=a.batch) for label, r in rows]
            for label, r in rows:
                print(f"  {label:<72} {r['images_per_s']:8.2f} images/s  ({r['images_per_s'] / base:5.2f}x)  "
                      f"peak {'GPU' if cuda else 'RSS'} {r['peak_mb']:8.0f} MB")
    if args.json:
        Path(args.json).write_text(json.dumps({"bench": "train", "rows": report}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
