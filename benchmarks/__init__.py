"""tnconv's benchmark suite: every operation on real layers, against PyTorch.

Run ``python -m benchmarks`` (``--quick`` for a one-minute subset, ``--device cuda``
on a GPU, ``--help`` for the rest). Modules, one concern each: `layers` (the real
layers), `case` (their tensors), `references` (the PyTorch references), `ops`
(references against the tnconv calls, per route), `timing` (interleaved medians
and the correctness check), `memory` (extra peak memory), `overhead` (per-call
cost), `summary` (ratios, geometric means, bars), `report` (Markdown), `plot`
(PNG), `progress`, `runner` and `cli`; `floor` (``python -m benchmarks.floor``)
puts KFAC-reduce next to a floor: a torch program that only reads the input once
and writes a tensor of the factor's size; `compile_time`
(``python -m benchmarks.compile_time``) times compiling and first calls.

>>> from benchmarks.layers import LAYERS
>>> len(LAYERS)
29
"""

__all__: list[str] = []
