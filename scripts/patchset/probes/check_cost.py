"""Time the TP check inside ``parallelize_fn``; print JSON.

Runs inside the project's virtual environment against whichever torchtitan
tree is first on PYTHONPATH. On the meta-device model of one Qwen3.5 flavor,
under a ``fake`` process group of ``--world-size`` ranks, it times in one
process, each run on a fresh model: ``parallelize_fn`` at an invalid degree,
from the call to the ``ValueError``, and a full ``parallelize_fn`` at a valid
degree after one warm-up run. Each figure is the best of ``--repeat`` runs;
the first refused run, which pays for whatever the check does once per
process, is reported too. The ``partial_dtensor`` SPMD backend is
used because it can parallelize several models in one process (a second
``fully_shard`` under ``spmd_types`` trips over the device mesh cached by the
first); the invalid degree is refused before any backend-specific work.
"""

import argparse
import json
import sys
import time

import torch.distributed as dist
from torch.testing._internal.distributed.fake_pg import FakeStore

from qwen35_tp import (
    call_moe_branch_parallelize_fn,
    call_parallelize_fn,
    configure,
    is_moe_branch,
    meta_model_on_cpu_mesh,
    moe_branch_meta_model,
)

SPMD_BACKEND = "partial_dtensor"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--flavor", help="default: 397B-A17B (397b-a17b on the #2545 branch)"
    )
    parser.add_argument("--world-size", type=int, default=8)
    parser.add_argument("--invalid-tp", type=int, default=4)
    parser.add_argument("--valid-tp", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=5)
    return parser.parse_args()


def parallelize_seconds(
    spec, *, tp: int, world_size: int, configure_first: bool
) -> tuple[float, str]:
    """One ``parallelize_fn`` call on a fresh meta model: its wall time and
    the ``ValueError`` it raised ("" if none)."""
    if is_moe_branch():
        # The branch has no config-time stage to run first.
        with moe_branch_meta_model(spec, tp=tp, world_size=world_size) as (
            model, parallel_dims
        ):
            return timed(call_moe_branch_parallelize_fn, spec, model,
                         parallel_dims=parallel_dims)

    from torchtitan.config import ParallelismConfig

    parallelism = ParallelismConfig(tensor_parallel_degree=tp, spmd_backend=SPMD_BACKEND)
    configure(spec, parallelism, skip_config_check=not configure_first)
    with meta_model_on_cpu_mesh(spec, parallelism, world_size=world_size) as (
        model, parallel_dims
    ):
        return timed(call_parallelize_fn, spec, model, parallelism=parallelism,
                     parallel_dims=parallel_dims)


def timed(call, *args, **kwargs) -> tuple[float, str]:
    """``call``'s wall time, and the ``ValueError`` it raised ("" if none)."""
    started = time.perf_counter()
    try:
        call(*args, **kwargs)
    except ValueError as error:
        return time.perf_counter() - started, str(error)[:300]
    return time.perf_counter() - started, ""


def model_registry(flavor: str | None):
    """The Qwen3.5 MoE registry of this tree, and the flavor to measure."""
    if is_moe_branch():
        from torchtitan.models import qwen3_5_moe

        return qwen3_5_moe.model_registry, flavor or "397b-a17b"
    from torchtitan.models import qwen3_5

    return qwen3_5.model_registry, flavor or "397B-A17B"


def main() -> int:
    args = parse_args()
    import torchtitan

    registry, flavor = model_registry(args.flavor)
    if not is_moe_branch():
        from torchtitan.distributed.utils import set_spmd_backend

        set_spmd_backend(SPMD_BACKEND)
    dist.init_process_group("fake", store=FakeStore(), rank=0, world_size=args.world_size)
    try:
        invalid_runs = [
            parallelize_seconds(
                registry(flavor), tp=args.invalid_tp,
                world_size=args.world_size, configure_first=False,
            )
            for _ in range(args.repeat)
        ]
        valid_runs = [
            parallelize_seconds(
                registry(flavor), tp=args.valid_tp,
                world_size=args.world_size, configure_first=True,
            )
            for _ in range(args.repeat + 1)
        ][1:]
    finally:
        dist.destroy_process_group()
    invalid = min(seconds for seconds, _ in invalid_runs)
    valid = min(seconds for seconds, _ in valid_runs)
    print(json.dumps({
        "torchtitan": torchtitan.__file__,
        "model": registry.__module__.rsplit(".", 1)[-1],
        "flavor": flavor,
        "world_size": args.world_size,
        "spmd_backend": SPMD_BACKEND,
        "invalid_tp": args.invalid_tp,
        "invalid_errors": sorted({error for _, error in invalid_runs}),
        "invalid_ms": round(invalid * 1e3, 3),
        "invalid_first_ms": round(invalid_runs[0][0] * 1e3, 3),
        "valid_tp": args.valid_tp,
        "valid_errors": sorted({error for _, error in valid_runs}),
        "valid_ms": round(valid * 1e3, 3),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
