"""The box prompt tool (cold start: GrabCut), driven with real mouse events."""
from __future__ import annotations

import numpy as np
import pytest
from PyQt5 import QtCore, QtGui, QtWidgets

from guihelpers import click, drag, key, move, press, release, same, snapshot

pytestmark = pytest.mark.gui
Qt = QtCore.Qt


def test_box_prompt_drag_makes_the_object_under_it(window, qtbot, tmp_path):
    ctl = window.controller
    window.canvas.set_tool("box_prompt")
    assert window.canvas.tool.name == "box_prompt"
    before = snapshot(ctl.annotation)
    messages = []
    ctl.message.connect(messages.append)
    with qtbot.waitSignal(window.prompts.answered, timeout=30000):
        drag(window, [(54, 54), (80, 80), (106, 106)])   # around the bright square 60..99
    assert len(ctl.annotation.instances) == len(before) + 1
    new = ctl.annotation.instances[-1]
    truth = np.zeros((256, 256), bool)
    truth[60:100, 60:100] = True
    got = new.full_mask((256, 256))
    assert (got & truth).sum() / (got | truth).sum() >= 0.9
    assert any("answered by GrabCut (no model)" in m for m in messages)
    assert new.source == "prompt"
    window.grab().save(str(tmp_path / "box_prompt.png"))
    assert ctl.undo_stack.count() == 1                   # one undo step
    key(qtbot, window, Qt.Key_Z, Qt.ControlModifier)
    assert same(snapshot(ctl.annotation), before)


def test_box_prompt_escape_and_empty_box(window, qtbot):
    ctl = window.controller
    window.canvas.set_tool("box_prompt")
    before = snapshot(ctl.annotation)
    press(window, 54, 54)
    move(window, 90, 90)
    assert window.canvas.tool.busy
    key(qtbot, window, Qt.Key_Escape)
    assert not window.canvas.tool.busy
    release(window, 90, 90)
    messages = []
    ctl.message.connect(messages.append)
    drag(window, [(10, 10), (10, 10)])                   # a click without a modifier: a hint
    assert same(snapshot(ctl.annotation), before)
    assert messages and "drag a box" in messages[-1]
    with qtbot.waitSignal(window.prompts.answered, timeout=30000):
        drag(window, [(10, 10), (12, 10), (14, 10)])     # a box one pixel high is empty
    assert same(snapshot(ctl.annotation), before)
    assert "empty" in messages[-1]


def test_hover_previews_are_throttled_and_a_click_takes_the_shown_one(window, qtbot):
    """Without a model the wand answers a click. Hover previews run in the worker: while one
    is there, only the newest waits (older ones are never computed, stale answers never
    shown); a Ctrl+click on the previewed pixel uses the preview, without another request."""
    ctl = window.controller
    window.canvas.set_tool("box_prompt")
    tool = window.canvas.tools["box_prompt"]
    svc = window.prompts
    asked, shown, messages = [], [], []
    answer = svc.worker.answer

    def counting(req, wanted):
        asked.append(req.point)
        return answer(req, wanted)
    svc.worker.answer = counting
    svc.answered.connect(shown.append)
    ctl.message.connect(messages.append)
    before = snapshot(ctl.annotation)
    for p in ((70, 70), (75, 75), (80, 80)):              # no event processing in between
        hover(window, *p, Qt.ControlModifier)
    qtbot.waitUntil(lambda: any(r.request.point == (80, 80) for r in shown), timeout=WAIT_MS)
    assert (75, 75) not in asked and set(asked) <= {(70, 70), (80, 80)}
    assert [r.request.point for r in shown] == [(80, 80)] and shown[0].rule == "wand"
    assert tool.preview_visible and same(snapshot(ctl.annotation), before)
    n = len(asked)
    click(window, 80, 80, Qt.ControlModifier)            # answered at once by the preview
    assert len(asked) == n and len(ctl.annotation.instances) == len(before) + 1
    new = ctl.annotation.instances[-1]
    truth = np.zeros((256, 256), bool)
    truth[60:100, 60:100] = True
    assert new.source == "prompt" and mask_iou(new.full_mask((256, 256)), truth) >= 0.9
    assert messages[-1].startswith("click prompt answered by wand (no model)")
    assert not tool.preview_visible
    hover(window, 80, 80, Qt.NoModifier)                  # no modifier: no preview asked
    assert len(asked) == n
    key(qtbot, window, Qt.Key_Z, Qt.ControlModifier)
    assert same(snapshot(ctl.annotation), before)


