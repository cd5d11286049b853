"""Instance segmentation metrics: COCO mask AP / AP50 (pycocotools) and acc50.

- mask_AP: COCO AP averaged over IoU 0.50:0.05:0.95 (iouType "segm", all areas),
  mask_AP50 / mask_AP75 at IoU 0.5 / 0.75. maxDets is raised to fit the image with the
  most predictions (at least 1000), so dense nuclei and grains are not cut at 100.
- acc50: the microscopy (StarDist) accuracy TP / (TP + FP + FN) at IoU >= 0.5 with
  one-to-one matching (greedy by IoU, same class only), over predictions with score
  >= acc_score_threshold; precision50, recall50 and f1_50 from the same counts.

Conventions for empty sets: with no ground truth at all, AP and acc50 are 1.0 when
nothing was predicted either, else 0.0. Classes without ground truth do not count in AP
(the COCO rule); their predictions still count as false positives in acc50.
This module imports no torch: evaluation runs without the ML stack.
"""
from __future__ import annotations

import contextlib
import io
from typing import Iterable, Optional, Sequence

import numpy as np
from pycocotools import mask as coco_mask
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from ..annotations import Instance, ItemAnnotation


def _rle(inst: Instance, shape: tuple[int, int]) -> dict:
    """Compressed COCO RLE of an instance on the full image, built from its columns only
    (no full-image array per instance: 1000+ instances of a large image stay cheap)."""
    H, W = shape
    xs, xe = max(inst.x0, 0), min(inst.x0 + inst.width, W)
    ys, ye = max(inst.y0, 0), min(inst.y0 + inst.height, H)
    if xe <= xs or ye <= ys:
        return coco_mask.frPyObjects({"size": [H, W], "counts": [H * W]}, H, W)
    block = np.zeros((H, xe - xs), np.uint8)
    block[ys:ye] = inst.mask[ys - inst.y0:ye - inst.y0, xs - inst.x0:xe - inst.x0]
    flat = block.ravel(order="F")
    bounds = np.concatenate([[0], np.flatnonzero(np.diff(flat)) + 1, [flat.size]])
    runs = np.diff(bounds).astype(np.int64)
    if flat[0]:
        runs = np.concatenate([[0], runs])
    runs[0] += xs * H                       # zero columns before the block
    trail = (W - xe) * H
    if len(runs) % 2:                       # ends with a zero run
        runs[-1] += trail
    elif trail:
        runs = np.concatenate([runs, [trail]])
    return coco_mask.frPyObjects({"size": [H, W], "counts": runs.tolist()}, H, W)


def _instances(pred) -> list[Instance]:
    if isinstance(pred, ItemAnnotation):
        return list(pred.instances)
    return list(pred or [])


def _coco(images, categories, anns) -> COCO:
    c = COCO()
    c.dataset = {"images": images, "categories": categories, "annotations": anns}
    with contextlib.redirect_stdout(io.StringIO()):
        c.createIndex()
    return c


