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


# ------------------------------------------------- the command as a user runs it
def _tnconv(*argv: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """`python -m tnconv ARGV...` in a fresh process."""
    return subprocess.run([sys.executable, "-m", "tnconv", *argv], capture_output=True,
                          text=True, timeout=600, env=env)


def _one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    for fragment in fragments:
        assert fragment in lines[0]


def test_tour_shows_factors_einsum_and_writes_the_diagram(tmp_path):
    result = _tnconv("tour", "--quick", "-o", str(tmp_path / "tour.svg"))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for layer in ("conv1", "conv5"):
        for factor in ("kfac_reduce", "kfc"):
            assert any(line.startswith(layer) and factor in line for line in out.splitlines())
    for fragment in ("tnconv ms", "im2col ms", "MiB", "rel. diff", "einsum", "path", "FLOPs"):
        assert fragment in out
    assert f"wrote {tmp_path / 'tour.svg'}" in out
    assert "<svg" in (tmp_path / "tour.svg").read_text()


def test_no_arguments_runs_the_full_tour():
    from tnconv.cli import _tour, build_parser

    args = build_parser().parse_args([])
    assert args.run is _tour and args.quick is False and args.output is None


def test_tour_writes_dot_where_graphviz_is_missing(tmp_path, monkeypatch):
    import tnconv
    from tnconv import tour

    monkeypatch.setattr(tour.shutil, "which", lambda name: None)
    spec = tnconv.ConvSpec(2, 2, kernel_size=3, input_size=(5,))
    message = tour._diagram(tnconv.compile("kfac_reduce", spec), tmp_path / "d.svg")
    assert str(tmp_path / "d.dot") in message and "not installed" in message
    assert (tmp_path / "d.dot").read_text().startswith('graph kfac_reduce {')


def test_render_writes_svg_in_a_fresh_process(tmp_path):
    svg = tmp_path / "kfc.svg"
    result = _tnconv("render", "kfc", "--example", "tiny", "--stage", "input", "-o", str(svg))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"wrote {svg}"
    assert "<svg" in svg.read_text()


def test_render_writes_dot_source_of_either_stage(capsys, tmp_path):
    paths = [tmp_path / "input.dot", tmp_path / "rewritten.gv"]
    for stage, path in zip(("input", "rewritten"), paths):
        assert main(["render", "unfold", "--example", "tiny", "--stage", stage,
                     "-o", str(path)]) == 0
        assert capsys.readouterr().out.strip() == f"wrote {path}"
        assert path.read_text().startswith('graph unfold {')
    assert paths[0].read_text() != paths[1].read_text()


def test_render_svg_without_graphviz_is_one_line(tmp_path):
    env = {"PATH": str(tmp_path), "HOME": str(tmp_path)}  # no `dot` on this PATH
    result = _tnconv("render", "forward", "--example", "tiny", "-o", str(tmp_path / "f.svg"),
                     env=env)
    _one_line_error(result, "'dot'", "Graphviz")
    assert not (tmp_path / "f.svg").exists()


def test_bench_prints_medians_and_ratio_with_a_progress_bar():
    result = _tnconv("bench", "forward", "--example", "tiny", "--repeat", "3")
    assert result.returncode == 0, result.stderr
    assert "ratio tnconv / PyTorch" in result.stdout and "ms" in result.stdout
    assert "[" in result.stderr and "3/3" in result.stderr


@pytest.mark.parametrize("argv, fragments", [
    (["bogus"], ["invalid choice"]),
    (["render", "forward", "--example", "tiny"], ["-o/--output"]),
    (["render", "forward", "--example", "tiny", "-o", "f.txt"], ["'path'", ".svg"]),
    (["render", "forward", "--example", "tiny", "-o", "f.svg", "--stage", "late"], ["--stage"]),
    (["bench", "kfc", "--conv", "kernel_size=3, stride=2", "--input-shape", "1,2,5,5",
      "--repeat", "0"], ["--repeat"]),
    (["bench", "input_vjp", "--conv", "kernel_size=3, padding='same', padding_mode='reflect'",
      "--input-shape", "1,2,5,5"], ["'input_vjp'", "PyTorch kernel"]),
    (["bench", "nonsense", "--example", "tiny"], ["'op'"]),
])
def test_command_errors_are_one_line(argv, fragments, capsys):
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert all(fragment in lines[0] for fragment in fragments), lines[0]


def test_unexpected_failures_are_one_line_too(monkeypatch, capsys):
    import tnconv.cli as cli

    def boom(args):
        raise RuntimeError("something broke\nsecond line")

    monkeypatch.setattr(cli, "_explain", boom)
    assert main(["explain"]) == 1
    assert capsys.readouterr().err == "error: RuntimeError: something broke\n"


def test_usage_errors_in_a_fresh_process_are_one_line():
    _one_line_error(_tnconv("render", "forward", "--example", "tiny"), "-o/--output")
