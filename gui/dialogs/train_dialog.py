"""The Train dialog: base, architecture, length, device — defaults that work in one click.

The run's length is a time budget by default ("Train for 15 minutes" on a CPU, 10 on a
GPU: `train --minutes`, engine.model.hooks.TimeBudget), or a number of epochs. "Start
from" says which weights will be loaded: "Best available without a download" is
engine.model.config.auto_base (COCO, else an ImageNet backbone in the torch cache, else
scratch), and the line under it says which, and why COCO is not used.

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


def imagenet_weights_cached(arch: str) -> bool:
    """True when the ImageNet weights of `arch`'s backbone are cached (engine.model.weights)."""
    from engine.model.weights import imagenet_weights_cached as cached
    return cached(arch)


def auto_base(arch: str) -> str:
    """What base "auto" starts `arch` from without a download (engine.model.config)."""
    from engine.model.config import auto_base as pick
    return pick(arch)


def default_arch(on_gpu: bool) -> str:
    """The architecture "auto" trains on this device (engine.model.config)."""
    from engine.model.config import default_arch as pick
    return pick(cuda=on_gpu)


def backbone_name(arch: str) -> str:
    from engine.model.architectures import BACKBONES
    return BACKBONES.get(arch, (arch,))[0]


def start_from_text(base: str, arch: str, *, run_arch: Optional[str] = None) -> str:
    """The "Start from" line: which weights the run will load for `base` ("auto", "coco",
    "imagenet", "scratch", a run id or a checkpoint path) and, when COCO weights are not
    used, why. The choice itself is engine.model.config.auto_base's, never re-decided here."""
    chosen = auto_base(arch) if base == "auto" else base
    why_not_coco = ""
    if chosen != "coco":
        from engine.model.architectures import COCO_WEIGHTS
        if arch not in COCO_WEIGHTS:
            why_not_coco = f"COCO weights exist for {', '.join(COCO_WEIGHTS)} only, not {arch}"
        elif not coco_weights_cached(arch):
            why_not_coco = "COCO weights are not in the torch cache; nothing is downloaded"
    if chosen == "coco":
        text = f"COCO Mask R-CNN weights for {arch}"
        if coco_weights_cached(arch):
            text += " (from the torch cache)"
        else:
            text += " — not in the torch cache: they will be downloaded (about 170 MB)"
        return text
    if chosen == "imagenet":
        text = f"ImageNet backbone ({backbone_name(arch)}); the detection heads start from scratch"
        if base != "auto" and not imagenet_weights_cached(arch):
            text += " — not in the torch cache: they will be downloaded"
    elif chosen == "scratch":
        text = "scratch (random weights)"
    else:
        where = f"run {chosen}" if os.sep not in chosen and "/" not in chosen else f"checkpoint {chosen}"
        text = f"the weights of {where}" + (f" ({run_arch})" if run_arch else "")
        return text + ". It is fine-tuned on the reviewed items."
    if base != "auto":
        return text
    notes = [why_not_coco] if why_not_coco else []
    if chosen == "scratch":
        notes.append(f"No ImageNet weights for {backbone_name(arch)} are in the torch cache either")
    return ". ".join([text] + notes) + "."


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


DEFAULT_MINUTES_CPU = 15   # a first useful model on a laptop CPU (issue 10)
DEFAULT_MINUTES_GPU = 10
CHECKPOINT_FILE = "__file__"   # the base combo's "Checkpoint file…" entry (asks for a path)


