"""Reading the v0.3 series' recipe audit: which recipes a tree ships, and
the audit's outcome for each of them in a run of the fork's unit tests."""

import ast
from pathlib import Path

AUDIT_CASE = "test_recipe_parallelism::test_recipe_parallelism_fits_its_model"


def recipes_in_source(tree: Path) -> set[str]:
    """Public no-argument functions of every config_registry.py, read from the
    source text, independently of how the audit discovers them."""
    found = set()
    for path in sorted((tree / "torchtitan" / "models").glob("*/config_registry.py")):
        for node in ast.parse(path.read_text()).body:
            if (
                isinstance(node, ast.FunctionDef)
                and not node.name.startswith("_")
                and len(node.args.args) == len(node.args.defaults)
            ):
                found.add(f"{path.parent.name}/{node.name}")
    return found


def audit_cases(run: dict) -> dict[str, str | None]:
    """The audit's outcome for each recipe, from a run that includes it."""
    return {
        name.removeprefix(AUDIT_CASE)[1:-1]: message
        for name, message in run["outcomes"].items()
        if name.startswith(AUDIT_CASE + "[")
    }
