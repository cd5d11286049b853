"""Three-way merge of maskloop.json: what one Project object changed since it last read
the file, applied onto what is on disk now (which another program may have changed).

`merge(base, ours, disk)`: `base` is the manifest as this object last read or wrote it,
`ours` its current in-memory state, `disk` the file now. A field this object did not
change keeps the disk's value; a field it changed takes its value. Items and sources are
only ever added, so both sides' additions are kept. Plain JSON dicts in, a dict out.
"""
from __future__ import annotations

from .errors import ConflictError


def merge(base: dict, ours: dict, disk: dict, path=None) -> dict:
    if ours == base:
        return disk
    if disk == base:
        return ours
    out = dict(disk)
    out["labels"] = _merge_labels(base.get("labels", []), ours.get("labels", []), disk.get("labels", []), path)
    out["sources"], out["items"] = _merge_items(base, ours, disk)
    if ours.get("active_model") != base.get("active_model"):
        out["active_model"] = ours.get("active_model")
    out["settings"] = _merge_dict(base.get("settings") or {}, ours.get("settings") or {},
                                  disk.get("settings") or {})
    return out


def _merge_labels(base: list, ours: list, disk: list, path) -> list:
    b = {l["id"]: l for l in base}
    o = {l["id"]: l for l in ours}
    result = [dict(l) for l in disk]
    by_id = {l["id"]: l for l in result}
    for lid in b.keys() - o.keys():          # removed here
        if lid in by_id:
            result.remove(by_id.pop(lid))
    for lab in ours:
        lid = lab["id"]
        if lid in b:
            if lab == b[lid]:
                continue                      # unchanged here: the disk's version stands
            if lid in by_id:                  # changed here (rename, colour, visibility)
                clash = next((l for l in result if l["name"] == lab["name"] and l["id"] != lid), None)
                if clash is not None:
                    raise ConflictError(f"label {lab['name']!r} was added by another program while it "
                                        f"was renamed here", path, "labels")
                by_id[lid].update(lab)
            continue
        # added here
        if any(l["name"] == lab["name"] for l in result):
            continue                          # the other side added the same name
        new = dict(lab)
        if lid in by_id or any(l["id"] == lid for l in base):
            new["id"] = max([l["id"] for l in result + base + ours] + [0]) + 1
        result.append(new)
        by_id[new["id"]] = new
    return result


def _merge_items(base: dict, ours: dict, disk: dict) -> tuple[list, list]:
    """Disk's sources and items plus the items added here (and their sources). A source is
    matched by its stored path; one left without items here is not carried over."""
    sources = list(disk.get("sources", []))
    items = list(disk.get("items", []))
    base_ids = {it["id"] for it in base.get("items", [])}
    index_of = {s["path"]: k for k, s in enumerate(sources)}
    our_sources = ours.get("sources", [])
    taken = {it["id"] for it in items}
    for it in ours.get("items", []):
        if it["id"] in base_ids or it["id"] in taken:
            continue
        src = our_sources[it["source"]]
        if src["path"] not in index_of:
            sources.append(src)
            index_of[src["path"]] = len(sources) - 1
        items.append(dict(it, source=index_of[src["path"]]))
        taken.add(it["id"])
    return sources, items


def _merge_dict(base: dict, ours: dict, disk: dict) -> dict:
    out = dict(disk)
    for key in set(base) | set(ours):
        if ours.get(key, _MISSING) == base.get(key, _MISSING):
            continue
        if key in ours:
            out[key] = ours[key]
        else:
            out.pop(key, None)
    return out


_MISSING = object()
