"""A thin wrapper around the git command line."""

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from patchset.errors import PatchsetError

# Used when the user has no identity configured, so that generated commits
# (the fork's base, patches applied with ``git am``) can still be made.
FALLBACK_IDENTITY = {
    "GIT_COMMITTER_NAME": "patchset",
    "GIT_COMMITTER_EMAIL": "patchset@localhost",
}


def run(
    repo: Path,
    *args: str,
    env: dict[str, str] | None = None,
    check: bool = True,
    input_text: str | None = None,
) -> subprocess.CompletedProcess:
    """Run ``git -C repo ARGS``; raise PatchsetError with git's words on failure."""
    full_env = {**os.environ, **(env or {})}
    result = subprocess.run(
        ["git", "-C", str(repo), *args],
        capture_output=True,
        text=True,
        env=full_env,
        input=input_text,
    )
    if check and result.returncode != 0:
        detail = (result.stderr or result.stdout).strip()
        raise PatchsetError(f"git {' '.join(args)} failed in {repo}:\n{detail}")
    return result


def output(repo: Path, *args: str, env: dict[str, str] | None = None) -> str:
    return run(repo, *args, env=env).stdout.strip()


def is_repository(path: Path) -> bool:
    if not path.is_dir():
        return False
    result = run(path, "rev-parse", "--show-toplevel", check=False)
    return result.returncode == 0 and Path(result.stdout.strip()) == path.resolve()


def status_lines(repo: Path) -> list[str]:
    """Uncommitted changes and untracked files, as ``git status --porcelain``."""
    return run(repo, "status", "--porcelain").stdout.splitlines()


def head(repo: Path) -> str:
    return output(repo, "rev-parse", "HEAD")


def identity_env(repo: Path) -> dict[str, str]:
    """Environment that supplies a committer identity only where none is set."""
    has_email = run(repo, "config", "user.email", check=False).returncode == 0
    return {} if has_email else dict(FALLBACK_IDENTITY)


def operation_in_progress(repo: Path) -> str | None:
    """Name of an unfinished am/rebase/merge/cherry-pick in repo, if any."""
    git_dir = Path(output(repo, "rev-parse", "--absolute-git-dir"))
    markers = {
        "rebase-apply": "git am or rebase",
        "rebase-merge": "git rebase",
        "MERGE_HEAD": "git merge",
        "CHERRY_PICK_HEAD": "git cherry-pick",
    }
    for marker, name in markers.items():
        if (git_dir / marker).exists():
            return name
    return None


@contextmanager
def scratch_worktree(repo: Path, rev: str) -> Iterator[Path]:
    """A detached worktree of ``repo`` at ``rev`` in a temporary folder,
    removed (with its registration in ``repo``) afterwards."""
    scratch = Path(tempfile.mkdtemp(prefix="patchset-"))
    tree = scratch / "torchtitan"
    try:
        run(repo, "worktree", "add", "--quiet", "--detach", str(tree), rev)
        yield tree
    finally:
        run(repo, "worktree", "remove", "--force", str(tree), check=False)
        shutil.rmtree(scratch, ignore_errors=True)
