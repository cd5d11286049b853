"""Training in a child process (DESIGN.md section 7).

`TrainingRunner` runs `main.py train PROJECT ... --progress jsonl` as a child process
(QProcess), turns its JSON lines into signals, cancels it (terminate, then kill after a
grace period) and, when it dies, says why: a crash, out of memory, killed, or a non-zero
exit, with the last lines of its stderr. A crash in training cannot take the GUI or the
project with it, and GPU memory returns when the process ends.
"""
from __future__ import annotations

import signal
import sys
import time
from collections import deque
from pathlib import Path
from typing import Callable, Optional

from PyQt5 import QtCore

from engine.errors import MaskLoopError
from engine.events import parse_line


OOM_MARKERS = ("out of memory", "outofmemoryerror", "cannot allocate memory", "memoryerror",
               "std::bad_alloc", "defaultcpuallocator: can't allocate memory")


def train_command(project_root, *, arch: Optional[str] = None, base: Optional[str] = None,
                  epochs: Optional[int] = None, device: Optional[str] = None,
                  extra: Optional[list] = None) -> list[str]:
    """[python, ..., "train", PROJECT, ..., "--progress", "jsonl"] for this installation.

    From a source checkout, main.py sits beside the engine package and is run by path;
    from an installed package (main is a py-module there too) the same holds in
    site-packages; otherwise the CLI is reached through `-c` and engine.cli.
    """
    args = ["train", str(project_root)]
    if arch:
        args += ["--arch", str(arch)]
    if base:
        args += ["--base", str(base)]
    if epochs:
        args += ["--epochs", str(int(epochs))]
    if device:
        args += ["--device", str(device)]
    args += list(extra or [])
    args += ["--progress", "jsonl"]
    return [sys.executable, "-u"] + entry_args() + args


def entry_args() -> list[str]:
    import engine
    root = Path(engine.__file__).resolve().parent.parent
    main_py = root / "main.py"
    if main_py.is_file():
        return [str(main_py)]
    return ["-c", "import sys; from engine.cli import run; sys.exit(run(sys.argv[1:]))"]


def describe_exit(exit_code: int, crashed: bool, stderr_tail: str, error_event: Optional[dict],
                  cancelled: bool) -> tuple[str, str]:
    """(kind, message) for a training process that ended without a `done` event.

    kind: "cancelled" | "oom" | "data" | "internal" | "crash" | "killed" | "exit".
    """
    tail = stderr_tail.strip()
    last = tail.splitlines()[-1].strip() if tail else ""
    low = tail.lower()
    if cancelled:
        hint = next((ln.strip() for ln in reversed(tail.splitlines()) if "--resume" in ln), "")
        return "cancelled", "training was cancelled; the project is unchanged" + (
            f" ({hint.split(': ', 1)[-1]})" if hint else "")
    if error_event:
        kind = str(error_event.get("kind") or "internal")
        msg = str(error_event.get("message") or last or "unknown error")
        if kind == "oom":
            return "oom", (f"training ran out of memory: {msg}. Try fewer or smaller images per "
                           f"batch, a lighter architecture (r18fpn) or the CPU")
        if kind == "cancelled":
            return "cancelled", "training was cancelled; the project is unchanged"
        if kind == "data":
            return "data", f"training could not use the data: {msg}"
        return kind, f"training failed: {msg}"
    if any(m in low for m in OOM_MARKERS):
        return "oom", (f"training ran out of memory ({last or 'out of memory'}). Try a lighter "
                       f"architecture (r18fpn), fewer epochs' worth of data in memory, or the CPU")
    if crashed:
        sig = ""
        if sys.platform != "win32" and exit_code in (signal.SIGKILL, 9):
            sig = " (SIGKILL: killed by the system, often for lack of memory, or by the user)"
        return "killed" if sig else "crash", (
            f"the training process crashed{sig}" + (f": {last}" if last else "")
            + "; the project is unchanged")
    if sys.platform != "win32" and exit_code in (128 + 9, 137):
        return "killed", "the training process was killed (SIGKILL, often out of memory); the project is unchanged"
    return "exit", (f"the training process stopped with exit status {exit_code}"
                    + (f": {last}" if last else "") + "; the project is unchanged")


