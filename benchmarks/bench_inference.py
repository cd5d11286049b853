"""Inference speed: MaskLoop's Predictor against plain torchvision, same weights, same images.

    python benchmarks/bench_inference.py                 # CPU always, CUDA too when present
    python benchmarks/bench_inference.py --images 3 --size 1024 --devices cpu

Both sides run the same randomly initialised ResNet-50-FPN Mask R-CNN (2 classes,
torchvision's anchors and ImageNet mean/std, so the two models are the same function;
the state dict is loaded strictly into torchvision's maskrcnn_resnet50_fpn) on the same
synthetic 16-bit nuclei images, normalised the same way (percentiles) in both timings.

- baseline: torchvision's maskrcnn_resnet50_fpn with its defaults (resize to 800 px,
  100 detections, score threshold 0.05), eager fp32, torch.no_grad, one image per call,
  full-image masks thresholded at 0.5 and copied to the CPU.
- MaskLoop: Predictor with the device's defaults (native resolution 1024 px, max 100
  detections and score 0.05 so the mask head does the same work; on CUDA bf16/fp16
  autocast, channels_last, batches; on the CPU fp32 for R50-FPN, as
  engine.model.device.cpu_bf16_default rules; the "recipe" field says which).
  Process CPU time per image is recorded too: on a shared machine it is the work done.
An untrained model scores every box near 0.5, so both sides keep their 100-detection cap:
the detections per image are printed to show the work is comparable.

Each contender runs in its own process, so its peak memory is its own: peak RSS on the
CPU (whole process, with the model), torch.cuda.max_memory_allocated on CUDA.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
from contender import run_contender  # noqa: E402  (benchmarks/ is the script's folder)

SCORE = 0.05
DETS = 100


def make_weights(path: Path, seed: int = 0) -> None:
    import torch
    from engine.model.build import IMAGENET_MEAN, IMAGENET_STD, TORCHVISION_ANCHORS, build_model, save_checkpoint
    from engine.model.normalize import percentile_policy
    torch.manual_seed(seed)
    m = build_model("r50fpn", 2, base="scratch", anchor_sizes=TORCHVISION_ANCHORS,
                    image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD)
    save_checkpoint(path, m, label_names=["nucleus"], normalization=percentile_policy(), run="bench")


def images(n: int, size: int, warmup: int):
    from engine import synthetic as S
    return [S.nuclei_sample(size, seed=100 + k).image for k in range(n + warmup)]


def _peak_cpu_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def _sync(device):
    import torch
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def worker(kind: str, device_name: str, ckpt_path: str, n: int, size: int, warmup: int, batch: int,
           baseline_size: int = 0) -> dict:
    import numpy as np
    import torch
    from engine.model.build import load_checkpoint
    from engine.model.normalize import normalize
    from engine.model.predict import Predictor, resolve_device

    device = resolve_device(device_name)
    imgs = images(n, size, warmup)
    ck = load_checkpoint(ckpt_path)
    dets, per_image, cpu_image = [], [], []  # wall and process CPU time per image
    if kind == "torchvision":
        import torchvision
        size_kw = {"min_size": baseline_size, "max_size": baseline_size} if baseline_size else {}
        model = torchvision.models.detection.maskrcnn_resnet50_fpn(weights=None, weights_backbone=None,
                                                                   num_classes=2, **size_kw)
        model.load_state_dict(ck["state_dict"])  # strict: the very same weights
        model.eval().to(device)
        policy = ck["normalization"]

        def run_one(img):
            x = torch.from_numpy(normalize(img, policy)).permute(2, 0, 1).contiguous().to(device)
            with torch.no_grad():
                out = model([x])[0]
            keep = out["scores"] >= SCORE
            masks = (out["masks"][keep] > 0.5).cpu().numpy()
            _ = out["boxes"][keep].cpu().numpy(), out["scores"][keep].cpu().numpy()
            return len(masks)

        for img in imgs[:warmup]:
            run_one(img)
        _sync(device)
        base_rss = _peak_cpu_mb()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        t = time.perf_counter()
        for img in imgs[warmup:]:
            ti, ci = time.perf_counter(), time.process_time()
            dets.append(run_one(img))
            _sync(device)
            per_image.append(time.perf_counter() - ti)
            cpu_image.append(time.process_time() - ci)
        dt = time.perf_counter() - t
        run_px = model.transform.min_size[-1]
        recipe = "fp32"
    else:
        p = Predictor(ck, device, max_detections=DETS, tile=max(1024, size), batch_size=batch)
        batched = kind == "maskloop-batched"
        for img in imgs[:warmup]:
            p.predict(img, score_threshold=SCORE)
        _sync(device)
        base_rss = _peak_cpu_mb()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        t = time.perf_counter()
        if batched:
            dets = [len(r) for r in p.predict_many(imgs[warmup:], score_threshold=SCORE)]
        else:
            for img in imgs[warmup:]:
                ti, ci = time.perf_counter(), time.process_time()
                dets.append(len(p.predict(img, score_threshold=SCORE)))
                _sync(device)
                per_image.append(time.perf_counter() - ti)
                cpu_image.append(time.process_time() - ci)
        _sync(device)
        dt = time.perf_counter() - t
        run_px = size
        recipe = ("fp32" if p.amp_dtype is None else str(p.amp_dtype).replace("torch.", "")) + \
            (" + channels_last" if p.channels_last else "")
    res = {"recipe": recipe, "cpu_s_per_image": float(np.median(cpu_image)) if cpu_image else None,
           "kind": kind, "device": str(device), "images": n, "seconds": dt, "images_per_s": n / dt,
           "dets_per_image": float(np.mean(dets)) if dets else 0.0, "run_px": run_px,
           "peak_rss_mb": _peak_cpu_mb(), "rss_before_mb": base_rss,
           "best_s_per_image": min(per_image) if per_image else dt / n}
    if device.type == "cuda":
        res["peak_gpu_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
        res["gpu"] = torch.cuda.get_device_name(device)
    return res


def run_worker_process(kind, device, ckpt, args) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", kind, "--devices", device, "--ckpt", str(ckpt),
           "--images", str(args.images if device == "cpu" else args.cuda_images), "--size", str(args.size),
           "--warmup", str(args.warmup), "--batch", str(args.batch), "--baseline-size", str(args.baseline_size)]
    return run_contender(cmd, main, cwd=str(ROOT), what=f"{kind} on {device}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--devices", default="auto", help="auto (cpu, and cuda when present), cpu, cuda, or cpu,cuda")
    ap.add_argument("--images", type=int, default=3, help="timed images on the CPU (kept short)")
    ap.add_argument("--cuda-images", type=int, default=32, help="timed images on CUDA")
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--batch", type=int, default=8, help="MaskLoop batch size for the batched CUDA run")
    ap.add_argument("--baseline-size", type=int, default=0,
                    help="resize of the torchvision baseline (default 0: its own 800 px; small for a dry run)")
    ap.add_argument("--json", default=None, help="also write the rows as JSON to this file (gpu_check.sh)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--ckpt", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.worker:
        res = worker(args.worker, args.devices, args.ckpt, args.images, args.size, args.warmup, args.batch,
                     args.baseline_size)
        print(json.dumps(res))
        return 0

    import torch
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else []) if args.devices == "auto" \
        else [d.strip() for d in args.devices.split(",") if d.strip()]
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores "
          f"(load average {os.getloadavg()[0]:.1f} at start), "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads)"
          + (f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""))
    print(f"model: Mask R-CNN R50-FPN, random init shared by both, 2 classes; images: synthetic 16-bit nuclei "
          f"{args.size}x{args.size}; score >= {SCORE}, <= {DETS} detections")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "bench.pt"
        make_weights(ckpt)
        for dev in devices:
            kinds = ["torchvision", "maskloop"] + (["maskloop-batched"] if dev.startswith("cuda") else [])
            for kind in kinds:
                r = run_worker_process(kind, dev, ckpt, args)
                rows.append(r)
                print(f"  done: {kind} on {dev}: {r['images_per_s']:.3f} images/s", file=sys.stderr)
    print(f"load average at the end: {os.getloadavg()[0]:.1f} (a busy machine slows both sides)")
    hdr = "| device | contender | input px | images | images/s | s/image | best s/image | dets/image | peak memory |"
    print()
    print(hdr)
    print("|" + "---|" * 9)
    for r in rows:
        mem = f"{r['peak_gpu_mb']:.0f} MiB GPU" if "peak_gpu_mb" in r else f"{r['peak_rss_mb']:.0f} MiB RSS"
        name = {"torchvision": "torchvision maskrcnn_resnet50_fpn (defaults, fp32, 1 image/call)",
                "maskloop": "MaskLoop Predictor (1 image/call)",
                "maskloop-batched": f"MaskLoop Predictor.predict_many (batch {args.batch})"}[r["kind"]]
        print(f"| {r['device']} | {name} | {r['run_px']} | {r['images']} | {r['images_per_s']:.3f} | "
              f"{1 / r['images_per_s']:.2f} | {r['best_s_per_image']:.2f} | {r['dets_per_image']:.0f} | {mem} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"bench": "inference", "size": args.size, "batch": args.batch,
                                               "rows": rows}, indent=1))
    print()
    for dev in devices:
        base = next((r for r in rows if r["kind"] == "torchvision" and r["device"].startswith(dev)), None)
        for r in rows:
            if base and r["kind"] != "torchvision" and r["device"].startswith(dev):
                if dev == "cpu" and r.get("cpu_s_per_image") and base.get("cpu_s_per_image"):
                    print(f"cpu: {r['kind']} ({r['recipe']}) / torchvision on process CPU time (median per image; "
                          f"robust to a shared machine's load): {base['cpu_s_per_image'] / r['cpu_s_per_image']:.2f}x "
                          f"({base['cpu_s_per_image']:.2f} s against {r['cpu_s_per_image']:.2f} s)")
                print(f"{dev}: {r['kind']} / torchvision = {r['images_per_s'] / base['images_per_s']:.2f}x images/s, "
                      f"{base['best_s_per_image'] / r['best_s_per_image']:.2f}x on the best image time "
                      f"(MaskLoop at {r['run_px']} px native = {(r['run_px'] / base['run_px']) ** 2:.2f}x the pixels)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
