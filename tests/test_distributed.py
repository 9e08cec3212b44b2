"""tnconv.distributed.all_reduce_factor: two gloo processes on 127.0.0.1, unequal shards, every
reduction of kfc and kfac_reduce, against the single-process factor of the whole batch."""

from __future__ import annotations

import socket
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import tnconv
from tnconv.distributed import all_reduce_factor
from tests.helpers import assert_close

WORLD = 2
#: Samples of rank 0 and rank 1; the whole batch is their concatenation.
SPLITS = {"unequal": (2, 5), "empty rank": (0, 7)}
REDUCTIONS = {"kfc": ("mean", "batch", "sum"), "kfac_reduce": ("mean", "sum")}
OPTIONS = ({}, {"bias": False, "group_average": True}, {"structure": "diagonal"})


def _layers() -> dict[str, tuple[torch.nn.Module, torch.Tensor]]:
    """(layer, whole batch of its inputs), the same in every process (seeded, float64)."""
    torch.manual_seed(0)
    layers = {"conv2d": torch.nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2),
              "conv1d": torch.nn.Conv1d(3, 2, 4, padding="same", padding_mode="reflect",
                                        bias=False),
              "transposed": torch.nn.ConvTranspose2d(2, 4, 3, stride=2, groups=2)}
    shapes = {"conv2d": (4, 7, 6), "conv1d": (3, 11), "transposed": (2, 4, 5)}
    return {name: (layer.double(), torch.randn(7, *shapes[name], dtype=torch.float64))
            for name, layer in layers.items()}


def _cases():
    """Every layer, factor, reduction and option on unequal shards; a rank with no samples
    for every factor and reduction of one layer."""
    for layer in ("conv2d", "conv1d", "transposed"):
        for name, reductions in REDUCTIONS.items():
            for reduction in reductions:
                for index, _ in enumerate(OPTIONS):
                    yield "unequal", layer, name, reduction, index
                    if layer == "conv2d" and index == 0:
                        yield "empty rank", layer, name, reduction, index


def _factor(name: str, layer, x: torch.Tensor, reduction: str, index: int) -> torch.Tensor:
    return getattr(tnconv, name)(layer, x, reduction=reduction, **OPTIONS[index])


def _shard_factor(name, layer, shard, reduction, index, whole) -> torch.Tensor:
    """This rank's factor; a rank without samples has zeros for a mean (undefined there)."""
    if shard.shape[0] == 0 and reduction != "sum":
        return torch.zeros_like(_factor(name, layer, whole, reduction, index))
    return _factor(name, layer, shard, reduction, index)


def _shard_factors(rank: int) -> dict[tuple, tuple[torch.Tensor, int]]:
    """Rank `rank`'s factor of its shard and its sample count, for every case."""
    layers, found = _layers(), {}
    for case in _cases():
        split, layer_name, name, reduction, index = case
        layer, whole = layers[layer_name]
        start = sum(SPLITS[split][:rank])
        shard = whole[start:start + SPLITS[split][rank]]
        found[case] = _shard_factor(name, layer, shard, reduction, index, whole), shard.shape[0]
    return found


def _worker(rank: int, port: int, path: str, factors: list[dict]) -> None:
    """One rank: combine its shard factors (computed by the parent, which compiles once)."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=WORLD, timeout=timedelta(seconds=120))
    try:
        combined = {case: all_reduce_factor(factor, case[3], batch_size=count)
                    for case, (factor, count) in factors[rank].items()}
        torch.save(combined, f"{path}.{rank}")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_two_processes_give_the_single_process_factor(tmp_path):
    path = str(tmp_path / "factors")
    factors = [_shard_factors(rank) for rank in range(WORLD)]
    mp.spawn(_worker, args=(_free_port(), path, factors), nprocs=WORLD, join=True)
    layers = _layers()
    results = [torch.load(f"{path}.{rank}") for rank in range(WORLD)]
    assert len(results[0]) == len(list(_cases())) > 0
    for case in _cases():
        _, layer_name, name, reduction, index = case
        layer, whole = layers[layer_name]
        expected = _factor(name, layer, whole, reduction, index)
        for result in results:  # every rank holds the whole-batch factor
            assert_close(result[case], expected)


def test_shard_factors_differ_from_the_whole_batch():
    """The check above can fail: one shard's factor is not the whole batch's."""
    layer, whole = _layers()["conv2d"]
    assert not torch.allclose(tnconv.kfc(layer, whole[:2]), tnconv.kfc(layer, whole))


@pytest.mark.parametrize("kwargs, fragment", [
    ({"reduction": "avg", "batch_size": 2}, "argument 'reduction' got 'avg'"),
    ({"reduction": "mean"}, "argument 'batch_size' got None"),
    ({"reduction": "batch", "batch_size": -1}, "argument 'batch_size' got -1"),
    ({"reduction": "sum"}, "init_process_group"),
])
def test_errors_name_the_argument(kwargs, fragment):
    with pytest.raises(tnconv.TNConvError, match=fragment):
        all_reduce_factor(torch.eye(3), **kwargs)
    with pytest.raises(tnconv.TNConvError, match="argument 'factor'"):
        all_reduce_factor([[1.0]], batch_size=1)
