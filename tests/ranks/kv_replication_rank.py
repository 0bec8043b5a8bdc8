"""One rank of a TP run with KV-head replication, compared with TP=1.

Launched like ``tp_rank.py`` (``RANK``, ``WORLD_SIZE``, a store at
``MASTER_ADDR``/``MASTER_PORT``); writes ``<out>/rank<N>-<model>.json``.

Each model runs with ``replicate_kv_heads`` on every attention config, at a
TP degree above its KV head count, on the ``partial_dtensor`` backend, in
float32. A TP=1 model built from the same config takes the same weights.

  forward   logits of both models with the real FlexAttention path
  train     three steps of loss, backward, the trainer's gradient clipping
            and SGD; loss and every gradient are compared on the first step,
            every parameter after the third

FlexAttention has no backward on CPU, so ``train`` runs the same attention
math in plain PyTorch (``tp_rank.math_attention``). Every comparison is a
relative error per tensor (``tp_rank.relative_error``).

The variant ``float32-experts`` keeps the MoE experts in float32
(``tp_rank.experts_precision``). The variant ``no-replica-grad-reduction``
(``MODEL:FLAVOR:no-replica-grad-reduction``)
is the negative control: the KV weights' gradients leave the layer marked
``Replicate`` instead of ``Partial`` over ``kv_replica``, so each replica
keeps only its own ranks' contribution.

The variants ``dcp-save-tpN`` and ``dcp-load-tpN`` save the TP=1 weights
with DCP at TP=N (FSDP over the other ranks), or load at TP=N the ones
saved at another TP, with replication on when TP exceeds the 2 KV heads.
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
from torch.distributed.tensor import DTensor, Partial, Replicate, Shard

from qwen35_tp import (
    call_parallelize_fn,
    configure,
    meta_model_on_cpu_mesh,
    SEQ_LEN,
)
from tp_rank import (
    experts_precision,
    gradients,
    load_full_weights,
    logits_of,
    math_attention,
    model_spec,
    relative_error,
    serve,
    worst_relative_error,
)

STEPS = 3
LEARNING_RATE = 0.05
MAX_GRAD_NORM = 1.0
KV_WEIGHTS = ("wk.weight", "wv.weight")
NO_REPLICA_GRAD_REDUCTION = "no-replica-grad-reduction"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", required=True,
                        metavar="MODEL:FLAVOR[:VARIANT]")
    parser.add_argument("--checkpoints", type=Path,
                        help="dcp-save-tpN writes saved-at-tpN here; dcp-load-tpN "
                             "reads the one saved at another TP degree")
    parser.add_argument("--out", required=True)
    parser.add_argument("--pg-timeout", type=int, default=120)
    return parser.parse_args()


def model_variant(model_name: str, flavor: str, *, replicate: bool):
    """The spec, with ``replicate_kv_heads`` on if ``replicate``: Qwen3.5's CPU
    variant (every layer full attention, 2 KV heads kept, a smaller
    vocabulary), llama3 with separate Q/K/V projections and 2 KV heads."""
    spec = model_spec(model_name, flavor, all_full_attention=True)
    if model_name == "llama3":
        from torchtitan.models.common.feed_forward import compute_ffn_hidden_dim
        from torchtitan.models.llama3 import _build_llama3_layers

        first = spec.model.layers[0].attention
        spec.model.layers = _build_llama3_layers(
            n_layers=len(spec.model.layers),
            dim=spec.model.dim,
            n_heads=first.n_heads,
            n_kv_heads=2,
            hidden_dim=compute_ffn_hidden_dim(spec.model.dim, multiple_of=256),
            rope=first.rope,
            fuse_qkv=False,
            attn_backend="flex",
        )
    for layer in spec.model.layers:
        if layer.attention is not None:
            layer.attention.replicate_kv_heads = replicate
    return spec


@contextlib.contextmanager
def without_replica_grad_reduction():
    """Mark the KV weights' local gradients ``Replicate`` over ``kv_replica``
    (the layer asks for ``Partial``, which makes FSDP sum them)."""
    to_local = DTensor.to_local

    def replicated_grads(self, *, grad_placements=None):
        if grad_placements == (Shard(0), Partial()):
            grad_placements = (Shard(0), Replicate())
        return to_local(self, grad_placements=grad_placements)

    with mock.patch.object(DTensor, "to_local", replicated_grads):
        yield


def loss_of(model, tokens: torch.Tensor, model_name: str) -> torch.Tensor:
    logits = logits_of(model, tokens, model_name).float()
    labels = torch.roll(tokens.flatten(), -1)
    return F.cross_entropy(logits.reshape(labels.numel(), -1), labels)


def parameters(model) -> dict[str, torch.Tensor]:
    return {
        name: p.full_tensor() if isinstance(p, DTensor) else p.detach()
        for name, p in model.named_parameters()
    }


def kv_placements(model) -> list[list]:
    """Mesh, placements and local shape of each KV weight, without repeats."""
    seen = []
    for name, p in model.named_parameters():
        if name.endswith(KV_WEIGHTS):
            entry = [list(p.device_mesh.mesh_dim_names), [str(x) for x in p.placements],
                     list(p.to_local().shape)]
            if entry not in seen:
                seen.append(entry)
    return seen


def local_kv_weights(model) -> dict[str, list[float]]:
    """The first values of each rank's replicated KV weights, to compare
    replicas (the vision encoder's are plainly sharded)."""
    return {
        name: p.to_local().flatten()[:8].tolist()
        for name, p in model.named_parameters()
        if "kv_replica" in p.device_mesh.mesh_dim_names
    }


def parallelized(
    args: argparse.Namespace, report: dict, *, tp: int, replicate: bool
):
    """The model variant at ``tp`` (FSDP over the other ranks) on the
    ``partial_dtensor`` backend, parallelized and on CPU, weights not set."""
    import torchtitan
    from torchtitan.config import ParallelismConfig, TrainingConfig
    from torchtitan.distributed.utils import set_spmd_backend

    report["torchtitan"] = torchtitan.__file__
    world_size = dist.get_world_size()
    set_spmd_backend("partial_dtensor")
    parallelism = ParallelismConfig(
        tensor_parallel_degree=tp, spmd_backend="partial_dtensor"
    )
    spec = model_variant(args.model, args.flavor, replicate=replicate)
    report["stage"] = "config"
    configure(spec, parallelism, skip_config_check=False)

    report["stage"] = "parallelize"
    training = TrainingConfig(mixed_precision_param="float32")
    with meta_model_on_cpu_mesh(spec, parallelism, world_size=world_size) as (
        model, parallel_dims
    ):
        call_parallelize_fn(spec, model, parallelism=parallelism,
                            parallel_dims=parallel_dims, training=training)
    model.to_empty(device="cpu")
    report["kv_placements"] = kv_placements(model)
    return model


def reference_model(args: argparse.Namespace) -> torch.nn.Module:
    """The TP=1 model whose weights every run starts from."""
    torch.manual_seed(1234)
    reference = model_variant(args.model, args.flavor, replicate=False).model.build()
    reference.init_states(buffer_device=torch.device("cpu"))
    return reference


def checkpoint(args: argparse.Namespace, report: dict) -> None:
    """``dcp-save-tpN``: save the reference weights from TP=N (FSDP over the
    other ranks); ``dcp-load-tpN``: load, at TP=N, the ones saved at another
    TP. KV heads are replicated where TP exceeds them."""
    import torch.distributed.checkpoint as dcp

    action, tp = args.variant.rsplit("-tp", 1)
    tp = int(tp)
    replicate = tp > 2
    report["replicate_kv_heads"] = replicate
    model = parallelized(args, report, tp=tp, replicate=replicate)
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
    loaded, expected = parameters(model), parameters(reference)
    assert loaded.keys() == expected.keys(), loaded.keys() ^ expected.keys()
    report["max_abs_param_diff"] = max(
        (loaded[name] - expected[name]).abs().max().item() for name in expected
    )
    metadata = dcp.FileSystemReader(folder).read_metadata()
    report["saved_kv_shapes"] = decoder_kv_shapes(
        (name, meta.size) for name, meta in metadata.state_dict_metadata.items()
    )
    report["logical_kv_shapes"] = decoder_kv_shapes(
        (name, p.shape) for name, p in reference.named_parameters()
    )


def decoder_kv_shapes(shapes) -> list[tuple]:
    """The distinct shapes of the decoder layers' KV weights among
    ``(name, shape)`` pairs."""
    return sorted({
        tuple(shape) for name, shape in shapes
        if name.startswith("layers.") and name.endswith(KV_WEIGHTS)
    })


def run(args: argparse.Namespace, report: dict) -> None:
    if args.variant.startswith("dcp-"):
        checkpoint(args, report)
    else:
        compare(args, report)


def compare(args: argparse.Namespace, report: dict) -> None:
    from torchtitan.distributed.utils import clip_grad_norm_

    model = parallelized(args, report, tp=dist.get_world_size(), replicate=True)
    reference = reference_model(args)
    load_full_weights(model, reference)
    # Before any forward pass, as in the trainer: FSDP's root module keeps its
    # parameters unsharded after a forward pass without backward.
    optimizers = [torch.optim.SGD(m.parameters(), lr=LEARNING_RATE)
                  for m in (reference, model)]
    torch.manual_seed(0)
    tokens = torch.randint(0, 1000, (1, SEQ_LEN))

    report["stage"] = "forward"
    with torch.no_grad(), experts_precision(args.variant):
        expected = logits_of(reference, tokens, args.model)
        report["logit_error"] = relative_error(
            logits_of(model, tokens, args.model), expected
        )

    report["stage"] = "train"
    control = (without_replica_grad_reduction
               if args.variant == NO_REPLICA_GRAD_REDUCTION else contextlib.nullcontext)
    with math_attention(), experts_precision(args.variant):
        for step in range(STEPS):
            expected_loss = loss_of(reference, tokens, args.model)
            expected_loss.backward()
            with control():
                loss = loss_of(model, tokens, args.model)
                loss.backward()
            if step == 0:
                report["loss"] = expected_loss.item()
                report["loss_error"] = relative_error(loss, expected_loss)
                expected_grads, grads = gradients(reference), gradients(model)
                report["worst_grad_error"] = worst_relative_error(grads, expected_grads)
                report["worst_kv_grad_error"] = worst_relative_error(
                    *({n: g for n, g in d.items() if n.endswith(KV_WEIGHTS)}
                      for d in (grads, expected_grads))
                )
            expected_norm = torch.nn.utils.clip_grad_norm_(
                reference.parameters(), MAX_GRAD_NORM
            )
            norm = clip_grad_norm_(list(model.parameters()), MAX_GRAD_NORM)
            report.setdefault("grad_norms", []).append(expected_norm.item())
            report.setdefault("grad_norm_errors", []).append(
                relative_error(norm.full_tensor() if isinstance(norm, DTensor) else norm,
                               expected_norm)
            )
            for optimizer in optimizers:
                optimizer.step()
                optimizer.zero_grad()
    report["worst_param_error"] = worst_relative_error(
        parameters(model), parameters(reference)
    )
    report["local_kv_weights"] = local_kv_weights(model)


def main() -> int:
    args = parse_args()
    return serve(run, args, rank=int(os.environ["RANK"]))


if __name__ == "__main__":
    sys.exit(main())
