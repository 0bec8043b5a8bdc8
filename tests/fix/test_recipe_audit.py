"""The series' recipe audit: it covers every recipe, and it catches 0.3.0's.

Its run on the fork is part of the run of the series' tests there
(test_upstream_tests.py), which checks that it covers every recipe.

The negative control runs the audit on the series without the patches that
change the two Qwen3.5 recipes (to TP=2, then back to TP=4 and TP=8 with
replicated KV heads): a clone of the fork with those commits reverted, so
the recipes are exactly 0.3.0's.
"""

from pathlib import Path

import pytest

from conftest import git
from recipe_audit import audit_cases
from upstream_pytest import run_unit_tests

AUDIT = Path("tests") / "unit_tests" / "test_recipe_parallelism.py"
RECIPE_FIX_FILE = "torchtitan/models/qwen3_5/config_registry.py"
def audit_outcomes(tree: Path, report: Path) -> dict[str, str | None]:
    return audit_cases(run_unit_tests(tests=tree / AUDIT, torchtitan_tree=tree, report=report))


@pytest.fixture(scope="module")
def base_recipes_tree(v03_workspace, tmp_path_factory) -> Path:
    fork = v03_workspace.fork_dir
    fixes = git(fork, "log", "--format=%H", "base..HEAD", "--", RECIPE_FIX_FILE).split()
    assert len(fixes) == 2, fixes
    clone = tmp_path_factory.mktemp("base-recipes") / "torchtitan"
    git(fork.parent, "clone", "--quiet", str(fork), str(clone))
    for fix in fixes:  # newest first
        git(clone, "revert", "--no-edit", fix)
    assert (clone / RECIPE_FIX_FILE).read_text() == git(
        fork, "show", f"base:{RECIPE_FIX_FILE}"
    )
    return clone


def test_audit_fails_on_the_base_recipes_naming_exactly_the_two(
    base_recipes_tree, tmp_path
):
    outcomes = audit_outcomes(base_recipes_tree, tmp_path / "r.xml")
    assert len(outcomes) == 67
    failed = {name: m for name, m in outcomes.items() if m is not None}
    assert set(failed) == {"qwen3_5/qwen35_122b_a10b", "qwen3_5/qwen35_397b_a17b"}
    assert "tensor_parallel_degree=4 does not divide" in failed["qwen3_5/qwen35_122b_a10b"]
    assert "tensor_parallel_degree=8 does not divide" in failed["qwen3_5/qwen35_397b_a17b"]
    assert "n_kv_heads=2 in layers 3, 7, 11" in failed["qwen3_5/qwen35_397b_a17b"]
