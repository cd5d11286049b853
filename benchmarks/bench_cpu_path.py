"""The CPU inference path near its limit: where Predictor time goes, the backbone's GFLOP/s
against this CPU's matrix kernels, and candidate speed-ups against plain torchvision.

    python benchmarks/bench_cpu_path.py                          # small default (512 px, 2 reps)
    python benchmarks/bench_cpu_path.py --size 1024 --reps 3 --threads 1,2 --archs r18fpn,r50fpn
    python benchmarks/bench_cpu_path.py --model MODEL.pt --check-size 1024   # outputs check only

Timing models are randomly initialised (torchvision's anchors and ImageNet mean/std, so the
r50fpn weights load strictly into torchvision's maskrcnn_resnet50_fpn). An untrained model
scores every box near 0.5, so with score >= 0.05 and a 100-detection cap each image gives
100 detections: the box head, mask head and paste do the work of a 100-object image.

Contenders, interleaved image by image in one process (the machine is shared: medians):
- torchvision: maskrcnn_resnet50_fpn defaults (resize to 800 px, eager fp32, no_grad,
  full-image masks), as in bench_inference.py; r50fpn only.
- fp32: the Predictor with amp=False, channels_last=False (the CPU path before this change).
- fp32-cl: fp32 with channels_last (oneDNN's blocked-format convs; same arithmetic).
- bf16-cl: bf16 autocast on the conv parts + channels_last (needs native bf16: avx512_bf16/AMX).
Backbone-only candidates (the rest of the model unchanged): torch.jit.freeze +
optimize_for_inference, ONNX Runtime (if installed), torch.compile (--compile; slow to build).

The outputs check (--model, a trained checkpoint) compares each candidate's instances with
fp32's on real 40x nuclei (a 2x2 mosaic of bitdepth_nucseg_40x images) or synthetic ones.
The end-to-end comparison on trained models that decided the CPU default is
bench_cpu_e2e.py.
"""
from __future__ import annotations

import argparse
import copy
import os
import platform
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

SCORE, DETS = 0.05, 100
FIXTURE = Path(os.environ.get("MASKLOOP_FIXTURES", ROOT.parent / "shared" / "fixtures")) / "bitdepth_nucseg_40x"
CANDIDATES = {"fp32": dict(amp=False, channels_last=False), "fp32-cl": dict(amp=False, channels_last=True),
              "bf16-cl": dict(amp="bf16", channels_last=True)}


# -- ceilings and FLOPs ------------------------------------------------------------------------

def _best(fn, reps=3) -> float:
    fn()
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return min(ts)


def ceilings() -> dict:
    """GFLOP/s of a big torch.mm (fp32, bf16) and of a 3x3 256-channel conv (fp32, channels_last)."""
    n = 2048
    a, b = torch.randn(n, n), torch.randn(n, n)
    out = {"mm_fp32": 2 * n ** 3 / _best(lambda: torch.mm(a, b)) / 1e9}
    a16, b16 = a.bfloat16(), b.bfloat16()
    out["mm_bf16"] = 2 * n ** 3 / _best(lambda: torch.mm(a16, b16)) / 1e9
    conv = torch.nn.Conv2d(256, 256, 3, padding=1).eval().to(memory_format=torch.channels_last)
    x = torch.randn(1, 256, 128, 128).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        out["conv_fp32"] = 2 * 256 * 256 * 9 * 128 * 128 / _best(lambda: conv(x)) / 1e9
    return out


def backbone_gflop(model, size: int) -> float:
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as fc, torch.inference_mode():
        model.backbone(torch.zeros(1, 3, size, size))
    return fc.get_total_flops() / 1e9


# -- stage timing --------------------------------------------------------------------------------

