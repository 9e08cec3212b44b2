"""The `tnconv` command.

    tnconv explain                       # a built-in example: spec, einsum, path, FLOPs
    tnconv explain unfold --example vit-patch
    tnconv explain forward --conv "in_channels=3, out_channels=8, kernel_size=3, padding=1" \\
        --input-shape 2,3,32,32
    tnconv export forward --conv "out_channels=8, kernel_size=3" --input-shape 2,3,32,32 -o f.npz
    tnconv gallery diagrams/             # redraw the diagram gallery

>>> main(["explain", "--example", "tiny"])  # doctest: +ELLIPSIS
operation forward: ...
0
"""

from __future__ import annotations

import argparse
import ast
import sys
from typing import Sequence

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tnconv", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `tnconv` command; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except TNConvError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
