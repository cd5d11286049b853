"""Mask R-CNN architectures on torchvision, base weights, and MaskLoop checkpoints.

Architectures (`ARCHS`): r50fpn (torchvision's maskrcnn_resnet50_fpn), r50fpn_v2,
r101fpn, x101fpn (ResNeXt-101 32x8d FPN) and r18fpn (light, for CPUs). Every model
gets a `NativeTransform`: images run at their native resolution (or a fixed `scale`),
never silently resized to 800 px, with image_mean/std applied to the [0, 1] output of
engine.model.normalize.normalize.

Bases: "scratch" (random init, trainable BatchNorm or GroupNorm), "coco" (torchvision's
COCO Mask R-CNN weights from the torch hub cache, or downloaded when that works; a clear
CheckpointError otherwise, never a hang), "imagenet" (backbone weights only), or a
MaskLoop checkpoint (path or dict). Class heads are replaced when the classes differ.

Checkpoints are dicts of tensors and plain data, written atomically, read with
torch.load(weights_only=True) and validated: a checkpoint is untrusted input.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import math
import numbers
import os
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
import torchvision
from torchvision.models import resnet as tv_resnet
from torchvision.models.detection import mask_rcnn as tv_mask_rcnn
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
from torchvision.models.detection.faster_rcnn import FastRCNNConvFCHead, FastRCNNPredictor, RPNHead
from torchvision.models.detection.mask_rcnn import MaskRCNN, MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.transform import GeneralizedRCNNTransform, resize_boxes
from torchvision.ops import misc as misc_nn_ops

from ..errors import CheckpointError
from ..fsutil import _fsync_dir, atomic_writer
from .normalize import PolicyError, validate_policy

CHECKPOINT_FORMAT = "maskloop-checkpoint"
CHECKPOINT_VERSION = 1

ARCHS = ("r50fpn", "r50fpn_v2", "r101fpn", "x101fpn", "r18fpn")
ARCH_HELP = {
    "r50fpn": "ResNet-50-FPN (torchvision maskrcnn_resnet50_fpn)",
    "r50fpn_v2": "ResNet-50-FPN v2 (conv heads with norm, torchvision maskrcnn_resnet50_fpn_v2)",
    "r101fpn": "ResNet-101-FPN",
    "x101fpn": "ResNeXt-101 32x8d FPN (the paper's strongest backbone)",
    "r18fpn": "ResNet-18-FPN (light, for CPUs)",
}
_BACKBONES = {
    "r50fpn": ("resnet50", "ResNet50_Weights"),
    "r50fpn_v2": ("resnet50", "ResNet50_Weights"),
    "r101fpn": ("resnet101", "ResNet101_Weights"),
    "x101fpn": ("resnext101_32x8d", "ResNeXt101_32X8D_Weights"),
    "r18fpn": ("resnet18", "ResNet18_Weights"),
}
_COCO = {
    "r50fpn": "MaskRCNN_ResNet50_FPN_Weights",
    "r50fpn_v2": "MaskRCNN_ResNet50_FPN_V2_Weights",
}
NORMS = ("bn", "gn", "frozen")

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
SCRATCH_MEAN = [0.5, 0.5, 0.5]
SCRATCH_STD = [0.25, 0.25, 0.25]

TORCHVISION_ANCHORS = [32, 64, 128, 256, 512]
SMALL_ANCHORS = [16, 32, 64, 128, 256]  # native-resolution nuclei and grains are small

# Keys of the class-specific layers: replaced (freshly initialised) when the classes differ.
HEAD_KEYS = (
    "roi_heads.box_predictor.cls_score.",
    "roi_heads.box_predictor.bbox_pred.",
    "roi_heads.mask_predictor.mask_fcn_logits.",
)

# Extra MaskRCNN keyword arguments that may go into a model config (plain numbers only).
_MASKRCNN_KW = (
    "rpn_pre_nms_top_n_train", "rpn_pre_nms_top_n_test", "rpn_post_nms_top_n_train",
    "rpn_post_nms_top_n_test", "rpn_nms_thresh", "rpn_fg_iou_thresh", "rpn_bg_iou_thresh",
    "rpn_batch_size_per_image", "rpn_positive_fraction", "rpn_score_thresh", "box_score_thresh",
    "box_nms_thresh", "box_fg_iou_thresh", "box_bg_iou_thresh", "box_batch_size_per_image",
    "box_positive_fraction",
)

DOWNLOAD_STALL_S = 20.0

# RPN proposals kept at test time per allowed detection. The RPN's NMS (IoU 0.7) leaves
# several proposals on each object, so as many proposals as detections finds only ~70 % of
# 800 touching nuclei in a 1024 px tile; 2x finds ~83 % (benchmarks/bench_dense_inference.py)
# for ~17 % more CPU time on a sparse image.
PROPOSALS_PER_DETECTION = 2


# --------------------------------------------------------------------------------------
# transform: native resolution
# --------------------------------------------------------------------------------------

class NativeTransform(GeneralizedRCNNTransform):
    """GeneralizedRCNNTransform that keeps the image's native resolution.

    - `scale` (default 1.0): a fixed resize factor (e.g. 2.0 for very small objects);
      1.0 means no interpolation at all, in training and inference.
    - `min_size`/`max_size` given: torchvision's classic resizing (an explicit opt-in).
    - `paste_full_masks` (default True, torchvision behaviour): postprocess pastes each
      mask into a full-image (N, 1, H, W) float tensor. The Predictor sets it False and
      gets the raw (N, 1, M, M) "mask_probs" plus boxes instead, pasting each mask into
      its box only (1000 full-size masks of a 1024 px tile would be 4 GB).
    - `channels_last`: the batched image tensor is made channels_last (CUDA inference).
    """

    def __init__(self, image_mean, image_std, *, scale: float = 1.0, min_size: Optional[int] = None,
                 max_size: Optional[int] = None, size_divisible: int = 32):
        native = min_size is None
        super().__init__(min_size if min_size else 800, max_size if max_size else 1333,
                         list(image_mean), list(image_std), size_divisible=size_divisible)
        self.native = native
        self.scale = float(scale)
        self.paste_full_masks = True
        self.channels_last = False

    def resize(self, image, target=None):
        if self.native and self.scale == 1.0:
            return image, target
        if target is not None and hasattr(target.get("masks"), "full"):
            target = {**target, "masks": target["masks"].full()}  # PackedMasks: resampled as full planes
        if not self.native:
            return super().resize(image, target)
        h, w = image.shape[-2:]
        nh, nw = max(1, int(round(h * self.scale))), max(1, int(round(w * self.scale)))
        image = F.interpolate(image[None], size=(nh, nw), mode="bilinear", align_corners=False)[0]
        if target is None:
            return image, target
        target = dict(target)
        if "boxes" in target:
            target["boxes"] = resize_boxes(target["boxes"], (h, w), (nh, nw))
        if "masks" in target:
            m = target["masks"]
            target["masks"] = F.interpolate(m[:, None].float(), size=(nh, nw))[:, 0].to(m.dtype)
        return image, target

    def batch_images(self, images, size_divisible: int = 32):
        batched = super().batch_images(images, size_divisible)
        if self.channels_last:
            batched = batched.contiguous(memory_format=torch.channels_last)
        return batched

    def postprocess(self, result, image_shapes, original_image_sizes):
        if self.training or self.paste_full_masks:
            return super().postprocess(result, image_shapes, original_image_sizes)
        for pred, im_s, o_im_s in zip(result, image_shapes, original_image_sizes):
            pred["boxes"] = resize_boxes(pred["boxes"], im_s, o_im_s)
            if "masks" in pred:
                pred["mask_probs"] = pred.pop("masks")
        return result

    def __repr__(self) -> str:
        if self.native:
            how = "native resolution" if self.scale == 1.0 else f"fixed scale {self.scale:g}"
        else:
            how = f"min_size={self.min_size}, max_size={self.max_size}"
        return (f"{self.__class__.__name__}({how}, mean={self.image_mean}, std={self.image_std}, "
                f"size_divisible={self.size_divisible})")


# --------------------------------------------------------------------------------------
# construction
# --------------------------------------------------------------------------------------

def _gn(channels: int) -> nn.GroupNorm:
    groups = 32 if channels % 32 == 0 else (16 if channels % 16 == 0 else 1)
    return nn.GroupNorm(groups, channels)


def _norm_layer(norm: str) -> Callable[..., nn.Module]:
    if norm == "bn":
        return nn.BatchNorm2d
    if norm == "gn":
        return _gn
    if norm == "frozen":
        return misc_nn_ops.FrozenBatchNorm2d
    raise ValueError(f"unknown norm {norm!r} (known: {', '.join(NORMS)})")


def default_config(arch: str = "r50fpn", num_classes: int = 2, *, base: str = "scratch",
                   norm: Optional[str] = None, trainable_layers: Optional[int] = None,
                   scale: float = 1.0, min_size: Optional[int] = None, max_size: Optional[int] = None,
                   detections_per_img: int = 1000, anchor_sizes: Optional[Iterable[int]] = None,
                   image_mean: Optional[Iterable[float]] = None, image_std: Optional[Iterable[float]] = None,
                   **maskrcnn_kwargs) -> dict:
    """The plain-data description of an architecture that `construct` builds (and a
    checkpoint stores under "model_config")."""
    if arch not in ARCHS:
        raise ValueError(f"unknown architecture {arch!r} (known: {', '.join(ARCHS)})")
    num_classes = int(num_classes)
    if num_classes < 2:
        raise ValueError(f"num_classes counts the background and must be >= 2, got {num_classes}")
    pretrained = base != "scratch"
    if norm is None:
        norm = "frozen" if pretrained else "bn"
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r} (known: {', '.join(NORMS)})")
    if trainable_layers is None:
        trainable_layers = 3 if pretrained else 5
    if not 0 <= int(trainable_layers) <= 5:
        raise ValueError(f"trainable_layers must be in 0..5, got {trainable_layers}")
    if anchor_sizes is None:
        anchor_sizes = TORCHVISION_ANCHORS if base == "coco" else SMALL_ANCHORS
    anchor_sizes = [int(a) for a in anchor_sizes]
    if len(anchor_sizes) != 5:
        raise ValueError(f"anchor_sizes needs 5 sizes (one per FPN level), got {anchor_sizes}")
    if image_mean is None:
        image_mean = SCRATCH_MEAN if base == "scratch" else IMAGENET_MEAN
    if image_std is None:
        image_std = SCRATCH_STD if base == "scratch" else IMAGENET_STD
    if not (scale > 0 and math.isfinite(scale)):
        raise ValueError(f"scale must be > 0, got {scale}")
    detections_per_img = int(detections_per_img)
    if detections_per_img < 1:
        raise ValueError("detections_per_img must be >= 1")
    kw = {}
    for k, v in maskrcnn_kwargs.items():
        if k not in _MASKRCNN_KW:
            raise ValueError(f"unsupported model option {k!r}")
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            raise ValueError(f"model option {k} must be a number, got {v!r}")
        kw[k] = v
    # enough proposals at test time for `detections_per_img` objects (dense nuclei, grains)
    kw.setdefault("rpn_pre_nms_top_n_test", max(1000, PROPOSALS_PER_DETECTION * detections_per_img))
    kw.setdefault("rpn_post_nms_top_n_test", max(1000, PROPOSALS_PER_DETECTION * detections_per_img))
    return {
        "arch": arch,
        "num_classes": num_classes,
        "norm": norm,
        "trainable_layers": int(trainable_layers),
        "scale": float(scale),
        "min_size": int(min_size) if min_size else None,
        "max_size": int(max_size) if max_size else None,
        "detections_per_img": detections_per_img,
        "anchor_sizes": anchor_sizes,
        "image_mean": [float(v) for v in image_mean],
        "image_std": [float(v) for v in image_std],
        "maskrcnn": kw,
        "base": base if isinstance(base, str) and base in ("scratch", "coco", "imagenet") else "checkpoint",
    }


def construct(config: dict) -> MaskRCNN:
    """Build the architecture a config describes, with random weights (no download)."""
    try:
        arch = config["arch"]
        num_classes = int(config["num_classes"])
        norm = config["norm"]
        trainable = int(config["trainable_layers"])
        anchors = tuple((int(a),) for a in config["anchor_sizes"])
        kw = dict(config.get("maskrcnn") or {})
        mean, std = list(config["image_mean"]), list(config["image_std"])
        scale = float(config.get("scale", 1.0))
        min_size, max_size = config.get("min_size"), config.get("max_size")
        dets = int(config["detections_per_img"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"malformed model config ({e!r})", field="model_config") from None
    if arch not in ARCHS:
        raise CheckpointError(f"unknown architecture {arch!r} (known: {', '.join(ARCHS)})", field="arch")
    norm_layer = _norm_layer(norm)
    body_name, _ = _BACKBONES[arch]
    body = getattr(tv_resnet, body_name)(weights=None, norm_layer=norm_layer)
    anchor_gen = AnchorGenerator(anchors, ((0.5, 1.0, 2.0),) * len(anchors))
    if arch == "r50fpn_v2":
        head_norm = nn.BatchNorm2d if norm in ("bn", "frozen") else _gn
        backbone = _resnet_fpn_extractor(body, trainable, norm_layer=head_norm)
        rpn_head = RPNHead(backbone.out_channels, anchor_gen.num_anchors_per_location()[0], conv_depth=2)
        box_head = FastRCNNConvFCHead((backbone.out_channels, 7, 7), [256, 256, 256, 256], [1024],
                                      norm_layer=head_norm)
        mask_head = MaskRCNNHeads(backbone.out_channels, [256, 256, 256, 256], 1, norm_layer=head_norm)
        model = MaskRCNN(backbone, num_classes=num_classes, rpn_anchor_generator=anchor_gen,
                         rpn_head=rpn_head, box_head=box_head, mask_head=mask_head,
                         box_detections_per_img=dets, **kw)
    else:
        backbone = _resnet_fpn_extractor(body, trainable)
        rpn_head = RPNHead(backbone.out_channels, anchor_gen.num_anchors_per_location()[0])
        model = MaskRCNN(backbone, num_classes=num_classes, rpn_anchor_generator=anchor_gen,
                         rpn_head=rpn_head, box_detections_per_img=dets, **kw)
    model.transform = NativeTransform(mean, std, scale=scale, min_size=min_size, max_size=max_size)
    model.maskloop_config = dict(config)
    return model


def set_detections_per_img(model: nn.Module, n: int) -> None:
    """Change the per-image detection limit of a built model and raise its proposal budget
    to PROPOSALS_PER_DETECTION x the limit (never lowered)."""
    m = getattr(model, "module", model)
    n = int(n)
    m.roi_heads.detections_per_img = n
    rpn = m.rpn
    rpn._pre_nms_top_n["testing"] = max(rpn._pre_nms_top_n["testing"], PROPOSALS_PER_DETECTION * n)
    rpn._post_nms_top_n["testing"] = max(rpn._post_nms_top_n["testing"], PROPOSALS_PER_DETECTION * n)


def replace_heads(model: MaskRCNN, num_classes: int) -> None:
    """Fresh class-specific box and mask predictors for `num_classes` (incl. background)."""
    rh = model.roi_heads
    in_features = rh.box_predictor.cls_score.in_features
    rh.box_predictor = FastRCNNPredictor(in_features, num_classes)
    mp = rh.mask_predictor
    rh.mask_predictor = MaskRCNNPredictor(mp.conv5_mask.in_channels, mp.conv5_mask.out_channels, num_classes)
    if hasattr(model, "maskloop_config"):
        model.maskloop_config["num_classes"] = int(num_classes)


def build_model(arch: str = "r50fpn", num_classes: int = 2, *, base: Any = "scratch",
                label_names: Optional[list[str]] = None, norm: Optional[str] = None,
                trainable_layers: Optional[int] = None, scale: float = 1.0,
                min_size: Optional[int] = None, max_size: Optional[int] = None,
                detections_per_img: int = 1000, anchor_sizes: Optional[Iterable[int]] = None,
                image_mean=None, image_std=None, allow_download: bool = True,
                **maskrcnn_kwargs) -> MaskRCNN:
    """A Mask R-CNN for `num_classes` classes (background included).

    base: "scratch" | "coco" | "imagenet" | a MaskLoop checkpoint path | a loaded checkpoint dict.
    From a checkpoint, its architecture and settings are kept (a different `arch` is an
    error); its class heads are kept when `label_names` (or, without names, the class count)
    match, else replaced. The returned model carries `model.maskloop_config` (plain data),
    which save_checkpoint stores so the model can be rebuilt without downloads.
    """
    if isinstance(base, (str, Path)) and str(base) not in ("scratch", "coco", "imagenet"):
        base = load_checkpoint(base)
    if isinstance(base, dict):
        return _from_base_checkpoint(base, arch, num_classes, label_names, detections_per_img,
                                     trainable_layers=trainable_layers)
    if base not in ("scratch", "coco", "imagenet"):
        raise ValueError(f"unknown base {base!r}: use scratch, coco, imagenet or a checkpoint path")
    if base == "coco" and arch not in _COCO:
        raise CheckpointError(
            f"torchvision has no COCO Mask R-CNN weights for {arch}; use --base imagenet "
            f"(ImageNet backbone) or --base scratch, or --arch r50fpn / r50fpn_v2 with --base coco")
    config = default_config(arch, num_classes, base=base, norm=norm, trainable_layers=trainable_layers,
                            scale=scale, min_size=min_size, max_size=max_size,
                            detections_per_img=detections_per_img, anchor_sizes=anchor_sizes,
                            image_mean=image_mean, image_std=image_std, **maskrcnn_kwargs)
    if base == "scratch":
        return construct(config)
    if base == "coco":
        weights = getattr(tv_mask_rcnn, _COCO[arch]).COCO_V1
        state = fetch_weights(weights, f"COCO weights for {arch}", allow_download=allow_download)
        n_coco = len(weights.meta["categories"])
        model = construct(dict(config, num_classes=n_coco))
        _load_state(model, state, "COCO weights", strict_heads=True)
        if arch == "r50fpn" and config["norm"] == "frozen":
            # torchvision's r50fpn COCO weights were trained with eps 0 in FrozenBatchNorm
            from torchvision.models.detection._utils import overwrite_eps
            overwrite_eps(model, 0.0)
        if num_classes != n_coco:
            replace_heads(model, num_classes)
        model.maskloop_config = config
        return model
    # imagenet: backbone body only
    body_name, enum_name = _BACKBONES[arch]
    weights = getattr(tv_resnet, enum_name).IMAGENET1K_V1
    state = fetch_weights(weights, f"ImageNet weights for the {body_name} backbone", allow_download=allow_download)
    model = construct(config)
    body = model.backbone.body
    wanted = {k: v for k, v in state.items() if not k.startswith("fc.")}
    missing, unexpected = body.load_state_dict(wanted, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise CheckpointError(f"ImageNet weights do not fit {arch} (missing {missing[:3]}, unexpected {unexpected[:3]})")
    return model


def _from_base_checkpoint(ckpt: dict, arch, num_classes, label_names, detections_per_img,
                          trainable_layers=None) -> MaskRCNN:
    ckpt = validate_checkpoint(ckpt)
    path = ckpt.get("_path")
    if arch and arch != ckpt["arch"]:
        raise CheckpointError(f"the base checkpoint is a {ckpt['arch']} model, not {arch}; "
                              f"use --arch {ckpt['arch']} or another base", path, "arch")
    config = dict(ckpt["model_config"])
    config["base"] = "checkpoint"
    if trainable_layers is not None:
        config["trainable_layers"] = int(trainable_layers)
    config["detections_per_img"] = int(detections_per_img)
    model = construct(config)  # with the checkpoint's classes first
    _load_state(model, ckpt["state_dict"], path or "checkpoint", strict_heads=True)
    same = (list(label_names) == list(ckpt["label_names"])) if label_names is not None \
        else int(num_classes) == int(config["num_classes"])
    if not same:
        replace_heads(model, int(num_classes))
    return model


def _load_state(model: nn.Module, state: dict, what, *, strict_heads: bool) -> None:
    """load_state_dict with a CheckpointError naming what does not fit."""
    own = model.state_dict()
    bad_shape = [k for k, v in state.items() if k in own and hasattr(v, "shape") and tuple(v.shape) != tuple(own[k].shape)]
    if bad_shape and strict_heads:
        raise CheckpointError(f"weights do not fit the architecture: shape mismatch in {', '.join(bad_shape[:3])}",
                              str(what))
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as e:
        raise CheckpointError(f"weights do not fit the architecture ({str(e).splitlines()[0]})", str(what)) from None
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}")
        if unexpected:
            parts.append(f"unexpected {', '.join(unexpected[:3])}{' ...' if len(unexpected) > 3 else ''}")
        raise CheckpointError(f"weights do not fit the architecture ({'; '.join(parts)})", str(what))


# --------------------------------------------------------------------------------------
# base weights: torch hub cache first, download only when it works, never a hang
# --------------------------------------------------------------------------------------

def weights_cache_dir() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def weights_file(weights) -> Path:
    """Where torch (and MaskLoop) keep the file of a torchvision WeightsEnum value."""
    return weights_cache_dir() / os.path.basename(weights.url)


def fetch_weights(weights, what: str, *, allow_download: bool = True) -> dict:
    """State dict of torchvision weights: from the torch hub cache, or downloaded into it.

    Offline (or MASKLOOP_OFFLINE=1, or allow_download=False) a CheckpointError says which
    file to put where. The download gives up after DOWNLOAD_STALL_S seconds without data.
    """
    target = weights_file(weights)
    if not target.is_file():
        reason = None
        if not allow_download or os.environ.get("MASKLOOP_OFFLINE", "") not in ("", "0"):
            reason = "downloads are off"
        else:
            try:
                download(weights.url, target)
            except Exception as e:  # any failure: no network, proxy, timeout, bad hash
                reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        if reason is not None:
            raise CheckpointError(
                f"{what} are not in the torch cache and could not be downloaded ({reason}). "
                f"Put {target.name} (from {weights.url}) in {target.parent}, or use --base scratch")
    try:
        state = torch.load(target, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"cannot read cached {what} ({str(e).splitlines()[0] if str(e) else type(e).__name__}); "
                              f"delete the file and try again, or use --base scratch", target) from None
    if not isinstance(state, dict):
        raise CheckpointError(f"cached {what} is not a state dict; delete the file", target)
    return state


def download(url: str, dst: Path, stall_s: float = None) -> None:
    """Download url to dst atomically, checking the sha256 prefix in the file name.

    Runs in a daemon thread; gives up (TimeoutError) when no data arrived for `stall_s`
    seconds, so a black-holed network or a hung DNS lookup cannot hang the caller.
    """
    stall_s = DOWNLOAD_STALL_S if stall_s is None else stall_s
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    state = {"bytes": 0, "error": None, "done": False, "abandoned": False}
    fd, tmp = tempfile.mkstemp(prefix="." + dst.name + ".", suffix=".part", dir=dst.parent)
    os.close(fd)

    def worker():
        try:
            h = hashlib.sha256()
            with urllib.request.urlopen(url, timeout=stall_s) as r, open(tmp, "wb") as f:
                while True:
                    chunk = r.read(1 << 20)
                    if not chunk:
                        break
                    f.write(chunk)
                    h.update(chunk)
                    state["bytes"] += len(chunk)
                f.flush()
                os.fsync(f.fileno())
            m = torch.hub.HASH_REGEX.search(dst.name)
            if m and not h.hexdigest().startswith(m.group(1)):
                raise ValueError(f"downloaded file has the wrong sha256 (expected {m.group(1)}...)")
            state["done"] = True
        except BaseException as e:  # reported to the waiting thread
            state["error"] = e
        finally:
            if state["abandoned"] or state["error"] is not None:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass

    t = threading.Thread(target=worker, name="maskloop-download", daemon=True)
    t.start()
    last, last_bytes = time.monotonic(), 0
    try:
        while t.is_alive():
            t.join(0.2)
            if state["bytes"] != last_bytes:
                last, last_bytes = time.monotonic(), state["bytes"]
            elif time.monotonic() - last > stall_s:
                state["abandoned"] = True  # the thread removes its partial file if it ever returns
                raise TimeoutError(f"no data from {url} for {stall_s:g} s")
        if state["error"] is not None:
            raise state["error"]
        if not state["done"]:
            raise RuntimeError("download failed")
        os.replace(tmp, dst)
        _fsync_dir(dst.parent)
    finally:
        if not t.is_alive() and os.path.exists(tmp):
            os.unlink(tmp)


# --------------------------------------------------------------------------------------
# checkpoints
# --------------------------------------------------------------------------------------

_REQUIRED = ("format", "version", "arch", "label_names", "normalization", "model_config", "state_dict")


def _plain(obj, where: str):
    """A copy of obj with only tensors and exact plain types (what weights_only loads).

    numpy scalars and str/int/float subclasses (e.g. torch.__version__) are converted;
    anything else is a TypeError naming where it is.
    """
    if obj is None or type(obj) in (bool, int, float, str) or isinstance(obj, torch.Tensor):
        return obj
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, numbers.Integral):
        return int(obj)
    if isinstance(obj, numbers.Real):
        return float(obj)
    if isinstance(obj, str):
        return str(obj)
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if isinstance(k, (bool, np.bool_)) or not isinstance(k, (str, numbers.Integral)):
                raise TypeError(f"{where}: key {k!r} is not a str or int")
            out[str(k) if isinstance(k, str) else int(k)] = _plain(v, f"{where}.{k}")
        return out
    if isinstance(obj, (list, tuple)):
        items = [_plain(v, f"{where}[{i}]") for i, v in enumerate(obj)]
        return items if isinstance(obj, list) else tuple(items)
    raise TypeError(f"{where}: {type(obj).__name__} is not plain data or a tensor")


def _state_of(obj):
    if obj is None:
        return None
    if hasattr(obj, "state_dict") and callable(obj.state_dict):
        return obj.state_dict()
    return obj


def unwrap(model: nn.Module) -> nn.Module:
    """The bare model inside DistributedDataParallel / DataParallel wrappers."""
    while hasattr(model, "module") and isinstance(model.module, nn.Module):
        model = model.module
    return model


def save_checkpoint(path, model: nn.Module, *, label_names: list[str], normalization: dict,
                    arch: Optional[str] = None, config: Optional[dict] = None,
                    metrics: Optional[dict] = None, epoch: Optional[int] = None,
                    optimizer=None, scheduler=None, run: Optional[str] = None,
                    extra: Optional[dict] = None) -> Path:
    """Write a MaskLoop checkpoint atomically (temporary file, fsync, os.replace).

    Contents: tensors and plain data only. `config` is the training config (free form,
    plain data); the architecture settings come from model.maskloop_config.
    optimizer/scheduler: objects with state_dict() or their state dicts (for resume).
    """
    path = Path(path)
    m = unwrap(model)
    model_config = dict(getattr(m, "maskloop_config", None) or {})
    if not model_config:
        raise ValueError("model was not built by engine.model.build (no maskloop_config)")
    arch = arch or model_config["arch"]
    if arch != model_config["arch"]:
        raise ValueError(f"arch {arch!r} does not match the model ({model_config['arch']!r})")
    label_names = [str(n) for n in label_names]
    if len(label_names) + 1 != int(model_config["num_classes"]):
        raise ValueError(f"{len(label_names)} label names for a model with {model_config['num_classes']} "
                         f"classes (background included)")
    normalization = validate_policy(normalization)
    ckpt = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "arch": arch,
        "label_names": label_names,
        "normalization": normalization,
        "model_config": model_config,
        "config": dict(config or {}),
        "metrics": dict(metrics or {}),
        "epoch": None if epoch is None else int(epoch),
        "run": run,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "torch": str(torch.__version__),
        "torchvision": str(torchvision.__version__),
        "state_dict": {k: v.detach().to("cpu").clone() if v.device.type != "cpu" else v.detach()
                       for k, v in m.state_dict().items()},
    }
    opt, sch = _state_of(optimizer), _state_of(scheduler)
    if opt is not None:
        ckpt["optimizer"] = opt
    if sch is not None:
        ckpt["scheduler"] = sch
    if extra:
        ckpt["extra"] = dict(extra)
    sd = ckpt.pop("state_dict")
    ckpt = _plain(ckpt, "checkpoint")
    ckpt["state_dict"] = sd
    with atomic_writer(path) as f:
        torch.save(ckpt, f)
    return path


def load_checkpoint(path) -> dict:
    """Read and validate a MaskLoop checkpoint; CheckpointError naming the file otherwise.

    Loaded with weights_only=True on the CPU: a checkpoint is untrusted input.
    The returned dict has "_path" (str) added.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError("no such model file", path)
    if path.is_dir():
        raise CheckpointError("is a folder, not a model file (expected model.pt)", path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        # only a well-formed pickle naming a global is "Python objects"; random bytes and
        # damaged archives also fail the weights_only unpickler, but are just unreadable
        if "Unsupported global" in str(e):
            raise CheckpointError("not a MaskLoop checkpoint: it contains Python objects other than tensors "
                                  "and plain data, which MaskLoop refuses to load", path) from None
        raise CheckpointError("not a MaskLoop checkpoint (unreadable file: not a torch checkpoint or damaged)",
                              path) from None
    ckpt = validate_checkpoint(ckpt, path)
    ckpt["_path"] = str(path)
    return ckpt


def validate_checkpoint(ckpt, path=None) -> dict:
    """Check the structure of a checkpoint dict (as load_checkpoint returns it)."""
    path = path if path is not None else (ckpt.get("_path") if isinstance(ckpt, dict) else None)
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"not a MaskLoop checkpoint (the file holds a {type(ckpt).__name__})", path)
    if "format" not in ckpt:
        if ckpt and all(isinstance(v, torch.Tensor) for v in ckpt.values()):
            raise CheckpointError("not a MaskLoop checkpoint: a bare state_dict without MaskLoop's "
                                  "architecture, labels and normalisation", path)
        raise CheckpointError("not a MaskLoop checkpoint (no 'format' key)", path)
    if ckpt["format"] != CHECKPOINT_FORMAT:
        raise CheckpointError(f"not a MaskLoop checkpoint (format {ckpt['format']!r})", path, "format")
    missing = [k for k in _REQUIRED if k not in ckpt]
    if missing:
        raise CheckpointError(f"incomplete MaskLoop checkpoint: missing {', '.join(missing)}", path)
    if not isinstance(ckpt["version"], int) or ckpt["version"] > CHECKPOINT_VERSION:
        raise CheckpointError(f"checkpoint version {ckpt['version']!r} is newer than this MaskLoop "
                              f"understands ({CHECKPOINT_VERSION}); update MaskLoop", path, "version")
    if ckpt["arch"] not in ARCHS:
        raise CheckpointError(f"unknown architecture {ckpt['arch']!r}", path, "arch")
    names = ckpt["label_names"]
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
        raise CheckpointError("label_names must be a non-empty list of names", path, "label_names")
    if len(set(names)) != len(names):
        raise CheckpointError("label_names has duplicates", path, "label_names")
    try:
        ckpt["normalization"] = validate_policy(ckpt["normalization"])
    except PolicyError as e:
        raise CheckpointError(str(e), path, "normalization") from None
    mc = ckpt["model_config"]
    if not isinstance(mc, dict) or mc.get("arch") != ckpt["arch"]:
        raise CheckpointError("model_config is missing or does not match arch", path, "model_config")
    try:
        nc = int(mc["num_classes"])
    except (KeyError, TypeError, ValueError):
        raise CheckpointError("model_config has no valid num_classes", path, "model_config") from None
    if nc != len(names) + 1:
        raise CheckpointError(f"{len(names)} label names for {nc} model classes (background included)",
                              path, "label_names")
    sd = ckpt["state_dict"]
    if not isinstance(sd, dict) or not sd or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError("state_dict must be a non-empty dict of tensors", path, "state_dict")
    return ckpt


