"""A project of 100,000 items (issue 15): open, `info`, next item, save one item.

    python benchmarks/bench_big_project.py                        # 5 stacks x 2,000 slices (10,000 items)
    python benchmarks/bench_big_project.py --stacks 50            # the issue's 100,000 items

The project is synthetic but real: STACKS multi-page TIFF files of SLICES 16x16 pages (one
written, the rest copies, so building it takes seconds), the manifest written by
Project.add's own code path for one stack and replicated for the others (the same entries
`add` would write, without probing 50 identical files: one run of slices a stack, see
engine/manifest_ranges.py), and ANNOTATED items with a saved annotation of a few objects
(reviewed or predicted), spread over the stacks.

Measured against the current code (each the median of --repeat runs, wall and CPU time of
the process: the machine is shared, and CPU time is what its load does not inflate; the
first run of `open` cold in a fresh process is printed too):
- open:       Project.open(root)
- info:       engine.cli.data_cmds.cmd_info (what `maskloop info` prints), in process, and
              `python main.py info` as a user runs it (process start and imports included,
              CPU time from the child's rusage); its counts come from annotations/.index.jsonl
              (engine/annotation_index.py), kept by save_annotation; also measured once with
              the index removed, as a project written by an older MaskLoop (every annotation
              file decoded once, index rebuilt)
- statuses:   Project.statuses() (the image list's status column and filters)
- next item:  the step of the editor: the next item's image (one TIFF page), its annotation
              and its status
- save item:  save_annotation of one edited item; also a manifest rewrite (Project.save of a
              changed setting), which every manifest change (add, active model, settings) pays
Baselines in the same run: json.load of the manifest, listing the annotations folder, and
open and info of the same project with its manifest in the old form (version 1, one entry
a slice: what MaskLoop wrote before runs of slices, and still reads).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def build(root: Path, stacks: int, slices: int, annotated: int, seed: int = 0):
    import tifffile
    from engine.annotations import Instance, ItemAnnotation
    from engine.project import MANIFEST, Project
    proj = Project.create(root, ["grain", "pore"])
    images = root / "images"
    images.mkdir()
    first = images / "core_000.tif"
    rng = np.random.default_rng(seed)
    tifffile.imwrite(first, rng.integers(0, 60000, (slices, 16, 16), dtype=np.uint16), photometric="minisblack")
    for k in range(1, stacks):
        shutil.copyfile(first, images / f"core_{k:03d}.tif")
    proj.add(first)  # the real probe and item ids for one stack
    data = json.loads((root / MANIFEST).read_text())
    src0, items0 = data["sources"][0], list(data["items"])
    for k in range(1, stacks):
        src = dict(src0, path=f"images/core_{k:03d}.tif", name=src0["name"].replace("core_000", f"core_{k:03d}"))
        data["sources"].append(src)
        data["items"] += [dict(it, id=it["id"].replace("core_000", f"core_{k:03d}"), source=k,
                               name=it["name"].replace("core_000", f"core_{k:03d}")) for it in items0]
    (root / MANIFEST).write_text(json.dumps(data))
    proj = Project.open(root)
    step = max(1, len(proj.items) // max(1, annotated))
    for n, it in enumerate(proj.items[::step][:annotated]):
        m = np.zeros((6, 6), bool)
        m[1:5, 1:5] = True
        insts = [Instance(m, x0=2 + j * 4, y0=3, label="grain" if j % 2 else "pore", score=0.9,
                          source="model" if n % 2 else "manual") for j in range(3)]
        proj.save_annotation(ItemAnnotation(it.id, it.height, it.width, insts, "predicted" if n % 2 else "reviewed"))
    return Project.open(root)


def timed(fn, repeat: int) -> tuple[tuple, object]:
    """((median wall s, median CPU s of this process), last result): CPU time is what the
    machine's load does not inflate."""
    walls, cpus, out = [], [], None
    for _ in range(repeat):
        c, t = time.process_time(), time.perf_counter()
        out = fn()
        walls.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
    return (statistics.median(walls), statistics.median(cpus)), out


