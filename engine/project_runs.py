"""Model runs in a project folder: <root>/models/<run-id>/ (DESIGN.md section 3).

A mixin of Project (engine/project.py), kept apart so project.py stays about the
manifest, items and annotations. Each run folder holds model.pt, config.json,
metrics.json and log.jsonl; a run made by `new_run` carries a lock file its process
holds while it lives, so a listing never mistakes a live first epoch for an orphan.
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Optional

import filelock

from .errors import ProjectError
from .fsutil import file_lock
from .manifest_schema import check_component

RUN_LOCK = ".maskloop-run.lock"       # held by the process that made a run, while it lives
_LIVE_RUNS: dict = {}                 # run folder -> its lock, held for the life of the process


class ModelRuns:
    """new_run, list_models, resumable_runs, the active model. Needs `models_dir`,
    `manifest_path`, `active_model` and `update` from the Project."""

    def new_run(self, prefix: str = "run") -> tuple[str, Path]:
        self.models_dir.mkdir(exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        n = 0
        while True:
            run_id = f"{prefix}-{stamp}" + (f"-{n}" if n else "")
            folder = self.models_dir / run_id
            try:
                folder.mkdir()
            except FileExistsError:
                n += 1
                continue
            # held until this process ends: a listing never takes a live run for an orphan
            lock = file_lock(folder / RUN_LOCK, 0)
            lock.acquire()
            _LIVE_RUNS[str(folder)] = lock
            return run_id, folder

    def _run_folders(self, newest_first: bool = False) -> list[Path]:
        if not self.models_dir.exists():
            return []
        folders = [p for p in self.models_dir.iterdir() if p.is_dir() and not self._remove_if_orphan(p)]
        return sorted(folders, reverse=newest_first)

    def _remove_if_orphan(self, folder: Path) -> bool:
        """Remove a run folder that a dead process left before its first checkpoint (made by
        new_run, no model.pt, no last.pt to resume from, its owner's lock free). True if removed."""
        marker = folder / RUN_LOCK
        if (folder.is_symlink() or not marker.is_file() or (folder / "model.pt").exists()
                or (folder / "last.pt").exists() or str(folder) in _LIVE_RUNS):
            return False
        probe = file_lock(marker, 0)
        try:
            probe.acquire()
        except (filelock.Timeout, OSError):
            return False  # its process is still running (first epoch) or we cannot tell
        try:
            shutil.rmtree(folder)
        except OSError:
            return False
        finally:
            probe.release()
        return True

    @staticmethod
    def _run_json(folder: Path, key: str) -> dict:
        """A run's config.json / metrics.json ({} when missing or unreadable)."""
        try:
            data = json.loads((folder / f"{key}.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def list_models(self) -> list[dict]:
        out = []
        for folder in self._run_folders():
            if not (folder / "model.pt").exists():
                continue  # an unfinished or failed run
            out.append({"run": folder.name, "path": str(folder / "model.pt"),
                        "config": self._run_json(folder, "config"), "metrics": self._run_json(folder, "metrics")})
        return out

    def resumable_runs(self) -> list[dict]:
        """Runs that stopped before their end (cancelled, interrupted) and can continue:
        a last.pt and no model.pt. Newest first, each {"run", "epochs_done", "epochs"}
        (None where the run's files do not say)."""
        out = []
        for folder in self._run_folders(newest_first=True):
            if not (folder / "last.pt").exists() or (folder / "model.pt").exists():
                continue
            history = self._run_json(folder, "metrics").get("history")
            epochs = (self._run_json(folder, "config").get("train") or {}).get("epochs")
            out.append({"run": folder.name, "epochs_done": len(history) if isinstance(history, list) else None,
                        "epochs": int(epochs) if isinstance(epochs, int) else None})
        return out

    def set_active_model(self, run_id: Optional[str]) -> None:
        if run_id is not None:
            check_component(run_id, self.models_dir, None, "run id")
            if not (self.models_dir / run_id / "model.pt").exists():
                raise ProjectError(f"no finished model run {run_id!r}", self.models_dir)
        self.update(lambda proj: setattr(proj, "active_model", run_id))

    def resolve_model(self, run_or_path=None) -> Path:
        """A run id or a checkpoint path -> the model.pt path; None -> the active model."""
        if run_or_path is None:
            if not self.active_model:
                raise ProjectError("no active model: train one first (maskloop train) or pass --model",
                                   self.manifest_path, "active_model")
            run_or_path = self.active_model
        cand = self.models_dir / str(run_or_path) / "model.pt"
        if cand.exists():
            return cand
        p = Path(run_or_path)
        if p.is_dir() and (p / "model.pt").exists():
            return p / "model.pt"
        if p.is_file():
            return p
        raise ProjectError(f"no model run or checkpoint file {str(run_or_path)!r}", self.models_dir)
