"""Train/validation splits that keep the slices of a stack together (numpy only).

Adjacent slices of a CT stack or DICOM series are nearly the same image: with one slice
in training and its neighbour in validation, validation measures memory, not skill. So
the split is over groups (a stack's slices form one group, a plain image is a group of
its own), never over the slices of one stack.

Rule: the groups, sorted by key and permuted with the seed (so the same keys, fraction
and seed give the same split whatever their order), are taken into validation in that
order while they fit in the target (val_fraction of the items); when none fits, the
smallest group is taken. At least one group stays in training, so a project with a
single stack and nothing else has no validation items (said in the Trainer's start
event as val_items 0).
"""
from __future__ import annotations

from typing import Hashable, Sequence

import numpy as np


def split_by_group(keys: Sequence[str], groups: Sequence[Hashable], val_fraction: float,
                   seed: int = 0) -> set:
    """The keys that go to validation."""
    if len(keys) != len(groups):
        raise ValueError("one group per key")
    if not 0.0 < val_fraction < 1.0:
        return set()
    members: dict = {}
    for k, g in zip(keys, groups):
        members.setdefault(str(g), []).append(k)
    names = sorted(members)
    if len(names) < 2:
        return set()
    order = [names[i] for i in np.random.default_rng(seed).permutation(len(names))]
    target = max(1.0, val_fraction * len(keys))
    val: list = []
    count = 0
    for g in order:
        if len(val) == len(names) - 1:
            break
        if count + len(members[g]) <= target:
            val.append(g)
            count += len(members[g])
    if not val:
        val = [min(order, key=lambda g: (len(members[g]), order.index(g)))]
    return {k for g in val for k in members[g]}
