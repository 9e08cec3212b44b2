"""The `tnconv` command (`python -m tnconv` too).

    tnconv                               # the built-in tour (under a minute on a laptop CPU)
    tnconv tour --quick -o tour.svg      # a shorter tour; where its diagram goes
    tnconv explain                       # a built-in example: spec, einsum, path, FLOPs
    tnconv explain unfold --example vit-patch
    tnconv explain forward --conv "in_channels=3, out_channels=8, kernel_size=3, padding=1" \\
        --input-shape 2,3,32,32
    tnconv export forward --conv "out_channels=8, kernel_size=3" --input-shape 2,3,32,32 -o f.npz
    tnconv gallery diagrams/             # redraw the diagram gallery
    tnconv render kfc --example depthwise -o kfc.svg --stage input   # .dot: DOT source
    tnconv bench kfac_reduce --example resnet-stem --repeat 10       # against PyTorch

Errors print one line, `error: ...`, and exit with status 2 (bad input) or 1.

>>> main(["explain", "--example", "tiny"])  # doctest: +ELLIPSIS
operation forward: ...
0
"""

from __future__ import annotations

import argparse
import ast
import sys
from typing import Sequence

from pathlib import Path
from typing import NoReturn

from tnconv.errors import TNConvError

__all__ = ["main", "EXAMPLES", "parse_conv", "parse_shape", "spec_from_arguments"]

#: Built-in examples: (keyword arguments of ConvSpec without input_size, input shape).
EXAMPLES: dict[str, tuple[dict, tuple[int, ...]]] = {
    "resnet-stem": (dict(in_channels=3, out_channels=64, kernel_size=7, stride=2, padding=3),
                    (8, 3, 224, 224)),
    "tiny": (dict(in_channels=2, out_channels=3, kernel_size=3, padding=1), (1, 2, 6, 6)),
    "vit-patch": (dict(in_channels=3, out_channels=768, kernel_size=16, stride=16),
                  (2, 3, 224, 224)),
    "depthwise": (dict(in_channels=32, out_channels=32, kernel_size=3, padding=1, groups=32),
                  (8, 32, 56, 56)),
    "audio-1d": (dict(in_channels=1, out_channels=512, kernel_size=10, stride=5),
                 (4, 1, 16000)),
    "video-3d": (dict(in_channels=3, out_channels=64, kernel_size=3, padding=1),
                 (2, 3, 16, 56, 56)),
}


def parse_conv(text: str) -> dict:
    """Parse 'in_channels=3, out_channels=8, kernel_size=3' into keyword arguments (literals only)."""
    try:
        call = ast.parse(f"f({text})", mode="eval").body
        if not isinstance(call, ast.Call) or call.args:
            raise ValueError("positional arguments")
        return {kw.arg: ast.literal_eval(kw.value) for kw in call.keywords}
    except (SyntaxError, ValueError) as err:
        raise TNConvError(f"tnconv: argument '--conv' got {text!r}; allowed: keyword=literal "
                          f"pairs of ConvSpec, e.g. 'in_channels=3, out_channels=8, "
                          f"kernel_size=3' ({err})") from None


def parse_shape(text: str) -> tuple[int, ...]:
    """Parse '2,3,32,32' into a shape tuple."""
    try:
        shape = tuple(int(v) for v in text.replace("x", ",").split(",") if v.strip())
    except ValueError:
        shape = ()
    if len(shape) < 3 or min(shape) < 1:
        raise TNConvError(f"tnconv: argument '--input-shape' got {text!r}; allowed: positive "
                          "ints N,C,spatial... with at least one spatial dimension")
    return shape


def spec_from_arguments(args: argparse.Namespace):
    """(ConvSpec, batch size) from --example or --conv/--input-shape."""
    from tnconv.spec.conv_spec import ConvSpec

    if args.conv is not None:
        if args.input_shape is None:
            raise TNConvError("tnconv: '--conv' needs '--input-shape N,C,spatial...'")
        kwargs, shape = parse_conv(args.conv), parse_shape(args.input_shape)
    else:
        kwargs, shape = EXAMPLES[args.example]
        if args.input_shape is not None:
            shape = parse_shape(args.input_shape)
    fields = [name for name in ConvSpec.__dataclass_fields__ if name != "input_size"]
    unknown = [name for name in kwargs if name not in fields]
    if unknown or "kernel_size" not in kwargs:
        raise TNConvError(f"tnconv: argument '--conv' got {args.conv!r}; allowed: keywords of "
                          f"{', '.join(fields)} (kernel_size required; input_size comes from "
                          "--input-shape)")
    kwargs = {"in_channels": shape[1], **kwargs}
    kwargs.setdefault("out_channels", kwargs["in_channels"])
    return ConvSpec(input_size=shape[2:], **kwargs), shape[0]


def add_spec_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--example", choices=sorted(EXAMPLES), default="resnet-stem",
                        help="built-in convolution (default: resnet-stem)")
    parser.add_argument("--conv", help="ConvSpec keywords, e.g. 'out_channels=8, kernel_size=3'")
    parser.add_argument("--input-shape", help="input shape N,C,spatial..., e.g. 2,3,32,32")


