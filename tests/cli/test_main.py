"""The nnshrink command: version, discovery, one-line errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

from nnshrink import __version__
from nnshrink.cli.main import build_parser, main


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"nnshrink {__version__}"


def test_subcommands_discovered():
    parser = build_parser()
    choices = next(a for a in parser._actions if a.dest == "command").choices
    assert {"profile", "train", "eval"} <= set(choices)


def test_user_error_is_one_line_exit_2(capsys):
    assert main(["eval", "missing.safetensors", "--data", "mnist"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("nnshrink: error:")


def test_console_script_runs():
    out = subprocess.run(
        [sys.executable, "-m", "nnshrink.cli.main", "--version"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert __version__ in out.stdout


def test_no_command_prints_help(capsys):
    assert main([]) == 1
    assert "COMMAND" in capsys.readouterr().out
