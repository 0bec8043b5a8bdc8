"""One rank of a tensor-parallel run on CPU with gloo.

Launched as torchrun would (``RANK``, ``WORLD_SIZE``), it joins the store the
launcher holds at ``MASTER_ADDR``/``MASTER_PORT``.

Runs in the project's venv with a torchtitan tree (the fork or the pristine
base) and ``probes/`` on PYTHONPATH (``ranks.launch`` starts it), and writes
``<out>/rank<N>-<model>.json`` for each model: the stage the rank reached,
and the error it raised or the numbers it computed.

  launch   the TP sharding configs are set with Qwen3.5's own sharding helper
           (the path that reaches parallelize_fn with TP=4: the trainer's
           update_from_config refuses it earlier), then parallelize_fn and a
           forward pass
  compare  update_from_config, parallelize_fn, then the weights of a TP=1
           model built from the same seed, and one forward and backward pass
           on a fixed batch; the logits and every parameter's gradient are
           compared with that TP=1 model's by relative error (the backward
           runs FlexAttention's math in plain PyTorch, as FlexAttention has
           no CPU backward)

On the #2545 branch (``qwen3_5_moe``) only ``compare`` runs, with the
branch's GatedDeltaNet layers on its own PyTorch path.

Qwen3.5's GatedDeltaNet layers run FLA's Triton kernels, which have no CPU
path: a forward pass on CPU needs ``--all-full-attention``, which makes every
layer a copy of the full-attention layer (the same head counts). That variant
also has a 4,096-token vocabulary instead of 248,320: the embedding and the
output layer were most of the debug model's weights and of each run's time,
and TP's head counts do not involve them.
"""

import argparse
import contextlib
import json
import os
import sys
import time
from datetime import timedelta
from pathlib import Path

from unittest import mock

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.distributed.tensor import distribute_tensor, DTensor
from torch.nn.attention import sdpa_kernel, SDPBackend

from qwen35_tp import (
    call_moe_branch_parallelize_fn,
    call_parallelize_fn,
    configure,
    cpu_friendly_moe_branch,
    forward,
    is_moe_branch,
    meta_model_on_cpu_mesh,
    moe_branch_meta_model,
    only_full_attention,
    run_and_record,
    SEQ_LEN,
    SPECIAL_TOKENS,
)
from ranks import FLOAT32_EXPERTS


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("launch", "compare"), required=True)
    parser.add_argument(
        "--models", nargs="+", default=["qwen3_5:debugmodel_moe"], metavar="MODEL:FLAVOR",
        help="run each in turn in the same process group",
    )
    parser.add_argument("--all-full-attention", action="store_true")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--pg-timeout", type=int, default=120)
    return parser.parse_args()


CPU_VARIANT_VOCAB_SIZE = 4096


def model_spec(model_name: str, flavor: str, *, all_full_attention: bool):
    import importlib

    spec = importlib.import_module(f"torchtitan.models.{model_name}").model_registry(flavor)
    if all_full_attention and model_name == "qwen3_5":
        only_full_attention(spec.model)
        spec.model.vocab_size = CPU_VARIANT_VOCAB_SIZE
        spec.model.tok_embeddings.num_embeddings = CPU_VARIANT_VOCAB_SIZE
        spec.model.lm_head.out_features = CPU_VARIANT_VOCAB_SIZE
    return spec


def logits_of(model, tokens: torch.Tensor, model_name: str) -> torch.Tensor:
    """The full logits, whether the output layer is sharded or not."""
    kwargs = {"special_tokens": SPECIAL_TOKENS} if model_name == "qwen3_5" else {}
    logits = forward(model, tokens, **kwargs)
    return logits.full_tensor() if isinstance(logits, DTensor) else logits


# Module names that activation checkpointing and torch.compile insert.
WRAPPER_NAMES = ("_checkpoint_wrapped_module.", "_orig_mod.")


def unwrapped(name: str) -> str:
    """A parameter's name as in the unwrapped model."""
    for wrapper in WRAPPER_NAMES:
        name = name.replace(wrapper, "")
    return name


