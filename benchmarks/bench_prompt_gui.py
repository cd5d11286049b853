"""Prompt latency through the GUI: the canvas's prompt tool asks, the prompt worker answers,
the answer becomes an undo step on screen — against the engine call alone, in one run.

    python benchmarks/bench_prompt_gui.py                      # r18fpn, 128 px, 10 box + 10 click prompts
    python benchmarks/bench_prompt_gui.py --arch r50fpn --size 256 --prompts 20

One offscreen main window (no loop) on a temporary project with one synthetic nuclei
image; its active model is a randomly initialised Mask R-CNN saved as a real checkpoint
(no downloads). Measured, per prompt, one at a time:

- engine: `PromptEngine.box` / `.click` of the same boxes and points in this thread, with
  one torch thread (as the worker runs them), from cached features; with --baseline also
  the older path (fp32 heads, clicks run the mask head), interleaved call by call;
- GUI: from `BoxPromptTool.prompt` / `.click` (what a mouse release calls) until the
  answer is an undo step on screen (`PromptService.answered` delivered and applied),
  including the queue to the worker thread and back;
- worker: the engine call as timed inside the worker (PromptResult.seconds), so
  GUI − worker is what the GUI path adds.

Also: the feature caching that showing the item triggers (`PromptService.prepared`).
Figures depend on the machine's load: say the load (printed) with every figure.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


def pct(values, q):
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q / 100.0 * (len(s) - 1))))]


def wait_for(signal, action, timeout_s: float = 600.0):
    """Run action(), then the event loop until `signal` fires; its arguments."""
    from PyQt5 import QtCore
    loop = QtCore.QEventLoop()
    got = []

    def on(*args):
        got.append(args)
        loop.quit()
    signal.connect(on)
    timer = QtCore.QTimer()
    timer.setSingleShot(True)
    timer.timeout.connect(loop.quit)
    timer.start(int(timeout_s * 1000))
    try:
        action()
        if not got:
            loop.exec_()
    finally:
        signal.disconnect(on)
    if not got:
        raise TimeoutError("no answer")
    return got[0]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", default="r18fpn")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--prompts", type=int, default=10)
    ap.add_argument("--baseline", action="store_true",
                    help="also time the older engine path (fp32 heads, no cached click masks)")
    args = ap.parse_args(argv)

    import numpy as np
    import tifffile
    import torch
    from PyQt5 import QtWidgets
    from engine import synthetic as S
    from engine.model.checkpoint import save_checkpoint
    from engine.model.normalize import percentile_policy
    from engine.model.predict import Predictor
    from engine.model.prompts import PromptEngine
    from engine.model.weights import build_model
    from engine.project import Project

    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([])
    tmp = Path(tempfile.mkdtemp(prefix="bench_prompt_gui_"))
    sample = S.nuclei_sample(args.size, seed=100)
    tifffile.imwrite(tmp / "nuclei.tif", sample.image)
    proj = Project.create(tmp / "proj", ["nucleus"])
    proj.add([tmp / "nuclei.tif"])
    torch.manual_seed(0)
    run = proj.models_dir / "run-bench"
    run.mkdir(parents=True)
    save_checkpoint(run / "model.pt", build_model(args.arch, 2), label_names=["nucleus"],
                    normalization=percentile_policy(), arch=args.arch, run="run-bench")
    proj.set_active_model("run-bench")
    insts = sample.annotation.instances[:args.prompts]
    boxes = [(i.x0, i.y0, i.x0 + i.width, i.y0 + i.height) for i in insts]
    points = [((b[0] + b[2]) // 2, (b[1] + b[3]) // 2) for b in boxes]
    print(f"# {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, torch {torch.__version__}, "
          f"{args.arch}, {args.size}² image, {len(boxes)} box + {len(points)} click prompts")

    from gui.main_window import MainWindow
    win = MainWindow(loop=False)
    win.resize(900, 700)
    win.show()
    svc, tool = win.prompts, win.canvas.tools["box_prompt"]
    t0 = time.perf_counter()
    item_id, cache_s = wait_for(svc.prepared, lambda: win.open_project(proj.root))
    t_show = time.perf_counter() - t0
    ctl = win.controller
    win.canvas.set_tool("box_prompt")
    tool.prompt(boxes[0])                                     # warm-up of the head path
    wait_for(svc.answered, lambda: None)

    gui, worker = {"box": [], "click": []}, {"box": [], "click": []}
    for b, p in zip(boxes, points):
        for kind, act in (("box", lambda: tool.prompt(b)), ("click", lambda: tool.click(p))):
            t = time.perf_counter()
            (res,) = wait_for(svc.answered, act)
            gui[kind].append(time.perf_counter() - t)
            worker[kind].append(res.seconds)
            assert res.rule == "model", res.rule
    n_undo = ctl.undo_stack.count()

    # the engine alone, same model file, same boxes and points, one torch thread
    pred = Predictor(str(run / "model.pt"), device="cpu")
    engines = {"engine alone": PromptEngine(pred)}
    if args.baseline:
        engines["older path"] = PromptEngine(pred, bf16=False, cache_masks=False)
    image = ctl.image
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    timed = {name: {"box": [], "click": []} for name in engines}
    try:
        for eng in engines.values():
            eng.prepare("bench", image)
            eng.box("bench", image, boxes[0])
        for b, p in zip(boxes, points):
            for kind in ("box", "click"):
                for name, eng in engines.items():
                    t = time.perf_counter()
                    eng.box("bench", image, b) if kind == "box" else eng.click("bench", image, p)
                    timed[name][kind].append(time.perf_counter() - t)
    finally:
        torch.set_num_threads(threads)
    engine = timed["engine alone"]

    ms = lambda v: f"{1000 * pct(v, 50):.1f} / {1000 * pct(v, 95):.1f} ms"
    old = timed.get("older path")
    print("| prompt | engine alone p50 / p95 | worker's engine call p50 / p95 | GUI: ask → on screen p50 / p95 "
          "| GUI overhead (median of GUI − worker) |" + (" older engine path p50 / p95 |" if old else ""))
    print("|---|---|---|---|---|" + ("---|" if old else ""))
    for kind in ("box", "click"):
        over = statistics.median(g - w for g, w in zip(gui[kind], worker[kind]))
        print(f"| {kind} | {ms(engine[kind])} | {ms(worker[kind])} | {ms(gui[kind])} | {1000 * over:.1f} ms |"
              + (f" {ms(old[kind])} |" if old else ""))
    print(f"# clicks answered by a cached detection's mask: {engines['engine alone'].click_counts['lookup']} "
          f"of {len(points)} (engine alone)")
    print(f"# item shown → features cached: {t_show:.2f} s (caching itself {cache_s:.2f} s); "
          f"{n_undo} undo steps; load average after: {os.getloadavg()[0]:.1f}")
    win.controller.close_project(force=True)
    svc.shutdown()
    win.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
