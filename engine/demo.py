"""`maskloop demo`: a sample project built from synthetic CT- and microscopy-like images.

The project holds
- images/ct_stack.tif       a 16-bit stack of CT-like slices (rock grains, some pores)
- images/nuclei_NN.tif      16-bit fluorescence-like images of nuclei
and labels rock, pore, nucleus. A few items of each kind are "reviewed" with their exact
ground truth (ready to train on); the others are "new" (ready to segment). Everything
is seeded: the same arguments give the same project. No torch is needed.

`synthetic_project` makes a smaller, single-kind project for tests and benchmarks.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from . import synthetic
from .annotations import ItemAnnotation
from .errors import ProjectError
from .jobs import check, report


def _write_tiff(path: Path, arr: np.ndarray) -> None:
    import tifffile
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name("." + path.name + ".tmp")
    tifffile.imwrite(tmp, arr, photometric="minisblack")
    tmp.replace(path)


def _store(project, item, ann: ItemAnnotation, status: str) -> None:
    a = ItemAnnotation(item.id, item.height, item.width, [i.copy() for i in ann.instances] if status != "new" else [],
                       status)
    if status != "new":
        project.save_annotation(a)


def build_demo(root, *, n_nuclei: int = 8, n_ct: int = 6, size: int = 256, reviewed: int = 4,
               seed: int = 0, progress=None, cancel=None):
    """Create the demo project in `root` (a new or empty folder) and return it."""
    from .project import Project, MANIFEST
    root = Path(root)
    if (root / MANIFEST).exists():
        raise ProjectError("a MaskLoop project already exists here; choose another folder", root / MANIFEST)
    if root.exists() and any(root.iterdir()):
        raise ProjectError("the folder is not empty; choose a new or empty folder for the demo", root)
    labels = list(synthetic.CT_LABELS_WITH_PORES) + list(synthetic.NUCLEI_LABELS)
    total = n_ct + n_nuclei + 1
    report(progress, 0, total, "making images")
    ct = [synthetic.ct_sample(size, seed + z, pores=True, item_id=f"ct_{z}") for z in range(n_ct)]
    nuc = []
    for k in range(n_nuclei):
        check(cancel)
        nuc.append(synthetic.nuclei_sample(size, seed + k, item_id=f"nuclei_{k}"))
        report(progress, k + 1, total, "making images")
    img_dir = root / "images"
    if n_ct:
        _write_tiff(img_dir / "ct_stack.tif", np.stack([s.image for s in ct]))
    for k, s in enumerate(nuc):
        _write_tiff(img_dir / f"nuclei_{k:02d}.tif", s.image)
    project = Project.create(root, labels)
    paths = ([img_dir / "ct_stack.tif"] if n_ct else []) + [img_dir / f"nuclei_{k:02d}.tif" for k in range(n_nuclei)]
    items = project.add(paths, cancel=cancel)
    ct_items = [it for it in items if it.name.startswith("ct_stack")]
    nuc_items = [it for it in items if not it.name.startswith("ct_stack")]
    for k, (it, s) in enumerate(zip(ct_items, ct)):
        _store(project, it, s.annotation, "reviewed" if k < reviewed else "new")
    for k, (it, s) in enumerate(zip(nuc_items, nuc)):
        _store(project, it, s.annotation, "reviewed" if k < reviewed else "new")
    report(progress, total, total, "done")
    return project


def synthetic_project(root, kind: str = "nuclei", n: int = 8, size=160, *, seed: int = 0,
                      reviewed: Optional[int] = None, labels: Optional[Sequence[str]] = None, **kw):
    """A project of `n` synthetic images of one kind (16-bit TIFFs in root/images);
    the first `reviewed` items (default all) carry their ground truth as reviewed."""
    from .project import Project
    root = Path(root)
    samples = synthetic.samples(kind, n, size, seed, **kw)
    names = list(labels) if labels is not None else list(samples[0].labels if samples else synthetic.labels_for(kind))
    for s in samples:
        for inst in s.instances:
            if inst.label not in names:
                names.append(inst.label)
    paths = []
    for k, s in enumerate(samples):
        p = root / "images" / f"{kind}_{k:03d}.tif"
        _write_tiff(p, s.image)
        paths.append(p)
    project = Project.create(root, names)
    items = project.add(paths)
    reviewed = n if reviewed is None else int(reviewed)
    for k, (it, s) in enumerate(zip(items, samples)):
        _store(project, it, s.annotation, "reviewed" if k < reviewed else "new")
    return project
