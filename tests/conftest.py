"""Shared test set-up: offscreen Qt, the third-party fixtures folder, markers, and one tiny
trained model shared by the tests that need "a trained model" rather than the training."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

# --- one compute thread per process (issue 14: the suite beside busy loops) -----------------
#: The tests' models are toys (64-96 px images): with torch's default of one OpenMP thread
#: per core, its threads spin-wait for each other, and on a machine where other work holds
#: the cores a waiting thread burns its slice. Measured on the dev VM (2 shared cores,
#: load ~7): the tiny training run took 25 CPU-s with 2 threads and 11 CPU-s with 1, and
#: less wall time too. Set before torch is imported, so it holds for this process and for
#: every child (CLI runs, torchrun ranks, the GUI's training process, gpu_check.sh);
#: OMP_NUM_THREADS=N pytest still chooses otherwise. The code paths are the same.
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

#: glibc hands each tensor above its mmap threshold (at most 32 MiB) fresh pages from the
#: kernel and returns them on free, so a training step page-faults its activations in anew
#: every time: the tiny run spent 2.4 of 11 CPU-s in the kernel (550k page faults). With
#: freed memory kept for reuse it was 1.0-1.5 s (210k faults) and ~10-20 % less CPU in all.
#: Children read the environment at start; this process is set through mallopt below.
_HEAP_KEEP = 1 << 30
os.environ.setdefault("MALLOC_MMAP_THRESHOLD_", str(_HEAP_KEEP))
os.environ.setdefault("MALLOC_TRIM_THRESHOLD_", str(_HEAP_KEEP))


def _keep_freed_heap() -> None:
    try:
        import ctypes
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, int(os.environ["MALLOC_MMAP_THRESHOLD_"]))  # M_MMAP_THRESHOLD
        libc.mallopt(-1, int(os.environ["MALLOC_TRIM_THRESHOLD_"]))  # M_TRIM_THRESHOLD
    except (OSError, AttributeError, ValueError):  # not glibc: its allocator, its defaults
        pass


_keep_freed_heap()

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(os.environ.get("MASKLOOP_FIXTURES", REPO.parent / "shared" / "fixtures"))


@pytest.fixture
def fixtures_dir() -> Path:
    """../shared/fixtures (real third-party files); tests using it skip when absent."""
    if not FIXTURES.is_dir():
        pytest.skip(f"third-party fixtures not found at {FIXTURES}")
    return FIXTURES


def pytest_collection_modifyitems(config, items):
    try:
        import torch
        has_cuda = torch.cuda.is_available()
    except Exception:
        has_cuda = False
    skip_gpu = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(skip_gpu)


@pytest.fixture(autouse=True)
def _keep_qt_sigchld_handler(monkeypatch):
    """A DataLoader with worker processes replaces the process's SIGCHLD handler with
    torch's, which drops Qt's: every QProcess in later GUI tests of this pytest process
    would then never report its end. The app never runs a DataLoader in the GUI process
    (training is a child process); no test may change the handler either."""
    try:
        from torch.utils.data._utils import signal_handling
    except ImportError:  # torch is not imported by every test session
        return
    monkeypatch.setattr(signal_handling, "_SIGCHLD_handler_set", True)


# --- waits are for events; their timeouts only catch hangs ---------------------------------
#: A Qt test waits for a signal or a state (qtbot.waitSignal / waitUntil). The timeout
#: written at a call (2-30 s) was sized on an idle machine; on a busy CI machine a child
#: process or worker thread can take many times longer, and such a wait failed although
#: nothing was wrong (issue 14). Every wait's timeout is raised to at least this floor,
#: so a timeout means a hang, never "slow"; no test relies on a wait expiring.
WAIT_FLOOR_MS = int(os.environ.get("MASKLOOP_TEST_WAIT_FLOOR_MS", "120000"))


def _floor_qtbot_waits() -> None:
    try:
        from pytestqt.qtbot import QtBot
    except ImportError:  # no pytest-qt: no Qt tests
        return
    if getattr(QtBot, "_maskloop_wait_floor", False):
        return
    for name in ("waitSignal", "waitSignals", "waitUntil", "waitCallback"):
        original = getattr(QtBot, name, None)
        if original is None:
            continue

        def floored(self, *args, _original=original, **kw):
            t = kw.get("timeout", 5000)
            if t is not None and t < WAIT_FLOOR_MS:
                kw["timeout"] = WAIT_FLOOR_MS
            return _original(self, *args, **kw)
        floored.__name__ = name
        floored.__doc__ = original.__doc__
        setattr(QtBot, name, floored)
    QtBot._maskloop_wait_floor = True


_floor_qtbot_waits()


# --- one tiny trained model per session --------------------------------------------------
#: A run of a few seconds: r18fpn_lite (the CPU default) from scratch, 4 synthetic 64 px
#: nuclei images (3 train, 1 val), 2 epochs of 2 iterations. tests/engine/test_train.py
#: checks this very run (folder, event stream, resume equivalence) and trains more runs of
#: this config (cancel/resume, NaN, early stop, fine-tune, bf16/fp16); the other tests only
#: need *a* trained model and take a copy, so the suite trains it once. r18fpn_lite: 3.0
#: CPU-s for this run against 9.4 for r18fpn (dev VM, 1 thread, load ~11); r18fpn is still
#: trained by the DDP and budget tests, test_learning_recipe and the e2e loop.
TINY_TRAIN = dict(arch="r18fpn_lite", base="scratch", epochs=2, batch_size=2, device="cpu", seed=0, val_fraction=0.25,
                  rois_per_image=64, rpn_post_nms_train=300, keep_last=True)


@pytest.fixture(scope="session")
def tiny_config():
    """tiny_config(**changes) -> TrainConfig: TINY_TRAIN with some fields changed."""
    from engine.model.train import TrainConfig
    return lambda **kw: TrainConfig(**{**TINY_TRAIN, **kw})


@pytest.fixture(scope="session")
def tiny_src(tmp_path_factory) -> Path:
    """The tiny project (4 reviewed 64 px nuclei images, no model); copy it before changing it."""
    from engine.demo import synthetic_project
    root = tmp_path_factory.mktemp("tiny-src") / "tiny"
    synthetic_project(root, "nuclei", 4, 64)
    return root


@pytest.fixture(scope="session")
def tiny_run(tiny_src, tiny_config, tmp_path_factory):
    """(project, FitResult, events) of the one tiny training run (TINY_TRAIN) on a copy of
    tiny_src. Read it, never change it: copy_trained() gives a project of one's own."""
    from engine.model.train import train_project
    from engine.project import Project
    root = tmp_path_factory.mktemp("tiny-run") / "tiny"
    shutil.copytree(tiny_src, root)
    proj = Project.open(root)
    events: list = []
    res = train_project(proj, tiny_config(), callbacks=[events.append])
    return proj, res, events


