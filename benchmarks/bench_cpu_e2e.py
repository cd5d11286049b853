"""The CPU inference path end to end, on TRAINED models: whole Predictor.predict at 1024 px,
plain torchvision-style fp32 vs MaskLoop fp32 vs bf16 + channels_last, timed in one run and
with the outputs compared (issue 15; bench_cpu_path.py has the per-stage and backbone figures).

    taskset -c 1 nice -n 19 python benchmarks/bench_cpu_e2e.py     # small: r18fpn_lite, 512 px, 2 images
    taskset -c 1 nice -n 19 python benchmarks/bench_cpu_e2e.py --archs r18fpn_lite,r18fpn --size 1024 \
        --images 2 --reps 3 --backbone --train-minutes 6 --models-dir /tmp/cpu-e2e-models   # the issue's run
    (train a model further: --train-only --train-more --archs r18fpn --train-minutes 10 --models-dir ...)

Models: each arch is trained from scratch with the engine's own trainer (train_project,
TrainConfig(minutes=--train-minutes), CPU) on a synthetic nuclei project, so its scores are
confident and its masks real; an untrained model's scores all sit near 0.5 and its mask
probabilities near 0.5, which makes any output comparison a coin flip. --models-dir keeps
the trained model.pt per arch and reuses it on the next run (delete it to retrain).

Images: --images synthetic 1024 px nuclei images (seeds 500.., not seen in training; a few
hundred nuclei each) plus, when ../shared/fixtures is present, a 1024 px mosaic of the real
16-bit 40x nuclei of bitdepth_nucseg_40x.

Time: the process's CPU time per predict (time.process_time) is the main figure: with one
torch thread on one pinned core it is the work done, while wall time on a shared machine
also counts the time other processes held the core (both are printed).

Contenders (one Predictor each, same checkpoint, single tile, interleaved image by image;
each warmed up on the first image, then --reps timed rounds over all images):
- plain: torchvision-style eager fp32 — BatchNorm not folded, NCHW, torchvision's own
  full-image mask paste (paste_masks_in_image), then thresholded per instance.
- fp32: the MaskLoop CPU path without bf16 (BatchNorm folded, masks pasted in their box).
- bf16-cl: bf16 autocast on the conv parts + channels_last (amp="bf16").
Predictor(path, "cpu"), what a user gets, is one of fp32 / bf16-cl (printed).

Outputs: each contender's instances against plain's, matched one to one by mask IoU >= 0.5
(best score first), judged three ways:
- the brief's tolerance (as tests/engine/test_cpu_path.py): each of the 10 best instances has
  a partner with its bounding box within 1 px and its score within 0.01;
- a per-detection tolerance over ALL instances (fixed before the first run): matched median
  mask IoU >= 0.95, min >= 0.80, score difference <= 0.02, and no unmatched instance more
  than 0.02 above the score threshold (one within 0.02 may fall on either side under any
  rounding); the disagreements are listed;
- acc50 against the ground truth (bench_learning's matcher): what a user would notice.
A control row, fp32 on the image with +-1 grey level of noise, shows how far the outputs
move for the smallest change an image file can carry.
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
              "default": dict()}  # not timed: it is fp32 or bf16-cl, by engine.model.device's rule


def load() -> str:
    return "load average " + " / ".join(f"{v:.1f}" for v in os.getloadavg())


# -- a trained model per arch --------------------------------------------------------------------

def trained_model(arch: str, minutes: float, models_dir: Path, more: bool = False) -> Path:
    """models_dir/arch/model.pt, trained here (engine trainer, CPU, synthetic nuclei) if absent;
    more=True trains an existing one further (starting from it) for `minutes`."""
    from engine.demo import synthetic_project
    from engine.model.train import TrainConfig, train_project
    out = models_dir / arch / "model.pt"
    if out.exists() and not more:
        print(f"{arch}: reusing {out}")
        return out
    if minutes <= 0:  # speed only: a random-init model (its outputs check means nothing)
        from bench_cpu_path import make_ckpt
        from engine.model.build import save_checkpoint
        from engine.model.checkpoint import model_from_checkpoint
        ck = make_ckpt(arch)
        out.parent.mkdir(parents=True, exist_ok=True)
        save_checkpoint(out, model_from_checkpoint(ck), label_names=ck["label_names"],
                        normalization=ck["normalization"], run="untrained")
        print(f"{arch}: UNTRAINED (random init), for speed only")
        return out
    with tempfile.TemporaryDirectory() as tmp:
        proj = synthetic_project(Path(tmp) / "p", "nuclei", 16, 256, seed=0)
        cfg = TrainConfig(arch=arch, base=str(out) if out.exists() else "scratch", device="cpu", minutes=minutes,
                          epochs=10000, seed=0,
                          val_fraction=0.25)
        t0 = time.perf_counter()
        res = train_project(proj, cfg)
        best = res.best or {}
        print(f"{arch}: trained {time.perf_counter() - t0:.0f} s, {res.epochs_run} epochs, best "
              f"{ {k: round(v, 3) for k, v in best.items() if isinstance(v, float)} } ({load()})")
        if res.model_path is None:
            raise SystemExit(f"{arch}: no checkpoint after {minutes} min of training; give it more --train-minutes")
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(res.model_path, out.with_suffix(".new"))
        os.replace(out.with_suffix(".new"), out)
    return out


# -- images ----------------------------------------------------------------------------------------

def real_mosaic(size: int):
    """(image, label map): a size x size mosaic of bitdepth_nucseg_40x images and their
    hand-drawn labels (ids made unique per tile); the same tiling as bench_cpu_path.real_image."""
    import tifffile
    from bench_cpu_path import FIXTURE
    from engine.formats.labelmap import read_labelmap
    files = sorted((FIXTURE / "images").glob("*.tif"))[:16]
    imgs = [tifffile.imread(f) for f in files]
    labs = [read_labelmap(FIXTURE / "labels" / f.name).astype(np.int64) for f in files]
    h, w = imgs[0].shape[:2]
    nr, nc = -(-size // h), -(-size // w)
    def tile(r, c, lab):
        k = (r * 4 + c) % len(files)
        if not lab:
            return imgs[k]
        t = labs[k].copy()
        t[t > 0] += (r * nc + c) * 100000
        return t
    out = []
    for lab in (False, True):
        rows = [np.concatenate([tile(r, c, lab) for c in range(nc)], 1) for r in range(nr)]
        out.append(np.ascontiguousarray(np.concatenate(rows, 0)[:size, :size]))
    return out[0], out[1]


def test_images(n: int, size: int) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, image, ground-truth label map)."""
    from engine import synthetic as S
    from bench_cpu_path import FIXTURE
    imgs = []
    for k in range(n):
        smp = S.nuclei_sample(size, seed=500 + k)
        imgs.append((f"synthetic nuclei seed {500 + k}", smp.image, smp.label_image()))
    if FIXTURE.is_dir():
        imgs.append(("bitdepth_nucseg_40x mosaic", *real_mosaic(size)))
    return imgs


