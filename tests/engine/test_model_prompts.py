"""Box and click prompts answered by the model from cached features (engine.model.prompts),
and the feature cache's invalidation."""
import numpy as np
import pytest
import torch

from engine.annotations import Instance
from engine.errors import MaskLoopError
from engine.masks import iou
from engine.model.weights import build_model
from engine.model import normalize as N
from engine.model.feature_cache import FeatureCache
from engine.model.predictor import Predictor
from engine.model.prompts import PromptEngine

POLICY = N.range_policy(0, 255)


def blobs(seed, size=112, n=3):
    """Bright ellipses on a noisy background, their masks."""
    rng = np.random.default_rng(seed)
    img = rng.normal(60, 12, (size, size))
    y, x = np.mgrid[:size, :size]
    masks = []
    while len(masks) < n:
        cx, cy = rng.uniform(22, size - 22, 2)
        a, b = rng.uniform(10, 18, 2)
        m = ((x - cx) / a) ** 2 + ((y - cy) / b) ** 2 <= 1
        if not any((m & o).any() for o in masks):
            masks.append(m)
    for m in masks:
        img[m] += 110
    return np.clip(img, 0, 255).astype(np.uint8), masks


def loose_box(mask, pad=2):
    ys, xs = np.nonzero(mask)
    return (xs.min() - pad, ys.min() - pad, xs.max() + 1 + pad, ys.max() + 1 + pad)


def random_predictor(seed, **kw):
    torch.manual_seed(seed)
    return Predictor.from_model(build_model("r18fpn", 2), ["blob"], POLICY, device="cpu", copy_model=False, **kw)


def train_heads(seeds=(0, 1), iters=200):
    """A model that knows the blobs, trained in-test (CPU, seconds on an idle core): the
    backbone stays as built (frozen, its features computed once per image), the RPN and
    the box and mask heads learn from the images and their mirror images."""
    torch.manual_seed(0)
    m = build_model("r18fpn_lite", 2)
    m.roi_heads.fg_bg_sampler.batch_size_per_image = 32
    torch.nn.init.normal_(m.roi_heads.mask_predictor.mask_fcn_logits.weight, std=0.001)
    torch.nn.init.normal_(m.roi_heads.box_predictor.cls_score.weight, std=0.01)
    m.eval()
    data = []
    for s in seeds:
        img, masks = blobs(s)
        for flip in (False, True):
            im = np.ascontiguousarray(img[:, ::-1]) if flip else img
            ms = [np.ascontiguousarray(k[:, ::-1]) if flip else k for k in masks]
            boxes = torch.tensor([[b[0] + 2, b[1] + 2, b[2] - 2, b[3] - 2] for b in map(loose_box, ms)],
                                 dtype=torch.float32)
            tgt = {"boxes": boxes, "labels": torch.ones(len(ms), dtype=torch.int64),
                   "masks": torch.from_numpy(np.stack(ms).astype(np.uint8))}
            x = torch.from_numpy(N.normalize_compact(im, POLICY)).expand(3, -1, -1).contiguous()
            with torch.no_grad():
                images, tgts = m.transform([x], [tgt])
                feats = m.backbone(images.tensors)
            data.append((images, tgts, feats))
    opt = torch.optim.Adam([p for mod in (m.rpn, m.roi_heads) for p in mod.parameters()], lr=2e-3)
    m.rpn.train()
    m.roi_heads.train()
    for it in range(iters):
        images, tgts, feats = data[it % len(data)]
        props, l1 = m.rpn(images, feats, tgts)
        _, l2 = m.roi_heads(feats, props, images.image_sizes, tgts)
        opt.zero_grad()
        sum({**l1, **l2}.values()).backward()
        opt.step()
    m.eval()
    return m


@pytest.fixture(scope="module")
def trained():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)    # small ops: one thread is faster on a shared machine; restored below
    try:
        model = train_heads()
    finally:
        torch.set_num_threads(threads)
    # fp32: the path r18fpn/r50fpn predictors run, where prompts use the bf16 copy of the heads
    return Predictor.from_model(model, ["blob"], POLICY, device="cpu", amp=False)


# --- the cache ----------------------------------------------------------------------------

def same_features(a, b):
    return (a.window == b.window and torch.equal(a.proposals, b.proposals) and
            all(torch.equal(a.features[k], b.features[k]) for k in a.features))


