"""The Train dialog: base, architecture, epochs, device — defaults that work in one click.

The dialog only chooses options; `gui.loop.training` starts `main.py train` with them in a
child process (gui.loop.runner.TrainingRunner). Architectures, cached weights and GPUs are
asked of engine.model when the dialog opens (torch is loaded then, not at GUI start).
"""
from __future__ import annotations

import os
from typing import Optional

from PyQt5 import QtWidgets

from engine.runs import list_runs

from .. import theme

def cuda_devices() -> list[str]:
    """Names of the CUDA GPUs ([] without CUDA or the ML stack): engine.model.device."""
    if os.environ.get("MASKLOOP_NO_CUDA_PROBE"):   # skip the CUDA initialisation (CI, remote X)
        return []
    try:
        from engine.model.device import cuda_device_names
    except ImportError:   # an install without torch: the CLI's import/export still work
        return []
    return cuda_device_names()


def architectures() -> tuple[tuple, dict, tuple]:
    """(names, help texts, names with COCO weights) from engine.model.architectures."""
    from engine.model.architectures import ARCH_HELP, ARCHS, COCO_WEIGHTS
    return ARCHS, ARCH_HELP, tuple(COCO_WEIGHTS)


def coco_weights_cached(arch: str) -> bool:
    """True when torchvision's COCO weights for `arch` are cached (engine.model.weights)."""
    from engine.model.weights import coco_weights_cached as cached
    return cached(arch)


