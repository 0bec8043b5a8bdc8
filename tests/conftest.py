"""Shared fixtures: the real workspace, and throwaway copies of it."""

import hashlib
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from patchset.workspace import Workspace

ROOT = Path(__file__).resolve().parents[1]
V03 = "v0.3"
# Commands that set up or choose every target, and take no --target.
EVERY_TARGET_COMMANDS = ("setup", "test", "prove", "targets")
GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "Test Author",
    "GIT_AUTHOR_EMAIL": "author@example.com",
    "GIT_COMMITTER_NAME": "Test Committer",
    "GIT_COMMITTER_EMAIL": "committer@example.com",
}


@dataclass(frozen=True)
class CommandResult:
    code: int
    out: str
    err: str


@dataclass(frozen=True, kw_only=True)
class ScratchWorkspace(Workspace):
    """A copy of the tooling, pyproject.toml, patches/ and the cached sdist,
    whose targets.toml names the real snapshot folder."""

    def series(self, *args: str) -> CommandResult:
        """Run a command; one that takes ``--target`` is given this
        workspace's target unless the arguments name one."""
        if self.target_name and args and args[0] not in EVERY_TARGET_COMMANDS \
                and "--target" not in args:
            args = (args[0], "--target", self.target_name, *args[1:])
        result = subprocess.run(
            [sys.executable, str(self.root / "scripts" / "series"), *args],
            capture_output=True,
            text=True,
            env={**os.environ, **GIT_IDENTITY},
            timeout=600,
        )
        return CommandResult(result.returncode, result.stdout, result.stderr)


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **GIT_IDENTITY},
    ).stdout


SLOWEST_SHOWN = 10


def pytest_terminal_summary(terminalreporter) -> None:
    """The slowest tests of the run and their share of the summed test time
    (setup, call and teardown), so the next person sees where minutes go."""
    seconds: dict[str, float] = {}
    for reports in terminalreporter.stats.values():
        for report in reports:
            if isinstance(report, pytest.TestReport):
                seconds[report.nodeid] = seconds.get(report.nodeid, 0.0) + report.duration
    total = sum(seconds.values())
    if not total:
        return
    slowest = sorted(seconds.items(), key=lambda item: item[1], reverse=True)[:SLOWEST_SHOWN]
    terminalreporter.write_sep("=", f"slowest {len(slowest)} of {len(seconds)} tests "
                                    f"({total:.0f} s of test time in all)")
    terminalreporter.write_line(f"{'seconds':>8}  {'share':>6}  test")
    for nodeid, spent in slowest:
        terminalreporter.write_line(f"{spent:8.1f}  {spent / total:6.1%}  {nodeid}")


@pytest.fixture(scope="session")
def workspace() -> Workspace:
    """The real workspace, at its default target."""
    return Workspace(root=ROOT)


@pytest.fixture(scope="session")
def v03_workspace() -> Workspace:
    """The real workspace at the v0.3 target (what tests/fix and tests/ranks test)."""
    return Workspace(root=ROOT, target_name=V03)


def make_scratch(root: Path, *, target_name: str | None) -> ScratchWorkspace:
    """Copy the tooling, pyproject.toml, patches/ and the cached sdist to
    ``root``; point its targets.toml at the real snapshot folder."""
    real = Workspace(root=ROOT)
    root.mkdir()
    shutil.copytree(ROOT / "scripts", root / "scripts", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "patches", root / "patches")
    shutil.copy(ROOT / "pyproject.toml", root / "pyproject.toml")
    snapshot_dir = real.targets().targets["main"].pin.snapshot_dir.resolve()
    targets_file = root / "patches" / "targets.toml"
    targets_file.write_text(
        re.sub(r'(?m)^snapshot_dir = .*$', f'snapshot_dir = "{snapshot_dir}"',
               targets_file.read_text())
    )
    sdist_name = real.at(V03).target.pin.sdist_name
    (root / ".cache" / "base").mkdir(parents=True)
    shutil.copy(ROOT / ".cache" / "base" / sdist_name, root / ".cache" / "base" / sdist_name)
    return ScratchWorkspace(root=root, target_name=target_name)


@pytest.fixture
def scratch(tmp_path: Path) -> ScratchWorkspace:
    """A scratch workspace at the v0.3 target, whose series has patches."""
    return make_scratch(tmp_path / "ws", target_name=V03)


def keep_first_patch(workspace: ScratchWorkspace) -> ScratchWorkspace:
    """Cut the scratch series to its first patch and build its fork: a test
    that adds a patch of its own then checks two steps, not the whole series."""
    names = [n for n in workspace.series_file.read_text().split() if n.endswith(".patch")]
    for name in names[1:]:
        (workspace.patches_dir / name).unlink()
    workspace.series_file.write_text(names[0] + "\n")
    result = workspace.series("fork")
    assert result.code == 0, result.err
    return workspace


@pytest.fixture
def built(scratch: ScratchWorkspace) -> ScratchWorkspace:
    """A scratch workspace whose v0.3 fork has been built."""
    result = scratch.series("fork")
    assert result.code == 0, result.err
    return scratch


def tree_snapshot(repo: Path) -> tuple[str, str, dict[str, str]]:
    """HEAD, status and a hash of every file: equal means nothing changed."""
    names = git(repo, "ls-files", "-z", "--cached", "--others").split("\0")
    hashes = {
        name: hashlib.sha256((repo / name).read_bytes()).hexdigest()
        for name in names
        if name and (repo / name).is_file()
    }
    return git(repo, "rev-parse", "HEAD"), git(repo, "status", "--porcelain"), hashes


def commit_change_at_end_of_utils(repo: Path) -> None:
    """A local commit where the series' first patch adds its helper, so that
    the patch conflicts there."""
    utils = repo / "torchtitan" / "distributed" / "utils.py"
    utils.write_text(utils.read_text() + "\n\ndef local_helper():\n    return 1\n")
    git(repo, "commit", "--quiet", "-am", "local change at the end of utils.py")