def test_feature_cache_is_dropped_when_the_model_or_the_item_changes():
    pa, pb = random_predictor(0), random_predictor(1)
    x, _ = blobs(0, size=64, n=1)
    y, _ = blobs(1, size=64, n=1)
    eng = PromptEngine(pa)
    fa = eng.prepare("x", x)
    assert eng.prepare("x", x) is fa and eng.cache.computed == 1      # cached: computed once
    # another model: the same item's features are those of the new model
    eng.set_predictor(pb)
    fb = eng.prepare("x", x)
    assert same_features(fb, PromptEngine(pb).prepare("x", x)) and not same_features(fb, fa)
    # the cache also notices a model swap behind its back (keys hold the predictor)
    eng2 = PromptEngine(pa, cache=eng.cache)
    assert same_features(eng2.prepare("x", x), fa) and eng.cache.computed == 3
    # another item, and the same key with other pixels
    eng.set_predictor(pa)
    fy = eng.prepare("y", y)
    assert same_features(fy, PromptEngine(pa).prepare("y", y)) and not same_features(fy, fa)
    fx2 = eng.prepare("y", x)
    assert same_features(fx2, fa)
    assert not eng.cache.holds(pa, "y", y, fy.window)      # one item at a time
    eng.cache.clear()
    assert not eng.cache.holds(pa, "y", x, fx2.window)


def test_tiled_items_use_the_tile_that_holds_the_prompt_and_refuse_larger_boxes():
    p = random_predictor(0, tile=64, overlap=16)
    eng = PromptEngine(p, FeatureCache(max_windows=2))
    H = W = 150
    win = eng.window_for_box((70, 70, 100, 110), H, W)
    assert win[2] - win[0] == 64 and win[3] - win[1] == 64
    assert win[0] <= 70 and win[1] <= 70 and win[2] >= 100 and win[3] >= 110
    with pytest.raises(MaskLoopError, match="larger than a tile"):
        eng.window_for_box((10, 10, 90, 40), H, W)
    wx = eng.window_for_point(149, 3, H, W)
    assert wx[0] <= 149 < wx[2] and wx[1] <= 3 < wx[3] and wx[2] - wx[0] == 64
    assert eng.window_for_box((0, 0, 20, 20), 60, 60) == (0, 0, 60, 60)   # fits one tile: the item
    img, _ = blobs(3, size=H, n=2)
    eng.prepare("big", img, win)
    eng.prepare("big", img, wx)
    eng.prepare("big", img, eng.window_for_point(0, 0, H, W))
    assert eng.cache.computed == 3 and not eng.cache.holds(p, "big", img, win)   # least recent dropped


# --- answers of a trained model (slow: trains the heads in-test) ----------------------------

@pytest.mark.slow
def test_box_prompt_on_the_models_own_training_objects(trained):
    eng = PromptEngine(trained)
    for seed in (0, 1):
        img, masks = blobs(seed)
        for mask in masks:
            ans = eng.box(f"item{seed}", img, loose_box(mask, pad=0))   # the box drawn around the object
            assert ans.method == "model-box" and ans.label == "blob" and ans.score > 0.5
            inst = ans.instance
            assert inst.source == "prompt" and inst.label == "blob" and inst.score is None
            assert iou(inst, Instance.from_full_mask(mask, "")) >= 0.8
    assert eng.cache.computed == 2          # one feature pass per item, however many prompts
    # the user's label wins when given
    assert eng.box("item1", img, loose_box(masks[0]), label="cell").instance.label == "cell"


@pytest.mark.slow
def test_click_inside_an_object_returns_that_object(trained):
    eng = PromptEngine(trained)
    img, masks = blobs(0)
    for k, mask in enumerate(masks):
        ys, xs = np.nonzero(mask)
        ans = eng.click("item0", img, (int(np.median(xs)), int(np.median(ys))))
        assert ans is not None and ans.method == "model-click"
        truths = [iou(ans.instance, Instance.from_full_mask(m, "")) for m in masks]
        assert int(np.argmax(truths)) == k and truths[k] >= 0.5
    assert eng.click_counts == {"lookup": len(masks), "head": 0}   # each a cached detection's mask
    assert eng.click("item0", img, (500, 3)) is None      # outside the image


