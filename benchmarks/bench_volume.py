"""Label volumes and 3-D objects: importing a class volume and linking a stack's slices.

Each phase runs in a fresh Python process so that its peak memory is its own:

  import    maskloop import of a class NRRD volume (Z x N x N, K bodies of two classes)
            into a project's TIFF stack: read (pynrrd), 3-D connected components
            (scipy), one instance per body per slice, annotation files written
  baseline  the floor under that: pynrrd read + scipy.ndimage.label + find_objects per
            class, nothing else (no instances, no files)
  link      engine.objects.link_stack on Z slices x M instances (discs of spheres that
            stack along z, two labels), in memory
  naive     the textbook way for the same slices: a dense IoU matrix per slice pair from
            full-image masks, then best-IoU-first one-to-one; run on the first
            --naive-pairs slice pairs only and reported per pair next to link's per pair

Reported: wall time and the growth of peak RSS (getrusage maxrss, everything the process
allocated, C libraries included) over the process's peak after making its input.

    python benchmarks/bench_volume.py              # small: 128x128x40, 100 bodies; 40 x 50
    python benchmarks/bench_volume.py --full       # the issue's 512x512x300, 2000 bodies; 300 x 200
    python benchmarks/bench_volume.py --size 256 --slices 100 --bodies 500 --instances 100
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _maxrss() -> int:
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r if sys.platform == "darwin" else r * 1024


# --- data -----------------------------------------------------------------------------------

def class_volume(z: int, n: int, bodies: int, seed: int = 0):
    """Balls on a jittered grid (never touching), classes 1 and 2 alternating: exactly
    `bodies` 3-D components."""
    import numpy as np
    rng = np.random.default_rng(seed)
    vol = np.zeros((z, n, n), np.uint8)
    gz = max(1, round((bodies * z * z / (n * n)) ** (1 / 3)))
    gy = int(np.ceil(np.sqrt(bodies / gz)))
    while gz * gy * gy < bodies:
        gy += 1
    cz, cy = z / gz, n / gy
    cells = [(a, b, c) for a in range(gz) for b in range(gy) for c in range(gy)][:bodies]
    for k, (a, b, c) in enumerate(cells):
        rz = max(1.0, rng.uniform(0.3, 0.45) * cz)
        ry = max(1.5, rng.uniform(0.25, 0.42) * cy)
        centre = ((a + 0.5) * cz, (b + 0.5) * cy, (c + 0.5) * cy)
        lo = [max(0, int(centre[0] - rz)), max(0, int(centre[1] - ry)), max(0, int(centre[2] - ry))]
        hi = [min(z, int(centre[0] + rz) + 1), min(n, int(centre[1] + ry) + 1), min(n, int(centre[2] + ry) + 1)]
        zz, yy, xx = np.ogrid[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
        ball = ((zz - centre[0]) / rz) ** 2 + ((yy - centre[1]) / ry) ** 2 + ((xx - centre[2]) / ry) ** 2 <= 1
        vol[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]][ball] = 1 + k % 2
    return vol


def link_slices(z: int, m: int, size: int = 512, seed: int = 0):
    """z annotations with about m disc instances each: m columns of spheres stacked along z."""
    import numpy as np
    from engine.annotations import Instance, ItemAnnotation
    rng = np.random.default_rng(seed)
    g = int(np.ceil(np.sqrt(m)))
    cell = size / g
    anns = [ItemAnnotation(f"s{k:04d}", size, size, [], "reviewed") for k in range(z)]
    for col in range(m):
        cy, cx = (col // g + 0.5) * cell, (col % g + 0.5) * cell
        label = "rock" if col % 3 else "pore"
        z0 = -int(rng.integers(0, 10))
        while z0 < z:
            length = int(rng.integers(8, 30))
            rmax = rng.uniform(0.3, 0.45) * cell
            for k in range(max(z0, 0), min(z0 + length, z)):
                t = (k - z0 + 0.5) / length * 2 - 1
                r = rmax * np.sqrt(max(0.0, 1 - t * t))
                if r < 1:
                    continue
                ri = int(np.ceil(r))
                yy, xx = np.ogrid[-ri:ri + 1, -ri:ri + 1]
                disc = yy ** 2 + xx ** 2 <= r * r
                anns[k].instances.append(Instance(disc, int(cx) - ri, int(cy) - ri, label))
            z0 += length + 1   # a gap: bodies in a column do not touch
    return anns


# --- phases ------------------------------------------------------------------------------------

def phase_import(args, tmp: Path) -> dict:
    import numpy as np
    import nrrd
    import tifffile
    from engine.formats.volume_project import import_volume
    from engine.project import Project
    vol = class_volume(args.slices, args.size, args.bodies)
    nrrd.write(str(tmp / "labels.nrrd"), vol, {"space": "left-posterior-superior",
                                               "space directions": np.diag([0.1, 0.1, 0.5]),
                                               "space origin": np.zeros(3), "encoding": "gzip"},
               index_order="C")
    with tifffile.TiffWriter(tmp / "scan.tif") as tw:
        page = np.zeros((args.size, args.size), np.uint8)
        for _ in range(args.slices):
            tw.write(page, photometric="minisblack", contiguous=True)
    proj = Project.create(tmp / "proj")
    proj.add([tmp / "scan.tif"])
    del vol
    return _measure(lambda: import_volume(proj, tmp / "labels.nrrd", kind="class"),
                    lambda rep: {"objects": rep.objects, "instances": rep.instances})


def phase_baseline(args, tmp: Path) -> dict:
    import numpy as np
    import nrrd
    from scipy import ndimage
    vol = class_volume(args.slices, args.size, args.bodies)
    nrrd.write(str(tmp / "labels.nrrd"), vol, {"encoding": "gzip"}, index_order="C")
    del vol

    def run():
        data, _ = nrrd.read(str(tmp / "labels.nrrd"), index_order="C")
        n = 0
        for v in (1, 2):
            cc, k = ndimage.label(data == v)
            n += sum(1 for s in ndimage.find_objects(cc) if s is not None)
        return n
    return _measure(run, lambda n: {"objects": n})


def phase_link(args, tmp: Path) -> dict:
    from engine.objects import link_stack, objects
    anns = link_slices(args.slices_link, args.instances)
    n = sum(len(a.instances) for a in anns)

    def run():
        return link_stack(anns)
    return _measure(run, lambda changed: {"instances": n, "objects": len(objects(changed))})


def phase_naive(args, tmp: Path) -> dict:
    import numpy as np
    anns = link_slices(min(args.slices_link, args.naive_pairs + 1), args.instances)

    def run():
        links = 0
        for a, b in zip(anns, anns[1:]):
            ma = [i.full_mask(a.shape) for i in a.instances]
            mb = [i.full_mask(b.shape) for i in b.instances]
            iou = np.zeros((len(ma), len(mb)))
            for p, x in enumerate(ma):
                for q, y in enumerate(mb):
                    if a.instances[p].label == b.instances[q].label:
                        inter = np.count_nonzero(x & y)
                        iou[p, q] = inter / max(1, np.count_nonzero(x | y))
            used_a, used_b = set(), set()
            for flat in np.argsort(-iou, axis=None):
                p, q = divmod(int(flat), iou.shape[1])
                if iou[p, q] < 0.3:
                    break
                if p not in used_a and q not in used_b:
                    used_a.add(p)
                    used_b.add(q)
                    links += 1
        return links
    return _measure(run, lambda links: {"pairs": len(anns) - 1, "links": links})


def _measure(fn, describe) -> dict:
    base_rss = _maxrss()
    t0 = time.perf_counter()
    out = fn()
    wall = time.perf_counter() - t0
    rss = _maxrss() - base_rss
    return {"wall_s": wall, "rss_growth_mb": rss / 2 ** 20, **describe(out)}


PHASES = {"import": phase_import, "baseline": phase_baseline, "link": phase_link, "naive": phase_naive}


def worker(name: str, args) -> None:
    sys.path.insert(0, str(REPO))
    with tempfile.TemporaryDirectory(prefix="bench_volume_") as d:
        res = PHASES[name](args, Path(d))
    print("RESULT " + json.dumps(res))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--full", action="store_true", help="the issue's sizes (512x512x300, 2000 bodies; 300 x 200)")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--slices", type=int, default=40)
    ap.add_argument("--bodies", type=int, default=100)
    ap.add_argument("--slices-link", type=int, default=40)
    ap.add_argument("--instances", type=int, default=50)
    ap.add_argument("--naive-pairs", type=int, default=3)
    ap.add_argument("--phases", default=",".join(PHASES))
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.full:
        args.size, args.slices, args.bodies, args.slices_link, args.instances = 512, 300, 2000, 300, 200
    if args.worker:
        worker(args.worker, args)
        return
    print(f"machine: {platform.node()} {platform.machine()}, python {platform.python_version()}")
    print(f"import: {args.slices}x{args.size}x{args.size} class volume, {args.bodies} bodies; "
          f"link: {args.slices_link} slices x {args.instances} instances")
    results = {}
    for name in args.phases.split(","):
        cmd = [sys.executable, __file__, "--worker", name, "--size", str(args.size), "--slices", str(args.slices),
               "--bodies", str(args.bodies), "--slices-link", str(args.slices_link),
               "--instances", str(args.instances), "--naive-pairs", str(args.naive_pairs)]
        out = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
        line = next((ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if line is None:
            print(f"{name}: failed\n{out.stderr[-2000:]}")
            continue
        results[name] = json.loads(line[7:])
        print(f"{name:9s} {json.dumps(results[name])}")
    if "link" in results and "naive" in results:
        per_link = results["link"]["wall_s"] / max(1, args.slices_link - 1)
        per_naive = results["naive"]["wall_s"] / max(1, results["naive"]["pairs"])
        print(f"per slice pair: link_stack {per_link * 1000:.1f} ms, naive dense IoU {per_naive * 1000:.1f} ms "
              f"({per_naive / max(per_link, 1e-9):.0f}x)")


if __name__ == "__main__":
    main()