# --- prompts answered by the project's own model ---------------------------------------------
# A tiny Mask R-CNN (r18fpn_lite, the CPU default) that knows bright blobs is trained once for
# this module, end to end, on one blob image, its mirror and three images of discs of many sizes
# (the shapes a sphere's slices have), saved as a real checkpoint and made the active model of
# a fresh project per test. Every wait is on a signal or a condition, with a generous timeout.

BLOB_SIZE = 96
WAIT_MS = 240000
ITERS = 200


def blobs(seed, size=BLOB_SIZE, n=2):
    """Bright ellipses on a noisy 8-bit background, and their masks."""
    rng = np.random.default_rng(seed)
    img = rng.normal(60, 12, (size, size))
    y, x = np.mgrid[:size, :size]
    masks = []
    while len(masks) < n:
        cx, cy = rng.uniform(22, size - 22, 2)
        a, b = rng.uniform(10, 16, 2)
        m = ((x - cx) / a) ** 2 + ((y - cy) / b) ** 2 <= 1
        if not any((m & ndimage_dilate(o)).any() for o in masks):
            masks.append(m)
    for m in masks:
        img[m] += 110
    return np.clip(img, 0, 255).astype(np.uint8), masks


def discs(seed, size=BLOB_SIZE, n=3):
    """Bright discs of radius 6-26 px on the same background (training only)."""
    rng = np.random.default_rng(100 + seed)
    img = rng.normal(60, 12, (size, size))
    y, x = np.mgrid[:size, :size]
    masks = []
    while len(masks) < n:
        r = rng.uniform(6, 26)
        cx, cy = rng.uniform(r + 2, size - r - 2, 2)
        m = (x - cx) ** 2 + (y - cy) ** 2 <= r * r
        if not any((m & o).any() for o in masks):
            masks.append(m)
    for m in masks:
        img[m] += 110
    return np.clip(img, 0, 255).astype(np.uint8), masks


def ndimage_dilate(m, r=4):
    from scipy import ndimage
    return ndimage.binary_dilation(m, iterations=r)


def tight_box(mask):
    ys, xs = np.nonzero(mask)
    return xs.min(), ys.min(), xs.max() + 1, ys.max() + 1


def centre(mask):
    ys, xs = np.nonzero(mask)
    k = np.argmin((xs - xs.mean()) ** 2 + (ys - ys.mean()) ** 2)
    return int(xs[k]), int(ys[k])


def mask_iou(a, b):
    return (a & b).sum() / max(1, (a | b).sum())