def default_epochs(n_reviewed: int, on_gpu: bool, fine_tune: bool) -> int:
    """Enough passes for a useful model in minutes: fewer from a trained base, more for
    small sets (every epoch is short), fewer on a CPU."""
    n = max(1, n_reviewed)
    if fine_tune:
        e = 15 if on_gpu else 8
    else:
        e = 40 if on_gpu else 20
    # small sets: more epochs (cheap); big sets: fewer
    if n >= 200:
        e = max(4, e // 3)
    elif n >= 50:
        e = max(5, e // 2)
    return int(e)


class TrainDialog(QtWidgets.QDialog):
    """Options of one training run over the project's reviewed items.

    `options()` -> {"arch", "base", "epochs", "device"} as `main.py train` takes them.
    """

    def __init__(self, project, parent=None, *, statuses: Optional[dict] = None,
                 gpus: Optional[list[str]] = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Train a model")
        self.setObjectName("TrainDialog")
        self.project = project
        statuses = statuses if statuses is not None else project.statuses()
        self.n_reviewed = sum(1 for s in statuses.values() if s == "reviewed")
        self.n_items = len(statuses)
        self.gpus = cuda_devices() if gpus is None else list(gpus)
        self.models = {r.run: r for r in list_runs(project)}   # finished runs (engine.runs)
        self.archs, self.arch_help, self.coco_archs = architectures()
        self.active = project.active_model if project.active_model in self.models else None

        form = QtWidgets.QFormLayout()
        self.items_label = QtWidgets.QLabel()
        self.items_label.setObjectName("itemsLabel")
        self.items_label.setWordWrap(True)
        form.addRow("Training data:", self.items_label)

        self.base = QtWidgets.QComboBox()
        self.base.setObjectName("baseCombo")
        if self.active:
            self.base.addItem(f"Active model ({self.active})", self.active)
        self.base.addItem("COCO weights (torchvision, ResNet-50 only)", "coco")
        self.base.addItem("From scratch", "scratch")
        form.addRow("Start from:", self.base)

        self.arch = QtWidgets.QComboBox()
        self.arch.setObjectName("archCombo")
        for a in self.archs:
            self.arch.addItem(f"{a} — {self.arch_help.get(a, a)}", a)
        form.addRow("Architecture:", self.arch)

        self.epochs = QtWidgets.QSpinBox()
        self.epochs.setObjectName("epochsSpin")
        self.epochs.setRange(1, 1000)
        form.addRow("Epochs:", self.epochs)

        self.device = QtWidgets.QComboBox()
        self.device.setObjectName("deviceCombo")
        if self.gpus:
            self.device.addItem(f"Auto (GPU: {self.gpus[0]})", "auto")
        else:
            self.device.addItem("Auto (CPU: no CUDA GPU found)", "auto")
        self.device.addItem("CPU", "cpu")
        if self.gpus:
            for i, name in enumerate(self.gpus):
                self.device.addItem(f"CUDA {i}: {name}", "cuda" if i == 0 else f"cuda:{i}")
        else:
            self.device.addItem("CUDA (not available)", "cuda")
            item = self.device.model().item(self.device.count() - 1)
            item.setEnabled(False)
        form.addRow("Device:", self.device)

        self.hint = QtWidgets.QLabel()
        self.hint.setObjectName("hintLabel")
        self.hint.setWordWrap(True)
        theme.set_state(self.hint, "muted")

        self.buttons = QtWidgets.QDialogButtonBox(QtWidgets.QDialogButtonBox.Ok
                                                  | QtWidgets.QDialogButtonBox.Cancel)
        self.ok_button = self.buttons.button(QtWidgets.QDialogButtonBox.Ok)
        self.ok_button.setText("Train")
        self.ok_button.setObjectName("trainButton")
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)

        lay = QtWidgets.QVBoxLayout(self)
        lay.addLayout(form)
        lay.addWidget(self.hint)
        lay.addWidget(self.buttons)

        self._apply_defaults()
        self.base.currentIndexChanged.connect(self._on_base)
        self.arch.currentIndexChanged.connect(self._update)
        self.device.currentIndexChanged.connect(self._update)
        self._update()

    # -- defaults -------------------------------------------------------------------------
    def _apply_defaults(self) -> None:
        on_gpu = bool(self.gpus)
        if self.active:
            base = self.active
            arch = self._arch_of(self.active) or ("r50fpn" if on_gpu else "r18fpn")
        elif on_gpu and coco_weights_cached("r50fpn"):
            base, arch = "coco", "r50fpn"
        else:
            base, arch = "scratch", ("r50fpn" if on_gpu else "r18fpn")
        self._set_combo(self.base, base)
        self._set_combo(self.arch, arch)
        self.epochs.setValue(default_epochs(self.n_reviewed, on_gpu, base not in ("scratch",)))

    def _arch_of(self, run_id: Optional[str]) -> Optional[str]:
        run = self.models.get(run_id)
        return run.arch if run is not None else None

    @staticmethod
    def _set_combo(combo: QtWidgets.QComboBox, data) -> None:
        k = combo.findData(data)
        if k >= 0:
            combo.setCurrentIndex(k)

    def _on_base(self) -> None:
        base = self.base.currentData()
        if base == "coco" and self.arch.currentData() not in self.coco_archs:
            self._set_combo(self.arch, "r50fpn")
        elif base not in ("coco", "scratch"):
            arch = self._arch_of(base)
            if arch:
                self._set_combo(self.arch, arch)
        self.epochs.setValue(default_epochs(self.n_reviewed, bool(self.gpus), base != "scratch"))
        self._update()

    def _update(self) -> None:
        n = self.n_reviewed
        if n == 0:
            self.items_label.setText("<b>No reviewed items yet.</b> Correct a few images and press "
                                     "<i>Accept</i> (mark reviewed); only reviewed items are used.")
        else:
            n_val = 0 if n < 2 else max(1, round(0.2 * n))
            self.items_label.setText(f"<b>{n}</b> reviewed item(s) of {self.n_items} "
                                     f"(about {n - n_val} to train, {n_val} to validate)")
        base, arch = self.base.currentData(), self.arch.currentData()
        problems, notes = [], []
        if n == 0:
            problems.append("mark at least one item reviewed first")
        if base == "coco" and arch not in self.coco_archs:
            problems.append(f"COCO weights exist for {', '.join(self.coco_archs)} only")
        if base == "coco" and not coco_weights_cached(arch):
            notes.append("the COCO weights are not in the torch cache: they will be downloaded "
                         "(about 170 MB); offline, training stops with a message saying what to do")
        if base not in ("coco", "scratch"):
            want = self._arch_of(base)
            if want and arch != want:
                problems.append(f"the active model is a {want}; choose {want} or another base")
            notes.append("fine-tunes the active model on the reviewed items")
        if self.device.currentData() == "cpu" or not self.gpus:
            if arch in ("r101fpn", "x101fpn"):
                notes.append(f"{arch} is slow on a CPU; r18fpn trains several times faster")
        self.hint.setText("\n".join(["⚠ " + p for p in problems] + notes))
        self.ok_button.setEnabled(not problems)

    # -- result ---------------------------------------------------------------------------
    def options(self) -> dict:
        return {"arch": self.arch.currentData(), "base": self.base.currentData(),
                "epochs": int(self.epochs.value()), "device": self.device.currentData()}

    def set_options(self, **opts) -> None:
        """Set fields programmatically (tests, scripted runs)."""
        if "base" in opts:
            self._set_combo(self.base, opts["base"])
        if "arch" in opts:
            self._set_combo(self.arch, opts["arch"])
        if "epochs" in opts:
            self.epochs.setValue(int(opts["epochs"]))
        if "device" in opts:
            self._set_combo(self.device, opts["device"])
        self._update()
