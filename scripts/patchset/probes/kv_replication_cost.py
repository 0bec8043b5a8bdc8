"""Per-rank cost of KV-head replication in the large Qwen3.5 MoE recipes;
print JSON.

Runs inside the project's venv against the torchtitan tree first on
PYTHONPATH. Each recipe pair is built on the meta device and parallelized
under a ``fake`` process group of ``--world-size`` ranks: the shipped recipe
(TP=2, whole KV heads per rank) and its replicating one (``*_tp4``,
``*_tp8``: the same recipe at a higher TP with ``replicate_kv_heads``). The
previous design of the series (each rank holding a whole KV head of
``wk``/``wv`` on a ``(kv_group, kv_replica)`` mesh, its gradient all-reduced
over the replicas) no longer exists in the tree; its figures are derived
from the replicating layout, which differs from it only in ``wk``/``wv``.

Per rank and layout, bytes:

  parameters       the rank's local shards (float32): all, non-expert, the
                   K/V projections, and the largest decoder layer's
                   non-expert parameters as FSDP all-gathers them
  tokens per step  tokens per microbatch per data-parallel rank times the
                   data-parallel degree
  sent per microbatch step:
    kv_gather      this design: per full-attention layer, K and V are each
                   all-gathered over TP in the forward, again in the
                   recomputation of full activation checkpointing, and
                   reduce-scattered in the backward; each sends (tp-1)/tp
                   of the [tokens, n_kv_heads * head_dim] output in the
                   parameter dtype
    kv_grad_all_reduce
                   the previous design: the K/V weights' gradients
                   all-reduced over the r = tp // n_kv_heads replicas (ring:
                   2(r-1)/r of the rank's gradient, reduce dtype)
    fsdp_non_expert
                   two all-gathers (parameter dtype) and one reduce-scatter
                   (reduce dtype) of the non-expert parameters, each sending
                   (f-1) times the rank's shard
    sequence_parallel
                   per layer, an all-gather and a reduce-scatter around
                   attention and around the feed-forward, forward and
                   backward, each sending (tp-1)/tp of the [tokens, dim]
                   activation in the parameter dtype
  kv_gather_peak   this design, on the default spmd_types backend: the
                   gathered K and V of one layer and their heads repeated
                   for each TP rank ([tokens, tp * head_dim], what
                   spmd_types' R -> S conversion cuts this rank's head
                   from), alive for a moment in the forward; nothing more
                   is saved for the backward than without replication
Expert parallelism is the same in every layout and left out.
"""

import argparse
import dataclasses
import json
import sys

import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor
from torch.testing._internal.distributed.fake_pg import FakeStore

from qwen35_tp import call_parallelize_fn, configure, meta_model_on_cpu_mesh

# Shipped recipe (TP=2) -> its replicating recipe.
RECIPES = {
    "qwen35_122b_a10b": "qwen35_122b_a10b_tp4",
    "qwen35_397b_a17b": "qwen35_397b_a17b_tp8",
}
KV_WEIGHTS = ("wk.weight", "wv.weight")


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
    totals = {"all": 0, "non_expert": 0, "kv": 0}
    gathered: dict[str, int] = {}
    for name, param in model.named_parameters():
        size = local_bytes(param)
        totals["all"] += size
        if ".routed_experts." in name:
            continue
        totals["non_expert"] += size
        if not name.startswith("layers."):
            continue
        if name.endswith(KV_WEIGHTS):
            totals["kv"] += size
        names = param.device_mesh.mesh_dim_names if isinstance(param, DTensor) else None
        fsdp = param.device_mesh["fsdp"].size() if "fsdp" in (names or ()) else 1
        layer = name.split(".")[1]
        gathered[layer] = gathered.get(layer, 0) + size * fsdp
    totals["gathered_layer"] = max(gathered.values())
    return totals


def parallelized(recipe, *, world_size: int):
    """The recipe's model parallelized with its own parallelism, on meta;
    and its ParallelDims."""
    from torchtitan.distributed.utils import set_spmd_backend

    # One process parallelizes several models, which the spmd_types backend
    # refuses the second time ("Expected param's DTensor mesh to be the same
    # mesh passed to fully_shard"); the shards, and so every figure here,
    # are the same under partial_dtensor.
    parallelism = dataclasses.replace(recipe.parallelism, spmd_backend="partial_dtensor")
    set_spmd_backend(parallelism.spmd_backend)
    spec = recipe.model_spec
    configure(spec, parallelism, skip_config_check=False)
    with meta_model_on_cpu_mesh(spec, parallelism, world_size=world_size) as (
        model, parallel_dims
    ):
        call_parallelize_fn(spec, model, parallelism=parallelism,
                            parallel_dims=parallel_dims, training=recipe.training)
    return model, parallel_dims


