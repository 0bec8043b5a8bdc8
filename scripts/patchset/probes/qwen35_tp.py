"""Run tensor-parallel scenarios on Qwen3.5 in this process; print JSON.

Runs inside the project's virtual environment, against whichever torchtitan
tree is first on PYTHONPATH (the pristine base or the patched fork). The
scenarios run in order, each on a freshly built model under its own ``fake``
process group (which gives any world size on one CPU process), so one import
of torchtitan serves them all. Each scenario is a JSON object with ``tp``,
``stage`` and, optionally, ``skip_config_check`` and ``all_full_attention``.

Stages, each including the ones before it:
  config       ``update_from_config`` (the trainer's config-time check)
  parallelize  the model spec's ``parallelize_fn`` on the meta-device model
  forward      materialize on CPU and run one forward pass

``skip_config_check`` sets the TP sharding configs with the model's own
sharding helper instead of ``update_from_config``, which is how a caller that
builds its own trainer reaches ``parallelize_fn``. ``all_full_attention``
replaces the GatedDeltaNet layers with copies of the full-attention layer
(same head counts): FLA's Triton kernels have no CPU path, so a forward pass
on CPU needs it.
"""

import argparse
import contextlib
import copy
import inspect
import json
import sys
import time
import traceback
import types
from pathlib import Path
from unittest import mock

import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor
from torch.testing._internal.distributed.fake_pg import FakeStore

STAGES = ("config", "parallelize", "forward")
SEQ_LEN = 32
SPECIAL_TOKENS = {"image_id": 248_000, "video_id": 248_001}


def parse_args() -> tuple[str, list[argparse.Namespace]]:
    """The flavor, and one namespace per scenario."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flavor", default="debugmodel_moe")
    parser.add_argument("scenarios", nargs="+", type=json.loads, metavar="SCENARIO")
    args = parser.parse_args()
    scenarios = []
    for scenario in args.scenarios:
        if scenario.get("stage") not in STAGES or not isinstance(scenario.get("tp"), int):
            parser.error(f"a scenario needs an integer tp and a stage in {STAGES}: {scenario}")
        scenarios.append(argparse.Namespace(
            flavor=args.flavor,
            tp=scenario["tp"],
            stage=scenario["stage"],
            skip_config_check=scenario.get("skip_config_check", False),
            all_full_attention=scenario.get("all_full_attention", False),
        ))
    return args.flavor, scenarios


def only_full_attention(model_config) -> None:
    """Every GatedDeltaNet layer becomes a copy of the first full-attention
    layer; a model without such layers is left as it is."""
    full = next(layer for layer in model_config.layers if layer.attention is not None)
    for layer in model_config.layers:
        if getattr(layer, "delta_net", None) is not None:
            layer.attention = copy.deepcopy(full.attention)
            layer.delta_net = None


def where(error: BaseException) -> str:
    frame = traceback.extract_tb(error.__traceback__)[-1]
    for marker in ("/site-packages/", "/torchtitan/"):
        if marker in frame.filename:
            return f"{frame.filename.rsplit(marker, 1)[-1]}:{frame.lineno}"
    return f"{Path(frame.filename).name}:{frame.lineno}"


def is_token_major(model) -> bool:
    """Whether the decoder layers take ``*_TD`` (tokens, dim) activations, as
    on upstream main, rather than (batch, sequence, dim), as in 0.3.0. Not
    every model names them at the top of a layer (kimi_k2_7's are in its
    MoE)."""
    return any(
        name.endswith("_TD")
        for module in model.layers.modules()
        for name in inspect.signature(type(module).forward).parameters
    )


def forward(model, tokens: torch.Tensor, **model_kwargs) -> torch.Tensor:
    """One forward pass over ``tokens`` (batch, sequence) from position 0; a
    token-major model gets the batch's one sequence as a flat token list."""
    if is_token_major(model):
        tokens = tokens.flatten()
    positions = torch.arange(tokens.shape[-1])
    if tokens.dim() == 2:
        positions = positions.unsqueeze(0)
    return model(
        tokens,
        attention_masks=model.get_attention_masks(positions),
        positions=positions,
        **model_kwargs,
    )


def run_and_record(run, args: argparse.Namespace, report: dict) -> bool:
    """``run(args, report)``; record its outcome in report. True if it raised."""
    try:
        run(args, report)
    except Exception as error:  # noqa: BLE001 - the report is the point
        report["outcome"] = "error"
        report["error_type"] = type(error).__name__
        report["error"] = str(error)
        report["raised_at"] = where(error)
        report["traceback"] = traceback.format_exc(limit=-12)
        return True
    report["outcome"] = "ok"
    return False