def check_labels(ckpt: dict, expected_labels, *, exact: bool = False) -> None:
    """CheckpointError when the model's classes do not fit a project's labels.

    By default every model class must exist in the project (a project may have more
    labels than the model predicts); exact=True also requires the same names in the same order.
    """
    names = list(ckpt["label_names"])
    expected = list(expected_labels.names() if hasattr(expected_labels, "names") else expected_labels)
    path = ckpt.get("_path")
    if exact:
        if names != expected:
            raise CheckpointError(f"the model's classes {names} do not match the project's labels {expected}",
                                  path, "label_names")
        return
    unknown = [n for n in names if n not in expected]
    if unknown:
        raise CheckpointError(f"the model predicts classes the project does not have: {', '.join(unknown)} "
                              f"(project labels: {', '.join(expected) or 'none'}); add the labels or "
                              f"use a model trained on this project", path, "label_names")


def model_from_checkpoint(ckpt, expected_labels=None, *, exact: bool = False,
                          device: Any = "cpu") -> MaskRCNN:
    """Rebuild the model of a checkpoint (dict or path) in eval mode, weights loaded strictly."""
    if not isinstance(ckpt, dict):
        ckpt = load_checkpoint(ckpt)
    else:
        ckpt = validate_checkpoint(ckpt)
    if expected_labels is not None:
        check_labels(ckpt, expected_labels, exact=exact)
    model = construct(ckpt["model_config"])
    _load_state(model, ckpt["state_dict"], ckpt.get("_path") or "checkpoint", strict_heads=True)
    model.eval()
    return model.to(device)


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
