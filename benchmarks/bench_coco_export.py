#!/usr/bin/env python
"""COCO export of a project with 100 items x 200 instances: MaskLoop vs labelme's way.

MaskLoop:  engine.formats.coco.export_coco (compressed RLE computed from each instance's
           crop; one pass over the project's annotation files).
Baseline:  labelme's examples/instance_segmentation/labelme2coco.py approach, written inline
           and run on the very same annotation files (they are labelme JSON): per shape a
           full-image bool mask (labelme.utils.img_b64_to_arr for `mask` shapes, pasted
           into the image as labelme.utils.shapes_to_label does), then pycocotools
           encode / area / toBbox, one json.dump at the end. Image reading and the JPEG
           copies labelme2coco makes are left out of the baseline (MaskLoop's export
           without --copy-images reads no image either), so both sides do the same job.

Each side runs in its own fresh child process: wall time (median of --repeat runs), peak
resident memory growth during the runs (VmHWM - VmRSS before; Linux), and the Python-heap
peak under tracemalloc (one separate run). Usage:

    python benchmarks/bench_coco_export.py [--items 100] [--instances 200] [--size 1024]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _status_kb(key: str) -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return -1


# --- the synthetic project ----------------------------------------------------------------

def build_project(root: Path, n_items: int, n_inst: int, size: int, seed: int = 0):
    import cv2
    import numpy as np
    from engine.annotations import Instance, ItemAnnotation
    from engine.project import Project

    rng = np.random.default_rng(seed)
    imgs = root / "images"
    imgs.mkdir(parents=True)
    blank = np.zeros((size, size), np.uint16)
    paths = []
    for k in range(n_items):
        p = imgs / f"img_{k:03d}.png"
        cv2.imwrite(str(p), blank)  # a blank 16-bit PNG: tiny on disk; export reads no pixels
        paths.append(p)
    proj = Project.create(root / "proj", ["nucleus", "cell"])
    proj.add(paths)
    yy, xx = np.mgrid[-24:25, -24:25]
    for it in proj.items:
        insts = []
        for j in range(n_inst):
            ry, rx = rng.uniform(5, 22, 2)
            blob = (yy / ry) ** 2 + (xx / rx) ** 2 <= 1.0
            blob &= rng.random(blob.shape) > 0.02          # some holes, ragged edges
            cy, cx = rng.integers(24, size - 24, 2)
            insts.append(Instance(mask=blob, x0=int(cx) - 24, y0=int(cy) - 24,
                                  label=("nucleus", "cell")[j % 2]).tight())
        proj.save_annotation(ItemAnnotation(it.id, size, size, insts, "reviewed"))
    return proj


# --- the two exporters ---------------------------------------------------------------------------

def run_maskloop(project_dir: Path, out: Path):
    from engine.formats.coco import export_coco
    from engine.project import Project
    proj = Project.open(project_dir)
    export_coco(proj, out)


def run_labelme_way(project_dir: Path, out: Path):
    """labelme2coco.py's per-shape full-mask approach on the same labelme JSON files."""
    import numpy as np
    import pycocotools.mask
    import labelme.utils

    files = sorted((project_dir / "annotations").glob("*.json"))
    manifest = json.loads((project_dir / "maskloop.json").read_text())
    class_name_to_id = {l["name"]: l["id"] for l in manifest["labels"]}
    data = {"info": {}, "licenses": [], "images": [], "annotations": [],
            "categories": [{"supercategory": None, "id": i, "name": n} for n, i in class_name_to_id.items()]}
    for image_id, filename in enumerate(files):
        lf = json.loads(Path(filename).read_text())
        H, W = lf["imageHeight"], lf["imageWidth"]
        data["images"].append({"license": 0, "file_name": lf["imagePath"], "height": H, "width": W,
                               "id": image_id})
        masks = {}
        for n, shape in enumerate(lf["shapes"]):
            mask = np.zeros((H, W), dtype=bool)
            (x1, y1), (x2, y2) = np.asarray(shape["points"]).astype(int)
            mask[y1:y2 + 1, x1:x2 + 1] = labelme.utils.img_b64_to_arr(shape["mask"]).astype(bool)
            masks[(shape["label"], n)] = mask
        for (cls_name, _), mask in masks.items():
            rle = pycocotools.mask.encode(np.asfortranarray(mask.astype(np.uint8)))
            area = float(pycocotools.mask.area(rle))
            bbox = pycocotools.mask.toBbox(rle).flatten().tolist()
            rle["counts"] = rle["counts"].decode("ascii")
            data["annotations"].append({"id": len(data["annotations"]), "image_id": image_id,
                                        "category_id": class_name_to_id[cls_name], "segmentation": rle,
                                        "area": area, "bbox": bbox, "iscrowd": 0})
    with open(out, "w") as f:
        json.dump(data, f)


