"""Propagation through a stack (engine.propagate) answered by GrabCut: the synthetic
spheres of the prompts issue."""
import numpy as np
import pytest

from engine.annotations import Instance
from engine.errors import CancelledError
from engine.jobs import CancelToken
from engine.masks import iou
from engine.prompt_classic import grabcut_answerer as _grabcut_answerer
from engine.prompt_classic import wand_click
from engine.propagate import PropagationRule, grown_box, propagate, propagate_object


def sphere_stack(Z=41, H=96, W=96, R=16.0, noise=20.0, seed=0):
    """A bright sphere (the object) and a smaller neighbour on a noisy background."""
    rng = np.random.default_rng(seed)
    z, y, x = np.mgrid[:Z, :H, :W]
    truth = (z - Z // 2) ** 2 + (y - 48) ** 2 + (x - 44) ** 2 <= R * R
    other = (z - Z // 2 - 3) ** 2 + (y - 18) ** 2 + (x - 80) ** 2 <= 11 ** 2
    img = np.where(truth | other, 170.0, 70.0) + rng.normal(0, noise, truth.shape)
    return np.clip(img, 0, 255).astype(np.uint8), truth


def grabcut_answerer(stack):
    return _grabcut_answerer(lambda k: stack[k])


def test_one_click_on_the_middle_slice_propagates_to_the_ends_of_the_sphere():
    stack, truth = sphere_stack()
    mid = stack.shape[0] // 2
    start = wand_click(stack[mid], (44, 48), tolerance=60).instance
    start.label = "grain"
    rule = PropagationRule()
    res = propagate_object(grabcut_answerer(stack), start, mid, stack.shape[0], stack.shape[1:], rule=rule)
    got = {k: inst for k, inst in res}
    assert mid not in got and len(got) == len(res)
    assert [k for k, _ in res] == sorted(got)
    present = [k for k in range(stack.shape[0]) if truth[k].sum() >= rule.min_area]
    for k in present:
        if k == mid:
            continue
        assert k in got, f"slice {k} not reached"
        score = iou(got[k], Instance.from_full_mask(truth[k], ""))
        assert score >= 0.9, (k, score)
    # it stopped at the ends: nothing on slices without (enough of) the sphere
    assert set(got) <= set(present)
    assert {i.object_id for i in got.values()} == {start.object_id} and start.object_id
    assert all(i.source == "prompt" and i.label == "grain" for i in got.values())


def test_stops_when_the_overlap_with_the_previous_slice_drops():
    shape = (64, 64)
    first = Instance(mask=np.ones((10, 10), bool), x0=20, y0=20)
    calls = []

    def drifting(k, box):  # from slice 3 on the answer jumps 8 px sideways
        calls.append(k)
        shift = 0 if k < 3 else 8
        return Instance(mask=np.ones((10, 10), bool), x0=20 + shift, y0=20)

    res = propagate(drifting, first, 0, 10, shape, rule=PropagationRule(min_iou=0.3))
    assert [k for k, _ in res] == [1, 2]          # slice 3's answer overlaps slice 2's by 0.11
    assert calls == [1, 2, 3]
    assert propagate(lambda k, b: None, first, 0, 10, shape) == []    # vanished
    tiny = lambda k, b: Instance(mask=np.ones((1, 2), bool), x0=20, y0=20)
    assert propagate(tiny, first, 0, 10, shape) == []
    # the end of the stack stops it; direction -1 walks down
    same = lambda k, b: first.copy()
    assert [k for k, _ in propagate(same, first, 7, 10, shape)] == [8, 9]
    assert [k for k, _ in propagate(same, first, 2, 10, shape, direction=-1)] == [1, 0]
    assert len(propagate(same, first, 0, 10, shape, max_slices=3)) == 3


def test_prompt_box_is_the_previous_mask_grown_and_cancel_stops():
    shape = (50, 60)
    inst = Instance(mask=np.ones((20, 10), bool), x0=2, y0=10)
    assert grown_box(inst, shape, PropagationRule(margin=0.15, min_margin=3)) == (0, 7, 15, 33)
    seen = []
    res = propagate(lambda k, b: seen.append(b) or inst.copy(), inst, 0, 3, shape)
    assert seen[0] == grown_box(inst, shape) and len(res) == 2
    tok = CancelToken()
    tok.cancel()
    with pytest.raises(CancelledError):
        propagate(lambda k, b: inst.copy(), inst, 0, 3, shape, cancel=tok)
    with pytest.raises(ValueError):
        propagate(lambda k, b: None, inst, 0, 3, shape, direction=2)
