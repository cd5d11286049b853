"""benchmarks/gpu_check.sh --dry-run: every step of the prepared GPU run, at toy size on the
CPU, ends in the one markdown table (so the script works the day a GPU is at hand)."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_dry_run_prints_the_table(tmp_path):
    out = tmp_path / "out"
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    r = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--dry-run", "--out", str(out)],
                       capture_output=True, text=True, cwd=REPO, env=env, timeout=900)
    assert r.returncode == 0, r.stderr[-4000:]
    lines = r.stdout.splitlines()
    assert lines[lines.index("| benchmark | contender | throughput | peak memory | vs torchvision |") + 1] == \
        "|---|---|---|---|---|"
    rows = [ln for ln in lines if ln.startswith("| ") and "contender" not in ln]
    benches = {ln.split(" | ")[0][2:].split(" (")[0].split(",")[0] for ln in rows}
    assert {"inference 96 px", "training 64 px", "dense training step", "dense mask targets"} <= benches, rows
    for ln in rows:  # every row is a measured figure against a baseline of the same run
        cells = [c.strip() for c in ln.strip("|").split("|")]
        assert len(cells) == 5 and cells[4].endswith("x") and float(cells[4][:-1]) > 0, ln
        assert float(cells[2].split()[0]) > 0, ln
    assert sum("torchvision" in ln and ln.endswith("| 1.00x |") for ln in rows) == 4
    assert "7 skipped" in r.stdout or "skipped" in r.stdout  # the gpu tests were collected
    meta = json.loads((out / "meta.json").read_text())
    assert meta["device"].startswith("CPU dry run")
    assert r.stdout.count("### GPU check: CPU dry run") == 1


def test_gpu_check_refuses_without_cuda_or_with_a_bad_option(tmp_path):
    import torch
    r = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--nope"], capture_output=True,
                       text=True, cwd=REPO, timeout=60)
    assert r.returncode == 2 and "unknown option --nope" in r.stderr
    if torch.cuda.is_available():
        pytest.skip("CUDA is here: the real run is not refused")
    r = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--out", str(tmp_path)],
                       capture_output=True, text=True, cwd=REPO, timeout=120)
    assert r.returncode == 2 and "CUDA is not available" in r.stderr
