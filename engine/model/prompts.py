"""Box and click prompts answered by the project's own Mask R-CNN from cached features.

The item's backbone/FPN features and RPN proposals are computed once per item per model
(engine.model.feature_cache); a prompt then costs RoIAlign and the heads only:

- Box prompt: the box head scores the user's box; the label is the user's (when the
  model knows it) or the box head's preferred class. One pass of the box head refines
  the box; the refined box is used when the box head scores it higher for that class.
  The mask head then predicts the mask in the chosen box.
- Click prompt: the box head has already scored every RPN proposal when the item was
  cached, and the mask head has run on the window's detections (what `predict` finds,
  scores down to 0.05, at most 100: engine.model.prompt_heads), so caching costs about one
  `predict`. The best-scoring cached detection whose mask covers the clicked pixel is the
  answer, a lookup. Only a click outside all of them runs the head: the detections
  (refined boxes, else their proposals) that contain the click are ranked by class score
  (any score), and the best one whose mask covers the clicked pixel is the answer (the
  mask head runs on the best one first, then on the next few only if needed).
- The box and mask heads run from a bf16 copy where the CPU computes bf16 natively
  (engine.model.prompt_heads.PromptHeads).

Tiled items (larger than the predictor's tile): a prompt uses one tile-sized window that
contains the box (the tile of the predictor's grid nearest the box's centre, else a
window centred on the box); a box larger than a tile is refused.

Answers are `engine.prompt_classic.PromptAnswer`s whose instance has source "prompt"
(the user drew it with the model's help; it is not model output).
"""
from __future__ import annotations

from typing import Hashable, Optional

import numpy as np
import torch
from torchvision.models.detection.rpn import concat_box_prediction_layers
from torchvision.ops import boxes as box_ops

from ..annotations import Instance
from ..errors import MaskLoopError
from ..jobs import CancelToken, check
from ..prompt_classic import PromptAnswer, clip_box
from .feature_cache import Detections, FeatureCache, Window, WindowFeatures
from .normalize import normalize_compact
from .predictor import paste_in_box
from .prompt_heads import MASK_CHUNK, PromptHeads, top_detections
from .tiling import tile_grid

MASK_THRESHOLD = 0.5
CLICK_MASKS = 5          # at most this many of the click's best detections get a mask tried


