"""One markdown table from the JSON files gpu_check.sh's benchmarks wrote into a folder.

    python benchmarks/gpu_report.py OUT_DIR

Reads inference.json, train.json, dense_targets.json, dense_step.json, prompts.json (each
optional) and pytest.txt, and prints a heading that names the device and a table of
MaskLoop against plain torchvision measured in the same run, ready for docs/benchmarks.md.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


def _load(folder: Path, name: str):
    p = folder / f"{name}.json"
    return json.loads(p.read_text()) if p.is_file() else None


def _mem(mb, gpu: bool) -> str:
    return "-" if mb is None else f"{mb:,.0f} MiB {'GPU' if gpu else 'RSS'}"


def _rows(folder: Path) -> list[tuple]:
    """(benchmark, contender, throughput, peak memory, ratio to torchvision)."""
    out = []
    inf = _load(folder, "inference")
    if inf:
        for dev in dict.fromkeys(r["device"] for r in inf["rows"]):
            rows = [r for r in inf["rows"] if r["device"] == dev]
            base = next((r for r in rows if r["kind"] == "torchvision"), None)
            names = {"torchvision": "torchvision maskrcnn_resnet50_fpn (defaults{}, fp32, 1 image/call)",
                     "maskloop": "MaskLoop Predictor (1 image/call)",
                     "maskloop-batched": f"MaskLoop Predictor.predict_many (batch {inf.get('batch')})"}
            for r in rows:
                gpu = "peak_gpu_mb" in r
                resize = f": resize to {r['run_px']} px" if r["kind"] == "torchvision" else ""
                out.append((f"inference {inf['size']} px ({dev})", names[r["kind"]].format(resize),
                            f"{r['images_per_s']:.2f} images/s",
                            _mem(r.get("peak_gpu_mb", r.get("peak_rss_mb")), gpu),
                            f"{r['images_per_s'] / base['images_per_s']:.2f}x" if base else "-"))
    tr = _load(folder, "train")
    if tr:
        for dev in dict.fromkeys(r["device"] for r in tr["rows"]):
            rows = [r for r in tr["rows"] if r["device"] == dev]
            base = rows[0]
            for r in rows:
                out.append((f"training {r['size']} px, batch {r['batch']} ({dev})", r["label"],
                            f"{r['images_per_s']:.2f} images/s", _mem(r["peak_mb"], dev.startswith("cuda")),
                            f"{r['images_per_s'] / base['images_per_s']:.2f}x"))
    for name, what in (("dense_step", "dense training step"), ("dense_targets", "dense mask targets")):
        d = _load(folder, name)
        if not d:
            continue
        for dev in dict.fromkeys(r["device"] for r in d["rows"]):
            rows = [r for r in d["rows"] if r["device"] == dev]
            base = next(r for r in rows if r["contender"] == "torchvision")
            label = f"{what}, {d['objects']} objects in {d['size']} px" + \
                (f", {d['arch']}" if name == "dense_step" else "") + f" ({dev})"
            for r in rows:
                thr = f"{1000 / r['ms']:.2f} images/s" if name == "dense_step" else f"{r['ms']:.1f} ms/call"
                out.append((label, r["contender"], thr, _mem(r["peak_mb"], dev.startswith("cuda")) + " added",
                            f"{base['ms'] / r['ms']:.2f}x"))
    pr = _load(folder, "prompts")
    if pr:
        for r in pr.get("rows", []):
            out.append((f"prompt latency ({r.get('device', '?')})", r.get("contender", r.get("name", "?")),
                        r.get("throughput") or f"{r.get('ms', float('nan')):.1f} ms/prompt",
                        _mem(r.get("peak_mb"), str(r.get("device", "")).startswith("cuda")),
                        r.get("ratio", "-")))
    return out


def report(folder: Path) -> str:
    meta = json.loads((folder / "meta.json").read_text()) if (folder / "meta.json").is_file() else {}
    lines = [f"### GPU check: {meta.get('device', 'unknown device')} ({meta.get('date', '')})", ""]
    lines.append(f"torch {meta.get('torch', '?')}, CUDA {meta.get('cuda', '-')}, "
                 f"{meta.get('cpus', '?')} CPU cores; `bash benchmarks/gpu_check.sh{meta.get('flags', '')}`; "
                 "MaskLoop against plain torchvision in the same run, each contender in its own process.")
    pyt = folder / "pytest.txt"
    if pyt.is_file():
        tail = [ln for ln in pyt.read_text().splitlines() if ln.strip()]
        lines.append(f"`pytest -m gpu`: {tail[-1].strip('= ') if tail else 'no output'}")
    notes = folder / "notes.txt"
    if notes.is_file():
        lines += [f"- {ln}" for ln in notes.read_text().splitlines() if ln.strip()]
    lines += ["", "| benchmark | contender | throughput | peak memory | vs torchvision |", "|---|---|---|---|---|"]
    lines += ["| " + " | ".join(r) + " |" for r in _rows(folder)]
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or not Path(argv[0]).is_dir():
        print("usage: gpu_report.py OUT_DIR", file=sys.stderr)
        return 2
    print(report(Path(argv[0])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
