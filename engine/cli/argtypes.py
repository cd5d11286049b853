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


#: smallest --tile: twice the smallest anchor (16 px) of MaskLoop's models; below it a tile
#: holds too little context and the tile count grows with 1/tile^2 (--tile 1 used to
#: crash). With the overlap at most half a tile, a 256 x 256 image has at most 15 x 15
#: tiles of 32 px (--tile 64 --overlap 63 used to make 37k).
MIN_TILE = 32


def tile_size(text: str) -> int:
    """--tile: 0 (never tile) or at least MIN_TILE pixels."""
    v = number(int, 0)(text)
    if 0 < v < MIN_TILE:
        raise argparse.ArgumentTypeError(f"must be 0 (never tile) or at least {MIN_TILE}, got {text}")
    return v


def check_tiling(args, default_tile: int) -> Optional[str]:
    """--overlap at most half the tile (so tiles advance by at least half a tile, as the
    predictor's own default overlap does); the problem as a message, None when fine."""
    overlap = getattr(args, "overlap", None)
    tile = args.tile if getattr(args, "tile", None) is not None else default_tile
    if overlap is not None and tile and overlap > tile // 2:
        return f"--overlap {overlap} must be at most half the tile ({tile} px), i.e. <= {tile // 2}"
    return None


def cross_checks(args) -> int:
    """Checks that involve several options, run right after parsing: a subcommand
    registers them with set_defaults(cross_checks=[fn], subparser=p); fn(args) returns a
    message or None. Reports the first problem as argparse does; returns 0 or 2."""
    for check in getattr(args, "cross_checks", ()) or ():
        message = check(args)
        if message:
            parser = getattr(args, "subparser", None)
            if parser is not None:
                parser.print_usage(sys.stderr)
                print(f"{parser.prog}: error: {message}", file=sys.stderr)
                return 2
            return usage_error(getattr(args, "command", ""), message)
    return 0
