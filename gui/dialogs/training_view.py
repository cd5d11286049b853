"""Live view of a training run: loss and validation AP curves (QPainter), ETA, Cancel.

`TrainingView.attach(runner)` connects to a gui.loop.runner.TrainingRunner; the view only
draws what the child process reports in its JSON lines (DESIGN.md section 5).
"""
from __future__ import annotations

import math
from typing import Optional

from PyQt5 import QtCore, QtGui, QtWidgets

from .. import theme

LOSS_COLOR = theme.color("plot.loss")
LOSS_RAW_COLOR = theme.color("plot.loss_raw")
AP_COLOR = theme.color("plot.ap")
AP50_COLOR = theme.color("plot.ap50")
ACC_COLOR = theme.color("plot.acc50")

CANCEL = "Cancel training"
STOP_NOW = "Stop now"  # after Cancel: kill the child without waiting for its checkpoint
CANCELLING = "Cancelling… saving a checkpoint to resume from (Stop now skips it)"


def nice_step(span: float, target_ticks: int = 5) -> float:
    """A 1/2/5 x 10^k step giving about `target_ticks` ticks over `span`."""
    if span <= 0 or not math.isfinite(span):
        return 1.0
    raw = span / max(1, target_ticks)
    mag = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 5, 10):
        if raw <= m * mag:
            return m * mag
    return 10 * mag


