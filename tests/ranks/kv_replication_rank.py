"""One rank of a TP run with KV-head replication, compared with TP=1.

Launched like ``tp_rank.py`` (``RANK``, ``WORLD_SIZE``, a store at
``MASTER_ADDR``/``MASTER_PORT``); writes ``<out>/rank<N>-<model>.json``.

Every model runs on ``--backend`` at TP=4 (or the variant's ``tpN``) with
FSDP over the other ranks, with ``replicate_kv_heads`` on every attention
config when TP exceeds the 2 KV heads. Its parameters are the standard
colwise ones, so a TP=1 model built from the same config gives every rank
its shard of the same weights. An entry is ``MODEL:FLAVOR:VARIANT``, the
variant ``+``-separated options for what the recipes run:

  bf16      bf16 parameters with float32 gradient reduction (FSDP's mixed
            precision) and the stock bf16 MoE experts; otherwise float32
            with float32 experts, as the reference
  ac        full activation checkpointing
  compile   the blocks compiled with inductor
  tpN       TP degree N instead of 4
  control   the negative control: the backward of the K/V gather keeps each
            rank's own gradient instead of summing the ranks that share a
            KV head

It compares the logits (no grad), then runs three steps of loss, backward,
the trainer's gradient clipping and AdamW: the loss of every step, every
gradient of the first and every parameter after the third are compared with
the TP=1 model's (float32, float32 experts) by relative error per tensor.
The variants ``dcp-save-tpN`` and ``dcp-load-tpN`` instead save the TP=1
weights with DCP at TP=N, or load at TP=N the ones saved at another TP and
compare them with the TP=1 weights.

FlexAttention has no backward on CPU, so training runs the same attention
math in plain PyTorch (``tp_rank.math_attention``). Qwen3.5's GatedDeltaNet
layers run FLA's Triton kernels, which have no CPU path, so every layer is
full attention (``tp_rank.model_spec``).

"""

import argparse
import contextlib
import os
import sys
from pathlib import Path
from unittest import mock

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.distributed.fsdp import FSDPModule
from torch.distributed.tensor import DTensor, Partial, Replicate

from qwen35_tp import call_parallelize_fn, configure, meta_model_on_cpu_mesh, SEQ_LEN
from ranks import FLOAT32_EXPERTS
from tp_rank import (
    experts_precision,
    gradients,
    load_full_weights,
    logits_of,
    math_attention,
    model_spec,
    relative_error,
    serve,
    unwrapped,
    worst_relative_error,
)

N_KV_HEADS = 2
N_LAYERS = 2
STEPS = 3
LEARNING_RATE = 1e-3
MAX_GRAD_NORM = 1.0
KV_WEIGHTS = ("wk.weight", "wv.weight")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", required=True,
                        metavar="MODEL:FLAVOR[:VARIANT]")
    parser.add_argument("--backend", default="spmd_types",
                        choices=("spmd_types", "partial_dtensor"))
    parser.add_argument("--checkpoints", type=Path,
                        help="dcp-save-tpN writes saved-at-tpN here; dcp-load-tpN "
                             "reads the one saved at another TP degree")
    parser.add_argument("--out", required=True)
    parser.add_argument("--pg-timeout", type=int, default=120)
    return parser.parse_args()


def options(variant: str) -> dict:
    """The options of a compare variant (module docstring)."""
    tokens = set(filter(None, variant.split("+")))
    tp = [int(t[2:]) for t in tokens if t.startswith("tp") and t[2:].isdigit()]
    known = {"bf16", "ac", "compile", "control"} | {f"tp{n}" for n in tp}
    assert tokens <= known, f"unknown variant options: {sorted(tokens - known)}"
    return {
        "tp": tp[0] if tp else 4,
        "bf16": "bf16" in tokens,
        "ac": "ac" in tokens,
        "compile": "compile" in tokens,
        "control": "control" in tokens,
    }


def model_variant(model_name: str, flavor: str, *, replicate: bool):
    """Qwen3.5's CPU variant (every layer full attention, 2 KV heads kept,
    a smaller vocabulary), cut to its first ``N_LAYERS`` layers, with
    ``replicate_kv_heads`` set to ``replicate``."""
    spec = model_spec(model_name, flavor, all_full_attention=True)
    # Two layers (both MoE) show what four do, in half the time.
    spec.model.layers = spec.model.layers[:N_LAYERS]
    for layer in spec.model.layers:
        assert layer.attention.n_kv_heads == N_KV_HEADS
        layer.attention.replicate_kv_heads = replicate
    return spec


