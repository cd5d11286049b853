"""engine.model.predict and normalize: Predictor, tiling and seams, devices, projects."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from engine import synthetic as S
from engine.annotations import Instance, ItemAnnotation
from engine.errors import CancelledError, CheckpointError, LabelError, MaskLoopError
from engine.jobs import CancelToken
from engine.model import build as B
from engine.model import normalize as N
from engine.model.predict import (Predictor, fuse_conv_bn, merge_tiles, paste_in_box, resolve_device,
                                  tile_grid, tile_starts)

POLICY = N.percentile_policy()


# --- a fake model: thresholding + connected components, in torchvision's output format -------

class ThresholdModel(nn.Module):
    """Finds bright connected blobs in each (3, H, W) image; exact, so tiling can be checked.

    Returns full-image masks as torchvision's models do (N, 1, H, W); the score is the
    blob's mean intensity, so pieces of one blob seen by two tiles may score differently.
    """

    def __init__(self, threshold: float = 0.5, label: int = 1):
        super().__init__()
        self.threshold = threshold
        self.label = label
        self.calls = 0
        self.batch_sizes = []

    def forward(self, images):
        self.calls += 1
        self.batch_sizes.append(len(images))
        outs = []
        for im in images:
            x = im[0].float().cpu().numpy()
            n, lab = cv2.connectedComponents((x > self.threshold).astype(np.uint8), connectivity=8)
            h, w = x.shape
            boxes, scores, masks = [], [], []
            for k in range(1, n):
                m = lab == k
                ys, xs = np.nonzero(m)
                boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
                scores.append(float(x[m].mean()))
                masks.append(m)
            outs.append({
                "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                "scores": torch.tensor(scores, dtype=torch.float32),
                "labels": torch.full((len(boxes),), self.label, dtype=torch.int64),
                "masks": torch.from_numpy(np.stack(masks)[:, None] if masks else np.zeros((0, 1, h, w), bool)),
            })
        return outs


def components(binary: np.ndarray) -> set:
    """Connected components (8-connectivity) as a set of (x0, y0, mask bytes)."""
    n, lab = cv2.connectedComponents(binary.astype(np.uint8), connectivity=8)
    out = set()
    for k in range(1, n):
        inst = Instance.from_full_mask(lab == k, "nucleus")
        out.add(key(inst))
    return out


def key(inst: Instance):
    inst = inst.copy().tight()
    return (inst.x0, inst.y0, inst.mask.shape, inst.mask.tobytes())


def fake_predictor(**kw) -> Predictor:
    return Predictor.from_model(ThresholdModel(), ["nucleus"], N.range_policy(0, 1), "cpu", run="fake-run", **kw)


def binary_image(h, w):
    return np.zeros((h, w), np.float32)


# --- normalisation ---------------------------------------------------------------------------

def test_normalize_output_and_policies():
    img = np.arange(100, dtype=np.uint16).reshape(10, 10) * 100
    x = N.normalize(img, N.range_policy(0, 9900))
    assert x.dtype == np.float32 and x.shape == (10, 10, 3)
    assert x.min() == 0.0 and x.max() == 1.0 and np.array_equal(x[..., 0], x[..., 2])
    w = N.normalize(img, N.window_policy(5000, 2000))
    assert w[0, 0, 0] == 0.0 and w[-1, -1, 0] == 1.0 and abs(w[5, 0, 0] - 0.5) < 1e-6
    rgb = np.dstack([img, img // 2, img // 4]).astype(np.uint16)
    assert not np.array_equal(N.normalize(rgb, POLICY)[..., 0], N.normalize(rgb, POLICY)[..., 2])
    flat = N.normalize(np.full((5, 5), 7, np.uint16), POLICY)
    assert np.isfinite(flat).all()
    f = np.array([[np.nan, 1.0], [np.inf, 0.5]], np.float32)
    assert np.isfinite(N.normalize(f, N.range_policy(0, 1))).all()
    for bad in ({"kind": "gamma"}, {"kind": "window", "center": 1, "width": 0},
                {"kind": "percentile", "low": 60, "high": 40}, {"kind": "range", "min": 1}, "percentile"):
        with pytest.raises(N.PolicyError):
            N.validate_policy(bad)


def test_16bit_and_its_windowed_8bit_version_give_the_same_input():
    s = S.nuclei_sample(256, seed=1)
    img16 = s.image
    lo, hi = N.intensity_bounds(img16, POLICY)
    img8 = np.clip(np.rint((img16.astype(np.float64) - lo) / (hi - lo) * 255), 0, 255).astype(np.uint8)
    a = N.normalize(img16, POLICY)
    assert np.abs(a - N.normalize(img8, N.range_policy(0, 255))).max() <= 0.5 / 255 + 1e-6
    # the same percentile policy on the 8-bit export: the same input up to quantisation
    assert np.abs(a - N.normalize(img8, POLICY)).max() <= 2.5 / 255
    # with MaskLoop's own display mapping (engine.imageio), when present
    imageio = pytest.importorskip("engine.imageio")
    c, w = (lo + hi) / 2, hi - lo
    disp = imageio.to_uint8(img16, window=(c, w))
    assert np.abs(N.normalize(disp, N.range_policy(0, 255)) - a).mean() < 1.0 / 255


def test_ct_window_in_hu_matches_the_windowed_8bit_image():
    hu = (S.ct_sample(128, seed=0).image.astype(np.int32) - 20000).astype(np.int16)  # signed, HU-like
    pol = N.window_policy(5000, 12000)
    lo = 5000 - 6000
    img8 = np.clip(np.rint((hu.astype(np.float64) - lo) / 12000 * 255), 0, 255).astype(np.uint8)
    assert np.abs(N.normalize(hu, pol) - N.normalize(img8, N.range_policy(0, 255))).max() <= 0.5 / 255 + 1e-6


def test_fast_integer_percentiles_equal_numpy():
    rng = np.random.default_rng(0)
    for dt in (np.uint8, np.uint16, np.int16):
        info = np.iinfo(dt)
        for n in (1, 2, 999, 50_000):
            v = rng.integers(info.min, info.max, n, endpoint=True).astype(dt)
            for q in ([0.5, 99.5], [0.0, 100.0], [10.0, 50.0]):
                assert N._int_percentiles(v, q) == pytest.approx(list(np.percentile(v, q)), rel=1e-12, abs=1e-9)


def test_default_policy():
    assert N.default_policy([np.zeros((4, 4), np.uint8)]) == N.range_policy(0, 255)
    assert N.default_policy([np.zeros((4, 4), np.uint16)])["kind"] == "percentile"
    assert N.default_policy([])["kind"] == "percentile"
    assert N.describe(N.window_policy(40, 400)) == "window 40/400"


# --- devices ---------------------------------------------------------------------------------

def test_resolve_device():
    assert resolve_device("cpu").type == "cpu"
    auto = resolve_device("auto")
    assert auto.type == ("cuda" if torch.cuda.is_available() else auto.type)
    with pytest.raises(MaskLoopError):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(MaskLoopError, match="CUDA"):
            resolve_device("cuda")


# --- tiles and seams (fake model: exact) ------------------------------------------------------

def test_tile_grid_covers_with_overlap():
    assert tile_starts(100, 128, 16) == [0]
    s = tile_starts(1000, 256, 64)
    assert s[0] == 0 and s[-1] == 1000 - 256
    assert all(b - a <= 256 - 64 for a, b in zip(s, s[1:]))
    grid = tile_grid(300, 1000, 256, 64)
    cover = np.zeros((300, 1000), int)
    for x0, y0, x1, y1 in grid:
        cover[y0:y1, x0:x1] += 1
    assert cover.min() >= 1


def test_object_across_seams_comes_out_as_one_instance():
    img = binary_image(300, 400)
    cv2.ellipse(img, (200, 150), (170, 30), 20, 0, 360, 1.0, -1)  # long: crosses several seams
    cv2.circle(img, (40, 40), 12, 1.0, -1)                         # small, inside one tile
    cv2.circle(img, (128, 270), 10, 1.0, -1)                       # in the overlap of two tiles
    p = fake_predictor(tile=128, overlap=32)
    res = p.predict(img, score_threshold=0.0)
    assert p.last_timing["tiles"] > 6
    assert len(res) == 3
    assert {key(i) for i in res} == components(img > 0.5)
    assert all(i.source == "model" and i.model == "fake-run" and i.label == "nucleus" for i in res)


def test_tiled_and_untiled_agree_on_nuclei():
    s = S.nuclei_sample((600, 700), seed=3)
    pol = N.window_policy(4000, 2)  # binary at 4000: blobs exactly as the fake model sees them
    model = ThresholdModel()
    untiled = Predictor.from_model(model, ["nucleus"], pol, "cpu", tile=0).predict(s.image, score_threshold=0)
    tiled_p = Predictor.from_model(model, ["nucleus"], pol, "cpu", tile=256, overlap=48)
    tiled = tiled_p.predict(s.image, score_threshold=0)
    assert tiled_p.last_timing["tiles"] == len(tile_grid(600, 700, 256, 48)) == 12
    truth = components(N.normalize(s.image, pol)[..., 0] > 0.5)
    assert len(truth) > 100
    assert {key(i) for i in untiled} == truth
    assert {key(i) for i in tiled} == truth


def test_more_than_1000_instances_in_one_image():
    s = S.nuclei_sample(1024, seed=0, n_nuclei=1600, radius=(4, 6), touching=0.0)
    pol = N.window_policy(4000, 2)
    p = Predictor.from_model(ThresholdModel(), ["nucleus"], pol, "cpu", tile=256, overlap=32, max_detections=5000)
    res = p.predict(s.image, score_threshold=0)
    truth = components(N.normalize(s.image, pol)[..., 0] > 0.5)
    assert len(truth) > 1000
    assert {key(i) for i in res} == truth


def test_fits_one_tile_is_the_same_as_untiled():
    s = S.nuclei_sample(200, seed=2)
    p = Predictor.from_model(ThresholdModel(), ["nucleus"], POLICY, "cpu", tile=256)
    a = p.predict(s.image, score_threshold=0)
    b = p.predict(s.image, score_threshold=0, tile=0)
    assert [key(i) for i in a] == [key(i) for i in b] and [i.score for i in a] == [i.score for i in b]


def test_merge_drops_pieces_inside_a_whole_detection_and_dedupes():
    # tile A (0..100) sees the object whole; tile B (60..160) sees it cut at its left edge
    full = np.zeros((50, 160), bool)
    full[10:30, 62:98] = True
    tiles = [(0, 0, 100, 50), (60, 0, 160, 50)]
    whole = Instance.from_full_mask(full, "a", score=0.9)
    piece = Instance.from_full_mask(full & (np.arange(160) >= 60)[None], "a", score=0.8)
    # dedupe: the same object seen whole in both overlapping tiles
    dup = Instance.from_full_mask(full, "a", score=0.7)
    assert len(merge_tiles([[whole], [dup]], tiles, 50, 160)) == 1
    # piece: B's view touches B's interior left edge (x=60..62) -> dropped in favour of A's
    cut = full.copy()
    cut[:, :62] = False
    cut[10:30, 60:62] = True
    piece = Instance.from_full_mask(cut, "a", score=0.8)
    out = merge_tiles([[whole], [piece]], tiles, 50, 160)
    assert len(out) == 1 and out[0].score == 0.9
    # of two views of one object, the one well inside its tile wins over a higher-scored
    # view that ends near an interior edge (truncated there, but not within 2 px of it)
    near = full.copy()
    near[:, 95:] = False  # tile A's view stops 5 px before A's right edge (x=100)
    tiles3 = [(0, 0, 100, 50), (40, 0, 140, 50)]
    a_view = Instance.from_full_mask(near, "a", score=0.95)
    b_view = Instance.from_full_mask(full, "a", score=0.6)  # 22 px from B's left edge
    out = merge_tiles([[a_view], [b_view]], tiles3, 50, 160)
    assert len(out) == 1 and out[0].same_pixels(b_view)
    # two different objects in two tiles stay two
    other = np.zeros((50, 160), bool)
    other[35:45, 120:150] = True
    out = merge_tiles([[whole], [Instance.from_full_mask(other, "a", score=0.5)]], tiles, 50, 160)
    assert len(out) == 2


def test_progress_cancel_and_batching():
    img = binary_image(300, 300)
    calls = []
    model = ThresholdModel()
    p = Predictor.from_model(model, ["nucleus"], N.range_policy(0, 1), "cpu", tile=128, overlap=16,
                             batch_size=3, copy_model=False)
    p.predict(img, progress=lambda d, t, m: calls.append((d, t)))
    assert calls[-1] == (9, 9) and len(calls) == 3
    assert model.batch_sizes == [3, 3, 3]
    tok = CancelToken()
    tok.cancel()
    with pytest.raises(CancelledError):
        p.predict(img, cancel=tok)


def test_predict_many_batches_tiles_of_several_images():
    imgs = [S.nuclei_sample(s, seed=k).image for k, s in enumerate([200, 200, (150, 180), 200])]
    pol = N.window_policy(4000, 2)
    model = ThresholdModel()
    p = Predictor.from_model(model, ["nucleus"], pol, "cpu", batch_size=4, copy_model=False)
    many = p.predict_many(imgs, score_threshold=0)
    assert model.batch_sizes == [2, 1, 1]  # consecutive images of the same size share a batch
    single = [p.predict(im, score_threshold=0) for im in imgs]
    assert [[key(i) for i in r] for r in many] == [[key(i) for i in r] for r in single]


def test_score_threshold_filters():
    img = binary_image(100, 100)
    cv2.circle(img, (30, 30), 8, 0.9, -1)
    cv2.circle(img, (70, 70), 8, 0.6, -1)
    p = Predictor.from_model(ThresholdModel(), ["nucleus"], N.range_policy(0, 1), "cpu")
    assert len(p.predict(img, score_threshold=0.0)) == 2
    res = p.predict(img, score_threshold=0.8)
    assert len(res) == 1 and res[0].score == pytest.approx(0.9)


# --- the real model ------------------------------------------------------------------------

def fewer_proposals(p: Predictor, n: int = 200) -> Predictor:
    """Keep CPU tests quick: 200 instead of 1000 RPN proposals (same for all compared runs)."""
    p.model.rpn._pre_nms_top_n["testing"] = n
    p.model.rpn._post_nms_top_n["testing"] = n
    return p


@pytest.fixture(scope="module")
def r18_path(tmp_path_factory):
    torch.manual_seed(0)
    m = B.build_model("r18fpn", 2)
    path = tmp_path_factory.mktemp("run-a") / "model.pt"
    B.save_checkpoint(path, m, label_names=["nucleus"], normalization=POLICY, run="run-a")
    return path


def test_paste_in_box_matches_torchvision():
    from torchvision.models.detection.roi_heads import paste_masks_in_image
    g = torch.Generator().manual_seed(0)
    probs = torch.rand(12, 1, 28, 28, generator=g)
    xy = torch.rand(12, 2, generator=g) * 100
    wh = torch.rand(12, 2, generator=g) * 80 + 1
    boxes = torch.cat([xy, xy + wh], 1)  # detections are clipped to the image, as the model does
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, 160)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, 120)
    ref = paste_masks_in_image(probs, boxes, (120, 160))[:, 0] >= 0.5
    crops = paste_in_box(probs[:, 0].numpy(), boxes.numpy(), 120, 160, 0.5)
    for r, (crop, x0, y0) in zip(ref.numpy(), crops):
        mine = np.zeros((120, 160), bool)
        if crop.size:
            mine[y0:y0 + crop.shape[0], x0:x0 + crop.shape[1]] = crop
        assert (mine != r).sum() <= max(2, r.sum() // 200)


def test_fusing_conv_bn_keeps_the_outputs():
    torch.manual_seed(0)
    m = B.build_model("r18fpn", 2)
    m.train()
    with torch.no_grad():  # give BatchNorm non-trivial running statistics
        for _ in range(2):
            m.backbone(torch.rand(2, 3, 64, 64) * 3)
    m.eval()
    x = torch.rand(1, 3, 96, 96)
    with torch.inference_mode():
        ref = m.backbone(x)
        n = fuse_conv_bn(m)
        out = m.backbone(x)
    assert n >= 20
    for k in ref:
        assert torch.allclose(ref[k], out[k], atol=1e-4, rtol=1e-4)


def test_predictor_round_trip_identical_predictions(r18_path):
    img = S.nuclei_sample(160, seed=0).image
    ck = B.load_checkpoint(r18_path)
    m = B.model_from_checkpoint(ck)
    a = fewer_proposals(Predictor.from_model(m, ["nucleus"], POLICY, "cpu", max_detections=8, run="run-a")
                        ).predict(img, score_threshold=0.0)
    p = fewer_proposals(Predictor(r18_path, "cpu", max_detections=8))
    assert p.run == "run-a" and p.label_names == ["nucleus"] and p.device.type == "cpu"
    b = p.predict(img, score_threshold=0.0)
    assert len(a) == 8
    assert [key(i) for i in a] == [key(i) for i in b]
    assert [i.score for i in a] == [i.score for i in b]
    assert all(i.source == "model" and i.model == "run-a" and i.fits((160, 160)) for i in b)
    # the warm model again, now with tiling on and a tile the image fits in: identical
    assert [key(i) for i in p.predict(img, score_threshold=0.0, tile=512)] == [key(i) for i in b]


def test_reduced_precision_keeps_box_decoding_in_fp32(r18_path):
    """The autocast path (bf16 here on the CPU; bf16/fp16 on CUDA) runs only the conv parts
    in reduced precision: boxes stay within a pixel or two of fp32."""
    img = S.nuclei_sample(192, seed=0).image
    ref = fewer_proposals(Predictor(r18_path, "cpu", max_detections=5, amp=False)).predict(img, score_threshold=0)
    p = fewer_proposals(Predictor(r18_path, "cpu", max_detections=5, amp="bf16"))
    assert p.amp_dtype == torch.bfloat16 and type(p.model.backbone).__name__ == "Autocast"
    low = p.predict(img, score_threshold=0)
    assert len(low) == len(ref) == 5
    best = low[0]
    assert min(max(abs(a - b) for a, b in zip(best.bbox, r.bbox)) for r in ref) <= 2


def test_predictor_runs_real_model_tiled_and_checks_labels(r18_path):
    img = S.nuclei_sample((200, 200), seed=1).image
    p = fewer_proposals(Predictor(r18_path, "cpu", max_detections=3, tile=128, overlap=32))
    res = p.predict(img, score_threshold=0.0)
    assert p.last_timing["tiles"] == 4 and res
    assert all(i.fits((200, 200)) and i.source == "model" for i in res)
    with pytest.raises(CheckpointError):
        Predictor(r18_path, "cpu", expected_labels=["rock"])


# --- projects ---------------------------------------------------------------------------------

@pytest.fixture
def project(tmp_path):
    project_mod = pytest.importorskip("engine.project")
    imgdir = tmp_path / "images"
    imgdir.mkdir()
    for k in range(3):
        img = S.nuclei_sample(96, seed=k).image
        if k == 2:
            img = np.full((96, 96), 500, np.uint16)  # nothing to find
        assert cv2.imwrite(str(imgdir / f"img{k}.png"), img)
    proj = project_mod.Project.create(tmp_path / "proj", ["nucleus"])
    proj.add([imgdir])
    return proj


def test_predict_items_writes_results_and_keeps_reviewed(project):
    ids = [it.id for it in project.items]
    reviewed = ItemAnnotation(ids[0], 96, 96, [Instance(np.ones((3, 3), bool), 1, 1, "nucleus")], "reviewed")
    project.save_annotation(reviewed)
    p = Predictor.from_model(ThresholdModel(), ["nucleus"], N.window_policy(4000, 2), "cpu", run="run-x")
    seen = []
    summary = p.predict_items(project, ids, progress=lambda d, t, m: seen.append((d, t)), score_threshold=0.0)
    assert summary["skipped"] == [ids[0]] and summary["predicted"] == ids[1:]
    assert seen[-1] == (3, 3)
    assert project.load_annotation(ids[0]).instances[0].source == "manual"  # untouched
    ann1 = project.load_annotation(ids[1])
    assert ann1.status == "predicted" and len(ann1.instances) > 3
    assert all(i.source == "model" and i.model == "run-x" for i in ann1.instances)
    ann2 = project.load_annotation(ids[2])
    assert ann2.status == "predicted" and ann2.instances == []
    # again: previous model output is replaced, not duplicated
    p.predict_items(project, ids[1:2], score_threshold=0.0)
    assert len(project.load_annotation(ids[1]).instances) == len(ann1.instances)
    # overwrite_reviewed: the reviewed item too
    p.predict_items(project, ids[:1], score_threshold=0.0, overwrite_reviewed=True)
    assert project.load_annotation(ids[0]).status == "predicted"


def test_predict_items_cancel_and_unknown_labels(project):
    ids = [it.id for it in project.items]
    tok = CancelToken()
    p = Predictor.from_model(ThresholdModel(), ["nucleus"], N.window_policy(4000, 2), "cpu")
    with pytest.raises(CancelledError):
        p.predict_items(project, ids, progress=lambda d, t, m: tok.cancel() if d == 1 else None, cancel=tok)
    assert project.load_annotation(ids[0]).status == "predicted"
    assert project.load_annotation(ids[1]).status == "new"
    q = Predictor.from_model(ThresholdModel(), ["cell"], POLICY, "cpu")
    with pytest.raises(LabelError, match="cell"):
        q.predict_items(project, ids)


def test_cuda_recipe_on_cpu_batched_channels_last_tiles_agree(r18_path):
    """The CUDA settings (tiles in batches of 4, channels_last, autocast) run here on the
    CPU: fp32 gives the plain run's detections; bf16 the same leading boxes within 2 px."""
    img = S.nuclei_sample((200, 200), seed=1).image
    kw = dict(max_detections=20, tile=128, overlap=32)
    ref = fewer_proposals(Predictor(r18_path, "cpu", amp=False, **kw)).predict(img, score_threshold=0.0)
    fast = fewer_proposals(Predictor(r18_path, "cpu", batch_size=4, channels_last=True, amp=False, **kw))
    out = fast.predict(img, score_threshold=0.0)
    assert fast.last_timing["tiles"] == 4 and len(out) == len(ref) > 10
    assert [i.bbox for i in out] == [i.bbox for i in ref]
    assert np.allclose([i.score for i in out], [i.score for i in ref], atol=1e-4)
    low = fewer_proposals(Predictor(r18_path, "cpu", batch_size=4, channels_last=True, amp="bf16", **kw))
    top = low.predict(img, score_threshold=0.0)[:3]
    for inst in top:
        assert min(max(abs(a - b) for a, b in zip(inst.bbox, r.bbox)) for r in ref[:6]) <= 2


def test_tile_overlap_widens_to_the_largest_training_object(r18_path, tmp_path):
    plain = Predictor(r18_path, "cpu", tile=1024)
    assert plain.largest_object is None and plain.overlap == 128  # tile / 8
    ck = B.load_checkpoint(r18_path)
    ck["extra"] = {"largest_object": 300}
    big = tmp_path / "big.pt"
    torch.save({k: v for k, v in ck.items() if k != "_path"}, big)
    p = Predictor(big, "cpu", tile=1024)
    assert p.largest_object == 300 and p.overlap == 316  # the object fits whole in an overlap
    assert p.default_overlap(512) == 256  # at most half a tile
    assert Predictor(big, "cpu", tile=1024, overlap=64).overlap == 64  # an explicit overlap wins
    # a tile given per call gets its own default overlap instead of failing on the 1024 one
    img = S.nuclei_sample((300, 300), seed=0).image
    fewer_proposals(p, 50).predict(img, score_threshold=0.5, tile=160)
    assert p.last_timing["tiles"] == 9  # overlap 80 (half of 160): 3 x 3 tiles