class _SparseCOCOeval(COCOeval):
    """COCOeval with the per-image matching done over overlapping pairs only.

    pycocotools' evaluateImg loops over thresholds x detections x ground truths in
    Python: 11 s for one image with 1400 nuclei. Without crowd or ignored ground truth
    (MaskLoop never has them, the area range is "all") its greedy matching only ever
    picks a ground truth with IoU >= threshold > 0, so looping over each detection's
    overlapping ground truths gives exactly the same result; otherwise the original runs.
    """

    def evaluateImg(self, imgId, catId, aRng, maxDet):
        p = self.params
        if not p.useCats:
            return super().evaluateImg(imgId, catId, aRng, maxDet)
        gt = self._gts[imgId, catId]
        dt = self._dts[imgId, catId]
        if len(gt) == 0 and len(dt) == 0:
            return None
        if any(g["ignore"] or g["iscrowd"] or g["area"] < aRng[0] or g["area"] > aRng[1] for g in gt) \
                or min(p.iouThrs) <= 0:
            return super().evaluateImg(imgId, catId, aRng, maxDet)
        for g in gt:
            g["_ignore"] = 0
        dtind = np.argsort([-d["score"] for d in dt], kind="mergesort")
        dt = [dt[i] for i in dtind[0:maxDet]]
        ious = self.ious[imgId, catId]
        T, G, D = len(p.iouThrs), len(gt), len(dt)
        gtm = np.zeros((T, G))
        dtm = np.zeros((T, D))
        gtIg = np.zeros(G, dtype=np.int64)
        dtIg = np.zeros((T, D))
        if len(ious) != 0:
            ious = np.asarray(ious)
            cand = [np.flatnonzero(ious[d] > 0) for d in range(D)]
            for tind, t in enumerate(p.iouThrs):
                for dind in range(D):
                    best, m = min(t, 1 - 1e-10), -1
                    for gind in cand[dind]:
                        if gtm[tind, gind] > 0:
                            continue
                        v = ious[dind, gind]
                        if v < best:
                            continue
                        best, m = v, gind
                    if m == -1:
                        continue
                    dtm[tind, dind] = gt[m]["id"]
                    gtm[tind, m] = dt[dind]["id"]
        a = np.array([d["area"] < aRng[0] or d["area"] > aRng[1] for d in dt]).reshape((1, D))
        dtIg = np.logical_or(dtIg, np.logical_and(dtm == 0, np.repeat(a, T, 0)))
        return {"image_id": imgId, "category_id": catId, "aRng": aRng, "maxDet": maxDet,
                "dtIds": [d["id"] for d in dt], "gtIds": [g["id"] for g in gt],
                "dtMatches": dtm, "gtMatches": gtm, "dtScores": [d["score"] for d in dt],
                "gtIgnore": gtIg, "dtIgnore": dtIg}


def _mean_valid(x: np.ndarray) -> float:
    v = x[x > -1]
    return float(v.mean()) if v.size else -1.0


def match_counts(gt_rles: Sequence[dict], gt_cls: Sequence[int], dt_rles: Sequence[dict], dt_cls: Sequence[int],
                 iou_threshold: float = 0.5) -> tuple[int, int, int]:
    """(TP, FP, FN) of one image: one-to-one matching at IoU >= threshold, same class."""
    ng, nd = len(gt_rles), len(dt_rles)
    if ng == 0 or nd == 0:
        return 0, nd, ng
    ious = np.asarray(coco_mask.iou(list(dt_rles), list(gt_rles), [0] * ng), dtype=np.float64).reshape(nd, ng)
    same = np.asarray(dt_cls)[:, None] == np.asarray(gt_cls)[None, :]
    ious = np.where(same, ious, 0.0)
    di, gi = np.nonzero(ious >= iou_threshold)
    order = np.argsort(-ious[di, gi], kind="stable")
    used_d, used_g = set(), set()
    for k in order:
        d, g = int(di[k]), int(gi[k])
        if d in used_d or g in used_g:
            continue
        used_d.add(d)
        used_g.add(g)
    tp = len(used_d)
    return tp, nd - tp, ng - tp