class StageClock:
    """Wall time per stage of a Predictor: backbone, RPN, box head (+NMS), mask head, paste."""

    def __init__(self, pred):
        self.t: dict = {}
        m = pred.model
        rh = m.roi_heads
        self._span("backbone", m.backbone, m.backbone)
        self._span("rpn", m.rpn, m.rpn)
        self._span("roi_heads", rh, rh)
        self._span("mask", rh.mask_roi_pool, rh.mask_predictor)
        orig = pred._to_instances

        def timed(*a, **kw):  # the paste into boxes and Instance building
            t0 = time.perf_counter()
            try:
                return orig(*a, **kw)
            finally:
                self.t["paste"] = self.t.get("paste", 0.0) + time.perf_counter() - t0
        pred._to_instances = timed

    def _span(self, name, first, last):
        first.register_forward_pre_hook(lambda *_: self.t.__setitem__(name + "@", time.perf_counter()))
        last.register_forward_hook(lambda *_: self.t.__setitem__(
            name, self.t.get(name, 0.0) + time.perf_counter() - self.t[name + "@"]))

    def take(self) -> dict:
        t = {k: v for k, v in self.t.items() if not k.endswith("@")}
        self.t = {}
        t["box"] = t.pop("roi_heads", 0.0) - t.get("mask", 0.0)
        return t


# -- contenders ----------------------------------------------------------------------------------

def make_predictor(ckpt, kind: str):
    from engine.model.predictor import Predictor
    return Predictor(ckpt, "cpu", max_detections=DETS, tile=4096, **CANDIDATES[kind])


def torchvision_runner(ckpt):
    import torchvision
    from engine.model.normalize import normalize
    model = torchvision.models.detection.maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=2)
    model.load_state_dict(ckpt["state_dict"])  # strict: the very same weights
    model.eval()

    def run(img):
        x = torch.from_numpy(normalize(img, ckpt["normalization"])).permute(2, 0, 1).contiguous()
        with torch.no_grad():
            out = model([x])[0]
        keep = out["scores"] >= SCORE
        return len((out["masks"][keep] > 0.5).numpy())
    return run


def make_ckpt(arch: str, seed: int = 0) -> dict:
    from engine.model.build import IMAGENET_MEAN, IMAGENET_STD, TORCHVISION_ANCHORS, build_model, save_checkpoint
    from engine.model.checkpoint import load_checkpoint
    from engine.model.normalize import percentile_policy
    torch.manual_seed(seed)
    m = build_model(arch, 2, base="scratch", anchor_sizes=TORCHVISION_ANCHORS, image_mean=IMAGENET_MEAN,
                    image_std=IMAGENET_STD)
    with tempfile.TemporaryDirectory() as tmp:
        save_checkpoint(Path(tmp) / "m.pt", m, label_names=["nucleus"], normalization=percentile_policy(), run="bench")
        return load_checkpoint(Path(tmp) / "m.pt")


