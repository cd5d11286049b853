"""The look and the keys of the window, read once from resources/ (package data):
theme.json (label palette, status, text, plot and canvas colours), keymap.json (action →
shortcuts, and the canvas's own keys for the help), style.qss and the SVG icons.

Widgets ask here instead of holding colour literals: `color("status.reviewed")`,
`icon("brush")`, `keys("save")`, `set_state(label, "error")`.
"""
from __future__ import annotations

import json
import re
from functools import lru_cache
from string import Template

from PyQt5 import QtGui, QtWidgets

import resources


@lru_cache(maxsize=None)
def theme() -> dict:
    return json.loads(resources.path("theme.json").read_text(encoding="utf-8"))


@lru_cache(maxsize=None)
def keymap() -> dict:
    return json.loads(resources.path("keymap.json").read_text(encoding="utf-8"))


def _lookup(name: str):
    node = theme()
    for part in name.split("."):
        node = node[part]
    return node


def hex_color(name: str) -> str:
    """'#rrggbb' or '#rrggbbaa' of a theme entry such as 'status.new' or 'plot.loss'."""
    return str(_lookup(name))


def color(name: str) -> QtGui.QColor:
    value = hex_color(name)
    if re.fullmatch(r"#[0-9a-fA-F]{8}", value):  # #rrggbbaa (Qt reads #aarrggbb)
        c = QtGui.QColor(value[:7])
        c.setAlpha(int(value[7:], 16))
        return c
    return QtGui.QColor(value)


def rgb(name: str) -> tuple[int, int, int]:
    c = color(name)
    return (c.red(), c.green(), c.blue())


def label_palette() -> list[tuple[int, int, int]]:
    return [tuple(int(h[k:k + 2], 16) for k in (1, 3, 5)) for h in theme()["label_palette"]]


def label_color(index: int) -> tuple[int, int, int]:
    """The colour for the index-th label of a project (cycles through the palette)."""
    pal = label_palette()
    return pal[index % len(pal)]


def keys(action: str) -> list[str]:
    """Shortcuts of an action by its name (keymap.json "actions"); [] when it has none."""
    return list(keymap()["actions"].get(action, []))


def canvas_keys() -> list[tuple[str, str, str]]:
    return [tuple(row) for row in keymap()["canvas"]]


@lru_cache(maxsize=None)
def icon(name: str) -> QtGui.QIcon:
    """An icon of resources/icons (an empty icon when there is none of that name)."""
    p = resources.path("icons", f"{name}.svg")
    return QtGui.QIcon(str(p)) if p.is_file() else QtGui.QIcon()


def style_sheet() -> str:
    """style.qss with ${name} replaced by the theme's text and canvas colours."""
    values = {**theme()["text"], **theme()["canvas"]}
    return Template(resources.path("style.qss").read_text(encoding="utf-8")).safe_substitute(values)


def set_state(widget: QtWidgets.QWidget, state: str = "") -> None:
    """Colour a label by meaning ("error", "ok", "muted", "warning"; "" = normal) through
    the style sheet's [state=...] rules."""
    widget.setProperty("state", state)
    style = widget.style()
    style.unpolish(widget)
    style.polish(widget)
    widget.update()


def apply(app: QtWidgets.QApplication) -> None:
    """Style sheet and window icon, once per application."""
    if app.property("maskloop_theme"):
        return
    app.setProperty("maskloop_theme", True)
    app.setStyleSheet(style_sheet())
    app.setWindowIcon(icon("app"))
