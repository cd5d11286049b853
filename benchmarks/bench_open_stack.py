"""Opening the first slice of a 500-slice 1024x1024 16-bit TIFF stack: MaskLoop vs baselines.

Writes the stack (about 1 GB, page by page so this script never holds it in memory), then
runs each way of opening it in a fresh Python process, so that peak RSS belongs to that
method alone:

  maskloop probe + read_slice(0)     engine.imageio: headers, then one page
  maskloop probe + read_slice(last)  the same for the last page (lazy all the way down)
  tifffile.imread (whole stack)      what a naive tool does
  PIL open + first frame             Image.open + np.asarray (older labelme's way)
  labelme LabelFile.load_image_file  labelme's own open path (installed version)

Reported per method: wall time (median of --repeat runs), peak Python allocations
(tracemalloc; misses memory that C libraries allocate themselves) and the growth of peak
RSS (getrusage maxrss) over the process's peak after imports. The file is in the page
cache when measured (just written), for every method alike.

    python benchmarks/bench_open_stack.py [--dir DIR] [--slices 500] [--size 1024] [--repeat 3]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

METHODS = {
    "maskloop": "maskloop probe + read_slice(0)",
    "maskloop_last": "maskloop probe + read_slice(last)",
    "tifffile": "tifffile.imread (whole stack)",
    "pil": "PIL open + first frame",
    "labelme": "labelme LabelFile.load_image_file",
}


def write_stack(path: Path, n: int, size: int) -> None:
    import numpy as np
    import tifffile
    ramp = (np.arange(size, dtype=np.uint16) * 37)[None, :].repeat(size, axis=0)
    with tifffile.TiffWriter(path) as tw:
        for k in range(n):
            tw.write(ramp + np.uint16(k), photometric="minisblack", contiguous=True)


def _maxrss_bytes() -> int:
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r if sys.platform == "darwin" else r * 1024  # Linux reports KiB


def worker(method: str, path: str) -> None:
    """Run one method in this (fresh) process and print one JSON line."""
    sys.path.insert(0, str(REPO))
    import tracemalloc

    import numpy as np
    # import everything first: import cost is not what we measure
    import tifffile  # noqa: F401
    from PIL import Image  # noqa: F401
    if method.startswith("maskloop"):
        from engine import imageio
    if method == "labelme":
        import labelme
    rss0 = _maxrss_bytes()
    tracemalloc.start()
    t0 = time.perf_counter()
    if method in ("maskloop", "maskloop_last"):
        src = imageio.probe(path)[0]
        arr = imageio.read_slice(src, 0 if method == "maskloop" else src.n_slices - 1)
        shape = arr.shape
    elif method == "tifffile":
        arr = tifffile.imread(path)
        shape = arr.shape
    elif method == "pil":
        with Image.open(path) as im:
            arr = np.asarray(im)
        shape = arr.shape
    elif method == "labelme":
        data = labelme.LabelFile.load_image_file(path)
        arr = labelme.utils.img_data_to_arr(data)
        shape = arr.shape
    else:
        raise SystemExit(f"unknown method {method}")
    elapsed = time.perf_counter() - t0
    _, py_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss_delta = max(0, _maxrss_bytes() - rss0)
    print(json.dumps({"method": method, "time_s": elapsed, "py_peak": py_peak,
                      "rss_delta": rss_delta, "shape": list(shape), "dtype": str(arr.dtype)}))


def run_method(method: str, path: Path) -> dict:
    out = subprocess.run([sys.executable, __file__, "--worker", method, str(path)],
                         capture_output=True, text=True, cwd=REPO)
    if out.returncode != 0:
        return {"method": method, "error": (out.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kb / 2**20:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    return (f"{cpu}, {os.cpu_count()} CPUs{mem}, {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", help="folder for the stack (default: a temporary folder, removed after)")
    ap.add_argument("--slices", type=int, default=500)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset")
    ap.add_argument("--worker", nargs=2, metavar=("METHOD", "PATH"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker(*args.worker)
        return 0

    tmp = None
    if args.dir:
        folder = Path(args.dir)
        folder.mkdir(parents=True, exist_ok=True)
    else:
        folder = Path(tmp := tempfile.mkdtemp(prefix="maskloop-bench-"))
    path = folder / f"stack_{args.slices}x{args.size}x{args.size}_u16.tif"
    try:
        expect = args.slices * args.size * args.size * 2
        if not path.exists() or path.stat().st_size < expect:
            t = time.perf_counter()
            write_stack(path, args.slices, args.size)
            print(f"wrote {path} ({path.stat().st_size / 2**20:.0f} MiB) in {time.perf_counter() - t:.1f} s")
        print(f"machine: {machine()}")
        print(f"stack: {args.slices} slices of {args.size}x{args.size} uint16, "
              f"{path.stat().st_size / 2**20:.0f} MiB, in the page cache\n")
        header = f"{'method':38} {'time (s)':>9} {'py peak MiB':>12} {'RSS +MiB':>9}  result"
        print(header)
        print("-" * len(header))
        for m in args.methods.split(","):
            runs = [run_method(m, path) for _ in range(max(1, args.repeat))]
            bad = [r for r in runs if "error" in r]
            if bad:
                print(f"{METHODS.get(m, m):38} failed: {bad[0]['error']}")
                continue
            t = statistics.median(r["time_s"] for r in runs)
            py = max(r["py_peak"] for r in runs) / 2**20
            rss = max(r["rss_delta"] for r in runs) / 2**20
            shape = "x".join(str(s) for s in runs[0]["shape"])
            print(f"{METHODS.get(m, m):38} {t:9.3f} {py:12.1f} {rss:9.1f}  {shape} {runs[0]['dtype']}")
        print(f"\ntime: median of {args.repeat} runs, each in a fresh process; memory: the largest.")
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
