"""Does "correct this next" pick better items than chance? Active learning on synthetic data.

    python benchmarks/bench_active.py                                  # tiny: nuclei, 1 seed
    python benchmarks/bench_active.py --kinds nuclei,ct --seeds 3 --k 4 --pool 16 --val 8 \
        --size 256 --epochs 8 --real ../shared/fixtures/<stardist image>   # the issue's size

For each kind and seed: a project of `k` reviewed items plus a pool of `pool` unreviewed
ones (their truth is known to the benchmark, as if a person corrected them) and `val`
held-out validation images. A model is trained on the k items; then k more are chosen

- by rank: `rank_items` with each measure of engine.model.uncertainty (flip, mid), or
- at random (the same seed's random pick for every measure),

each choice is "corrected" (its truth becomes training data), a model is retrained the
same way (same config, seed and starting weights), and validation acc50 (TP / (TP+FP+FN)
at IoU 0.5, engine.model.evaluate) is compared. Every number is printed; record them in
docs/benchmarks.md whatever they say.
"""
from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def build_project(where: Path, kind: str, n: int, size: int, seed: int):
    from engine import synthetic as S
    from engine.project import Project
    samples = S.samples(kind, n, size, seed=seed)
    imgdir = where / "images"
    imgdir.mkdir(parents=True)
    for s in samples:
        assert cv2.imwrite(str(imgdir / f"{s.annotation.item_id}.png"), s.image)
    proj = Project.create(where / "proj", list(samples[0].labels))
    proj.add([imgdir])
    truth = {s.annotation.item_id: s.annotation for s in samples}
    for item_id, ann in truth.items():
        proj.save_annotation(ann)            # reviewed truth; training picks its items explicitly
    return proj, [s.annotation.item_id for s in samples], truth


def train(proj, items, args, seed):
    from engine.model.config import TrainConfig
    from engine.model.train import train_project
    cfg = TrainConfig(arch=args.arch, base="scratch", epochs=args.epochs, device=args.device, seed=seed,
                      val_fraction=0.0, augment=True)
    return train_project(proj, cfg, items=items).model_path


def acc50(proj, model_path, val_ids, truth, device):
    from engine.model.evaluate import evaluate
    from engine.model.predictor import Predictor
    pred = Predictor(model_path, device=device)
    pairs = [(truth[i], pred.predict(proj.load_image(i), score_threshold=0.5)) for i in val_ids]
    return evaluate(pairs, proj.labels.names())["acc50"]


def one_round(kind: str, seed: int, args) -> dict:
    from engine.model.predictor import Predictor
    from engine.model.uncertainty import rank_items
    with tempfile.TemporaryDirectory() as tmp:
        proj, ids, truth = build_project(Path(tmp), kind, args.k + args.pool + args.val, args.size, 1000 * seed)
        start, pool, val = ids[:args.k], ids[args.k:args.k + args.pool], ids[args.k + args.pool:]
        base = train(proj, start, args, seed)
        out = {"start": acc50(proj, base, val, truth, args.device)}
        rng = random.Random(seed)
        choices = {"random": rng.sample(pool, args.k)}
        pred = Predictor(base, device=args.device)
        for by in args.measures:
            ranked = rank_items(proj, pred, pool, by=by)
            choices[by] = [i for i, _, _ in ranked[:args.k]]
        for name, chosen in choices.items():
            out[name] = acc50(proj, train(proj, start + chosen, args, seed), val, truth, args.device)
        return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kinds", default="nuclei")
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--k", type=int, default=2)
    ap.add_argument("--pool", type=int, default=6)
    ap.add_argument("--val", type=int, default=3)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--arch", default="r18fpn")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--measures", default="flip,mid")
    args = ap.parse_args(argv)
    args.measures = [m for m in args.measures.split(",") if m]
    t0 = time.time()
    for kind in args.kinds.split(","):
        rows = [one_round(kind, s, args) for s in range(args.seeds)]
        for s, r in enumerate(rows):
            print(f"{kind} seed {s}: " + ", ".join(f"{k} {v:.3f}" for k, v in r.items()), flush=True)
        keys = rows[0].keys()
        print(f"{kind} mean over {len(rows)} seed(s): " +
              ", ".join(f"{k} {statistics.mean(r[k] for r in rows):.3f}" for k in keys), flush=True)
    print(f"# {time.time() - t0:.0f} s; k={args.k} pool={args.pool} val={args.val} size={args.size} "
          f"epochs={args.epochs} arch={args.arch}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