def layout(recipe, *, world_size: int) -> dict:
    """The figures of ``recipe`` as it runs (module docstring)."""
    from torchtitan.config import TORCH_DTYPE_MAP

    model, parallel_dims = parallelized(recipe, world_size=world_size)
    config = recipe.model_spec.model
    attention = [layer.attention for layer in config.layers if layer.attention is not None]
    n_kv_heads, head_dim = attention[0].n_kv_heads, attention[0].head_dim
    replicate = attention[0].replicate_kv_heads
    tp, fsdp = parallel_dims.tp, parallel_dims.dp_shard * parallel_dims.cp
    dp = parallel_dims.dp_replicate * parallel_dims.dp_shard
    param_size = TORCH_DTYPE_MAP[recipe.training.mixed_precision_param].itemsize
    sizes = parameter_bytes(model)
    tokens = tokens_per_dp_rank(recipe.training)
    kv_output = tokens * n_kv_heads * head_dim * param_size
    gathers = 2 * len(attention) * 3 if replicate and tp > n_kv_heads else 0
    return {
        "tp": tp,
        "fsdp": fsdp,
        "dp": dp,
        "replicate_kv_heads": replicate,
        "n_kv_heads": n_kv_heads,
        "full_attention_layers": len(attention),
        "parameter_bytes": sizes,
        "tokens_per_step": tokens * dp,
        "kv_gather_peak": 2 * kv_output * (n_kv_heads + tp) // n_kv_heads if gathers else 0,
        "sent_bytes": {
            "kv_gather": gathers * (tp - 1) * kv_output // tp,
            "kv_grad_all_reduce": 0,
            "fsdp_non_expert": (fsdp - 1) * sizes["non_expert"] // 4
            * (2 * param_size + TORCH_DTYPE_MAP[recipe.training.mixed_precision_reduce].itemsize),
            "sequence_parallel": len(config.layers) * 8 * (tp - 1) * tokens
            * config.dim * param_size // tp,
        },
    }


def previous_design(replicating: dict, *, reduce_size: int = 4) -> dict:
    """The replicating layout as the previous design held it: every rank a
    whole KV head of wk/wv (``tp // n_kv_heads`` times its colwise shard),
    no K/V gather, and the K/V gradients all-reduced over the replicas."""
    replicas = replicating["tp"] // replicating["n_kv_heads"]
    kv = replicating["parameter_bytes"]["kv"] * replicas
    extra = kv - replicating["parameter_bytes"]["kv"]
    sizes = {key: value + extra for key, value in replicating["parameter_bytes"].items()}
    sizes["kv"] = kv
    # The largest layer, if it is a full-attention one (an upper bound).
    sizes["gathered_layer"] = replicating["parameter_bytes"]["gathered_layer"] + (
        extra * replicating["fsdp"] // replicating["full_attention_layers"]
    )
    return {
        **replicating,
        "parameter_bytes": sizes,
        "kv_gather_peak": 0,
        "sent_bytes": {
            **replicating["sent_bytes"],
            "kv_gather": 0,
            "kv_grad_all_reduce": 2 * (replicas - 1) * (kv // 4) * reduce_size // replicas,
        },
    }


def tokens_per_dp_rank(training) -> int:
    """The tokens of one data-parallel rank's microbatch: a field on main,
    batch size times sequence length on 0.3.0."""
    tokens = getattr(training, "num_tokens_per_microbatch_per_dp_rank", None)
    return tokens if tokens is not None else training.local_batch_size * training.seq_len


def main() -> int:
    import importlib

    import torchtitan

    args = parse_args()
    try:
        config_registry = importlib.import_module("torchtitan.models.qwen3_5.config_registry")
    except ImportError as error:
        raise LookupError(f"no replicate_kv_heads recipes: {error}") from error
    missing = [name for name in RECIPES.values() if not hasattr(config_registry, name)]
    if missing:
        raise LookupError(f"no replicate_kv_heads recipes: {', '.join(missing)}")
    report = {"torchtitan": torchtitan.__file__, "world_size": args.world_size, "recipes": {}}
    dist.init_process_group("fake", store=FakeStore(), rank=0, world_size=args.world_size)
    for shipped, replicating_name in RECIPES.items():
        recipe = getattr(config_registry, replicating_name)()
        replicating = layout(recipe, world_size=args.world_size)
        report["recipes"][replicating_name] = {
            "tp2": layout(getattr(config_registry, shipped)(), world_size=args.world_size),
            "gather": replicating,
            "previous": previous_design(replicating),
        }
    dist.destroy_process_group()
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