def _explain(args: argparse.Namespace) -> int:
    from tnconv.compiler import compile

    spec, batch = spec_from_arguments(args)
    compiled = compile(args.op, spec, batch_size=batch, strategy="tn")
    print(compiled.explain())
    return 0


def _export(args: argparse.Namespace) -> int:
    from tnconv.compiler import compile

    spec, batch = spec_from_arguments(args)
    exported = compile(args.op, spec, batch_size=batch, strategy="tn").to_einsum()
    path = exported.save(args.output)
    print(exported.describe())
    print(f"wrote {path}")
    return 0


def _gallery(args: argparse.Namespace) -> int:
    from tnconv.render.gallery import write_gallery

    for path in write_gallery(args.directory):
        print(f"wrote {path}")
    return 0


def _render(args: argparse.Namespace) -> int:
    from tnconv.compiler import compile

    spec, batch = spec_from_arguments(args)
    path = compile(args.op, spec, batch_size=batch, strategy="tn").render(args.output,
                                                                          stage=args.stage)
    print(f"wrote {path}")
    return 0


def _bench(args: argparse.Namespace) -> int:
    import torch

    from tnconv.bench import bench

    spec, batch = spec_from_arguments(args)
    if args.repeat < 1:
        raise TNConvError(f"tnconv bench: argument '--repeat' got {args.repeat}; allowed: a "
                          "positive int")
    bench(args.op, spec, batch, strategy=args.strategy, rounds=args.repeat,
          dtype=getattr(torch, args.dtype))
    return 0


def _tour(args: argparse.Namespace) -> int:
    from tnconv.tour import run_tour

    return run_tour(quick=args.quick, output=args.output)


class _UsageError(Exception):
    """A command line argparse rejects (reported in one line, exit status 2)."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad command line is one line of error, not usage and a message."""

    def error(self, message: str) -> NoReturn:
        raise _UsageError(f"{self.prog}: {message} (see '{self.prog} --help')")


def _add_tour(commands) -> None:
    tour = commands.add_parser("tour", help="the built-in tour (what `tnconv` alone runs)")
    tour.add_argument("--quick", action="store_true", help="a smaller batch, fewer rounds")
    tour.add_argument("-o", "--output", type=Path,
                      help="diagram file (.svg, or .dot); default: in the temporary folder")
    tour.set_defaults(run=_tour)


def _add_render_and_bench(commands) -> None:
    render = commands.add_parser("render", help="draw an operation's tensor network")
    render.add_argument("op", help="operation name")
    add_spec_arguments(render)
    render.add_argument("-o", "--output", required=True,
                        help="file to write: .svg or .png (Graphviz's dot), .dot or .gv (source)")
    render.add_argument("--stage", choices=("input", "rewritten"), default="rewritten",
                        help="the network as built or after the rewrites (default)")
    render.set_defaults(run=_render)
    bench = commands.add_parser("bench", help="time an operation against PyTorch")
    bench.add_argument("op", help="forward, input_vjp, weight_vjp, unfold, kfc or kfac_reduce")
    add_spec_arguments(bench)
    bench.add_argument("--strategy", choices=("auto", "tn"), default="auto")
    bench.add_argument("--repeat", type=int, default=15, help="interleaved rounds (default 15)")
    bench.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    bench.set_defaults(run=_bench)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="tnconv", description=__doc__.split("\n")[0],
                     epilog="Without a command, tnconv runs the built-in tour.")
    commands = parser.add_subparsers(dest="command")
    explain = commands.add_parser("explain", help="show how an operation compiles")
    explain.add_argument("op", nargs="?", default="forward", help="operation name")
    add_spec_arguments(explain)
    explain.set_defaults(run=_explain)
    export = commands.add_parser("export", help="export an operation as a portable einsum file")
    export.add_argument("op", help="operation name")
    add_spec_arguments(export)
    export.add_argument("-o", "--output", required=True, help="file to write (.npz)")
    export.set_defaults(run=_export)
    gallery = commands.add_parser("gallery", help="redraw the diagram gallery (SVG + README.md)")
    gallery.add_argument("directory", help="output folder, e.g. diagrams/")
    gallery.set_defaults(run=_gallery)
    _add_render_and_bench(commands)
    _add_tour(commands)
    parser.set_defaults(run=_tour, quick=False, output=None)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `tnconv` command; returns the exit status.

    Every failure is one line on stderr: `error: ...`, status 2 for bad input
    (a `TNConvError` or a command line argparse rejects), 1 for anything else.
    """
    try:
        args = build_parser().parse_args(argv)
        return args.run(args)
    except (TNConvError, _UsageError) as err:
        return _fail(str(err), 2)
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    except Exception as err:  # noqa: BLE001 — a command prints one line, never a traceback
        return _fail(f"{type(err).__name__}: {err}".splitlines()[0], 1)


def _fail(message: str, status: int) -> int:
    print(f"error: {message}", file=sys.stderr)
    return status


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
