"""Each annotation file's status and label counts, kept as files are saved, so `info` and
Project.statuses() cost one listing of annotations/ instead of a stat and a read per item
(issue 15: 100,000 items).

<root>/annotations/.index.jsonl holds one JSON line per file version:

    {"id": ITEM, "stamp": [mtime_ns, size, inode], "status": S, "labels": {LABEL: N, ...}}

Project.save_annotation appends a line after each write; the last line of an id wins.
"labels" is absent when only the status was read (statuses() does not decode masks).

The index is a cache, never the truth: an entry counts only while its stamp equals the
stamp of the file in the one listing of annotations/. A file written by another program or
by a MaskLoop without this index (no entry, or another stamp) is read again; a reader appends
fresh lines only to build the index (REBUILD_AT), and rewrites it when it holds mostly old
versions. So a lost index, a torn last line, two processes appending at once or a compaction
that drops someone's line only cost a re-read, never a wrong count. The index lies in
annotations/ (it travels with the files it describes) under a name no item id can take
(ids never start with '.').
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Optional

from .errors import FormatError, MaskLoopError
from .fsutil import atomic_write_bytes, check_inside
from .manifest_schema import STATUSES

INDEX_NAME = ".index.jsonl"
# A reader (info, statuses) writes the index only to build it (none yet: a project of an
# older MaskLoop) or when it re-read this many files; a few files edited by another program
# are simply re-read, so open + info leave a project written by MaskLoop untouched.
REBUILD_AT = 32
_SUFFIX = ".json"


@dataclass
class FileCounts:
    """One annotation file as the index knows it."""
    status: str
    labels: Optional[dict]   # label name -> instances; None when only the status was read

    @property
    def instances(self) -> int:
        return sum(self.labels.values()) if self.labels else 0


def peek_status(data) -> str:
    """An annotation file's status from its top-level "maskloop" block ("new" when the
    file has none or an unknown one): the rule statuses() has always used."""
    ml = data.get("maskloop") if isinstance(data, dict) else None
    if isinstance(ml, dict) and ml.get("status") in STATUSES:
        return ml["status"]
    return "new"


def read_stamped(path: Path):
    """(raw bytes, stamp) of one version of a file, or (None, None) when it is missing.
    The stamp comes from the open file, so it belongs to the bytes read."""
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            raw = f.read()
    except FileNotFoundError:
        return None, None
    return raw, (st.st_mtime_ns, st.st_size, st.st_ino)


# decode(item_id, parsed JSON, path) -> label names of the file's instances (raises on a bad file)
Decoder = Callable[[str, object, Path], Iterable[str]]


class AnnotationIndex:
    def __init__(self, folder: Path, root: Path) -> None:
        self.folder = Path(folder)
        self.root = Path(root)
        self.path = self.folder / INDEX_NAME

    # --- writing ---------------------------------------------------------------------
    def record(self, item_id: str, stamp, status: str, labels: Optional[Iterable[str]]) -> None:
        """Append what a just-written file holds. Best effort: when the line cannot be
        written the file is simply read again by the next scan."""
        counts = None
        if labels is not None:
            counts = {}
            for name in labels:
                counts[name] = counts.get(name, 0) + 1
        self._append([_line(item_id, stamp, FileCounts(status, counts))])

    def _append(self, lines: list) -> None:
        if not lines:
            return
        try:
            check_inside(self.path, self.root, "annotation index")
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
            try:
                os.write(fd, b"".join(lines))  # one write: appends of two processes do not mix
            finally:
                os.close(fd)
        except (OSError, MaskLoopError):
            pass

    # --- reading ---------------------------------------------------------------------
    def listing(self) -> dict:
        """{file stem: stamp} of the annotation files (one scandir; a stat per file, not per item)."""
        out = {}
        try:
            entries = os.scandir(self.folder)
        except (FileNotFoundError, NotADirectoryError):
            return out
        with entries:
            for e in entries:
                name = e.name
                if name.startswith(".") or not name.endswith(_SUFFIX):
                    continue  # the index itself, temporary files of atomic writes
                try:
                    st = e.stat(follow_symlinks=True)
                except OSError:
                    continue
                out[name[:-len(_SUFFIX)]] = (st.st_mtime_ns, st.st_size, st.st_ino)
        return out

    def _load(self) -> tuple[dict, int]:
        """({item id: (stamp, FileCounts)}, number of lines); a torn or foreign line is skipped."""
        try:
            raw = self.path.read_bytes()
        except OSError:
            return {}, 0
        lines = [ln for ln in raw.split(b"\n") if ln.strip()]
        try:
            rows = json.loads(b"[" + b",".join(lines) + b"]")
        except ValueError:
            rows = []
            for ln in lines:
                try:
                    rows.append(json.loads(ln))
                except ValueError:
                    continue
        out = {}
        for r in rows:
            if _valid(r):
                out[r["id"]] = (tuple(r["stamp"]), FileCounts(r["status"], r.get("labels")))
        return out, len(lines)

    def scan(self, ids, decode: Optional[Decoder] = None) -> dict:
        """{item id: FileCounts} for the ids in `ids` that have an annotation file.

        With `decode`, every entry has its label counts (files without them are decoded;
        decode's errors propagate, as a full read would raise them); without, only the
        status is guaranteed. Stale or missing entries are refreshed and appended."""
        files = self.listing()
        known, n_lines = self._load()
        out, fresh = {}, []
        for item_id, stamp in files.items():
            if item_id not in ids:
                continue
            hit = known.get(item_id)
            if hit is not None and hit[0] == stamp and (decode is None or hit[1].labels is not None):
                out[item_id] = hit[1]
                continue
            got = self._read(item_id, decode)
            if got is None:
                continue  # removed since the listing
            stamp, counts = got
            out[item_id] = counts
            known[item_id] = (stamp, counts)
            fresh.append(_line(item_id, stamp, counts))
        live = [(i, known[i]) for i in files if i in known and known[i][0] == files[i]]
        if n_lines + len(fresh) > 2 * len(live) + 256:
            self._compact(live)      # mostly old versions: rewrite with the live lines only
        elif fresh and (n_lines == 0 or len(fresh) >= REBUILD_AT):
            self._append(fresh)
        return out

    def _read(self, item_id: str, decode: Optional[Decoder]):
        from .formats import parse_json
        path = self.folder / f"{item_id}{_SUFFIX}"
        raw, stamp = read_stamped(path)
        if raw is None:
            return None
        try:
            data, error = parse_json(raw, path), None
        except FormatError as e:
            data, error = None, e  # statuses() has always taken an unreadable file for "new"
        status = peek_status(data)
        if decode is None:
            return stamp, FileCounts(status, None)
        if error is not None:
            raise error  # counting needs the file, as a full read would
        counts: dict = {}
        for name in decode(item_id, data, path):
            counts[name] = counts.get(name, 0) + 1
        return stamp, FileCounts(status, counts)

    def _compact(self, live: list) -> None:
        """Rewrite the index with only the entries of files as they are now."""
        try:
            atomic_write_bytes(self.path, b"".join(_line(i, s, c) for i, (s, c) in live), inside=self.root)
        except (OSError, MaskLoopError):
            pass


def _valid(row) -> bool:
    """A line this version wrote (anything else, e.g. a hand edit, is skipped: re-read)."""
    if not isinstance(row, dict) or not isinstance(row.get("id"), str) or row.get("status") not in STATUSES:
        return False
    stamp, labels = row.get("stamp"), row.get("labels")
    if not (isinstance(stamp, list) and len(stamp) == 3 and all(type(v) is int for v in stamp)):
        return False
    return labels is None or (isinstance(labels, dict) and all(
        isinstance(k, str) and type(v) is int and v > 0 for k, v in labels.items()))


def _line(item_id: str, stamp, counts: FileCounts) -> bytes:
    row = {"id": item_id, "stamp": list(stamp), "status": counts.status}
    if counts.labels is not None:
        row["labels"] = counts.labels
    return (json.dumps(row, separators=(",", ":")) + "\n").encode()
