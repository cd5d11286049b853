"""Prompt latency: a box or click answered from cached features vs a full Predictor.predict.

    python benchmarks/bench_prompts.py                         # r18fpn and r50fpn, 256 px, 20 prompts
    python benchmarks/bench_prompts.py --size 512 --prompts 50 --archs r50fpn
    taskset -c 1 nice -n 19 python benchmarks/bench_prompts.py --threads 1 --baseline   # + the older path

For each architecture, one randomly initialised Mask R-CNN (2 classes, no downloads) on a
synthetic 16-bit nuclei image, in one process:

- baseline: `Predictor.predict` of the whole image (score 0.05, at most 100 detections,
  as benchmarks/bench_inference.py: an untrained model scores every box near 0.5, so the
  mask head does the work of 100 detections); the prompt's answer would be the detection
  whose box best matches the prompt box. Timed `--repeat` times, median reported.
- caching: `PromptEngine.prepare` (backbone/FPN + RPN with scores + box head on the
  proposals + mask head on the detections, whose masks clicks look up) of the same image.
- prompts: box prompts on the image's true object boxes (2 box-head passes + 1 mask-head
  pass each) and click prompts at their centres, all from the cache; p50 / p95 of the
  wall time of each call (the mask is in image coordinates when the call returns), and
  of the thread's CPU time (what the call costs, whatever else the machine runs).
- --baseline: the same prompts answered by the older path in the same run, interleaved
  call by call (fp32 heads, no cached detection masks: every click runs the mask head;
  `PromptEngine(bf16=False, cache_masks=False)`).

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


def bench_arch(arch: str, size: int, n_prompts: int, repeat: int, seed: int = 0,
               baseline: bool = False) -> list[dict]:
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
    t_pred, c_pred, n_det = [], [], 0
    for _ in range(repeat):
        c, t = time.thread_time(), time.perf_counter()
        n_det = len(pred.predict(image, score_threshold=0.05))
        t_pred.append(time.perf_counter() - t)
        c_pred.append(time.thread_time() - c)
    engines = {"new": PromptEngine(pred)}
    if baseline:
        engines["old"] = PromptEngine(pred, bf16=False, cache_masks=False)
    t_cache = {name: [] for name in engines}
    c_cache = {name: [] for name in engines}
    for k in range(repeat):
        for name, eng in engines.items():
            eng.cache.clear()
            c, t = time.thread_time(), time.perf_counter()
            eng.prepare(("bench", k), image)
            t_cache[name].append(time.perf_counter() - t)
            c_cache[name].append(time.thread_time() - c)
    key = ("bench", repeat - 1)
    for eng in engines.values():
        eng.box(key, image, boxes[0])                              # warm-up of the head path
    wall = {(name, kind): [] for name in engines for kind in ("box", "click")}
    cpu = {k: [] for k in wall}
    for b in boxes:
        for kind in ("box", "click"):
            for name, eng in engines.items():                      # interleaved: the same load
                call = (lambda: eng.box(key, image, b)) if kind == "box" else \
                    (lambda: eng.click(key, image, ((b[0] + b[2]) // 2, (b[1] + b[3]) // 2)))
                c, t = time.thread_time(), time.perf_counter()
                call()
                wall[name, kind].append(time.perf_counter() - t)
                cpu[name, kind].append(time.thread_time() - c)
    for eng in engines.values():
        assert eng.cache.computed == repeat, "a prompt recomputed the features"
    ms = lambda v: 1000.0 * v
    rows = []
    for name, eng in engines.items():
        r = {"arch": arch, "path": name, "size": size, "prompts": len(boxes), "detections": n_det,
             "bf16": eng.heads.bf16, "predict_ms": ms(statistics.median(t_pred)),
             "cache_ms": ms(statistics.median(t_cache[name])),
             "predict_cpu_ms": ms(statistics.median(c_pred)), "cache_cpu_ms": ms(statistics.median(c_cache[name])),
             "lookups": eng.click_counts["lookup"]}
        for kind in ("box", "click"):
            for q in (50, 95):
                r[f"{kind}_p{q}"] = ms(pct(wall[name, kind], q))
                r[f"{kind}_cpu_p{q}"] = ms(pct(cpu[name, kind], q))
        rows.append(r)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--archs", default="r18fpn,r50fpn")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--prompts", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0,
                    help="torch threads for this run (0: torch's default); the prompt path is many "
                         "small ops, which a loaded machine slows most with several threads")
    ap.add_argument("--baseline", action="store_true",
                    help="also answer with the older path (fp32 heads, clicks run the head), interleaved")
    args = ap.parse_args(argv)
    import torch
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"# {platform.node()} {platform.machine()}, {os.cpu_count()} CPUs (torch threads "
          f"{torch.get_num_threads()}), load average {os.getloadavg()[0]:.1f}, torch {torch.__version__}")
    print("| arch | path | image | full predict (dets) | feature caching | box prompt p50 / p95 "
          "| click prompt p50 / p95 | box CPU time p50 / p95 | click CPU time p50 / p95 (lookups) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for arch in args.archs.split(","):
        for r in bench_arch(arch.strip(), args.size, args.prompts, args.repeat, baseline=args.baseline):
            path = ("bf16 heads, " if r["bf16"] else "fp32 heads, ") + \
                ("cached masks" if r["path"] == "new" else "older path")
            print(f"| {r['arch']} | {path} | {r['size']}² | {r['predict_ms']:.0f} ms, CPU {r['predict_cpu_ms']:.0f} ms "
                  f"({r['detections']}) | {r['cache_ms']:.0f} ms, CPU {r['cache_cpu_ms']:.0f} ms "
                  f"| {r['box_p50']:.1f} / {r['box_p95']:.1f} ms | {r['click_p50']:.1f} / {r['click_p95']:.1f} ms "
                  f"| {r['box_cpu_p50']:.1f} / {r['box_cpu_p95']:.1f} ms "
                  f"| {r['click_cpu_p50']:.1f} / {r['click_cpu_p95']:.1f} ms ({r['lookups']}/{r['prompts']}) |",
                  flush=True)
    print(f"# load average after: {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
