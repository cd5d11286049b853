"""Canvas speed: MaskLoop against labelme's canvas, in one run, on the same image.

A 4096x4096 16-bit image with 300 instances (size and count can be changed):

  open to first paint   MaskLoop: open the project (manifest, 16-bit TIFF, annotation with
                        300 masks, display mapping, overlay) until the first frame is painted.
                        labelme: its app's path for an image with a label file
                        (read_label_file -> QImage -> QPixmap -> Canvas.load_pixmap, 300
                        polygon shapes -> load_shapes, fit to window) until painted.
  per mouse-move        MaskLoop: the brush (15 px) during a stroke: one move event handled and
                        the changed part of the frame painted. labelme has no brush; its nearest
                        is the repaint per mouse-move while drawing a polygon.
                        (MaskLoop's own polygon rubber band is measured too.)
  repaint after zoom    a full repaint of the viewport at several zoom levels (fit .. 800%).

Both run offscreen in the same process, viewport 1600x1000. Figures are wall-clock
milliseconds on this machine, and the process's CPU time (all threads: cv2 uses several),
which other load on a shared machine does not inflate; run
`python benchmarks/bench_canvas.py` (add --json FILE). The issue's big case is
`--size 16384 --instances 5000 --data DIR` (DIR keeps the 0.5 GB image for the next run;
the run's brush strokes are saved into it); `--only maskloop|labelme` runs one side.
`--baseline` also times MaskLoop's first paint with issue 15's first-paint paths turned off
(the whole image read, every tile area-averaged before it is shown, mask shapes converted
by one thread), interleaved with this
code's in the same run, and the time until every previewed tile is exact.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

VIEW_W, VIEW_H = 1600, 1000
REPAINTS = 7


# ---------------------------------------------------------------------------- data
def make_data(folder: Path, size: int, n: int, seed: int = 0):
    """A 16-bit image with n elliptic objects, a MaskLoop project and a labelme JSON."""
    import tifffile
    from engine.annotations import Instance, ItemAnnotation
    from engine.masks import mask_to_polygons
    from engine.project import Project
    rng = np.random.default_rng(seed)
    low = cv2.resize(rng.normal(0, 1, (size // 256, size // 256)).astype(np.float32), (size, size),
                     interpolation=cv2.INTER_CUBIC)
    img = 8000 + 1500 * low + rng.normal(0, 300, (size, size)).astype(np.float32)
    instances, shapes = [], []
    for k in range(n):
        a, b = rng.uniform(18, 80), rng.uniform(18, 80)
        ang = rng.uniform(0, 180)
        r = int(max(a, b)) + 2
        cx, cy = rng.uniform(r + 1, size - r - 1), rng.uniform(r + 1, size - r - 1)
        crop = np.zeros((2 * r + 1, 2 * r + 1), np.uint8)
        cv2.ellipse(crop, (r, r), (int(a), int(b)), ang, 0, 360, 1, -1)
        x0, y0 = int(cx) - r, int(cy) - r
        m = crop.astype(bool)
        img[y0:y0 + 2 * r + 1, x0:x0 + 2 * r + 1][m] += rng.uniform(8000, 30000)
        inst = Instance(mask=m, x0=x0, y0=y0, label="cell").tight()
        instances.append(inst)
        full_poly = mask_to_polygons(inst.mask)[0]
        pts = np.asarray(full_poly, np.float32).reshape(-1, 1, 2)
        pts = cv2.approxPolyDP(pts, 1.0, True).reshape(-1, 2) + (inst.x0, inst.y0)
        shapes.append({"label": "cell", "points": pts.tolist(), "group_id": None, "description": "",
                       "shape_type": "polygon", "flags": {}, "mask": None})
    img = np.clip(img, 0, 65535).astype(np.uint16)
    tif = folder / "big.tif"
    tifffile.imwrite(tif, img)
    proj = Project.create(folder / "proj", ["cell"])
    proj.add([tif])
    item = proj.items[0]
    proj.save_annotation(ItemAnnotation(item.id, size, size, instances, "reviewed"))
    lm = {"version": "5.5.0", "flags": {}, "shapes": shapes, "imagePath": "big.tif", "imageData": None,
          "imageHeight": size, "imageWidth": size}
    (folder / "big.json").write_text(json.dumps(lm))
    return proj.root, folder / "big.json", sum(len(s["points"]) for s in shapes)


def pct(values, q):
    return float(np.percentile(np.asarray(values), q))


def summary(values) -> dict:
    return {"p50": pct(values, 50), "p95": pct(values, 95), "max": float(max(values)), "n": len(values)}


class PaintCounter:
    """Counts paint events on a widget (to make sure every timed event painted)."""

    def __init__(self, widget) -> None:
        from PyQt5 import QtCore

        class F(QtCore.QObject):
            def __init__(s):
                super().__init__()
                s.n = 0

            def eventFilter(s, obj, ev):
                if ev.type() == QtCore.QEvent.Paint:
                    s.n += 1
                return False

        self.f = F()
        widget.installEventFilter(self.f)

    @property
    def n(self) -> int:
        return self.f.n


def settle(app, counter, before, tries=6):
    """Run the event loop until a paint happened (the scene posts its update)."""
    for _ in range(tries):
        app.processEvents()
        if counter.n > before:
            return True
    return False


def mouse(kind, widget, pos, button, buttons):
    from PyQt5 import QtCore, QtGui, QtWidgets
    p = QtCore.QPointF(pos)
    ev = QtGui.QMouseEvent(kind, p, widget.mapToGlobal(p.toPoint()), button, buttons,
                           QtCore.Qt.NoModifier)
    QtWidgets.QApplication.sendEvent(widget, ev)


def path_points(cx, cy, n, step=3.0, radius=220.0):
    """A smooth stroke: n points along a spiral-ish path, `step` screen px apart."""
    pts, ang = [], 0.0
    for _ in range(n):
        pts.append((cx + radius * np.cos(ang) - radius, cy + radius * 0.6 * np.sin(ang)))
        ang += step / radius
    return pts


# ---------------------------------------------------------------------------- MaskLoop
class PhaseClock:
    """CPU time spent in the engine's loads (Project.load_image / load_annotation), wrapped."""

    def __init__(self) -> None:
        from engine.project import Project
        self.cpu = {"load_image": 0.0, "load_annotation": 0.0}
        for name in self.cpu:
            real = getattr(Project, name)

            def timed(*a, _real=real, _name=name, **k):
                c0 = time.process_time()
                try:
                    return _real(*a, **k)
                finally:
                    self.cpu[_name] += (time.process_time() - c0) * 1000
            setattr(Project, name, timed)

    def take(self) -> dict:
        out = dict(self.cpu)
        for k in self.cpu:
            self.cpu[k] = 0.0
        return out