def load_full_weights(model: torch.nn.Module, reference: torch.nn.Module) -> None:
    """Give every rank its shard of the TP=1 model's weights and buffers."""
    full = dict(reference.named_parameters()) | dict(reference.named_buffers())
    with torch.no_grad():
        for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
            source = full[unwrapped(name)]
            if isinstance(tensor, DTensor):
                shard = distribute_tensor(
                    source, tensor.device_mesh, tensor.placements, src_data_rank=None
                )
                tensor.to_local().copy_(shard.to_local())
            else:
                tensor.copy_(source)


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """||actual - expected|| / ||expected||: gradients of these losses are
    ~1e-6, so an absolute tolerance cannot tell a wrong factor."""
    expected = expected.detach().float()
    return ((actual.detach().float() - expected).norm() / expected.norm()).item()


def worst_relative_error(actual: dict, expected: dict) -> list:
    """``[name, error]`` of the tensor of ``expected`` that ``actual``
    misses by the most, relatively."""
    assert actual.keys() == expected.keys(), actual.keys() ^ expected.keys()
    errors = {name: relative_error(actual[name], expected[name]) for name in expected}
    name = max(errors, key=errors.get)
    return [name, errors[name]]


def causal_math_attention(q, k, v, *, scale, enable_gqa, return_aux, **_):
    """``FlexAttention.compiled_flex_attn`` for one causal document, in plain
    PyTorch (SDPA's math backend), which has a CPU backward (FlexAttention
    has none). Every batch here is one document per sequence starting at
    position 0, where the document mask is the causal mask."""
    assert not return_aux.lse
    with sdpa_kernel([SDPBackend.MATH]):
        out = F.scaled_dot_product_attention(
            q, k, v, scale=scale, is_causal=True, enable_gqa=enable_gqa
        )
    return out, None


def math_attention():
    """Swap FlexAttention's kernel for ``causal_math_attention``."""
    from torchtitan.models.common.attention import FlexAttention

    return mock.patch.object(
        FlexAttention, "compiled_flex_attn", staticmethod(causal_math_attention)
    )


def experts_precision(variant: str):
    """For ``float32-experts``, the MoE experts' grouped GEMMs keep float32
    (they cast their operands with ``Tensor.bfloat16``): the variant shows
    what TP alone changes, below the bfloat16 floor."""
    if variant != FLOAT32_EXPERTS:
        return contextlib.nullcontext()
    return mock.patch.object(torch.Tensor, "bfloat16", lambda tensor: tensor)


