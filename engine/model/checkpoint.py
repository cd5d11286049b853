"""MaskLoop checkpoints: save (atomic), load with torch.load(weights_only=True), validate,
the class check against a project's labels, and rebuilding the model of a checkpoint.

A checkpoint is a dict of tensors and plain data only (state_dict, config, label names,
normalisation, metrics); it is untrusted input and validated on load.
"""
from __future__ import annotations

import datetime as _dt
import numbers
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
import torchvision
from torch import nn
from torchvision.models.detection.mask_rcnn import MaskRCNN

from ..errors import CheckpointError
from ..fsutil import atomic_writer
from .architectures import ARCHS, construct, load_state, unwrap
from .normalize import PolicyError, validate_policy

CHECKPOINT_FORMAT = "maskloop-checkpoint"
CHECKPOINT_VERSION = 1


_REQUIRED = ("format", "version", "arch", "label_names", "normalization", "model_config", "state_dict")


def _plain(obj, where: str):
    """A copy of obj with only tensors and exact plain types (what weights_only loads).

    numpy scalars and str/int/float subclasses (e.g. torch.__version__) are converted;
    anything else is a TypeError naming where it is.
    """
    if obj is None or type(obj) in (bool, int, float, str) or isinstance(obj, torch.Tensor):
        return obj
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, numbers.Integral):
        return int(obj)
    if isinstance(obj, numbers.Real):
        return float(obj)
    if isinstance(obj, str):
        return str(obj)
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if isinstance(k, (bool, np.bool_)) or not isinstance(k, (str, numbers.Integral)):
                raise TypeError(f"{where}: key {k!r} is not a str or int")
            out[str(k) if isinstance(k, str) else int(k)] = _plain(v, f"{where}.{k}")
        return out
    if isinstance(obj, (list, tuple)):
        items = [_plain(v, f"{where}[{i}]") for i, v in enumerate(obj)]
        return items if isinstance(obj, list) else tuple(items)
    raise TypeError(f"{where}: {type(obj).__name__} is not plain data or a tensor")


def _state_of(obj):
    if obj is None:
        return None
    if hasattr(obj, "state_dict") and callable(obj.state_dict):
        return obj.state_dict()
    return obj


def save_checkpoint(path, model: nn.Module, *, label_names: list[str], normalization: dict,
                    arch: Optional[str] = None, config: Optional[dict] = None,
                    metrics: Optional[dict] = None, epoch: Optional[int] = None,
                    optimizer=None, scheduler=None, run: Optional[str] = None,
                    extra: Optional[dict] = None) -> Path:
    """Write a MaskLoop checkpoint atomically (temporary file, fsync, os.replace).

    Contents: tensors and plain data only. `config` is the training config (free form,
    plain data); the architecture settings come from model.maskloop_config.
    optimizer/scheduler: objects with state_dict() or their state dicts (for resume).
    """
    path = Path(path)
    m = unwrap(model)
    model_config = dict(getattr(m, "maskloop_config", None) or {})
    if not model_config:
        raise ValueError("model was not built by engine.model.build (no maskloop_config)")
    arch = arch or model_config["arch"]
    if arch != model_config["arch"]:
        raise ValueError(f"arch {arch!r} does not match the model ({model_config['arch']!r})")
    label_names = [str(n) for n in label_names]
    if len(label_names) + 1 != int(model_config["num_classes"]):
        raise ValueError(f"{len(label_names)} label names for a model with {model_config['num_classes']} "
                         f"classes (background included)")
    normalization = validate_policy(normalization)
    ckpt = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "arch": arch,
        "label_names": label_names,
        "normalization": normalization,
        "model_config": model_config,
        "config": dict(config or {}),
        "metrics": dict(metrics or {}),
        "epoch": None if epoch is None else int(epoch),
        "run": run,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "torch": str(torch.__version__),
        "torchvision": str(torchvision.__version__),
        "state_dict": {k: v.detach().to("cpu").clone() if v.device.type != "cpu" else v.detach()
                       for k, v in m.state_dict().items()},
    }
    opt, sch = _state_of(optimizer), _state_of(scheduler)
    if opt is not None:
        ckpt["optimizer"] = opt
    if sch is not None:
        ckpt["scheduler"] = sch
    if extra:
        ckpt["extra"] = dict(extra)
    sd = ckpt.pop("state_dict")
    ckpt = _plain(ckpt, "checkpoint")
    ckpt["state_dict"] = sd
    with atomic_writer(path) as f:
        torch.save(ckpt, f)
    return path


