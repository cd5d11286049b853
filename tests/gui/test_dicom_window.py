"""A CT series opens with the window its files recommend (WindowCenter/WindowWidth), and the
window/level panel says HU and shows the voxel size only from what the files say."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engine.project import Project
from guihelpers import open_window

pytestmark = pytest.mark.gui
pydicom = pytest.importorskip("pydicom")
from pydicom.data import get_testdata_file  # noqa: E402
from pydicom.uid import generate_uid  # noqa: E402


def _ct_series(folder: Path, window=(40, 400)) -> None:
    folder.mkdir(parents=True)
    uid = generate_uid()
    for k in range(3):
        ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
        ds.SeriesInstanceUID, ds.SOPInstanceUID = uid, generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.ImagePositionPatient = [0.0, 0.0, 5.0 * k]
        ds.WindowCenter, ds.WindowWidth = window
        ds.save_as(folder / f"{k}.dcm")


def test_ct_opens_with_the_files_window(qtbot, tmp_path):
    _ct_series(tmp_path / "ct")
    proj = Project.create(tmp_path / "p")
    proj.add([tmp_path / "ct"])
    win = open_window(qtbot, proj.root)
    try:
        ctl = win.controller
        assert ctl.window == (40.0, 400.0)  # not the percentile window of the data
        panel = win.window_panel
        assert (panel.center_box.value(), panel.width_box.value()) == (40.0, 400.0)
        text = panel.info.text()
        assert "HU" in text and "file window 40 / 400" in text
        assert "pixel 0.661 mm, slices 5 mm apart" in text
        assert "pixel 0.661 mm, slices 5 mm apart" in win.item_label.text()  # status bar
        # the display is the 40/400 window: -160 HU and below black, 240 HU and above white
        img, disp = ctl.image, ctl.display_image()
        assert np.all(disp[img <= -160] == 0) and np.all(disp[img >= 240] == 255)
        win.grab().save(str(tmp_path / "ct_window.png"))
    finally:
        win.controller.close_project(force=True)