def copy_run(run_dir: Path, models_dir: Path) -> Path:
    """The finished run's folder into another project's models/ (not last.pt: a finished
    model does not need it). model.pt is hard-linked where possible: MaskLoop never writes
    a checkpoint in place (atomic writes make a new file), so the shared one stays intact."""
    dest = Path(models_dir) / run_dir.name
    dest.mkdir(parents=True)
    for f in run_dir.iterdir():
        if f.is_file() and f.name != "last.pt":
            try:
                os.link(f, dest / f.name)
            except OSError:
                shutil.copy2(f, dest / f.name)
    return dest


@pytest.fixture
def add_tiny_model(tiny_run):
    """add_tiny_model(project, *, active=True) -> run name: the tiny run into that project's
    models/ (its labels must include "nucleus")."""
    res = tiny_run[1]

    def add(proj, *, active=True):
        copy_run(res.run_dir, proj.models_dir)
        if active:
            proj.set_active_model(res.run)
        return res.run
    return add


@pytest.fixture
def copy_trained(tiny_run, add_tiny_model, tmp_path):
    """copy_trained(dest=None, *, active=True) -> Project: a copy of the tiny project with
    the tiny run in its models/ (the active model unless active=False)."""
    from engine.project import Project

    def make(dest=None, *, active=True):
        dest = Path(dest) if dest is not None else tmp_path / "trained"
        shutil.copytree(tiny_run[0].root, dest, ignore=shutil.ignore_patterns("models", ".maskloop.lock"))
        proj = Project.open(dest)
        add_tiny_model(proj, active=active)
        return proj
    return make
