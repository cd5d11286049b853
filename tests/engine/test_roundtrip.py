"""Done means: label map -> project -> COCO -> project -> labelme -> project gives identical
masks, pixel for pixel, for every instance of the nuclei fixture (and the 16-bit image too)."""
from __future__ import annotations

import numpy as np
import pytest
import tifffile

from engine.formats.coco import export_coco, import_coco
from engine.formats.labelmap import import_labelmap
from engine.formats.labelme import export_labelme, import_labelme
from engine.project import Project


@pytest.mark.parametrize("copy_images", [True, False])
def test_nuclei_round_trip_is_lossless(fixtures_dir, tmp_path, copy_images):
    img_path = fixtures_dir / "stardist_dsb2018/img2d.tif"
    lab = tifffile.imread(fixtures_dir / "stardist_dsb2018/mask2d.tif")
    img = tifffile.imread(img_path)
    values = [int(v) for v in np.unique(lab) if v]
    assert len(values) == 125

    # label map -> project (the label map named after its image, in a scratch folder)
    maps = tmp_path / "maps"
    maps.mkdir()
    (maps / "img2d.tif").write_bytes((fixtures_dir / "stardist_dsb2018/mask2d.tif").read_bytes())
    p1 = Project.create(tmp_path / "p1", ["nucleus"])
    p1.add([img_path])
    assert import_labelmap(p1, maps / "img2d.tif").instances == 125

    # project -> COCO -> a second project
    if copy_images:
        export_coco(p1, tmp_path / "coco", copy_images=True)
        p2 = Project.create(tmp_path / "p2")
    else:
        # without copies file_name leads outside the export folder (to the fixture), which an
        # import refuses to open; a project that has the image matches it by item id instead
        export_coco(p1, tmp_path / "coco")
        p2 = Project.create(tmp_path / "p2")
        p2.add([img_path])
    rep = import_coco(p2, tmp_path / "coco" / "annotations.json")
    assert rep.instances == 125

    # project -> labelme -> a third project
    export_labelme(p2, tmp_path / "labelme", copy_images=copy_images)
    p3 = Project.create(tmp_path / "p3")
    if not copy_images:
        p3.add([img_path])
    rep = import_labelme(p3, tmp_path / "labelme")
    assert rep.instances == 125

    for proj in (p1, p2, p3):
        proj = Project.open(proj.root)
        (it,) = proj.items
        assert np.array_equal(proj.load_image(it.id), img)          # 16-bit values kept
        ann = proj.load_annotation(it.id)
        assert ann.status == "reviewed" and ann.shape == lab.shape
        assert len(ann.instances) == 125
        got = sorted((tuple(np.flatnonzero(i.full_mask(lab.shape))) for i in ann.instances))
        want = sorted(tuple(np.flatnonzero(lab == v)) for v in values)
        assert got == want
        assert {i.label for i in ann.instances} == {"nucleus"}
        # instance identities survive the trip
        if proj is not p1:
            ids1 = [i.id for i in Project.open(p1.root).load_annotation(it.id).instances]
            assert [i.id for i in ann.instances] == ids1
