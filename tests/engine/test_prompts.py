"""Box and click prompts. Cold start (no model): GrabCut in the box on the display image,
the wand for a click."""
import numpy as np
import pytest

from engine.annotations import Instance
from engine.errors import MaskLoopError
from engine.masks import iou
from engine.prompt_classic import clip_box, grabcut_box, wand_click


def blob_image(seed=0, noise=18.0):
    """A dark textured background with a bright irregular blob and a second blob nearby."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:120, :160]
    blob = ((x - 70) / 26.0) ** 2 + ((y - 60) / 18.0) ** 2 + 0.15 * np.sin(x / 4.0) <= 1.0
    other = (x - 128) ** 2 + (y - 60) ** 2 <= 12 ** 2
    img = np.where(blob | other, 180.0, 60.0) + rng.normal(0, noise, blob.shape)
    return np.clip(img, 0, 255).astype(np.uint8), blob


def test_grabcut_cold_start_on_a_synthetic_blob():
    img, blob = blob_image()
    ys, xs = np.nonzero(blob)
    box = (xs.min() - 5, ys.min() - 5, xs.max() + 6, ys.max() + 6)   # a loose user box
    ans = grabcut_box(img, box, label="cell")
    assert ans.method == "grabcut"
    inst = ans.instance
    assert inst.source == "prompt" and inst.label == "cell"
    assert iou(inst, Instance.from_full_mask(blob, "")) >= 0.9
    # the neighbouring blob outside the box is not taken
    assert inst.x0 + inst.width <= box[2]
    # colour display images work too (RGB)
    rgb = np.repeat(img[..., None], 3, axis=2)
    assert iou(grabcut_box(rgb, box).instance, inst) > 0.95


def test_grabcut_refuses_raw_and_empty_boxes():
    img, _ = blob_image()
    with pytest.raises(MaskLoopError, match="8-bit"):
        grabcut_box(img.astype(np.uint16), (10, 10, 50, 50))
    with pytest.raises(MaskLoopError, match="empty or outside"):
        grabcut_box(img, (200, 10, 250, 50))
    assert clip_box((50, 40, 10, 5), 120, 160) == (10, 5, 50, 40)   # a drag up-left works


def test_click_prompt_without_a_model_is_the_wand():
    img, blob = blob_image(noise=8.0)
    ans = wand_click(img.astype(np.uint16) * 10, (70, 60), tolerance=400, label="cell")
    assert ans.method == "wand" and ans.instance.source == "prompt"
    assert iou(ans.instance, Instance.from_full_mask(blob, "")) >= 0.9
    assert wand_click(img, (500, 10)) is None
