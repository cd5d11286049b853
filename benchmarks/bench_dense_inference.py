"""Dense images at inference: how many RPN proposals a detection limit needs.

A 1024 px image of touching nuclei holds about 800 of them. torchvision keeps 1000 RPN
proposals at test time; its NMS (IoU 0.7) leaves several on each object, so 1000
proposals cannot reach 800 objects. This script trains a small r18fpn from scratch on
synthetic nuclei (about 3 minutes on 2 CPU cores; or --model PATH), then segments dense
1024 px images with 1x, 2x and 3x as many proposals as the 1000-detection limit (1x is
torchvision's 1000), one tile, and prints time, detections and recall/AP50 at IoU 0.5
against the exact ground truth.

    python benchmarks/bench_dense_inference.py [--model PATH] [--device cpu|cuda]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def train_model(root: Path, device: str) -> Path:
    from engine.demo import synthetic_project
    from engine.model.train import TrainConfig, train_project
    proj = synthetic_project(root, "nuclei", 16, 256, seed=3)
    res = train_project(proj, TrainConfig(arch="r18fpn", base="scratch", epochs=12, device=device, seed=0,
                                          val_fraction=0.125))
    print(f"trained {res.run}: val mask_AP50 {res.best.get('mask_AP50', 0):.3f}")
    return res.model_path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="a MaskLoop checkpoint trained on nuclei (default: train one)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--limit", type=int, default=1000, help="detections per image (default 1000)")
    args = ap.parse_args()
    from engine import synthetic as S
    from engine.model.evaluate import evaluate
    from engine.model.predict import Predictor
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(args.model) if args.model else train_model(Path(tmp) / "p", args.device)
        print(f"{'objects':>8} {'proposals':>10} {'s/image':>8} {'detections':>11} {'recall50':>9} {'AP50':>6}")
        for n_nuclei in (80, None, 1400):  # sparse (the cost), the default density (~800), denser
            sample = S.nuclei_sample(1024, seed=99, n_nuclei=n_nuclei)
            for factor in (1, 2, 3):
                p = Predictor(model, args.device, tile=0, max_detections=args.limit)
                p.model.rpn._pre_nms_top_n["testing"] = factor * args.limit
                p.model.rpn._post_nms_top_n["testing"] = factor * args.limit
                p.predict(sample.image[:256, :256], score_threshold=0.05)  # warm-up
                t = time.perf_counter()
                found = p.predict(sample.image, score_threshold=0.05)
                dt = time.perf_counter() - t
                m = evaluate([(sample.annotation, found)], ["nucleus"], acc_score_threshold=0.5, per_class=False)
                print(f"{len(sample.instances):8d} {factor * args.limit:10d} {dt:8.2f} {len(found):11d} "
                      f"{m['recall50']:9.3f} {m['mask_AP50']:6.3f}", flush=True)


if __name__ == "__main__":
    main()