def run_child(argv: list, env=None) -> tuple:
    """(wall s, CPU s user+system) of a child process run to its end."""
    import resource
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True, env=env)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def old_form(root: Path) -> bytes:
    """The manifest as a MaskLoop before runs of slices wrote it: version 1, one entry a slice."""
    from engine.project import Project
    return json.dumps(dict(Project.open(root).to_json(), version=1), indent=1).encode()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--stacks", type=int, default=5)
    ap.add_argument("--slices", type=int, default=2000)
    ap.add_argument("--annotated", type=int, default=1000, help="items with a saved annotation")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", default=None, help="also write the figures as JSON to this file")
    args = ap.parse_args(argv)
    from engine.cli.data_cmds import cmd_info
    from engine.project import MANIFEST, Project

    with tempfile.TemporaryDirectory(prefix="maskloop-big-") as tmp:
        root = Path(tmp) / "big"
        t = time.perf_counter()
        proj = build(root, args.stacks, args.slices, args.annotated)
        n = len(proj.items)
        manifest_mb = (root / MANIFEST).stat().st_size / 2**20
        print(f"machine: {os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f}; project: {n:,} items "
              f"({args.stacks} stacks x {args.slices} slices of 16x16), {args.annotated} annotated; "
              f"manifest {manifest_mb * 1024:.1f} KiB; built in {time.perf_counter() - t:.0f} s")
        cold = subprocess.run([sys.executable, "-c", "import sys, time; sys.path.insert(0, sys.argv[2]); "
                               "from engine.project import Project; t = time.perf_counter(); "
                               "Project.open(sys.argv[1]); print(time.perf_counter() - t)", str(root), str(REPO)],
                              capture_output=True, text=True, check=True)
        manifest = root / MANIFEST
        packed, unpacked = manifest.read_bytes(), old_form(root)
        rows = {}
        rows["baseline: json.load of the manifest"], _ = timed(lambda: json.loads(manifest.read_bytes()), args.repeat)
        rows["baseline: list the annotations folder"], _ = timed(
            lambda: len(os.listdir(root / "annotations")), args.repeat)
        rows["open (Project.open)"], proj = timed(lambda: Project.open(root), args.repeat)
        rows["open, first in a fresh process"] = (float(cold.stdout.strip()), float("nan"))

        def info():
            with contextlib.redirect_stdout(io.StringIO()) as buf:
                cmd_info(argparse.Namespace(project=str(root)))
            return buf.getvalue()
        rows["info (cmd_info, in process)"], text = timed(info, args.repeat)
        assert f"items: {n}" in text, text[:300]
        env = dict(os.environ, PYTHONPATH=str(REPO))
        whole = [run_child([sys.executable, str(REPO / "main.py"), "info", str(root)], env)
                 for _ in range(args.repeat)]
        rows["info (python main.py info, whole process)"] = tuple(statistics.median(x) for x in zip(*whole))

        # the same project with its manifest in the old form (one entry a slice, 10 MB)
        manifest.write_bytes(unpacked)
        old_mb = len(unpacked) / 2**20
        rows[f"baseline: json.load of the old-form manifest ({old_mb:.1f} MiB)"], _ = timed(
            lambda: json.loads(manifest.read_bytes()), args.repeat)
        rows["baseline: open, old-form manifest"], _ = timed(lambda: Project.open(root), args.repeat)
        rows["baseline: info (cmd_info), old-form manifest"], again = timed(info, args.repeat)
        assert again == text, "the two manifest forms give other info"
        whole = [run_child([sys.executable, str(REPO / "main.py"), "info", str(root)], env)
                 for _ in range(args.repeat)]
        rows["baseline: info (python main.py info), old-form manifest"] = tuple(
            statistics.median(x) for x in zip(*whole))
        manifest.write_bytes(packed)

        index = root / "annotations" / ".index.jsonl"
        if index.exists():
            index.unlink()  # as an older MaskLoop left it: no index
            rows["info, first after an older MaskLoop (no index: rebuilt)"], again = timed(info, 1)
            assert again == text, "the rebuilt index gives other counts"
        rows["statuses (Project.statuses, all items)"], _ = timed(proj.statuses, args.repeat)

        ids = [it.id for it in proj.items]
        cursor = iter(range(n // 2, n))

        def next_item():
            item_id = ids[next(cursor)]
            img = proj.load_image(item_id)
            ann = proj.load_annotation(item_id)
            return img.shape, len(ann.instances), proj.status(item_id)
        rows["next item (image + annotation + status)"], _ = timed(next_item, max(5, args.repeat))
        annotated_id = next(it.id for it in proj.items if proj.annotation_path(it.id).exists())
        ann = proj.load_annotation(annotated_id)

        def save_item():
            ann.status = "reviewed"
            proj.save_annotation(ann)
        rows["save one item (save_annotation)"], _ = timed(save_item, args.repeat)

        def rewrite():
            proj.settings["bench"] = proj.settings.get("bench", 0) + 1  # a change, so it writes
            proj.save()
        rows["manifest rewrite (Project.save of a changed setting)"], _ = timed(rewrite, args.repeat)

    print()
    print(f"| {n:,} items: operation | wall s | CPU s |")
    print("|---|---|---|")
    for name, (wall, cpu) in rows.items():
        print(f"| {name} | {wall:.3f} | {cpu:.3f} |")
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"items": n, "manifest_mb": manifest_mb, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
