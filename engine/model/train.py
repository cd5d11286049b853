"""Training on a project: the run folder, the snapshot, the Trainer, and the activation
rule applied to the finished run.

    result = train_project(project, TrainConfig(...), callbacks=[...], cancel=token)
    active, reason = maybe_activate(project, result)

The names of the training API are importable from here as before the split
(TrainConfig, Trainer, Callback, FitResult, TrainingError, lr_factor, ...); their homes
are engine.model.config, trainer, hooks and setup.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Iterable, Optional, Sequence

from ..errors import MaskLoopError
from ..fsutil import atomic_write_json
from ..runs import decide_activation, read_run
from .checkpoint import load_checkpoint
from .config import (AMP_MODES, MONITORS, OPTIMIZERS, SCHEDULES, TrainConfig, base_kind,  # noqa: F401
                     default_warmup, lr_factor, resolve_config)
from .dataset import InstanceDataset
from .distributed import dist_info, process_group
from .hooks import Callback  # noqa: F401
from .setup import TrainingError
from .snapshot import DataError, Snapshot
from .trainer import FitResult, Trainer
from .validation import limit_proposals, score_items  # noqa: F401
from .weights import init_predictors  # noqa: F401


def coco_snapshot(project, path, *, images_dir=None, min_size: int = 1) -> Snapshot:
    """A COCO instances file as training data for `project`: its categories that the
    project lacks are added to the project's labels (saved, as an import does), and the
    classes follow the project's label order, so the run segments the project's labels."""
    data = Snapshot.from_coco(path, images_dir=images_dir, min_size=min_size)
    added = [n for n in data.label_names if n not in project.labels]
    if added:
        for name in added:
            project.labels.add(name)
        project.save()
    return data.relabel(project.labels.names())


def train_project(project, config: Optional[TrainConfig] = None, *, callbacks=(), cancel=None,
                  resume: Optional[str] = None, items: Optional[Iterable[str]] = None,
                  run_prefix: str = "run", coco=None, coco_images=None) -> FitResult:
    """Train on a project's reviewed items into a new run folder models/<run-id>/.

    The annotations are read once, now (a snapshot kept in the run folder as snapshot.json;
    a resume reads that, not the current annotations). resume: a run id with last.pt.
    coco: train on a COCO instances file instead (every image counts as reviewed; image
    paths relative to coco_images, default the file's folder); the run is still the project's.
    Under torchrun rank 0 creates the run and the snapshot; the others read them.
    """
    config = config or TrainConfig()
    config.validate()
    world, rank, _ = dist_info()
    d = process_group()
    if resume:
        run_dir = project.models_dir / str(resume)
        if not (run_dir / "last.pt").exists():
            raise TrainingError(f"run {resume!r} has nothing to resume (no last.pt)", "data", run_dir)
        run_id = run_dir.name
        data = load_snapshot(run_dir / "snapshot.json")
    else:
        run_id = None
        if rank == 0:
            if coco is not None:
                data = coco_snapshot(project, coco, images_dir=coco_images, min_size=config.min_box_size)
                if not data.items:
                    raise DataError("the COCO file lists no images to train on", coco, "images")
            else:
                data = Snapshot.from_project(project, include_unreviewed=config.include_unreviewed, items=items,
                                             min_size=config.min_box_size, cancel=cancel)
            if not data.items:
                raise DataError("no reviewed items to train on: review some items first (or use "
                                "--include-unreviewed)", project.manifest_path)
            run_id, run_dir = project.new_run(run_prefix)
            atomic_write_json(run_dir / "snapshot.json", data.to_json(), indent=None)
        if d is not None:
            box = [run_id]
            d.broadcast_object_list(box, src=0)
            run_id = box[0]
        run_dir = project.models_dir / run_id
        if rank != 0:
            data = load_snapshot(run_dir / "snapshot.json")
    trainer = Trainer(config, callbacks)
    try:
        return trainer.fit(data, run_dir, run_id=run_id, resume=bool(resume), cancel=cancel,
                           display_root=project.root)
    except BaseException:
        # a run that failed in its setup (e.g. COCO weights not available, an unreadable
        # base checkpoint) leaves no folder behind; one that trained keeps its log and checkpoints
        if rank == 0 and not resume and not trainer.started:
            shutil.rmtree(run_dir, ignore_errors=True)
        raise


def load_snapshot(path) -> Snapshot:
    from ..project import read_json_file
    return Snapshot.from_json(read_json_file(Path(path), "training snapshot"), path)


def score_model_on(model_path, snapshot: Snapshot, keys: Sequence[str], *, device="auto",
                   score_threshold: float = 0.05, cancel=None) -> dict:
    """Metrics of a saved model on the snapshot items `keys` (e.g. another run's val items)."""
    from .predictor import Predictor
    pred = Predictor(model_path, device=device)
    wanted = set(keys)
    ds = InstanceDataset([it for it in snapshot.items if it.key in wanted], {"kind": "range", "min": 0, "max": 1},
                         cache_bytes=0)
    return score_items(pred, ds, snapshot.label_names, score_threshold=score_threshold, cancel=cancel)


def maybe_activate(project, result: FitResult, *, device="auto") -> tuple[bool, str]:
    """Apply the activation rule (engine.runs.decide_activation) to a finished run: the
    active model is scored on this run's validation items, and the run becomes the active
    model unless that score is better. Returns (active, reason)."""
    new = read_run(result.run_dir)
    active = project.active_model
    current = read_run(project.models_dir / active) if active else None
    current_score = None
    if (current is not None and current.run != new.run and current.model_path is not None
            and new.model_path is not None and new.score() is not None and result.val_keys):
        try:
            ckpt = load_checkpoint(current.model_path)
            current.labels = list(ckpt["label_names"])
            if current.labels == list(new.labels or current.labels):
                snap = load_snapshot(result.run_dir / "snapshot.json")
                old = score_model_on(current.model_path, snap, result.val_keys, device=device)
                current_score = float(old.get(new.monitor, 0.0))
        except MaskLoopError as e:
            current.problem = e.message
    ok, reason = decide_activation(new, current, current_score=current_score)
    if ok and project.active_model != new.run:
        project.set_active_model(new.run)
    return ok, reason
