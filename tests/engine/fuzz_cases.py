"""Mutation fuzzing of MaskLoop's readers, shared by tests/engine/test_fuzz.py (a few
hundred cases per format) and benchmarks/fuzz_formats.py (thousands, for docs/reliability.md).

Each case takes a real third-party file from the fixtures (COCO, labelme, a StarDist label
map) or a project file made from them (manifest, annotation), mutates it with a seeded
random generator (structure-aware JSON edits with hostile values, or byte edits), runs the
reader MaskLoop users run (import into a fresh copy of a project, or open + info), and
classifies the outcome: "ok", the MaskLoopError subclass name, or "CRASH <type>: <msg>".
A case that ends in a MaskLoopError must leave the project byte for byte as it was.
"""
from __future__ import annotations

import copy
import hashlib
import json
import math
import random
import shutil
import traceback
from collections import Counter
from pathlib import Path
from typing import Callable, Optional

import cv2
import numpy as np

from engine.errors import MaskLoopError

#: values a hostile or broken file puts where a reader expects something else
HOSTILE = [None, True, False, 0, -1, 1, 2, 5, 255, 65536, 100000, 2 ** 31, 2 ** 63, -2 ** 63, 10 ** 30,
           0.5, -0.5, 1e300, -1e300, float("nan"), float("inf"), "", " ", "\x00", "a\x00b", "../../../tmp/x",
           "/etc/passwd", "C:\\x", "x" * 300, "\u00e9\u4e2d", [], {}, [[5]], [5], [[]], [0, 0], {"a": 1},
           [[0, 0], [1e300, 0]], [[10, 10], [10, 1e6]], {"counts": "", "size": [1, 1]},
           {"counts": [1, 2], "size": [2, 2]}, {"counts": "0Pb`n0", "size": [3, 3]}]


