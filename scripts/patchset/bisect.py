"""Is every step of the series green?

The series in patches/ is applied with ``git am``, one patch at a time, to a
fresh checkout of the pristine base (the fork's ``base`` commit). After each
patch the upstream-bound unit tests that exist at that point run against that
tree. The first patch that does not apply or breaks a test is reported, and
the check stops there, as ``git bisect`` would.
"""

import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from patchset import git
from patchset.series import BASE_TAG, series_names
from patchset.workspace import Workspace

UNIT_TESTS = Path("tests") / "unit_tests"


@dataclass(frozen=True, kw_only=True)
class Step:
    patch: str
    ok: bool
    summary: str
    seconds: float


def run_unit_tests(tree: Path, *, python: Path) -> tuple[bool, str]:
    if not (tree / UNIT_TESTS).is_dir():
        return True, "no unit tests yet"
    result = subprocess.run(
        [str(python), "-m", "pytest", str(UNIT_TESTS), "-q", "-p", "no:cacheprovider",
         "-n", "2", "--no-header"],
        cwd=tree,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(tree)},
        timeout=3600,
    )
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    failures = [line for line in lines if line.startswith(("FAILED", "ERROR"))]
    summary = "\n".join([*failures[:20], lines[-1] if lines else result.stderr[-500:]])
    return result.returncode == 0, summary


def apply_patch(tree: Path, patch: Path) -> tuple[bool, str]:
    result = git.run(
        tree, "am", "--quiet", "--keep-non-patch", "--committer-date-is-author-date",
        str(patch), env=git.identity_env(tree), check=False,
    )
    if result.returncode == 0:
        return True, ""
    git.run(tree, "am", "--abort", check=False)
    return False, "git am failed:\n" + (result.stderr or result.stdout).strip()


def check_series(workspace: Workspace, *, python: Path, report=print) -> list[Step]:
    """Apply and test each patch in turn; stop at the first broken step."""
    steps = []
    with git.scratch_worktree(workspace.fork_dir, BASE_TAG) as tree:
        for name in series_names(workspace.series_file):
            started = time.monotonic()
            ok, summary = apply_patch(tree, workspace.patches_dir / name)
            if ok:
                ok, summary = run_unit_tests(tree, python=python)
            step = Step(patch=name, ok=ok, summary=summary,
                        seconds=round(time.monotonic() - started, 1))
            steps.append(step)
            report(f"{'ok    ' if ok else 'BROKEN'}  {name}  ({step.seconds} s)")
            report("\n".join(f"        {line}" for line in summary.splitlines()))
            if not ok:
                break
    return steps


def first_broken(steps: list[Step]) -> str | None:
    return next((step.patch for step in steps if not step.ok), None)
