"""The long fuzzing campaign of docs/reliability.md: thousands of mutated COCO, labelme,
label-map, manifest and annotation files per format (tests/engine/fuzz_cases.py; the test
suite runs a few hundred per format from another seed).

    python benchmarks/fuzz_formats.py [--cases 2000] [--seed 1] [--formats coco,labelme,...]

Prints the outcome counts per format and the first problems (a crash, or a project
changed by a failed read); exit status 1 when there was any problem.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "engine"))

from fuzz_cases import build_campaigns  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", type=int, default=200, help="cases per format (docs: 2000)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--formats", default="coco,labelme,labelmap,manifest,annotation")
    ap.add_argument("--fixtures", default=str(REPO.parent / "shared" / "fixtures"))
    args = ap.parse_args()
    os.fsync = lambda fd: None  # durability is not what is fuzzed; fsync would be most of the time
    with tempfile.TemporaryDirectory() as tmp:
        campaigns = build_campaigns(Path(args.fixtures), Path(tmp))
        problems = 0
        for fmt in args.formats.split(","):
            c = campaigns[fmt]
            t0 = time.monotonic()
            counts = c.run(args.cases, args.seed)
            took = time.monotonic() - t0
            print(f"{fmt}: {args.cases} cases in {took:.0f} s: "
                  + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())), flush=True)
            for p in c.problems[:3]:
                print("   ", p.replace("\n", "\n    "))
            problems += len(c.problems)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
