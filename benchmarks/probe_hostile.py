"""Re-run the hostile-input items of the reliability probe (issue 14, defects 4, 8, 9) with
the real command line, and print a Markdown table for docs/reliability.md: the exit status,
the first line of the error, the wall time and whether the project was left unchanged.

    python benchmarks/probe_hostile.py [--out table.md]

Every case runs `main.py` in a child process (as a user would), with a 300 s limit.
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
PNG_SIG = b"\x89PNG\r\n\x1a\n"


def png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return PNG_SIG + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode() + p.read_bytes())
    return h.hexdigest()


def main_py(*args, env=None) -> tuple[int, str, float]:
    t0 = time.monotonic()
    try:
        r = subprocess.run([sys.executable, str(REPO / "main.py"), *map(str, args)], capture_output=True,
                           text=True, timeout=300, env={**os.environ, **(env or {})})
        code, err = r.returncode, (r.stderr.strip().splitlines() or [""])
        first = next((l for l in err if "error" in l.lower()), err[-1])
    except subprocess.TimeoutExpired:
        code, first = "timeout", "(killed after 300 s)"
    return code, first, time.monotonic() - t0


def labelme_file(folder: Path, name: str, shapes, image="a.png", **extra) -> Path:
    p = folder / f"{name}.json"
    p.write_text(json.dumps({"shapes": shapes, "imagePath": image, **extra}))
    return p


def coco_file(folder: Path, name: str, images, annotations=()) -> Path:
    p = folder / f"{name}.json"
    p.write_text(json.dumps({"images": images, "annotations": list(annotations),
                             "categories": [{"id": 1, "name": "cell"}]}))
    return p


def cases(tmp: Path):
    """(description, before-the-fix text from the issue, argv, project) per probe item."""
    data = tmp / "data"
    data.mkdir()
    cv2.imwrite(str(data / "a.png"), np.zeros((64, 64), np.uint8))
    (data / "huge.png").write_bytes(png_header_only(100000, 100000))
    proj = tmp / "proj"
    subprocess.run([sys.executable, str(REPO / "main.py"), "new", proj, "--labels", "cell"], check=True,
                   capture_output=True)
    subprocess.run([sys.executable, str(REPO / "main.py"), "add", proj, data / "a.png"], check=True,
                   capture_output=True)
    poly = [[10, 10, 50, 10, 50, 50]]
    tri = [[10, 10], [50, 10], [50, 50]]
    ds = tmp / "ds"
    ds.mkdir()
    for f in ("a.png", "huge.png"):
        (ds / f).write_bytes((data / f).read_bytes())
    yield ("COCO image header 100000² px", "SIGSEGV in pycocotools / 9 GB allocation",
           ["import", proj, coco_file(ds, "huge", [{"id": 1, "file_name": "huge.png", "height": 100000,
                                                     "width": 100000}],
                                      [{"id": 1, "image_id": 1, "category_id": 1, "segmentation": poly}]),
            "--format", "coco"], proj)
    yield ("labelme image header 100000² px", "9 GB allocation",
           ["import", proj, labelme_file(ds, "huge", [{"label": "cell", "points": tri, "shape_type": "polygon"}],
                                         "huge.png"), "--format", "labelme"], proj)
    m = {"label": "cell", "points": [[2, 2], [5, 5]], "shape_type": "mask"}
    yield ('labelme mask ""', "uncaught cv2.error",
           ["import", proj, labelme_file(ds, "empty_mask", [dict(m, mask="")]), "--format", "labelme"], proj)
    bomb = base64.b64encode(png_header_only(60000, 60000)).decode()
    yield ("labelme mask PNG bomb (60000² header)", "uncaught cv2.error",
           ["import", proj, labelme_file(ds, "bomb", [dict(m, mask=bomb)]), "--format", "labelme"], proj)
    yield ("circle rim at 1e300", "OverflowError traceback",
           ["import", proj, labelme_file(ds, "rim", [{"label": "cell", "points": [[10, 10], [1e300, 10]],
                                                      "shape_type": "circle"}]), "--format", "labelme"], proj)
    yield ("circle radius 1e6", "50 s per circle",
           ["import", proj, labelme_file(ds, "radius", [{"label": "cell", "points": [[10, 10], [10, 1e6]],
                                                         "shape_type": "circle"}]), "--format", "labelme"], proj)
    yield ("NUL byte in a COCO file_name", "ValueError traceback",
           ["import", proj, coco_file(ds, "nul", [{"id": 1, "file_name": "a\x00.png", "height": 64, "width": 64}]),
            "--format", "coco"], proj)
    yield ("COCO polygon [[5]]", "ValueError traceback",
           ["import", proj, coco_file(ds, "poly5", [{"id": 1, "file_name": "a.png", "height": 64, "width": 64}],
                                      [{"id": 1, "image_id": 1, "category_id": 1, "segmentation": [[5]]}]),
            "--format", "coco"], proj)
    yield ("labelme empty label name", "error names no file or shape",
           ["import", proj, labelme_file(ds, "nolabel", [{"label": "", "points": tri, "shape_type": "polygon"}]),
            "--format", "labelme"], proj)
    yield ('labelme label " cell2 " (padded)', "label error names the project's file",
           ["import", proj, labelme_file(ds, "padded", [{"label": " cell2 ", "points": tri,
                                                         "shape_type": "polygon"}]), "--format", "labelme"], proj)
    ck = tmp / "random.pt"
    ck.write_bytes(np.random.default_rng(0).bytes(4096))
    yield ("random-bytes checkpoint", 'called "Python objects"',
           ["segment", proj, "--model", ck], proj)
    yield ("segment --tile 1", "traceback", ["segment", proj, "--tile", "1"], proj)
    yield ("segment --tile 64 --overlap 63", "accepted, 37k tiles for 256²",
           ["segment", proj, "--tile", "64", "--overlap", "63"], proj)
    # the project's own annotation file with a broken mask: info and export
    bad = tmp / "badproj"
    subprocess.run([sys.executable, str(REPO / "main.py"), "new", bad, "--labels", "cell"], check=True,
                   capture_output=True)
    subprocess.run([sys.executable, str(REPO / "main.py"), "add", bad, data / "a.png"], check=True,
                   capture_output=True)
    (bad / "annotations").mkdir(exist_ok=True)
    (bad / "annotations" / "a.json").write_text(json.dumps({
        "shapes": [dict(m, mask="")], "imageHeight": 64, "imageWidth": 64,
        "maskloop": {"item": "a", "status": "reviewed"}}))
    yield ("project annotation with mask \"\": info", "crash (cv2.error)", ["info", bad], bad)
    yield ("project annotation with mask \"\": export", "crash (cv2.error)",
           ["export", bad, tmp / "out.json", "--format", "coco"], bad)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=None, help="also write the table to this file")
    args = ap.parse_args()
    rows = ["| case | before (issue 14) | exit | message (first line) | s | project unchanged |",
            "|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as t:
        for what, before, argv, proj in cases(Path(t)):
            d0 = digest(proj)
            code, msg, secs = main_py(*argv)
            same = "yes" if digest(proj) == d0 else ("no: imported" if code == 0 else "NO")
            msg = msg.replace(t, "…").replace("|", "\\|")
            if len(msg) > 150:
                msg = msg[:147] + "..."
            rows.append(f"| {what} | {before} | {code} | {msg} | {secs:.1f} | {same} |")
            print(rows[-1], flush=True)
    if args.out:
        Path(args.out).write_text("\n".join(rows) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