@pytest.mark.slow
def test_answers_follow_the_item_not_the_cache(trained):
    """Two items prompted in turn with the same box: each answer is the fresh one."""
    eng = PromptEngine(trained)
    a, ma = blobs(0)
    b, mb = blobs(1)
    box = loose_box(ma[0])
    first = eng.box("a", a, box).instance
    other = eng.box("b", b, box)
    fresh = PromptEngine(trained).box("b", b, box)
    assert (other is None) == (fresh is None)
    if other is not None:
        assert other.instance.same_pixels(fresh.instance)
        assert not other.instance.same_pixels(first)


@pytest.mark.slow
def test_propagation_with_model_answers(trained):
    """The same object drifting by 2 px a slice: the model's box prompts carry it along."""
    from engine.model.prompts import model_answerer
    from engine.propagate import propagate
    img, masks = blobs(0)
    stack = [np.roll(img, 2 * k, axis=1) for k in range(3)]
    start = Instance.from_full_mask(masks[1], "blob")
    eng = PromptEngine(trained)
    res = propagate(model_answerer(eng, lambda k: stack[k], key_of=lambda k: f"z{k}"), start, 0, 3,
                    img.shape)
    assert [k for k, _ in res] == [1, 2]
    for k, inst in res:
        truth = Instance.from_full_mask(np.roll(masks[1], 2 * k, axis=1), "")
        assert iou(inst, truth) >= 0.6 and inst.object_id == start.object_id and inst.source == "prompt"


# --- the cached detection masks (clicks) and the bf16 heads ----------------------------------

def pasted(eng, wf, k):
    """Detection k of the window, its mask run through the head now and pasted."""
    d = wf.detections
    probs = eng.heads.mask(wf.features, d.boxes[k:k + 1], d.classes[k:k + 1], wf.image_size)
    return eng._paste(wf, probs, d.boxes[k:k + 1], "")[0]


def test_a_click_inside_a_cached_detection_is_the_heads_answer_and_the_cache_follows_the_item():
    p = random_predictor(0)
    x, _ = blobs(0, size=96, n=2)
    y, _ = blobs(1, size=96, n=2)
    eng = PromptEngine(p)
    wf = eng.prepare("x", x)
    d = wf.detections
    assert d is not None and 0 < len(d.scores) <= 100 and len(d.probs) == len(d.scores)
    assert torch.all(d.scores[:-1] >= d.scores[1:])            # best first
    k = next(k for k in range(len(d.scores)) if pasted(eng, wf, k) is not None)
    inst = pasted(eng, wf, k)
    ys, xs = np.nonzero(inst.mask)
    pt = (int(xs[0]) + inst.x0, int(ys[0]) + inst.y0)
    heads_before = eng.heads
    ans = eng.click("x", x, pt)
    # the answer is a cached detection's mask (best score covering the click), the head's own
    sy, sx = wf.scale
    px, py = (pt[0] + 0.5) * sx, (pt[1] + 0.5) * sy
    best = next(j for j in range(len(d.scores))
                if d.boxes[j, 0] <= px <= d.boxes[j, 2] and d.boxes[j, 1] <= py <= d.boxes[j, 3]
                and (got := pasted(eng, wf, j)) is not None and got.mask[pt[1] - got.y0, pt[0] - got.x0])
    assert ans.instance.same_pixels(pasted(eng, wf, best)) and ans.score == pytest.approx(float(d.scores[best]))
    assert ans.method == "model-click" and ans.instance.source == "prompt" and eng.cache.computed == 1
    # another item with the same click: its own detections, as a fresh engine answers
    other, fresh = eng.click("y", y, pt), PromptEngine(p).click("y", y, pt)
    assert (other is None) == (fresh is None)
    if other is not None:
        assert other.instance.same_pixels(fresh.instance)
    assert eng.prepare("y", y).detections is not d
    # another model: the masks go with the features, and the heads are the new model's
    pb = random_predictor(1)
    eng.set_predictor(pb)
    assert eng.heads is not heads_before
    again, fresh = eng.click("x", x, pt), PromptEngine(pb).click("x", x, pt)
    assert (again is None) == (fresh is None)
    if again is not None:
        assert again.instance.same_pixels(fresh.instance)