RUNNERS = {"maskloop": run_maskloop, "labelme": run_labelme_way}


def child(which: str, project_dir: Path, out: Path, repeat: int) -> dict:
    import tracemalloc
    fn = RUNNERS[which]
    # import everything first so that import cost is not measured
    if which == "maskloop":
        import engine.formats.coco  # noqa: F401
        import engine.project  # noqa: F401
    else:
        import labelme.utils  # noqa: F401
        import pycocotools.mask  # noqa: F401
    rss0 = _status_kb("VmRSS")
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn(project_dir, out)
        times.append(time.perf_counter() - t)
    hwm = _status_kb("VmHWM")
    tracemalloc.start()
    fn(project_dir, out)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {"median_s": statistics.median(times), "min_s": min(times), "runs": repeat,
            "rss_growth_mb": (hwm - rss0) / 1024 if hwm > 0 and rss0 > 0 else None,
            "py_heap_peak_mb": peak / 2**20, "out_mb": out.stat().st_size / 2**20}


def compare(out_a: Path, out_b: Path) -> bool:
    """Both files hold the same masks per image (in the same order)."""
    a, b = json.loads(out_a.read_text()), json.loads(out_b.read_text())
    if len(a["annotations"]) != len(b["annotations"]):
        return False
    return all(x["segmentation"]["counts"] == y["segmentation"]["counts"] and x["area"] == y["area"]
               and [round(v) for v in x["bbox"]] == [round(v) for v in y["bbox"]]
               for x, y in zip(a["annotations"], b["annotations"]))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--items", type=int, default=100)
    ap.add_argument("--instances", type=int, default=200)
    ap.add_argument("--size", type=int, default=1024, help="image width = height")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--child", choices=list(RUNNERS), help=argparse.SUPPRESS)
    ap.add_argument("--project", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.child:
        print(json.dumps(child(args.child, Path(args.project), Path(args.out), args.repeat)))
        return 0

    tmp = Path(tempfile.mkdtemp(prefix="maskloop-bench-"))
    try:
        t = time.perf_counter()
        build_project(tmp, args.items, args.instances, args.size)
        build_s = time.perf_counter() - t
        results = {}
        for which in ("maskloop", "labelme"):
            out = tmp / f"{which}.json"
            r = subprocess.run([sys.executable, __file__, "--child", which, "--project", str(tmp / "proj"),
                                "--out", str(out), "--repeat", str(args.repeat)],
                               capture_output=True, text=True)
            if r.returncode != 0:
                print(r.stderr, file=sys.stderr)
                return 1
            results[which] = json.loads(r.stdout.strip().splitlines()[-1])
        same = compare(tmp / "maskloop.json", tmp / "labelme.json")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    import platform
    n = args.items * args.instances
    print(f"COCO export: {args.items} items x {args.instances} instances = {n} instances, "
          f"{args.size}x{args.size} images (project built in {build_s:.1f} s)")
    load = " ".join(f"{v:.1f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    print(f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, Python "
          f"{platform.python_version()}, load average at the end {load}")
    print(f"{'exporter':<34}{'median s':>10}{'min s':>9}{'RSS growth MB':>15}{'py heap peak MB':>17}{'JSON MB':>9}")
    names = {"maskloop": "MaskLoop export_coco (RLE)", "labelme": "labelme2coco way (baseline)"}
    for which, r in results.items():
        rss = f"{r['rss_growth_mb']:.0f}" if r["rss_growth_mb"] is not None else "n/a"
        print(f"{names[which]:<34}{r['median_s']:>10.2f}{r['min_s']:>9.2f}{rss:>15}"
              f"{r['py_heap_peak_mb']:>17.1f}{r['out_mb']:>9.1f}")
    print(f"speed-up: {results['labelme']['median_s'] / results['maskloop']['median_s']:.1f}x; "
          f"identical RLE, area and bbox in both outputs: {same}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