def gradients(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {
        unwrapped(name): p.grad.full_tensor() if isinstance(p.grad, DTensor) else p.grad
        for name, p in model.named_parameters()
        if p.grad is not None
    }


def compare_with_tp1(
    model: torch.nn.Module,
    reference: torch.nn.Module,
    logits,
    report: dict,
    *,
    backward=contextlib.nullcontext,
) -> None:
    """Give ``model`` the TP=1 ``reference``'s weights, compare their
    ``logits(module)``, then every gradient after one backward pass of the
    same loss (run inside ``backward()``); record both relative errors."""
    load_full_weights(model, reference)
    report["stage"] = "forward"
    with torch.no_grad():
        expected, actual = logits(reference), logits(model)
    report["logits_shape"] = list(actual.shape)
    report["logit_error"] = relative_error(actual, expected)
    report["stage"] = "backward"
    with backward():
        for each in (reference, model):
            logits(each).float().pow(2).mean().backward()
    report["worst_grad_error"] = worst_relative_error(gradients(model), gradients(reference))


def compare_on_moe_branch(args: argparse.Namespace, report: dict) -> None:
    """``compare`` on the #2545 branch: ``qwen3_5_moe`` with every layer as
    the flavor has it, its GatedDeltaNet layers on the tree's own PyTorch
    path (FLA's kernels have no CPU one), sharded by the branch's
    ``parallelize_fn`` (TP only: no data parallelism on these ranks)."""
    import torchtitan
    from torchtitan.models import qwen3_5_moe

    report["torchtitan"] = torchtitan.__file__
    world_size = dist.get_world_size()

    def build_spec():
        spec = qwen3_5_moe.model_registry(args.flavor)
        spec.model.layer.deltanet.fla_backend = "torch_naive"
        return spec

    spec = build_spec()
    report["stage"] = "parallelize"
    with moe_branch_meta_model(spec, tp=world_size, world_size=world_size) as (
        model, parallel_dims
    ):
        call_moe_branch_parallelize_fn(spec, model, parallel_dims=parallel_dims)
    model.to_empty(device="cpu")

    torch.manual_seed(1234)
    reference = build_spec().model.build()
    reference.init_weights(buffer_device=torch.device("cpu"))
    torch.manual_seed(0)
    tokens = torch.randint(0, 1000, (1, SEQ_LEN))

    def logits(each: torch.nn.Module) -> torch.Tensor:
        out = each(tokens)
        return out.full_tensor() if isinstance(out, DTensor) else out

    with cpu_friendly_moe_branch(model), cpu_friendly_moe_branch(reference), \
            experts_precision(args.variant):
        compare_with_tp1(model, reference, logits, report)


def run(args: argparse.Namespace, report: dict) -> None:
    if is_moe_branch():
        if (args.mode, args.model) != ("compare", "qwen3_5_moe"):
            raise NotImplementedError(
                "only compare of qwen3_5_moe runs on the #2545 branch"
            )
        compare_on_moe_branch(args, report)
        return
    import torchtitan
    from torchtitan.config import ParallelismConfig, TrainingConfig
    from torchtitan.distributed.utils import set_spmd_backend

    report["torchtitan"] = torchtitan.__file__
    world_size = dist.get_world_size()
    set_spmd_backend("partial_dtensor")
    parallelism = ParallelismConfig(
        tensor_parallel_degree=world_size, spmd_backend="partial_dtensor"
    )
    spec = model_spec(args.model, args.flavor, all_full_attention=args.all_full_attention)
    report["stage"] = "config"
    configure(spec, parallelism, skip_config_check=args.mode == "launch")

    report["stage"] = "parallelize"
    # compare: float32 parameters in FSDP's mixed precision, as in the
    # TP=1 model; launch: the trainer's default (bfloat16).
    training = TrainingConfig(
        mixed_precision_param="float32" if args.mode == "compare" else "bfloat16"
    )
    with meta_model_on_cpu_mesh(spec, parallelism, world_size=world_size) as (
        model, parallel_dims
    ):
        call_parallelize_fn(spec, model, parallelism=parallelism,
                            parallel_dims=parallel_dims, training=training)
    model.to_empty(device="cpu")

    torch.manual_seed(0)
    # One sequence: on 0.3.0 (batch, sequence) activations, only a batch of
    # 1 leaves the sequence-parallel all-gather an AsyncCollectiveTensor.
    tokens = torch.randint(0, 1000, (1, SEQ_LEN))
    if args.mode == "launch":
        report["stage"] = "forward"
        model.init_states(buffer_device=torch.device("cpu"))
        with torch.no_grad():
            logits_of(model, tokens, args.model)
        return

    torch.manual_seed(1234)
    reference = model_spec(
        args.model, args.flavor, all_full_attention=args.all_full_attention
    ).model.build()
    reference.init_states(buffer_device=torch.device("cpu"))
    with experts_precision(args.variant):
        compare_with_tp1(
            model, reference, lambda each: logits_of(each, tokens, args.model), report,
            backward=math_attention,
        )


def serve(run, args: argparse.Namespace, *, rank: int) -> int:
    """Join the process group and ``run(args, report)`` for each of
    ``args.models`` in turn, writing each report; exit at the first error."""
    import torchtitan

    timeout = timedelta(seconds=args.pg_timeout)
    store = dist.TCPStore(
        os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False,
        timeout=timeout,
    )
    dist.init_process_group(
        "gloo", store=store, rank=rank, world_size=int(os.environ["WORLD_SIZE"]),
        timeout=timeout,
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    # One process group for every model: the launch and imports are paid once.
    # An entry is MODEL:FLAVOR, or MODEL:FLAVOR:VARIANT for a worker that has
    # variants.
    for entry in args.models:
        model_name, flavor, variant = (entry.split(":") + [""])[:3]
        report: dict = {"rank": rank, "model": model_name, "flavor": flavor,
                        "variant": variant, "torchtitan": torchtitan.__file__}
        started = time.monotonic()
        failed = run_and_record(
            run,
            argparse.Namespace(
                **{**vars(args), "model": model_name, "flavor": flavor, "variant": variant}
            ),
            report,
        )
        report["seconds"] = round(time.monotonic() - started, 2)
        name = "-".join(filter(None, (model_name, variant)))
        (out / f"rank{rank}-{name}.json").write_text(json.dumps(report))
        if failed:
            print(f"rank {rank}: {report['error_type']}: {report['error']}", file=sys.stderr)
            os._exit(1)  # no teardown collective that could wait on a peer
    dist.destroy_process_group()
    return 0


def main() -> int:
    return serve(run, parse_args(), rank=int(os.environ["RANK"]))


if __name__ == "__main__":
    sys.exit(main())