class PromptEngine:
    """Answers prompts with one Predictor (its warm model) and one FeatureCache.

    bf16: run the box and mask heads from a bf16 copy (None: where it pays, prompt_heads.bf16_heads_pay).
    cache_masks: compute the detections' masks with the features (clicks become lookups);
    False is the older path, kept for benchmarks/bench_prompts.py --baseline.
    """

    def __init__(self, predictor, cache: Optional[FeatureCache] = None, *, bf16: Optional[bool] = None,
                 cache_masks: bool = True):
        self.cache = cache if cache is not None else FeatureCache()
        self._predictor = predictor
        self._bf16, self.cache_masks = bf16, bool(cache_masks)
        self._heads: Optional[PromptHeads] = None     # built on first use, in the caller's (worker) thread
        self.click_counts = {"lookup": 0, "head": 0}   # how clicks were answered (benchmarks, tests)

    @property
    def predictor(self):
        return self._predictor

    def set_predictor(self, predictor) -> None:
        """Another active model: every cached feature belongs to the old one."""
        self._predictor = predictor
        self._heads = None
        self.cache.clear()

    @property
    def heads(self) -> PromptHeads:
        if self._heads is None:
            self._heads = PromptHeads(self._predictor, self._bf16)
        return self._heads

    # -- windows ------------------------------------------------------------------------
    def _tiled(self, H: int, W: int) -> int:
        tile = int(self._predictor.tile or 0)
        return tile if tile and (H > tile or W > tile) else 0

    def window_for_box(self, box: Window, H: int, W: int) -> Window:
        tile = self._tiled(H, W)
        if not tile:
            return (0, 0, W, H)
        bw, bh = box[2] - box[0], box[3] - box[1]
        if bw > tile or bh > tile:
            raise MaskLoopError(f"the box ({bw}x{bh} px) is larger than a tile of this image ({tile} px): "
                                f"draw a smaller box", field="box")
        return self._window_around(box, H, W, tile)

    def window_for_point(self, x: int, y: int, H: int, W: int) -> Window:
        tile = self._tiled(H, W)
        return (0, 0, W, H) if not tile else self._window_around((x, y, x + 1, y + 1), H, W, tile)

    def _window_around(self, box: Window, H: int, W: int, tile: int) -> Window:
        grid = tile_grid(H, W, tile, self._predictor.overlap_for(tile))
        inside = [t for t in grid if t[0] <= box[0] and t[1] <= box[1] and t[2] >= box[2] and t[3] >= box[3]]
        if inside:  # the tile that holds the box farthest from its edges
            return max(inside, key=lambda t: min(box[0] - t[0], box[1] - t[1], t[2] - box[2], t[3] - box[3]))
        tw, th = min(tile, W), min(tile, H)
        cx, cy = (box[0] + box[2]) // 2, (box[1] + box[3]) // 2
        x0 = int(np.clip(cx - tw // 2, 0, W - tw))
        y0 = int(np.clip(cy - th // 2, 0, H - th))
        return (x0, y0, x0 + tw, y0 + th)

    # -- features -----------------------------------------------------------------------
    def prepare(self, item_key: Hashable, image: np.ndarray, window: Optional[Window] = None,
                cancel: Optional[CancelToken] = None) -> WindowFeatures:
        """Cache the features of the item (of `window`; default: the whole item, or for a
        tiled item its first tile). The inference worker calls this when an item is shown."""
        H, W = np.asarray(image).shape[:2]
        if window is None:
            window = self.window_for_point(0, 0, H, W)
        check(cancel)
        return self.cache.get(self._predictor, item_key, image, window,
                              lambda w: self._compute(image, w, cancel))

    def _compute(self, image: np.ndarray, window: Window, cancel: Optional[CancelToken] = None
                 ) -> WindowFeatures:
        p = self._predictor
        net = p.model
        x0, y0, x1, y1 = window
        arr = normalize_compact(np.asarray(image), p.normalization)[y0:y1, x0:x1]
        t = torch.from_numpy(np.ascontiguousarray(arr))
        t = t.unsqueeze(0) if t.ndim == 2 else t.permute(2, 0, 1)
        t = t.to(p.device)
        if t.shape[0] == 1:
            t = t.expand(3, -1, -1)
        with torch.inference_mode():
            images, _ = net.transform([t])
            features = net.backbone(images.tensors)
            proposals, objectness = _rpn_with_scores(net.rpn, images, features)
            h, w = images.image_sizes[0]
            wf = WindowFeatures(window=window, features=features, image_size=(int(h), int(w)),
                                scale=(h / (y1 - y0), w / (x1 - x0)), proposals=proposals,
                                objectness=objectness, class_probs=None, refined=None)
            wf.class_probs, wf.refined = self._box_head(wf, proposals)
        if self.cache_masks:
            wf.detections = self._detections(wf, cancel)
        return wf

    def _detections(self, wf: WindowFeatures, cancel: Optional[CancelToken]) -> Detections:
        """predict's detections of the window and their mask probabilities."""
        nms = float(getattr(self._predictor.model.roi_heads, "nms_thresh", 0.5))
        boxes, classes, scores, proposal = top_detections(wf.class_probs, wf.refined, nms)
        probs = []
        for i in range(0, len(boxes), MASK_CHUNK):
            check(cancel)
            probs.append(self._mask_probs(wf, boxes[i:i + MASK_CHUNK], classes[i:i + MASK_CHUNK]))
        probs = np.concatenate(probs) if probs else np.zeros((0, 1, 1), np.float32)
        return Detections(boxes=boxes, classes=classes, scores=scores, proposal=proposal, probs=probs)

    # -- heads on a few boxes -------------------------------------------------------------
    def _box_head(self, wf: WindowFeatures, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(class probabilities (K, C), class-specific refined boxes (K, C, 4))."""
        logits, reg = self.heads.box(wf.features, boxes, wf.image_size)
        probs = torch.softmax(logits, -1)
        refined = self._predictor.model.roi_heads.box_coder.decode(reg, [boxes]).reshape(len(boxes), -1, 4)
        return probs, box_ops.clip_boxes_to_image(refined, wf.image_size)

    def _mask_probs(self, wf: WindowFeatures, boxes: torch.Tensor, classes: torch.Tensor) -> np.ndarray:
        return self.heads.mask(wf.features, boxes, classes, wf.image_size)

    def _to_window_px(self, wf: WindowFeatures, boxes: torch.Tensor) -> np.ndarray:
        sy, sx = wf.scale
        b = boxes.float().cpu().numpy().reshape(-1, 4).copy()
        b[:, 0::2] /= sx
        b[:, 1::2] /= sy
        return b

    def _paste(self, wf: WindowFeatures, probs: np.ndarray, boxes: torch.Tensor, label: str
               ) -> list[Optional[Instance]]:
        x0, y0, x1, y1 = wf.window
        out: list[Optional[Instance]] = []
        for crop, cx, cy in paste_in_box(probs, self._to_window_px(wf, boxes), y1 - y0, x1 - x0, MASK_THRESHOLD):
            if crop.size == 0 or not crop.any():
                out.append(None)
                continue
            out.append(Instance(mask=crop, x0=cx + x0, y0=cy + y0, label=label, source="prompt").tight())
        return out

    def _cached_crop(self, wf: WindowFeatures, k: int) -> Optional[tuple[np.ndarray, int, int]]:
        """Detection k's pasted mask (bool crop, x0, y0 in item px), pasted once."""
        d = wf.detections
        if k not in d.crops:
            inst = self._paste(wf, d.probs[k:k + 1], d.boxes[k:k + 1], "")[0]
            d.crops[k] = None if inst is None else (inst.mask, inst.x0, inst.y0)
        return d.crops[k]

    def _click_cached(self, wf: WindowFeatures, x: int, y: int, px: float, py: float,
                      cls: Optional[int]) -> tuple[Optional[PromptAnswer], set]:
        """The best cached detection whose mask covers (x, y), and the (proposal, class)
        pairs looked at (the head would give them the same masks)."""
        d = wf.detections
        if d is None or len(d.scores) == 0:
            return None, set()
        inside = _contains(d.boxes, px, py)
        if cls is not None:
            inside &= d.classes == cls
        seen = set()
        for k in torch.nonzero(inside)[:, 0].tolist():     # best score first
            seen.add((int(d.proposal[k]), int(d.classes[k])))
            got = self._cached_crop(wf, k)
            if got is None or not _crop_covers(got, x, y):
                continue
            mask, cx, cy = got
            name = self._predictor.label_names[int(d.classes[k]) - 1]
            inst = Instance(mask=mask.copy(), x0=cx, y0=cy, label=name, source="prompt")
            return PromptAnswer(inst, "model-click", label=name, score=float(d.scores[k])), seen
        return None, seen

    def _class_for(self, label: Optional[str]) -> Optional[int]:
        names = self._predictor.label_names
        return names.index(label) + 1 if label in names else None

    # -- prompts ------------------------------------------------------------------------
    def box(self, item_key: Hashable, image: np.ndarray, box, *, label: Optional[str] = None,
            refine: bool = True) -> Optional[PromptAnswer]:
        """The mask for a user box (x0, y0, x1, y1); None when the mask head finds nothing."""
        H, W = np.asarray(image).shape[:2]
        b = clip_box(box, H, W)
        win = self.window_for_box(b, H, W)
        wf = self.prepare(item_key, image, win)
        sy, sx = wf.scale
        bt = torch.tensor([[(b[0] - win[0]) * sx, (b[1] - win[1]) * sy,
                            (b[2] - win[0]) * sx, (b[3] - win[1]) * sy]],
                          dtype=torch.float32, device=wf.proposals.device)
        with torch.inference_mode():
            probs, refined = self._box_head(wf, bt)
            cls = self._class_for(label)
            if cls is None:
                cls = int(torch.argmax(probs[0, 1:])) + 1
            score, chosen, used_refined = float(probs[0, cls]), bt, False
            if refine:
                rb = refined[:, cls]
                if float((rb[0, 2] - rb[0, 0]) * (rb[0, 3] - rb[0, 1])) > 0:
                    p2, _ = self._box_head(wf, rb)
                    if float(p2[0, cls]) > score:
                        score, chosen, used_refined = float(p2[0, cls]), rb, True
            probs_m = self._mask_probs(wf, chosen, torch.tensor([cls], device=chosen.device))
        name = self._predictor.label_names[cls - 1]
        inst = self._paste(wf, probs_m, chosen, label or name)[0]
        if inst is None:
            return None
        return PromptAnswer(inst, "model-box", label=name, score=score, refined=used_refined)

    def click(self, item_key: Hashable, image: np.ndarray, point, *, label: Optional[str] = None
              ) -> Optional[PromptAnswer]:
        """The best detection/proposal (any score) whose mask covers the clicked pixel."""
        H, W = np.asarray(image).shape[:2]
        x, y = int(point[0]), int(point[1])
        if not (0 <= x < W and 0 <= y < H):
            return None
        win = self.window_for_point(x, y, H, W)
        wf = self.prepare(item_key, image, win)
        sy, sx = wf.scale
        px, py = (x + 0.5 - win[0]) * sx, (y + 0.5 - win[1]) * sy
        P, n = wf.proposals, len(wf.proposals)
        cls = self._class_for(label)
        hit, seen = self._click_cached(wf, x, y, px, py, cls)
        if hit is not None:
            self.click_counts["lookup"] += 1
            hit.instance.label = label or hit.label
            return hit
        self.click_counts["head"] += 1
        if cls is None:
            score, c = wf.class_probs[:, 1:].max(1)
            c = c + 1
        else:
            c = torch.full((n,), cls, dtype=torch.long, device=P.device)
            score = wf.class_probs[:, cls]
        det = wf.refined[torch.arange(n), c]
        in_det = _contains(det, px, py)
        box = torch.where(in_det[:, None], det, P)       # a refined box that left the click: the proposal
        cand = torch.nonzero(in_det | _contains(P, px, py))[:, 0]
        if seen:                                         # cached detections already looked at
            cand = torch.tensor([k for k in cand.tolist() if not (in_det[k] and (k, int(c[k])) in seen)],
                                dtype=torch.long, device=P.device)
        if cand.numel() == 0:
            return None
        cand = cand[torch.argsort(score[cand], descending=True)][:CLICK_MASKS]
        names = self._predictor.label_names
        for chunk in (cand[:1], cand[1:]):               # usually the best one covers the click
            if chunk.numel() == 0:
                continue
            with torch.inference_mode():
                mprobs = self._mask_probs(wf, box[chunk], c[chunk])
            for k, inst in zip(chunk.tolist(), self._paste(wf, mprobs, box[chunk], "")):
                if inst is not None and _covers(inst, x, y):
                    name = names[int(c[k]) - 1]
                    inst.label = label or name
                    return PromptAnswer(inst, "model-click", label=name, score=float(score[k]))
        return None


def _contains(boxes: torch.Tensor, px: float, py: float) -> torch.Tensor:
    return (boxes[:, 0] <= px) & (boxes[:, 2] >= px) & (boxes[:, 1] <= py) & (boxes[:, 3] >= py)


def _covers(inst: Instance, x: int, y: int) -> bool:
    return _crop_covers((inst.mask, inst.x0, inst.y0), x, y)


def _crop_covers(crop: tuple[np.ndarray, int, int], x: int, y: int) -> bool:
    mask, x0, y0 = crop
    cx, cy = x - x0, y - y0
    return 0 <= cy < mask.shape[0] and 0 <= cx < mask.shape[1] and bool(mask[cy, cx])


def _rpn_with_scores(rpn, images, features) -> tuple[torch.Tensor, torch.Tensor]:
    """torchvision's RegionProposalNetwork.forward (eval) that also returns the proposals'
    objectness, which the click prompt ranks by."""
    feats = list(features.values())
    objectness, deltas = rpn.head(feats)
    anchors = rpn.anchor_generator(images, feats)
    per_level = [o[0].numel() for o in objectness]
    objectness, deltas = concat_box_prediction_layers(objectness, deltas)
    proposals = rpn.box_coder.decode(deltas.detach(), anchors).view(len(anchors), -1, 4)
    boxes, scores = rpn.filter_proposals(proposals, objectness.detach(), images.image_sizes, per_level)
    return boxes[0], scores[0]


def model_answerer(engine: PromptEngine, image_of, key_of=lambda k: k, label: Optional[str] = None):
    """A propagation answerer (engine.propagate): the box prompt on slice k, whose raw image
    is `image_of(k)` and whose cache key is `key_of(k)` (e.g. the slice's item id)."""
    def answer(k: int, box):
        got = engine.box(key_of(k), image_of(k), box, label=label)
        return got.instance if got is not None else None
    return answer