class TrainDialog(QtWidgets.QDialog):
    """Options of one training run over the project's reviewed items.

    `options()` -> {"arch", "base", "epochs", "minutes", "device"} as `main.py train`
    takes them: a time budget ("Train for N minutes", the default) leaves epochs None;
    "or N epochs" leaves minutes None.
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
        #: asked for a checkpoint file when "Checkpoint file…" is chosen: () -> path or ""
        self.pick_file = self._pick_file_box

        form = QtWidgets.QFormLayout()
        self.items_label = QtWidgets.QLabel()
        self.items_label.setObjectName("itemsLabel")
        form.addRow("Training data:", self.items_label)

        self.base = QtWidgets.QComboBox()
        self.base.setObjectName("baseCombo")
        self._fill_bases()
        self.start_from = QtWidgets.QLabel()
        self.start_from.setObjectName("startFromLabel")
        theme.set_state(self.start_from, "muted")
        form.addRow("Start from:", self.base)
        form.addRow("", self.start_from)   # one sentence a line: no word wrap (a form row clips it)

        self.arch = QtWidgets.QComboBox()
        self.arch.setObjectName("archCombo")
        # the long help texts show in the list; closed, the combo need not widen the dialog
        self.arch.setSizeAdjustPolicy(QtWidgets.QComboBox.AdjustToMinimumContentsLengthWithIcon)
        self.arch.setMinimumContentsLength(36)
        for a in self.archs:
            self.arch.addItem(f"{a} — {self.arch_help.get(a, a)}", a)
        form.addRow("Architecture:", self.arch)

        # the length of the run: a time budget (default) or a number of epochs
        self.by_minutes = QtWidgets.QRadioButton("Train for")
        self.by_minutes.setObjectName("byMinutes")
        self.minutes = QtWidgets.QSpinBox()
        self.minutes.setObjectName("minutesSpin")
        self.minutes.setRange(1, 24 * 60)
        self.minutes.setSuffix(" minutes")
        self.by_epochs = QtWidgets.QRadioButton("or")
        self.by_epochs.setObjectName("byEpochs")
        self.epochs = QtWidgets.QSpinBox()
        self.epochs.setObjectName("epochsSpin")
        self.epochs.setRange(1, 1000)
        self.epochs.setSuffix(" epochs")
        self.length_mode = QtWidgets.QButtonGroup(self)
        self.length_mode.addButton(self.by_minutes)
        self.length_mode.addButton(self.by_epochs)
        length = QtWidgets.QHBoxLayout()
        for w in (self.by_minutes, self.minutes, self.by_epochs, self.epochs):
            length.addWidget(w)
        length.addStretch(1)
        form.addRow("Length:", length)

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
        self.setMinimumWidth(560)

        self._apply_defaults()
        self.base.activated.connect(self._on_base_picked)   # user choices only (the file entry asks)
        self.base.currentIndexChanged.connect(self._on_base)
        self.arch.currentIndexChanged.connect(self._update)
        self.device.currentIndexChanged.connect(self._update)
        self.by_minutes.toggled.connect(self._update)
        self._update()

    # -- bases ----------------------------------------------------------------------------
    def _fill_bases(self) -> None:
        self.base.addItem("Best available without a download", "auto")
        if self.active:
            self.base.addItem(f"Active model ({self.active})", self.active)
        for run_id in sorted(self.models, reverse=True):   # newest first (ids carry the date)
            if run_id != self.active:
                self.base.addItem(f"Run {run_id}", run_id)
        self.base.addItem("COCO weights (torchvision, ResNet-50 only)", "coco")
        self.base.addItem("ImageNet backbone", "imagenet")
        self.base.addItem("From scratch", "scratch")
        self.base.addItem("Checkpoint file…", CHECKPOINT_FILE)

    def _pick_file_box(self) -> str:
        path, _ = QtWidgets.QFileDialog.getOpenFileName(self, "Start from a checkpoint", "",
                                                        "MaskLoop models (*.pt);;All files (*)")
        return path

    def _on_base_picked(self, index: int) -> None:
        if self.base.itemData(index) == CHECKPOINT_FILE:
            path = self.pick_file()
            if path:
                self.set_checkpoint(path)
            else:
                self._set_combo(self.base, "auto")

    def set_checkpoint(self, path: str) -> None:
        """Start from a checkpoint file (it gets its own entry, selected)."""
        path = str(path)
        k = self.base.findData(path)
        if k < 0:
            self.base.insertItem(self.base.count() - 1, f"File {os.path.basename(path)}", path)
            k = self.base.findData(path)
        self.base.setCurrentIndex(k)

    # -- defaults -------------------------------------------------------------------------
    def _apply_defaults(self) -> None:
        on_gpu = bool(self.gpus)
        if self.active:
            base = self.active
            arch = self._arch_of(self.active) or default_arch(on_gpu)
        else:
            base, arch = "auto", default_arch(on_gpu)
        self._set_combo(self.base, base)
        self._set_combo(self.arch, arch)
        self.minutes.setValue(DEFAULT_MINUTES_GPU if on_gpu else DEFAULT_MINUTES_CPU)
        self.epochs.setValue(default_epochs(self.n_reviewed, on_gpu, self._fine_tunes(base)))
        self.by_minutes.setChecked(True)

    def _fine_tunes(self, base) -> bool:
        return base != "scratch" and not (base == "auto" and auto_base(self.arch.currentData()) == "scratch")

    def _arch_of(self, base: Optional[str]) -> Optional[str]:
        """The architecture of a run or of a checkpoint file inside a run folder."""
        run = self.models.get(base)
        if run is None and base and os.path.isfile(base):
            from engine.runs import read_run
            folder = os.path.dirname(os.path.abspath(base))
            run = read_run(folder) if os.path.isfile(os.path.join(folder, "config.json")) else None
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
        elif base not in ("auto", "coco", "imagenet", "scratch", CHECKPOINT_FILE):
            arch = self._arch_of(base)
            if arch:
                self._set_combo(self.arch, arch)
        if base != CHECKPOINT_FILE:
            self.epochs.setValue(default_epochs(self.n_reviewed, bool(self.gpus), self._fine_tunes(base)))
        self._update()

    def _update(self) -> None:
        n = self.n_reviewed
        if n == 0:
            self.items_label.setText("<b>No reviewed items yet.</b> Correct a few images and press<br>"
                                     "<i>Accept</i> (mark reviewed); only reviewed items are used.")
        else:
            n_val = 0 if n < 2 else max(1, round(0.2 * n))
            self.items_label.setText(f"<b>{n}</b> reviewed item(s) of {self.n_items} "
                                     f"(about {n - n_val} to train, {n_val} to validate)")
        base, arch = self.base.currentData(), self.arch.currentData()
        self.minutes.setEnabled(self.by_minutes.isChecked())
        self.epochs.setEnabled(not self.by_minutes.isChecked())
        problems, notes = [], []
        if base == CHECKPOINT_FILE:
            self.start_from.setText("Choose a checkpoint file (a MaskLoop model.pt)")
            problems.append("choose a checkpoint file")
        else:
            text = start_from_text(base, arch, run_arch=self._arch_of(base))
            self.start_from.setText("Uses: " + text.replace(". ", ".\n"))
            self.start_from.setToolTip(text)
        if n == 0:
            problems.append("mark at least one item reviewed first")
        if base == "coco" and arch not in self.coco_archs:
            problems.append(f"COCO weights exist for {', '.join(self.coco_archs)} only")
        if base not in ("auto", "coco", "imagenet", "scratch", CHECKPOINT_FILE):
            want = self._arch_of(base)
            if want and arch != want:
                problems.append(f"that model is a {want}; choose {want} or another base")
        if self.device.currentData() == "cpu" or not self.gpus:
            if arch in ("r101fpn", "x101fpn"):
                notes.append(f"{arch} is slow on a CPU; {default_arch(False)} trains many times faster")
        if self.by_minutes.isChecked():
            notes.append("the run plans its steps and learning-rate schedule to end within the "
                         "budget, with a validated checkpoint")
        self.hint.setText("\n".join(["⚠ " + p for p in problems] + notes))
        self.ok_button.setEnabled(not problems)

    # -- result ---------------------------------------------------------------------------
    def options(self) -> dict:
        budget = self.by_minutes.isChecked()
        return {"arch": self.arch.currentData(), "base": self.base.currentData(),
                "epochs": None if budget else int(self.epochs.value()),
                "minutes": int(self.minutes.value()) if budget else None,
                "device": self.device.currentData()}

    def set_options(self, **opts) -> None:
        """Set fields programmatically (tests, scripted runs); `epochs` or `minutes`
        also chooses how the run's length is given."""
        if "base" in opts:
            base = str(opts["base"])
            if self.base.findData(base) < 0 and os.path.isfile(base):
                self.set_checkpoint(base)
            self._set_combo(self.base, base)
        if "arch" in opts:
            self._set_combo(self.arch, opts["arch"])
        if opts.get("epochs"):
            self.epochs.setValue(int(opts["epochs"]))
            self.by_epochs.setChecked(True)
        if opts.get("minutes"):
            self.minutes.setValue(int(opts["minutes"]))
            self.by_minutes.setChecked(True)
        if "device" in opts:
            self._set_combo(self.device, opts["device"])
        self._update()
