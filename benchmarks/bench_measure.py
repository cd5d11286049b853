#!/usr/bin/env python
"""Measuring many instances and 3-D objects: MaskLoop against a plain regionprops loop.

2-D: N items x M instances (random ellipses, some overlapping).
  MaskLoop:  engine.measure.measure_instances: each instance's bbox crop, packed into one
             small mosaic label image per item, one regionprops_table call.
  Baseline:  per item a full-image label map (ItemAnnotation.label_image) and one
             regionprops_table call with the same properties on it. An instance hidden
             under a later one loses those pixels there: the baseline measures less.
3-D: a Z-slice stack with K ellipsoid objects (instances linked by object id).
  MaskLoop:  engine.measure3d.measure_objects: each object assembled from its instances'
             crops into a small volume.
  Baseline:  the full (Z, H, W) int32 label volume, regionprops over it (same spacing and
             properties) and the same surface function on each region's image.

Both sides get the same instances and images, in the same process, one after the other;
the two sides alternate (A B A B) for --repeat rounds; wall and CPU time are medians (on a
shared machine CPU time is the steadier figure), memory is the tracemalloc peak of one more
run (numpy's buffers are traced). Building the synthetic data is not timed.

    python benchmarks/bench_measure.py                     # small: 10 x 200, 40 slices x 200 objects
    python benchmarks/bench_measure.py --items 100 --instances 200 --size 1024 \\
        --slices 300 --objects 2000 --stack-size 512     # the issue's sizes
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from engine.annotations import Instance, ItemAnnotation  # noqa: E402
from engine.measure import Units, measure_instances  # noqa: E402
from engine.measure3d import measure_objects, pieces_of, surface_area  # noqa: E402

PROPS = ["area", "perimeter_crofton", "equivalent_diameter_area", "axis_major_length", "axis_minor_length",
         "feret_diameter_max", "orientation", "eccentricity", "solidity", "label", "bbox", "centroid",
         "intensity_mean", "intensity_std", "intensity_min", "intensity_max"]


def make_items(n_items, n_inst, size, seed=0):
    from skimage.draw import ellipse
    rng = np.random.default_rng(seed)
    items = []
    for k in range(n_items):
        image = rng.integers(0, 4000, (size, size)).astype(np.uint16)
        insts = []
        for _ in range(n_inst):
            cy, cx = rng.integers(15, size - 15, 2)
            ry, rx = rng.integers(4, 14, 2)
            m = np.zeros((2 * ry + 3, 2 * rx + 3), bool)
            rr, cc = ellipse(ry + 1, rx + 1, ry, rx, shape=m.shape, rotation=rng.uniform(0, np.pi))
            m[rr, cc] = True
            insts.append(Instance(m, int(cx - rx - 1), int(cy - ry - 1), "grain").tight())
        items.append((ItemAnnotation(f"item{k}", size, size, insts, "reviewed"), image))
    return items


def make_stack(n_slices, n_obj, size, seed=1):
    """Ellipsoids spread through the stack, cut into one instance per slice."""
    rng = np.random.default_rng(seed)
    anns = [ItemAnnotation(f"z{z}", size, size, [], "reviewed") for z in range(n_slices)]
    images = [rng.integers(0, 4000, (size, size)).astype(np.uint16) for _ in range(n_slices)]
    for k in range(n_obj):
        cz = rng.uniform(4, n_slices - 4)
        cy, cx = rng.uniform(16, size - 16, 2)
        rz, ry, rx = rng.uniform(1.5, 4.0), rng.uniform(4, 12), rng.uniform(4, 12)
        for z in range(int(np.floor(cz - rz)), int(np.ceil(cz + rz)) + 1):
            f = 1 - ((z - cz) / rz) ** 2
            if f <= 0 or not 0 <= z < n_slices:
                continue
            y0, x0 = int(cy - ry), int(cx - rx)
            yy, xx = np.mgrid[y0:int(cy + ry) + 1, x0:int(cx + rx) + 1]
            m = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= f
            if m.any():
                anns[z].instances.append(Instance(m, x0, y0, "grain", object_id=f"o{k}").tight())
    return anns, images


# --- the two sides ---------------------------------------------------------------------------

def maskloop_2d(items):
    return sum(len(measure_instances(ann.instances, img, (1.0, 1.0), Units())) for ann, img in items)


def baseline_2d(items):
    from skimage.measure import regionprops_table
    n = 0
    for ann, img in items:
        t = regionprops_table(ann.label_image(), img, properties=PROPS)
        n += len(t["label"])
    return n


SPACING = (2.0, 0.5, 0.5)


def maskloop_3d(stack):
    anns, images = stack
    pieces = []
    for z, (ann, img) in enumerate(zip(anns, images)):
        pieces += pieces_of(ann, img, z)
    return len(measure_objects(pieces, SPACING, Units("mm")))


def baseline_3d(stack):
    from skimage.measure import regionprops
    anns, images = stack
    ids = {}
    vol = np.zeros((len(anns),) + anns[0].shape, np.int32)
    for z, ann in enumerate(anns):
        for inst in ann.instances:
            inst.paste_into(vol[z], ids.setdefault(inst.object_id, len(ids) + 1))
    values = np.stack(images)
    n = 0
    for rp in regionprops(vol, values, spacing=SPACING):
        _ = (rp.area, rp.centroid, rp.inertia_tensor_eigvals, rp.intensity_mean, rp.intensity_std,
             rp.intensity_min, rp.intensity_max)
        surface_area(rp.image, SPACING)
        n += 1
    return n


def compare(sides, data, repeat, what):
    """Run the sides in turn (A B A B ...: load from other processes hits both alike), then one
    tracemalloc run each. Prints wall and CPU time (medians) and the traced peak."""
    wall = {name: [] for name, _ in sides}
    cpu = {name: [] for name, _ in sides}
    rows = {}
    for _ in range(repeat):
        for name, fn in sides:
            t0, c0 = time.perf_counter(), time.process_time()
            rows[name] = fn(data)
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    for name, fn in sides:
        tracemalloc.start()
        fn(data)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        w, c = statistics.median(wall[name]), statistics.median(cpu[name])
        print(f"  {name:30s} wall {w:7.2f} s  CPU {c:7.2f} s  {rows[name] / c:7.0f} {what}/CPU-s  "
              f"peak {peak / 2**20:7.1f} MiB  ({rows[name]} rows)", flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=10, help="0 skips the 2-D part")
    ap.add_argument("--instances", type=int, default=200)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--slices", type=int, default=40)
    ap.add_argument("--objects", type=int, default=200, help="0 skips the 3-D part")
    ap.add_argument("--stack-size", type=int, default=256)
    ap.add_argument("--repeat", type=int, default=1)
    a = ap.parse_args(argv)
    if a.items:
        run_2d(a)
    if a.objects:
        run_3d(a)


def run_2d(a):
    items = make_items(a.items, a.instances, a.size)
    print(f"2-D: {a.items} items x {a.instances} instances, {a.size}x{a.size} px", flush=True)
    compare((("MaskLoop (crops, packed)", maskloop_2d), ("baseline (full label maps)", baseline_2d)),
            items, a.repeat, "instances")


def run_3d(a):
    stack = make_stack(a.slices, a.objects, a.stack_size)
    n_inst = sum(len(x.instances) for x in stack[0])
    print(f"3-D: {a.slices} slices of {a.stack_size}x{a.stack_size}, {a.objects} objects ({n_inst} instances)", flush=True)
    compare((("MaskLoop (object crops)", maskloop_3d), ("baseline (full label volume)", baseline_3d)),
            stack, a.repeat, "objects")


if __name__ == "__main__":
    main()
