"""fn(0), fn(1), ... fn(n-1) in order, computed by a few threads in runs of indices.

Meant for work that spends its time outside the GIL (cv2 decoding a mask PNG): the runs
overlap while the caller consumes the results in order. Each result is yielded when the
caller reaches it, and an error is raised where the caller reaches the index that raised
it, exactly as a plain loop would; indices after a failed one in the same run are not
computed.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterator

RUN = 256


def _run(fn: Callable, k0: int, k1: int):
    out = []
    try:
        for k in range(k0, k1):
            out.append(fn(k))
    except Exception as e:  # noqa: BLE001 - re-raised in order by in_order
        return out, e
    return out, None


def in_order(fn: Callable[[int], object], n: int, threaded: bool, workers: int = 4) -> Iterator:
    """fn over range(n), results in index order; threaded=False is the plain loop."""
    if not threaded:
        for k in range(n):
            yield fn(k)
        return
    with ThreadPoolExecutor(max_workers=max(1, min(workers, os.cpu_count() or 1))) as pool:
        futures = [pool.submit(_run, fn, k, min(n, k + RUN)) for k in range(0, n, RUN)]
        try:
            for fut in futures:
                got, err = fut.result()
                yield from got
                if err is not None:
                    raise err
        finally:
            for fut in futures:
                fut.cancel()
