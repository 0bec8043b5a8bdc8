"""The PyTorch side of the MoE gradient bug, reproduced with torch alone.

``local_map`` unwraps each DTensor input with ``to_local()`` and, when the
local tensor is an ``AsyncCollectiveTensor`` (the result of
``redistribute(..., async_op=True)``), calls ``.wait()`` on it
(``torch/distributed/tensor/experimental/_func_map.py``). ``wait()``
returns the inner tensor, which has no autograd edge back to the input, so
whatever the mapped function computes gets no gradient to that input. The
series does not depend on a fix of this: torchtitan stops handing
``local_map`` such tensors. One process with a ``fake`` process group of
two ranks is enough: only the autograd graph is looked at (a fake
collective computes no values).
"""

import pytest
import torch


@pytest.fixture
def mesh():
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.testing._internal.distributed.fake_pg import FakeStore

    dist.init_process_group("fake", store=FakeStore(), rank=0, world_size=2)
    try:
        yield init_device_mesh("cpu", (2,))
    finally:
        dist.destroy_process_group()


def output_requires_grad(mesh, *, async_op: bool) -> bool:
    """Whether the output of a ``local_map`` fed by a redistributed DTensor
    is still connected to the input's autograd graph."""
    from torch.distributed.tensor import DTensor, Replicate, Shard
    from torch.distributed.tensor.experimental import local_map

    local = torch.ones(4, 3, requires_grad=True)
    x = DTensor.from_local(local, mesh, [Shard(0)], run_check=False)
    x = x.redistribute(mesh, [Replicate()], async_op=async_op)
    double = local_map(
        lambda t: 2 * t, out_placements=[Replicate()], in_placements=([Replicate()],),
        device_mesh=mesh,
    )
    return double(x).requires_grad


def test_local_map_keeps_the_gradient_of_a_synchronous_redistribute(mesh):
    assert output_requires_grad(mesh, async_op=False)


def test_local_map_drops_the_gradient_of_an_async_redistribute(mesh):
    """Fails once PyTorch keeps the autograd edge: then torchtitan could go
    back to async input redistribution."""
    assert not output_requires_grad(mesh, async_op=True)