def digest(root: Path) -> dict:
    """Relative path -> sha256 of every file under root (the project's state)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


# --- mutations ------------------------------------------------------------------------------

def _nodes(obj):
    """(container, key) positions in a JSON tree, depth first; of a long list of numbers
    (a polygon) only the first and last few, so every structure gets its share of edits."""
    out = []
    if isinstance(obj, dict):
        for k in list(obj):
            out.append((obj, k))
            out.extend(_nodes(obj[k]))
    elif isinstance(obj, list):
        idx = range(len(obj))
        if len(obj) > 8 and all(isinstance(v, (int, float)) for v in obj[:8]):
            idx = [0, 1, 2, 3, len(obj) - 2, len(obj) - 1]
        for i in idx:
            out.append((obj, i))
            out.extend(_nodes(obj[i]))
    return out


def _tweak(v, rng: random.Random):
    """A value near the old one (numbers scaled or shifted, strings cut, lists cut)."""
    if isinstance(v, bool):
        return not v
    if isinstance(v, int):
        return rng.choice([v + 1, v - 1, -v, v * 1000, v // 2, 0])
    if isinstance(v, float):
        if not math.isfinite(v):
            return rng.choice([0.0, -1.0, 1e300])
        return rng.choice([v + 0.5, -v, v * 1e6, v / 1e6, round(v)])
    if isinstance(v, str):
        if not v:
            return "x"
        cut = rng.randrange(len(v) + 1)
        return rng.choice([v[:cut], v[cut:], v + v[:cut], v[:cut] + chr(rng.randrange(1, 0x3000)) + v[cut:]])
    if isinstance(v, list) and v:
        return rng.choice([v[:rng.randrange(len(v))], v + v[:1], list(reversed(v))])
    return rng.choice(HOSTILE)


def mutate_json(data, rng: random.Random):
    """1-3 structure-aware edits of a copy of `data`."""
    data = copy.deepcopy(data)
    for _ in range(rng.randint(1, 3)):
        nodes = _nodes(data)
        if not nodes:
            return rng.choice(HOSTILE)
        parent, key = rng.choice(nodes)
        op = rng.random()
        if op < 0.35:
            parent[key] = copy.deepcopy(rng.choice(HOSTILE))
        elif op < 0.7:
            parent[key] = _tweak(parent[key], rng)
        elif op < 0.85:
            del parent[key]
        elif isinstance(parent, list):
            parent.insert(key, copy.deepcopy(parent[key]))          # a duplicate entry
        else:
            parent[rng.choice(["id", "extra", "maskloop", "size", "counts"])] = copy.deepcopy(rng.choice(HOSTILE))
    return data


def mutate_bytes(raw: bytes, rng: random.Random) -> bytes:
    """Byte edits: flips, overwrites with 0x00/0xff, a cut, an inserted run."""
    b = bytearray(raw)
    for _ in range(rng.randint(1, 4)):
        if not b:
            break
        op = rng.random()
        i = rng.randrange(len(b))
        if op < 0.4:
            b[i] ^= 1 << rng.randrange(8)
        elif op < 0.7:
            # header fields live at the start: bias edits there
            j = rng.randrange(min(len(b), 512))
            b[j] = rng.choice([0, 0xFF, b[j] ^ 0x80])
        elif op < 0.85:
            del b[i:]
        else:
            b[i:i] = bytes([rng.randrange(256)]) * rng.randint(1, 64)
    return bytes(b)


def json_case(data, rng: random.Random) -> bytes:
    """Mostly structural edits; a tenth of the cases are byte edits of the JSON text."""
    if rng.random() < 0.1:
        return mutate_bytes(json.dumps(data).encode(), rng)
    return json.dumps(mutate_json(data, rng)).encode()


# --- the formats ------------------------------------------------------------------------------

class Campaign:
    """One format: a template project, a base file, how to mutate it and how to read it.
    `target`: where a case is written (a path, or a function called after make_case;
    relative to the project copy when read_only)."""

    def __init__(self, name: str, work: Path, template: Path, make_case: Callable[[random.Random], bytes],
                 target, read: Callable[[Path, Path], object], read_only: bool = False) -> None:
        self.name, self.work, self.template = name, work, template
        self.make_case, self.target, self.read, self.read_only = make_case, target, read, read_only
        self.template_digest = digest(template)

    def run(self, n: int, seed: int, on_case: Optional[Callable] = None) -> Counter:
        """n cases from `seed`; outcome name -> count. Problems (a crash, or a project
        changed by a failed read) are counted as "CRASH ..." / "CHANGED ..." outcomes,
        with the first traceback kept in self.problems."""
        self.problems: list[str] = []
        counts: Counter = Counter()
        proj = self.work / "case"
        fresh = False
        for k in range(n):
            rng = random.Random(f"{self.name}-{seed}-{k}")
            raw = self.make_case(rng)
            if not fresh:  # a failed case leaves the copy as it was: only a success needs a new one
                if proj.exists():
                    shutil.rmtree(proj)
                shutil.copytree(self.template, proj)
            target = self.target() if callable(self.target) else self.target
            target = proj / target if self.read_only else target
            target.write_bytes(raw)
            before = digest(proj)
            fresh = self.read_only
            try:
                self.read(proj, target)
                outcome = "ok"
            except MaskLoopError as e:
                outcome = type(e).__name__
                fresh = True
                if digest(proj) != before:
                    fresh = False
                    outcome = f"CHANGED after {type(e).__name__}"
                    self.problems.append(f"{self.name} case {k} (seed {seed}): project changed after {e}")
            except Exception as e:  # noqa: BLE001 - exactly what the fuzzing looks for
                outcome = f"CRASH {type(e).__name__}"
                fresh = False
                self.problems.append(f"{self.name} case {k} (seed {seed}): {type(e).__name__}: {e}\n"
                                     + "".join(traceback.format_exc(limit=-4)))
            if self.read_only and outcome == "ok" and digest(proj) != before:
                fresh = False
                outcome = "CHANGED by a read-only command"
                self.problems.append(f"{self.name} case {k}: a read-only command wrote to the project")
            counts[outcome] += 1
            if on_case is not None:
                on_case(k, outcome)
        return counts


def build_campaigns(fixtures: Path, work: Path) -> dict[str, Campaign]:
    """The five campaigns, set up under `work` from the fixtures folder."""
    from engine.cli.data_cmds import project_info
    from engine.formats.coco import import_coco
    from engine.formats.labelmap import import_labelmap
    from engine.formats.labelme import import_labelme
    from engine.project import Project

    work.mkdir(parents=True, exist_ok=True)
    out: dict[str, Campaign] = {}

    # COCO: polygons (labelme's COCO example) and compressed RLE (panopticapi's sample)
    lm_coco = fixtures / "labelme_examples/examples/instance_segmentation/data_dataset_coco"
    pan = fixtures / "coco_panopticapi_sample/sample_data"
    panoptic = json.loads((pan / "panoptic_coco_detection_format.json").read_text())
    # 5 annotations of each image and the crowd regions: the full 50 only cost decode time
    anns, per_image = [], Counter()
    for a in panoptic["annotations"]:
        per_image[a["image_id"]] += 1
        if a["iscrowd"] or per_image[a["image_id"]] <= 5:
            anns.append(a)
    panoptic["annotations"] = anns
    coco_bases = [(json.loads((lm_coco / "annotations.json").read_text()), lm_coco),
                  (panoptic, pan / "input_images")]
    coco_dir = work / "coco"
    coco_dir.mkdir(exist_ok=True)
    empty = Project.create(work / "empty", ["person"]).root
    chosen: dict = {}

    def coco_case(rng):
        data, images = rng.choice(coco_bases)
        chosen["images"] = images
        return json_case(data, rng)

    out["coco"] = Campaign("coco", coco_dir, empty, coco_case, coco_dir / "c.json",
                           lambda proj, f: import_coco(Project.open(proj), f, images_dir=chosen["images"]))

    # labelme: three annotated photos (polygons, group ids, __ignore__) and the primitives file
    # (rectangle, circle, line, point, linestrip, mask); images copied beside the JSON
    lm_dir = work / "labelme"
    lm_dir.mkdir(exist_ok=True)
    ann = fixtures / "labelme_examples/examples/instance_segmentation/data_annotated"
    prim = fixtures / "labelme_examples/examples/primitives"
    lm_bases = []
    for src in sorted(ann.glob("*.json")) + [prim / "primitives.json"]:
        shutil.copyfile(src.with_suffix(".jpg"), lm_dir / src.with_suffix(".jpg").name)
        lm_bases.append(json.loads(src.read_text()))
    out["labelme"] = Campaign("labelme", lm_dir, empty, lambda rng: json_case(rng.choice(lm_bases), rng),
                              lm_dir / "case.json", lambda proj, f: import_labelme(Project.open(proj), f))

    # label maps: StarDist's 512 x 512 label image (125 nuclei), as TIFF and as 16-bit PNG
    lab_dir = work / "labelmap"
    lab_dir.mkdir(exist_ok=True)
    shutil.copyfile(fixtures / "stardist_dsb2018/img2d.tif", lab_dir / "img2d.tif")
    lab_proj = Project.create(work / "lab_proj", ["nucleus"])
    lab_proj.add([lab_dir / "img2d.tif"])
    tif_raw = (fixtures / "stardist_dsb2018/mask2d.tif").read_bytes()
    import tifffile
    ok, png = cv2.imencode(".png", tifffile.imread(fixtures / "stardist_dsb2018/mask2d.tif").astype(np.uint16))
    lab_bases = [(tif_raw, ".tif"), (png.tobytes(), ".png")]
    lab_target = {"path": None}

    def lab_case(rng):
        raw, ext = rng.choice(lab_bases)
        for old in lab_dir.glob("img2d_masks.*"):
            old.unlink()
        lab_target["path"] = lab_dir / f"img2d_masks{ext}"
        return mutate_bytes(raw, rng)

    out["labelmap"] = Campaign("labelmap", lab_dir, lab_proj.root, lab_case, lambda: lab_target["path"],
                               lambda proj, f: import_labelmap(Project.open(proj), f, label="nucleus"))

    # the project's own files: a project with the labelme examples imported, then its
    # manifest or one annotation file mutated; read by open + info (read-only)
    own = Project.create(work / "own", [])
    for src in sorted(ann.glob("*.json")):
        shutil.copyfile(src, lm_dir / src.name)
    import_labelme(Project.open(own.root), lm_dir)
    for src in sorted(ann.glob("*.json")):
        (lm_dir / src.name).unlink()
    own = Project.open(own.root)
    manifest = json.loads(own.manifest_path.read_text())
    first = own.items[0].id
    annotation = json.loads(own.annotation_path(first).read_text())

    def open_info(proj, f):
        project_info(Project.open(proj))

    out["manifest"] = Campaign("manifest", work, own.root, lambda rng: json_case(manifest, rng),
                               Path("maskloop.json"), open_info, read_only=True)
    out["annotation"] = Campaign("annotation", work, own.root, lambda rng: json_case(annotation, rng),
                                 own.annotation_path(first).relative_to(own.root), open_info, read_only=True)
    return out
