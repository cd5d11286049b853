"""Mask R-CNN architectures on torchvision: names, the native-resolution transform,
model configs (plain data) and construction from a config.

Architectures (`ARCHS`): r50fpn (torchvision's maskrcnn_resnet50_fpn), r50fpn_v2,
r101fpn, x101fpn (ResNeXt-101 32x8d FPN), r18fpn (light) and r18fpn_lite (narrow
pyramid and heads: the CPU default). Every model
gets a `NativeTransform`: images run at their native resolution (or a fixed `scale`),
never silently resized to 800 px, with image_mean/std applied to the [0, 1] output of
engine.model.normalize.normalize. Starting weights: engine.model.weights; files:
engine.model.checkpoint.
"""
from __future__ import annotations

import math
from typing import Callable, Iterable, Optional

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import resnet as tv_resnet
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
from torchvision.models.detection.faster_rcnn import FastRCNNConvFCHead, FastRCNNPredictor, RPNHead, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNN, MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.transform import GeneralizedRCNNTransform, resize_boxes
from torchvision.ops import misc as misc_nn_ops
from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool

from ..errors import CheckpointError

ARCHS = ("r50fpn", "r50fpn_v2", "r101fpn", "x101fpn", "r18fpn", "r18fpn_lite")
ARCH_HELP = {
    "r50fpn": "ResNet-50-FPN (torchvision maskrcnn_resnet50_fpn)",
    "r50fpn_v2": "ResNet-50-FPN v2 (conv heads with norm, torchvision maskrcnn_resnet50_fpn_v2)",
    "r101fpn": "ResNet-101-FPN",
    "x101fpn": "ResNeXt-101 32x8d FPN (the paper's strongest backbone)",
    "r18fpn": "ResNet-18-FPN (light, for CPUs)",
    "r18fpn_lite": "ResNet-18 with a narrow FPN and light heads (the CPU default: ~5x the steps of r18fpn)",
}
BACKBONES = {  # arch -> (torchvision resnet name, its ImageNet weights enum)
    "r50fpn": ("resnet50", "ResNet50_Weights"),
    "r50fpn_v2": ("resnet50", "ResNet50_Weights"),
    "r101fpn": ("resnet101", "ResNet101_Weights"),
    "x101fpn": ("resnext101_32x8d", "ResNeXt101_32X8D_Weights"),
    "r18fpn": ("resnet18", "ResNet18_Weights"),
    "r18fpn_lite": ("resnet18", "ResNet18_Weights"),
}
# r18fpn_lite: at 256 FPN channels the FPN, the two-conv RPN head and the 4x256 conv heads
# cost ~80 % of a CPU training step on small objects; a narrow pyramid and one-conv RPN
# leave the ResNet-18 body (ImageNet weights still fit) as the main cost (docs/benchmarks.md)
LITE_FPN_CHANNELS = 64
LITE_BOX_FC = 256
COCO_WEIGHTS = {  # arch -> torchvision Mask R-CNN COCO weights enum
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
DEFAULT_RATIOS = (0.5, 1.0, 2.0)     # anchor height / width (torchvision)

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
                   detections_per_img: int = 1000, anchor_sizes: Optional[Iterable] = None,
                   anchor_ratios: Optional[Iterable[float]] = None,
                   image_mean: Optional[Iterable[float]] = None, image_std: Optional[Iterable[float]] = None,
                   **maskrcnn_kwargs) -> dict:
    """The plain-data description of an architecture that `construct` builds (and a
    checkpoint stores under "model_config"). anchor_sizes: per FPN level a size or a list
    of sizes (engine.model.anchor_fit); anchor_ratios: height/width, default 0.5, 1, 2."""
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
    anchor_sizes = [_level_sizes(a) for a in anchor_sizes]
    if len(anchor_sizes) != 5:
        raise ValueError(f"anchor_sizes needs 5 entries (one per FPN level), got {anchor_sizes}")
    anchor_ratios = [float(r) for r in (anchor_ratios or DEFAULT_RATIOS)]
    if not anchor_ratios or min(anchor_ratios) <= 0:
        raise ValueError(f"anchor ratios must be > 0, got {anchor_ratios}")
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
        "anchor_ratios": anchor_ratios,
        "image_mean": [float(v) for v in image_mean],
        "image_std": [float(v) for v in image_std],
        "maskrcnn": kw,
        "base": base if isinstance(base, str) and base in ("scratch", "coco", "imagenet") else "checkpoint",
    }


