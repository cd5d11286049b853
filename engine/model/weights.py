"""Starting weights of a model ("bases"): scratch, coco, imagenet, or a MaskLoop
checkpoint (another run's model, or any checkpoint path).

"scratch": random init, trainable BatchNorm or GroupNorm. "coco": torchvision's COCO
Mask R-CNN weights from the torch hub cache, or downloaded when that works; a clear
CheckpointError otherwise, never a hang. "imagenet": backbone weights only. A
checkpoint (path or loaded dict): its architecture and weights; class heads are
replaced when the classes differ. What a run started from is named by
engine.runs.weights_kind (scratch | coco | imagenet | run | path).
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any, Iterable, Optional

import torch
from torch import nn
from torchvision.models import resnet as tv_resnet
from torchvision.models.detection import mask_rcnn as tv_mask_rcnn
from torchvision.models.detection.mask_rcnn import MaskRCNN

from ..errors import CheckpointError
from ..fsutil import _fsync_dir
from .architectures import BACKBONES, COCO_WEIGHTS, construct, default_config, load_state, replace_heads, unwrap
from .checkpoint import load_checkpoint, validate_checkpoint

BASES = ("scratch", "coco", "imagenet")   # besides a checkpoint path or dict
DOWNLOAD_STALL_S = 20.0

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
    if base == "coco" and arch not in COCO_WEIGHTS:
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
        weights = getattr(tv_mask_rcnn, COCO_WEIGHTS[arch]).COCO_V1
        state = fetch_weights(weights, f"COCO weights for {arch}", allow_download=allow_download)
        n_coco = len(weights.meta["categories"])
        model = construct(dict(config, num_classes=n_coco))
        load_state(model, state, "COCO weights", strict_heads=True)
        if arch == "r50fpn" and config["norm"] == "frozen":
            # torchvision's r50fpn COCO weights were trained with eps 0 in FrozenBatchNorm
            from torchvision.models.detection._utils import overwrite_eps
            overwrite_eps(model, 0.0)
        if num_classes != n_coco:
            replace_heads(model, num_classes)
        model.maskloop_config = config
        return model
    # imagenet: backbone body only
    body_name, enum_name = BACKBONES[arch]
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
    load_state(model, ckpt["state_dict"], path or "checkpoint", strict_heads=True)
    same = (list(label_names) == list(ckpt["label_names"])) if label_names is not None \
        else int(num_classes) == int(config["num_classes"])
    if not same:
        replace_heads(model, int(num_classes))
    return model


def coco_weights_cached(arch: str) -> bool:
    """True when torchvision's COCO weights for `arch` are in the torch hub cache (so
    "auto" can start from them without a download)."""
    if arch not in COCO_WEIGHTS:
        return False
    return weights_file(getattr(tv_mask_rcnn, COCO_WEIGHTS[arch]).COCO_V1).is_file()


def init_predictors(model: nn.Module) -> None:
    """Small initial weights for freshly made class-specific layers (as detectron2 does).

    torchvision initialises the mask logits with kaiming fan_out (std 1 for a 1x1 conv
    with 2 outputs), which gives an initial mask loss around 10 and a violent first few
    hundred iterations from scratch; std 0.001 (masks, boxes) and 0.01 (class scores)
    start every prediction near "don't know".
    """
    m = unwrap(model)
    rh = m.roi_heads
    bp = rh.box_predictor
    with torch.no_grad():
        nn.init.normal_(bp.cls_score.weight, std=0.01)
        nn.init.zeros_(bp.cls_score.bias)
        nn.init.normal_(bp.bbox_pred.weight, std=0.001)
        nn.init.zeros_(bp.bbox_pred.bias)
        mp = getattr(rh, "mask_predictor", None)
        if mp is not None and hasattr(mp, "mask_fcn_logits"):
            nn.init.normal_(mp.mask_fcn_logits.weight, std=0.001)
            nn.init.zeros_(mp.mask_fcn_logits.bias)