@contextlib.contextmanager
def without_replica_grad_reduction(backend: str):
    """The K/V gather's backward keeps each rank's own gradient: spmd_types
    gathers to Invariant instead of Replicate (backward: a local chunk, not a
    reduce-scatter); DTensor marks the gathered gradient Replicate instead
    of Partial."""
    if backend == "spmd_types":
        import spmd_types as spmd

        all_gather = spmd.all_gather

        def gather_to_invariant(x, axis, **kwargs):
            return all_gather(x, axis, **{**kwargs, "dst": spmd.I})

        with mock.patch.object(spmd, "all_gather", gather_to_invariant):
            yield
        return
    to_local = DTensor.to_local

    def replicated_grads(self, *, grad_placements=None):
        if grad_placements is not None:
            grad_placements = [Replicate() if isinstance(p, Partial) else p
                               for p in grad_placements]
        return to_local(self, grad_placements=grad_placements)

    with mock.patch.object(DTensor, "to_local", replicated_grads):
        yield


def full_logits(model, tokens: torch.Tensor, model_name: str, parallel_dims=None):
    """The logits over the whole vocabulary. Under ``spmd_types`` the output
    layer's local logits are sharded over TP: they are gathered as an
    Invariant, whose gradient each rank keeps (every rank computes the same
    loss from them)."""
    logits = logits_of(model, tokens, model_name)
    if parallel_dims is None or parallel_dims.spmd_backend != "spmd_types":
        return logits
    if parallel_dims.tp == 1:
        return logits
    import spmd_types as spmd

    return spmd.all_gather(
        logits, parallel_dims.get_mesh("tp").get_group(),
        src=spmd.S(logits.ndim - 1), dst=spmd.I,
    )


@contextlib.contextmanager
def unsharded():
    """For the TP=1 reference, a plain module: 0.3.0's Qwen3.5 annotates its
    inputs' SPMD types under ``spmd_types``, which needs a mesh."""
    from torchtitan.distributed.utils import get_spmd_backend, set_spmd_backend

    backend = get_spmd_backend()
    set_spmd_backend("partial_dtensor")
    try:
        yield
    finally:
        set_spmd_backend(backend)


def loss_of(model, tokens: torch.Tensor, model_name: str, parallel_dims=None):
    logits = full_logits(model, tokens, model_name, parallel_dims).float()
    labels = torch.roll(tokens.flatten(), -1)
    return F.cross_entropy(logits.reshape(labels.numel(), -1), labels)


def parameters(model) -> dict[str, torch.Tensor]:
    return {
        unwrapped(name): p.full_tensor() if isinstance(p, DTensor) else p.detach()
        for name, p in model.named_parameters()
    }


def kv_placements(model) -> list[list]:
    """Mesh, placements and global shape of each KV weight, without repeats."""
    seen = []
    for name, p in model.named_parameters():
        if name.endswith(KV_WEIGHTS):
            entry = [list(p.device_mesh.mesh_dim_names), [str(x) for x in p.placements],
                     list(p.shape)]
            if entry not in seen:
                seen.append(entry)
    return seen


def parallelized(args: argparse.Namespace, report: dict, *, tp: int,
                 bf16: bool = False, ac: bool = False, compile: bool = False):
    """The model variant at ``tp`` (FSDP over the other ranks) on
    ``args.backend``, parallelized and on CPU, weights not set; and its
    ParallelDims."""
    from torchtitan.config import CompileConfig, ParallelismConfig, TrainingConfig
    from torchtitan.distributed.activation_checkpoint import FullAC
    from torchtitan.distributed.utils import set_spmd_backend

    set_spmd_backend(args.backend)
    parallelism = ParallelismConfig(
        tensor_parallel_degree=tp,
        spmd_backend=args.backend,
    )
    replicate = tp > N_KV_HEADS
    report["replicate_kv_heads"] = replicate
    spec = model_variant(args.model, args.flavor, replicate=replicate)
    report["stage"] = "config"
    configure(spec, parallelism, skip_config_check=False)

    report["stage"] = "parallelize"
    training = TrainingConfig(
        mixed_precision_param="bfloat16" if bf16 else "float32",
        mixed_precision_reduce="float32",
    )
    with meta_model_on_cpu_mesh(spec, parallelism, world_size=dist.get_world_size()) as (
        model, parallel_dims
    ):
        call_parallelize_fn(
            spec, model, parallelism=parallelism, parallel_dims=parallel_dims,
            training=training,
            ac_config=FullAC.Config() if ac else None,
            compile_config=CompileConfig(enable=compile, components=["model"]),
        )
    model.to_empty(device="cpu")
    # Gloo has no PREMUL_SUM, FSDP's reduce-scatter op for a gradient divide
    # factor: sum, then divide.
    for module in model.modules():
        if isinstance(module, FSDPModule):
            module.set_force_sum_reduction_for_comms(True)
    report["kv_placements"] = kv_placements(model)
    return model, parallel_dims


def reference_model(args: argparse.Namespace) -> torch.nn.Module:
    """The TP=1 model whose weights every run starts from."""
    torch.manual_seed(1234)
    reference = model_variant(args.model, args.flavor, replicate=False).model.build()
    reference.init_states(buffer_device=torch.device("cpu"))
    return reference


