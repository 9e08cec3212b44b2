"""The `tnconv` command: explain built-in examples and user-given convolutions."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tnconv.cli import EXAMPLES, main


@pytest.mark.parametrize("example", sorted(EXAMPLES))
def test_explain_examples(example, capsys):
    assert main(["explain", "--example", example]) == 0
    out = capsys.readouterr().out
    for fragment in ("spec", "einsum", "path", "flops"):
        assert fragment in out


def test_explain_user_conv(capsys):
    argv = ["explain", "unfold", "--conv", "kernel_size=(3, 2), stride=2, padding=((1, 0), 1)",
            "--input-shape", "2,3,8,9"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "P=(1,0)" in out and "unfold" in out


@pytest.mark.parametrize("argv, fragment", [
    (["explain", "--conv", "kernel_size=3"], "--input-shape"),
    (["explain", "--conv", "kernel_size=3, stride=2, padding='same'", "--input-shape", "1,2,8"],
     "'same' only with stride 1"),
    (["explain", "--conv", "import os", "--input-shape", "1,2,8"], "--conv"),
    (["explain", "--conv", "kernel_size=3, bogus=1", "--input-shape", "1,2,8"], "bogus"),
    (["explain", "--conv", "stride=2", "--input-shape", "1,2,8"], "kernel_size required"),
    (["explain", "--conv", "kernel_size=3", "--input-shape", "1,x"], "--input-shape"),
    (["explain", "nonsense"], "'op'"),
])
def test_cli_errors_are_messages_not_tracebacks(argv, fragment, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and fragment in err and "Traceback" not in err


def test_console_entry_point_runs():
    result = subprocess.run([sys.executable, "-m", "tnconv.cli", "explain", "--example", "tiny"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "einsum" in result.stdout