def set_sharding_config(model_config) -> None:
    """The model's own sharding helper, without sequence or expert parallelism
    (upstream main added the ``enable_sp`` argument)."""
    from torchtitan.models.qwen3_5.sharding import set_qwen35_sharding_config

    options = {"enable_ep": False}
    if "enable_sp" in inspect.signature(set_qwen35_sharding_config).parameters:
        options["enable_sp"] = False
    set_qwen35_sharding_config(model_config, **options)


def configure(spec, parallelism, *, skip_config_check: bool) -> None:
    """The trainer's ``update_from_config``, or only the model's own sharding
    helper (how a caller that builds its own trainer reaches parallelize_fn)."""
    if skip_config_check:
        set_sharding_config(spec.model)
    else:
        spec.model.update_from_config(config=types.SimpleNamespace(parallelism=parallelism))


@contextlib.contextmanager
def meta_model_on_cpu_mesh(spec, parallelism, *, world_size: int):
    """The spec's model on the meta device, and ParallelDims with a CPU mesh
    of ``world_size`` ranks (the device type stays CPU inside the block)."""
    from torchtitan.distributed import ParallelDims

    with mock.patch("torchtitan.distributed.parallel_dims.device_type", "cpu"):
        parallel_dims = ParallelDims.from_config(parallelism, world_size)
        parallel_dims.build_mesh()
        with torch.device("meta"):
            model = spec.model.build()
        yield model, parallel_dims


def call_parallelize_fn(
    spec, model, *, parallelism, parallel_dims, training=None, ac_config=None,
    compile_config=None,
) -> None:
    """The model spec's ``parallelize_fn`` with the trainer's defaults (or
    the given training, activation checkpointing and compile configs)."""
    from torchtitan.config import CompileConfig, TrainingConfig

    spec.parallelize_fn(
        model,
        parallel_dims=parallel_dims,
        training=training or TrainingConfig(),
        parallelism=parallelism,
        compile_config=compile_config or CompileConfig(),
        ac_config=ac_config,
        dump_folder="",
    )


def record_parallelize(report: dict, model, parallelize) -> None:
    """Call ``parallelize()``; record its wall time and how many parameters
    of ``model`` became DTensors, also when it raises."""
    started = time.perf_counter()
    try:
        parallelize()
    finally:
        report["parallelize_seconds"] = round(time.perf_counter() - started, 4)
        report["dtensor_parameters"] = sum(
            isinstance(p, DTensor) for p in model.parameters()
        )


def run(args: argparse.Namespace, report: dict) -> None:
    import torchtitan
    from torchtitan.config import ParallelismConfig
    from torchtitan.distributed.utils import set_spmd_backend
    from torchtitan.models import qwen3_5

    report["torchtitan"] = torchtitan.__file__
    backend = "partial_dtensor"
    set_spmd_backend(backend)
    spec = qwen3_5.model_registry(args.flavor)
    if args.all_full_attention:
        only_full_attention(spec.model)
    parallelism = ParallelismConfig(
        tensor_parallel_degree=args.tp, spmd_backend=backend
    )

    report["stage"] = "config"
    configure(spec, parallelism, skip_config_check=args.skip_config_check)
    if args.stage == "config":
        return

    report["stage"] = "parallelize"
    with meta_model_on_cpu_mesh(spec, parallelism, world_size=args.tp) as (
        model, parallel_dims
    ):
        record_parallelize(report, model, lambda: call_parallelize_fn(
            spec, model, parallelism=parallelism, parallel_dims=parallel_dims
        ))
        if args.stage == "parallelize":
            return

        report["stage"] = "forward"
        model.to_empty(device="cpu")
        with torch.no_grad():
            model.init_states(buffer_device=torch.device("cpu"))
            tokens = torch.randint(0, 1000, (1, SEQ_LEN))
            logits = forward(model, tokens, special_tokens=SPECIAL_TOKENS)
        report["logits_shape"] = list(logits.shape)


def is_moe_branch() -> bool:
    """Whether the tree is the Qwen3.5-MoE branch of #2545 (``qwen3_5_moe``,
    TP applied by ``apply_non_moe_tp``) rather than 0.3.0 or later."""
    import importlib.util

    return importlib.util.find_spec("torchtitan.models.qwen3_5") is None


