"""`maskloop demo`: a sample project built from synthetic CT- and microscopy-like images.

The project holds
- images/ct_stack.tif       a 16-bit CT-like volume of a soil-rock core (ImageJ hyperstack with
                            its voxel size, 0.5 x 0.2 x 0.2 mm): 3-D rock bodies and air pores;
                            its annotated slices carry each body as one linked 3-D object
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


def _write_tiff(path: Path, arr: np.ndarray, spacing=None) -> None:
    """A TIFF (atomic); with spacing (dz, dy, dx) mm an ImageJ hyperstack that carries it."""
    import tifffile
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name("." + path.name + ".tmp")
    if spacing is None:
        tifffile.imwrite(tmp, arr, photometric="minisblack")
    else:
        tifffile.imwrite(tmp, arr, imagej=True, resolution=(1.0 / spacing[2], 1.0 / spacing[1]),
                         metadata={"spacing": spacing[0], "unit": "mm", "axes": "ZYX"})
    tmp.replace(path)


def _ensure_geometry(project, item, spacing) -> None:
    """The CT stack's voxel size, where the image reader did not take it from the file."""
    import dataclasses
    from .geometry import VoxelGeometry
    s = item.source
    if project.sources[s].geometry is None:
        project.sources[s] = dataclasses.replace(project.sources[s],
                                                 geometry=VoxelGeometry(tuple(spacing), known=("spacing",)))
        project.save()


def _store(project, item, ann: ItemAnnotation, status: str) -> None:
    a = ItemAnnotation(item.id, item.height, item.width, [i.copy() for i in ann.instances] if status != "new" else [],
                       status)
    if status != "new":
        project.save_annotation(a)


def build_demo(root, *, n_nuclei: int = 8, n_ct: int = 16, size: int = 256, reviewed: int = 4,
               ct_reviewed: Optional[int] = None, seed: int = 0, progress=None, cancel=None):
    """Create the demo project in `root` (a new or empty folder) and return it.

    n_ct slices of a CT volume, the first ct_reviewed of them (default half) reviewed with
    their rocks and pores as linked 3-D objects; `reviewed` of the n_nuclei images reviewed."""
    from .project import Project, MANIFEST
    root = Path(root)
    if (root / MANIFEST).exists():
        raise ProjectError("a MaskLoop project already exists here; choose another folder", root / MANIFEST)
    if root.exists() and any(root.iterdir()):
        raise ProjectError("the folder is not empty; choose a new or empty folder for the demo", root)
    labels = list(synthetic.CT_LABELS_WITH_PORES) + list(synthetic.NUCLEI_LABELS)
    total = n_ct + n_nuclei + 1
    report(progress, 0, total, "making images")
    ct = synthetic.ct_volume(n_ct, size, seed, pores=True) if n_ct else None
    nuc = []
    for k in range(n_nuclei):
        check(cancel)
        nuc.append(synthetic.nuclei_sample(size, seed + k, item_id=f"nuclei_{k}"))
        report(progress, k + 1, total, "making images")
    img_dir = root / "images"
    if n_ct:
        _write_tiff(img_dir / "ct_stack.tif", ct.image, ct.spacing)
    for k, s in enumerate(nuc):
        _write_tiff(img_dir / f"nuclei_{k:02d}.tif", s.image)
    project = Project.create(root, labels)
    paths = ([img_dir / "ct_stack.tif"] if n_ct else []) + [img_dir / f"nuclei_{k:02d}.tif" for k in range(n_nuclei)]
    items = project.add(paths, cancel=cancel)
    ct_items = [it for it in items if it.name.startswith("ct_stack")]
    nuc_items = [it for it in items if not it.name.startswith("ct_stack")]
    if ct_items:
        _ensure_geometry(project, ct_items[0], ct.spacing)
        ct_reviewed = len(ct_items) // 2 if ct_reviewed is None else int(ct_reviewed)
        for k, (it, ann) in enumerate(zip(ct_items, ct.annotations([it.id for it in ct_items]))):
            _store(project, it, ann, "reviewed" if k < ct_reviewed else "new")
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
