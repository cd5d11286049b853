"""The model side of MaskLoop: torch lives here and only here (an import contract).

    architectures  names, the native-resolution transform, model configs, construction
    weights        starting weights: scratch, coco, imagenet, a run's or any checkpoint
    checkpoint     save / load (weights_only=True) / validate, the class check
    device         device choice, autocast, conv+BN fusion
    tiling         tiles and seams of large images
    predictor      Predictor: a warm model, batching, predict_items into a project
    normalize      the intensity normalisation policy (numpy only)
    snapshot       training data read once (project or COCO file), the split
    transforms     joint image/instance augmentation
    dataset        InstanceDataset, collate, epoch batches
    config         TrainConfig, resolution of "auto", the LR schedule
    setup          resume state, model and optimizer of a run
    trainer        the training loop;  hooks: log, cancel, ETA, validation/early stop,
                   checkpoints, time budget;  distributed: torchrun helpers
    validation     scoring a model on annotated items
    train          training a project: run folder, snapshot, activation
    evaluate       COCO mask AP / AP50 (pycocotools) and acc50
    progress       the terminal progress bar (the event schema is engine.events)
    mask_targets, anchor_matching   memory-lean replacements inside torchvision's heads
    build, predict, data            the names of the API before the split (re-exports)

Importing this package does not import torch; import the submodules you need.
"""
