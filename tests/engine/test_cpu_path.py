"""The CPU inference default: bf16 autocast + channels_last for r18fpn_lite where the CPU
computes bf16 in hardware (AVX512_BF16 / AMX), plain fp32 elsewhere, $MASKLOOP_CPU_BF16 and amp=False to turn
it off; the fast path gives the plain path's detections (benchmarks/bench_cpu_e2e.py measures
speed and trained-model outputs)."""
from __future__ import annotations

import pytest
import torch

from engine import synthetic as S
from engine.errors import MaskLoopError
from engine.model import build as B
from engine.model import device as D
from engine.model.normalize import percentile_policy
from engine.model.predictor import Predictor

POLICY = percentile_policy()


def _caps(monkeypatch, **flags):
    base = {"avx512_bf16": False, "amx_bf16": False}
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {**base, **flags})


@pytest.fixture(autouse=True)
def _no_env_switch(monkeypatch):
    monkeypatch.delenv(D.CPU_BF16_ENV, raising=False)


@pytest.mark.parametrize("flags, native", [({}, False), ({"avx512_bf16": True}, True), ({"amx_bf16": True}, True)])
def test_the_cpu_default_is_bf16_only_where_the_cpu_has_it(monkeypatch, flags, native):
    _caps(monkeypatch, **flags)
    assert D.cpu_native_bf16() is native
    cpu = torch.device("cpu")
    assert D.amp_dtype(cpu, True, "r18fpn_lite") == (torch.bfloat16 if native else None)
    assert D.amp_dtype(cpu, True, "r18fpn") is None  # failed the trained-model check: fp32
    assert D.amp_dtype(cpu, True, "r50fpn") is None and D.amp_dtype(cpu, True) is None  # not checked: fp32
    assert D.amp_dtype(cpu, False, "r18fpn_lite") is None
    assert D.amp_dtype(cpu, "bf16", "r50fpn") == torch.bfloat16  # asked for: on any arch
    assert D.amp_dtype(torch.device("mps"), True, "r18fpn_lite") is None  # the rule is the CPU's only


def test_no_capability_query_means_no_native_bf16(monkeypatch):
    monkeypatch.delattr(torch.cpu, "get_capabilities")
    assert D.cpu_native_bf16() is False
    assert D.amp_dtype(torch.device("cpu"), True, "r18fpn_lite") is None


@pytest.mark.parametrize("value, native, arch, want", [
    ("0", True, "r18fpn_lite", None), ("off", True, "r18fpn_lite", None),
    ("auto", True, "r18fpn_lite", torch.bfloat16), ("", False, "r18fpn_lite", None),
    ("1", False, "r18fpn_lite", torch.bfloat16), ("1", True, "r50fpn", torch.bfloat16)])
def test_the_env_switch(monkeypatch, value, native, arch, want):
    _caps(monkeypatch, avx512_bf16=native)
    monkeypatch.setenv(D.CPU_BF16_ENV, value)
    assert D.amp_dtype(torch.device("cpu"), True, arch) == want


def test_a_bad_env_value_is_a_clear_error(monkeypatch):
    monkeypatch.setenv(D.CPU_BF16_ENV, "maybe")
    with pytest.raises(MaskLoopError, match="MASKLOOP_CPU_BF16"):
        D.amp_dtype(torch.device("cpu"), True, "r18fpn_lite")


@pytest.mark.parametrize("native", [False, True])
def test_cpu_predictor_default_follows_the_cpu_and_the_arch(monkeypatch, tmp_path, native):
    _caps(monkeypatch, avx512_bf16=native)
    torch.manual_seed(0)
    m = B.build_model("r18fpn_lite", 2)
    p = Predictor.from_model(m, ["nucleus"], POLICY, "cpu")
    assert (p.amp_dtype == torch.bfloat16) is native and p.channels_last is native  # channels_last follows bf16
    assert (type(p.model.backbone).__name__ == "Autocast") is native
    assert p.model.transform.channels_last is native
    # from a checkpoint file: the arch it records decides
    B.save_checkpoint(tmp_path / "m.pt", m, label_names=["nucleus"], normalization=POLICY, run="r")
    assert (Predictor(tmp_path / "m.pt", "cpu").amp_dtype == torch.bfloat16) is native
    off = Predictor.from_model(m, ["nucleus"], POLICY, "cpu", amp=False)  # the per-predictor switch
    assert off.amp_dtype is None and not off.channels_last and type(off.model.backbone).__name__ != "Autocast"
    assert Predictor.from_model(m, ["nucleus"], POLICY, "cpu", amp="bf16", channels_last=False).channels_last is False
    r18 = Predictor.from_model(B.build_model("r18fpn", 2), ["nucleus"], POLICY, "cpu")
    assert r18.amp_dtype is None and not r18.channels_last  # r18fpn stays fp32 on any CPU


def _predictor(model, **kw) -> Predictor:
    p = Predictor.from_model(model, ["nucleus"], POLICY, "cpu", max_detections=50, **kw)
    p.model.rpn._pre_nms_top_n["testing"] = p.model.rpn._post_nms_top_n["testing"] = 300  # a quick test
    return p


def _raw(p: Predictor, img) -> dict:
    """The model's own outputs (boxes, scores, mask probabilities), best score first."""
    x = p._prepare(img).expand(3, -1, -1)
    out = p._forward([x])[0]
    order = torch.argsort(out["scores"], descending=True)
    return {k: v[order].float() for k, v in out.items()}


def _close(ref: dict, got: dict, top: int = 10) -> bool:
    """Each of ref's `top` best detections is in got: box within 1 px, score within 0.01
    (measured: 0.28 px, 0.0032). An untrained mask head's probabilities differ up to 0.33 per
    pixel in bf16, so masks are not compared here (bench_cpu_path.py --model: trained)."""
    for k in range(top):
        d = (got["boxes"] - ref["boxes"][k]).abs().amax(1)
        j = int(torch.argmin(d))
        if d[j] > 1 or abs(float(got["scores"][j] - ref["scores"][k])) > 0.01:
            return False
    return True


@pytest.mark.slow
def test_fast_cpu_path_gives_the_plain_paths_detections():
    """bf16 autocast + channels_last (forced on, so it runs on any CPU; without native bf16
    oneDNN emulates it) against amp=False, channels_last=False on the same model and image.
    An untrained model's mask probabilities sit near 0.5 and its scores within a few
    hundredths of each other, so thresholded masks and the boxes near the detection cap
    are coin flips under any rounding: the check is on the model's outputs for its ten
    best detections (box, score)."""
    torch.manual_seed(0)
    model = B.build_model("r18fpn", 2)
    img = S.nuclei_sample(256, seed=0).image
    plain = _raw(_predictor(model, amp=False, channels_last=False), img)
    fast_p = _predictor(model, amp="bf16", channels_last=True)
    assert fast_p.amp_dtype == torch.bfloat16 and fast_p.channels_last
    fast = _raw(fast_p, img)
    assert len(plain["boxes"]) == 50
    assert _close(plain, fast)
    # channels_last alone is the same arithmetic: the same instances
    a = _predictor(model, amp=False, channels_last=False).predict(img, score_threshold=0.0)
    b = _predictor(model, amp=False, channels_last=True).predict(img, score_threshold=0.0)
    assert [(i.bbox, i.area) for i in a] == [(i.bbox, i.area) for i in b]
    # the check can fail: another model's detections do not pass it
    torch.manual_seed(1)
    other = _raw(_predictor(B.build_model("r18fpn", 2), amp=False, channels_last=False), img)
    assert not _close(plain, other)
