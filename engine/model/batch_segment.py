"""Segmenting a project's items across the ranks of torch.distributed (torchrun).

    torchrun --nproc_per_node N main.py segment PROJECT [--resume] ...

No scheduler of our own: torchrun starts the ranks; this module only decides which rank
segments which items and how a run is finished and resumed.

- Sharding: the items are grouped by source (a stack's slices stay together on one rank,
  so what works on neighbouring slices stays local); groups go to ranks largest first,
  each to the rank with the fewest items so far (ties: the lowest rank). Every rank
  computes the same plan from the same manifest: nothing is sent.
- Output: each rank writes its items' annotation files and, after each file, the item id
  to its journal (segment-journal/<key>/rank-R.txt under the project root, flushed and
  fsynced). No two ranks write the same file.
- An item changed by another program (the GUI, another command) while the model ran on
  it: the model's result is merged into the item as it is on disk then, re-read under
  the project lock (Project.edit_annotation), with the same merge rule as always
  (engine.results): the new manual work stays. An item reviewed meanwhile is skipped.
- The end: all ranks meet; rank 0 alone gathers the per-rank results and finishes the run
  (_finish: the summary done.json; the one place for a project-wide update, which today's
  manifest does not need: an item's status lives in its annotation file).
- Resume: the journal's key is the model file, the selected items, the score threshold
  and the tiling; `--resume` skips the items any rank's journal of that key lists (so a
  restart with another world size still skips them). Without --resume the journal of
  that key starts empty.
- Failure: a rank that raises ends its process and torchrun stops the other ranks. Items
  written so far stay written and journaled; --resume continues (docs/scaling.md).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Callable, Optional, Sequence

from ..jobs import CancelToken, ProgressFn, check, report
from ..results import merged_annotation
from .checkpoint import check_labels
from .distributed import barrier, dist_info, process_group

JOURNAL_DIR = "segment-journal"


def shard(items: Sequence, world: int) -> list[list[str]]:
    """Item ids per rank: whole sources (stacks) to one rank, balanced by item count.

    `items` are the project's Item records (id, source) in project order; each rank's
    list keeps that order."""
    groups: dict[int, list[str]] = {}
    for it in items:
        groups.setdefault(it.source, []).append(it.id)
    load = [0] * world
    owner: dict[int, int] = {}
    for src in sorted(groups, key=lambda s: (-len(groups[s]), s)):
        r = min(range(world), key=lambda k: (load[k], k))
        owner[src] = r
        load[r] += len(groups[src])
    out: list[list[str]] = [[] for _ in range(world)]
    for it in items:
        out[owner[it.source]].append(it.id)
    return out


def run_key(model_path, item_ids: Sequence[str], score: float, tile, overlap) -> str:
    """What makes two runs 'the same run' for --resume."""
    h = hashlib.sha1()
    h.update(str(Path(model_path).resolve()).encode())
    h.update(json.dumps([list(item_ids), float(score), tile, overlap]).encode())
    return h.hexdigest()[:16]


class Journal:
    """The items one rank has written, one id a line, durable before the next item."""

    def __init__(self, folder: Path, rank: int):
        self.folder = Path(folder)
        self.path = self.folder / f"rank-{rank}.txt"

    def done_by_any_rank(self) -> set[str]:
        out: set[str] = set()
        for p in self.folder.glob("rank-*.txt"):
            out.update(line.strip() for line in p.read_text(encoding="utf-8").splitlines() if line.strip())
        return out

    def clear(self) -> None:
        """A fresh run of this key: every rank's old list goes (rank 0, before the others start)."""
        for p in self.folder.glob("rank-*.txt"):
            p.unlink()
        (self.folder / "done.json").unlink(missing_ok=True)

    def add(self, item_id: str) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(item_id + "\n")
            f.flush()
            os.fsync(f.fileno())


