"""The built-in tour (`tnconv` with no arguments): what the library is for, in one run.

1. A small CNN's KFAC-reduce and KFC input factors, layer by layer, computed by
   tnconv and the im2col way (pad, `F.unfold`, matrix product), with the time of
   each (medians of interleaved rounds), its peak memory and their agreement.
   Peak memory is what torch's CPU allocator reports to `torch.profiler`
   (`profile_memory=True`) during one call: every tensor torch allocates,
   not the work buffers of BLAS libraries. (`tracemalloc` does not see torch's
   allocations.)
2. How one of those operations compiles: its einsum, contraction path, FLOPs.
3. Its tensor network drawn to an SVG file (DOT source where Graphviz's `dot`
   is missing), whose path it prints.

>>> model = small_cnn()
>>> [type(m).__name__ for m in model if isinstance(m, torch.nn.Conv2d)].count("Conv2d")
5
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator, Optional, TextIO

import torch

from tnconv.bench import (kfac_reduce_reference, kfc_reference, relative_difference,
                          time_interleaved)

__all__ = ["small_cnn", "peak_bytes", "factor_rows", "run_tour"]

FACTORS = ("kfac_reduce", "kfc")


def small_cnn() -> torch.nn.Sequential:
    """Five convolutions a CIFAR-sized network has: plain, strided, grouped, 'same' with an
    even kernel and reflect padding, and a strided 1×1 down-sampling."""
    torch.manual_seed(0)
    conv = torch.nn.Conv2d
    return torch.nn.Sequential(
        conv(3, 16, 3, padding=1), torch.nn.ReLU(),
        conv(16, 32, 3, stride=2, padding=1), torch.nn.ReLU(),
        conv(32, 32, 3, padding=1, groups=4), torch.nn.ReLU(),
        conv(32, 32, 4, padding="same", padding_mode="reflect"), torch.nn.ReLU(),
        conv(32, 64, 1, stride=2, bias=False))


def _layer_inputs(model: torch.nn.Sequential, x: torch.Tensor) -> list[tuple[torch.nn.Conv2d,
                                                                            torch.Tensor]]:
    """Each convolution with the input it sees (recorded by forward pre-hooks)."""
    found: list[tuple[torch.nn.Conv2d, torch.Tensor]] = []
    handles = [m.register_forward_pre_hook(lambda m, args: found.append((m, args[0])))
               for m in model if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():
        model(x)
    for handle in handles:
        handle.remove()
    return found


@contextlib.contextmanager
def _quiet_native_output() -> Iterator[None]:
    """Silence what native code writes to the process's stdout and stderr (the profiler's
    library prints trace lines there), restoring both afterwards."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 1)
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved + [null]:
            os.close(fd)


def peak_bytes(call: Callable[[], object]) -> int:
    """Peak bytes allocated through torch's CPU allocator during `call()`, above the start."""
    from torch.profiler import ProfilerActivity, profile

    with _quiet_native_output(), profile(activities=[ProfilerActivity.CPU],
                                         profile_memory=True) as prof:
        result = call()
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                    if e.name() == "[memory]")
    live = peak = 0
    for _, change in events:
        live += change
        peak = max(peak, live)
    del result
    return peak


def _module_label(conv: torch.nn.Conv2d) -> str:
    """A short description: '16→32 k3 s2 p1 g4 reflect' (defaults left out)."""
    parts = [f"{conv.in_channels}→{conv.out_channels}", f"k{conv.kernel_size[0]}"]
    if conv.stride != (1, 1):
        parts.append(f"s{conv.stride[0]}")
    padding = conv.padding if isinstance(conv.padding, str) else conv.padding[0]
    if padding:
        parts.append(f"p{padding}" if isinstance(padding, int) else f"p='{padding}'")
    parts += [f"g{conv.groups}"] * (conv.groups > 1)
    parts += [conv.padding_mode] * (conv.padding_mode != "zeros")
    parts += ["no bias"] * (conv.bias is None)
    return " ".join(parts)


