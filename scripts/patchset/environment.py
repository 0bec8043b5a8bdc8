"""The virtual environments: .venv, where every target's tree and the tests
run, and the lint tools' own in .cache/lint-venv.

.venv holds the requirements of ``[tool.patchset.environment]`` and the
``[project] dependencies`` of each target's base tree, and no torchtitan:
two editable installs would fight over the name, so every run puts its tree
on PYTHONPATH instead. Set-up is idempotent: a stamp in each venv records
what was installed, and a run whose stamp is unchanged installs nothing.
"""

import json
import subprocess
import sys
import tomllib
import venv
from pathlib import Path

from patchset import git
from patchset.errors import PatchsetError
from patchset.series import BASE_TAG
from patchset.workspace import Workspace

STAMP_FILE = "patchset-stamp.json"


def python_of(venv_dir: Path) -> Path:
    return venv_dir / "bin" / "python"


def requirements_of(workspace: Workspace, table: str) -> list[str]:
    """The sorted ``requirements`` of ``[tool.patchset.<table>]``."""
    requirements = workspace.settings().get(table, {}).get("requirements", [])
    if not requirements:
        raise PatchsetError(
            f"[tool.patchset.{table}] requirements is empty in pyproject.toml"
        )
    return sorted(requirements)


def tree_project(workspace: Workspace) -> dict:
    """The ``[project]`` table of the target's base tree (its fork must exist)."""
    text = git.output(workspace.fork_dir, "show", f"{BASE_TAG}:pyproject.toml")
    try:
        return tomllib.loads(text)["project"]
    except (tomllib.TOMLDecodeError, KeyError) as err:
        raise PatchsetError(
            f"the base of {workspace.fork_label} has no readable [project] table: {err}"
        ) from err


def wanted_stamp(workspace: Workspace) -> dict:
    projects = {each.target.name: tree_project(each) for each in workspace.every_target()}
    return {
        "python": sys.version.split()[0],
        "requirements": requirements_of(workspace, "environment"),
        "trees": {
            name: sorted(project.get("dependencies", []))
            for name, project in projects.items()
        },
        "not_installed": sorted({project["name"] for project in projects.values()}),
    }


def read_stamp(venv_dir: Path) -> dict | None:
    try:
        return json.loads((venv_dir / STAMP_FILE).read_text())
    except (OSError, ValueError):
        return None


def pip(venv_dir: Path, *args: str) -> None:
    command = [str(python_of(venv_dir)), "-m", "pip", "--disable-pip-version-check", *args]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-15:])
        raise PatchsetError(f"pip {' '.join(args[:2])} ... failed:\n{tail}")


def ensure_venv(
    venv_dir: Path, stamp: dict, requirements: list[str], *, remove: list[str] = ()
) -> Path:
    """Make ``venv_dir`` hold what ``stamp`` describes; return its python.

    ``remove`` is uninstalled first, then ``requirements`` installed in one
    resolution. Nothing runs when the stamp already matches; a failed
    install leaves no stamp.
    """
    python = python_of(venv_dir)
    if read_stamp(venv_dir) == stamp and python.exists():
        return python
    if not python.exists():
        venv.EnvBuilder(with_pip=True, clear=True).create(venv_dir)
    (venv_dir / STAMP_FILE).unlink(missing_ok=True)
    if remove:
        pip(venv_dir, "uninstall", "--yes", "--quiet", *remove)
    pip(venv_dir, "install", "--quiet", *requirements)
    (venv_dir / STAMP_FILE).write_text(json.dumps(stamp, indent=2) + "\n")
    return python


def ensure_lint(workspace: Workspace) -> Path:
    """Create or update the lint tools' own venv; return its bin folder.

    The tools stay out of .venv, as pre-commit keeps each hook apart:
    pydoclint needs ``docstring_parser_fork``, which ships the same module
    name as the ``docstring_parser`` torchtitan's dependencies pull in.
    """
    requirements = requirements_of(workspace, "lint")
    stamp = {"python": sys.version.split()[0], "requirements": requirements}
    return ensure_venv(workspace.cache_dir / "lint-venv", stamp, requirements).parent


def ensure(workspace: Workspace) -> Path:
    """Create or update .venv; return its python. Needs every fork to exist."""
    stamp = wanted_stamp(workspace)
    requirements = sorted(
        {*stamp["requirements"], *(dep for deps in stamp["trees"].values() for dep in deps)}
    )
    return ensure_venv(
        workspace.venv_dir, stamp, requirements, remove=stamp["not_installed"]
    )