def test_a_click_outside_the_cached_detections_runs_the_head_as_before():
    from engine.model.feature_cache import Detections
    p = random_predictor(0)
    x, _ = blobs(0, size=96, n=2)
    old = PromptEngine(p, cache_masks=False)
    eng = PromptEngine(p)
    wf = eng.prepare("x", x)
    assert old.prepare("x", x).detections is None
    wf.detections = Detections(boxes=wf.detections.boxes[:0], classes=wf.detections.classes[:0],
                               scores=wf.detections.scores[:0], proposal=wf.detections.proposal[:0],
                               probs=wf.detections.probs[:0])
    answered = 0
    for pt in ((20, 20), (48, 48), (70, 30)):
        a, b = eng.click("x", x, pt), old.click("x", x, pt)
        assert (a is None) == (b is None)
        if a is not None:
            answered += 1
            assert a.instance.same_pixels(b.instance)
    assert answered


def test_few_box_pooling_equals_torchvisions_pooler():
    from engine.model.prompt_heads import pool_few
    p = random_predictor(0)
    x, _ = blobs(0, size=128, n=2)
    wf = PromptEngine(p, cache_masks=False).prepare("x", x)
    g = torch.Generator().manual_seed(1)
    xy = torch.rand(40, 2, generator=g) * 100
    boxes = torch.cat([xy, (xy + torch.rand(40, 2, generator=g) * 90 + 1).clamp(max=127)], 1)
    rh = p.model.roi_heads
    for pooler in (rh.box_roi_pool, rh.mask_roi_pool):
        for b in (boxes, boxes[:1], boxes[7:9]):
            assert torch.equal(pool_few(pooler, wf.features, b, wf.image_size),
                               pooler(wf.features, [b], [wf.image_size]))


@pytest.mark.slow
def test_bf16_heads_answer_as_fp32_does(trained):
    """The bf16 copy of the heads (used where the CPU computes bf16 natively): the same
    label and masks within IoU 0.95 of fp32's, box and click prompts."""
    e16, e32 = PromptEngine(trained, bf16=True), PromptEngine(trained, bf16=False)
    assert e16.heads.bf16 and not e32.heads.bf16
    for seed in (0, 1):
        img, masks = blobs(seed)
        for mask in masks:
            a, b = (e.box(seed, img, loose_box(mask, pad=0)) for e in (e16, e32))
            assert a.label == b.label and iou(a.instance, b.instance) >= 0.95
            ys, xs = np.nonzero(mask)
            pt = (int(np.median(xs)), int(np.median(ys)))
            a, b = (e.click(seed, img, pt) for e in (e16, e32))
            assert a.label == b.label and iou(a.instance, b.instance) >= 0.95


def test_a_predictor_in_bf16_keeps_its_own_heads_and_answers(trained):
    """r18fpn_lite predicts in bf16 by default on such CPUs: its heads are wrapped to give
    fp32 outputs, so a bf16 copy of them (even when asked for) would mix dtypes."""
    amp = Predictor.from_model(trained.model, ["blob"], POLICY, device="cpu", amp="bf16")
    eng = PromptEngine(amp, bf16=True)
    assert not eng.heads.bf16
    img, masks = blobs(0)
    got = eng.box(0, img, loose_box(masks[0], pad=0))
    assert got is not None and iou(got.instance, Instance.from_full_mask(masks[0], "blob")) >= 0.8


def test_a_click_on_a_tiled_item_looks_up_its_tiles_detections_in_item_pixels():
    p = random_predictor(0, tile=64, overlap=16)
    eng = PromptEngine(p, FeatureCache(max_windows=2))
    img, _ = blobs(3, size=150, n=2)
    win = eng.window_for_point(120, 100, 150, 150)
    assert win[0] > 0 and win[1] > 0                    # not the first tile: offsets matter
    wf = eng.prepare("big", img, win)
    k = next(k for k in range(len(wf.detections.scores)) if pasted(eng, wf, k) is not None)
    inst = pasted(eng, wf, k)                            # in item pixels
    ys, xs = np.nonzero(inst.mask)
    pt = (int(xs[len(xs) // 2]) + inst.x0, int(ys[len(ys) // 2]) + inst.y0)
    assert eng.window_for_point(*pt, 150, 150) == win
    ans = eng.click("big", img, pt)
    assert eng.click_counts["lookup"] == 1 and eng.cache.computed == 1
    m = ans.instance
    assert m.mask[pt[1] - m.y0, pt[0] - m.x0] and win[0] <= m.x0 and win[1] <= m.y0
