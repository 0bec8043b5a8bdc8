"""Is every step of the series green?

The target's series is applied with ``git am``, one patch at a time, to a
fresh checkout of the pristine base (the fork's ``base`` commit). After each
patch the upstream-bound unit tests run against that tree: all of them after
the last patch of each pull request (``pull_requests`` in targets.toml) and
after the series' last patch, and only the test files the patch adds or
changes after the others (every test after every patch where the target
declares no pull requests). So a patch that breaks a test is caught within
its pull request, each of which must be green on its own. The first patch
that does not apply or breaks a test is reported, and the check stops there,
as ``git bisect`` would. A test that already fails on the base (upstream
main has some: tests that need the network, a GPU or data the tree lacks) is
not blamed on the series.
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


@dataclass(frozen=True, kw_only=True)
class TestRun:
    """Whether pytest ran to the end, which tests failed, and its last line."""

    completed: bool
    failing: frozenset[str]
    last_line: str


def failing_tests(lines: list[str]) -> frozenset[str]:
    """Test ids from pytest's ``FAILED id - message`` and ``ERROR id - ...`` lines."""
    return frozenset(
        line.split(" ", 1)[1].split(" - ", 1)[0]
        for line in lines
        if line.startswith(("FAILED ", "ERROR "))
    )


def run_unit_tests(tree: Path, *, python: Path, paths: list[str] | None = None) -> TestRun:
    """Every unit test of ``tree``, or only the test files ``paths``."""
    if not (tree / UNIT_TESTS).is_dir():
        return TestRun(completed=True, failing=frozenset(), last_line="no unit tests yet")
    if paths == []:
        return TestRun(completed=True, failing=frozenset(),
                       last_line="no test file changed; the full run comes at the "
                                 "end of the pull request")
    result = subprocess.run(
        [str(python), "-m", "pytest", *(paths or [str(UNIT_TESTS)]), "-q",
         "-p", "no:cacheprovider", "-n", "2", "--no-header"],
        cwd=tree,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(tree)},
        timeout=3600,
    )
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    return TestRun(
        # 0: all passed; 1: some failed. Anything else: pytest itself failed.
        completed=result.returncode in (0, 1),
        failing=failing_tests(lines),
        last_line=lines[-1] if lines else result.stderr[-500:],
    )


def verdict(run: TestRun, *, baseline: frozenset[str]) -> tuple[bool, str]:
    """Green when pytest completed and nothing fails that passed on the base."""
    new = sorted(run.failing - baseline)
    shown = [f"FAILED {test}" for test in new[:20]]
    if run.failing & baseline:
        shown.append(f"({len(run.failing & baseline)} failing on the base as well, not counted)")
    return run.completed and not new, "\n".join([*shown, run.last_line])


def apply_patch(tree: Path, patch: Path) -> tuple[bool, str]:
    result = git.run(
        tree, "am", "--quiet", "--keep-non-patch", "--committer-date-is-author-date",
        str(patch), env=git.identity_env(tree), check=False,
    )
    if result.returncode == 0:
        return True, ""
    git.run(tree, "am", "--abort", check=False)
    return False, "git am failed:\n" + (result.stderr or result.stdout).strip()


def changed_test_files(tree: Path) -> list[str]:
    """The unit test files the last commit of ``tree`` adds or changes."""
    names = git.output(
        tree, "diff", "--name-only", "--diff-filter=AM", "HEAD~1", "HEAD", "--",
        str(UNIT_TESTS),
    ).split()
    return [name for name in names if Path(name).name.startswith("test_")]


def full_run_steps(workspace: Workspace, count: int) -> set[int]:
    """The 1-based steps after which every unit test runs."""
    ends = workspace.target.pull_request_ends
    return set(range(1, count + 1)) if not ends else {*ends, count}


def check_series(workspace: Workspace, *, python: Path, report=print) -> list[Step]:
    """Apply and test each patch in turn; stop at the first broken step."""
    steps = []
    names = series_names(workspace.series_file)
    full_runs = full_run_steps(workspace, len(names))
    with git.scratch_worktree(workspace.fork_dir, BASE_TAG) as tree:
        baseline = run_unit_tests(tree, python=python).failing if names else frozenset()
        if baseline:
            report(f"the base fails {len(baseline)} unit tests; the series is not blamed for them")
        for number, name in enumerate(names, start=1):
            started = time.monotonic()
            ok, summary = apply_patch(tree, workspace.patches_dir / name)
            if ok:
                paths = None if number in full_runs else changed_test_files(tree)
                ok, summary = verdict(
                    run_unit_tests(tree, python=python, paths=paths), baseline=baseline
                )
                scope = "every unit test" if paths is None else f"{len(paths)} changed test file(s)"
                summary = f"{scope}: {summary}"
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
