"""Devices and fast inference settings: device choice (CUDA, then MPS, then CPU), the
autocast dtype, autocast wrappers for the heavy parts of a Mask R-CNN, and conv+BatchNorm
fusion for CPU inference."""
from __future__ import annotations

import os
from typing import Any, Optional

import torch
from torch import nn

from ..errors import MaskLoopError

# --------------------------------------------------------------------------------------
# devices
# --------------------------------------------------------------------------------------

def resolve_device(name: Any = "auto") -> torch.device:
    """'auto' -> cuda, then mps, then cpu; 'cuda', 'cuda:1', 'mps', 'cpu' are checked."""
    if isinstance(name, torch.device):
        name = str(name)
    name = (name or "auto").strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise MaskLoopError(f"unknown device {name!r} (use auto, cpu, cuda, cuda:N or mps)", field="device") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise MaskLoopError("CUDA was asked for but is not available on this machine (use --device cpu)",
                                field="device")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise MaskLoopError(f"no CUDA device {dev.index} (this machine has {torch.cuda.device_count()})",
                                field="device")
    elif dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise MaskLoopError("MPS was asked for but is not available on this machine", field="device")
    elif dev.type != "cpu":
        raise MaskLoopError(f"unsupported device {name!r}", field="device")
    return dev


def cpu_native_bf16() -> bool:
    """True when this CPU computes bf16 in hardware (AVX512_BF16 or AMX-BF16), where oneDNN's
    bf16 convolutions are about twice as fast as fp32 (docs/benchmarks.md, the CPU path).
    Without it oneDNN emulates bf16 and is slower than fp32, so the CPU stays fp32."""
    caps = getattr(torch.cpu, "get_capabilities", None)  # torch >= 2.5
    if caps is None:
        return False
    try:
        c = caps()
    except (RuntimeError, AttributeError):
        return False
    return bool(c.get("avx512_bf16") or c.get("amx_bf16"))


#: "0"/"off" keeps CPU inference in fp32 even where bf16 is native; "1"/"on" asks for bf16
#: on any CPU and architecture (emulated, slower, without native support); unset/"auto": the rule.
CPU_BF16_ENV = "MASKLOOP_CPU_BF16"
_OFF, _ON, _AUTO = ("0", "off", "false", "no"), ("1", "on", "true", "yes"), ("", "auto")
#: Architectures whose bf16 outputs passed the trained-model check (docs/benchmarks.md, the CPU
#: path): r18fpn_lite, the CPU default. r18fpn failed it (scores moved by up to 0.2, its bf16
#: features differ more) and the others are not measured: they stay fp32 unless asked.
CPU_BF16_ARCHS = ("r18fpn_lite",)


def cpu_bf16_default(arch: Optional[str] = None) -> bool:
    """Whether CPU inference of `arch` runs bf16 autocast + channels_last by default: on a CPU
    with bf16 in hardware, for the architectures in CPU_BF16_ARCHS, unless $MASKLOOP_CPU_BF16
    says otherwise. Measured on trained models at 1024 px: 1.99x fp32 end to end on
    r18fpn_lite, the ten best instances keep box and score, acc50 moves by <= 0.003
    (docs/benchmarks.md; benchmarks/bench_cpu_e2e.py)."""
    env = os.environ.get(CPU_BF16_ENV, "").strip().lower()
    if env in _OFF:
        return False
    if env in _ON:
        return True
    if env not in _AUTO:
        raise MaskLoopError(f"${CPU_BF16_ENV} must be 0, 1 or auto, got {env!r}", field="amp")
    return arch in CPU_BF16_ARCHS and cpu_native_bf16()


def amp_dtype(device: torch.device, amp: Any = True, arch: Optional[str] = None) -> Optional[torch.dtype]:
    """The autocast dtype for inference of a model of `arch` (None: fp32).

    amp=True: bf16 on CUDA where supported, else fp16; on the CPU bf16 where
    cpu_bf16_default(arch) (native bf16, a checked architecture, $MASKLOOP_CPU_BF16), else
    fp32; fp32 on MPS.
    amp="bf16" / "fp16": that dtype on any device; amp=False: fp32.
    """
    if amp is False or amp is None:
        return None
    if amp == "bf16":
        return torch.bfloat16
    if amp == "fp16":
        return torch.float16
    if amp is True:
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        if device.type == "cpu" and cpu_bf16_default(arch):
            return torch.bfloat16
        return None
    raise ValueError(f"amp must be True, False, 'bf16' or 'fp16', got {amp!r}")