@contextlib.contextmanager
def cpu_friendly_moe_branch(model):
    """What a CPU forward pass of the branch's model needs, and no GPU does:
    its full-attention layers run SDPA on local tensors (the tree's own
    wrapper for backends without DTensor support; CPU SDPA has none), and
    ``torch.histc``, which has no CPU kernel for integers, counts the MoE
    router's choices as floats."""
    from torchtitan.models.qwen3_5_moe.parallelize import _DTensorSafeInnerAttention

    for block in model.layers.values():
        inner = getattr(block.attn, "inner_attention", None)
        if inner is not None and not isinstance(inner, _DTensorSafeInnerAttention):
            block.attn.inner_attention = _DTensorSafeInnerAttention(inner)
    histc = torch.histc

    def histc_of_floats(values, *args, **kwargs):
        return histc(values.float(), *args, **kwargs).to(values.dtype)

    with mock.patch.object(torch, "histc", histc_of_floats):
        yield


@contextlib.contextmanager
def moe_branch_meta_model(spec, *, tp: int, world_size: int):
    """The branch's model on the meta device, and ParallelDims with a CPU
    mesh of ``world_size`` ranks (data-parallel sharding on the rest)."""
    from torchtitan.distributed import ParallelDims

    with mock.patch("torchtitan.distributed.parallel_dims.device_type", "cpu"):
        parallel_dims = ParallelDims(
            dp_replicate=1, dp_shard=world_size // tp, cp=1, tp=tp, pp=1, ep=1, etp=1,
            world_size=world_size,
        )
        parallel_dims.build_mesh()
        with torch.device("meta"):
            model = spec.model.build()
        yield model, parallel_dims


def call_moe_branch_parallelize_fn(spec, model, *, parallel_dims) -> None:
    """The branch's ``parallelize_fn`` with the trainer's defaults."""
    from torchtitan.config import (
        ActivationCheckpointConfig,
        CompileConfig,
        ParallelismConfig,
        TrainingConfig,
    )
    from torchtitan.protocols.model_converter import ModelConvertersContainer

    spec.parallelize_fn(
        model,
        parallel_dims=parallel_dims,
        training=TrainingConfig(),
        model_converters=ModelConvertersContainer.Config(),
        parallelism=ParallelismConfig(
            tensor_parallel_degree=parallel_dims.tp,
            data_parallel_shard_degree=parallel_dims.dp_shard,
        ),
        compile_config=CompileConfig(),
        ac_config=ActivationCheckpointConfig(mode="none"),
        dump_folder="",
    )


def run_on_moe_branch(args: argparse.Namespace, report: dict) -> None:
    """The scenario on the #2545 branch, which has no config-time stage: the
    trainer's next step after building the model is ``parallelize_fn``."""
    import torchtitan
    from torchtitan.models import qwen3_5_moe

    report["torchtitan"] = torchtitan.__file__
    spec = qwen3_5_moe.model_registry(args.flavor)
    # FLA's Triton kernels have no CPU path; the tree's own PyTorch one does.
    spec.model.layer.deltanet.fla_backend = "torch_naive"
    report["stage"] = "parallelize"
    with moe_branch_meta_model(spec, tp=args.tp, world_size=args.tp) as (
        model, parallel_dims
    ):
        record_parallelize(report, model, lambda: call_moe_branch_parallelize_fn(
            spec, model, parallel_dims=parallel_dims
        ))
    if args.stage == "parallelize":
        return

    report["stage"] = "forward"
    model.to_empty(device="cpu")
    with torch.no_grad(), cpu_friendly_moe_branch(model):
        model.init_weights(buffer_device=torch.device("cpu"))
        logits = model(torch.randint(0, 1000, (1, SEQ_LEN)))
    report["logits_shape"] = list(logits.shape)


def scenario_report(args: argparse.Namespace) -> dict:
    report: dict = {"flavor": args.flavor, "tp": args.tp}
    dist.init_process_group("fake", store=FakeStore(), rank=0, world_size=args.tp)
    try:
        run_and_record(run_on_moe_branch if is_moe_branch() else run, args, report)
    finally:
        dist.destroy_process_group()
    return report


def main() -> int:
    import torchtitan

    flavor, scenarios = parse_args()
    reports = [scenario_report(args) for args in scenarios]
    print(json.dumps({"torchtitan": torchtitan.__file__, "flavor": flavor, "reports": reports}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
