"""Learning from a few images: MaskLoop's one-click CPU training against Cellpose 3 from
scratch, at equal wall time, on real nuclei (issue 10).

Data
- real: ../shared/fixtures/bitdepth_nucseg_40x (39 real 16-bit DAPI images, 512x512, with
  hand-drawn instance label maps; read in place, never copied). Fixed split: the sorted
  file names permuted by numpy default_rng(0); the first 13 are the test set, the other 26
  the training set (SPLIT_SEED, N_TEST below; printed by --list-split).
- nuclei, ct: engine.synthetic (training images seed 0.., test images seed 1000..).

MaskLoop: a project in a temporary folder (train images added, label maps imported with
the labelmap importer, as a user would), trained with the one-click defaults on the CPU
for a wall-time budget: TrainConfig(minutes=M) where the trainer has it, otherwise a
cancel after M minutes keeping the best checkpoint so far (what a user who stops the run
gets). Recipe variants for A/B runs: --recipe '{"anchor_sizes": [8,16,32,64,128]}' (any
TrainConfig fields, JSON).

Cellpose 3 (its CP U-Net, trained from scratch with its defaults) runs in a separate
Python where cellpose<4 is installed -- it is NOT a MaskLoop dependency:
    python -m venv --system-site-packages ../cpvenv
    ../cpvenv/bin/pip install "cellpose<4"
    python benchmarks/bench_learning.py --cellpose-python ../cpvenv/bin/python
(default: $MASKLOOP_CELLPOSE_PYTHON, else ../cpvenv/bin/python beside the repository when present; without
it the Cellpose rows are skipped with a message). Its training process is stopped at the
same wall-time budget; the model it saved last (every epoch) is evaluated.

Metrics (one matcher for both, class-agnostic): a prediction and a ground-truth object
match when IoU > 0.5 (one-to-one by construction); pooled over the test images:
acc50 = TP / (TP + FP + FN), precision, recall, and the mean IoU of the matched pairs.
MaskLoop's predictions are taken at its default score threshold 0.5.

    python benchmarks/bench_learning.py                       # 3-minute budgets, real set only
    python benchmarks/bench_learning.py --minutes 10 20 --sets real nuclei ct   # the issue's runs
    python benchmarks/bench_learning.py --minutes 2 --train-n 8 --test-n 5 --no-cellpose \
        --recipe '{"anchor_sizes": [8,16,32,64,128]}'        # a quick recipe A/B

One thread per process by default (--threads): the machine is shared; note `uptime`.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Optional

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

FIXTURE = REPO.parent / "shared" / "fixtures" / "bitdepth_nucseg_40x"
SPLIT_SEED, N_TEST = 0, 13
DEFAULT_CP_PYTHON = REPO.parent / "cpvenv" / "bin" / "python"


# --------------------------------------------------------------------------------------
# data sets: (train [(name, image, label map)], test [...]) and, for MaskLoop, a project
# --------------------------------------------------------------------------------------

def real_split(fixture: Path = FIXTURE) -> tuple[list[str], list[str]]:
    names = sorted(p.stem for p in (fixture / "images").glob("*.tif"))
    order = np.random.default_rng(SPLIT_SEED).permutation(len(names))
    test = sorted(names[i] for i in order[:N_TEST])
    train = sorted(names[i] for i in order[N_TEST:])
    return train, test


def _read_tif(path: Path) -> np.ndarray:
    from engine.formats.labelmap import read_labelmap
    return read_labelmap(path)


def real_set(train_n: int, test_n: int, fixture: Path = FIXTURE):
    train, test = real_split(fixture)
    train, test = train[:train_n], test[:test_n]
    load = lambda n: (n, fixture / "images" / f"{n}.tif", _read_tif(fixture / "labels" / f"{n}.tif"))
    return [load(n) for n in train], [load(n) for n in test]


def synthetic_set(kind: str, train_n: int, test_n: int, size: int, tmp: Path):
    """Synthetic images written as 16-bit TIFFs (so both tools read files)."""
    import tifffile
    from engine import synthetic
    out = []
    for split, n, seed in (("train", train_n, 0), ("test", test_n, 1000)):
        d = tmp / f"{kind}_{split}"
        d.mkdir(parents=True, exist_ok=True)
        rows = []
        for s_i, s in enumerate(synthetic.samples(kind, n, size, seed)):
            name = f"{kind}_{split}_{s_i:03d}"
            tifffile.imwrite(d / f"{name}.tif", s.image)
            rows.append((name, d / f"{name}.tif", s.label_image()))
        out.append(rows)
    return out[0], out[1]


def make_project(root: Path, train_rows, label: str = "nucleus"):
    """A MaskLoop project of the training images with their label maps imported."""
    import tifffile
    from engine.formats.labelmap import import_labelmap
    from engine.project import Project
    proj = Project.create(root / "project")
    img_dir, lab_dir = root / "images", root / "labels"
    img_dir.mkdir(exist_ok=True)
    lab_dir.mkdir(exist_ok=True)
    for name, img_path, lab in train_rows:
        os.symlink(img_path, img_dir / f"{name}.tif")
        tifffile.imwrite(lab_dir / f"{name}.tif", lab.astype(np.uint16))
    proj.add(sorted(img_dir.glob("*.tif")))
    import_labelmap(proj, lab_dir, label=label)
    return proj


# --------------------------------------------------------------------------------------
# the matcher (one for both tools)
# --------------------------------------------------------------------------------------

def match_counts(pred_masks, gt_label: np.ndarray) -> dict:
    """TP/FP/FN at IoU > 0.5 and the summed IoU of the matches for one image.

    pred_masks: iterable of (y0, x0, bool mask) in image coordinates. IoU > 0.5 makes the
    matching one-to-one without an assignment step (two objects cannot both overlap one
    object by more than half of their union)."""
    gt_area = np.bincount(gt_label.ravel())
    n_gt = int((gt_area[1:] > 0).sum())
    matched_gt: set = set()
    tp, n_pred, iou_sum = 0, 0, 0.0
    for y0, x0, m in pred_masks:
        if not m.any():
            continue
        n_pred += 1
        g = gt_label[y0:y0 + m.shape[0], x0:x0 + m.shape[1]][m[:gt_label.shape[0] - y0, :gt_label.shape[1] - x0]]
        ids, inter = np.unique(g[g > 0], return_counts=True)
        if not len(ids):
            continue
        k = int(np.argmax(inter))
        gid, i = int(ids[k]), int(inter[k])
        iou = i / (int(m.sum()) + int(gt_area[gid]) - i)
        if iou > 0.5 and gid not in matched_gt:
            matched_gt.add(gid)
            tp += 1
            iou_sum += iou
    return {"tp": tp, "fp": n_pred - tp, "fn": n_gt - tp, "iou_sum": iou_sum}


def label_masks(label: np.ndarray):
    from scipy import ndimage
    for k, sl in enumerate(ndimage.find_objects(label), start=1):
        if sl is not None:
            yield sl[0].start, sl[1].start, label[sl] == k


def instance_masks(instances):
    for inst in instances:
        yield inst.y0, inst.x0, inst.mask.astype(bool)


def summarise(counts: list[dict]) -> dict:
    tp, fp, fn = (sum(c[k] for c in counts) for k in ("tp", "fp", "fn"))
    iou = sum(c["iou_sum"] for c in counts)
    return {"acc50": tp / max(1, tp + fp + fn), "precision": tp / max(1, tp + fp),
            "recall": tp / max(1, tp + fn), "mean_iou": iou / tp if tp else 0.0,
            "tp": tp, "fp": fp, "fn": fn}


# --------------------------------------------------------------------------------------
# MaskLoop
# --------------------------------------------------------------------------------------

def run_maskloop(train_rows, test_rows, minutes: float, tmp: Path, recipe: dict, label: str) -> dict:
    from engine.errors import CancelledError
    from engine.jobs import CancelToken
    from engine.model.predict import Predictor
    from engine.model.train import TrainConfig, train_project
    proj = make_project(tmp, train_rows, label)
    fields = TrainConfig.__dataclass_fields__
    cfg = TrainConfig(device="cpu", **recipe)
    cancel, timer = CancelToken(), None
    if "minutes" in fields:   # as `maskloop train --minutes M` (and the dialog's CPU default)
        cfg.minutes, cfg.epochs = minutes, int(recipe.get("epochs", 10000))
    else:  # before the trainer had budgets: stop at the budget, keep the best checkpoint
        timer = threading.Timer(minutes * 60.0, cancel.cancel)
    events = []
    t0 = time.monotonic()
    if timer is not None:
        timer.start()
    try:
        train_project(proj, cfg, callbacks=[events.append], cancel=cancel)
    except CancelledError:
        pass
    finally:
        if timer is not None:
            timer.cancel()
    train_s = time.monotonic() - t0
    run_dir = sorted(p for p in proj.models_dir.iterdir() if p.is_dir())[-1]
    model = next((p for p in (run_dir / "model.pt", run_dir / "best.pt") if p.exists()), None)
    iters = sum(1 for e in events if e.get("event") == "iter")
    epochs = sum(1 for e in events if e.get("event") == "epoch")
    start = next((e for e in events if e.get("event") == "start"), {})
    out = {"train_s": train_s, "iters": iters, "epochs": epochs, "base": start.get("base"),
           "arch": start.get("arch")}
    if model is None:
        return {**out, **summarise([match_counts([], gt) for _, _, gt in test_rows]), "note": "no checkpoint"}
    import tifffile
    pred = Predictor(model, device="cpu")
    counts = []
    for _, img_path, gt in test_rows:
        img = tifffile.imread(img_path)
        counts.append(match_counts(instance_masks(pred.predict(img, score_threshold=0.5)), gt))
    return {**out, **summarise(counts)}


# --------------------------------------------------------------------------------------
# Cellpose 3, in its own Python (worker code below runs there)
# --------------------------------------------------------------------------------------

CELLPOSE_WORKER = r'''
import sys, json, glob, os
import numpy as np, tifffile, torch
torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "1")))
mode, d = sys.argv[1], sys.argv[2]
from cellpose import io, models, train, version
io.logger_setup()
chan = [0, 0]
if mode == "train":
    names = sorted(os.path.basename(p)[:-4] for p in glob.glob(os.path.join(d, "train", "*.tif")))
    imgs = [tifffile.imread(os.path.join(d, "train", n + ".tif")).astype(np.float32) for n in names]
    labs = [np.load(os.path.join(d, "train", n + ".npy")) for n in names]
    net = models.CellposeModel(gpu=False, pretrained_model=False, model_type=None, diam_mean=30.0)
    print("cellpose", version, "training from scratch on", len(imgs), "images", flush=True)
    train.train_seg(net.net, train_data=imgs, train_labels=labs, channels=chan, normalize=True,
                    n_epochs=int(sys.argv[3]), save_path=d, save_every=1, model_name="bench")
else:
    path = os.path.join(d, "models", "bench")
    if not os.path.exists(path):
        print(json.dumps({"error": "no model saved within the budget"})); sys.exit(0)
    net = models.CellposeModel(gpu=False, pretrained_model=path)
    for p in sorted(glob.glob(os.path.join(d, "test", "*.tif"))):
        img = tifffile.imread(p).astype(np.float32)
        masks = net.eval(img, channels=chan, normalize=True)[0]
        np.save(p[:-4] + ".pred.npy", masks.astype(np.int32))
    print(json.dumps({"ok": True}))
'''


def cellpose_python(arg) -> Path | None:
    for c in (arg, os.environ.get("MASKLOOP_CELLPOSE_PYTHON"), DEFAULT_CP_PYTHON):
        if c and Path(c).exists():
            return Path(c)
    return None


def run_cellpose(py: Path, train_rows, test_rows, minutes: float, tmp: Path, threads: int,
                 cpus: Optional[set] = None) -> dict:
    d = tmp / "cellpose"
    for split, rows in (("train", train_rows), ("test", test_rows)):
        (d / split).mkdir(parents=True, exist_ok=True)
        for name, img_path, lab in rows:
            shutil.copyfile(img_path, d / split / f"{name}.tif")
            if split == "train":
                np.save(d / split / f"{name}.npy", lab.astype(np.int32))
    worker = d / "worker.py"
    worker.write_text(CELLPOSE_WORKER)
    env = dict(os.environ, BENCH_THREADS=str(threads), OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    t0 = time.monotonic()
    log = open(d / "train.log", "w")
    pin = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None
    proc = subprocess.Popen([str(py), str(worker), "train", str(d), "100"], stdout=log, stderr=subprocess.STDOUT,
                            env=env, preexec_fn=pin)
    try:
        proc.wait(timeout=minutes * 60.0)
        stopped = False
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        stopped = True
    train_s = time.monotonic() - t0
    log.close()
    r = subprocess.run([str(py), str(worker), "eval", str(d)], capture_output=True, text=True, env=env,
                       preexec_fn=pin)
    tail = (r.stdout + r.stderr).strip().splitlines()
    if r.returncode != 0 or not tail or "error" in tail[-1]:
        return {"train_s": train_s, "error": (tail[-1] if tail else f"exit {r.returncode}")[:200]}
    counts = [match_counts(label_masks(np.load(d / "test" / f"{name}.pred.npy")), gt) for name, _, gt in test_rows]
    saves = sum(1 for line in (d / "train.log").read_text().splitlines() if "saving network parameters" in line)
    return {"train_s": train_s, "stopped_at_budget": stopped, "epochs": saves, **summarise(counts)}


# --------------------------------------------------------------------------------------

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, nargs="+", default=[3.0], help="wall-time budgets (default 3)")
    ap.add_argument("--sets", nargs="+", default=["real"], choices=("real", "nuclei", "ct"))
    ap.add_argument("--train-n", type=int, default=26, help="training images (real: first N of the 26)")
    ap.add_argument("--test-n", type=int, default=13, help="test images (real: first N of the 13)")
    ap.add_argument("--synthetic-size", type=int, default=256)
    ap.add_argument("--recipe", default="{}", help="TrainConfig overrides as JSON (A/B runs)")
    ap.add_argument("--no-cellpose", action="store_true")
    ap.add_argument("--no-maskloop", action="store_true")
    ap.add_argument("--cellpose-python", default=None)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per process (shared machine: 1)")
    ap.add_argument("--parallel", action="store_true",
                    help="train both tools at once, each pinned to its own core (needs 2 cores): equal "
                         "machine, equal wall time, half the benchmark's length")
    ap.add_argument("--json", default=None, help="also write the rows to this JSON file")
    ap.add_argument("--list-split", action="store_true", help="print the real split and exit")
    args = ap.parse_args(argv)
    if args.list_split:
        tr, te = real_split()
        print(f"train ({len(tr)}):", " ".join(tr))
        print(f"test ({len(te)}):", " ".join(te))
        return 0
    import torch
    torch.set_num_threads(args.threads)
    recipe = json.loads(args.recipe)
    cp_py = None if args.no_cellpose else cellpose_python(args.cellpose_python)
    if not args.no_cellpose and cp_py is None:
        print("Cellpose skipped: no Python with cellpose<4 (see the docstring: a separate venv, "
              "--cellpose-python or MASKLOOP_CELLPOSE_PYTHON)")
    rows = []
    for set_name in args.sets:
        for minutes in args.minutes:
            with tempfile.TemporaryDirectory(prefix="bench_learning_") as t:
                tmp = Path(t)
                if set_name == "real":
                    if not FIXTURE.is_dir():
                        print(f"real set skipped: {FIXTURE} not found")
                        break
                    train_rows, test_rows = real_set(args.train_n, args.test_n)
                    label = "nucleus"
                else:
                    train_rows, test_rows = synthetic_set(set_name, args.train_n, args.test_n,
                                                          args.synthetic_size, tmp / "data")
                    label = "nucleus" if set_name == "nuclei" else "object"
                load0 = os.getloadavg()[0]
                cp_thread, cp_out = None, {}
                if cp_py is not None and args.parallel:
                    os.sched_setaffinity(0, {0})  # MaskLoop on core 0, Cellpose on core 1
                    cp_thread = threading.Thread(target=lambda: cp_out.update(run_cellpose(
                        cp_py, train_rows, test_rows, minutes, tmp, args.threads, cpus={1})))
                    cp_thread.start()
                if not args.no_maskloop:
                    (tmp / "ml").mkdir()
                    r = run_maskloop(train_rows, test_rows, minutes, tmp / "ml", recipe, label)
                    rows.append({"set": set_name, "tool": "MaskLoop", "minutes": minutes,
                                 "load": (load0 + os.getloadavg()[0]) / 2, **r})
                    print(json.dumps(rows[-1]), flush=True)
                if cp_thread is not None:
                    cp_thread.join()
                    rows.append({"set": set_name, "tool": "Cellpose 3", "minutes": minutes,
                                 "load": (load0 + os.getloadavg()[0]) / 2, **cp_out})
                    print(json.dumps(rows[-1]), flush=True)
                elif cp_py is not None:
                    load0 = os.getloadavg()[0]
                    r = run_cellpose(cp_py, train_rows, test_rows, minutes, tmp, args.threads)
                    rows.append({"set": set_name, "tool": "Cellpose 3", "minutes": minutes,
                                 "load": (load0 + os.getloadavg()[0]) / 2, **r})
                    print(json.dumps(rows[-1]), flush=True)
    print(f"\nrecipe overrides: {recipe or 'none (defaults)'}; threads {args.threads}; "
          f"train {args.train_n} / test {args.test_n} images")
    print(f"{'set':7} {'tool':11} {'budget':>6} {'train s':>8} {'acc50':>6} {'prec':>6} {'recall':>6} "
          f"{'mIoU':>6} {'iters':>6} {'epochs':>6} {'load':>5}")
    for r in rows:
        if "error" in r:
            print(f"{r['set']:7} {r['tool']:11} {r['minutes']:6.1f} {r['train_s']:8.0f}  {r['error']}")
            continue
        print(f"{r['set']:7} {r['tool']:11} {r['minutes']:6.1f} {r['train_s']:8.0f} {r['acc50']:6.3f} "
              f"{r['precision']:6.3f} {r['recall']:6.3f} {r['mean_iou']:6.3f} {str(r.get('iters', '-')):>6} "
              f"{str(r.get('epochs', '-')):>6} "
              f"{r['load']:5.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