def format_eta(seconds: Optional[float]) -> str:
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "–"
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {(s % 3600) // 60:02d} min"


class CurvePlot(QtWidgets.QWidget):
    """Training loss (left axis) per iteration and validation metrics (right axis, 0-1)
    per epoch, x in epochs."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setObjectName("curvePlot")
        self.setMinimumSize(360, 220)
        self.setSizePolicy(QtWidgets.QSizePolicy.Expanding, QtWidgets.QSizePolicy.Expanding)
        self.clear()

    def clear(self) -> None:
        self.loss: list[tuple[float, float]] = []       # (x, loss)
        self.smooth: list[tuple[float, float]] = []
        self.val: dict[str, list[tuple[float, float]]] = {"mask_AP": [], "mask_AP50": [], "acc50": []}
        self.epochs_total = 0
        self._ema: Optional[float] = None
        self.update()

    def add_loss(self, x: float, loss: float) -> None:
        if not math.isfinite(loss):
            return
        self.loss.append((x, loss))
        a = 0.2 if len(self.loss) < 20 else 0.08
        self._ema = loss if self._ema is None else (1 - a) * self._ema + a * loss
        self.smooth.append((x, self._ema))
        self.update()

    def add_metrics(self, x: float, metrics: dict) -> None:
        for key in self.val:
            v = metrics.get(key)
            if isinstance(v, (int, float)) and math.isfinite(v) and v >= 0:
                self.val[key].append((x, float(v)))
        self.update()

    # -- painting -------------------------------------------------------------------------
    def paintEvent(self, _event) -> None:
        p = QtGui.QPainter(self)
        p.setRenderHint(QtGui.QPainter.Antialiasing, True)
        pal = self.palette()
        p.fillRect(self.rect(), pal.color(QtGui.QPalette.Base))
        fm = p.fontMetrics()
        title_w = fm.height() + 4   # room for the rotated axis titles
        left, right = fm.width("0.000") + 14 + title_w, fm.width("1.0") + 16 + title_w
        top, bottom = 26, 2 * fm.height() + 8
        plot = QtCore.QRectF(left, top, max(10, self.width() - left - right),
                             max(10, self.height() - top - bottom))
        text_color = pal.color(QtGui.QPalette.Text)
        grid = QtGui.QColor(text_color)
        grid.setAlpha(40)

        xs = [x for x, _ in self.loss] + [x for v in self.val.values() for x, _ in v]
        x_max = max([float(self.epochs_total)] + xs + [1.0])
        x_min = 0.0
        ys = sorted(y for _, y in self.loss)
        if ys:
            hi = ys[min(len(ys) - 1, int(0.98 * len(ys)))]
            y_max = max(hi, max(y for _, y in self.smooth)) * 1.1
        else:
            y_max = 1.0
        y_max = y_max if y_max > 0 else 1.0

        def X(x: float) -> float:
            return plot.left() + (x - x_min) / (x_max - x_min) * plot.width()

        def YL(y: float) -> float:
            return plot.bottom() - min(y, y_max) / y_max * plot.height()

        def YR(y: float) -> float:
            return plot.bottom() - max(0.0, min(1.0, y)) * plot.height()

        # grid and axes
        p.setPen(QtGui.QPen(grid, 1))
        step = nice_step(y_max)
        y = 0.0
        while y <= y_max + 1e-9:
            yy = YL(y)
            p.drawLine(QtCore.QPointF(plot.left(), yy), QtCore.QPointF(plot.right(), yy))
            y += step
        p.setPen(text_color)
        y = 0.0
        while y <= y_max + 1e-9:
            label = f"{y:.3g}"
            p.drawText(QtCore.QRectF(0, YL(y) - fm.height() / 2, left - 6, fm.height()),
                       QtCore.Qt.AlignRight | QtCore.Qt.AlignVCenter, label)
            y += step
        for v in (0.0, 0.5, 1.0):
            p.drawText(QtCore.QRectF(plot.right() + 6, YR(v) - fm.height() / 2, right - 6, fm.height()),
                       QtCore.Qt.AlignLeft | QtCore.Qt.AlignVCenter, f"{v:.1f}")
        xstep = max(1.0, nice_step(x_max - x_min, 8))
        x = 0.0
        while x <= x_max + 1e-9:
            xx = X(x)
            p.setPen(QtGui.QPen(grid, 1))
            p.drawLine(QtCore.QPointF(xx, plot.top()), QtCore.QPointF(xx, plot.bottom()))
            p.setPen(text_color)
            p.drawText(QtCore.QRectF(xx - 20, plot.bottom() + 2, 40, fm.height()),
                       QtCore.Qt.AlignHCenter | QtCore.Qt.AlignTop, f"{x:g}")
            x += xstep
        p.drawText(QtCore.QRectF(plot.left(), plot.bottom() + fm.height() + 2, plot.width(), fm.height()),
                   QtCore.Qt.AlignHCenter, "epoch")
        self._axis_title(p, "training loss", 2, plot, -90)
        self._axis_title(p, "validation", self.width() - 2, plot, 90)
        p.setPen(QtGui.QPen(text_color, 1))
        p.drawRect(plot)

        # curves
        def polyline(points, Y) -> QtGui.QPolygonF:
            return QtGui.QPolygonF([QtCore.QPointF(X(a), Y(b)) for a, b in points])

        p.setClipRect(plot.adjusted(-1, -1, 1, 1))
        if len(self.loss) > 1:
            p.setPen(QtGui.QPen(LOSS_RAW_COLOR, 1))
            p.drawPolyline(polyline(self.loss, YL))
            p.setPen(QtGui.QPen(LOSS_COLOR, 2))
            p.drawPolyline(polyline(self.smooth, YL))
        elif self.loss:
            p.setPen(QtGui.QPen(LOSS_COLOR, 2))
            p.setBrush(LOSS_COLOR)
            p.drawEllipse(QtCore.QPointF(X(self.loss[0][0]), YL(self.loss[0][1])), 3.5, 3.5)
            p.setBrush(QtCore.Qt.NoBrush)
        for key, color in (("mask_AP", AP_COLOR), ("mask_AP50", AP50_COLOR), ("acc50", ACC_COLOR)):
            pts = self.val[key]
            if not pts:
                continue
            p.setPen(QtGui.QPen(color, 2))
            if len(pts) > 1:
                p.drawPolyline(polyline(pts, YR))
            else:   # one validation so far (a one-epoch run): its level across the plot
                p.setPen(QtGui.QPen(color, 1.5, QtCore.Qt.DashLine))
                p.drawLine(QtCore.QPointF(plot.left(), YR(pts[0][1])), QtCore.QPointF(plot.right(), YR(pts[0][1])))
                p.drawText(QtCore.QPointF(plot.left() + 4, YR(pts[0][1]) - 3), f"{pts[0][1]:.3f}")
                p.setPen(QtGui.QPen(color, 2))
            p.setBrush(color)
            for a, b in pts:
                p.drawEllipse(QtCore.QPointF(X(a), YR(b)), 3.5, 3.5)
            p.setBrush(QtCore.Qt.NoBrush)
        p.setClipping(False)

        # legend
        x = plot.left()
        for text, color in (("loss", LOSS_COLOR), ("val mask AP", AP_COLOR),
                            ("val AP50", AP50_COLOR), ("val acc50", ACC_COLOR)):
            p.setPen(QtGui.QPen(color, 3))
            p.drawLine(QtCore.QPointF(x, 12), QtCore.QPointF(x + 16, 12))
            p.setPen(text_color)
            p.drawText(QtCore.QPointF(x + 20, 12 + fm.ascent() / 2 - 1), text)
            x += 28 + fm.width(text)
        p.end()

    def _axis_title(self, p: QtGui.QPainter, text: str, x: float, plot: QtCore.QRectF, angle: int) -> None:
        """A title along a vertical axis, rotated to read along it."""
        p.save()
        p.setPen(self.palette().color(QtGui.QPalette.Text))
        p.translate(x, plot.center().y())
        p.rotate(angle)
        h = p.fontMetrics().height()
        box = QtCore.QRectF(-plot.height() / 2, 0, plot.height(), h)
        p.drawText(box, QtCore.Qt.AlignCenter, text)
        p.restore()


class TrainingView(QtWidgets.QWidget):
    """Plot, progress, ETA, metrics and Cancel for one TrainingRunner."""

    cancelRequested = QtCore.pyqtSignal()

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setObjectName("TrainingView")
        self.runner = None
        self.title = QtWidgets.QLabel("No training run yet.")
        self.title.setObjectName("trainingTitle")
        self.title.setWordWrap(True)
        self.plot = CurvePlot()
        self.bar = QtWidgets.QProgressBar()
        self.bar.setObjectName("trainingProgress")
        self.bar.setRange(0, 1)
        self.bar.setValue(0)
        self.status = QtWidgets.QLabel("")
        self.status.setObjectName("trainingStatus")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(QtCore.Qt.TextSelectableByMouse)
        self.metrics = QtWidgets.QLabel("")
        self.metrics.setObjectName("trainingMetrics")
        self.cancel_button = QtWidgets.QPushButton(CANCEL)
        self.cancel_button.setObjectName("cancelTraining")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        self.log = QtWidgets.QPlainTextEdit()
        self.log.setObjectName("trainingLog")
        self.log.setReadOnly(True)
        self.log.setMaximumBlockCount(500)
        self.log.setVisible(False)
        self.log_toggle = QtWidgets.QToolButton()
        self.log_toggle.setText("Show log")
        self.log_toggle.setCheckable(True)
        self.log_toggle.toggled.connect(self._toggle_log)

        row = QtWidgets.QHBoxLayout()
        row.addWidget(self.bar, 1)
        row.addWidget(self.cancel_button)
        row2 = QtWidgets.QHBoxLayout()
        row2.addWidget(self.metrics, 1)
        row2.addWidget(self.log_toggle)
        lay = QtWidgets.QVBoxLayout(self)
        lay.addWidget(self.title)
        lay.addWidget(self.plot, 1)
        lay.addLayout(row)
        lay.addWidget(self.status)
        lay.addLayout(row2)
        lay.addWidget(self.log)
        self._reset_state()

    def _reset_state(self) -> None:
        self.iters_per_epoch = 0
        self.epochs = 0
        self.epoch_cap: Optional[int] = None   # a time budget's cap on epochs (not its length)
        self.first_epoch: Optional[int] = None
        self.iter_base: Optional[int] = None
        self.last_eta: Optional[float] = None
        self.finished_ok: Optional[bool] = None
        self.finish_kind = ""
        self.finish_message = ""

    def _toggle_log(self, on: bool) -> None:
        self.log.setVisible(on)
        self.log_toggle.setText("Hide log" if on else "Show log")

    # -- wiring -------------------------------------------------------------------------
    def attach(self, runner) -> None:
        """Show `runner`'s next (or current) run."""
        if self.runner is not None and self.runner is not runner:
            for sig, slot in self._connections():
                try:
                    sig.disconnect(slot)
                except TypeError:
                    pass
        self.runner = runner
        for sig, slot in self._connections():
            sig.connect(slot)

    def _connections(self):
        r = self.runner
        return [(r.started, self.on_start), (r.iteration, self.on_iter), (r.epochEnded, self.on_epoch),
                (r.done, self.on_done), (r.finished, self.on_finished), (r.logLine, self.on_log),
                (r.runningChanged, self.on_running)]

    def begin(self, description: str) -> None:
        """A new run is starting."""
        self._reset_state()
        self.plot.clear()
        self.log.clear()
        self.title.setText(description)
        theme.set_state(self.status, "")
        self.status.setText("Starting the training process…")
        self.metrics.setText("")
        self.bar.setRange(0, 0)  # busy until the start event
        self.cancel_button.setText(CANCEL)
        self.cancel_button.setEnabled(True)

    def on_running(self, running: bool) -> None:
        self.cancel_button.setEnabled(running)

    def _x_epoch(self, epoch) -> int:
        e = int(epoch)
        if self.first_epoch is None:
            self.first_epoch = e
        return e - self.first_epoch

    def on_start(self, ev: dict) -> None:
        self.iters_per_epoch = int(ev.get("iters_per_epoch") or 0)
        # under a time budget the start's epochs are only a cap: the length is known once
        # the run has planned it (the "epochs" of its iter events)
        self.epoch_cap = int(ev.get("epochs") or 0) if ev.get("minutes") else None
        self._set_epochs(0 if self.epoch_cap else int(ev.get("epochs") or 0))
        self.bar.setValue(0)
        dev = ev.get("device", "?")
        self.status.setText(f"Training on {dev}: {ev.get('train_items', '?')} item(s), "
                            f"{ev.get('val_items', '?')} for validation")
        self.plot.update()

    def _set_epochs(self, epochs: int) -> None:
        self.epochs = epochs
        self.plot.epochs_total = epochs
        self.bar.setRange(0, max(1, epochs * max(1, self.iters_per_epoch)))

    def on_iter(self, ev: dict) -> None:
        planned = ev.get("epochs")
        if (isinstance(planned, int) and 0 < planned != self.epochs
                and not (self.epoch_cap and planned >= self.epoch_cap)):
            self._set_epochs(planned)   # a time budget's plan (or its revision)
        e = self._x_epoch(ev.get("epoch", 0))
        i = int(ev.get("iter", 0))
        ipe = max(1, self.iters_per_epoch)
        if self.iter_base is None:  # iterations counted from 0 or from 1: the first one says
            self.iter_base = 0 if i == 0 else 1
        frac = min(1.0, max(0.0, (i + 1 - self.iter_base) / ipe))
        x = e + frac
        loss = ev.get("loss")
        if isinstance(loss, (int, float)):
            self.plot.add_loss(x, float(loss))
        done = int(round(x * ipe))
        if self.bar.maximum() > 1:
            self.bar.setValue(min(self.bar.maximum(), done))
        eta = ev.get("eta_s")
        self.last_eta = float(eta) if isinstance(eta, (int, float)) else None
        ep_txt = f"epoch {e + 1}/{self.epochs}" if self.epochs else f"epoch {e + 1}"
        loss_txt = f" · loss {loss:.3f}" if isinstance(loss, (int, float)) else ""
        self.status.setText(f"{ep_txt}{loss_txt} · ETA {format_eta(self.last_eta)}")

    def on_epoch(self, ev: dict) -> None:
        e = self._x_epoch(ev.get("epoch", 0))
        metrics = ev.get("metrics") or {}
        self.plot.add_metrics(e + 1, metrics)
        if self.iters_per_epoch and self.bar.maximum() > 1:
            self.bar.setValue(min(self.bar.maximum(), (e + 1) * self.iters_per_epoch))
        parts = [f"{k} {metrics[k]:.3f}" for k in ("mask_AP", "mask_AP50", "acc50")
                 if isinstance(metrics.get(k), (int, float))]
        if parts:
            self.metrics.setText(f"validation after epoch {e + 1}: " + ", ".join(parts))

    def on_done(self, ev: dict) -> None:
        best = ev.get("best") or {}
        parts = [f"{k} {best[k]:.3f}" for k in ("mask_AP", "mask_AP50", "acc50")
                 if isinstance(best.get(k), (int, float))]
        if parts:
            self.metrics.setText("best: " + ", ".join(parts))

    def on_log(self, line: str) -> None:
        self.log.appendPlainText(line)

    def on_finished(self, ok: bool, kind: str, message: str) -> None:
        self.finished_ok, self.finish_kind, self.finish_message = ok, kind, message
        self.cancel_button.setText(CANCEL)
        self.cancel_button.setEnabled(False)
        if self.bar.maximum() == 0:
            self.bar.setRange(0, 1)
        if ok:
            self.bar.setValue(self.bar.maximum())
            theme.set_state(self.status, "ok")
            self.status.setText("✓ " + message)
        else:
            theme.set_state(self.status, "error" if kind != "cancelled" else "")
            self.status.setText(("✗ " if kind != "cancelled" else "") + message)

    def cancel(self) -> None:
        """Cancel the run (it saves a checkpoint); when it is already cancelling, stop now."""
        if self.runner is not None and self.runner.cancelling:  # "Stop now": no checkpoint
            self.cancel_button.setEnabled(False)
        else:
            self.cancel_button.setText(STOP_NOW)
            self.status.setText(CANCELLING)
        self.cancelRequested.emit()
        if self.runner is not None:
            self.runner.cancel()
