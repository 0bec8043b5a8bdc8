"""Is every step of the series green?

The target's series is applied with ``git am``, one patch at a time, to a
fresh checkout of the pristine base (the fork's ``base`` commit). After each
patch the upstream-bound unit tests run against that tree: all of them after
the last patch of each pull request (``pull_requests`` in targets.toml) and
after the series' last patch, and only the test files the patch adds or
changes after the others. So a patch that breaks a test is caught within
its pull request, each of which must be green on its own; a target that
declares no pull requests is applied as one unit. The first patch
that does not apply or breaks a test is reported, and the check stops there,
as ``git bisect`` would.

A test that already fails on the base (upstream main has some: tests that
need the network, a GPU or data the tree lacks) is not blamed on the
series. The base is asked only about the tests that fail at a step, in a
second checkout, and a test known to fail there is left out of the later
runs. The last step's full run is kept as a JUnit report with the tree it
ran on, for the proofs that read the fork's unit-test outcomes.
"""

import json
import os
import subprocess
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
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


def run_unit_tests(
    tree: Path,
    *,
    python: Path,
    paths: list[str] | None = None,
    skip: frozenset[str] = frozenset(),
    junit: Path | None = None,
) -> TestRun:
    """Every unit test of ``tree``, or only ``paths`` (files or test ids),
    less the tests ``skip`` names."""
    if not (tree / UNIT_TESTS).is_dir():
        return TestRun(completed=True, failing=frozenset(), last_line="no unit tests yet")
    if paths == []:
        return TestRun(completed=True, failing=frozenset(),
                       last_line="no test file changed; the full run comes at the "
                                 "end of the pull request")
    # A file the base cannot even collect is ignored; single tests are deselected.
    left_out = [f"--deselect={test}" if "::" in test else f"--ignore={test}"
                for test in sorted(skip)]
    report = [f"--junitxml={junit}"] if junit else []
    result = subprocess.run(
        [str(python), "-m", "pytest", *(paths or [str(UNIT_TESTS)]), "-q",
         "-p", "no:cacheprovider", "-n", "2", "--no-header", *left_out, *report],
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


@dataclass(kw_only=True)
class BaseOutcomes:
    """The tests known to fail on the pristine base. A test that fails at a
    step is run there, in a checkout of the base made on first need."""

    worktree: ExitStack
    fork: Path
    python: Path
    failing: set[str] = field(default_factory=set)
    tree: Path | None = None

    def learn(self, tests: frozenset[str]) -> None:
        unknown = sorted(tests - self.failing)
        if self.tree is None and unknown:
            self.tree = self.worktree.enter_context(git.scratch_worktree(self.fork, BASE_TAG))
        # A test whose file the base lacks is new: it cannot fail there.
        present = [test for test in unknown
                   if (self.tree / test.split("::", 1)[0]).exists()]
        if not present:
            return
        run = run_unit_tests(self.tree, python=self.python, paths=present)
        self.failing.update(test for test in present
                            if test in run.failing or not run.completed)


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
    return {*workspace.target.pull_request_ends, count}


def last_run_files(workspace: Workspace) -> tuple[Path, Path]:
    """The JUnit report of the last step's full run, and its stamp."""
    folder = workspace.cache_dir / "bisect-check"
    return folder / f"{workspace.target.name}.xml", folder / f"{workspace.target.name}.json"


def record_last_run(workspace: Workspace, tree: Path, *, python: Path) -> None:
    """Stamp the report with the tree and the interpreter it ran on."""
    _, stamp = last_run_files(workspace)
    stamp.write_text(json.dumps({
        "tree": git.output(tree, "rev-parse", "HEAD^{tree}"),
        "python": str(python),
    }, indent=2) + "\n")


def last_full_run(workspace: Workspace, *, python: Path) -> Path | None:
    """bisect-check's JUnit report of every unit test on the fork's tree, if
    the last check ran on exactly that tree with ``python``; else None."""
    report, stamp = last_run_files(workspace)
    if not (report.exists() and stamp.exists()):
        return None
    recorded = json.loads(stamp.read_text())
    tree = git.output(workspace.fork_dir, "rev-parse", "HEAD^{tree}")
    if recorded.get("tree") != tree or recorded.get("python") != str(python):
        return None
    return report


def check_series(workspace: Workspace, *, python: Path, report=print) -> list[Step]:
    """Apply and test each patch in turn; stop at the first broken step."""
    steps = []
    names = series_names(workspace.series_file)
    full_runs = full_run_steps(workspace, len(names))
    junit, stamp = last_run_files(workspace)
    junit.parent.mkdir(parents=True, exist_ok=True)
    junit.unlink(missing_ok=True)
    stamp.unlink(missing_ok=True)
    with ExitStack() as worktrees:
        tree = worktrees.enter_context(git.scratch_worktree(workspace.fork_dir, BASE_TAG))
        base = BaseOutcomes(worktree=worktrees, fork=workspace.fork_dir, python=python)
        for number, name in enumerate(names, start=1):
            started = time.monotonic()
            ok, summary = apply_patch(tree, workspace.patches_dir / name)
            if ok:
                paths = None if number in full_runs else changed_test_files(tree)
                skipped = frozenset(base.failing)
                last = number == len(names)
                run = run_unit_tests(tree, python=python, paths=paths, skip=skipped,
                                     junit=junit if last else None)
                base.learn(run.failing)
                ok, summary = verdict(run, baseline=frozenset(base.failing))
                if skipped and paths is None:
                    summary += f"\n({len(skipped)} failing on the base left out)"
                scope = "every unit test" if paths is None else f"{len(paths)} changed test file(s)"
                summary = f"{scope}: {summary}"
                if last and ok:
                    record_last_run(workspace, tree, python=python)
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
