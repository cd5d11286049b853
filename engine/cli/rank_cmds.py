"""`maskloop rank PROJECT [--model RUN] [--by flip|mid|both] [--items ID...] [--limit N] [--json]`

Prints the unreviewed items, most uncertain first, with their uncertainty score
(engine.model.uncertainty: flip disagreement by default). The scores of a project run's
model are kept in models/<run>/uncertainty.json, where the GUI's uncertainty column reads
them. torch is imported in the handler only.
"""
from __future__ import annotations

import json
import sys

from ..jobs import TerminalProgress
from .argtypes import number

_positive_int = number(int, 1)
_score = number(float, 0.0, 1.0)


def register(subparsers) -> None:
    p = subparsers.add_parser("rank", help="unreviewed items, most uncertain first",
                              description="Score each unreviewed item by how unsure the model is about "
                                          "it (flip: prediction vs prediction of the mirror image; mid: "
                                          "share of mid-range scores) and print them, most uncertain first. "
                                          "A project run's scores are kept in models/RUN/uncertainty.json "
                                          "(the GUI's uncertainty column shows them).")
    p.add_argument("project", metavar="PROJECT")
    p.add_argument("--model", default=None, metavar="RUN_OR_PATH",
                   help="run id or model file (default: the project's active model)")
    p.add_argument("--by", choices=("flip", "mid", "both"), default="flip",
                   help="the uncertainty measure (default: flip)")
    p.add_argument("--items", nargs="+", default=None, metavar="ID",
                   help="score these items instead of all unreviewed ones")
    p.add_argument("--score", type=_score, default=0.5, help="detection score threshold (default 0.5)")
    p.add_argument("--limit", type=_positive_int, default=None, metavar="N", help="print the first N only")
    p.add_argument("--device", default="auto", help="auto (CUDA, MPS, CPU), cpu, cuda, cuda:N")
    p.add_argument("--json", action="store_true", help="one JSON list instead of a table")
    p.set_defaults(func=cmd_rank)


def cmd_rank(args) -> int:
    from ..project import Project
    proj = Project.open(args.project)
    if args.items:
        for t in args.items:
            proj.item(t)  # ProjectError naming an unknown id
    model_path = proj.resolve_model(args.model)
    from ..model.predictor import Predictor
    from ..model.uncertainty import rank_and_store, scores_path
    pred = Predictor(model_path, device=args.device, expected_labels=proj.labels)
    ranked = rank_and_store(proj, pred, model_path, args.items, by=args.by, score_threshold=args.score,
                            progress=TerminalProgress("ranking"))
    kept = scores_path(proj, model_path)
    if ranked and kept is not None:
        print(f"scores kept in {kept}", file=sys.stderr)
    if args.limit:
        ranked = ranked[:args.limit]
    if args.json:
        print(json.dumps([{"item": i, "score": round(s, 4), "flip": round(u.flip, 4), "mid": round(u.mid, 4),
                           "detections": u.detections} for i, s, u in ranked]))
        return 0
    if not ranked:
        print("no unreviewed items")
        return 0
    width = max(len(i) for i, _, _ in ranked)
    print(f"{'item':<{width}}  {args.by:>6}  {'flip':>6}  {'mid':>6}  detections")
    for i, s, u in ranked:
        print(f"{i:<{width}}  {s:6.3f}  {u.flip:6.3f}  {u.mid:6.3f}  {u.detections:10d}")
    return 0
