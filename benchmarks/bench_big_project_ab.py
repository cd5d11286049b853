"""Same-run A/B of bench_big_project's operations: an older checkout of MaskLoop ("before")
against this one ("after") on one project, interleaved in fresh processes, minimum of ROUNDS
(robust to a niced process being starved on a loaded machine).

    git worktree add /tmp/before <commit>   # or: git archive <commit> | tar -x -C /tmp/before
    python benchmarks/bench_big_project_ab.py /tmp/before /tmp/ab-project [ROUNDS]

The project (50 stacks x 2,000 slices, 1,000 annotated) is built by bench_big_project.build
into the given folder when it is not there yet, and kept for the next run. Each side reads
the manifest in the form it writes: "after" one run of slices a stack (format 2), "before"
one entry a slice (format 1, what an older MaskLoop wrote; it cannot read format 2), so
the figures are what a user of each version sees. Each row is wall and CPU time of the
process (CPU time is what the machine's load does not inflate); `main.py info` is also run
whole (process start and imports included; CPU time from the child's rusage).
"""
import json, os, resource, subprocess, sys, time
from pathlib import Path
NEW = str(Path(__file__).resolve().parents[1]); OLD = sys.argv[1]
root = Path(sys.argv[2])
ROUNDS = int(sys.argv[3]) if len(sys.argv) > 3 else 3
sys.path.insert(0, NEW + "/benchmarks"); sys.path.insert(0, NEW)
from bench_big_project import build, old_form  # noqa: E402
from engine.project import MANIFEST, Project  # noqa: E402
if not root.exists():
    root.parent.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter(); build(root, 50, 2000, 1000); print("built", time.perf_counter() - t, flush=True)
proj = Project.open(root)
proj.settings["ab"] = proj.settings.get("ab", 0) + 1
proj.save()  # written by this version: one run of slices a stack
FORMS = {"after": (root / MANIFEST).read_bytes(), "before": old_form(root)}
CODE = r'''
import sys, time, json, io, argparse, contextlib
sys.path.insert(0, sys.argv[1]); root = sys.argv[2]
from pathlib import Path
from engine.project import Project, MANIFEST
from engine.cli.data_cmds import cmd_info
out = {}
def now():
    return time.perf_counter(), time.process_time()
def since(t):
    return [time.perf_counter() - t[0], time.process_time() - t[1]]
t = now(); json.loads((Path(root) / MANIFEST).read_bytes()); out["json.load of the manifest"] = since(t)
t = now(); proj = Project.open(root); out["open"] = since(t)
t = now()
with contextlib.redirect_stdout(io.StringIO()) as buf:
    cmd_info(argparse.Namespace(project=root))
out["info (cmd_info, in process)"] = since(t)
text = buf.getvalue()
t = now(); proj.statuses(); out["statuses"] = since(t)
ids = [it.id for it in proj.items]
ts = []
for k in range(5):
    i = ids[50000 + 7 * k]
    t = now(); proj.load_image(i); proj.load_annotation(i); proj.status(i); ts.append(since(t))
out["next item"] = min(ts)
aid = next(i for i in ids if (proj.annotations_dir / (i + ".json")).exists())
ann = proj.load_annotation(aid); ts = []
for k in range(3):
    ann.status = "reviewed"; t = now(); proj.save_annotation(ann); ts.append(since(t))
out["save one item"] = min(ts)
proj.settings["ab-rewrite"] = proj.settings.get("ab-rewrite", 0) + 1
t = now(); proj.save(); out["manifest rewrite (a changed setting)"] = since(t)
print(json.dumps({"rows": out, "text": text}))
'''


def whole_info(repo: str) -> list:
    """[wall, CPU] of `python main.py info` run as a user runs it."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    subprocess.run([sys.executable, "main.py", "info", str(root)], cwd=repo, check=True, capture_output=True)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return [wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)]


best, texts = {}, {}
for r in range(ROUNDS):
    for name, repo in (("before", OLD), ("after", NEW)):
        (root / MANIFEST).write_bytes(FORMS[name])
        rows = {"info (python main.py info, whole process)": whole_info(repo)}
        p = subprocess.run([sys.executable, "-c", CODE, repo, str(root)], capture_output=True, text=True)
        if p.returncode:
            print(p.stderr[-2000:]); sys.exit(1)
        d = json.loads(p.stdout.strip().splitlines()[-1])
        texts.setdefault(name, d["text"])
        rows.update(d["rows"])
        for k, v in rows.items():
            best.setdefault(name, {}).setdefault(k, []).append(v)
        print(r, name, {k: [round(x, 3) for x in v] for k, v in rows.items()}, "load", os.getloadavg()[0], flush=True)
(root / MANIFEST).write_bytes(FORMS["after"])
print("same info output:", texts["before"] == texts["after"])
print(texts["after"][:400])
print(f"| operation (min of {ROUNDS}; wall s / CPU s) | before | after |")
print("|---|---|---|")
for k in best["after"]:
    cells = []
    for side in ("before", "after"):
        v = best[side].get(k)
        cells.append("-" if not v else f"{min(x[0] for x in v):.3f} / {min(x[1] for x in v):.3f}")
    print(f"| {k} | {cells[0]} | {cells[1]} |")