def backbone_variants(pred, size: int, want_compile: bool) -> dict:
    """Backbone-only substitutes for the fp32 backbone (name -> callable on an input tensor)."""
    bb = pred.model.backbone
    x = torch.zeros(1, 3, size, size)
    out = {"eager fp32": bb}
    with torch.inference_mode():
        frozen = torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.trace(copy.deepcopy(bb), x, strict=False)))
    out["jit.freeze+optimize_for_inference"] = frozen
    try:
        import onnxruntime as ort

        class Tup(torch.nn.Module):
            def __init__(self, b):
                super().__init__()
                self.b = b

            def forward(self, t):
                return tuple(self.b(t).values())
        path = Path(tempfile.mkdtemp()) / "backbone.onnx"
        torch.onnx.export(Tup(bb), (x,), str(path), input_names=["x"], opset_version=17, dynamo=False)
        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads = torch.get_num_threads(), 1
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        out[f"onnxruntime {ort.__version__}"] = lambda t: sess.run(None, {"x": t.numpy()})
    except Exception as e:  # noqa: BLE001 - not installed, or the export needs the onnx package
        print(f"  onnxruntime: skipped ({type(e).__name__}: {str(e)[:80]})", file=sys.stderr)
    if want_compile:
        t0 = time.perf_counter()
        comp = torch.compile(copy.deepcopy(bb))
        with torch.inference_mode():
            comp(x)
        print(f"  torch.compile: first call (compile) {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        out["torch.compile"] = comp
    return out


# -- outputs check -------------------------------------------------------------------------------

def real_image(size: int) -> np.ndarray:
    """A size x size mosaic of bitdepth_nucseg_40x images (16-bit 40x nuclei), else synthetic."""
    import tifffile
    files = sorted((FIXTURE / "images").glob("*.tif")) if FIXTURE.is_dir() else []
    if not files:
        from engine import synthetic as S
        return S.nuclei_sample(size, seed=7).image
    tiles = [tifffile.imread(f) for f in files[:16]]
    h, w = tiles[0].shape[:2]
    rows = [np.concatenate([tiles[(r * 4 + c) % len(tiles)] for c in range(-(-size // w))], 1)
            for r in range(-(-size // h))]
    return np.ascontiguousarray(np.concatenate(rows, 0)[:size, :size])


def compare(ref, other) -> dict:
    """Greedy one-to-one matching by mask IoU (highest score first)."""
    if not ref or not other:
        return {"ref": len(ref), "other": len(other), "matched": 0, "min_iou": 0.0, "max_dscore": 0.0}
    from engine.masks import iou as mask_iou

    def touch(a, b):
        return a.x0 < b.x0 + b.width and b.x0 < a.x0 + a.width and a.y0 < b.y0 + b.height and b.y0 < a.y0 + a.height
    iou = np.array([[mask_iou(r, o) if touch(r, o) else 0.0 for o in other] for r in ref])
    used, ious, ds = set(), [], []
    for i in np.argsort([-r.score for r in ref]):
        j = next((j for j in np.argsort(-iou[i]) if j not in used and iou[i, j] >= 0.5), None)
        if j is not None:
            used.add(j)
            ious.append(iou[i, j])
            ds.append(abs(ref[i].score - other[j].score))
    return {"ref": len(ref), "other": len(other), "matched": len(ious), "median_iou": float(np.median(ious)),
            "min_iou": float(min(ious)), "max_dscore": float(max(ds))}


def check_outputs(model_path: str, size: int, score: float) -> None:
    from engine.model.predictor import Predictor
    img = real_image(size)
    preds = {k: Predictor(model_path, "cpu", **kw) for k, kw in CANDIDATES.items()}
    ref = preds["fp32"].predict(img, score_threshold=score)
    print(f"\noutputs check: {Path(model_path).name} on a {img.shape[1]}x{img.shape[0]} "
          f"{'bitdepth_nucseg_40x mosaic' if FIXTURE.is_dir() else 'synthetic image'}, score >= {score}")
    print("| candidate | instances (fp32) | matched at IoU >= 0.5 | median / min mask IoU | max score diff |")
    print("|---|---|---|---|---|")
    for k, p in preds.items():
        if k == "fp32":
            continue
        c = compare(ref, p.predict(img, score_threshold=score))
        print(f"| {k} | {c['other']} ({c['ref']}) | {c['matched']} | {c.get('median_iou', 0):.3f} / "
              f"{c['min_iou']:.3f} | {c['max_dscore']:.4f} |")


# -- main ------------------------------------------------------------------------------------------

def run_arch(arch: str, size: int, reps: int, threads: int, want_compile: bool, img) -> None:
    torch.set_num_threads(threads)
    ckpt = make_ckpt(arch)
    preds = {k: make_predictor(ckpt, k) for k in CANDIDATES}
    clocks = {k: StageClock(p) for k, p in preds.items()}
    runners = {k: (lambda p=p: len(p.predict(img, score_threshold=SCORE))) for k, p in preds.items()}
    if arch == "r50fpn":
        tv = torchvision_runner(ckpt)
        runners = {"torchvision": lambda: tv(img), **runners}
    gf = backbone_gflop(preds["fp32"].model, size)
    times = {k: [] for k in runners}
    stages = {k: [] for k in preds}
    dets = {}
    for r in range(reps + 1):  # the first round warms up
        for k, fn in runners.items():
            t = time.perf_counter()
            dets[k] = fn()
            dt = time.perf_counter() - t
            if k in clocks:
                st = clocks[k].take()
            if r:
                times[k].append(dt)
                if k in clocks:
                    stages[k].append(st)
    base = statistics.median(times["fp32"])
    print(f"\n### {arch}, {size}x{size}, {threads} thread(s), median of {reps} "
          f"(load average {os.getloadavg()[0]:.1f} at the end)")
    print(f"backbone {gf:.0f} GFLOP per image (torch.utils.flop_counter)")
    print("| contender | s/image | vs fp32 | backbone s | GFLOP/s | rpn s | box s | mask s | paste s | other s | dets |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for k, ts in times.items():
        med = statistics.median(ts)
        row = f"| {k} | {med:.2f} | {base / med:.2f}x |"
        if k in stages:
            s = {n: statistics.median(x.get(n, 0.0) for x in stages[k]) for n in ("backbone", "rpn", "box", "mask",
                                                                                   "paste")}
            other = med - sum(s.values())
            row += (f" {s['backbone']:.2f} | {gf / s['backbone']:.1f} | {s['rpn']:.2f} | {s['box']:.2f} | "
                    f"{s['mask']:.2f} | {s['paste']:.2f} | {other:.2f} | {dets[k]} |")
        else:
            row += f" | | | | | | | {dets[k]} |"
        print(row)
    if "torchvision" in times:
        tvm = statistics.median(times["torchvision"])
        for k in preds:
            print(f"{k} / torchvision (800 px): {tvm / statistics.median(times[k]):.2f}x images/s at "
                  f"{(size / 800) ** 2:.2f}x the pixels")
    # backbone-only candidates, interleaved
    variants = backbone_variants(preds["fp32"], size, want_compile)
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((1, 3, size, size), np.float32))
    bt = {k: [] for k in variants}
    with torch.inference_mode():
        for r in range(reps + 1):
            for k, f in variants.items():
                t = time.perf_counter()
                f(x)
                if r:
                    bt[k].append(time.perf_counter() - t)
    b0 = statistics.median(bt["eager fp32"])
    print("| backbone only (fp32 arithmetic) | s | vs eager | GFLOP/s |")
    print("|---|---|---|---|")
    for k, ts in bt.items():
        med = statistics.median(ts)
        print(f"| {k} | {med:.2f} | {b0 / med:.2f}x | {gf / med:.1f} |")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--reps", type=int, default=2, help="timed rounds after one warm-up round")
    ap.add_argument("--threads", default="2", help="comma-separated torch thread counts, e.g. 1,2")
    ap.add_argument("--archs", default="r18fpn", help="comma-separated: r18fpn, r50fpn")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile on the backbone (slow build)")
    ap.add_argument("--model", default=None, help="a trained checkpoint for the outputs check")
    ap.add_argument("--check-size", type=int, default=1024)
    ap.add_argument("--check-score", type=float, default=0.5)
    ap.add_argument("--no-timing", action="store_true", help="only the outputs check")
    args = ap.parse_args(argv)

    from engine.model.device import cpu_native_bf16
    caps = getattr(torch.cpu, "get_capabilities", lambda: {})()
    print(f"machine: {platform.processor() or platform.machine()} {caps.get('cpu_name', '')}, {os.cpu_count()} "
          f"cores, torch {torch.__version__}, native bf16: {cpu_native_bf16()} (avx512_bf16 "
          f"{caps.get('avx512_bf16')}, amx_bf16 {caps.get('amx_bf16')}), load average {os.getloadavg()[0]:.1f}")
    if not args.no_timing:
        from engine import synthetic as S
        img = S.nuclei_sample(args.size, seed=100).image
        for th in [int(t) for t in args.threads.split(",")]:
            torch.set_num_threads(th)
            c = ceilings()
            print(f"\nceilings at {th} thread(s): torch.mm 2048^2 fp32 {c['mm_fp32']:.1f} GFLOP/s, bf16 "
                  f"{c['mm_bf16']:.1f}; conv3x3 256ch 128^2 fp32 {c['conv_fp32']:.1f} GFLOP/s")
            for arch in args.archs.split(","):
                run_arch(arch.strip(), args.size, args.reps, th, args.compile, img)
    if args.model:
        check_outputs(args.model, args.check_size, args.check_score)
    return 0


if __name__ == "__main__":
    sys.exit(main())
