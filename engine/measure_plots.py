"""The three measurement plots, drawn on a matplotlib Figure (Agg for files, Qt's canvas in the GUI).

- size distribution: histogram of equivalent diameter (sphere diameter for objects) per label
- gradation curve: cumulative percent finer by diameter, by count and by area (volume), log x
- fractions: area (volume) fraction of each label per item (stack)

pyplot is never imported: its global backend choice must not depend on who imports engine.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

import numpy as np

from .measure import Table

PLOTS = ("size_distribution", "gradation", "fractions")
Colors = Optional[Callable[[str], tuple]]


def _size_columns(table: Table) -> tuple[Optional[str], Optional[str], str]:
    """(diameter column, area-or-volume column, the weight's word) of an instance/object table."""
    if table.level == "object":
        return table.find("equivalent_sphere_diameter"), table.find("volume"), "volume"
    return table.find("equivalent_diameter"), table.find("area"), "area"


def _labels(table: Table) -> list[str]:
    return list(dict.fromkeys(r["label"] for r in table.rows))


def _color(colors: Colors, label: str, k: int):
    if colors is None:
        return f"C{k % 10}"
    r, g, b = colors(label)[:3]
    return (r / 255, g / 255, b / 255)


def _unit(col: str) -> str:
    return col.rsplit("_", 1)[-1]


def _empty(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="0.4")
    ax.set_xticks([])
    ax.set_yticks([])


def size_distribution(fig, table: Table, colors: Colors = None) -> None:
    ax = fig.add_subplot(111)
    dcol, _w, _word = _size_columns(table)
    d = table.values(dcol) if dcol else np.array([])
    d = d[np.isfinite(d)]
    if d.size == 0:
        _empty(ax, "nothing measured")
        return
    bins = np.histogram_bin_edges(d, bins=min(40, max(5, int(np.sqrt(d.size)))))
    for k, label in enumerate(_labels(table)):
        v = np.array([r[dcol] for r in table.rows if r["label"] == label], dtype=float)
        ax.hist(v, bins=bins, histtype="stepfilled", alpha=0.45, color=_color(colors, label, k),
                edgecolor=_color(colors, label, k), label=f"{label} (n={v.size})")
    ax.set_xlabel(f"{'equivalent sphere diameter' if table.level == 'object' else 'equivalent diameter'}"
                  f" [{_unit(dcol)}]")
    ax.set_ylabel("count")
    ax.set_title("Size distribution")
    ax.legend(fontsize="small")


def gradation(fig, table: Table, colors: Colors = None) -> None:
    """Cumulative percent finer: solid by area (volume), dashed by count; log diameter axis."""
    ax = fig.add_subplot(111)
    dcol, wcol, word = _size_columns(table)
    if not table.rows or dcol is None:
        _empty(ax, "nothing measured")
        return
    for k, label in enumerate(_labels(table)):
        rows = [r for r in table.rows if r["label"] == label and r[dcol] > 0]
        if not rows:
            continue
        d = np.array([r[dcol] for r in rows], dtype=float)
        w = np.array([r[wcol] for r in rows], dtype=float)
        order = np.argsort(d)
        d, w = d[order], w[order]
        c = _color(colors, label, k)
        ax.step(d, 100 * np.cumsum(w) / w.sum(), where="post", color=c, label=f"{label} by {word}")
        ax.step(d, 100 * np.arange(1, d.size + 1) / d.size, where="post", color=c, linestyle="--",
                label=f"{label} by count")
    from matplotlib.ticker import ScalarFormatter
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(ScalarFormatter())
    ax.tick_params(axis="x", which="minor", labelsize="x-small")
    ax.set_ylim(0, 100)
    ax.set_xlabel(f"equivalent diameter [{_unit(dcol)}]")
    ax.set_ylabel("percent finer [%]")
    ax.set_title("Gradation curve")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small")


def fractions(fig, summary: Table, colors: Colors = None) -> None:
    """Stacked bars: the fraction of each item (stack) each label covers."""
    ax = fig.add_subplot(111)
    key = "volume_fraction" if summary.level == "stack" else "area_fraction"
    group = "image" if summary.level == "stack" else "item"
    groups = list(dict.fromkeys(r[group] for r in summary.rows))
    labels = [lab for lab in dict.fromkeys(r["label"] for r in summary.rows)
              if any(r["label"] == lab and r["count"] for r in summary.rows)]
    if not groups or not labels:
        _empty(ax, "nothing measured")
        return
    x = np.arange(len(groups))
    bottom = np.zeros(len(groups))
    for k, label in enumerate(labels):
        v = np.zeros(len(groups))
        for r in summary.rows:
            if r["label"] == label:
                v[groups.index(r[group])] = 100 * r[key]
        ax.bar(x, v, bottom=bottom, color=_color(colors, label, k), label=label)
        bottom += v
    ax.set_ylim(0, max(1.0, float(bottom.max()) * 1.25))  # room for the legend
    ax.set_xticks(x)
    ax.set_xticklabels(groups, rotation=60 if len(groups) > 4 else 0, ha="right" if len(groups) > 4 else "center",
                       fontsize="small")
    ax.set_ylabel(f"{key.replace('_', ' ')} [%]")
    ax.set_title("Volume fraction per label" if summary.level == "stack" else "Area fraction per label")
    ax.legend(fontsize="small")


def draw(name: str, fig, table: Table, colors: Colors = None) -> None:
    """Draw plot `name` from a measurement table (either of a pass's two tables will do)."""
    sizes = table if table.level in ("instance", "object") else table.companion
    summary = table.companion if table.level in ("instance", "object") else table
    if name == "fractions":
        fractions(fig, summary, colors)
    else:
        {"size_distribution": size_distribution, "gradation": gradation}[name](fig, sizes, colors)
    fig.tight_layout()


def save_plots(table: Table, folder, colors: Colors = None, dpi: int = 120) -> list[Path]:
    """The three plots as PNGs in `folder` (each written atomically)."""
    import io
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from .fsutil import atomic_write_bytes
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for name in PLOTS:
        fig = Figure(figsize=(6.4, 4.4))
        FigureCanvasAgg(fig)
        draw(name, fig, table, colors)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=dpi)
        path = folder / f"{name}.png"
        atomic_write_bytes(path, buf.getvalue())
        out.append(path)
    return out
