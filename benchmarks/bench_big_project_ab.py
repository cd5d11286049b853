"""Same-run A/B of bench_big_project's operations: an older checkout of MaskLoop ("before")
against this one ("after") on one project, interleaved in fresh processes, minimum of ROUNDS
(robust to a niced process being starved on a loaded machine).

    git worktree add /tmp/before <commit>   # or: git archive <commit> | tar -x -C /tmp/before
    python benchmarks/bench_big_project_ab.py /tmp/before /tmp/ab-project [ROUNDS]

The project (50 stacks x 2,000 slices, 1,000 annotated) is built by bench_big_project.build
into the given folder when it is not there yet, and kept for the next run.
"""
import json, os, subprocess, sys, time
from pathlib import Path
NEW = str(Path(__file__).resolve().parents[1]); OLD = sys.argv[1]
root = Path(sys.argv[2])
ROUNDS = int(sys.argv[3]) if len(sys.argv) > 3 else 3
if not root.exists():
    sys.path.insert(0, NEW + "/benchmarks"); sys.path.insert(0, NEW)
    from bench_big_project import build
    root.parent.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter(); build(root, 50, 2000, 1000); print("built", time.perf_counter() - t, flush=True)
CODE = r'''
import sys, time, json, io, argparse, contextlib
sys.path.insert(0, sys.argv[1]); root = sys.argv[2]
from pathlib import Path
from engine.project import Project, MANIFEST
from engine.cli.data_cmds import cmd_info
out = {}
t = time.perf_counter(); json.loads((Path(root) / MANIFEST).read_bytes()); out["json.load"] = time.perf_counter() - t
t = time.perf_counter(); proj = Project.open(root); out["open"] = time.perf_counter() - t
t = time.perf_counter()
with contextlib.redirect_stdout(io.StringIO()) as buf:
    cmd_info(argparse.Namespace(project=root))
out["info"] = time.perf_counter() - t
out["text"] = buf.getvalue()
t = time.perf_counter(); proj.statuses(); out["statuses"] = time.perf_counter() - t
ids = [it.id for it in proj.items]
ts = []
for k in range(5):
    i = ids[50000 + 7 * k]
    t = time.perf_counter(); proj.load_image(i); proj.load_annotation(i); proj.status(i); ts.append(time.perf_counter() - t)
out["next item"] = min(ts)
aid = next(i for i in ids if (proj.annotations_dir / (i + ".json")).exists())
ann = proj.load_annotation(aid); ts = []
for k in range(3):
    ann.status = "reviewed"; t = time.perf_counter(); proj.save_annotation(ann); ts.append(time.perf_counter() - t)
out["save one item"] = min(ts)
t = time.perf_counter(); proj.save(); out["manifest rewrite"] = time.perf_counter() - t
print(json.dumps(out))
'''
best = {}
texts = {}
for r in range(ROUNDS):
    for name, repo in (("before", OLD), ("after", NEW)):
        p = subprocess.run([sys.executable, "-c", CODE, repo, str(root)], capture_output=True, text=True)
        if p.returncode:
            print(p.stderr[-2000:]); sys.exit(1)
        d = json.loads(p.stdout.strip().splitlines()[-1])
        texts.setdefault(name, d.pop("text"))
        for k, v in d.items():
            best.setdefault(name, {}).setdefault(k, []).append(v)
        print(r, name, {k: round(v, 3) for k, v in d.items()}, os.getloadavg()[0], flush=True)
print("same info output:", texts["before"].replace("before", "") == texts["after"])
print(texts["after"][:400])
print("| operation | before (min) | after (min) |")
for k in best["before"]:
    print(f"| {k} | {min(best['before'][k]):.3f} | {min(best['after'][k]):.3f} |")