class TrainingRunner(QtCore.QObject):
    """`main.py train ... --progress jsonl` in a QProcess, its JSON lines as signals.

    Signals carry the parsed events of DESIGN.md section 5. `finished(ok, kind, message)`
    comes exactly once per start: ok=True after a `done` event and exit status 0.
    """

    started = QtCore.pyqtSignal(dict)         # the "start" event
    iteration = QtCore.pyqtSignal(dict)       # "iter"
    epochEnded = QtCore.pyqtSignal(dict)      # "epoch"
    done = QtCore.pyqtSignal(dict)            # "done"
    errorEvent = QtCore.pyqtSignal(dict)      # "error" as reported by the child
    anyEvent = QtCore.pyqtSignal(dict)        # every event, including unknown kinds
    logLine = QtCore.pyqtSignal(str)          # a non-JSON stdout line or stderr line
    finished = QtCore.pyqtSignal(bool, str, str)   # ok, kind, message
    runningChanged = QtCore.pyqtSignal(bool)

    # After SIGTERM the child finishes its step and writes a resumable checkpoint (model and
    # optimizer state: ~1.3 GB for x101fpn) before it exits; killing it during that write
    # loses the partial epoch, so it gets a minute. A second cancel() kills at once.
    KILL_AFTER_MS = 60000

    def __init__(self, parent=None, command_factory: Callable = train_command) -> None:
        super().__init__(parent)
        self._command_factory = command_factory
        self.proc: Optional[QtCore.QProcess] = None
        self._buf = b""
        self._err_tail: deque = deque(maxlen=40)
        self._err_buf = b""
        self._done_event: Optional[dict] = None
        self._activated_event: Optional[dict] = None
        self._error_event: Optional[dict] = None
        self._cancelled = False
        self._reported = False
        self.start_event: Optional[dict] = None
        self.events: list[dict] = []
        self.started_at = 0.0
        self._kill_timer = QtCore.QTimer(self)
        self._kill_timer.setSingleShot(True)
        self._kill_timer.timeout.connect(self.kill)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.state() != QtCore.QProcess.NotRunning

    def pid(self) -> int:
        return int(self.proc.processId()) if self.proc is not None else 0

    def start(self, project_root, *, arch=None, base=None, epochs=None, device=None,
              extra=None, command: Optional[list] = None, cwd=None) -> None:
        if self.running:
            raise MaskLoopError("a training run is already in progress")
        cmd = command or self._command_factory(project_root, arch=arch, base=base, epochs=epochs,
                                               device=device, extra=extra)
        self._buf = b""
        self._err_buf = b""
        self._err_tail.clear()
        self._done_event = None
        self._error_event = None
        self._activated_event = None
        self._cancelled = False
        self._reported = False
        self.start_event = None
        self.events = []
        self.command = list(cmd)
        proc = QtCore.QProcess(self)
        env = QtCore.QProcessEnvironment.systemEnvironment()
        env.insert("PYTHONUNBUFFERED", "1")
        env.insert("PYTHONIOENCODING", "utf-8")
        proc.setProcessEnvironment(env)
        proc.setWorkingDirectory(str(cwd or project_root))
        proc.readyReadStandardOutput.connect(self._read_stdout)
        proc.readyReadStandardError.connect(self._read_stderr)
        proc.finished.connect(self._on_finished)
        proc.errorOccurred.connect(self._on_error)
        self.proc = proc
        self.started_at = time.monotonic()
        proc.start(cmd[0], cmd[1:])
        self.runningChanged.emit(True)

    @property
    def cancelling(self) -> bool:
        return self.running and self._cancelled

    def cancel(self) -> None:
        """Ask the child to stop (SIGTERM: it saves and reports `cancelled`); kill it if
        it has not ended after KILL_AFTER_MS, or at once when asked a second time."""
        if not self.running:
            return
        if self._cancelled:
            self.kill()
            return
        self._cancelled = True
        self.proc.terminate()
        self._kill_timer.start(self.KILL_AFTER_MS)

    def kill(self) -> None:
        if self.running:
            self.proc.kill()

    def wait(self, msecs: int = 30000) -> bool:
        return self.proc.waitForFinished(msecs) if self.proc is not None else True

    # -- output -------------------------------------------------------------------------
    def _read_stdout(self) -> None:
        self._buf += bytes(self.proc.readAllStandardOutput())
        while b"\n" in self._buf:
            line, self._buf = self._buf.split(b"\n", 1)
            self._handle_line(line.decode("utf-8", "replace").strip())

    def _read_stderr(self) -> None:
        self._err_buf += bytes(self.proc.readAllStandardError())
        while b"\n" in self._err_buf:
            line, self._err_buf = self._err_buf.split(b"\n", 1)
            text = line.decode("utf-8", "replace").rstrip()
            if text.strip():
                self._err_tail.append(text)
                self.logLine.emit(text)

    def _handle_line(self, line: str) -> None:
        if not line:
            return
        ev = parse_line(line)   # engine.events: the one schema of these lines
        if ev is None:
            self.logLine.emit(line)
            return
        self.events.append(ev)
        kind = ev.get("event")
        self.anyEvent.emit(ev)
        if kind == "start":
            self.start_event = ev
            self.started.emit(ev)
        elif kind == "iter":
            self.iteration.emit(ev)
        elif kind == "epoch":
            self.epochEnded.emit(ev)
        elif kind == "done":
            self._done_event = ev
            self.done.emit(ev)
        elif kind == "error":
            self._error_event = ev
            self.errorEvent.emit(ev)
        elif kind == "activated":
            self._activated_event = ev

    def _on_error(self, err) -> None:
        if err == QtCore.QProcess.FailedToStart:
            self._report(False, "exit", f"cannot start the training process ({self.proc.errorString()}): "
                                        f"{' '.join(self.command[:3])}")
            self.runningChanged.emit(False)

    def _on_finished(self, exit_code: int, exit_status) -> None:
        self._kill_timer.stop()
        self._read_stdout()
        self._read_stderr()
        if self._buf.strip():
            self._handle_line(self._buf.decode("utf-8", "replace").strip())
            self._buf = b""
        if self._err_buf.strip():
            self._err_tail.append(self._err_buf.decode("utf-8", "replace").rstrip())
            self._err_buf = b""
        crashed = exit_status == QtCore.QProcess.CrashExit
        if self._done_event is not None and exit_code == 0 and not crashed:
            self._report(True, "done", f"training finished: {self._done_event.get('run', '')}")
        else:
            cancelled = self._cancelled or (self._error_event or {}).get("kind") == "cancelled"
            kind, msg = describe_exit(exit_code, crashed, "\n".join(self._err_tail),
                                      self._error_event, cancelled)
            self._report(False, kind, msg)
        self.runningChanged.emit(False)

    def _report(self, ok: bool, kind: str, message: str) -> None:
        if self._reported:
            return
        self._reported = True
        self.finished.emit(ok, kind, message)

    @property
    def done_event(self) -> Optional[dict]:
        """The child's `done` event of the last run (None when it did not finish)."""
        return self._done_event

    @property
    def activated_event(self) -> Optional[dict]:
        """The child's verdict on the new run (`activated`: run, active, reason), if it gave one."""
        return self._activated_event

    def stderr_tail(self) -> str:
        return "\n".join(self._err_tail)
