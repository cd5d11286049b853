"""Compatibility names: the model-building API as it was imported before the split.

New code imports from the job modules: engine.model.architectures (names, configs,
construction), engine.model.weights (bases: scratch, coco, imagenet, a checkpoint) and
engine.model.checkpoint (save, load, validate, class check).
"""
from __future__ import annotations

from .architectures import (ARCH_HELP, ARCHS, BACKBONES, COCO_WEIGHTS, HEAD_KEYS, IMAGENET_MEAN,  # noqa: F401
                            IMAGENET_STD, NORMS, PROPOSALS_PER_DETECTION, SCRATCH_MEAN, SCRATCH_STD,
                            SMALL_ANCHORS, TORCHVISION_ANCHORS, NativeTransform, construct, count_parameters,
                            default_config, load_state, replace_heads, set_detections_per_img, unwrap)
from .checkpoint import (CHECKPOINT_FORMAT, CHECKPOINT_VERSION, check_labels, load_checkpoint,  # noqa: F401
                         model_from_checkpoint, save_checkpoint, validate_checkpoint)
from .weights import (BASES, DOWNLOAD_STALL_S, build_model, coco_weights_cached, download,  # noqa: F401
                      fetch_weights, weights_cache_dir, weights_file)
