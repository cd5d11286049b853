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
  tiles batched. On CPU: conv+BatchNorm fused, no upscaling; for r18fpn_lite on a CPU that
  computes bf16 in hardware (AVX512_BF16 or AMX; the rule is device.cpu_bf16_default) the
  conv parts run under bf16 autocast with channels_last (oneDNN), else fp32. amp=False or
  $MASKLOOP_CPU_BF16=0 keeps fp32, amp="bf16" asks for it (docs/benchmarks.md, the CPU path).
- `predict_items` writes results into a Project: status "predicted" (also when nothing
  was found), reviewed items are never overwritten, progress and cancel per item.
"""
from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

import cv2
import numpy as np
import torch
from torch import nn

from ..annotations import Instance, ItemAnnotation
from ..jobs import CancelToken, ProgressFn, check, report
from ..results import merged_annotation
from .architectures import set_detections_per_img, unwrap
from .checkpoint import check_labels, load_checkpoint, model_from_checkpoint
from .device import amp_dtype, apply_autocast, fuse_conv_bn, resolve_device
from .normalize import normalize_compact, validate_policy
from .tiling import merge_tiles, tile_grid

DEFAULT_TILE = 1024


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
        self._setup(net, list(ckpt["label_names"]), ckpt["normalization"], device, run=run, arch=ckpt.get("arch"),
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
        arch = (getattr(net, "maskloop_config", None) or {}).get("arch")
        self._setup(net, list(label_names), normalization, device, run=run, arch=arch, **kw)
        self.path = None
        self.arch = arch
        self.metrics = {}
        return self

    def _setup(self, net, label_names, normalization, device, *, run, batch_size=None, tile=DEFAULT_TILE,
               overlap=None, max_detections=1000, amp=True, channels_last=None, fuse=True, expected_labels=None,
               largest_object=None, arch=None):
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
        self.amp_dtype = amp_dtype(self.device, amp, arch)
        if channels_last is None:  # with reduced precision on the CPU too: oneDNN's fast bf16 convs want it
            channels_last = self.device.type == "cuda" or (self.device.type == "cpu" and self.amp_dtype is not None)
        self.channels_last = bool(channels_last)
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
        duplicate one of them are left out (the merge rule of engine.results). Progress and cancel per
        item; on cancel, items finished so far stay saved and CancelledError is raised.
        Returns {"predicted": [ids], "skipped": [ids], "instances": n}.
        """
        ids = [it.id for it in project.items] if item_ids is None else list(item_ids)
        check_labels({"label_names": self.label_names, "_path": self.path}, project.labels)
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
            if not keep_manual:  # start the item afresh: nothing is kept
                ann = ItemAnnotation(ann.item_id, ann.height, ann.width, [], ann.status)
            new = merged_annotation(ann, insts, source="model", shape=image.shape[:2],
                                    overwrite_reviewed=overwrite_reviewed)
            project.save_annotation(new)
            done.append(item_id)
            total_inst += sum(1 for i in new.instances if i.source == "model")
        report(progress, len(ids), len(ids), "done")
        return {"predicted": done, "skipped": skipped, "instances": total_inst}

    def __repr__(self) -> str:
        return (f"Predictor({self.arch}, labels={self.label_names}, device={self.device}, tile={self.tile}, "
                f"overlap={self.overlap}, batch={self.batch_size}, amp={self.amp_dtype})")