def train_blob_model(path, iters=ITERS, seed=0):
    """model.pt of an r18fpn_lite trained end to end (backbone, RPN, heads) for `iters`
    steps; besides the RPN's proposals the heads see boxes grown by up to 60 % a side around
    each object (a propagation prompt is the previous slice's mask box grown by 15 %: towards
    a sphere's tip that is up to ~40 % a side around the smaller section) and random boxes."""
    import torch
    from engine.model import normalize as N
    from engine.model.checkpoint import save_checkpoint
    from engine.model.weights import build_model
    policy = N.range_policy(0, 255)
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    m = build_model("r18fpn_lite", 2)
    m.roi_heads.fg_bg_sampler.batch_size_per_image = 64
    images = []
    img, masks = blobs(0)
    for im, ms in [(img, masks), (img[:, ::-1], [k[:, ::-1] for k in masks]), discs(0), discs(1, n=2), discs(2)]:
        ms = [np.ascontiguousarray(k) for k in ms]
        tgt = {"boxes": torch.tensor([tight_box(k) for k in ms], dtype=torch.float32),
               "labels": torch.ones(len(ms), dtype=torch.int64),
               "masks": torch.from_numpy(np.stack(ms).astype(np.uint8))}
        x = torch.from_numpy(N.normalize_compact(np.ascontiguousarray(im), policy)).expand(3, -1, -1)
        images.append(m.transform([x.contiguous()], [tgt]))

    def extra_boxes(gt):
        out = []
        for x0, y0, x1, y1 in gt.tolist():
            w, h = x1 - x0, y1 - y0
            for p in rng.uniform(-0.05, 0.6, (6, 4)):
                out.append([x0 - p[0] * w, y0 - p[1] * h, x1 + p[2] * w, y1 + p[3] * h])
        for x0, y0, s in zip(*rng.uniform(0, BLOB_SIZE - 20, (2, 16)), rng.uniform(10, 50, 16)):
            out.append([x0, y0, x0 + s, y0 + s])
        return torch.tensor(out, dtype=torch.float32).clamp(0, BLOB_SIZE)

    params = [p for p in m.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=2e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=iters)
    m.train()
    for it in range(iters):
        ims, tgts = images[it % len(images)]
        feats = m.backbone(ims.tensors)
        props, l1 = m.rpn(ims, feats, tgts)
        props = [torch.cat([props[0].detach(), extra_boxes(tgts[0]["boxes"])])]
        _, l2 = m.roi_heads(feats, props, ims.image_sizes, tgts)
        opt.zero_grad()
        sum({**l1, **l2}.values()).backward()
        opt.step()
        sched.step()
    m.eval()
    save_checkpoint(path, m, label_names=["blob"], normalization=policy, arch="r18fpn_lite", run="run-blobs")
    return path


@pytest.fixture(scope="module")
def blob_checkpoint(tmp_path_factory):
    """model.pt of the module's tiny blob model (train_blob_model)."""
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)     # small ops: one thread is faster on a shared machine; restored below
    try:
        return train_blob_model(tmp_path_factory.mktemp("blobmodel") / "model.pt")
    finally:
        torch.set_num_threads(threads)


@pytest.fixture
def model_window(qtbot, tmp_path, blob_checkpoint):
    """The annotation window on a project of two blob images whose active model knows blobs."""
    import shutil
    import tifffile
    from engine.project import Project
    from guihelpers import open_window
    images = tmp_path / "images"
    images.mkdir()
    truth = {}
    for seed in (0, 1):
        img, masks = blobs(seed)
        tifffile.imwrite(images / f"blobs{seed}.tif", img)
        truth[seed] = masks
    proj = Project.create(tmp_path / "proj", ["blob"])
    proj.add([images / "blobs0.tif", images / "blobs1.tif"])
    run = proj.models_dir / "run-blobs"
    run.mkdir(parents=True)
    shutil.copy(blob_checkpoint, run / "model.pt")
    proj.set_active_model("run-blobs")
    win = open_window(qtbot, proj.root)
    win.canvas.set_zoom(4.0)
    win.canvas.centerOn(BLOB_SIZE / 2, BLOB_SIZE / 2)
    QtWidgets.QApplication.processEvents()
    win.truth = truth[0]                    # the first item is on screen
    yield win
    win.controller.close_project(force=True)
    win.prompts.shutdown()


def hover(win, x, y, mods):
    from guihelpers import vp
    view = win.canvas.viewport()
    pos = QtCore.QPointF(vp(win, x, y))
    ev = QtGui.QMouseEvent(QtCore.QEvent.MouseMove, pos, view.mapToGlobal(pos.toPoint()), Qt.NoButton,
                           Qt.NoButton, mods)
    QtWidgets.QApplication.sendEvent(view, ev)


