"""The model side of MaskLoop: torch lives here and only here.

- normalize.py  intensity normalisation policy (numpy only; safe to import without torch)
- build.py      architectures on torchvision's Mask R-CNN, base weights, checkpoints
- predict.py    Predictor: warm model, tiling, batching, AMP, progress and cancel
- evaluate.py   COCO mask AP / AP50 (pycocotools) and the microscopy accuracy acc50
- data.py, train.py  training (see those modules)

Importing this package does not import torch; import the submodules you need.
"""