def set_mode(mode: str) -> None:
    """"baseline": this code with the first-paint paths of issue 15 turned off (the image
    read whole instead of memory-mapped, every level tile area-averaged before it is
    shown, mask shapes converted by one thread); "new": as shipped."""
    from engine.formats import labelme
    from engine.imageio import tiff
    from gui.canvas import image_levels
    base = mode == "baseline"
    tiff.MAP_MIN_BYTES = 1 << 62 if base else _SHIPPED["map"]
    image_levels.PREVIEW_PIXELS = 1 << 62 if base else _SHIPPED["preview"]
    labelme.PARALLEL_MIN_SHAPES = 1 << 62 if base else _SHIPPED["parallel"]


def _shipped() -> dict:
    from engine.formats import labelme
    from engine.imageio import tiff
    from gui.canvas import image_levels
    return {"map": tiff.MAP_MIN_BYTES, "preview": image_levels.PREVIEW_PIXELS,
            "parallel": labelme.PARALLEL_MIN_SHAPES}


_SHIPPED: dict = {}


def bench_maskloop(app, root: Path, moves: int, reps: int, size: int, modes=("new",)) -> dict:
    from PyQt5 import QtCore
    from gui.main_window import MainWindow
    win = MainWindow(loop=False)
    win.resize(VIEW_W + 560, VIEW_H + 160)
    win.show()
    app.processEvents()
    cv = win.canvas
    cv.resize(VIEW_W, VIEW_H)
    out: dict = {"viewport": [cv.viewport().width(), cv.viewport().height()]}
    counter = PaintCounter(cv.viewport())

    # first paint, the baseline (--baseline) and this code interleaved in the same run
    runs: dict = {mode: {"wall": [], "cpu": [], "settled": [], "settled_cpu": [], "phases": []}
                  for mode in modes}
    clock = PhaseClock()
    for _ in range(reps):
        for mode in modes:
            set_mode(mode)
            win.controller.close_project(force=True)
            app.processEvents()
            clock.take()
            t0, c0 = time.perf_counter(), time.process_time()
            assert win.open_project(root)
            cv.viewport().repaint()
            r = runs[mode]
            r["wall"].append((time.perf_counter() - t0) * 1000)
            r["cpu"].append((time.process_time() - c0) * 1000)
            r["phases"].append(clock.take())
            while not cv.settled:   # previewed tiles made exact (events, as the window runs)
                app.processEvents()
            r["settled"].append((time.perf_counter() - t0) * 1000)
            r["settled_cpu"].append((time.process_time() - c0) * 1000)
    for mode in modes:
        r = runs[mode]
        key = "first_paint_ms" if mode == "new" else "baseline_first_paint_ms"
        out[key] = {"median": statistics.median(r["wall"]), "all": r["wall"],
                    "cpu_median": statistics.median(r["cpu"]), "cpu_all": r["cpu"],
                    "settled_median": statistics.median(r["settled"]),
                    "settled_cpu_median": statistics.median(r["settled_cpu"]),
                    "engine_cpu_ms": {k: statistics.median(p[k] for p in r["phases"])
                                      for k in r["phases"][0]}}
    set_mode(modes[-1])
    win.controller.nav.stop_counting()

    # brush stroke at 100%, moves one event at a time, each painted before the next
    vp = cv.viewport()
    cv.set_zoom(1.0)
    cv.centerOn(size // 2, size // 2)
    app.processEvents()

    def stroke(tool, size):
        cv.set_tool(tool)
        cv.brush_size = size
        win.controller.set_selection([])
        pts = path_points(vp.width() * 0.75, vp.height() * 0.5, moves)
        mouse(QtCore.QEvent.MouseButtonPress, vp, QtCore.QPointF(*pts[0]), QtCore.Qt.LeftButton,
              QtCore.Qt.LeftButton)
        app.processEvents()
        times, cpu, missed = [], [], 0
        for p in pts[1:]:
            before = counter.n
            t0, c0 = time.perf_counter(), time.process_time()
            mouse(QtCore.QEvent.MouseMove, vp, QtCore.QPointF(*p), QtCore.Qt.NoButton, QtCore.Qt.LeftButton)
            missed += not settle(app, counter, before)
            times.append((time.perf_counter() - t0) * 1000)
            cpu.append((time.process_time() - c0) * 1000)
        t0, c0 = time.perf_counter(), time.process_time()
        mouse(QtCore.QEvent.MouseButtonRelease, vp, QtCore.QPointF(*pts[-1]), QtCore.Qt.LeftButton,
              QtCore.Qt.NoButton)
        settle(app, counter, counter.n)
        for _ in range(3):   # the panels' refresh runs on the next event-loop turns
            app.processEvents()
        commit = ((time.perf_counter() - t0) * 1000, (time.process_time() - c0) * 1000)
        return times, cpu, missed, commit

    for key, tool, size in (("brush_move_ms", "brush", 15), ("brush61_move_ms", "brush", 61),
                            ("eraser_move_ms", "eraser", 31)):
        times, cpu, missed, commit = stroke(tool, size)
        out[key] = summary(times) | {"unpainted_events": missed, "stroke_commit_ms": commit[0],
                                     "stroke_commit_cpu_ms": commit[1], "cpu": summary(cpu)}

    # polygon rubber band
    cv.set_tool("polygon")
    pts = path_points(vp.width() * 0.75, vp.height() * 0.5, moves)
    mouse(QtCore.QEvent.MouseButtonPress, vp, QtCore.QPointF(*pts[0]), QtCore.Qt.LeftButton, QtCore.Qt.LeftButton)
    mouse(QtCore.QEvent.MouseButtonRelease, vp, QtCore.QPointF(*pts[0]), QtCore.Qt.LeftButton, QtCore.Qt.NoButton)
    app.processEvents()
    times, cpu, missed = [], [], 0
    for p in pts[1:]:
        before = counter.n
        t0, c0 = time.perf_counter(), time.process_time()
        mouse(QtCore.QEvent.MouseMove, vp, QtCore.QPointF(*p), QtCore.Qt.NoButton, QtCore.Qt.NoButton)
        missed += not settle(app, counter, before)
        times.append((time.perf_counter() - t0) * 1000)
        cpu.append((time.process_time() - c0) * 1000)
    cv.tool.cancel()
    out["polygon_move_ms"] = summary(times) | {"unpainted_events": missed, "cpu": summary(cpu)}

    # full repaint after zoom
    zooms, zcpu = {}, {}
    for label, z in (("fit", None), ("25%", 0.25), ("50%", 0.5), ("100%", 1.0), ("200%", 2.0),
                     ("400%", 4.0), ("800%", 8.0)):
        cv.fit() if z is None else cv.set_zoom(z)
        cv.centerOn(size // 2, size // 2)
        app.processEvents()
        ts, cs = [], []
        for _ in range(REPAINTS):
            before = counter.n
            t0, c0 = time.perf_counter(), time.process_time()
            vp.repaint()
            ts.append((time.perf_counter() - t0) * 1000)
            cs.append((time.process_time() - c0) * 1000)
            assert counter.n > before, "MaskLoop's canvas did not paint"
        zcpu[label] = statistics.median(cs)
        zooms[label] = statistics.median(ts)
    out["zoom_repaint_ms"] = zooms | {"max": max(zooms.values())}
    out["zoom_repaint_cpu_ms"] = zcpu | {"max": max(zcpu.values())}
    win.controller.close_project(force=True)
    win.close()
    return out


# ---------------------------------------------------------------------------- labelme
def bench_labelme(app, json_path: Path, moves: int, reps: int, size: int) -> dict:
    from PyQt5 import QtCore, QtGui, QtWidgets
    from labelme._label_file import read_label_file
    from labelme._shape import Shape
    from labelme.widgets.canvas import Canvas

    scroll = QtWidgets.QScrollArea()
    canvas = Canvas(epsilon=10.0, double_click="close", num_backups=10)
    scroll.setWidget(canvas)
    scroll.setWidgetResizable(True)
    scroll.resize(VIEW_W, VIEW_H)
    scroll.show()
    app.processEvents()
    out: dict = {"viewport": [scroll.viewport().width(), scroll.viewport().height()]}
    counter = PaintCounter(canvas)

    def load():
        ld = read_label_file(str(json_path))
        image = QtGui.QImage.fromData(ld.image_data)
        canvas.load_pixmap(QtGui.QPixmap.fromImage(image))
        shapes = []
        for s in ld.shapes:
            sh = Shape(label=s["label"], shape_type="polygon")
            for x, y in s["points"]:
                sh.add_point(QtCore.QPointF(x, y))
            sh.close()
            shapes.append(sh)
        canvas.load_shapes(shapes)
        # labelme's "fit window": scale so the image fits the viewport
        w, h = canvas.pixmap.width(), canvas.pixmap.height()
        canvas.scale = min((scroll.viewport().width() - 2) / w, (scroll.viewport().height() - 2) / h)
        canvas.adjustSize()
        scroll.viewport().repaint()

    first, first_cpu = [], []
    for _ in range(reps):
        t0, c0 = time.perf_counter(), time.process_time()
        load()
        first.append((time.perf_counter() - t0) * 1000)
        first_cpu.append((time.process_time() - c0) * 1000)
        app.processEvents()
    out["first_paint_ms"] = {"median": statistics.median(first), "all": first,
                             "cpu_median": statistics.median(first_cpu)}

    # polygon drawing at 100%: the repaint per mouse-move
    canvas.scale = 1.0
    canvas.adjustSize()
    app.processEvents()
    hs, vs = scroll.horizontalScrollBar(), scroll.verticalScrollBar()
    hs.setValue(size // 2 - VIEW_W // 2)
    vs.setValue(size // 2 - VIEW_H // 2)
    app.processEvents()
    canvas.set_editing(False)
    canvas.create_mode = "polygon"
    vpw, vph = scroll.viewport().width(), scroll.viewport().height()
    off = QtCore.QPointF(hs.value(), vs.value()) - QtCore.QPointF(canvas.pos())
    pts = [QtCore.QPointF(x, y) + off for x, y in path_points(vpw * 0.75, vph * 0.5, moves)]
    mouse(QtCore.QEvent.MouseMove, canvas, pts[0], QtCore.Qt.NoButton, QtCore.Qt.NoButton)
    mouse(QtCore.QEvent.MouseButtonPress, canvas, pts[0], QtCore.Qt.LeftButton, QtCore.Qt.LeftButton)
    mouse(QtCore.QEvent.MouseButtonRelease, canvas, pts[0], QtCore.Qt.LeftButton, QtCore.Qt.NoButton)
    app.processEvents()
    times, cpu, missed = [], [], 0
    for p in pts[1:]:
        before = counter.n
        t0, c0 = time.perf_counter(), time.process_time()
        mouse(QtCore.QEvent.MouseMove, canvas, p, QtCore.Qt.NoButton, QtCore.Qt.NoButton)
        missed += not settle(app, counter, before)
        times.append((time.perf_counter() - t0) * 1000)
        cpu.append((time.process_time() - c0) * 1000)
    out["polygon_move_ms"] = summary(times) | {"unpainted_events": missed, "cpu": summary(cpu),
                                               "drawing": canvas.is_drawing}
    canvas.set_editing(True)

    zooms, zcpu = {}, {}
    w, h = canvas.pixmap.width(), canvas.pixmap.height()
    fit = min((scroll.viewport().width() - 2) / w, (scroll.viewport().height() - 2) / h)
    for label, z in (("fit", fit), ("25%", 0.25), ("50%", 0.5), ("100%", 1.0), ("200%", 2.0),
                     ("400%", 4.0), ("800%", 8.0)):
        canvas.scale = z
        canvas.adjustSize()
        app.processEvents()
        hs.setValue(hs.maximum() // 2)
        vs.setValue(vs.maximum() // 2)
        app.processEvents()
        ts, cs = [], []
        for _ in range(REPAINTS):
            before = counter.n
            t0, c0 = time.perf_counter(), time.process_time()
            canvas.repaint()
            ts.append((time.perf_counter() - t0) * 1000)
            cs.append((time.process_time() - c0) * 1000)
            assert counter.n > before, "labelme's canvas did not paint"
        zcpu[label] = statistics.median(cs)
        zooms[label] = statistics.median(ts)
    out["zoom_repaint_ms"] = zooms | {"max": max(zooms.values())}
    out["zoom_repaint_cpu_ms"] = zcpu | {"max": max(zcpu.values())}
    scroll.close()
    return out


def report(ml: dict, lm: dict) -> None:
    """The comparison table (a side that was skipped prints as nan)."""
    def g(d, *keys):
        for k in keys:
            if not isinstance(d, dict) or k not in d:
                return float("nan")
            d = d[k]
        return d

    f = lambda v: f"{v:8.1f}"  # noqa: E731
    ratio = lambda a, b: f"{b / a:6.1f}x" if a > 0 else "   n/a"  # noqa: E731
    rows = [
        ("open to first paint (median)", ("first_paint_ms", "median"), ("first_paint_ms", "median")),
        ("mouse-move p50 (ML brush / LM polygon)", ("brush_move_ms", "p50"), ("polygon_move_ms", "p50")),
        ("mouse-move p95 (ML brush / LM polygon)", ("brush_move_ms", "p95"), ("polygon_move_ms", "p95")),
        ("mouse-move p95 (ML polygon / LM polygon)", ("polygon_move_ms", "p95"), ("polygon_move_ms", "p95")),
        ("full repaint after zoom (worst level)", ("zoom_repaint_ms", "max"), ("zoom_repaint_ms", "max")),
        ("full repaint after zoom (fit)", ("zoom_repaint_ms", "fit"), ("zoom_repaint_ms", "fit")),
        ("full repaint after zoom (100%)", ("zoom_repaint_ms", "100%"), ("zoom_repaint_ms", "100%")),
    ]
    print(f"\n{'ms':44s} {'MaskLoop':>8s} {'labelme':>8s}  speed-up")
    for name, ka, kb in rows:
        print(f"{name:44s} {f(g(ml, *ka))} {f(g(lm, *kb))}  {ratio(g(ml, *ka), g(lm, *kb))}")
    print("\nsame, CPU time of the process, all threads (robust to other load on the machine):")
    rows_cpu = [
        ("open to first paint (median)", ("first_paint_ms", "cpu_median"), ("first_paint_ms", "cpu_median")),
        ("mouse-move p95 (ML brush / LM polygon)", ("brush_move_ms", "cpu", "p95"), ("polygon_move_ms", "cpu", "p95")),
        ("full repaint after zoom (worst level)", ("zoom_repaint_cpu_ms", "max"), ("zoom_repaint_cpu_ms", "max")),
    ]
    for name, ka, kb in rows_cpu:
        print(f"{name:44s} {f(g(ml, *ka))} {f(g(lm, *kb))}  {ratio(g(ml, *ka), g(lm, *kb))}")
    if "baseline_first_paint_ms" in ml:
        b, n = ml["baseline_first_paint_ms"], ml["first_paint_ms"]
        print(f"\nfirst paint, baseline -> this code (median): wall {b['median']:.0f} -> {n['median']:.0f} ms, "
              f"CPU {b['cpu_median']:.0f} -> {n['cpu_median']:.0f} ms; until every tile is exact: "
              f"wall {b['settled_median']:.0f} -> {n['settled_median']:.0f} ms, "
              f"CPU {b['settled_cpu_median']:.0f} -> {n['settled_cpu_median']:.0f} ms")
        print("  of which engine CPU ms, baseline:", {k: round(v) for k, v in b["engine_cpu_ms"].items()},
              "this code:", {k: round(v) for k, v in n["engine_cpu_ms"].items()})
    if "brush61_move_ms" in ml:
        print(f"\nbrush 61 px p50/p95: {ml['brush61_move_ms']['p50']:.1f}/{ml['brush61_move_ms']['p95']:.1f} ms; "
              f"eraser 31 px p95: {ml['eraser_move_ms']['p95']:.1f} ms; "
              f"stroke commit (one undo step, 15 px brush, panels refreshed): "
              f"{ml['brush_move_ms']['stroke_commit_ms']:.1f} ms, CPU {ml['brush_move_ms']['stroke_commit_cpu_ms']:.1f} ms")
    for name, key in (("wall", "zoom_repaint_ms"), ("cpu", "zoom_repaint_cpu_ms")):
        for side, d in (("MaskLoop", ml), ("labelme ", lm)):
            if key in d:
                print(f"zoom repaint {name} {side}:", {k: round(v, 1) for k, v in d[key].items()})


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--instances", type=int, default=300)
    ap.add_argument("--moves", type=int, default=300)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--json", type=Path, help="write the figures here too")
    ap.add_argument("--data", type=Path, help="keep the generated data in this folder and reuse it "
                    "on the next run with the same size and count (a 16384² image takes a while)")
    ap.add_argument("--only", choices=("maskloop", "labelme"), help="run one side only")
    ap.add_argument("--baseline", action="store_true", help="also time MaskLoop's first paint with "
                    "the memory-mapped read and the previewed levels turned off, interleaved")
    args = ap.parse_args(argv)

    from PyQt5 import QtWidgets
    import PyQt5.QtCore
    import labelme
    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([])
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        folder = Path(tmp)
        if args.data is not None:
            folder = args.data / f"{args.size}_{args.instances}"
            folder.mkdir(parents=True, exist_ok=True)
        if (folder / "made.json").exists():
            root, lm_json = folder / "proj", folder / "big.json"
            n_points = json.loads((folder / "made.json").read_text())["points"]
        else:
            root, lm_json, n_points = make_data(folder, args.size, args.instances)
            (folder / "made.json").write_text(json.dumps({"points": n_points}))
        print(f"data: {args.size}x{args.size} uint16, {args.instances} instances "
              f"({n_points} polygon points for labelme), ready in {time.perf_counter() - t0:.1f} s",
              flush=True)
        skipped = {"skipped": True}
        _SHIPPED.update(_shipped())
        modes = ("baseline", "new") if args.baseline else ("new",)
        ml = bench_maskloop(app, root, args.moves, args.reps, args.size, modes) \
            if args.only != "labelme" else skipped
        lm = bench_labelme(app, lm_json, args.moves, args.reps, args.size) if args.only != "maskloop" else skipped
    res = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, {platform.system()}",
        "python": platform.python_version(), "qt": PyQt5.QtCore.QT_VERSION_STR,
        "labelme": labelme.__version__, "platform": os.environ.get("QT_QPA_PLATFORM"),
        "size": args.size, "instances": args.instances, "maskloop": ml, "labelme_canvas": lm,
    }
    report(ml, lm)
    print("machine:", res["machine"], "| Qt", res["qt"], "| labelme", res["labelme"],
          "| QT_QPA_PLATFORM", res["platform"])
    if args.json:
        args.json.write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
