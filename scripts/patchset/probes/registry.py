"""Read torchtitan's model registry in this process; print JSON.

Runs inside the project's virtual environment against whichever torchtitan
tree is first on PYTHONPATH.

  flavors  every model package's flavors, built on the meta device, with the
           head counts tensor parallelism shards and the TP degrees that the
           fork's rule accepts. The series provides the head counts:
           ``get_tp_sharded_head_counts(model)`` of the built model and the
           rule ``validate_tp_head_counts`` in 0.3.0, and
           ``_tp_sharded_head_counts(model_config)`` on upstream main, whose
           rule is that the degree divides every count
  recipes  every trainer recipe in the packages' ``config_registry`` modules,
           with the flavor it trains, its TP degree and, on upstream main,
           whether the check accepts that degree for the recipe's own model
           config; needs no part of the series, so it also reads the
           pristine base
"""

import argparse
import functools
import importlib
import importlib.util
import inspect
import json
import pkgutil
from unittest import mock

import torch

# Columns of the table, by the attribute a head count is exposed under.
HEAD_KINDS = {
    "n_heads": "attention",
    "n_kv_heads": "kv",
    "n_key_heads": "linear_key",
    "n_value_heads": "linear_value",
}


def model_packages() -> list[str]:
    import torchtitan.models

    return sorted(
        info.name
        for info in pkgutil.iter_modules(torchtitan.models.__path__)
        if info.ispkg
        and importlib.util.find_spec(f"torchtitan.models.{info.name}.config_registry")
    )


def flavor_table(package: object) -> dict:
    """The package's ``<name>_configs`` dict: flavor name to config builder."""
    tables = [
        value
        for name, value in vars(package).items()
        if name.endswith("_configs") and isinstance(value, dict)
    ]
    if len(tables) != 1:
        raise LookupError(f"{package.__name__} has {len(tables)} *_configs tables")
    return tables[0]


def head_kind(count) -> str:
    if count.fqn.split(".")[0].startswith("vision"):
        return "vision"
    return HEAD_KINDS[count.name]


def accepts(counts, degree: int, *, model_name: str) -> bool:
    """Whether the fork's rule accepts ``degree`` for these head counts."""
    from torchtitan.distributed import utils

    validate = getattr(utils, "validate_tp_head_counts", None)
    if validate is None:
        return all(count.value % degree == 0 for count in counts)
    try:
        validate(counts, tp_degree=degree, model_name=model_name)
    except ValueError:
        return False
    return True


def valid_tp_degrees(counts, *, model_name: str) -> list[int] | None:
    """Degrees the fork's rule accepts; None when TP shards no heads."""
    if not counts:
        return None
    return [
        degree
        for degree in range(1, min(count.value for count in counts) + 1)
        if accepts(counts, degree, model_name=model_name)
    ]


def sharded_head_counts(model_config) -> list:
    """The head counts TP shards in the model, by whichever helper the tree has."""
    from torchtitan.distributed import utils

    if hasattr(utils, "get_tp_sharded_head_counts"):
        with torch.device("meta"):
            return list(utils.get_tp_sharded_head_counts(model_config.build()))
    if hasattr(utils, "_tp_sharded_head_counts"):
        return list(utils._tp_sharded_head_counts(model_config))
    raise LookupError(
        "torchtitan.distributed.utils has neither get_tp_sharded_head_counts nor "
        "_tp_sharded_head_counts: this tree does not have the series"
    )


def describe_flavor(model_name: str, flavor: str, registry) -> dict:
    try:
        counts = sharded_head_counts(registry(flavor).model)
    except LookupError:
        raise
    except Exception as error:  # noqa: BLE001 - a flavor the tree cannot build
        return {
            "model": model_name,
            "flavor": flavor,
            "heads": {},
            "valid_tp": None,
            "build_error": f"{type(error).__name__}: {error}",
        }
    heads: dict[str, list[int]] = {}
    for count in counts:
        values = heads.setdefault(head_kind(count), [])
        if count.value not in values:
            values.append(count.value)
    if "attention" in heads and "kv" not in heads:
        # The rule leaves out n_kv_heads equal to n_heads: plain multi-head.
        heads["kv"] = list(heads["attention"])
    return {
        "model": model_name,
        "flavor": flavor,
        "heads": {kind: sorted(values) for kind, values in heads.items()},
        "valid_tp": valid_tp_degrees(counts, model_name=f"{model_name} {flavor}"),
    }


def flavors() -> list[dict]:
    rows = []
    for name in model_packages():
        package = importlib.import_module(f"torchtitan.models.{name}")
        for flavor in flavor_table(package):
            rows.append(describe_flavor(name, flavor, package.model_registry))
    return rows


def on_target_gpu():
    """Answer recipes' GPU checks as a Blackwell (SM100) GPU would.

    Quantization and flash-attention converters check the GPU while a recipe
    is built; the recipe's parallel degrees do not depend on the answer.
    """
    return mock.patch.multiple(
        torch.cuda,
        is_available=mock.Mock(return_value=True),
        get_device_capability=mock.Mock(return_value=(10, 0)),
    )


def recipe_config_accepts(config) -> bool | None:
    """Whether the check accepts the recipe's TP degree for the recipe's own
    model config, which may differ from its flavor's (``replicate_kv_heads``).
    None where the check does not read configs (the pristine bases)."""
    from torchtitan.distributed import utils

    model_config = config.model_spec.model
    tp = config.parallelism.tensor_parallel_degree
    if hasattr(utils, "_tp_sharded_head_counts"):  # main's series
        check = functools.partial(
            utils.validate_tensor_parallel_degree, model_config, tp_degree=tp
        )
    elif hasattr(model_config, "tp_sharded_head_counts"):  # 0.3.0's series
        check = functools.partial(
            utils.validate_tp_head_counts, model_config.tp_sharded_head_counts(),
            tp_degree=tp, model_name=type(model_config).__qualname__,
        )
    else:
        return None
    try:
        check()
    except ValueError:
        return False
    return True


def recipes() -> list[dict]:
    rows = []
    for name in model_packages():
        registry = importlib.import_module(f"torchtitan.models.{name}.config_registry")
        for recipe, function in inspect.getmembers(registry, inspect.isfunction):
            takes_arguments = any(
                parameter.default is inspect.Parameter.empty
                for parameter in inspect.signature(function).parameters.values()
            )
            if (
                recipe.startswith("_")
                or function.__module__ != registry.__name__
                or takes_arguments
            ):
                continue
            with on_target_gpu():
                config = function()
            rows.append(
                {
                    "recipe": recipe,
                    "model": name,
                    "flavor": config.model_spec.flavor,
                    "tp": config.parallelism.tensor_parallel_degree,
                    "valid": recipe_config_accepts(config),
                }
            )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", nargs="+", choices=("flavors", "recipes"))
    import torchtitan

    collectors = {"flavors": flavors, "recipes": recipes}
    report = {what: collectors[what]() for what in parser.parse_args().what}
    print(json.dumps({"torchtitan": torchtitan.__file__, **report}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