def segment_distributed(project, predictor, item_ids: Sequence[str], *, score_threshold: float = 0.5,
                        tile: Optional[int] = None, resume: bool = False, key: str,
                        progress: Optional[ProgressFn] = None, cancel: Optional[CancelToken] = None,
                        after: Optional[Callable[[list], dict]] = None) -> dict:
    """Segment this rank's share of `item_ids` and finish the run on rank 0.

    after(ids): run by each rank on its items segmented by this run or the interrupted one
    (e.g. linking a stack's slices: a stack is on one rank); it returns counts, summed.
    Returns on every rank this rank's {"predicted": [ids], "skipped": [ids], "resumed": n,
    "instances": n, "after": counts, "rank", "world"}; on rank 0 also "total" (over all ranks)."""
    world, rank, _ = dist_info()
    wanted = set(item_ids)
    plan = shard([it for it in project.items if it.id in wanted], world)
    journal = Journal(project.root / JOURNAL_DIR / key, rank)
    already = journal.done_by_any_rank() if resume else set()
    if rank == 0 and not resume:
        journal.clear()
    barrier()  # every rank has read the lists before rank 0 clears them and ranks append
    mine = [i for i in plan[rank] if i not in already]
    res = {"predicted": [], "skipped": [], "instances": 0, "resumed": len(plan[rank]) - len(mine),
           "after": {}, "rank": rank, "world": world}
    check_labels({"label_names": predictor.label_names, "_path": predictor.path}, project.labels)
    for k, item_id in enumerate(mine):
        check(cancel)
        report(progress, k, len(mine), item_id)
        # one item at a time: its file is written (atomically) before it is journaled
        n = segment_item(project, predictor, item_id, score_threshold=score_threshold, tile=tile, cancel=cancel)
        res["skipped" if n is None else "predicted"].append(item_id)
        res["instances"] += n or 0
        journal.add(item_id)
    report(progress, len(mine), len(mine), "done")
    if after is not None:
        earlier = [i for i in plan[rank] if i in already and project.status(i) == "predicted"]
        res["after"] = after(earlier + res["predicted"]) or {}
    results = [res]
    if world > 1:
        results = [None] * world
        process_group().all_gather_object(results, res)
    if rank == 0:
        total = {k: sum(len(r[k]) if isinstance(r[k], list) else r[k] for r in results)
                 for k in ("predicted", "skipped", "resumed", "instances")}
        total["after"] = summed_counts([r.get("after") or {} for r in results])
        _finish(journal.folder, total, world)
        res["total"] = total
    barrier()  # nobody leaves before rank 0 has finished the run
    return res


def summed_counts(counts: Sequence[dict]) -> dict:
    """Per-key sums of the ranks' counts; a key counted 0 stays (a Counter sum drops it)."""
    out: dict = {}
    for c in counts:
        for k, v in c.items():
            out[k] = out.get(k, 0) + v
    return out


def segment_item(project, predictor, item_id: str, *, score_threshold: float = 0.5, tile: Optional[int] = None,
                 cancel: Optional[CancelToken] = None) -> Optional[int]:
    """Run the model on one item and merge its result into the item's annotation.

    The merge is applied to the annotation as it is on disk when the result is saved
    (re-read under the project lock), not to the copy read before the model ran, so an
    edit another program saved meanwhile is kept (a manual instance the model duplicates
    wins over the model's, as always). Returns the number of model instances the item
    now holds, or None when the item is reviewed (before the run, or by the time the
    result is saved): reviewed work is never replaced."""
    if project.load_annotation(item_id).status == "reviewed":
        return None  # not worth running the model
    image = project.load_image(item_id)
    found = predictor.predict(image, score_threshold=score_threshold, tile=tile, cancel=cancel)
    check(cancel)
    saved = project.edit_annotation(
        item_id, lambda current: merged_annotation(current, found, source="model", shape=image.shape[:2]))
    if saved is None:
        return None
    return sum(1 for i in saved.instances if i.source == "model")


def _finish(folder: Path, total: dict, world: int) -> None:
    """Rank 0 only, after every rank's items are written: the run's summary. Segment keeps
    an item's status in its annotation file, so today the manifest needs no change; a
    project-wide record (e.g. status counts kept in the manifest) is updated here, by one
    writer."""
    from ..fsutil import atomic_write_json
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_json(folder / "done.json", {**total, "world_size": world})
