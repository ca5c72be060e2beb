"""The CLI's contract: clear help, one-line user errors with exit 1, no tracebacks."""

import subprocess
import sys

import pytest

from sq_trt.cli import COMMANDS, main


def _run(*args):
    return subprocess.run([sys.executable, "-m", "sq_trt", *args], check=False, capture_output=True, text=True, timeout=300)


def test_top_level_help_lists_every_stage(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for command in COMMANDS:
        assert command in out
    assert "calibrate -> smooth -> export -> build -> compare -> report" in out


@pytest.mark.parametrize("command", COMMANDS)
def test_each_subcommand_has_help(command, capsys):
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    assert len(capsys.readouterr().out) > 100


def test_missing_model_path_is_one_line_exit_1():
    result = _run("eval", "--model", "/no/such/dir")
    assert result.returncode == 1
    assert "/no/such/dir" in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_calibrate_missing_model_is_exit_1():
    result = _run("calibrate", "--model", "/no/such/dir")
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert "/no/such/dir" in result.stderr or "not built yet" in result.stderr


def test_no_command_prints_help_and_fails(capsys):
    assert main([]) == 1
    assert "usage" in capsys.readouterr().out