def accuracy(insts, truth: np.ndarray) -> float:
    """acc50 = TP / (TP + FP + FN) at mask IoU > 0.5 against the truth (bench_learning's matcher)."""
    from bench_learning import instance_masks, match_counts, summarise
    return summarise([match_counts(instance_masks(insts), truth)])["acc50"]


def top_agree(ref, other, pairs, k: int = 10) -> bool:
    """The brief's tolerance (tests/engine/test_cpu_path.py): each of ref's k best instances has
    a partner with its bounding box within 1 px and its score within 0.01."""
    partner = dict(pairs)
    for i in sorted(range(len(ref)), key=lambda i: -ref[i].score)[:k]:
        j = partner.get(i)
        if j is None or abs(ref[i].score - other[j].score) > 0.01 or \
                max(abs(a - b) for a, b in zip(ref[i].bbox, other[j].bbox)) > 1:
            return False
    return True


# -- contenders and comparison ---------------------------------------------------------------------

def make(path: Path, kind: str):
    from engine.model.predictor import Predictor
    p = Predictor(path, "cpu", **CONTENDERS[kind])
    if kind == "plain":  # torchvision's own full-image paste (NativeTransform keeps it available)
        p.model.transform.paste_full_masks = True
    return p


def compare(ref, other, thr: float) -> dict:
    """One-to-one matching by mask IoU >= 0.5, best ref score first; the unmatched of both sides."""
    from engine.masks import iou as mask_iou

    def touch(a, b):
        return a.x0 < b.x0 + b.width and b.x0 < a.x0 + a.width and a.y0 < b.y0 + b.height and b.y0 < a.y0 + a.height
    iou = np.array([[mask_iou(r, o) if touch(r, o) else 0.0 for o in other] for r in ref]).reshape(len(ref),
                                                                                                  len(other))
    used, pairs = set(), []
    for i in np.argsort([-r.score for r in ref]):
        j = next((int(j) for j in np.argsort(-iou[i]) if int(j) not in used and iou[i, j] >= 0.5), None)
        if j is not None:
            used.add(j)
            pairs.append((int(i), j))
    ious = [iou[i, j] for i, j in pairs]
    ds = [abs(ref[i].score - other[j].score) for i, j in pairs]
    hit_ref = {i for i, _ in pairs}
    lone_ref = [i for i in range(len(ref)) if i not in hit_ref]
    lone_other = [j for j in range(len(other)) if j not in used]
    lone = [ref[i] for i in lone_ref] + [other[j] for j in lone_other]
    # what each real disagreement is: side, score, area, best IoU with the other side's instances
    far = [("plain", ref[i].score, ref[i].area, float(iou[i].max(initial=0))) for i in lone_ref] + \
          [("other", other[j].score, other[j].area, float(iou[:, j].max(initial=0))) for j in lone_other]
    c = {"ref": len(ref), "other": len(other), "matched": len(pairs),
         "median_iou": float(np.median(ious)) if ious else 0.0, "min_iou": float(min(ious)) if ious else 0.0,
         "max_dscore": float(max(ds)) if ds else 0.0, "lone": len(lone),
         "iou_below_09": sum(1 for v in ious if v < 0.9), "dscore_above_001": sum(1 for v in ds if v > 0.01),
         "lone_far": sum(1 for x in lone if x.score > thr + TOL["band"]),
         "far": [f for f in far if f[1] > thr + TOL["band"]], "top10": top_agree(ref, other, pairs)}
    c["ok"] = c["lone_far"] == 0 and (not pairs or (c["median_iou"] >= TOL["median_iou"]
                                                    and c["min_iou"] >= TOL["min_iou"]
                                                    and c["max_dscore"] <= TOL["dscore"]))
    return c


