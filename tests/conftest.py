"""Shared fixtures: the real workspace, and throwaway copies of it."""

import hashlib
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from patchset.workspace import Workspace

ROOT = Path(__file__).resolve().parents[1]
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
    """A copy of the tooling, pyproject.toml, patches/ and the cached base."""

    def series(self, *args: str) -> CommandResult:
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


@pytest.fixture(scope="session")
def workspace() -> Workspace:
    return Workspace(root=ROOT)


@pytest.fixture
def scratch(tmp_path: Path, workspace: Workspace) -> ScratchWorkspace:
    root = tmp_path / "ws"
    root.mkdir()
    shutil.copytree(ROOT / "scripts", root / "scripts", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "patches", root / "patches")
    shutil.copy(ROOT / "pyproject.toml", root / "pyproject.toml")
    sdist_name = workspace.base_pin().sdist_name
    (root / ".cache" / "base").mkdir(parents=True)
    shutil.copy(ROOT / ".cache" / "base" / sdist_name, root / ".cache" / "base" / sdist_name)
    return ScratchWorkspace(root=root)


@pytest.fixture
def built(scratch: ScratchWorkspace) -> ScratchWorkspace:
    """A scratch workspace whose fork has been built."""
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
