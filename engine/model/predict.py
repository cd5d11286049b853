"""Predictor: a warm Mask R-CNN that turns raw images into model Instances.

- Loads a MaskLoop checkpoint once (or wraps a built model) and keeps it on the device.
  Device order for "auto": CUDA, MPS, CPU.
- The image is normalised once by the model's policy (engine.model.normalize), then run
  at native resolution; images larger than a tile are cut into overlapping tiles and
  the instances are merged across the seams: detections that touch an interior tile
  edge are pieces, pieces of one object seen by neighbouring tiles are joined, pieces
  of an object that another tile sees whole are dropped, and duplicates in overlaps
  are removed by mask overlap on the full-image grid. The overlap defaults to 1/8 of a
  tile, widened to the largest object of the model's training data (the checkpoint
  records it) so that every such object lies whole in some tile.
- Masks are pasted into their box only (never one full-image float mask per
  detection), so 1000+ instances per image cost little memory.
- On CUDA: inference_mode, autocast (bf16 where supported, else fp16), channels_last,
  tiles batched. On CPU: fp32, conv+BatchNorm fused, no upscaling.
- `predict_items` writes results into a Project: status "predicted" (also when nothing
  was found), reviewed items are never overwritten, progress and cancel per item.
"""
from __future__ import annotations

import copy
import math
import time
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

import cv2
import numpy as np
import torch
from torch import nn

from ..annotations import Instance, ItemAnnotation
from ..errors import LabelError, MaskLoopError
from ..jobs import CancelToken, ProgressFn, check, report
from .build import check_labels, load_checkpoint, model_from_checkpoint, set_detections_per_img, unwrap
from .normalize import normalize_compact, validate_policy

DEFAULT_TILE = 1024
EDGE_MARGIN = 2          # px: a mask this close to an interior tile edge is a cut piece
DUP_IOU = 0.5            # complete detections from two tiles with this mask IoU are one object
DUP_COVER = 0.8          # ... or when this much of the smaller one lies inside the other
PIECE_IOU = 0.4          # pieces from two tiles whose masks agree this well in the shared region join
PIECE_COVERED = 0.5      # a piece this much inside a whole detection from another tile is dropped
SAFE_MARGIN = 16         # px: a whole detection this far from interior tile edges is preferred


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


def amp_dtype(device: torch.device, amp: Any = True) -> Optional[torch.dtype]:
    """The autocast dtype for inference (None: fp32).

    amp=True: bf16 on CUDA where supported, else fp16; fp32 on CPU and MPS.
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


# --------------------------------------------------------------------------------------
# masks: paste into the box only (the same geometry as torchvision's paste_masks_in_image)
# --------------------------------------------------------------------------------------

def _expand_boxes(boxes: np.ndarray, scale: float) -> np.ndarray:
    w_half = (boxes[:, 2] - boxes[:, 0]) * 0.5 * scale
    h_half = (boxes[:, 3] - boxes[:, 1]) * 0.5 * scale
    x_c = (boxes[:, 2] + boxes[:, 0]) * 0.5
    y_c = (boxes[:, 3] + boxes[:, 1]) * 0.5
    out = np.stack([x_c - w_half, y_c - h_half, x_c + w_half, y_c + h_half], axis=1)
    return np.trunc(out).astype(np.int64)  # torch .to(int64) truncates toward zero


def paste_in_box(mask_probs: np.ndarray, boxes: np.ndarray, height: int, width: int,
                 threshold: float = 0.5) -> list[tuple[np.ndarray, int, int]]:
    """(N, M, M) mask probabilities + (N, 4) boxes -> [(bool crop, x0, y0)] clipped to the image.

    Same sampling as torchvision's paste_masks_in_image (1-px padding, expanded box,
    bilinear resize), but each mask only covers its box.
    """
    n = len(boxes)
    if n == 0:
        return []
    M = mask_probs.shape[-1]
    scale = (M + 2.0) / M
    padded = np.zeros((n, M + 2, M + 2), np.float32)
    padded[:, 1:-1, 1:-1] = mask_probs
    eb = _expand_boxes(boxes.astype(np.float32), scale)
    out = []
    for k in range(n):
        bx0, by0, bx1, by1 = (int(v) for v in eb[k])
        w, h = max(bx1 - bx0 + 1, 1), max(by1 - by0 + 1, 1)
        x_0, x_1 = max(bx0, 0), min(bx1 + 1, width)
        y_0, y_1 = max(by0, 0), min(by1 + 1, height)
        if x_1 <= x_0 or y_1 <= y_0:
            out.append((np.zeros((0, 0), bool), 0, 0))
            continue
        m = cv2.resize(padded[k], (w, h), interpolation=cv2.INTER_LINEAR)
        crop = m[y_0 - by0:y_1 - by0, x_0 - bx0:x_1 - bx0] >= threshold
        out.append((crop, x_0, y_0))
    return out


# --------------------------------------------------------------------------------------
# tiles and seams
# --------------------------------------------------------------------------------------

def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of `tile` px covering `length` with at least `overlap` px overlap."""
    if length <= tile:
        return [0]
    step = max(1, tile - overlap)
    n = int(math.ceil((length - tile) / step)) + 1
    # spread the tiles evenly so every overlap is >= `overlap`
    return [int(round(i * (length - tile) / (n - 1))) for i in range(n)]


