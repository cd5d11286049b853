"""One CPU training step per architecture, in one run (issue 10: where a step's time went).

A synthetic batch (random image, k box-shaped objects per image) through forward, backward
and an AdamW step of a model from scratch; the median of --repeat steps after one warm-up.
r18fpn is the baseline the lite architecture is measured against in the same run.

    python benchmarks/bench_train_step.py                  # r18fpn, r18fpn_lite; 2x512 and 4x256
    python benchmarks/bench_train_step.py --threads 1 --repeat 5
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def batch(n: int, size: int, k: int, torch):
    images, targets = [], []
    for _ in range(n):
        images.append(torch.rand(3, size, size))
        lo = torch.rand(k, 2) * (size - 40)
        boxes = torch.cat([lo, lo + 20 + torch.rand(k, 2) * 20], 1)
        masks = torch.zeros(k, size, size, dtype=torch.uint8)
        for i, (x0, y0, x1, y1) in enumerate(boxes.int().tolist()):
            masks[i, y0:y1, x0:x1] = 1
        targets.append({"boxes": boxes, "labels": torch.ones(k, dtype=torch.int64), "masks": masks})
    return images, targets


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archs", default="r18fpn,r18fpn_lite")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    import torch
    from engine.model.architectures import count_parameters
    from engine.model.weights import build_model
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"# {platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, torch threads {args.threads}, "
          f"load average {os.getloadavg()[0]:.1f}, torch {torch.__version__}")
    print("| arch | parameters | 2 × 512² (45 objects each) | 4 × 256² (12 objects each) |")
    print("|---|---|---|---|")
    shapes = [(2, 512, 45), (4, 256, 12)]
    for arch in args.archs.split(","):
        model = build_model(arch, 2, base="scratch")
        model.train()
        opt = torch.optim.AdamW(model.parameters(), 1e-3)
        cells = []
        for n, size, k in shapes:
            images, targets = batch(n, size, k, torch)
            times = []
            for _ in range(args.repeat + 1):  # the first step is a warm-up
                t0 = time.perf_counter()
                loss = sum(model(images, targets).values())
                opt.zero_grad()
                loss.backward()
                opt.step()
                times.append(time.perf_counter() - t0)
            cells.append(f"{statistics.median(times[1:]):.2f} s")
        print(f"| {arch} | {count_parameters(model) / 1e6:.1f} M | " + " | ".join(cells) + " |", flush=True)
    print(f"# load average after: {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
