"""Carry the series onto another torchtitan tree, inside the fork.

The other tree (a newer release, or a checkout of upstream ``main``) becomes
a commit on top of the current base, and ``git rebase`` replays the series'
commits onto it with three-way merges. A conflict stops the rebase in the
fork, where it is resolved once; ``export`` then writes the rebased series.
"""

import tempfile
from pathlib import Path

from patchset import git
from patchset.errors import PatchsetError
from patchset.fork import inspect_fork
from patchset.series import BASE_TAG
from patchset.workspace import Workspace


def commit_tree(fork: Path, tree: Path, *, parent: str) -> str:
    """Commit the files of ``tree`` (not its .git) as a child of ``parent``."""
    with tempfile.TemporaryDirectory() as scratch:
        env = {**git.identity_env(fork), "GIT_INDEX_FILE": str(Path(scratch) / "index")}
        git.run(fork, "--work-tree", str(tree), "add", "--all", ".", env=env)
        tree_id = git.output(fork, "write-tree", env=env)
    return git.output(
        fork, "commit-tree", tree_id, "-p", parent, "-m", f"base: {tree.name}",
        env=git.identity_env(fork),
    )


def rebase_onto(workspace: Workspace, new_base: Path) -> str:
    fork = workspace.fork_dir
    if not (new_base / "torchtitan").is_dir():
        raise PatchsetError(f"{new_base} is not a torchtitan source tree (no torchtitan/)")
    state = inspect_fork(workspace)
    if state.unsaved_work:
        raise PatchsetError(f"cannot rebase: {state.unsaved_work}")
    old_base = git.output(fork, "rev-parse", BASE_TAG)
    target = commit_tree(fork, new_base.resolve(), parent=old_base)
    count = git.output(fork, "rev-list", "--count", f"{BASE_TAG}..HEAD")
    result = git.run(
        fork, "rebase", "--quiet", "--onto", target, old_base,
        env={**git.identity_env(fork), "GIT_EDITOR": "true"}, check=False,
    )
    if result.returncode != 0:
        conflicted = git.output(fork, "diff", "--name-only", "--diff-filter=U")
        raise PatchsetError(
            f"the series does not replay cleanly onto {new_base.name}; the rebase "
            f"is stopped in {workspace.fork_label}/ with conflicts in:\n  "
            + "\n  ".join(conflicted.split())
            + f"\nResolve them there, 'git add' the files and 'git rebase --continue'"
            f" (or 'git rebase --abort' to go back); then run\n"
            f"  git -C {workspace.fork_label} tag -f {BASE_TAG} {target}\n"
            f"  scripts/series export --target {workspace.target.name}"
        )
    git.run(fork, "tag", "-f", BASE_TAG, target)
    return (
        f"rebased {count} commits onto {new_base.name} (new '{BASE_TAG}' {target[:12]}); "
        f"run 'scripts/series export --target {workspace.target.name}' to write the "
        f"rebased series to {workspace.patches_label}/"
    )