def tile_grid(height: int, width: int, tile: int, overlap: int) -> list[tuple[int, int, int, int]]:
    """Tiles as (x0, y0, x1, y1), row by row."""
    th, tw = min(tile, height), min(tile, width)
    return [(x, y, x + tw, y + th) for y in tile_starts(height, tile, overlap)
            for x in tile_starts(width, tile, overlap)]


class _Cand:
    """A detection of one tile on the full-image grid."""

    __slots__ = ("inst", "tile", "rect", "cut", "box", "area", "margin")

    def __init__(self, inst: Instance, tile: int, rect, cut: bool, margin: float):
        self.inst, self.tile, self.rect, self.cut, self.margin = inst, tile, rect, cut, margin
        self.box = (inst.x0, inst.y0, inst.x0 + inst.width, inst.y0 + inst.height)
        self.area = inst.area


def _inter(a: Instance, b: Instance, rect=None) -> int:
    """Pixels set in both a and b (optionally only inside rect = (x0, y0, x1, y1))."""
    x0, y0 = max(a.x0, b.x0), max(a.y0, b.y0)
    x1, y1 = min(a.x0 + a.width, b.x0 + b.width), min(a.y0 + a.height, b.y0 + b.height)
    if rect is not None:
        x0, y0, x1, y1 = max(x0, rect[0]), max(y0, rect[1]), min(x1, rect[2]), min(y1, rect[3])
    if x1 <= x0 or y1 <= y0:
        return 0
    ma = a.mask[y0 - a.y0:y1 - a.y0, x0 - a.x0:x1 - a.x0]
    mb = b.mask[y0 - b.y0:y1 - b.y0, x0 - b.x0:x1 - b.x0]
    return int(np.count_nonzero(ma & mb))


def _area_in(a: Instance, rect) -> int:
    x0, y0 = max(a.x0, rect[0]), max(a.y0, rect[1])
    x1, y1 = min(a.x0 + a.width, rect[2]), min(a.y0 + a.height, rect[3])
    if x1 <= x0 or y1 <= y0:
        return 0
    return int(np.count_nonzero(a.mask[y0 - a.y0:y1 - a.y0, x0 - a.x0:x1 - a.x0]))


def _rect_and(r, s):
    x0, y0, x1, y1 = max(r[0], s[0]), max(r[1], s[1]), min(r[2], s[2]), min(r[3], s[3])
    return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None


def _xyxy(inst: Instance) -> tuple[int, int, int, int]:
    return (inst.x0, inst.y0, inst.x0 + inst.width, inst.y0 + inst.height)


