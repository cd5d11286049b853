"""Helpers shared by the workflow tests and benchmarks (a plain module, not a conftest)."""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np



def make_project(root: Path, n: int = 4, size: int = 128, kind: str = "nuclei"):
    from engine.imageio import write_png
    from engine.project import Project
    from engine.synthetic import sample
    img_dir = root / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    truth = {}
    for k in range(n):
        s = sample(kind, size, seed=k)
        write_png(img_dir / f"img{k}.png", s.image)
        truth[f"img{k}"] = s
    labels = list(truth["img0"].labels)
    proj = Project.create(root / "proj", labels)
    proj.add(sorted(img_dir.glob("*.png")))
    return proj, truth


class TruthPredictor:
    """A stand-in for engine.model.predict.Predictor: returns the ground truth of the
    synthetic image (recognised by its pixels) with made-up scores."""

    def __init__(self, path, device, truth, delay=0.0):
        self.path, self.device, self.truth, self.delay = path, device, truth, delay
        self.label_names = list(next(iter(truth.values())).labels)   # as a checkpoint names its classes

    def predict(self, image, *, score_threshold=0.5, tile=None, progress=None, cancel=None):
        time.sleep(self.delay)
        for s in self.truth.values():
            if s.image.shape == image.shape and np.array_equal(s.image, image):
                out = []
                for k, inst in enumerate(s.instances):
                    score = 0.95 if k % 3 else 0.3
                    if score >= score_threshold:
                        out.append(inst.copy(id=f"p{k}", score=score, source="model"))
                return out
        return []


FAKE_TRAIN = r'''
import json, os, sys, time
args = sys.argv[1:]
proj = args[args.index("train") + 1]
epochs = int(args[args.index("--epochs") + 1]) if "--epochs" in args else 2
metric = float(os.environ.get("FAKE_AP", "0.5"))
delay = float(os.environ.get("FAKE_DELAY", "0.01"))
def out(**kw):
    print(json.dumps(kw), flush=True)
run = "run-fake-%d" % int(time.time() * 1000)
folder = os.path.join(proj, "models", run)
out(event="start", epochs=epochs, iters_per_epoch=4, device="cpu", train_items=3, val_items=1)
for e in range(1, epochs + 1):
    for i in range(1, 5):
        time.sleep(delay)
        out(event="iter", epoch=e, iter=i, loss=2.0 / (e * 4 + i), losses={}, lr=0.01, eta_s=1.0)
    out(event="epoch", epoch=e, metrics={"mask_AP": metric * e / epochs, "mask_AP50": metric, "acc50": metric},
        checkpoint="x")
os.makedirs(folder, exist_ok=True)
open(os.path.join(folder, "model.pt"), "wb").write(b"fake")
json.dump({"arch": "r18fpn", "base": "scratch", "train_items": 3, "val_items": 1, "epochs": epochs},
          open(os.path.join(folder, "config.json"), "w"))
json.dump({"best": {"mask_AP": metric, "mask_AP50": metric, "acc50": metric}},
          open(os.path.join(folder, "metrics.json"), "w"))
out(event="done", run=run, model="models/%s/model.pt" % run, best={"mask_AP": metric})
if os.environ.get("FAKE_VERDICT") == "keep":   # the activation rule kept the old model
    print("kept the old model active (an English line the GUI must not need)", file=sys.stderr)
    out(event="activated", run=run, active=False, reason="kept run-a as the active model (mask_AP 0.700)")
'''


def fake_train_factory(tmp_path: Path):
    script = tmp_path / "fake_train.py"
    script.write_text(FAKE_TRAIN)

    def factory(project_root, *, arch=None, base=None, epochs=None, device=None, extra=None):
        cmd = [sys.executable, "-u", str(script), "train", str(project_root)]
        if epochs:
            cmd += ["--epochs", str(epochs)]
        return cmd
    return factory
