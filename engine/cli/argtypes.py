"""argparse value types shared by the subcommands (numbers checked against a range), and usage errors."""
from __future__ import annotations

import argparse
import math
import sys
from typing import Callable, Optional


def number(cast: Callable[[str], float], low: Optional[float] = None, high: Optional[float] = None,
           *, low_open: bool = False, high_open: bool = False, meaning: str = ""):
    """An argparse `type` that parses with `cast` and rejects values outside the range.

    `low_open` / `high_open` exclude the bound itself; NaN and infinity are never accepted.
    """
    kind = "an integer" if cast is int else "a number"
    lo_text = "" if low is None else ("(" if low_open else "[") + f"{low:g}"
    hi_text = "" if high is None else f"{high:g}" + (")" if high_open else "]")
    rule = (f"in {lo_text}, {hi_text}" if low is not None and high is not None
            else f">{'' if low_open else '='} {low:g}" if low is not None else f"<= {high:g}")

    def parse(text: str):
        try:
            v = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not {kind}: {text!r}") from None
        ok = not (isinstance(v, float) and not math.isfinite(v))
        if ok and low is not None:
            ok = v > low if low_open else v >= low
        if ok and high is not None:
            ok = v < high if high_open else v <= high
        if not ok:
            raise argparse.ArgumentTypeError(f"must be {rule}{meaning}, got {text}")
        return v

    return parse


def usage_error(command: str, message: str) -> int:
    """Report a usage error the way argparse does (exit status 2)."""
    print(f"maskloop {command}: error: {message}", file=sys.stderr)
    return 2