def _boxes_meet(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _cross_tile_pairs(cands: list[_Cand], tiles: list) -> Iterable[tuple[int, int, tuple]]:
    """(i, j, shared_rect) for candidates of two different, overlapping tiles whose boxes
    meet inside the region both tiles cover."""
    by_tile: dict[int, list[int]] = {}
    for i, c in enumerate(cands):
        by_tile.setdefault(c.tile, []).append(i)
    keys = sorted(by_tile)
    for ai, ta in enumerate(keys):
        for tb in keys[ai + 1:]:
            shared = _rect_and(tiles[ta], tiles[tb])
            if shared is None:
                continue
            ia = [i for i in by_tile[ta] if _boxes_meet(cands[i].box, shared)]
            ib = [j for j in by_tile[tb] if _boxes_meet(cands[j].box, shared)]
            if not ia or not ib:
                continue
            ba = np.array([cands[i].box for i in ia]).reshape(-1, 4)
            bb = np.array([cands[j].box for j in ib]).reshape(-1, 4)
            meet = ((ba[:, None, 0] < bb[None, :, 2]) & (bb[None, :, 0] < ba[:, None, 2]) &
                    (ba[:, None, 1] < bb[None, :, 3]) & (bb[None, :, 1] < ba[:, None, 3]))
            for p, q in zip(*np.nonzero(meet)):
                yield ia[p], ib[q], shared


def merge_tiles(per_tile: Sequence[Sequence[Instance]], tiles: Sequence[tuple], height: int, width: int,
                edge_margin: int = EDGE_MARGIN) -> list[Instance]:
    """Merge detections of overlapping tiles (Instances already on the full-image grid).

    1. A detection whose mask comes within `edge_margin` px of an interior tile edge (an
       edge that is not the image border) is a *piece*; others are *whole*.
    2. Whole detections from different tiles that are the same object (mask IoU >= 0.5
       or >= 80 % of the smaller inside the other) are deduplicated, best score kept.
    3. Pieces from different tiles that agree in the region both tiles cover
       (IoU there >= 0.4) are joined into one instance (union of the masks).
    4. A (joined) piece mostly inside a whole detection from another tile is dropped.
    Detections of one tile are never merged with each other (the model's NMS did that).
    """
    cands: list[_Cand] = []
    for t, insts in enumerate(per_tile):
        tx0, ty0, tx1, ty1 = tiles[t]
        for inst in insts:
            x0, y0, x1, y1 = inst.x0, inst.y0, inst.x0 + inst.width, inst.y0 + inst.height
            # distance of the mask to the nearest interior tile edge (image borders do not count)
            gaps = [g for g, interior in ((x0 - tx0, tx0 > 0), (tx1 - x1, tx1 < width),
                                          (y0 - ty0, ty0 > 0), (ty1 - y1, ty1 < height)) if interior]
            margin = float(min(gaps)) if gaps else math.inf
            cands.append(_Cand(inst, t, tiles[t], margin <= edge_margin, margin))
    if not cands:
        return []
    n = len(cands)
    dup: dict[int, list[int]] = {}
    parent = list(range(n))

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    covered_by: dict[int, list[int]] = {}  # piece -> whole detections it lies inside
    for i, j, shared in _cross_tile_pairs(cands, list(tiles)):
        a, b = cands[i], cands[j]
        inter = _inter(a.inst, b.inst)
        if inter == 0:
            continue
        if not a.cut and not b.cut:
            union = a.area + b.area - inter
            if inter / union >= DUP_IOU or inter / max(1, min(a.area, b.area)) >= DUP_COVER:
                dup.setdefault(i, []).append(j)
                dup.setdefault(j, []).append(i)
        elif a.cut and b.cut:
            ia, ib = _area_in(a.inst, shared), _area_in(b.inst, shared)
            inter_s = _inter(a.inst, b.inst, shared)
            if ia and ib and inter_s / (ia + ib - inter_s) >= PIECE_IOU:
                ra, rb = find(i), find(j)
                if ra != rb:
                    parent[ra] = rb
        else:
            piece, whole = (i, j) if a.cut else (j, i)
            if inter / max(1, cands[piece].area) >= PIECE_COVERED:
                covered_by.setdefault(piece, []).append(whole)

    def score(c: _Cand) -> float:
        return c.inst.score if c.inst.score is not None else 1.0

    # 2. whole detections: greedy over the duplicate graph; the view with the object well
    #    inside its tile (>= SAFE_MARGIN px from interior edges) first, then by score
    def rank(i: int):
        return (-min(cands[i].margin, SAFE_MARGIN), -score(cands[i]))

    kept_whole: set[int] = set()
    for i in sorted((i for i in range(n) if not cands[i].cut), key=rank):
        if not any(j in kept_whole for j in dup.get(i, ())):
            kept_whole.add(i)
    # 3./4. pieces: join by group; drop a group lying mostly inside a whole detection of
    #    another tile (kept, or dropped as a duplicate of a kept one: the same object)
    groups: dict[int, list[int]] = {}
    for i in range(n):
        if cands[i].cut:
            groups.setdefault(find(i), []).append(i)
    out: list[Instance] = [cands[i].inst for i in kept_whole]
    for members in groups.values():
        joined = _join([cands[m].inst for m in members]) if len(members) > 1 else cands[members[0]].inst
        wholes = {w for m in members for w in covered_by.get(m, ())}
        if any(_inter(joined, cands[w].inst) / max(1, joined.area) >= PIECE_COVERED for w in wholes):
            continue
        out.append(joined)
    out.sort(key=lambda inst: -(inst.score if inst.score is not None else 1.0))
    return out


def _join(parts: list[Instance]) -> Instance:
    best = max(parts, key=lambda p: (p.score if p.score is not None else 1.0, p.area))
    x0, y0 = min(p.x0 for p in parts), min(p.y0 for p in parts)
    x1, y1 = max(p.x0 + p.width for p in parts), max(p.y0 + p.height for p in parts)
    m = np.zeros((y1 - y0, x1 - x0), bool)
    for p in parts:
        m[p.y0 - y0:p.y0 - y0 + p.height, p.x0 - x0:p.x0 - x0 + p.width] |= p.mask
    return best.copy(mask=m, x0=x0, y0=y0)


# --------------------------------------------------------------------------------------
# the predictor
# --------------------------------------------------------------------------------------

class Predictor:
    """A model loaded once and kept warm on its device.

    model: a MaskLoop checkpoint path, a loaded checkpoint dict, or (with
    Predictor.from_model) a built nn.Module plus its label names and normalisation.
    """

    def __init__(self, model: Any, device: Any = "auto", *, batch_size: Optional[int] = None,
                 tile: int = DEFAULT_TILE, overlap: Optional[int] = None, max_detections: int = 1000,
                 amp: bool = True, channels_last: Optional[bool] = None, fuse: bool = True,
                 expected_labels=None, run: Optional[str] = None):
        if isinstance(model, (str, Path)):
            ckpt = load_checkpoint(model)
        elif isinstance(model, dict):
            ckpt = model
        else:
            raise TypeError("Predictor takes a checkpoint path or dict; use Predictor.from_model for a module")
        if expected_labels is not None:
            check_labels(ckpt, expected_labels)
        net = model_from_checkpoint(ckpt)
        path = ckpt.get("_path")
        if run is None:
            run = ckpt.get("run") or (Path(path).parent.name if path else None)
        largest = (ckpt.get("extra") or {}).get("largest_object")
        self._setup(net, list(ckpt["label_names"]), ckpt["normalization"], device, run=run,
                    batch_size=batch_size, tile=tile, overlap=overlap, max_detections=max_detections,
                    amp=amp, channels_last=channels_last, fuse=fuse,
                    largest_object=largest if isinstance(largest, int) and largest > 0 else None)
        self.path = path
        self.arch = ckpt["arch"]
        self.metrics = dict(ckpt.get("metrics") or {})

    @classmethod
    def from_model(cls, model: nn.Module, label_names: Sequence[str], normalization: dict, device: Any = "auto",
                   *, run: Optional[str] = None, copy_model: bool = True, **kw) -> "Predictor":
        """Wrap a built model (e.g. during training) without a checkpoint file.

        The model is deep-copied unless copy_model=False (then the device move, detection
        limit and autocast wrappers change the caller's model; BatchNorm is not fused)."""
        self = cls.__new__(cls)
        net = unwrap(model)
        if copy_model:
            net = copy.deepcopy(net)
        else:
            kw.setdefault("fuse", False)  # never fold BatchNorm of a model someone else still trains
        self._setup(net, list(label_names), normalization, device, run=run, **kw)
        self.path = None
        self.arch = (getattr(net, "maskloop_config", None) or {}).get("arch")
        self.metrics = {}
        return self

    def _setup(self, net, label_names, normalization, device, *, run, batch_size=None, tile=DEFAULT_TILE,
               overlap=None, max_detections=1000, amp=True, channels_last=None, fuse=True, expected_labels=None,
               largest_object=None):
        if expected_labels is not None:
            check_labels({"label_names": list(label_names)}, expected_labels)
        self.device = resolve_device(device)
        self.label_names = list(label_names)
        self.normalization = validate_policy(normalization)
        self.run = run
        self.tile = int(tile) if tile else 0
        self.largest_object = int(largest_object) if largest_object else None
        self._explicit_overlap = int(overlap) if overlap is not None else None
        self.overlap = self.overlap_for(self.tile)
        if self.tile and self.overlap >= self.tile:
            raise ValueError(f"tile overlap {self.overlap} must be smaller than the tile {self.tile}")
        self.max_detections = int(max_detections)
        self.amp_dtype = amp_dtype(self.device, amp)
        self.channels_last = (self.device.type == "cuda") if channels_last is None else bool(channels_last)
        if batch_size is None:
            batch_size = 4 if self.device.type == "cuda" else 1
        self.batch_size = max(1, int(batch_size))
        net.eval()
        if hasattr(net, "roi_heads") and hasattr(net, "rpn"):
            set_detections_per_img(net, self.max_detections)
        tr = getattr(net, "transform", None)
        self._crop_paste = tr is not None and hasattr(tr, "paste_full_masks")
        if self._crop_paste:
            tr.paste_full_masks = False
        if fuse:
            fuse_conv_bn(net)
        net.to(self.device)
        if self.amp_dtype is not None:
            if hasattr(net, "roi_heads") and hasattr(net, "backbone"):
                apply_autocast(net, self.device.type, self.amp_dtype)
                self._autocast_all = False
            else:  # an unknown module: autocast all of it
                self._autocast_all = True
        if self.channels_last:
            net.to(memory_format=torch.channels_last)
            if tr is not None and hasattr(tr, "channels_last"):
                tr.channels_last = True
        self.model = net
        self._autocast_all = getattr(self, "_autocast_all", False)
        self.last_timing: dict = {}

    def overlap_for(self, tile: int) -> int:
        """The overlap given to the constructor, else default_overlap(tile)."""
        return self._explicit_overlap if self._explicit_overlap is not None else self.default_overlap(tile)

    def default_overlap(self, tile: int) -> int:
        """Tile overlap when none is given: tile/8 (at least 32 px), widened to the largest
        object the model was trained on (+16 px) so such an object lies whole in some tile;
        at most half a tile."""
        ov = max(32, int(tile) // 8)
        if self.largest_object:
            ov = max(ov, self.largest_object + 16)
        return min(ov, max(1, int(tile) // 2))

    # -- inference --------------------------------------------------------------------
    def _forward(self, batch: list[torch.Tensor]) -> list[dict]:
        with torch.inference_mode():
            if self.amp_dtype is not None and self._autocast_all:
                with torch.autocast(self.device.type, dtype=self.amp_dtype):
                    return self.model(batch)
            return self.model(batch)

    def _to_instances(self, out: dict, th: int, tw: int, ox: int, oy: int, mask_threshold: float) -> list[Instance]:
        boxes = out["boxes"].float().cpu().numpy()
        scores = out["scores"].float().cpu().numpy()
        labels = out["labels"].cpu().numpy()
        if "mask_probs" in out:
            crops = paste_in_box(out["mask_probs"][:, 0].float().cpu().numpy(), boxes, th, tw, mask_threshold)
        else:  # a module that pastes full masks (N, 1, H, W): threshold one at a time
            crops = []
            for k in range(len(boxes)):
                m = out["masks"][k, 0]
                m = (m.float() >= mask_threshold) if m.dtype != torch.bool else m
                inst = Instance.from_full_mask(m.cpu().numpy(), "x")
                crops.append((inst.mask, inst.x0, inst.y0) if inst is not None else (np.zeros((0, 0), bool), 0, 0))
        res = []
        for (crop, x0, y0), s, lab in zip(crops, scores, labels):
            if crop.size == 0 or not crop.any():
                continue
            k = int(lab) - 1
            if not 0 <= k < len(self.label_names):
                continue
            inst = Instance(mask=crop, x0=x0 + ox, y0=y0 + oy, label=self.label_names[k], score=float(s),
                            source="model", model=self.run)
            res.append(inst.tight())
        return res

    def _prepare(self, image: np.ndarray) -> torch.Tensor:
        """Normalised (C, H, W) float32 CPU tensor: C = 1 for grey (repeated to 3 channels as a
        stride-0 view after the upload, so only one plane crosses to the device), else 3."""
        x = normalize_compact(np.asarray(image), self.normalization)
        t = torch.from_numpy(x)
        if t.ndim == 2:
            return t.unsqueeze(0)
        return t.permute(2, 0, 1)  # a (3, H, W) view with channels-last memory

    def predict(self, image: np.ndarray, *, score_threshold: float = 0.5, tile: Optional[int] = None,
                overlap: Optional[int] = None, progress: Optional[ProgressFn] = None,
                cancel: Optional[CancelToken] = None, mask_threshold: float = 0.5,
                min_area: int = 1) -> list[Instance]:
        """Instances (source "model", score, model = run id, masks cropped to their bbox).

        tile: None -> the predictor's tile size (default 1024); 0 -> never tile.
        """
        return self.predict_many([image], score_threshold=score_threshold, tile=tile, overlap=overlap,
                                 progress=progress, cancel=cancel, mask_threshold=mask_threshold,
                                 min_area=min_area)[0]

    def predict_many(self, images: Sequence[np.ndarray], *, score_threshold: float = 0.5,
                     tile: Optional[int] = None, overlap: Optional[int] = None,
                     progress: Optional[ProgressFn] = None, cancel: Optional[CancelToken] = None,
                     mask_threshold: float = 0.5, min_area: int = 1) -> list[list[Instance]]:
        """predict() for several images; tiles of equal size from all of them share batches."""
        t0 = time.perf_counter()
        tile = self.tile if tile is None else int(tile)
        ov = int(overlap) if overlap is not None else self.overlap_for(tile)
        rh = getattr(self.model, "roi_heads", None)
        if rh is not None:
            rh.score_thresh = float(score_threshold)  # the mask head only runs on kept boxes
        prepared, grids, jobs = [], [], []
        for n, image in enumerate(images):
            xt = self._prepare(image)
            H, W = xt.shape[-2:]
            if tile and (H > tile or W > tile):
                if ov >= tile:
                    raise ValueError(f"tile overlap {ov} must be smaller than the tile {tile}")
                grid = tile_grid(H, W, tile, ov)
            else:
                grid = [(0, 0, W, H)]
            prepared.append(xt)
            grids.append(grid)
            jobs.extend((n, t) for t in range(len(grid)))
        results: list[list[Optional[list[Instance]]]] = [[None] * len(g) for g in grids]
        t_model, done = 0.0, 0
        pos = 0
        while pos < len(jobs):
            check(cancel)
            # a batch: consecutive tiles of the same shape
            n0, t0_ = jobs[pos]
            r0 = grids[n0][t0_]
            shape = (r0[3] - r0[1], r0[2] - r0[0])
            chunk = [jobs[pos]]
            while (len(chunk) < self.batch_size and pos + len(chunk) < len(jobs)):
                n1, t1 = jobs[pos + len(chunk)]
                r1 = grids[n1][t1]
                if (r1[3] - r1[1], r1[2] - r1[0]) != shape:
                    break
                chunk.append(jobs[pos + len(chunk)])
            pos += len(chunk)
            batch = []
            for n, t in chunk:
                x0, y0, x1, y1 = grids[n][t]
                t = prepared[n][:, y0:y1, x0:x1].to(self.device, non_blocking=True)
                batch.append(t.expand(3, -1, -1) if t.shape[0] == 1 else t)
            tm = time.perf_counter()
            outs = self._forward(batch)
            t_model += time.perf_counter() - tm
            for (n, t), out in zip(chunk, outs):
                x0, y0, x1, y1 = grids[n][t]
                insts = self._to_instances(out, y1 - y0, x1 - x0, x0, y0, mask_threshold)
                results[n][t] = [i for i in insts if i.score >= score_threshold]
            done += len(chunk)
            report(progress, done, len(jobs), "tiles")
        check(cancel)
        final = []
        for n, grid in enumerate(grids):
            H, W = prepared[n].shape[-2:]
            per_tile = results[n]
            res = per_tile[0] if len(grid) == 1 else merge_tiles(per_tile, grid, H, W)
            if min_area > 1:
                res = [i for i in res if i.area >= min_area]
            final.append(res)
        self.last_timing = {"total_s": time.perf_counter() - t0, "model_s": t_model, "tiles": len(jobs)}
        return final

    # -- projects ---------------------------------------------------------------------
    def predict_items(self, project, item_ids: Optional[Iterable[str]] = None, *, score_threshold: float = 0.5,
                      tile: Optional[int] = None, progress: Optional[ProgressFn] = None,
                      cancel: Optional[CancelToken] = None, overwrite_reviewed: bool = False,
                      keep_manual: bool = True) -> dict:
        """Segment items of a project and save the results.

        Each item gets status "predicted" (also when nothing was found). Reviewed items
        are skipped unless overwrite_reviewed. Previous model instances are replaced;
        manual/classic/imported instances are kept (keep_manual) and predictions that
        duplicate one of them (mask IoU >= 0.5) are left out. Progress and cancel per
        item; on cancel, items finished so far stay saved and CancelledError is raised.
        Returns {"predicted": [ids], "skipped": [ids], "instances": n}.
        """
        ids = [it.id for it in project.items] if item_ids is None else list(item_ids)
        known = project.labels.names()
        missing = [n for n in self.label_names if n not in known]
        if missing:
            raise LabelError(f"the model predicts labels the project does not have: {', '.join(missing)}; "
                             f"add them to the project first", self.path)
        done, skipped, total_inst = [], [], 0
        for k, item_id in enumerate(ids):
            check(cancel)
            report(progress, k, len(ids), str(item_id))
            ann = project.load_annotation(item_id)
            if ann.status == "reviewed" and not overwrite_reviewed:
                skipped.append(item_id)
                continue
            image = project.load_image(item_id)
            insts = self.predict(image, score_threshold=score_threshold, tile=tile, cancel=cancel)
            kept = [i for i in ann.instances if i.source != "model"] if keep_manual else []
            if kept:
                from ..masks import iou
                insts = [p for p in insts if not any(
                    _boxes_meet(_xyxy(p), _xyxy(q)) and iou(p, q) >= 0.5 for q in kept)]
            new = ItemAnnotation(ann.item_id, ann.height, ann.width, kept + insts, status="predicted")
            if (new.height, new.width) != image.shape[:2]:
                new = ItemAnnotation(ann.item_id, image.shape[0], image.shape[1], new.instances, "predicted")
            project.save_annotation(new)
            done.append(item_id)
            total_inst += len(insts)
        report(progress, len(ids), len(ids), "done")
        return {"predicted": done, "skipped": skipped, "instances": total_inst}

    def __repr__(self) -> str:
        return (f"Predictor({self.arch}, labels={self.label_names}, device={self.device}, tile={self.tile}, "
                f"overlap={self.overlap}, batch={self.batch_size}, amp={self.amp_dtype})")
