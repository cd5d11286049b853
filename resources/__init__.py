"""MaskLoop's data files (icons, style sheet, theme colours, keymap), installed with the
package; gui.theme loads them once."""
from pathlib import Path

ROOT = Path(__file__).resolve().parent


def path(*parts: str) -> Path:
    return ROOT.joinpath(*parts)
