"""Stacks as ranges in maskloop.json (issue 15: projects of 100,000 slices).

A stack's slices are items that differ only in their slice number, so the manifest stores
a run of them as one entry instead of one entry a slice:

    {"source": 3, "first": 0, "count": 2000, "id": "core_003_z{slice:04d}",
     "name": "core_003 [{slice}]", "height": 512, "width": 512}

stands for the items with slice = first .. first+count-1, id and name the templates with
that slice number put in (each template holds its placeholder exactly once), in that
order. A 100,000-slice project's manifest goes from 10.7 MB to a few kB, so open, `info`
and every manifest rewrite stop paying for a JSON entry a slice.

`pack` is exact: it makes a run only of items the run gives back unchanged, and leaves
every other item (a single image, an id made unique with a hash, a name or id with a
brace in it) as its own entry. The manifest's "version" is RANGE_VERSION when it holds a
run (an older MaskLoop then says the project was written by a newer one, instead of
misreading it) and 1 otherwise (a project of plain images stays readable by older
versions). In memory (Project.to_json, merging) items are always one entry each.
"""
from __future__ import annotations

from typing import Iterator

RANGE_VERSION = 2
ID_SLOT = "{slice:04d}"
NAME_SLOT = "{slice}"
RUN_KEYS = frozenset(("source", "first", "count", "id", "name", "height", "width"))
ITEM_KEYS = ("id", "source", "slice", "name", "height", "width")
MIN_RUN = 2  # a run of one item saves nothing


def is_run(entry) -> bool:
    """An items[] entry that is a run (it has "count"; a single item never does)."""
    return isinstance(entry, dict) and "count" in entry


def run_ids(run: dict) -> list[str]:
    """The item ids of a checked run, in order."""
    head, _, tail = run["id"].partition(ID_SLOT)
    return [f"{head}{z:04d}{tail}" for z in range(run["first"], run["first"] + run["count"])]


def run_items(run: dict) -> list[tuple]:
    """(id, source, slice, name, height, width) of each item of a checked run."""
    name_head, _, name_tail = run["name"].partition(NAME_SLOT)
    s, h, w = run["source"], run["height"], run["width"]
    return [(item_id, s, z, f"{name_head}{z}{name_tail}", h, w)
            for item_id, z in zip(run_ids(run), range(run["first"], run["first"] + run["count"]))]


def iter_items(entries: list) -> Iterator[tuple]:
    """(id, source, slice, name, height, width) of every item of a checked items[] list."""
    for e in entries:
        if is_run(e):
            yield from run_items(e)
        else:
            yield e["id"], e["source"], e["slice"], e["name"], e["height"], e["width"]


def pack(items: list[dict]) -> tuple[list, bool]:
    """(items[] for the file, whether it holds a run) from one dict per item (to_json form)."""
    out, packed, i, n = [], False, 0, len(items)
    while i < n:
        run, length = _run_from(items, i)
        if length >= MIN_RUN:
            out.append(run)
            packed = True
            i += length
        else:
            out.append(items[i])
            i += 1
    return out, packed


def _templates(it: dict):
    """The id and name templates that give back this item from its slice number, or None."""
    z, item_id, name = it["slice"], it["id"], it["name"]
    if type(z) is not int or z < 0 or not isinstance(item_id, str) or not isinstance(name, str):
        return None
    k = item_id.rfind(f"{z:04d}")
    j = name.rfind(str(z))
    if k < 0 or j < 0 or "{" in item_id or "}" in item_id or "{" in name or "}" in name:
        return None
    return (item_id[:k] + ID_SLOT + item_id[k + len(f"{z:04d}"):],
            name[:j] + NAME_SLOT + name[j + len(str(z)):])


def _run_from(items: list[dict], i: int) -> tuple[dict, int]:
    """The longest run starting at items[i] and its length (0 when items[i] starts none)."""
    first = items[i]
    if set(first) != set(ITEM_KEYS):
        return {}, 0
    t = _templates(first)
    if t is None:
        return {}, 0
    id_t, name_t = t
    run = {"source": first["source"], "first": first["slice"], "count": 0, "id": id_t, "name": name_t,
           "height": first["height"], "width": first["width"]}
    id_head, _, id_tail = id_t.partition(ID_SLOT)
    name_head, _, name_tail = name_t.partition(NAME_SLOT)
    s, h, w, z0 = first["source"], first["height"], first["width"], first["slice"]
    j = i
    while j < len(items):
        it, z = items[j], z0 + (j - i)
        if (it.get("slice") != z or it.get("source") != s or it.get("height") != h or it.get("width") != w
                or it.get("id") != f"{id_head}{z:04d}{id_tail}" or it.get("name") != f"{name_head}{z}{name_tail}"
                or len(it) != len(ITEM_KEYS)):
            break
        j += 1
    run["count"] = j - i
    return run, j - i
