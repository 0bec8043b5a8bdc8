"""Per-rank figures of the large Qwen3.5 MoE recipes, with KV-head
replication at their own TP against TP=2 without it; print JSON.

Runs inside the project's venv against the torchtitan tree first on
PYTHONPATH. Each recipe is built on the meta device and parallelized under a
``fake`` process group of ``--world-size`` ranks, with the recipe's own
parallelism (TP=4 or TP=8, ``replicate_kv_heads`` on) and with TP=2 and
replication off (what the recipes get without it); everything else is the
recipe's. Per rank and layout it reports:

  parameter bytes     the rank's local shards (float32), all, routed-expert
                      and non-expert, and of the replicated KV weights; and
                      the largest decoder layer's non-expert parameters as
                      FSDP all-gathers them on the rank
  tokens per step     the recipe's tokens per microbatch per data-parallel
                      rank times the data-parallel degree
  communication       per microbatch step, bytes each rank sends:
                      - the all-reduce of the replicated KV weights'
                        gradients over ``kv_replica`` (ring: 2(r-1)/r of the
                        rank's gradient bytes, float32); none at TP=2
                      - FSDP on the non-expert parameters: two all-gathers
                        (forward and backward, in the recipe's parameter
                        dtype) and one reduce-scatter (reduce dtype), each
                        sending (f-1) times the rank's shard
                      - sequence-parallel TP on activations: per layer, an
                        all-gather and a reduce-scatter around attention and
                        around the feed-forward, forward and backward, each
                        sending (tp-1)/tp of the [tokens, dim] activation in
                        the parameter dtype
Expert parallelism is the same in both layouts and left out.
"""

import argparse
import dataclasses
import json
import sys
import types
from unittest import mock

import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor
from torch.testing._internal.distributed.fake_pg import FakeStore

RECIPES = ("qwen35_122b_a10b", "qwen35_397b_a17b")
BASELINE_TP = 2


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world-size", type=int, default=16)
    return parser.parse_args()


def local_bytes(tensor: torch.Tensor) -> int:
    local = tensor.to_local() if isinstance(tensor, DTensor) else tensor
    return local.numel() * local.element_size()


def parameter_bytes(model) -> dict[str, int]:
    """The rank's local bytes, and the largest decoder layer's non-expert
    parameters as FSDP all-gathers them (the rank's TP shard of the layer)."""
    totals = {"all": 0, "experts": 0, "non_expert": 0, "replicated_kv": 0}
    gathered: dict[str, int] = {}
    for name, param in model.named_parameters():
        size = local_bytes(param)
        totals["all"] += size
        if ".routed_experts." in name:
            totals["experts"] += size
            continue
        totals["non_expert"] += size
        mesh_dims = mesh_dim_names(param)
        if "kv_replica" in mesh_dims:
            totals["replicated_kv"] += size
        if name.startswith("layers."):
            layer = name.split(".")[1]
            fsdp = param.device_mesh["fsdp"].size() if "fsdp" in mesh_dims else 1
            gathered[layer] = gathered.get(layer, 0) + size * fsdp
    totals["gathered_layer"] = max(gathered.values())
    return totals


def mesh_dim_names(param) -> tuple[str, ...]:
    return param.device_mesh.mesh_dim_names if isinstance(param, DTensor) else ()


def kv_replica_size(model) -> int:
    for param in model.parameters():
        if "kv_replica" in mesh_dim_names(param):
            return param.device_mesh["kv_replica"].size()
    return 1


def layout(recipe, parallelism, *, world_size: int) -> dict:
    """Parallelize the recipe's model with ``parallelism``; the figures."""
    from torchtitan.config import CompileConfig, TORCH_DTYPE_MAP
    from torchtitan.distributed import ParallelDims
    from torchtitan.distributed.utils import set_spmd_backend

    set_spmd_backend(parallelism.spmd_backend)
    spec = recipe.model_spec
    spec.model.update_from_config(config=types.SimpleNamespace(parallelism=parallelism))
    with mock.patch("torchtitan.distributed.parallel_dims.device_type", "cpu"):
        parallel_dims = ParallelDims.from_config(parallelism, world_size)
        parallel_dims.build_mesh()
        with torch.device("meta"):
            model = spec.model.build()
        spec.parallelize_fn(
            model,
            parallel_dims=parallel_dims,
            training=recipe.training,
            parallelism=parallelism,
            compile_config=CompileConfig(),
            ac_config=None,
            dump_folder="",
        )
    tp, fsdp = parallel_dims.tp, parallel_dims.dp_shard * parallel_dims.cp
    dp = parallel_dims.dp_replicate * parallel_dims.dp_shard
    sizes = parameter_bytes(model)
    param_size = TORCH_DTYPE_MAP[recipe.training.mixed_precision_param].itemsize
    reduce_size = TORCH_DTYPE_MAP[recipe.training.mixed_precision_reduce].itemsize
    replicas = kv_replica_size(model)
    tokens = tokens_per_dp_rank(recipe.training)
    non_expert_elements = sizes["non_expert"] // 4
    kv_grad_elements = sizes["replicated_kv"] // 4
    return {
        "tp": tp,
        "fsdp": fsdp,
        "dp": dp,
        "replicate_kv_heads": replicas > 1,
        "kv_replica": replicas,
        "parameter_bytes": sizes,
        "tokens_per_step": tokens * dp,
        "sent_bytes": {
            "kv_grad_all_reduce": 2 * (replicas - 1) * kv_grad_elements * reduce_size
            // replicas,
            "fsdp_non_expert": (fsdp - 1) * non_expert_elements * (2 * param_size + reduce_size),
            "sequence_parallel": len(spec.model.layers) * 8 * (tp - 1) * tokens
            * spec.model.dim * param_size // tp,
        },
    }


def tokens_per_dp_rank(training) -> int:
    """The tokens of one data-parallel rank's microbatch: a field on main,
    batch size times sequence length on 0.3.0."""
    tokens = getattr(training, "num_tokens_per_microbatch_per_dp_rank", None)
    return tokens if tokens is not None else training.local_batch_size * training.seq_len


def main() -> int:
    import torchtitan
    from torchtitan.models.qwen3_5 import config_registry

    args = parse_args()
    report = {"torchtitan": torchtitan.__file__, "world_size": args.world_size, "recipes": {}}
    dist.init_process_group("fake", store=FakeStore(), rank=0, world_size=args.world_size)
    for name in RECIPES:
        recipe = getattr(config_registry, name)()
        replicated = layout(recipe, recipe.parallelism, world_size=args.world_size)
        baseline_recipe = getattr(config_registry, name)()
        for layer in baseline_recipe.model_spec.model.layers:
            if layer.attention is not None:
                layer.attention.replicate_kv_heads = False
        baseline = layout(
            baseline_recipe,
            dataclasses.replace(baseline_recipe.parallelism, tensor_parallel_degree=BASELINE_TP),
            world_size=args.world_size,
        )
        report["recipes"][name] = {"replicated": replicated, "baseline": baseline}
    dist.destroy_process_group()
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