def _level_sizes(level):
    """An FPN level's anchor sizes: an int (one size) or a list of ints, kept as given so
    the config of a one-size model reads as before."""
    if isinstance(level, (list, tuple)):
        return [int(a) for a in level]
    return int(level)


def _as_list(level) -> list:
    return level if isinstance(level, list) else [level]


def construct(config: dict) -> MaskRCNN:
    """Build the architecture a config describes, with random weights (no download)."""
    try:
        arch = config["arch"]
        num_classes = int(config["num_classes"])
        norm = config["norm"]
        trainable = int(config["trainable_layers"])
        anchors = tuple(tuple(_as_list(_level_sizes(a))) for a in config["anchor_sizes"])
        ratios = tuple(float(r) for r in config.get("anchor_ratios") or DEFAULT_RATIOS)  # older models: none
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
    body_name, _ = BACKBONES[arch]
    body = getattr(tv_resnet, body_name)(weights=None, norm_layer=norm_layer)
    if len({len(a) for a in anchors}) != 1:
        raise CheckpointError(f"anchor sizes differ in count per level ({config['anchor_sizes']})",
                              field="model_config")
    anchor_gen = AnchorGenerator(anchors, (ratios,) * len(anchors))
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
    elif arch == "r18fpn_lite":
        model = _lite_maskrcnn(body, trainable, anchor_gen, num_classes, dets, kw)
    else:
        backbone = _resnet_fpn_extractor(body, trainable)
        rpn_head = RPNHead(backbone.out_channels, anchor_gen.num_anchors_per_location()[0])
        model = MaskRCNN(backbone, num_classes=num_classes, rpn_anchor_generator=anchor_gen,
                         rpn_head=rpn_head, box_detections_per_img=dets, **kw)
    model.transform = NativeTransform(mean, std, scale=scale, min_size=min_size, max_size=max_size)
    model.maskloop_config = dict(config)
    return model


def _lite_maskrcnn(body, trainable: int, anchor_gen, num_classes: int, dets: int, kw: dict) -> MaskRCNN:
    """r18fpn_lite: torchvision's extractor (its layer freezing) with a narrow FPN, a
    one-conv RPN head, a two-layer MLP box head and a narrow 4-conv mask head."""
    ch = LITE_FPN_CHANNELS
    backbone = _resnet_fpn_extractor(body, trainable)
    backbone.fpn = FeaturePyramidNetwork([64, 128, 256, 512], ch, extra_blocks=LastLevelMaxPool())
    backbone.out_channels = ch
    rpn_head = RPNHead(ch, anchor_gen.num_anchors_per_location()[0], conv_depth=1)
    return MaskRCNN(backbone, num_classes=None, rpn_anchor_generator=anchor_gen, rpn_head=rpn_head,
                    box_head=TwoMLPHead(ch * 7 * 7, LITE_BOX_FC),
                    box_predictor=FastRCNNPredictor(LITE_BOX_FC, num_classes),
                    mask_head=MaskRCNNHeads(ch, [ch] * 4, 1),
                    mask_predictor=MaskRCNNPredictor(ch, ch, num_classes),
                    box_detections_per_img=dets, **kw)


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


def load_state(model: nn.Module, state: dict, what, *, strict_heads: bool) -> None:
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


def unwrap(model: nn.Module) -> nn.Module:
    """The bare model inside DistributedDataParallel / DataParallel wrappers."""
    while hasattr(model, "module") and isinstance(model.module, nn.Module):
        model = model.module
    return model


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
