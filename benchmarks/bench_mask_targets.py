"""Mask-head training targets: engine.model.mask_targets against torchvision's
project_masks_on_boxes (the baseline), on the same masks and proposals.

A dense image (nuclei or rock grains): N objects of 10-60 px in an S x S crop and 128
positive proposals (torchvision's default: 512 sampled RoIs x 25% positives) matched to
random objects and jittered around them. Reports time per call and the peak memory the
call adds (CUDA: max allocated above the inputs; CPU: peak RSS of a fresh process), and
the largest difference between the two targets.

    python benchmarks/bench_mask_targets.py                    # CPU, and CUDA when present
    python benchmarks/bench_mask_targets.py --objects 1000 --size 1024 --device cuda
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def make_case(objects: int, size: int, rois: int, device):
    import torch
    g = torch.Generator().manual_seed(0)
    masks = torch.zeros(objects, size, size, dtype=torch.uint8)
    boxes = []
    for i in range(objects):
        d = int(torch.randint(10, 61, (1,), generator=g))
        x0, y0 = (int(v) for v in torch.randint(0, size - d, (2,), generator=g))
        yy, xx = torch.meshgrid(torch.arange(d), torch.arange(d), indexing="ij")
        disk = ((yy - d / 2 + 0.5) ** 2 + (xx - d / 2 + 0.5) ** 2) <= (d / 2) ** 2
        masks[i, y0:y0 + d, x0:x0 + d] = disk.to(torch.uint8)
        boxes.append([x0, y0, x0 + d, y0 + d])
    gt = torch.tensor(boxes, dtype=torch.float32)
    idx = torch.randint(0, objects, (rois,), generator=g)
    prop = gt[idx] + (torch.rand(rois, 4, generator=g) - 0.5) * 8
    prop = prop.clamp(0, size)
    return masks.to(device), prop.to(device), idx.to(device)


def child(args) -> dict:
    import torch
    from torchvision.models.detection.roi_heads import project_masks_on_boxes as tv_project
    from engine.model.mask_targets import project_masks_on_boxes as lean_project
    fn = tv_project if args.which == "torchvision" else lean_project
    dev = torch.device(args.device)
    masks, boxes, idx = make_case(args.objects, args.size, args.rois, dev)
    cuda = dev.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    times = []
    for k in range(args.repeat + 1):
        t = time.perf_counter()
        out = fn(masks, boxes, idx, 28)
        if cuda:
            torch.cuda.synchronize()
        if k:  # the first call warms up
            times.append(time.perf_counter() - t)
        del out
    if cuda:
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0 - rss0
    ref = tv_project(masks, boxes, idx, 28) if args.which != "torchvision" else None
    diff = float((lean_project(masks, boxes, idx, 28) - ref).abs().max()) if ref is not None else 0.0
    return {"ms": 1000 * sorted(times)[len(times) // 2], "peak_mb": peak, "max_diff": diff}


def run(which: str, args) -> dict:
    cmd = [sys.executable, __file__, "--child", which, "--device", args.device, "--objects", str(args.objects),
           "--size", str(args.size), "--rois", str(args.rois), "--repeat", str(args.repeat)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"{which} failed:\n{r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--child", dest="which", default=None)
    ap.add_argument("--device", default=None)
    ap.add_argument("--objects", type=int, default=500)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--rois", type=int, default=128)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    if args.which:
        print(json.dumps(child(args)))
        return
    import torch
    devices = [args.device] if args.device else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    print(f"{args.objects} objects in {args.size}x{args.size}, {args.rois} positive proposals")
    print(f"{'device':8} {'projection':12} {'ms/call':>9} {'peak MB':>9} {'max |diff|':>11}")
    for dev in devices:
        args.device = dev
        for which in ("torchvision", "maskloop"):
            r = run(which, args)
            print(f"{dev:8} {which:12} {r['ms']:9.1f} {r['peak_mb']:9.0f} {r['max_diff']:11.2e}")
    if torch.cuda.is_available():
        print(f"GPU: {torch.cuda.get_device_name(0)}")


if __name__ == "__main__":
    main()