def checkpoint(args: argparse.Namespace, report: dict) -> None:
    """``dcp-save-tpN``: save the reference weights from TP=N; ``dcp-load-tpN``:
    load, at TP=N, the ones saved at another TP."""
    import torch.distributed.checkpoint as dcp

    action, tp = args.variant.rsplit("-tp", 1)
    tp = int(tp)
    model, _ = parallelized(args, report, tp=tp)
    reference = reference_model(args)
    report["stage"] = action
    if action == "dcp-save":
        load_full_weights(model, reference)
        dcp.save(model.state_dict(), checkpoint_id=args.checkpoints / f"saved-at-tp{tp}")
        return
    (folder,) = (f for f in args.checkpoints.iterdir() if f.name != f"saved-at-tp{tp}")
    report["loaded"] = folder.name
    with torch.no_grad():
        for tensor in model.parameters():
            tensor.zero_()
    dcp.load(model.state_dict(), checkpoint_id=folder)
    report["worst_param_error"] = worst_relative_error(
        parameters(model), parameters(reference)
    )


def run(args: argparse.Namespace, report: dict) -> None:
    if args.variant.startswith("dcp-"):
        checkpoint(args, report)
    else:
        compare(args, report)


def compare(args: argparse.Namespace, report: dict) -> None:
    from torchtitan.distributed.utils import clip_grad_norm_, get_spmd_context

    run_options = options(args.variant)
    report["options"] = run_options
    model, parallel_dims = parallelized(
        args, report, tp=run_options["tp"], bf16=run_options["bf16"],
        ac=run_options["ac"], compile=run_options["compile"],
    )
    reference = reference_model(args)
    load_full_weights(model, reference)
    # Before any forward pass, as in the trainer: FSDP's root module keeps its
    # parameters unsharded after a forward pass without backward.
    optimizers = [torch.optim.AdamW(m.parameters(), lr=LEARNING_RATE)
                  for m in (reference, model)]
    torch.manual_seed(0)
    tokens = torch.randint(0, 1000, (1, SEQ_LEN))
    spmd_context = get_spmd_context(parallel_dims=parallel_dims)
    data_parallel_degree = parallel_dims.dp_shard * parallel_dims.dp_replicate
    # float32: the same experts' arithmetic as the reference; bf16: the
    # recipes' own.
    model_experts = (contextlib.nullcontext() if run_options["bf16"]
                     else experts_precision(FLOAT32_EXPERTS))

    report["stage"] = "forward"
    # FlexAttention's inductor lowering fails on CPU for the token-major
    # layout ("not enough values to unpack"); compiled blocks use the math.
    forward_attention = math_attention() if run_options["compile"] else contextlib.nullcontext()
    with torch.no_grad(), forward_attention:
        with experts_precision(FLOAT32_EXPERTS), unsharded():
            expected = logits_of(reference, tokens, args.model)
        with spmd_context(), model_experts:
            logits = full_logits(model, tokens, args.model, parallel_dims)
        report["logit_error"] = relative_error(logits, expected)

    report["stage"] = "train"
    control = (without_replica_grad_reduction(args.backend) if run_options["control"]
               else contextlib.nullcontext())
    report["loss_errors"] = []
    with math_attention(), control:
        for step in range(STEPS):
            with experts_precision(FLOAT32_EXPERTS), unsharded():
                expected_loss = loss_of(reference, tokens, args.model)
                expected_loss.backward()
            with spmd_context(), model_experts:
                loss = loss_of(model, tokens, args.model, parallel_dims)
                # The trainer divides by the global token count and FSDP sums
                # gradients over data parallelism (whose ranks here all see
                # the same batch).
                (loss / data_parallel_degree).backward()
            report["loss_errors"].append(relative_error(loss, expected_loss))
            if step == 0:
                report["loss"] = expected_loss.item()
                expected_grads, grads = gradients(reference), gradients(model)
                report["worst_grad_error"] = worst_relative_error(grads, expected_grads)
                report["worst_kv_grad_error"] = worst_relative_error(
                    *({n: g for n, g in d.items() if n.endswith(KV_WEIGHTS)}
                      for d in (grads, expected_grads))
                )
            torch.nn.utils.clip_grad_norm_(reference.parameters(), MAX_GRAD_NORM)
            # As the trainer calls it.
            clip_grad_norm_(list(model.parameters()), MAX_GRAD_NORM, foreach=True,
                            ep_enabled=parallel_dims.ep_enabled)
            for optimizer in optimizers:
                optimizer.step()
                optimizer.zero_grad()
    report["worst_param_error"] = worst_relative_error(
        parameters(model), parameters(reference)
    )


def main() -> int:
    args = parse_args()
    return serve(run, args, rank=int(os.environ["RANK"]))


if __name__ == "__main__":
    sys.exit(main())