def _to_float(obj):
    if isinstance(obj, torch.Tensor):
        return obj.float() if obj.is_floating_point() and obj.dtype != torch.float32 else obj
    if isinstance(obj, dict):
        return type(obj)((k, _to_float(v)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_float(v) for v in obj)
    return obj


class Autocast(nn.Module):
    """Runs a submodule under autocast and returns fp32 outputs.

    Only the heavy convolutional parts run in reduced precision (backbone + FPN, RPN
    head, box head, mask head and predictor): box decoding, NMS and RoIAlign stay fp32.
    Autocasting the whole Mask R-CNN would decode boxes in bf16 (torchvision casts the
    anchors to the dtype of the deltas), about 8 px steps at x = 1000.
    """

    def __init__(self, module: nn.Module, device_type: str, dtype: torch.dtype):
        super().__init__()
        self.module = module
        self.device_type = device_type
        self.dtype = dtype

    def forward(self, *args, **kw):
        with torch.autocast(self.device_type, dtype=self.dtype):
            out = self.module(*args, **kw)
        return _to_float(out)


def apply_autocast(model: nn.Module, device_type: str, dtype: torch.dtype) -> None:
    """Wrap the heavy parts of a torchvision Mask R-CNN in Autocast (in place)."""
    if isinstance(getattr(model, "backbone", None), nn.Module):
        model.backbone = Autocast(model.backbone, device_type, dtype)
        model.backbone.out_channels = model.backbone.module.out_channels
    rpn = getattr(model, "rpn", None)
    if rpn is not None:
        rpn.head = Autocast(rpn.head, device_type, dtype)
    rh = getattr(model, "roi_heads", None)
    if rh is not None:
        for name in ("box_head", "mask_head", "mask_predictor"):
            sub = getattr(rh, name, None)
            if isinstance(sub, nn.Module):
                setattr(rh, name, Autocast(sub, device_type, dtype))


# --------------------------------------------------------------------------------------
# conv + BatchNorm fusion (inference only)
# --------------------------------------------------------------------------------------

def _fused(conv: nn.Conv2d, bn: nn.Module) -> nn.Conv2d:
    w = conv.weight.detach()
    mean, var = bn.running_mean.detach(), bn.running_var.detach()
    gamma, beta = bn.weight.detach(), bn.bias.detach()
    eps = getattr(bn, "eps", 1e-5)
    inv = gamma / torch.sqrt(var + eps)
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                      conv.dilation, conv.groups, bias=True, padding_mode=conv.padding_mode)
    fused.weight.data.copy_(w * inv.reshape(-1, 1, 1, 1))
    b = conv.bias.detach() if conv.bias is not None else torch.zeros_like(mean)
    fused.bias.data.copy_((b - mean) * inv + beta)
    fused.to(device=w.device, dtype=w.dtype)
    return fused


def _is_bn(m: nn.Module) -> bool:
    from torchvision.ops.misc import FrozenBatchNorm2d
    return isinstance(m, (nn.BatchNorm2d, FrozenBatchNorm2d))


def fuse_conv_bn(model: nn.Module) -> int:
    """Fold every eval-mode BatchNorm that follows a conv into the conv (in place).

    Handles torchvision's ResNet blocks (convN/bnN, downsample) and Sequentials
    (Conv2dNormActivation in the v2 heads). Returns the number of fused pairs.
    """
    n = 0
    for module in list(model.modules()):
        # named pairs: conv1/bn1, conv2/bn2, ...
        for k in range(1, 4):
            conv, bn = getattr(module, f"conv{k}", None), getattr(module, f"bn{k}", None)
            if isinstance(conv, nn.Conv2d) and bn is not None and _is_bn(bn):
                setattr(module, f"conv{k}", _fused(conv, bn))
                setattr(module, f"bn{k}", nn.Identity())
                n += 1
        if isinstance(module, nn.Sequential):
            children = list(module._modules.items())
            for (ka, a), (kb, b) in zip(children, children[1:]):
                if isinstance(a, nn.Conv2d) and _is_bn(b):
                    module._modules[ka] = _fused(a, b)
                    module._modules[kb] = nn.Identity()
                    n += 1
    return n


def cuda_device_names() -> list[str]:
    """Names of the CUDA GPUs ([] when there is none or CUDA cannot be initialised)."""
    try:
        if not torch.cuda.is_available():
            return []
        return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except (RuntimeError, AssertionError):  # a broken driver: no GPU to offer
        return []