def box_drag(win, box, mods=Qt.NoModifier):
    x0, y0, x1, y1 = box
    press(win, x0, y0, mods)
    move(win, (x0 + x1) // 2, (y0 + y1) // 2)
    move(win, x1 - 1, y1 - 1)
    release(win, x1 - 1, y1 - 1, mods)


@pytest.mark.slow     # trains a tiny model once for the module
@pytest.mark.timeout(1800)   # training: est. ~30 s on an idle core, 10 min on the loaded VM
def test_box_prompt_is_answered_by_the_active_model(model_window, qtbot, blob_checkpoint):
    win, ctl = model_window, model_window.controller
    win.canvas.set_tool("box_prompt")
    messages = []
    ctl.message.connect(messages.append)
    before = snapshot(ctl.annotation)
    target = win.truth[0]
    with qtbot.waitSignal(win.prompts.answered, timeout=WAIT_MS) as got:
        box_drag(win, tight_box(target))
    res = got.args[0]
    assert res.rule == "model" and res.answer.method == "model-box" and res.run == "run-blobs"
    assert len(ctl.annotation.instances) == len(before) + 1
    new = ctl.annotation.instances[-1]
    assert new.source == "prompt" and new.label == "blob" and ctl.selection == [new.id]
    assert any(m.startswith("box prompt answered by the model (run run-blobs") for m in messages)
    # the model's own answer (not GrabCut's), for the same box, from the engine directly
    from engine.model.predict import Predictor
    from engine.model.prompts import PromptEngine
    direct = PromptEngine(Predictor(str(blob_checkpoint), device="cpu")).box("x", ctl.image, res.request.box,
                                                                            label="blob")
    assert mask_iou(new.full_mask((BLOB_SIZE, BLOB_SIZE)), direct.instance.full_mask((BLOB_SIZE, BLOB_SIZE))) >= 0.98
    assert mask_iou(new.full_mask((BLOB_SIZE, BLOB_SIZE)), target) >= 0.6
    # the item's features were computed once, in the worker, and the box used them
    assert win.prompts.worker.prepared == 1 and win.prompts.worker.loads == 1
    assert ctl.undo_stack.count() == 1
    key(qtbot, win, Qt.Key_Z, Qt.ControlModifier)
    assert same(snapshot(ctl.annotation), before)


@pytest.mark.slow     # trains a tiny model once for the module
@pytest.mark.timeout(1800)   # training: est. ~30 s on an idle core, 10 min on the loaded VM
def test_click_prompts_preview_add_and_subtract(model_window, qtbot, tmp_path):
    win, ctl = model_window, model_window.controller
    tool = win.canvas.tools["box_prompt"]
    win.canvas.set_tool("box_prompt")
    shape = (BLOB_SIZE, BLOB_SIZE)
    first, second = win.truth
    before = snapshot(ctl.annotation)
    # hovering with Ctrl held: a preview of the object under the cursor, computed in the worker
    cx, cy = centre(first)
    with qtbot.waitSignal(win.prompts.answered, timeout=WAIT_MS) as got:
        hover(win, cx, cy, Qt.ControlModifier)
    assert got.args[0].request.preview and got.args[0].rule == "model"
    assert tool.preview_visible and same(snapshot(ctl.annotation), before)   # a preview edits nothing
    win.grab().save(str(tmp_path / "prompt_hover.png"))
    # Ctrl+click there: the previewed object becomes a new instance of source "prompt"
    click(win, cx, cy, Qt.ControlModifier)
    qtbot.waitUntil(lambda: len(ctl.annotation.instances) == len(before) + 1, timeout=WAIT_MS)
    new = ctl.annotation.instances[-1]
    assert new.source == "prompt" and ctl.selection == [new.id]
    assert new.full_mask(shape)[cy, cx] and mask_iou(new.full_mask(shape), first) >= 0.5
    assert not mask_iou(new.full_mask(shape), second)
    # Shift+click on the other blob adds it to the selected instance
    sx, sy = centre(second)
    click(win, sx, sy, Qt.ShiftModifier)
    qtbot.waitUntil(lambda: ctl.annotation.find(new.id).full_mask(shape)[sy, sx], timeout=WAIT_MS)
    grown = ctl.annotation.find(new.id).full_mask(shape)
    assert len(ctl.annotation.instances) == len(before) + 1 and grown[cy, cx]
    assert mask_iou(grown & ~ndimage_dilate(first, 2), second) >= 0.5
    # Alt+click on it again cuts it out
    click(win, sx, sy, Qt.AltModifier)
    qtbot.waitUntil(lambda: not ctl.annotation.find(new.id).full_mask(shape)[sy, sx], timeout=WAIT_MS)
    cut = ctl.annotation.find(new.id).full_mask(shape)
    assert cut[cy, cx] and not (cut & second).sum() > 0.2 * second.sum()
    win.grab().save(str(tmp_path / "prompt_result.png"))
    # three prompts, three undo steps
    assert ctl.undo_stack.count() == 3
    for _ in range(3):
        key(qtbot, win, Qt.Key_Z, Qt.ControlModifier)
    assert same(snapshot(ctl.annotation), before)


@pytest.mark.slow     # trains a tiny model once for the module
@pytest.mark.timeout(1800)   # training: est. ~30 s on an idle core, 10 min on the loaded VM
def test_an_answer_for_an_item_no_longer_shown_is_dropped(model_window, qtbot):
    win, ctl = model_window, model_window.controller
    win.canvas.set_tool("box_prompt")
    first_id, other_id = ctl.item_id, ctl.items[1].id
    answered, prepared = [], []
    win.prompts.answered.connect(answered.append)
    win.prompts.prepared.connect(lambda item, _s: prepared.append(item))
    box_drag(win, tight_box(win.truth[0]))
    assert win.prompts.busy
    assert ctl.set_current_item(other_id)        # before the answer arrives (it is queued)
    qtbot.waitUntil(lambda: not win.prompts.busy, timeout=WAIT_MS)
    QtWidgets.QApplication.processEvents()
    assert answered == [] and ctl.annotation.instances == []
    assert ctl.project.load_annotation(first_id).instances == []
    # and the new item's features are computed for prompts there
    qtbot.waitUntil(lambda: other_id in prepared, timeout=WAIT_MS)


def test_escape_cancels_a_prompt_waiting_for_its_answer_and_drops_it(window, qtbot):
    """Esc while a prompt waits (busy cursor): the cursor is back at once, the late answer is
    dropped (no instance, no undo step), and the next prompt works as before."""
    import threading
    ctl, svc = window.controller, window.prompts
    window.canvas.set_tool("box_prompt")
    gate, started = threading.Event(), threading.Event()
    answer = svc.worker.answer

    def held(req, wanted):          # the worker is slow: it answers once the test lets it
        started.set()
        assert gate.wait(120)
        return answer(req, wanted)
    svc.worker.answer = held
    answered, messages = [], []
    svc.answered.connect(answered.append)
    ctl.message.connect(messages.append)
    before = snapshot(ctl.annotation)
    ctl.set_selection(["A"])
    drag(window, [(54, 54), (80, 80), (106, 106)])      # around the bright square
    assert svc.waiting and window.canvas.viewport().cursor().shape() == Qt.BusyCursor
    assert started.wait(120)                             # the worker is computing it
    key(qtbot, window, Qt.Key_Escape)
    assert not svc.waiting and window.canvas.viewport().cursor().shape() == Qt.CrossCursor
    assert "prompt cancelled" in messages[-1]
    assert svc.busy                                      # still in the worker ...
    gate.set()
    qtbot.waitUntil(lambda: not svc.busy, timeout=WAIT_MS)
    QtWidgets.QApplication.processEvents()
    assert svc.dropped == 1 and answered == []           # ... and its late answer dropped
    assert same(snapshot(ctl.annotation), before) and ctl.undo_stack.count() == 0
    assert ctl.selection == ["A"]                         # the tool took Esc: the canvas did not deselect
    with qtbot.waitSignal(svc.answered, timeout=WAIT_MS):
        drag(window, [(54, 54), (80, 80), (106, 106)])
    assert len(ctl.annotation.instances) == len(before) + 1


# --- propagation through a stack answered by the model ---------------------------------------

# Slices 6 px apart (a CT stack's slices are often thicker than its pixels): the sphere's
# last sections before its tip are discs of radius 16 px. A 28x28 mask head of a model
# trained for seconds is not within IoU 0.9 on discs under ~12 px radius (their boundary
# is a large share of their area); GrabCut's engine test covers those.
SPHERE_R, SPHERE_DZ = 24.0, 6.0


def sphere_stack(z=11, size=BLOB_SIZE, seed=7):
    """A bright sphere (radius 24 px, slices 6 px apart, centred on the middle slice) on the
    blob images' noisy background, and its truth per slice."""
    rng = np.random.default_rng(seed)
    k, y, x = np.mgrid[:z, :size, :size]
    truth = ((k - z // 2) * SPHERE_DZ) ** 2 + (y - 48) ** 2 + (x - 44) ** 2 <= SPHERE_R ** 2
    img = rng.normal(60, 12, truth.shape) + 110 * truth
    return np.clip(img, 0, 255).astype(np.uint8), truth


@pytest.fixture
def sphere_window(qtbot, tmp_path, blob_checkpoint):
    """The window on a project holding one sphere stack, the blob model active, and the
    sphere's middle section drawn (instance "seed") and selected."""
    import dataclasses
    import shutil
    import tifffile
    from engine.annotations import Instance, ItemAnnotation
    from engine.geometry import VoxelGeometry
    from engine.project import Project
    from test_stacks import open_stack_window
    vol, truth = sphere_stack()
    tifffile.imwrite(tmp_path / "sphere.tif", vol, photometric="minisblack")
    proj = Project.create(tmp_path / "proj", ["blob"])
    proj.add([tmp_path / "sphere.tif"])
    proj.sources[0] = dataclasses.replace(proj.sources[0], geometry=VoxelGeometry(spacing=(SPHERE_DZ, 1.0, 1.0)))
    proj.save()
    ids = [it.id for it in proj.items]
    mid = len(ids) // 2
    seed = Instance.from_full_mask(truth[mid], "blob")
    seed.id = "seed"
    proj.save_annotation(ItemAnnotation(ids[mid], BLOB_SIZE, BLOB_SIZE, [seed], "new"))
    run = proj.models_dir / "run-blobs"
    run.mkdir(parents=True)
    shutil.copy(blob_checkpoint, run / "model.pt")
    proj.set_active_model("run-blobs")
    win = open_stack_window(qtbot, proj.root)
    assert win.controller.set_current_item(ids[mid])
    win.controller.set_selection(["seed"])
    win.ids, win.truth, win.mid = ids, truth, mid
    yield win
    win.controller.close_project(force=True)
    win.prompts.shutdown()


def _feature_threads(monkeypatch):
    """The threads that computed features (PromptEngine._compute), in order."""
    import threading
    from engine.model.prompts import PromptEngine
    seen = []
    compute = PromptEngine._compute

    def recording(self, image, window, *rest):
        seen.append(threading.current_thread())
        return compute(self, image, window, *rest)
    monkeypatch.setattr(PromptEngine, "_compute", recording)
    return seen


@pytest.mark.slow     # trains a tiny model once for the module
@pytest.mark.timeout(1800)
def test_propagation_answered_by_the_model_reaches_the_spheres_ends(sphere_window, qtbot, monkeypatch, tmp_path):
    import threading
    from engine.annotations import Instance
    from engine.masks import iou
    from engine.project import Project
    from test_stack_undo import _press      # keys with the window active (after a progress dialog)
    win, ctl = sphere_window, sphere_window.controller
    ids, truth, mid = win.ids, win.truth, win.mid
    qtbot.waitUntil(lambda: win.prompts.worker.prepared >= 1, timeout=WAIT_MS)   # the shown slice's features
    threads = _feature_threads(monkeypatch)
    messages = []
    ctl.message.connect(messages.append)
    win.actions["propagate both"].trigger()
    proj = Project.open(ctl.project.root)
    anns = [proj.load_annotation(i) for i in ids]
    oid = ctl.annotation.find("seed").object_id
    present = [k for k in range(len(ids)) if truth[k].sum() >= 4]
    assert present[0] > 0 and present[-1] < len(ids) - 1          # the sphere ends inside the stack
    for k, ann in enumerate(anns):
        if k == mid:
            continue
        if k not in present:
            assert ann.instances == [], f"slice {k} is past the sphere's end"
            continue
        (got,) = ann.instances
        score = iou(got, Instance.from_full_mask(truth[k], ""))
        assert score >= 0.9, (k, score)
        assert got.object_id == oid and got.source == "prompt" and got.label == "blob"
    assert any(m.startswith(f"propagated up and down: {len(present) - 1} new instance(s) of this object, "
                            "answered by the model (run run-blobs)") for m in messages), messages
    # the object through the stack, in the orthogonal views (the screenshot in the README)
    panel = win.stack_tools.ortho
    win.docks["orthogonal"].show()
    qtbot.waitUntil(lambda: panel.volume.n == len(ids) and panel.volume.done == len(ids))
    panel.set_position(44, 48)
    qtbot.waitUntil(lambda: panel.xz.caption == "XZ  (y = 48)")
    win.resize(1500, 800)            # room for the status bar's message
    win.canvas.set_zoom(4.0)
    win.canvas.centerOn(48, 48)
    QtWidgets.QApplication.processEvents()
    win.grab().save(str(tmp_path / "propagation.png"))
    # every slice's features were computed in the prompt worker, never on the GUI thread
    assert len(threads) >= len(present) - 1
    assert all(t is not threading.main_thread() and t.name.startswith("maskloop-prompts") for t in threads)
    # one undo step removes them all
    assert ctl.undo_stack.undoText() == "Propagate up and down"
    _press(qtbot, win, Qt.Key_Z, Qt.ControlModifier)
    on_disk = Project.open(ctl.project.root)
    assert all(on_disk.load_annotation(i).instances == [] for k, i in enumerate(ids) if k != mid)
    # one slice at a time: the model's answer on the next slice, which then opens with it selected
    threads.clear()
    _press(qtbot, win, Qt.Key_PageDown, Qt.AltModifier)
    qtbot.waitUntil(lambda: not win.stack_tools.stepping, timeout=WAIT_MS)
    assert ctl.item_id == ids[mid + 1] and len(ctl.annotation.instances) == 1
    new = ctl.annotation.instances[0]
    assert ctl.selection == [new.id] and new.source == "prompt"
    assert iou(new, Instance.from_full_mask(truth[mid + 1], "")) >= 0.9
    assert threads and all(t is not threading.main_thread() for t in threads)
    assert "answered by the model (run run-blobs)" in messages[-1]
    assert ctl.undo_stack.undoText() == "Propagate to the next slice"


@pytest.mark.slow     # trains a tiny model once for the module
@pytest.mark.timeout(1800)
def test_cancelling_a_model_propagation_leaves_the_stack_unchanged(sphere_window, qtbot, monkeypatch):
    """Cancel in the progress dialog while the model answers the first slice: nothing is written."""
    import threading
    from engine.project import Project
    win, ctl = sphere_window, sphere_window.controller
    threads = _feature_threads(monkeypatch)
    before = [Project.open(ctl.project.root).load_annotation(i).instances for i in win.ids]
    answering, cancelled = threading.Event(), threading.Event()
    from engine.model.prompts import PromptEngine
    box = PromptEngine.box

    def held(self, *a, **kw):       # the first slice's answer waits until Cancel was pressed
        answering.set()
        assert cancelled.wait(120)
        return box(self, *a, **kw)
    monkeypatch.setattr(PromptEngine, "box", held)

    def press_cancel():             # on the GUI thread, inside the dialog's event loop
        if not answering.is_set():
            QtCore.QTimer.singleShot(20, press_cancel)
            return
        (dialog,) = win.findChildren(QtWidgets.QProgressDialog)
        dialog.canceled.emit()      # what its Cancel button sends
        cancelled.set()
    QtCore.QTimer.singleShot(0, press_cancel)
    messages = []
    ctl.message.connect(messages.append)
    assert not win.stack_tools.propagate(0)
    assert cancelled.is_set() and "cancelled, nothing changed" in messages[-1]
    after = [Project.open(ctl.project.root).load_annotation(i).instances for i in win.ids]
    assert [[(i.id, i.object_id) for i in a] for a in after] == [[(i.id, i.object_id) for i in b] for b in before]
    assert ctl.undo_stack.count() == 0
    assert threads and all(t is not threading.main_thread() for t in threads)
