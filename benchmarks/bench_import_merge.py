"""Import of a dense label map: MaskLoop's indexed merge against the old pairwise merge,
in the same run (issue 14 defect 5: 10,000 objects took 158 s, 225 s re-imported).

    python benchmarks/bench_import_merge.py                      # 2,000 objects, 1024 px
    python benchmarks/bench_import_merge.py --objects 10000 --size 2048

Prints: the whole `import --format labelmap` (first time, and again: every object a
duplicate) and the merge step alone, new and old. The old merge is measured on at most
--baseline-max objects and scaled (it is quadratic) when --objects is larger; the
printout says so.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import tifffile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.annotations import ItemAnnotation  # noqa: E402
from engine.formats import merge_instances  # noqa: E402
from engine.formats.labelmap import import_labelmap, labelmap_to_instances  # noqa: E402
from engine.project import Project  # noqa: E402


def old_merge(ann, new, skipped) -> int:
    """The merge before the fix: every new instance against every existing one."""
    n = 0
    for inst in new:
        pos = next((k for k, o in enumerate(ann.instances) if o.id == inst.id), None)
        if pos is not None:
            ann.instances[pos] = inst
            n += 1
            continue
        if any(o.label == inst.label and o.bbox == inst.bbox and np.array_equal(o.mask, inst.mask)
               for o in ann.instances):
            skipped["dup"] += 1
            continue
        ann.instances.append(inst)
        n += 1
    return n


def label_map(n: int, size: int) -> np.ndarray:
    """n small touching blobs of varied shape on a size x size image (like a Cellpose map)."""
    side = int(np.ceil(np.sqrt(n)))
    cell = size // side
    if cell < 4:
        raise SystemExit(f"--size {size} is too small for {n} objects")
    rng = np.random.default_rng(0)
    lab = np.zeros((size, size), np.uint32)
    for k in range(n):
        r, c = divmod(k, side)
        h, w = rng.integers(cell // 2, cell + 1, 2)
        lab[r * cell:r * cell + h, c * cell:c * cell + w] = k + 1
    return lab


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--objects", type=int, default=2000)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--baseline-max", type=int, default=4000,
                    help="largest object count the old (quadratic) merge is run on")
    a = ap.parse_args()
    lab = label_map(a.objects, a.size)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        img = tmp / "cells.tif"
        tifffile.imwrite(img, np.zeros((a.size, a.size), np.uint8))
        maps = tmp / "maps"
        maps.mkdir()
        tifffile.imwrite(maps / "cells.tif", lab)
        proj = Project.create(tmp / "proj", ["cell"])
        proj.add([img])
        t_first, rep = timed(lambda: import_labelmap(proj, maps, label="cell"))
        t_again, rep2 = timed(lambda: import_labelmap(proj, maps, label="cell"))
        assert rep.instances == a.objects and rep2.instances == 0, (rep.summary(), rep2.summary())
        t_decode, insts = timed(lambda: labelmap_to_instances(lab, "cell"))
        ann = ItemAnnotation("cells", a.size, a.size, [], "new")
        t_new1, _ = timed(lambda: merge_instances(ann, insts, Counter()))
        t_new2, _ = timed(lambda: merge_instances(ann, labelmap_to_instances(lab, "cell"), Counter()))
        t_new2 -= t_decode
        m = min(a.objects, a.baseline_max)
        scale = (a.objects / m) ** 2
        sub = insts[:m]
        base = ItemAnnotation("cells", a.size, a.size, [], "new")
        t_old1, _ = timed(lambda: old_merge(base, sub, Counter()))
        again = labelmap_to_instances(lab, "cell")[:m]
        t_old2, _ = timed(lambda: old_merge(base, again, Counter()))
    note = "" if m == a.objects else f" (measured on {m} objects, scaled x{scale:.1f}: quadratic)"
    print(f"label map {a.size}x{a.size}, {a.objects} objects; dev VM, 2 shared cores, CPU")
    print(f"  maskloop import, first time          {t_first:8.2f} s")
    print(f"  maskloop import, again (duplicates)  {t_again:8.2f} s")
    print(f"  decoding the label map               {t_decode:8.2f} s")
    print(f"  merge step, indexed (new)            {t_new1:8.3f} s first, {t_new2:8.3f} s again")
    print(f"  merge step, pairwise (old)           {t_old1 * scale:8.2f} s first, {t_old2 * scale:8.2f} s again{note}")


if __name__ == "__main__":
    main()
