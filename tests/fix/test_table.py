"""The TP table: its content, and that its verdicts are parallelize_fn's own."""

import functools
import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, V03
from patchset.workspace import Workspace

QWEN3_5_MOE_FLAVORS = ("debugmodel_moe", "35B-A3B", "122B-A10B", "397B-A17B")
BAD_BASE_RECIPES = {"qwen35_122b_a10b": 4, "qwen35_397b_a17b": 8}
SPMD_TYPES_ONLY = ("muse_glimmer",)  # its parallelize_fn refuses partial_dtensor
# The module's fixtures are shared by its tests: one worker runs them all.
pytestmark = pytest.mark.xdist_group("table")
MODELS_WITH_TP = (
    "deepseek_v3", "gpt_oss", "kimi_k2_7", "llama3", "muse_glimmer", "qwen3", "qwen3_5"
)


def series_table(*args: str) -> tuple[int, str]:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "series"), "table", "--target", V03, *args],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode in (0, 1), result.stderr[-3000:]
    return result.returncode, result.stdout


@functools.cache
def fork_table() -> str:
    """The fork's table, made once per worker process: xdist may tear module
    fixtures down between two tests of this module."""
    code, out = series_table("--json")
    assert code == 0, "the fork's table marks a recipe invalid"
    return out


@pytest.fixture
def fork_rows() -> list[dict]:
    return json.loads(fork_table())


def recipes_of(rows: list[dict]) -> dict[str, dict]:
    return {recipe["name"]: recipe for row in rows for recipe in row["recipes"]}


def test_fork_table_covers_every_flavor_and_recipe(fork_rows):
    assert {row["model"] for row in fork_rows} >= set(MODELS_WITH_TP)
    recipes = recipes_of(fork_rows)
    assert len(recipes) == 69
    assert not [name for name, recipe in recipes.items() if recipe["valid"] is False]
    qwen = {row["flavor"]: row for row in fork_rows if row["model"] == "qwen3_5"}
    for flavor in QWEN3_5_MOE_FLAVORS:
        assert qwen[flavor]["heads"]["kv"] == [2]
        assert qwen[flavor]["valid_tp"] == [1, 2]
        assert qwen[flavor]["largest_valid_tp"] == 2
    assert qwen["35B-A3B"]["heads"] == {
        "attention": [16], "kv": [2], "linear_key": [16], "linear_value": [32],
        "vision": [16],
    }


def test_base_table_marks_exactly_the_two_invalid_recipes():
    code, out = series_table("--base")
    assert code == 1
    lines = out.splitlines()
    assert lines[0].startswith("| Model | Flavor | Attention heads | KV heads |")
    invalid = [line for line in lines if "✗ invalid" in line]
    assert len(invalid) == len(BAD_BASE_RECIPES)
    for line, (recipe, tp) in zip(invalid, BAD_BASE_RECIPES.items()):
        assert line.count("✗ invalid") == 1
        assert f"`{recipe}` TP={tp} ✗ invalid" in line
    row = next(line for line in lines if "`qwen35_397b_a17b`" in line)
    assert row.startswith("| qwen3_5 | `397B-A17B` | 32 | 2 | 16 / 64 | 16 | 2 | 1, 2 |")


def sample_flavors(rows: list[dict], model: str) -> list[dict]:
    """The model's first flavor and its most constrained one."""
    flavors = [row for row in rows if row["model"] == model]
    tightest = min(flavors[1:], key=lambda row: row["largest_valid_tp"])
    return [flavors[0], tightest]


def parallelize_runs(plan: list[dict]) -> dict[str, dict[int, dict]]:
    """Outcomes of parallelize_fn for each run of the plan, from the script
    next to this file, in one process."""
    fork = Workspace(root=ROOT, target_name=V03).fork_dir
    result = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("parallelize_degrees.py")),
         str(fork), json.dumps(plan)],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(fork)},
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return {
        key: {int(k): v for k, v in outcomes.items()}
        for key, outcomes in json.loads(result.stdout.splitlines()[-1]).items()
    }


def verdict_plans(rows: list[dict]) -> list[list[dict]]:
    """Every sampled flavor's invalid degrees up to two past its largest valid
    one, to be refused, and its valid degrees, to go through, grouped into as
    few processes as can share one: under spmd_types each accepted degree
    needs a fresh process, because a second one in the same process trips over
    a mesh cached by the first, with or without the series."""
    shared, alone = [], []
    for model in MODELS_WITH_TP:
        backend = "spmd_types" if model in SPMD_TYPES_ONLY else "partial_dtensor"
        for row in sample_flavors(rows, model):
            valid = row["valid_tp"]
            run = {"model": model, "flavor": row["flavor"], "spmd_backend": backend,
                   "reject": [d for d in range(1, valid[-1] + 3) if d not in valid]}
            if model in SPMD_TYPES_ONLY:
                shared.append({**run, "accept": []})
                alone += [[{**run, "reject": [], "accept": [d]}] for d in valid]
            else:
                shared.append({**run, "accept": valid})
    return [shared, *alone]


def verdicts(rows: list[dict]) -> dict[str, dict[int, dict]]:
    """What parallelize_fn did at each sampled flavor's degrees."""
    outcomes: dict[str, dict[int, dict]] = {}
    for plan in verdict_plans(rows):
        for key, by_degree in parallelize_runs(plan).items():
            outcomes.setdefault(key, {}).update(by_degree)
    return outcomes


@pytest.mark.proof
def test_table_verdicts_agree_with_parallelize_fn(fork_rows, subtests):
    """One test with a subtest per model, so that the runs share one process."""
    outcomes_of = verdicts(fork_rows)
    for model in MODELS_WITH_TP:
        with subtests.test(model=model):
            for row in sample_flavors(fork_rows, model):
                agree(model, row, outcomes_of[f"{model}/{row['flavor']}"])


def agree(model: str, row: dict, outcomes: dict[int, dict]) -> None:
    flavor, valid = row["flavor"], row["valid_tp"]
    assert set(outcomes) == set(range(1, valid[-1] + 3)), (model, flavor)
    for degree, outcome in outcomes.items():
        if degree in valid:
            assert outcome["error"] is None, (model, flavor, degree, outcome["error"])
            assert degree == 1 or outcome["tp_sharded_params"] > 0, (model, flavor, degree)
            continue
        assert outcome["error"] is not None, f"{model} {flavor} TP={degree} went through"
        assert outcome["error"].startswith(
            f"tensor_parallel_degree={degree} does not divide"
        ), outcome["error"]
        assert outcome["tp_sharded_params"] == 0
