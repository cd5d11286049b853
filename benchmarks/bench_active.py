"""Does "correct this next" pick better items than chance? Active learning on synthetic data.

    python benchmarks/bench_active.py                          # tiny default (a few minutes on 2 CPUs)
    python benchmarks/bench_active.py --kinds nuclei,ct --seeds 3 --k 4 --pool 16 --val 8 \\
        --size 256 --epochs 8 --tune-epochs 4 --measures flip,mid           # the issue's size

For each kind and seed: a project of `k` reviewed items, a pool of `pool` unreviewed ones
(their truth is known to the benchmark, as if a person corrected them) and `val` held-out
validation images. A base model is trained on the k items (from scratch; or --base MODEL).
Then:

1. Does the score point at the model's mistakes? Each pool item's uncertainty (one
   `rank_items` pass; every measure comes from the same two predictions) against the base
   model's own error on it (1 - acc50 against the truth): Spearman rho over the pool.
2. Does correcting the top-ranked items teach more? k more items are chosen by rank (each
   measure) or at random (the same seed's pick), "corrected" (their truth becomes training
   data), and the base model is fine-tuned on start + chosen the same way for every arm
   (same config, seed, epochs; as the GUI retrains from the active model). Validation
   acc50 (TP / (TP+FP+FN) at IoU 0.5, engine.model.evaluate) is compared.

Every number is printed, with the seconds each step took; record them in
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
    for ann in truth.values():
        proj.save_annotation(ann)            # reviewed truth; training picks its items explicitly
    return proj, [s.annotation.item_id for s in samples], truth


def train(proj, items, args, seed, base="scratch", epochs=None):
    from engine.model.config import TrainConfig
    from engine.model.train import train_project
    # warm-up of one iteration: the default (at least 10) would span the whole of a tiny run
    cfg = TrainConfig(arch=args.arch, base=str(base), epochs=epochs or args.epochs, device=args.device,
                      seed=seed, val_fraction=0.0, augment=True, warmup_iters=args.warmup)
    return train_project(proj, cfg, items=items).model_path


def per_item_acc50(proj, predictor, ids, truth) -> dict:
    from engine.model.evaluate import evaluate
    names = proj.labels.names()
    return {i: evaluate([(truth[i], predictor.predict(proj.load_image(i), score_threshold=0.5))],
                        names, per_class=False)["acc50"] for i in ids}


def acc50(proj, model_path, val_ids, truth, device) -> float:
    from engine.model.evaluate import evaluate
    from engine.model.predictor import Predictor
    pred = Predictor(model_path, device=device)
    pairs = [(truth[i], pred.predict(proj.load_image(i), score_threshold=0.5)) for i in val_ids]
    return evaluate(pairs, proj.labels.names(), per_class=False)["acc50"]


def spearman(a, b) -> float:
    from scipy.stats import spearmanr
    if len(set(a)) < 2 or len(set(b)) < 2:
        return float("nan")   # a constant column: no order to compare
    return float(spearmanr(a, b).correlation)


def one_round(kind: str, seed: int, args, clock) -> dict:
    from engine.model.predictor import Predictor
    from engine.model.uncertainty import rank_items
    with tempfile.TemporaryDirectory() as tmp:
        proj, ids, truth = build_project(Path(tmp), kind, args.k + args.pool + args.val, args.size, 1000 * seed)
        start, pool, val = ids[:args.k], ids[args.k:args.k + args.pool], ids[args.k + args.pool:]
        base = args.base or train(proj, start, args, seed)
        clock("base model" + (" (given)" if args.base else ""))
        out = {"start": acc50(proj, base, val, truth, args.device)}
        pred = Predictor(base, device=args.device)
        ranked = rank_items(proj, pred, pool)                  # both measures from one pass
        clock("ranking the pool")
        err = per_item_acc50(proj, pred, pool, truth)
        clock("base error on the pool")
        details = {i: u for i, _, u in ranked}
        position = {i: k for k, i in enumerate(pool)}
        rng = random.Random(seed)
        choices = {"random": rng.sample(pool, args.k)}
        for by in args.measures:
            scores = [details[i].score(by) for i in pool]
            out[f"rho_{by}"] = spearman(scores, [1.0 - err[i] for i in pool])
            order = sorted(pool, key=lambda i: (-details[i].score(by), position[i]))
            choices[by] = order[:args.k]
        out["pool_err"] = statistics.mean(1.0 - err[i] for i in pool)
        for name, chosen in choices.items():
            out[f"err_{name}"] = statistics.mean(1.0 - err[i] for i in chosen)   # how wrong the base was there
        for name, chosen in choices.items():
            if args.rho_only:
                break
            tuned = train(proj, start + chosen, args, seed, base=base, epochs=args.tune_epochs)
            out[name] = acc50(proj, tuned, val, truth, args.device)
            clock(f"fine-tune + validate ({name})")
        return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kinds", default="nuclei", help="nuclei, ct (comma-separated)")
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--k", type=int, default=2, help="items reviewed at the start, and items added")
    ap.add_argument("--pool", type=int, default=4)
    ap.add_argument("--val", type=int, default=2)
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--epochs", type=int, default=4, help="epochs of the base model (from scratch)")
    ap.add_argument("--tune-epochs", type=int, default=2, help="epochs of each fine-tuning arm")
    ap.add_argument("--warmup", type=int, default=1, help="warm-up iterations of every training")
    ap.add_argument("--arch", default="r18fpn")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: fair on a shared machine)")
    ap.add_argument("--measures", default="flip", help="flip, mid, both (comma-separated)")
    ap.add_argument("--base", default=None, metavar="MODEL",
                    help="a trained checkpoint to start from instead of training the base model")
    ap.add_argument("--rho-only", action="store_true",
                    help="only step 1 (score against the base model's error): no fine-tuning")
    args = ap.parse_args(argv)
    args.measures = [m for m in args.measures.split(",") if m]
    import torch
    torch.set_num_threads(args.threads)
    t0 = last = time.time()

    def clock(what: str) -> None:
        nonlocal last
        now = time.time()
        print(f"  {what}: {now - last:.0f} s", flush=True)
        last = now

    for kind in args.kinds.split(","):
        rows = []
        for s in range(args.first_seed, args.first_seed + args.seeds):
            r = one_round(kind, s, args, clock)
            rows.append(r)
            print(f"{kind} seed {s}: " + ", ".join(f"{k} {v:.3f}" for k, v in r.items()), flush=True)
        keys = rows[0].keys()
        print(f"{kind} mean over {len(rows)} seed(s): " +
              ", ".join(f"{k} {statistics.mean(r[k] for r in rows):.3f}" for k in keys), flush=True)
    print(f"# {time.time() - t0:.0f} s; k={args.k} pool={args.pool} val={args.val} size={args.size} "
          f"epochs={args.epochs}+{args.tune_epochs} arch={args.arch} threads={args.threads}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
