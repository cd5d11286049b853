"""The CPU inference path end to end, on TRAINED models: whole Predictor.predict at 1024 px,
plain torchvision-style fp32 vs MaskLoop fp32 vs bf16 + channels_last, timed in one run and
with the outputs compared (issue 15; bench_cpu_path.py has the per-stage and backbone figures).

    taskset -c 1 nice -n 19 python benchmarks/bench_cpu_e2e.py                # r18fpn_lite, 2 images
    taskset -c 1 nice -n 19 python benchmarks/bench_cpu_e2e.py --archs r18fpn_lite,r18fpn,r50fpn \
        --images 3 --reps 2 --models-dir /tmp/cpu-e2e-models                 # the issue's run

Models: each arch is trained from scratch with the engine's own trainer (train_project,
TrainConfig(minutes=--train-minutes), CPU) on a synthetic nuclei project, so its scores are
confident and its masks real; an untrained model's scores all sit near 0.5 and its mask
probabilities near 0.5, which makes any output comparison a coin flip. --models-dir keeps
the trained model.pt per arch and reuses it on the next run (delete it to retrain).

Images: --images synthetic 1024 px nuclei images (seeds 500.., not seen in training; a few
hundred nuclei each) plus, when ../shared/fixtures is present, a 1024 px mosaic of the real
16-bit 40x nuclei of bitdepth_nucseg_40x.

Contenders (one Predictor each, same checkpoint, single tile, interleaved image by image;
medians of --reps timed rounds after one warm-up round):
- plain: torchvision-style eager fp32 — BatchNorm not folded, NCHW, torchvision's own
  full-image mask paste (paste_masks_in_image), then thresholded per instance.
- fp32: the MaskLoop CPU path without bf16 (BatchNorm folded, masks pasted in their box).
- bf16-cl: bf16 autocast on the conv parts + channels_last (amp="bf16").
- default: Predictor(path, "cpu") as a user gets it (printed: which of the above it is here).

Outputs: each contender's instances against plain's, matched one to one by mask IoU >= 0.5
(best score first). Tolerance (fixed before the first run): matched median mask IoU >= 0.95,
min >= 0.80, score difference <= 0.02, and no unmatched instance whose score is more than
0.02 away from the score threshold (a detection within 0.02 of the threshold may fall on
either side under any rounding).
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

TOL = {"median_iou": 0.95, "min_iou": 0.80, "dscore": 0.02, "band": 0.02}
CONTENDERS = {"plain": dict(amp=False, channels_last=False, fuse=False),
              "fp32": dict(amp=False, channels_last=False),
              "bf16-cl": dict(amp="bf16", channels_last=True),
              "default": dict()}


def load() -> str:
    return "load average " + " / ".join(f"{v:.1f}" for v in os.getloadavg())


# -- a trained model per arch --------------------------------------------------------------------

def trained_model(arch: str, minutes: float, models_dir: Path) -> Path:
    """models_dir/arch/model.pt, trained here (engine trainer, CPU, synthetic nuclei) if absent."""
    from engine.demo import synthetic_project
    from engine.model.train import TrainConfig, train_project
    out = models_dir / arch / "model.pt"
    if out.exists():
        print(f"{arch}: reusing {out}")
        return out
    with tempfile.TemporaryDirectory() as tmp:
        proj = synthetic_project(Path(tmp) / "p", "nuclei", 16, 256, seed=0)
        cfg = TrainConfig(arch=arch, base="scratch", device="cpu", minutes=minutes, epochs=10000, seed=0,
                          val_fraction=0.25)
        t0 = time.perf_counter()
        res = train_project(proj, cfg)
        best = res.best or {}
        print(f"{arch}: trained {time.perf_counter() - t0:.0f} s, {res.epochs_run} epochs, best "
              f"{ {k: round(v, 3) for k, v in best.items() if isinstance(v, float)} } ({load()})")
        if res.model_path is None:
            raise SystemExit(f"{arch}: no checkpoint after {minutes} min of training; give it more --train-minutes")
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(res.model_path, out)
    return out


# -- images ----------------------------------------------------------------------------------------

def test_images(n: int, size: int) -> list[tuple[str, np.ndarray]]:
    from engine import synthetic as S
    from bench_cpu_path import FIXTURE, real_image
    imgs = [(f"synthetic nuclei seed {500 + k}", S.nuclei_sample(size, seed=500 + k).image) for k in range(n)]
    if FIXTURE.is_dir():
        imgs.append(("bitdepth_nucseg_40x mosaic", real_image(size)))
    return imgs


# -- contenders and comparison ---------------------------------------------------------------------

def make(path: Path, kind: str):
    from engine.model.predictor import Predictor
    p = Predictor(path, "cpu", **CONTENDERS[kind])
    if kind == "plain":  # torchvision's own full-image paste (NativeTransform keeps it available)
        p.model.transform.paste_full_masks = True
    return p


def compare(ref, other, thr: float) -> dict:
    from bench_cpu_path import compare as match
    c = match(ref, other)
    matched_ref = c["matched"]
    # unmatched instances away from the threshold band: real disagreements
    if ref and other:
        from engine.masks import iou as mask_iou
        def unmatched(a, b):
            return [x for x in a if not any(mask_iou(x, y) >= 0.5 for y in b
                                             if abs(x.x0 - y.x0) < 64 and abs(x.y0 - y.y0) < 64)]
        lone = unmatched(ref, other) + unmatched(other, ref)
    else:
        lone = list(ref) + list(other)
    c["lone"] = len(lone)
    c["lone_far"] = sum(1 for x in lone if x.score > thr + TOL["band"])
    c["ok"] = (c["lone_far"] == 0 and (matched_ref == 0 or (
        c.get("median_iou", 0) >= TOL["median_iou"] and c["min_iou"] >= TOL["min_iou"]
        and c["max_dscore"] <= TOL["dscore"])))
    return c


def run_arch(arch: str, path: Path, images, reps: int, thr: float) -> dict:
    preds = {k: make(path, k) for k in CONTENDERS}
    d = preds["default"]
    print(f"\n### {arch} ({path}), {len(images)} images, score >= {thr}, {torch.get_num_threads()} thread(s); "
          f"the default here: amp {d.amp_dtype}, channels_last {d.channels_last}")
    times = {k: [] for k in preds}
    outs: dict = {}
    for r in range(reps + 1):  # round 0 warms up
        for name, img in images:
            for k, p in preds.items():
                t = time.perf_counter()
                res = p.predict(img, score_threshold=thr)
                dt = time.perf_counter() - t
                if r:
                    times[k].append(dt)
                outs[(k, name)] = res
    per = {k: statistics.median(v) for k, v in times.items()}
    print(f"({load()} at the end)")
    print("| contender | s/image (median) | vs plain | vs MaskLoop fp32 |")
    print("|---|---|---|---|")
    for k, v in per.items():
        print(f"| {k} | {v:.2f} | {per['plain'] / v:.2f}x | {per['fp32'] / v:.2f}x |")
    print("| image | contender | instances (plain) | matched | median / min mask IoU | max score diff | "
          "unmatched (of them > thr + 0.02) | within tolerance |")
    print("|---|---|---|---|---|---|---|---|")
    ok = True
    for name, _ in images:
        ref = outs[("plain", name)]
        for k in ("fp32", "bf16-cl"):
            c = compare(ref, outs[(k, name)], thr)
            ok &= c["ok"]
            print(f"| {name} | {k} | {c['other']} ({c['ref']}) | {c['matched']} | {c.get('median_iou', 0):.3f} / "
                  f"{c['min_iou']:.3f} | {c['max_dscore']:.4f} | {c['lone']} ({c['lone_far']}) | "
                  f"{'yes' if c['ok'] else 'NO'} |")
    return {"speedup_bf16_vs_fp32": per["fp32"] / per["bf16-cl"],
            "speedup_bf16_vs_plain": per["plain"] / per["bf16-cl"], "outputs_ok": ok}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--archs", default="r18fpn_lite", help="comma-separated, e.g. r18fpn_lite,r18fpn,r50fpn")
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--images", type=int, default=2, help="synthetic test images (plus the real mosaic)")
    ap.add_argument("--reps", type=int, default=1, help="timed rounds after one warm-up round")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--score", type=float, default=0.5)
    ap.add_argument("--train-minutes", type=float, default=1.5)
    ap.add_argument("--models-dir", default=None, help="keep/reuse trained models here (default: a temp folder)")
    ap.add_argument("--train-only", action="store_true", help="train the models into --models-dir, time nothing")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from engine.model.device import cpu_native_bf16
    caps = getattr(torch.cpu, "get_capabilities", lambda: {})()
    print(f"machine: {platform.machine()} {caps.get('cpu_name', '')}, {os.cpu_count()} cores, affinity "
          f"{sorted(os.sched_getaffinity(0))}, torch {torch.__version__}, native bf16: {cpu_native_bf16()}, "
          f"{load()}")
    tmp = tempfile.TemporaryDirectory()
    models_dir = Path(args.models_dir) if args.models_dir else Path(tmp.name)
    if args.train_only:
        for arch in [a.strip() for a in args.archs.split(",") if a.strip()]:
            trained_model(arch, args.train_minutes, models_dir)
        return 0
    images = test_images(args.images, args.size)
    summary = {}
    for arch in [a.strip() for a in args.archs.split(",") if a.strip()]:
        summary[arch] = run_arch(arch, trained_model(arch, args.train_minutes, models_dir), images, args.reps,
                                 args.score)
    print("\n| arch | bf16-cl vs MaskLoop fp32 | bf16-cl vs plain | outputs within tolerance |")
    print("|---|---|---|---|")
    for arch, s in summary.items():
        print(f"| {arch} | {s['speedup_bf16_vs_fp32']:.2f}x | {s['speedup_bf16_vs_plain']:.2f}x | "
              f"{'yes' if s['outputs_ok'] else 'no'} |")
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