def factor_rows(model: torch.nn.Sequential, x: torch.Tensor, rounds: int,
                progress: Optional[TextIO] = None) -> list[dict]:
    """One row per (layer, factor): times, peak bytes and the relative difference."""
    import tnconv

    rows = []
    for index, (conv, inputs) in enumerate(_layer_inputs(model, x), start=1):
        spec = tnconv.ConvSpec.from_module(conv, inputs)
        bias = conv.bias is not None
        for name in FACTORS:
            ours = (lambda c=conv, t=inputs, n=name: getattr(tnconv, n)(c, t))
            reference = {"kfc": kfc_reference, "kfac_reduce": kfac_reduce_reference}[name]
            theirs = (lambda t=inputs, s=spec, r=reference: r(t, s, bias=bias))
            difference = relative_difference(ours(), theirs())  # compiles; checks agreement
            ours_s, theirs_s = time_interleaved(ours, theirs, rounds)
            rows.append(dict(layer=f"conv{index}", module=_module_label(conv), factor=name,
                             ours_s=ours_s, theirs_s=theirs_s, ours_peak=peak_bytes(ours),
                             theirs_peak=peak_bytes(theirs), difference=difference))
            if progress is not None:
                progress.write(f"\r  measured conv{index} {name:<12}")
                progress.flush()
    if progress is not None:
        progress.write("\r" + " " * 40 + "\r")
    return rows


def _table(rows: list[dict]) -> list[str]:
    head = (f"{'layer':<6}{'Conv2d':<27}{'factor':<12}{'tnconv ms':>10}{'im2col ms':>10}"
            f"{'speed-up':>9}{'tnconv MiB':>11}{'im2col MiB':>11}{'rel. diff':>10}")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['layer']:<6}{r['module']:<27}{r['factor']:<12}{r['ours_s'] * 1e3:>10.2f}"
            f"{r['theirs_s'] * 1e3:>10.2f}{r['theirs_s'] / r['ours_s']:>8.1f}x"
            f"{r['ours_peak'] / 2 ** 20:>11.2f}{r['theirs_peak'] / 2 ** 20:>11.2f}"
            f"{r['difference']:>10.0e}")
    return lines


def _diagram(compiled, output: Path) -> str:
    """Draw the network to `output` (SVG), or its DOT source where `dot` is missing."""
    output.parent.mkdir(parents=True, exist_ok=True)
    if output.suffix.lower() == ".svg" and shutil.which("dot") is None:
        output = output.with_suffix(".dot")
        compiled.render(output)
        return (f"wrote {output} (DOT source: Graphviz's 'dot' is not installed; "
                f"'dot -Tsvg {output} -o diagram.svg' draws it)")
    compiled.render(output)
    return f"wrote {output}"


def _is_terminal(stream: Optional[TextIO]) -> bool:
    return stream is not None and getattr(stream, "isatty", lambda: False)()


def run_tour(quick: bool = False, output: Optional[Path] = None,
             stream: TextIO = sys.stdout, progress: Optional[TextIO] = sys.stderr) -> int:
    """Print the tour; `quick` uses a smaller batch and fewer rounds (a test's tour)."""
    import tnconv

    started = time.perf_counter()
    batch, rounds = (8, 2) if quick else (32, 5)
    out = lambda *lines: print(*lines, sep="\n", file=stream)  # noqa: E731
    model, x = small_cnn(), torch.randn(batch, 3, 32, 32)
    out(f"tnconv tour: a small CNN on a batch of {batch} images 3×32×32 (float32, "
        f"{torch.get_num_threads()} torch threads)", "",
        "1. KFAC input factors of every layer: tnconv against the im2col way (pad, F.unfold, "
        "matmul)",
        f"   time: median of {rounds} interleaved rounds; peak: torch's CPU allocator as "
        "reported to torch.profiler; rel. diff: max |tnconv - im2col| / max |im2col|", "")
    rows = factor_rows(model, x, rounds, progress if _is_terminal(progress) else None)
    out(*_table(rows), "")
    conv, inputs = _layer_inputs(model, x)[1]
    spec = tnconv.ConvSpec.from_module(conv, inputs)
    compiled = tnconv.compile("kfac_reduce", spec, strategy="tn", batch_size=batch)
    program = compiled.program
    out(f"2. How conv2's KFAC-reduce compiles ({spec.in_channels}→{spec.out_channels}, "
        f"k={spec.kernel_size}, stride={spec.stride}, input {spec.input_size}):",
        f"   einsum   {program.equation}",
        "   symbols  " + ", ".join(f"{s}={name}" for name, s in program.symbols),
        f"   path     {list(program.path)}",
        f"   FLOPs    {program.flops:,} (2 per multiply-add); largest intermediate "
        f"{program.largest_intermediate:,} elements", "")
    target = output or Path(tempfile.gettempdir()) / "tnconv-tour" / "kfac_reduce.svg"
    out("3. Its tensor network, after the rewrites: " + _diagram(compiled, target), "")
    out(f"Done in {time.perf_counter() - started:.1f} s. More: tnconv explain | render | bench "
        "| export | gallery (tnconv COMMAND --help).")
    return 0