def load_checkpoint(path) -> dict:
    """Read and validate a MaskLoop checkpoint; CheckpointError naming the file otherwise.

    Loaded with weights_only=True on the CPU: a checkpoint is untrusted input.
    The returned dict has "_path" (str) added.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError("no such model file", path)
    if path.is_dir():
        raise CheckpointError("is a folder, not a model file (expected model.pt)", path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        if "weights_only" in str(e) or "Unsupported global" in str(e) or "WeightsUnpickler" in str(e):
            why = "it contains Python objects other than tensors and plain data, which MaskLoop refuses to load"
        else:
            why = f"not a readable torch file ({msg[:200]})"
        raise CheckpointError(f"not a MaskLoop checkpoint: {why}", path) from None
    ckpt = validate_checkpoint(ckpt, path)
    ckpt["_path"] = str(path)
    return ckpt


def validate_checkpoint(ckpt, path=None) -> dict:
    """Check the structure of a checkpoint dict (as load_checkpoint returns it)."""
    path = path if path is not None else (ckpt.get("_path") if isinstance(ckpt, dict) else None)
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"not a MaskLoop checkpoint (the file holds a {type(ckpt).__name__})", path)
    if "format" not in ckpt:
        if ckpt and all(isinstance(v, torch.Tensor) for v in ckpt.values()):
            raise CheckpointError("not a MaskLoop checkpoint: a bare state_dict without MaskLoop's "
                                  "architecture, labels and normalisation", path)
        raise CheckpointError("not a MaskLoop checkpoint (no 'format' key)", path)
    if ckpt["format"] != CHECKPOINT_FORMAT:
        raise CheckpointError(f"not a MaskLoop checkpoint (format {ckpt['format']!r})", path, "format")
    missing = [k for k in _REQUIRED if k not in ckpt]
    if missing:
        raise CheckpointError(f"incomplete MaskLoop checkpoint: missing {', '.join(missing)}", path)
    if not isinstance(ckpt["version"], int) or ckpt["version"] > CHECKPOINT_VERSION:
        raise CheckpointError(f"checkpoint version {ckpt['version']!r} is newer than this MaskLoop "
                              f"understands ({CHECKPOINT_VERSION}); update MaskLoop", path, "version")
    if ckpt["arch"] not in ARCHS:
        raise CheckpointError(f"unknown architecture {ckpt['arch']!r}", path, "arch")
    names = ckpt["label_names"]
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
        raise CheckpointError("label_names must be a non-empty list of names", path, "label_names")
    if len(set(names)) != len(names):
        raise CheckpointError("label_names has duplicates", path, "label_names")
    try:
        ckpt["normalization"] = validate_policy(ckpt["normalization"])
    except PolicyError as e:
        raise CheckpointError(str(e), path, "normalization") from None
    mc = ckpt["model_config"]
    if not isinstance(mc, dict) or mc.get("arch") != ckpt["arch"]:
        raise CheckpointError("model_config is missing or does not match arch", path, "model_config")
    try:
        nc = int(mc["num_classes"])
    except (KeyError, TypeError, ValueError):
        raise CheckpointError("model_config has no valid num_classes", path, "model_config") from None
    if nc != len(names) + 1:
        raise CheckpointError(f"{len(names)} label names for {nc} model classes (background included)",
                              path, "label_names")
    sd = ckpt["state_dict"]
    if not isinstance(sd, dict) or not sd or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError("state_dict must be a non-empty dict of tensors", path, "state_dict")
    return ckpt


def check_labels(ckpt: dict, expected_labels, *, exact: bool = False) -> None:
    """The project-label rule of engine.results.check_labels for a checkpoint dict."""
    from ..results import check_labels as _check
    _check(ckpt["label_names"], expected_labels, exact=exact, path=ckpt.get("_path"))


def model_from_checkpoint(ckpt, expected_labels=None, *, exact: bool = False,
                          device: Any = "cpu") -> MaskRCNN:
    """Rebuild the model of a checkpoint (dict or path) in eval mode, weights loaded strictly."""
    if not isinstance(ckpt, dict):
        ckpt = load_checkpoint(ckpt)
    else:
        ckpt = validate_checkpoint(ckpt)
    if expected_labels is not None:
        check_labels(ckpt, expected_labels, exact=exact)
    model = construct(ckpt["model_config"])
    load_state(model, ckpt["state_dict"], ckpt.get("_path") or "checkpoint", strict_heads=True)
    model.eval()
    return model.to(device)
