"""How a benchmark runs one contender and reads its JSON result line.

For figures each contender runs in a fresh process: its own peak memory, no caches or
allocator state left by the other. gpu_check.sh's --dry-run (MASKLOOP_BENCH_IN_PROCESS=1)
walks every step at toy size to prove the script works, not to measure; there a torch
start-up per contender was most of the CPU (issue 14: the suite under load), so the same
command line runs in this process instead: the child's argument parsing, its code and its
JSON line are the same, only the process boundary is skipped.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
from typing import Callable, Optional, Sequence

IN_PROCESS_ENV = "MASKLOOP_BENCH_IN_PROCESS"


def in_process() -> bool:
    return os.environ.get(IN_PROCESS_ENV) == "1"


def run_contender(cmd: Sequence[str], main: Callable[[list], object], *, cwd: Optional[str] = None,
                  what: str = "contender") -> dict:
    """The last stdout line of `cmd` (python SCRIPT ARGS...) as JSON; with
    MASKLOOP_BENCH_IN_PROCESS=1, `main(ARGS)` of the script called here instead."""
    if in_process():
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            main(list(cmd[2:]))
        text = out.getvalue()
    else:
        r = subprocess.run(list(cmd), capture_output=True, text=True, cwd=cwd)
        if r.returncode != 0:
            raise RuntimeError(f"{what} failed:\n{r.stderr[-3000:]}")
        text = r.stdout
    return json.loads(text.strip().splitlines()[-1])
