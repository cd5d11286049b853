"""The loop, timed through the real window (offscreen), against the command line.

1. Train click -> new model active: a project of N reviewed synthetic 512x512 items;
   the Train dialog is accepted with the given options; the clock runs from the click
   until the new run is the project's active model AND the GUI's inference worker has
   loaded it (auto-segment can use it).
2. Auto-segment throughput on the same M unreviewed items:
   - GUI: the QThread worker with its warm model, results applied (files written), as
     the user gets it (Model > Auto-segment all unreviewed items);
   - baseline, same run: what `maskloop segment` does in-process (Predictor.predict_items,
     warm model, files written), and the real `main.py segment` child process (wall time
     including Python start-up and model load, for reference).
   Target: the GUI no more than 10% slower than the baseline.

    QT_QPA_PLATFORM=offscreen python benchmarks/bench_loop.py [--items 10] [--size 512]
        [--epochs 3] [--arch r18fpn] [--device cpu] [--segment-items 10] [--json OUT]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("MASKLOOP_NO_FIRST_RUN", "1")


def wait_for(app, cond, timeout: float, what: str) -> None:
    from PyQt5 import QtCore
    end = time.perf_counter() + timeout
    while not cond():
        if time.perf_counter() > end:
            raise TimeoutError(f"timed out waiting for {what}")
        app.processEvents(QtCore.QEventLoop.AllEvents, 20)
        time.sleep(0.002)


def save_small(pixmap, path: Path, limit: int = 300_000) -> None:
    """Save a screenshot as PNG under `limit` bytes (scaled down if needed)."""
    from PyQt5 import QtCore
    pm = pixmap
    while True:
        pm.save(str(path), "PNG", 9)
        if path.stat().st_size <= limit or pm.width() < 400:
            return
        pm = pixmap.scaledToWidth(int(pm.width() * 0.85), QtCore.Qt.SmoothTransformation)


def machine() -> str:
    import torch
    cpu = platform.processor() or platform.machine()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{platform.system()} {cpu}, {os.cpu_count()} CPU cores, {gpu}, torch {torch.__version__}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=10, help="reviewed items to train on")
    ap.add_argument("--segment-items", type=int, default=10, help="unreviewed items to auto-segment")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--arch", default="r18fpn")
    ap.add_argument("--base", default="scratch")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--score", type=float, default=0.25, help="score threshold (same for GUI and CLI)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--kind", default="nuclei")
    ap.add_argument("--dir", default=None, help="work folder (default: a temporary one)")
    ap.add_argument("--json", default=None, help="also write the results here")
    ap.add_argument("--screenshots", default=None, metavar="DIR",
                    help="also save screenshots of the loop here (review.png, training.png, models_panel.png)")
    ap.add_argument("--second-run-epochs", type=int, default=0,
                    help="with --screenshots: fine-tune the new model again for the Models panel")
    args = ap.parse_args(argv)

    from engine.demo import synthetic_project
    from gui.app import create_app
    from gui.main_window import MainWindow

    work = Path(args.dir or tempfile.mkdtemp(prefix="bench_loop_"))
    n_all = args.items + args.segment_items
    t = time.perf_counter()
    proj0 = synthetic_project(work / "proj", args.kind, n=n_all, size=args.size, reviewed=args.items)
    print(f"project: {n_all} synthetic {args.kind} {args.size}x{args.size} items ({args.items} reviewed) "
          f"in {time.perf_counter() - t:.1f} s at {proj0.root}")

    app = create_app([])
    win = MainWindow()
    win.resize(1400, 900)
    win.show()
    assert win.open_project(proj0.root)
    wf, c = win.loop, win.controller
    proj = c.project
    wf.segmenter.worker.device = args.device   # the GUI worker runs where the baseline runs
    results: dict = {"machine": machine(), "args": vars(args), "load_before": os.getloadavg()}
    shots = Path(args.screenshots) if args.screenshots else None
    if shots:
        shots.mkdir(parents=True, exist_ok=True)
        wf.models_panel.ask = lambda text: False   # never a modal question in a benchmark

    # ---------------------------------------------------------------- 1. Train click -> active
    opts = {"arch": args.arch, "base": args.base, "epochs": args.epochs, "device": args.device}
    wf.exec_train_dialog = lambda dlg: (dlg.set_options(**opts), True)[1]
    loaded = []
    wf.segmenter.modelLoaded.connect(lambda path, s: loaded.append((path, time.perf_counter())))
    events = []
    wf.runner.anyEvent.connect(lambda ev: events.append((time.perf_counter(), ev)))
    t_click = time.perf_counter()
    wf.act_train.trigger()
    wait_for(app, lambda: not wf.runner.running, 3600, "training")
    t_exit = time.perf_counter()
    if not wf.training_view.finished_ok:
        print("training failed:", wf.training_view.finish_message, file=sys.stderr)
        print(wf.runner.stderr_tail(), file=sys.stderr)
        return 1
    wait_for(app, lambda: proj.active_model is not None
             and any(str(proj.active_model) in p for p, _ in loaded), 600, "the new model to be active and loaded")
    t_active = max(t for p, t in loaded if str(proj.active_model) in p)
    first = {ev.get("event"): ts for ts, ev in reversed(events)}
    start_ev = next((ev for _, ev in events if ev.get("event") == "start"), {})
    train = {
        "click_to_active_s": t_active - t_click,
        "click_to_first_event_s": (first.get("start", t_click) - t_click),
        "training_s": (first.get("done", t_exit) - first.get("start", t_click)),
        "process_exit_to_active_s": t_active - t_exit,
        "run": proj.active_model, "epochs": args.epochs, "arch": args.arch, "base": args.base,
        "device": start_ev.get("device"), "train_items": start_ev.get("train_items"),
        "val_items": start_ev.get("val_items"), "best": (wf.runner._done_event or {}).get("best"),
    }
    results["train"] = train
    print(f"\n1. Train click -> new model active ({args.items} reviewed {args.size}px items, {args.arch} "
          f"from {args.base}, {args.epochs} epochs, {train['device']}):")
    print(f"   {train['click_to_active_s']:.1f} s total: {train['click_to_first_event_s']:.1f} s until the "
          f"child reported 'start', {train['training_s']:.1f} s training + validation, "
          f"{train['process_exit_to_active_s']:.2f} s from the child's exit to the model active and loaded")

    if shots:
        tv = wf.training_view
        tv.resize(900, 430)
        save_small(tv.grab(), shots / "training.png")
        if args.second_run_epochs:
            opts2 = {"base": proj.active_model, "arch": args.arch, "epochs": args.second_run_epochs,
                     "device": args.device}
            wf.exec_train_dialog = lambda dlg: (dlg.set_options(**opts2), True)[1]
            wf.act_train.trigger()
            wait_for(app, lambda: not wf.runner.running, 3600, "the second training run")
            app.processEvents()

    # ---------------------------------------------------------------- 2. auto-segment throughput
    ids = [it.id for it in proj.items if c.status_of(it.id) != "reviewed"]
    c.set_current_item(proj.items[0].id)  # a reviewed item on screen: results go to files, as in the CLI
    model_path = str(proj.resolve_model(proj.active_model))

    def gui_once() -> tuple[float, dict]:
        t0 = time.perf_counter()
        jid = wf._segment(ids, explicit=False, what="bench")
        wait_for(app, lambda: jid not in wf.jobs, 3600, "auto-segment")
        return time.perf_counter() - t0, wf.last_segment_summary

    def baseline_once(pred) -> float:
        t0 = time.perf_counter()
        pred.predict_items(proj, ids, score_threshold=args.score)
        return time.perf_counter() - t0

    from engine.model.predict import Predictor
    base_pred = Predictor(model_path, device=args.device if args.device != "cpu" else "cpu")
    base_pred.predict(proj.load_image(ids[0]), score_threshold=args.score)  # warm-up
    gui_times, base_times = [], []
    gui_once()  # warm-up (model already loaded; first-call allocations)
    summary = None
    for r in range(args.repeats):  # interleaved, alternating which goes first
        if r % 2:
            base_times.append(baseline_once(base_pred))
        dt, summary = gui_once()
        gui_times.append(dt)
        if not r % 2:
            base_times.append(baseline_once(base_pred))
    n = len(ids)
    gui_best, base_best = min(gui_times), min(base_times)
    # the real command line, once, wall time including start-up and model load
    cmd = [sys.executable, str(REPO / "main.py"), "segment", str(proj.root), "--model", str(proj.active_model),
           "--score", str(args.score), "--items", *ids]
    t0 = time.perf_counter()
    cp = subprocess.run(cmd, capture_output=True, text=True)
    cli_wall = time.perf_counter() - t0
    seg = {
        "items": n, "gui_s": gui_times, "baseline_s": base_times,
        "gui_items_per_s": n / gui_best, "baseline_items_per_s": n / base_best,
        "gui_slower_pct": 100.0 * (gui_best / base_best - 1.0),
        "cli_process_wall_s": cli_wall, "cli_rc": cp.returncode,
        "cli_items_per_s_incl_startup": n / cli_wall,
        "instances_last_gui_run": summary.get("instances") if summary else None,
    }
    results["segment"] = seg
    print(f"\n2. Auto-segment {n} unreviewed {args.size}px items (score >= {args.score}):")
    print(f"   GUI worker:        {seg['gui_items_per_s']:.2f} items/s (best of {args.repeats}: "
          f"{', '.join(f'{t:.2f}' for t in gui_times)} s)")
    print(f"   CLI in-process:    {seg['baseline_items_per_s']:.2f} items/s (Predictor.predict_items, best of "
          f"{args.repeats}: {', '.join(f'{t:.2f}' for t in base_times)} s)")
    print(f"   GUI vs CLI:        {seg['gui_slower_pct']:+.1f}% time (target: <= +10%)")
    print(f"   `main.py segment`: {cli_wall:.2f} s wall incl. start-up and model load (rc {cp.returncode})"
          + (f": {cp.stderr.strip().splitlines()[-1]}" if cp.returncode and cp.stderr.strip() else ""))
    results["load_after"] = os.getloadavg()
    print(f"\nmachine: {results['machine']}; load average before {results['load_before'][0]:.1f}, "
          f"after {results['load_after'][0]:.1f} (other work on the machine skews the figures)")
    if shots:
        first_unreviewed = ids[0]
        c.set_current_item(first_unreviewed)
        wf.training_dock.setVisible(False)
        win.resize(1500, 950)
        wf.review.set_score_threshold(0.5)
        win.canvas.fit()
        for _ in range(20):
            app.processEvents()
            time.sleep(0.01)
        save_small(win.grab(), shots / "review.png")
        mp = wf.models_panel
        mp.resize(1000, 180)
        save_small(mp.grab(), shots / "models_panel.png")
        print(f"screenshots in {shots}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))
    wf.shutdown()
    win.controller.close_project(force=True)
    win.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
