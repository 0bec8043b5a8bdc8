"""The TP table: every model flavor's head counts, valid TP degrees and recipes.

Head counts and valid degrees come from the patched fork, built from the real
registry on the meta device and judged by the series' own rule. Recipes come
from the fork, or with ``base=True`` from the pristine base, so the table
shows what the series changes.
"""

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from patchset import base, environment, git
from patchset.errors import PatchsetError
from patchset.probe import PROBES_DIR, run_probe
from patchset.series import read_series
from patchset.workspace import Workspace

COLUMNS = (
    "Model",
    "Flavor",
    "Attention heads",
    "KV heads",
    "Linear-attention heads (key/value)",
    "Vision heads",
    "Largest valid TP",
    "Valid TP degrees",
    "Shipped recipes (TP)",
)


@dataclass(frozen=True, kw_only=True)
class Recipe:
    name: str
    tp: int
    valid: bool | None  # None: the flavor has no head counts TP could shard


@dataclass(frozen=True, kw_only=True)
class Row:
    model: str
    flavor: str
    heads: dict[str, list[int]]
    valid_tp: list[int] | None
    recipes: list[Recipe]
    build_error: str | None = None  # the flavor's model does not build in this tree

    def to_json(self) -> dict:
        return {
            "model": self.model,
            "flavor": self.flavor,
            "heads": self.heads,
            "valid_tp": self.valid_tp,
            "largest_valid_tp": self.valid_tp[-1] if self.valid_tp else None,
            "recipes": [vars(recipe) for recipe in self.recipes],
            "build_error": self.build_error,
        }


def collect(workspace: Workspace, *, python: Path, recipes_from_base: bool) -> list[Row]:
    """The table of the fork's flavors, with the recipes of the fork (or of
    the pristine base)."""
    if recipes_from_base:
        return collect_before_and_after(workspace, python=python)[0]
    _require_series(workspace)
    found = _registry(workspace, python, workspace.fork_dir, "flavors", "recipes")
    return _rows(found["flavors"], found["recipes"])


def collect_before_and_after(
    workspace: Workspace, *, python: Path
) -> tuple[list[Row], list[Row]]:
    """The table with the base's recipes and with the fork's, from one probe
    of each tree."""
    _require_series(workspace)
    found = _registry(workspace, python, workspace.fork_dir, "flavors", "recipes")
    pristine = base.ensure_pristine_tree(workspace)
    base_recipes = _registry(workspace, python, pristine, "recipes")["recipes"]
    return _rows(found["flavors"], base_recipes), _rows(found["flavors"], found["recipes"])


def _registry(workspace: Workspace, python: Path, tree: Path, *what: str) -> dict:
    """The registry probe's report on ``tree``, kept in .cache/registry/
    under a key of everything it depends on: the probe's code, the venv and
    the tree's content. A fork with uncommitted changes is probed afresh."""
    content = _tree_content(tree)
    if content is None:
        return run_probe(python, tree, "registry", *what)
    key = hashlib.sha256("\0".join([
        (PROBES_DIR / "registry.py").read_text(),
        json.dumps(environment.read_stamp(python.parent.parent), sort_keys=True),
        content,
        *what,
    ]).encode()).hexdigest()[:32]
    cached = workspace.cache_dir / "registry" / f"{key}.json"
    if cached.is_file():
        return json.loads(cached.read_text())
    report = run_probe(python, tree, "registry", *what)
    cached.parent.mkdir(parents=True, exist_ok=True)
    partial = cached.with_suffix(f".{os.getpid()}.tmp")
    partial.write_text(json.dumps(report))
    partial.replace(cached)
    return report


def _tree_content(tree: Path) -> str | None:
    """What identifies the files of ``tree``: a clean fork's tree id, or the
    pristine base's folder (named after its commit, never edited); None for
    a fork with uncommitted or untracked changes."""
    if not git.is_repository(tree):
        return f"pristine {tree.name}"
    if git.output(tree, "status", "--porcelain", "--untracked-files=all"):
        return None
    return git.output(tree, "rev-parse", "HEAD^{tree}")


def _require_series(workspace: Workspace) -> None:
    if not read_series(workspace):
        raise PatchsetError(
            f"target '{workspace.target.name}' has no series yet "
            f"({workspace.patches_label}/series lists no patch): the head counts TP "
            "shards come from the series' helper, so there is no table to show"
        )


def _rows(flavors: list[dict], recipes: list[dict]) -> list[Row]:
    flavor_keys = {(flavor["model"], flavor["flavor"]) for flavor in flavors}
    orphans = [r["recipe"] for r in recipes if (r["model"], r["flavor"]) not in flavor_keys]
    if orphans:
        raise PatchsetError(f"recipes whose flavor is not in the registry: {orphans}")
    rows = []
    for flavor in flavors:
        valid_tp = flavor["valid_tp"]
        rows.append(
            Row(
                model=flavor["model"],
                flavor=flavor["flavor"],
                heads=flavor["heads"],
                valid_tp=valid_tp,
                build_error=flavor.get("build_error"),
                recipes=[
                    Recipe(
                        name=recipe["recipe"],
                        tp=recipe["tp"],
                        valid=_recipe_valid(recipe, valid_tp),
                    )
                    for recipe in recipes
                    if (recipe["model"], recipe["flavor"])
                    == (flavor["model"], flavor["flavor"])
                ],
            )
        )
    return rows


def _recipe_valid(recipe: dict, valid_tp: list[int] | None) -> bool | None:
    """The check's verdict on the recipe's own model config where the probe
    gave one (a recipe may replicate KV heads), else the flavor's degrees."""
    if recipe.get("valid") is not None:
        return recipe["valid"]
    return None if valid_tp is None else recipe["tp"] in valid_tp


def invalid_recipes(rows: list[Row]) -> list[str]:
    return [recipe.name for row in rows for recipe in row.recipes if recipe.valid is False]


def _values(values: list[int] | None) -> str:
    return ", ".join(str(v) for v in values) if values else "—"


def _recipe_cell(recipe: Recipe, *, builds: bool) -> str:
    mark = {True: "✓", False: "✗ invalid", None: "no TP sharding"}[recipe.valid]
    return f"`{recipe.name}` TP={recipe.tp} {mark if builds else 'model does not build'}"


def _valid_cell(row: Row) -> str:
    if row.build_error:
        return f"model does not build: {row.build_error.split(':')[0]}"
    return _values(row.valid_tp) if row.valid_tp else "TP shards no heads"


def _cells(row: Row) -> list[str]:
    heads = row.heads
    linear = (
        f"{_values(heads['linear_key'])} / {_values(heads['linear_value'])}"
        if "linear_key" in heads
        else "—"
    )
    return [
        row.model,
        f"`{row.flavor}`",
        _values(heads.get("attention")),
        _values(heads.get("kv")),
        linear,
        _values(heads.get("vision")),
        str(row.valid_tp[-1]) if row.valid_tp else "—",
        _valid_cell(row),
        "<br>".join(
            _recipe_cell(recipe, builds=row.build_error is None) for recipe in row.recipes
        )
        or "—",
    ]


def to_markdown(rows: list[Row]) -> str:
    lines = [
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "|".join("---" for _ in COLUMNS) + "|",
    ]
    lines += ["| " + " | ".join(_cells(row)) + " |" for row in rows]
    return "\n".join(lines)


def to_json(rows: list[Row]) -> str:
    return json.dumps([row.to_json() for row in rows], indent=2)