def evaluate(pairs: Iterable[tuple[ItemAnnotation, object]], label_names: Sequence[str], *,
             acc_iou: float = 0.5, acc_score_threshold: float = 0.5, max_dets: Optional[int] = None,
             per_class: bool = True, fast: bool = True) -> dict:
    """Metrics over (ground truth ItemAnnotation, predicted list[Instance] or ItemAnnotation) pairs.

    Instances whose label is not in label_names are ignored (counted in "ignored").
    Prediction scores of None count as 1.0. Returns plain floats/ints (JSON-ready).
    fast=False uses pycocotools' own (slow, identical) per-image matching.
    """
    names = list(label_names)
    cat_of = {n: k + 1 for k, n in enumerate(names)}
    categories = [{"id": k + 1, "name": n} for k, n in enumerate(names)]
    images, gt_anns, dt_anns = [], [], []
    tp = fp = fn = 0
    ignored = 0
    most = 0
    for img_id, (gt, pred) in enumerate(pairs, start=1):
        shape = (int(gt.height), int(gt.width))
        images.append({"id": img_id, "height": shape[0], "width": shape[1]})
        def coco_anns(instances, into: list, scored: bool):
            """COCO annotations of the countable instances (known label, non-empty)."""
            nonlocal ignored
            for inst in instances:
                if inst.label not in cat_of:
                    ignored += 1
                    continue
                if inst.is_empty():
                    continue
                r = _rle(inst, shape)
                area = float(coco_mask.area(r))
                if area > 0:
                    ann = {"id": len(into) + 1, "image_id": img_id, "category_id": cat_of[inst.label],
                           "segmentation": r, "area": area, "bbox": list(coco_mask.toBbox(r)), "iscrowd": 0}
                    if scored:
                        ann["score"] = 1.0 if inst.score is None else float(inst.score)
                    into.append(ann)
                    yield ann

        gts = list(coco_anns(gt.instances, gt_anns, scored=False))
        preds = _instances(pred)
        most = max(most, len(preds))
        dts = [d for d in coco_anns(preds, dt_anns, scored=True) if d["score"] >= acc_score_threshold]
        g_rles, g_cls = [g["segmentation"] for g in gts], [g["category_id"] for g in gts]
        d_rles, d_cls = [d["segmentation"] for d in dts], [d["category_id"] for d in dts]
        a, b, c = match_counts(g_rles, g_cls, d_rles, d_cls, acc_iou)
        tp, fp, fn = tp + a, fp + b, fn + c

    out = {"images": len(images), "gt_instances": len(gt_anns), "pred_instances": len(dt_anns),
           "tp": tp, "fp": fp, "fn": fn, "ignored": ignored}
    denom = tp + fp + fn
    out["acc50"] = float(tp / denom) if denom else 1.0
    out["precision50"] = float(tp / (tp + fp)) if tp + fp else (1.0 if fn == 0 else 0.0)
    out["recall50"] = float(tp / (tp + fn)) if tp + fn else 1.0
    pr, rc = out["precision50"], out["recall50"]
    out["f1_50"] = float(2 * pr * rc / (pr + rc)) if pr + rc else 0.0

    if not gt_anns:
        v = 1.0 if not dt_anns else 0.0
        out.update(mask_AP=v, mask_AP50=v, mask_AP75=v)
        if per_class:
            out["per_class"] = {}
        return out

    gt_coco = _coco(images, categories, gt_anns)
    dt_coco = _coco(images, categories, dt_anns)
    E = (_SparseCOCOeval if fast else COCOeval)(gt_coco, dt_coco, iouType="segm")
    E.params.imgIds = [im["id"] for im in images]
    E.params.areaRng = [[0, 1e10]]
    E.params.areaRngLbl = ["all"]
    big = max(1000, most, int(max_dets or 0))
    E.params.maxDets = [1, 100, big]
    with contextlib.redirect_stdout(io.StringIO()):
        E.evaluate()
        E.accumulate()
    prec = E.eval["precision"]  # [T, R, K, A, M]
    thr = np.asarray(E.params.iouThrs)
    t50, t75 = int(np.argmin(np.abs(thr - 0.5))), int(np.argmin(np.abs(thr - 0.75)))
    p = prec[:, :, :, 0, -1]

    def clean(v: float) -> float:
        return float(v) if v > -1 else 0.0

    out["mask_AP"] = clean(_mean_valid(p))
    out["mask_AP50"] = clean(_mean_valid(p[t50]))
    out["mask_AP75"] = clean(_mean_valid(p[t75]))
    if per_class:
        pc = {}
        for k, n in enumerate(names):
            pk = p[:, :, k]
            if (pk > -1).any():
                pc[n] = {"AP": clean(_mean_valid(pk)), "AP50": clean(_mean_valid(pk[t50]))}
        out["per_class"] = pc
    return out


def evaluate_project(project, predictor, item_ids: Optional[Iterable[str]] = None, *,
                     score_threshold: float = 0.05, tile: Optional[int] = None, progress=None,
                     cancel=None, only_reviewed: bool = True) -> dict:
    """Run a Predictor on project items and score it against their annotations.

    By default only reviewed items are ground truth. Predictions are not saved.
    """
    from ..jobs import check, report
    ids = [it.id for it in project.items] if item_ids is None else list(item_ids)
    pairs = []
    used = []
    for k, item_id in enumerate(ids):
        check(cancel)
        report(progress, k, len(ids), str(item_id))
        gt = project.load_annotation(item_id)
        if only_reviewed and gt.status != "reviewed":
            continue
        pred = predictor.predict(project.load_image(item_id), score_threshold=score_threshold, tile=tile,
                                 cancel=cancel)
        pairs.append((gt, pred))
        used.append(item_id)
    report(progress, len(ids), len(ids), "done")
    res = evaluate(pairs, project.labels.names())
    res["items"] = used
    return res