def one_lsb(img: np.ndarray) -> np.ndarray:
    """img with -1, 0 or +1 grey level added per pixel (seeded), clipped to its integer range."""
    noise = np.random.default_rng(1).integers(-1, 2, img.shape)
    info = np.iinfo(img.dtype)
    return np.clip(img.astype(np.int64) + noise, info.min, info.max).astype(img.dtype)


def run_arch(arch: str, path: Path, images, reps: int, thr: float) -> dict:
    preds = {k: make(path, k) for k in CONTENDERS if k != "default"}
    d = make(path, "default")
    same = next(k for k in ("bf16-cl", "fp32") if (d.amp_dtype, d.channels_last) ==
                (preds[k].amp_dtype, preds[k].channels_last))
    del d
    print(f"\n### {arch} ({path}), {len(images)} images of {images[0][1].shape[1]} px, score >= {thr}, "
          f"{torch.get_num_threads()} thread(s); Predictor(path, 'cpu') here is {same}")
    for p in preds.values():  # warm-up: oneDNN builds its kernels for these shapes on the first call
        p.predict(images[0][1], score_threshold=thr)
    wall = {k: [] for k in preds}
    cpu = {k: [] for k in preds}
    outs: dict = {}
    for _ in range(reps):
        for name, img, _ in images:
            for k, p in preds.items():  # interleaved: a load change hits every contender alike
                t, c = time.perf_counter(), time.process_time()
                outs[(k, name)] = p.predict(img, score_threshold=thr)
                wall[k].append(time.perf_counter() - t)
                cpu[k].append(time.process_time() - c)

    def per_image(times):  # per image the median over the rounds, then the mean over the images
        return {k: sum(statistics.median(v[i::len(images)]) for i in range(len(images))) / len(images)
                for k, v in times.items()}
    per, per_wall = per_image(cpu), per_image(wall)
    print(f"({load()} at the end)")
    print("| contender | CPU s/image | vs plain | vs MaskLoop fp32 | wall s/image | vs plain | vs MaskLoop fp32 |")
    print("|---|---|---|---|---|---|---|")
    for k in per:
        v, w = per[k], per_wall[k]
        print(f"| {k}{' (the default here)' if k == same else ''} | {v:.2f} | {per['plain'] / v:.2f}x | "
              f"{per['fp32'] / v:.2f}x | {w:.2f} | {per_wall['plain'] / w:.2f}x | {per_wall['fp32'] / w:.2f}x |")
    # the control: plain fp32 on the image with +-1 grey level of noise (the smallest change a
    # file can carry) shows how much this model's outputs move for an invisible input change
    for name, img, _ in images:
        outs[("fp32 on +-1 LSB", name)] = preds["fp32"].predict(one_lsb(img), score_threshold=thr)
    print("| image | contender | instances (plain) | matched | median / min mask IoU | matched IoU < 0.9 | "
          "max score diff | score diff > 0.01 | unmatched (of them > thr + 0.02) | top 10: box 1 px, score 0.01 | "
          "acc50 vs truth (plain) | all within the per-detection tolerance |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    ok, top_ok, details = True, True, []
    for name, _, truth in images:
        ref = outs[("plain", name)]
        acc_ref = accuracy(ref, truth)
        for k in ("fp32", "bf16-cl", "fp32 on +-1 LSB"):
            c = compare(ref, outs[(k, name)], thr)
            if k == "bf16-cl":
                ok &= c["ok"]
                top_ok &= c["top10"]
            print(f"| {name} | {k} | {c['other']} ({c['ref']}) | {c['matched']} | {c['median_iou']:.3f} / "
                  f"{c['min_iou']:.3f} | {c['iou_below_09']} | {c['max_dscore']:.4f} | {c['dscore_above_001']} | "
                  f"{c['lone']} ({c['lone_far']}) | {'yes' if c['top10'] else 'NO'} | "
                  f"{accuracy(outs[(k, name)], truth):.4f} ({acc_ref:.4f}) | {'yes' if c['ok'] else 'NO'} |")
            details.extend(f"{name}, {k}: only in {side}, score {sc:.3f}, area {a} px, best IoU with the "
                           f"other side {bi:.2f}" for side, sc, a, bi in c["far"])
    for d in details:
        print("  " + d)
    return {"speedup_bf16_vs_fp32": per["fp32"] / per["bf16-cl"],
            "speedup_bf16_vs_plain": per["plain"] / per["bf16-cl"],
            "wall_bf16_vs_fp32": per_wall["fp32"] / per_wall["bf16-cl"], "outputs_ok": ok, "top_ok": top_ok}


def backbone_only(path: Path, size: int, reps: int) -> None:
    """The backbone + FPN alone (most of the FLOPs): MaskLoop fp32, bf16-cl and ONNX Runtime's
    CPU provider on the fp32 graph (optional: onnxruntime + onnx, never a MaskLoop dependency)."""
    fp32, bf16 = make(path, "fp32"), make(path, "bf16-cl")
    x = torch.from_numpy(np.random.default_rng(0).random((1, 3, size, size), np.float32))
    runs = {"fp32": lambda: fp32.model.backbone(x),
            "bf16-cl": lambda: bf16.model.backbone(x.contiguous(memory_format=torch.channels_last))}
    try:
        import onnxruntime as ort

        class Tup(torch.nn.Module):  # ONNX wants a tuple of outputs
            def __init__(self, b):
                super().__init__()
                self.b = b

            def forward(self, t):
                return tuple(self.b(t).values())
        onnx_path = Path(tempfile.mkdtemp()) / "backbone.onnx"
        torch.onnx.export(Tup(fp32.model.backbone), (x,), str(onnx_path), input_names=["x"], opset_version=17,
                          dynamo=False)
        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads = torch.get_num_threads(), 1
        sess = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
        runs[f"onnxruntime {ort.__version__}"] = lambda: sess.run(None, {"x": x.numpy()})
    except Exception as e:  # noqa: BLE001 - not installed, or no onnx package for the export
        print(f"onnxruntime: skipped ({type(e).__name__}: {str(e)[:100]})")
    with torch.inference_mode():
        ref = [v.float() for v in runs["fp32"]().values()]
        outs, cpu = {}, {k: [] for k in runs}
        for k, f in runs.items():  # warm-up
            outs[k] = f()
        for _ in range(reps):
            for k, f in runs.items():
                c = time.process_time()
                f()
                cpu[k].append(time.process_time() - c)
    print(f"\nbackbone + FPN only, {size}x{size}, median CPU s of {reps} ({load()})")
    print("| backbone | CPU s | vs fp32 | max abs diff / feature range |")
    print("|---|---|---|---|")
    for k, ts in cpu.items():
        o = outs[k]
        o = list(o.values()) if isinstance(o, dict) else [torch.from_numpy(a) for a in o]
        err = max(float((a.float() - b).abs().max() / (b.max() - b.min())) for a, b in zip(o, ref))
        print(f"| {k} | {statistics.median(ts):.2f} | {statistics.median(cpu['fp32']) / statistics.median(ts):.2f}x | "
              f"{err:.2g} |")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--archs", default="r18fpn_lite", help="comma-separated, e.g. r18fpn_lite,r18fpn,r50fpn")
    ap.add_argument("--size", type=int, default=512, help="image size (the issue's figure: 1024)")
    ap.add_argument("--images", type=int, default=2, help="synthetic test images (plus the real mosaic)")
    ap.add_argument("--reps", type=int, default=1, help="timed rounds after one warm-up round")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--score", type=float, default=0.5)
    ap.add_argument("--train-minutes", type=float, default=1.5,
                    help="training budget per arch; 0: an untrained model, for speed only")
    ap.add_argument("--models-dir", default=None, help="keep/reuse trained models here (default: a temp folder)")
    ap.add_argument("--train-only", action="store_true", help="train the models into --models-dir, time nothing")
    ap.add_argument("--train-more", action="store_true", help="with --train-only: train existing models further")
    ap.add_argument("--backbone", action="store_true", help="also time the backbone alone, with ONNX Runtime")
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
            trained_model(arch, args.train_minutes, models_dir, more=args.train_more)
        return 0
    images = test_images(args.images, args.size)
    summary = {}
    for arch in [a.strip() for a in args.archs.split(",") if a.strip()]:
        path = trained_model(arch, args.train_minutes, models_dir)
        summary[arch] = run_arch(arch, path, images, args.reps, args.score)
        if args.backbone:
            backbone_only(path, args.size, max(3, args.reps))
    print("\n| arch | bf16-cl vs MaskLoop fp32 (CPU time) | bf16-cl vs plain (CPU time) | vs fp32 (wall) | "
          "top 10 within 1 px / 0.01 | every detection within the per-detection tolerance |")
    print("|---|---|---|---|---|---|")
    for arch, s in summary.items():
        print(f"| {arch} | {s['speedup_bf16_vs_fp32']:.2f}x | {s['speedup_bf16_vs_plain']:.2f}x | "
              f"{s['wall_bf16_vs_fp32']:.2f}x | {'yes' if s['top_ok'] else 'no'} | "
              f"{'yes' if s['outputs_ok'] else 'no'} |")
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
