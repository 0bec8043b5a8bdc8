"""The virtual environment the fork and the tests run in.

Set-up is idempotent: a stamp in .venv records what was installed, and a run
whose requirements and fork location are unchanged installs nothing.
"""

import json
import subprocess
import sys
import venv
from pathlib import Path

from patchset.errors import PatchsetError
from patchset.workspace import Workspace

STAMP_FILE = "patchset-stamp.json"


def python_of(venv_dir: Path) -> Path:
    return venv_dir / "bin" / "python"


def wanted_stamp(workspace: Workspace) -> dict:
    settings = workspace.settings()
    requirements = settings.get("environment", {}).get("requirements", [])
    if not requirements:
        raise PatchsetError(
            "[tool.patchset.environment] requirements is empty in pyproject.toml"
        )

    return {
        "python": sys.version.split()[0],
        "requirements": sorted(requirements),
        "editable": str(workspace.fork_dir),
        "base": workspace.base_pin().sha256,
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


def ensure_lint(workspace: Workspace) -> Path:
    """Create or update the lint tools' own venv; return its bin folder.

    The tools stay out of .venv, as pre-commit keeps each hook apart:
    pydoclint needs ``docstring_parser_fork``, which ships the same module
    name as the ``docstring_parser`` torchtitan's dependencies pull in.
    """
    venv_dir = workspace.cache_dir / "lint-venv"
    requirements = workspace.settings().get("lint", {}).get("requirements", [])
    if not requirements:
        raise PatchsetError("[tool.patchset.lint] requirements is empty in pyproject.toml")
    stamp = {"python": sys.version.split()[0], "requirements": sorted(requirements)}
    if read_stamp(venv_dir) == stamp and python_of(venv_dir).exists():
        return python_of(venv_dir).parent
    venv.EnvBuilder(with_pip=True, clear=True).create(venv_dir)
    pip(venv_dir, "install", "--quiet", *stamp["requirements"])
    (venv_dir / STAMP_FILE).write_text(json.dumps(stamp, indent=2) + "\n")
    return python_of(venv_dir).parent


def ensure(workspace: Workspace) -> Path:
    """Create or update .venv; return its python. Needs the fork to exist."""
    venv_dir = workspace.venv_dir
    stamp = wanted_stamp(workspace)
    if read_stamp(venv_dir) == stamp and python_of(venv_dir).exists():
        return python_of(venv_dir)
    if not python_of(venv_dir).exists():
        venv.EnvBuilder(with_pip=True, clear=True).create(venv_dir)
    (venv_dir / STAMP_FILE).unlink(missing_ok=True)
    pip(venv_dir, "install", "--quiet", *stamp["requirements"])
    pip(venv_dir, "install", "--quiet", "--editable", str(workspace.fork_dir))
    (venv_dir / STAMP_FILE).write_text(json.dumps(stamp, indent=2) + "\n")
    return python_of(venv_dir)


