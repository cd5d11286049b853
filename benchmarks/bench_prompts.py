"""Prompt latency: a box or click answered from cached features vs a full Predictor.predict.

    python benchmarks/bench_prompts.py                         # r18fpn and r50fpn, 256 px, 20 prompts
    python benchmarks/bench_prompts.py --size 512 --prompts 50 --archs r50fpn

For each architecture, one randomly initialised Mask R-CNN (2 classes, no downloads) on a
synthetic 16-bit nuclei image, in one process:

- baseline: `Predictor.predict` of the whole image (score 0.05, at most 100 detections,
  as benchmarks/bench_inference.py: an untrained model scores every box near 0.5, so the
  mask head does the work of 100 detections); the prompt's answer would be the detection
  whose box best matches the prompt box. Timed `--repeat` times, median reported.
- caching: `PromptEngine.prepare` (backbone/FPN + RPN with scores) of the same image.
- prompts: box prompts on the image's true object boxes (2 box-head passes + 1 mask-head
  pass each) and click prompts at their centres, all from the cache; p50 / p95 of the
  wall time of each call (the mask is in image coordinates when the call returns).

Weights do not change the prompt path's cost (fixed: a few RoIs), only the baseline's
detection count, which is printed. The figures depend on the machine's load; run it
twice and say which machine and how loaded it was.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def pct(values, q):
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q / 100.0 * (len(s) - 1))))]


def bench_arch(arch: str, size: int, n_prompts: int, repeat: int, seed: int = 0) -> dict:
    import torch
    from engine import synthetic as S
    from engine.model.weights import build_model
    from engine.model.normalize import percentile_policy
    from engine.model.predictor import Predictor
    from engine.model.prompts import PromptEngine
    torch.manual_seed(seed)
    model = build_model(arch, 2, base="scratch")
    pred = Predictor.from_model(model, ["nucleus"], percentile_policy(), device="cpu", copy_model=False,
                                max_detections=100, tile=0)
    sample = S.nuclei_sample(size, seed=100)
    image = sample.image
    boxes = [(i.x0, i.y0, i.x0 + i.width, i.y0 + i.height) for i in sample.annotation.instances][:n_prompts]
    pred.predict(image, score_threshold=0.05)                      # warm-up
    t_pred, n_det = [], 0
    for _ in range(repeat):
        t = time.perf_counter()
        n_det = len(pred.predict(image, score_threshold=0.05))
        t_pred.append(time.perf_counter() - t)
    eng = PromptEngine(pred)
    t_cache = []
    for k in range(repeat):
        eng.cache.clear()
        t = time.perf_counter()
        eng.prepare(("bench", k), image)
        t_cache.append(time.perf_counter() - t)
    key = ("bench", repeat - 1)
    eng.box(key, image, boxes[0])                                  # warm-up of the head path
    t_box, t_click = [], []
    for b in boxes:
        t = time.perf_counter()
        eng.box(key, image, b)
        t_box.append(time.perf_counter() - t)
        t = time.perf_counter()
        eng.click(key, image, ((b[0] + b[2]) // 2, (b[1] + b[3]) // 2))
        t_click.append(time.perf_counter() - t)
    assert eng.cache.computed == repeat, "a prompt recomputed the features"
    ms = lambda v: 1000.0 * v
    return {"arch": arch, "size": size, "prompts": len(boxes), "detections": n_det,
            "predict_ms": ms(statistics.median(t_pred)), "cache_ms": ms(statistics.median(t_cache)),
            "box_p50": ms(pct(t_box, 50)), "box_p95": ms(pct(t_box, 95)),
            "click_p50": ms(pct(t_click, 50)), "click_p95": ms(pct(t_click, 95))}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--archs", default="r18fpn,r50fpn")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--prompts", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0,
                    help="torch threads for this run (0: torch's default); the prompt path is many "
                         "small ops, which a loaded machine slows most with several threads")
    args = ap.parse_args(argv)
    import torch
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"# {platform.node()} {platform.machine()}, {os.cpu_count()} CPUs (torch threads "
          f"{torch.get_num_threads()}), load average {os.getloadavg()[0]:.1f}, torch {torch.__version__}")
    print("| arch | image | full predict (dets) | feature caching | box prompt p50 / p95 | click prompt p50 / p95 |")
    print("|---|---|---|---|---|---|")
    for arch in args.archs.split(","):
        r = bench_arch(arch.strip(), args.size, args.prompts, args.repeat)
        print(f"| {r['arch']} | {r['size']}² | {r['predict_ms']:.0f} ms ({r['detections']}) | {r['cache_ms']:.0f} ms "
              f"| {r['box_p50']:.1f} / {r['box_p95']:.1f} ms | {r['click_p50']:.1f} / {r['click_p95']:.1f} ms |",
              flush=True)
    print(f"# load average after: {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
