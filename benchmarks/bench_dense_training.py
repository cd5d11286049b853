"""Training on dense images (hundreds of nuclei or grains per crop): MaskLoop's mask-head
targets (engine.model.mask_targets) and RPN anchor matching (engine.model.anchor_matching)
against torchvision's (the baseline), on the same objects, in one run.

Default: the mask-target projection alone. N objects of 10-60 px in an S x S crop and 128
positive proposals (torchvision's default: 512 sampled RoIs x 25 % positives) matched to
random objects and jittered around them: time per call, the peak memory the call adds
(CUDA: max allocated above the inputs; CPU: peak RSS of a fresh process) and the largest
difference between the two targets.

--step: a whole training step (forward and backward of a model built by MaskLoop, one
S x S image with the N objects as targets; autocast bf16 on CUDA) with torchvision's
projection, matcher and (N, H, W) masks, then with MaskLoop's windowed projection, chunked
matcher and PackedMasks, each in a fresh process.

--loader: one training sample from the data set (a 1024 px synthetic nuclei image with
about 1000 nuclei, no augmentation): the target as torchvision's (N, H, W) uint8 masks
against MaskLoop's PackedMasks (crops only): time to build it and its bytes (the bytes
every step moves through worker shared memory, pinned memory and the host-to-GPU copy).

    python benchmarks/bench_dense_training.py                    # CPU, and CUDA when present
    python benchmarks/bench_dense_training.py --loader
    python benchmarks/bench_dense_training.py --objects 1000 --size 1024 --device cuda
    python benchmarks/bench_dense_training.py --step --objects 500 --size 1024 --arch r18fpn
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from contender import run_contender  # noqa: E402  (benchmarks/ is the script's folder)


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
    return masks.to(device), prop.to(device), idx.to(device), gt.to(device)


def child_step(args) -> dict:
    """One training step (forward + backward), median over repeats, and its peak memory."""
    import contextlib
    import torch
    from engine.model.build import build_model
    from engine.model.mask_targets import lean_mask_targets
    dev = torch.device(args.device)
    torch.manual_seed(0)
    model = build_model(args.arch, 2).to(dev).train()
    masks, _, _, gt = make_case(args.objects, args.size, 1, dev)
    if args.which == "maskloop":  # the Trainer's targets: crops only
        from engine.model.mask_targets import PackedMasks
        crops = [(masks[k, y0:y1, x0:x1].cpu().numpy(), x0, y0)
                 for k, (x0, y0, x1, y1) in enumerate(gt.long().tolist())]
        masks = PackedMasks.from_crops(crops, args.size, args.size).to(dev)
    target = {"boxes": gt, "labels": torch.ones(len(gt), dtype=torch.int64, device=dev), "masks": masks}
    image = torch.rand(3, args.size, args.size, device=dev)
    cuda = dev.type == "cuda"
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else contextlib.nullcontext()
    lean = lean_mask_targets() if args.which == "maskloop" else contextlib.nullcontext()
    if args.which == "maskloop":
        from engine.model.anchor_matching import use_chunked_anchor_matching
        use_chunked_anchor_matching(model)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    if cuda:
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    times = []
    with lean:
        for k in range(args.repeat + 1):
            t = time.perf_counter()
            with amp:
                loss = sum(model([image], [target]).values())
            loss.backward()
            model.zero_grad(set_to_none=True)
            if cuda:
                torch.cuda.synchronize()
            if k:
                times.append(time.perf_counter() - t)
    if cuda:
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0 - rss0
    return {"ms": 1000 * sorted(times)[len(times) // 2], "peak_mb": peak, "max_diff": 0.0}


def child(args) -> dict:
    import torch
    from torchvision.models.detection.roi_heads import project_masks_on_boxes as tv_project
    from engine.model.mask_targets import project_masks_on_boxes as lean_project
    fn = tv_project if args.which == "torchvision" else lean_project
    dev = torch.device(args.device)
    masks, boxes, idx, _ = make_case(args.objects, args.size, args.rois, dev)
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


def loader(args) -> None:
    import tempfile
    import cv2
    from engine import synthetic as S
    from engine.model.data import ImageRef, InstanceDataset, TrainItem
    from engine.model.normalize import percentile_policy
    sample = S.nuclei_sample(args.size, seed=0, n_nuclei=args.objects)
    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/dense.png"
        cv2.imwrite(path, sample.image)
        insts = sample.annotation.instances
        item = TrainItem("dense", args.size, args.size, insts, [1] * len(insts), ImageRef(path=path))
        print(f"one {args.size}x{args.size} sample with {len(insts)} objects")
        print(f"{'target masks':26} {'ms/sample':>10} {'target MB':>10}")
        for name, packed in (("torchvision (N, H, W)", False), ("maskloop PackedMasks", True)):
            ds = InstanceDataset([item], percentile_policy(), packed_masks=packed)
            ds[0]  # decode and cache the image
            times = []
            for _ in range(args.repeat):
                t = time.perf_counter()
                _, target = ds[0]
                times.append(time.perf_counter() - t)
            m = target["masks"]
            nbytes = m.numel() if not packed else m.data.numel() + 8 * (m.boxes.numel() + m.offsets.numel())
            print(f"{name:26} {1000 * sorted(times)[len(times) // 2]:10.1f} {nbytes / 2**20:10.1f}")


def run(which: str, args) -> dict:
    cmd = [sys.executable, __file__, "--child", which, "--device", args.device, "--objects", str(args.objects),
           "--size", str(args.size), "--rois", str(args.rois), "--repeat", str(args.repeat), "--arch", args.arch]
    if args.step:
        cmd.append("--step")
    try:
        return run_contender(cmd, main, what=which)
    except RuntimeError as e:
        raise SystemExit(str(e)) from None


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--child", dest="which", default=None)
    ap.add_argument("--device", default=None)
    ap.add_argument("--objects", type=int, default=500)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--rois", type=int, default=128)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--step", action="store_true", help="time a whole training step")
    ap.add_argument("--arch", default="r50fpn", help="--step: the architecture (default r50fpn)")
    ap.add_argument("--loader", action="store_true", help="time building one training sample's target")
    ap.add_argument("--json", default=None, help="also write the rows as JSON to this file (gpu_check.sh)")
    args = ap.parse_args(argv)
    if args.loader:
        loader(args)
        return
    if args.which:
        print(json.dumps(child_step(args) if args.step else child(args)))
        return
    import torch
    devices = [args.device] if args.device else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    what = f"training step of {args.arch}" if args.step else f"{args.rois} positive proposals"
    print(f"{args.objects} objects in {args.size}x{args.size}, {what}")
    print(f"{'device':8} {'contender':12} {'ms/call':>9} {'peak MB':>9} {'max |diff|':>11}")
    rows = []
    for dev in devices:
        args.device = dev
        for which in ("torchvision", "maskloop"):
            r = run(which, args)
            rows.append(dict(r, device=dev, contender=which))
            print(f"{dev:8} {which:12} {r['ms']:9.1f} {r['peak_mb']:9.0f} {r['max_diff']:11.2e}")
    if torch.cuda.is_available():
        print(f"GPU: {torch.cuda.get_device_name(0)}")
    if args.json:
        Path(args.json).write_text(json.dumps({"bench": "dense_step" if args.step else "dense_targets",
                                               "objects": args.objects, "size": args.size, "arch": args.arch,
                                               "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
