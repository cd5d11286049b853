"""Option values are checked when the command line is parsed (issue 14, defect 8): a
usage message and exit status 2, before any project, model or torch is touched."""
from __future__ import annotations

import pytest

from engine.cli import run
from engine.cli.argtypes import MIN_TILE


def _usage_error(argv, capsys, *must) -> None:
    with pytest.raises(SystemExit) as ei:  # argparse's own type errors exit
        code = run(argv)
        raise SystemExit(code)
    assert ei.value.code == 2
    err = capsys.readouterr().err
    assert "usage: maskloop" in err and "Traceback" not in err, err
    for m in must:
        assert m in err, err


@pytest.mark.parametrize("command", ["segment", "evaluate"])
@pytest.mark.parametrize("opts, must", [
    (["--tile", "1"], f"at least {MIN_TILE}"),
    (["--tile", str(MIN_TILE - 1)], f"at least {MIN_TILE}"),
    (["--tile", "-5"], "--tile"),
    (["--tile", "64", "--overlap", "63"], "--overlap 63 must be at most half the tile (64 px)"),
    (["--tile", "256", "--overlap", "129"], "at most half"),
    (["--overlap", "600"], "(1024 px)"),   # the default tile
])
def test_bad_tiling_is_a_usage_error(tmp_path, capsys, command, opts, must):
    # the project does not even exist: parse-time checks come first
    _usage_error([command, str(tmp_path / "none"), *opts], capsys, must)


@pytest.mark.parametrize("opts", [["--tile", "0", "--overlap", "5"], ["--tile", str(MIN_TILE), "--overlap", "16"],
                                  ["--tile", "256", "--overlap", "128"]])
def test_good_tiling_reaches_the_command(tmp_path, capsys, opts):
    assert run(["segment", str(tmp_path / "none"), *opts]) == 1   # the missing project, not the options
    assert "usage:" not in capsys.readouterr().err
