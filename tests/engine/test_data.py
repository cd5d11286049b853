"""engine.model.data: snapshot, split, joint transforms, the torchvision targets."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from engine.annotations import Instance, ItemAnnotation
from engine.demo import synthetic_project
from engine.errors import FormatError
from engine.model import data as D
from engine.model import snapshot as SN
from engine.model.normalize import normalize, percentile_policy


@pytest.fixture(scope="module")
def proj_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("dataproj") / "p"
    synthetic_project(root, "nuclei", 6, 96, reviewed=4)
    return root


def _open(root):
    from engine.project import Project
    return Project.open(root)


# --- snapshot -------------------------------------------------------------------------

def test_snapshot_takes_reviewed_items_and_is_a_snapshot(proj_dir, tmp_path):
    import shutil
    root = tmp_path / "p"
    shutil.copytree(proj_dir, root)
    proj = _open(root)
    snap = D.Snapshot.from_project(proj)
    assert [it.key for it in snap.items] == [it.id for it in proj.items[:4]]
    assert snap.label_names == ["nucleus"]
    assert all(c == 1 for it in snap.items for c in it.classes)
    n0 = len(snap.items[0].instances)
    assert n0 > 3
    # later edits do not change the snapshot
    ann = proj.load_annotation(snap.items[0].key)
    ann.instances = ann.instances[:1]
    proj.save_annotation(ann)
    assert len(snap.items[0].instances) == n0
    assert len(D.Snapshot.from_project(_open(root)).items[0].instances) == 1


def test_include_unreviewed_and_empty_reviewed_items(proj_dir, tmp_path):
    import shutil
    root = tmp_path / "p"
    shutil.copytree(proj_dir, root)
    proj = _open(root)
    ids = [it.id for it in proj.items]
    # item 4: predicted with instances; item 5: new without instances; item 0: reviewed, empty
    a4 = proj.load_annotation(ids[0]).copy()
    proj.save_annotation(ItemAnnotation(ids[4], a4.height, a4.width, a4.instances[:2], "predicted"))
    proj.save_annotation(ItemAnnotation(ids[0], a4.height, a4.width, [], "reviewed"))
    snap = D.Snapshot.from_project(proj)
    assert [it.key for it in snap.items] == ids[:4]
    assert snap.items[0].instances == [] and snap.items[0].reviewed
    snap2 = D.Snapshot.from_project(proj, include_unreviewed=True)
    assert [it.key for it in snap2.items] == ids[:5]  # the new, empty item is not "background"
    assert not snap2.items[4].reviewed
    train, val = snap2.split(0.5, seed=0)
    assert 4 in train and 4 not in val  # unreviewed items never validate


def test_degenerate_instances_are_dropped_and_counted():
    dropped = __import__("collections").Counter()
    shape = (40, 50)
    good = Instance(np.ones((5, 6), bool), 3, 4, "a")
    outside = Instance(np.ones((5, 5), bool), 60, 10, "a")
    half_out = Instance(np.ones((10, 10), bool), 45, 35, "a")  # cut to 5x5
    empty = Instance(np.zeros((4, 4), bool), 1, 1, "a")
    unknown = Instance(np.ones((3, 3), bool), 1, 1, "zzz")
    thin = Instance(np.ones((1, 8), bool), 10, 10, "b")
    insts, classes = SN._clean_instances([good, outside, half_out, empty, unknown, thin], shape, ["a", "b"],
                                        min_size=2, dropped=dropped)
    assert len(insts) == 2 and classes == [1, 1]
    assert insts[1].bbox == (45, 35, 5, 5)
    assert dropped == {"outside the image": 1, "empty mask": 1, "unknown label": 1, "degenerate box": 1}
    assert good.bbox == (3, 4, 6, 5)  # inputs are not modified


def test_snapshot_from_coco(tmp_path):
    import tifffile
    from engine.masks import rle_encode
    img = (np.arange(64 * 80, dtype=np.uint16).reshape(64, 80) * 7)
    (tmp_path / "imgs").mkdir()
    tifffile.imwrite(tmp_path / "imgs" / "a.tif", img)
    m = np.zeros((64, 80), bool)
    m[10:20, 30:45] = True
    coco = {
        "images": [{"id": 7, "file_name": "imgs/a.tif", "height": 64, "width": 80}],
        "categories": [{"id": 5, "name": "grain"}, {"id": 2, "name": "pore"}],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 5, "segmentation": rle_encode(m), "iscrowd": 0},
            {"id": 2, "image_id": 7, "category_id": 2, "segmentation": [[1, 1, 9, 1, 9, 9, 1, 9]], "iscrowd": 0},
            {"id": 3, "image_id": 7, "category_id": 2, "segmentation": rle_encode(m), "iscrowd": 1},
            {"id": 4, "image_id": 7, "category_id": 2, "segmentation": rle_encode(np.zeros((64, 80), bool)),
             "iscrowd": 0},
        ],
    }
    (tmp_path / "d.json").write_text(json.dumps(coco))
    snap = D.Snapshot.from_coco(tmp_path / "d.json")
    assert snap.label_names == ["pore", "grain"]  # category id order
    (it,) = snap.items
    assert sorted(it.classes) == [1, 2]
    assert snap.dropped == {"crowd": 1, "empty": 1}
    ds = D.InstanceDataset(snap.items, percentile_policy())
    x, t = ds[0]
    assert x.shape == (3, 64, 80)
    # a file name that leaves the dataset folder is refused
    coco["images"][0]["file_name"] = "../x/a.tif"
    (tmp_path / "bad.json").write_text(json.dumps(coco))
    with pytest.raises(FormatError, match="outside"):
        D.Snapshot.from_coco(tmp_path / "bad.json")


def test_snapshot_json_roundtrip(proj_dir):
    snap = D.Snapshot.from_project(_open(proj_dir))
    back = D.Snapshot.from_json(json.loads(json.dumps(snap.to_json())))
    assert back.label_names == snap.label_names
    for a, b in zip(snap.items, back.items):
        assert a.key == b.key and a.classes == b.classes and a.ref == b.ref
        assert all(p.same_pixels(q) for p, q in zip(a.instances, b.instances))
    assert np.array_equal(D.InstanceDataset(back.items, percentile_policy()).raw(0)[0],
                          _open(proj_dir).load_image(snap.items[0].key))


# --- split --------------------------------------------------------------------------------

def _fake_items(n):
    return [D.TrainItem(f"item{k:02d}", 10, 10, [], [], D.ImageRef(path=f"x{k:02d}.png")) for k in range(n)]


def test_split_is_reproducible_and_has_a_val_item():
    for n in (2, 3, 10, 25):
        snap = D.Snapshot(["a"], _fake_items(n))
        tr, va = snap.split(0.2, seed=1)
        assert len(va) >= 1 and len(tr) >= 1 and sorted(tr + va) == list(range(n))
        assert snap.split(0.2, seed=1) == (tr, va)
        # independent of the order of the items
        rev = D.Snapshot(["a"], list(reversed(snap.items)))
        tr2, va2 = rev.split(0.2, seed=1)
        assert {rev.items[i].key for i in va2} == {snap.items[i].key for i in va}
    one = D.Snapshot(["a"], _fake_items(1))
    assert one.split(0.2) == ([0], [])
    assert D.Snapshot(["a"], _fake_items(5)).split(0.0) == (list(range(5)), [])


def _stack_items(name, n, base="/p"):
    src = {"kind": "stack", "path": name, "n_slices": n, "height": 10, "width": 10}
    return [D.TrainItem(f"{name}_z{z:03d}", 10, 10, [], [], D.ImageRef(source=src, slice=z, base=base))
            for z in range(n)]


def test_split_never_puts_slices_of_one_stack_on_both_sides():
    items = _stack_items("a.tif", 30) + _stack_items("b.tif", 12) + _fake_items(6)
    for seed in range(8):
        for frac in (0.1, 0.2, 0.5):
            snap = D.Snapshot(["a"], items)
            tr, va = snap.split(frac, seed=seed)
            assert va and tr and sorted(tr + va) == list(range(len(items)))
            for stack in ("a.tif", "b.tif"):
                sides = {i in va for i, it in enumerate(items) if it.key.startswith(stack)}
                assert len(sides) == 1, (seed, frac, stack)
            assert len(va) <= max(1, frac * len(items))
    # slices of one COCO stack file (same path, other slice numbers) stay together too
    coco = [D.TrainItem(f"s{z}", 10, 10, [], [], D.ImageRef(path="stack.tif", slice=z)) for z in range(10)]
    tr, va = D.Snapshot(["a"], coco + _fake_items(3)).split(0.3, seed=2)
    assert not ({0, 1, 2, 3, 4, 5, 6, 7, 8, 9} & set(va) and {0, 1, 2, 3, 4, 5, 6, 7, 8, 9} & set(tr))
    # a single stack and nothing else: no honest validation split exists
    assert D.Snapshot(["a"], _stack_items("a.tif", 20)).split(0.2) == (list(range(20)), [])


def test_epoch_batches_cover_the_data_on_every_rank():
    a = D.epoch_batches(11, 2, epoch=3, seed=0)
    assert sorted(i for b in a for i in b) == list(range(11))
    assert a == D.epoch_batches(11, 2, epoch=3, seed=0) and a != D.epoch_batches(11, 2, epoch=4, seed=0)
    r0 = D.epoch_batches(11, 2, epoch=3, seed=0, rank=0, world=2)
    r1 = D.epoch_batches(11, 2, epoch=3, seed=0, rank=1, world=2)
    assert len(r0) == len(r1)
    assert set(i for b in r0 + r1 for i in b) == set(range(11))


# --- transforms ---------------------------------------------------------------------------

def _label_scene(h=60, w=90, seed=0):
    """An image whose pixel values say which instance they belong to."""
    rng = np.random.default_rng(seed)
    lab = np.zeros((h, w), np.int32)
    insts = []
    for k in range(1, 9):
        y, x = int(rng.integers(0, h - 8)), int(rng.integers(0, w - 10))
        hh, ww = int(rng.integers(3, 9)), int(rng.integers(3, 11))
        m = rng.random((hh, ww)) < 0.7
        m[0, :] |= True
        m[:, 0] |= True
        region = lab[y:y + hh, x:x + ww]
        region[m & (region == 0)] = k
    for k in range(1, 9):
        inst = Instance.from_full_mask(lab == k, "a")
        if inst is not None:
            insts.append(D.InstanceCrop(inst.mask, inst.x0, inst.y0, k))
    img = np.repeat((lab.astype(np.float32) / 10.0)[..., None], 3, axis=2)
    return img, insts, lab


@pytest.mark.parametrize("seed", range(12))
def test_geometric_transforms_move_masks_with_the_image(seed):
    img, insts, lab = _label_scene(seed=seed)
    aug = D.Augment(crop=40, scale_jitter=None, flip=True, rot90=True, gain=0, bias=0, gamma=0, noise=0,
                    p_intensity=0, min_area=1, min_visible=0)
    out, kept = D.apply_augment(img.copy(), insts, aug, np.random.default_rng(seed))
    assert out.shape[0] <= 40 and out.shape[1] <= 40
    t = D.to_target(kept, out.shape[0], out.shape[1])
    ids_img = np.rint(out[..., 0] * 10).astype(int)
    for m, box, k in zip(t["masks"].numpy().astype(bool), t["boxes"].numpy(), t["labels"].numpy()):
        assert m.any()
        # exactly the pixels of instance k in the transformed image
        assert np.array_equal(m, ids_img == k)
        ys, xs = np.nonzero(m)
        assert tuple(box) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    # every instance visible in the output is in the target
    assert set(np.unique(ids_img)) - {0} == set(t["labels"].tolist())


def test_rot90_matches_numpy():
    img, insts, lab = _label_scene(50, 70, seed=3)
    for k in range(4):
        r = D.rot90_instances(insts, 50, 70, k)
        rl = np.rot90(lab, k)
        for a, b in zip(insts, r):
            full = np.zeros(rl.shape, bool)
            h, w = b.mask.shape
            full[b.y0:b.y0 + h, b.x0:b.x0 + w] = b.mask
            assert np.array_equal(full, rl == a.cls)


def test_scale_jitter_keeps_masks_aligned():
    img, insts, lab = _label_scene(64, 64, seed=5)
    aug = D.Augment(crop=0, scale_jitter=(1.5, 1.5), flip=False, rot90=False, p_intensity=0)
    out, kept = D.apply_augment(img.copy(), insts, aug, np.random.default_rng(0))
    assert out.shape[:2] == (96, 96)
    t = D.to_target(kept, 96, 96)
    # the whole label image resampled by the centre-aligned nearest-neighbour rule
    r = np.floor((np.arange(96) + 0.5) * 64 / 96).astype(int)
    lab_s = lab[r[:, None], r[None, :]]
    assert len(kept) == len(insts)
    for m, k in zip(t["masks"].numpy().astype(bool), t["labels"].numpy()):
        ref = lab_s == k  # the object resampled with the image grid
        assert np.array_equal(m, ref)


def test_intensity_augment_is_bounded_and_seeded():
    img, insts, _ = _label_scene()
    aug = D.Augment(crop=0, flip=False, rot90=False, p_intensity=1.0)
    a, _ = D.apply_augment(img.copy(), insts, aug, np.random.default_rng([1, 2, 3]))
    b, _ = D.apply_augment(img.copy(), insts, aug, np.random.default_rng([1, 2, 3]))
    c, _ = D.apply_augment(img.copy(), insts, aug, np.random.default_rng([1, 3, 3]))
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert a.dtype == np.float32 and a.min() >= 0 and a.max() <= 1
    assert not np.array_equal(a, img)


def test_crop_drops_slivers_but_keeps_real_parts():
    m = np.ones((20, 20), bool)
    insts = [D.InstanceCrop(m, 0, 0, 1), D.InstanceCrop(m, 30, 30, 1)]
    aug = D.Augment.none(crop=0)
    aug.min_area, aug.min_visible = 8, 0.25
    cut = D.crop_instances(insts, 19, 19, 60, 60)  # first: a 1x1 corner; second: whole
    _, kept = D.apply_augment(np.zeros((60, 60, 3), np.float32), cut, aug, np.random.default_rng(0))
    assert len(cut) == 2 and len(kept) == 1 and kept[0].mask.shape == (20, 20)


# --- the dataset --------------------------------------------------------------------------

def test_dataset_targets_follow_torchvision_conventions(proj_dir):
    proj = _open(proj_dir)
    snap = D.Snapshot.from_project(proj)
    pol = percentile_policy()
    plain = D.InstanceDataset(snap.items, pol, D.Augment.none())
    x, t = plain[1]
    raw = proj.load_image(snap.items[1].key)
    # no augmentation: exactly what inference sees
    assert torch.equal(x, torch.from_numpy(normalize(raw, pol)).permute(2, 0, 1))
    assert x.dtype == torch.float32 and x.shape == (3, 96, 96)
    assert t["boxes"].dtype == torch.float32 and t["labels"].dtype == torch.int64 and t["masks"].dtype == torch.uint8
    assert len(t["boxes"]) == len(snap.items[1].instances)
    b = t["boxes"]
    assert (b[:, 2] > b[:, 0]).all() and (b[:, 3] > b[:, 1]).all() and b.min() >= 0 and b.max() <= 96
    assert t["masks"].shape[1:] == (96, 96)
    full = ItemAnnotation("x", 96, 96, snap.items[1].instances).label_image() > 0
    assert np.array_equal(t["masks"].numpy().any(axis=0), full)
    # augmented: deterministic per (seed, epoch, index), different across epochs
    aug = D.InstanceDataset(snap.items, pol, D.Augment(crop=64), seed=3)
    aug.set_epoch(2)
    x1, t1 = aug[0]
    x2, t2 = aug[0]
    assert torch.equal(x1, x2) and torch.equal(t1["masks"], t2["masks"])
    assert max(x1.shape[1:]) <= 64
    aug.set_epoch(3)
    assert not torch.equal(aug[0][0], x1) or aug[0][0].shape != x1.shape


def test_empty_item_gives_empty_target(proj_dir):
    proj = _open(proj_dir)
    snap = D.Snapshot.from_project(proj)
    it = snap.items[0]
    empty = D.TrainItem(it.key, it.height, it.width, [], [], it.ref)
    x, t = D.InstanceDataset([empty], percentile_policy(), D.Augment())[0]
    assert t["boxes"].shape == (0, 4) and t["labels"].shape == (0,) and t["masks"].shape[0] == 0


def test_unreadable_image_names_the_file(proj_dir, tmp_path):
    from engine.errors import ImageReadError
    bad = tmp_path / "broken.tif"
    bad.write_bytes(b"II*\x00garbage")
    item = D.TrainItem("x", 10, 10, [], [], D.ImageRef(path=str(bad)))
    with pytest.raises(ImageReadError) as e:
        D.InstanceDataset([item], percentile_policy())[0]
    assert "broken.tif" in str(e.value)


def test_worker_processes_give_the_same_samples(proj_dir):
    """Augmentation depends on (seed, epoch, index) only: persistent workers fed
    (epoch, index) pairs produce exactly what the main process would."""
    # (conftest keeps the DataLoader's workers from replacing Qt's SIGCHLD handler)
    snap = D.Snapshot.from_project(_open(proj_dir))
    ds = D.InstanceDataset(snap.items, percentile_policy(), D.Augment(crop=64), seed=5)
    sampler = D.EpochBatches()
    loader = torch.utils.data.DataLoader(ds, batch_sampler=sampler, collate_fn=D.collate, num_workers=2,
                                         persistent_workers=True)
    for epoch in (1, 2):
        batches = D.epoch_batches(len(ds), 2, epoch, seed=5)
        sampler.set(batches, epoch)
        got = [x for images, _ in loader for x in images]
        ds.set_epoch(epoch)
        want = [ds[i][0] for b in batches for i in b]
        assert len(got) == len(want) == len(ds)
        assert all(torch.equal(a, b) for a, b in zip(got, want))
