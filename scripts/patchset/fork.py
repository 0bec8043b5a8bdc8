"""Building torchtitan_fork/ from the base and the series, without losing work.

The fork is a git repository: its first commit is the pristine sdist, tagged
``base``; each patch of the series follows as one commit made by ``git am``.
It records the digest of the queue it was built from (or last exported to),
which tells new work in the fork apart from new patches pulled into patches/.
"""

import os
import shutil
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

from patchset import base, git
from patchset.errors import PatchsetError
from patchset.series import (
    BASE_TAG,
    fork_export_digest,
    Patch,
    queue_digest,
    read_series,
    write_queue,
)
from patchset.workspace import Workspace

BUILT_FROM_FILE = "patchset-built-from"
BASE_IDENTITY = {"name": "torchtitan release", "email": "release@torchtitan.invalid"}


def git_dir(fork: Path) -> Path:
    return Path(git.output(fork, "rev-parse", "--absolute-git-dir"))


def recorded_digest(fork: Path) -> str | None:
    path = git_dir(fork) / BUILT_FROM_FILE
    return path.read_text().strip() if path.exists() else None


def record_digest(fork: Path, digest: str) -> None:
    (git_dir(fork) / BUILT_FROM_FILE).write_text(digest + "\n")


@dataclass(frozen=True, kw_only=True)
class ForkState:
    """What stands between the fork and a rebuild or an export.

    ``blocker`` is work git itself does not hold yet (uncommitted changes, an
    unfinished ``git am``) or a folder this tool did not make; ``unexported``
    says the fork has commits that patches/ does not have.
    """

    blocker: str | None = None
    unexported: bool = False
    up_to_date: bool = False
    export_digest: str | None = None

    @property
    def unsaved_work(self) -> str | None:
        if self.blocker:
            return self.blocker
        if self.unexported:
            return (
                "torchtitan_fork/ has commits that are not exported to patches/. "
                "Run 'scripts/series export' to save them"
            )
        return None


def inspect_fork(workspace: Workspace) -> ForkState:
    fork = workspace.fork_dir
    if not git.is_repository(fork) or git.run(
        fork, "rev-parse", "--verify", "--quiet", f"refs/tags/{BASE_TAG}", check=False
    ).returncode != 0:
        return ForkState(
            blocker=f"{fork.name}/ exists but is not a fork made by this tool "
            f"(no git repository with a '{BASE_TAG}' tag)"
        )
    operation = git.operation_in_progress(fork)
    if operation:
        return ForkState(
            blocker=f"{fork.name}/ is in the middle of {operation}; "
            "finish or abort it first"
        )
    changes = git.status_lines(fork)
    if changes:
        shown = "\n  ".join(changes[:10])
        more = f"\n  ... ({len(changes)} in all)" if len(changes) > 10 else ""
        return ForkState(
            blocker=f"{fork.name}/ has uncommitted changes:\n  {shown}{more}\n"
            "Commit them (one commit per logical change) and run "
            "'scripts/series export', or stash them"
        )
    in_fork = fork_export_digest(fork)
    on_disk = queue_digest(workspace)
    return ForkState(
        unexported=in_fork not in (recorded_digest(fork), on_disk),
        up_to_date=in_fork == on_disk,
        export_digest=in_fork,
    )


def backup_path(fork: Path) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return fork.with_name(f"{fork.name}.backup-{stamp}")


def base_commit_env(sdist: Path, tree_name: str) -> dict[str, str]:
    """A fixed identity and date, so every machine makes the same base commit."""
    with tarfile.open(sdist) as archive:
        mtime = int(archive.getmember(f"{tree_name}/PKG-INFO").mtime)
    date = f"{mtime} +0000"
    return {
        "GIT_AUTHOR_NAME": BASE_IDENTITY["name"],
        "GIT_AUTHOR_EMAIL": BASE_IDENTITY["email"],
        "GIT_COMMITTER_NAME": BASE_IDENTITY["name"],
        "GIT_COMMITTER_EMAIL": BASE_IDENTITY["email"],
        "GIT_AUTHOR_DATE": date,
        "GIT_COMMITTER_DATE": date,
    }


def commit_base(tree: Path, *, sdist: Path, workspace: Workspace) -> None:
    pin = workspace.base_pin()
    base.remove_build_output(tree)
    git.run(tree, "init", "--quiet", "--initial-branch=main")
    exclude = git_dir(tree) / "info" / "exclude"
    exclude.parent.mkdir(parents=True, exist_ok=True)
    exclude.write_text("".join(f"{p}\n" for p in base.BUILD_OUTPUT_PATTERNS))
    git.run(tree, "add", "--all")
    message = (
        f"{pin.package} {pin.version} (sdist from the package index)\n\n"
        f"sha256 of {pin.sdist_name}: {pin.sha256}\n"
    )
    env = base_commit_env(sdist, pin.tree_name)
    git.run(tree, "-c", "commit.gpgsign=false", "commit", "--quiet", "-m", message, env=env)
    git.run(tree, "tag", BASE_TAG)


def apply_patches(tree: Path, patches: list[Patch]) -> None:
    """``git am`` each patch in order; on failure abort and name the patch."""
    env = git.identity_env(tree)
    for patch in patches:
        result = git.run(
            tree,
            "am",
            "--quiet",
            "--committer-date-is-author-date",
            "--keep-non-patch",
            str(patch.path),
            env=env,
            check=False,
        )
        if result.returncode != 0:
            git.run(tree, "am", "--abort", check=False)
            detail = (result.stderr or result.stdout).strip()
            raise PatchsetError(
                f"patches/{patch.name} does not apply to the base with git am:\n"
                f"{detail}"
            )


def build(workspace: Workspace, patches: list[Patch]) -> Path:
    """Build the fork in a scratch folder beside it; return that folder."""
    sdist = base.ensure_sdist(workspace)
    scratch = workspace.root / f".{workspace.fork_dir.name}.building-{os.getpid()}"
    if scratch.exists():
        shutil.rmtree(scratch)
    try:
        base.unpack(sdist, workspace.base_pin(), scratch)
        commit_base(scratch, sdist=sdist, workspace=workspace)
        apply_patches(scratch, patches)
        record_digest(scratch, queue_digest(workspace))
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    return scratch


def refresh(workspace: Workspace, *, backup: bool = False) -> str:
    """Build or rebuild the fork; return a sentence saying what happened."""
    patches = read_series(workspace)
    fork = workspace.fork_dir
    state = inspect_fork(workspace) if fork.exists() else None
    if state and state.unsaved_work and not backup:
        raise PatchsetError(
            f"refusing to rebuild: {state.unsaved_work}.\n"
            f"Or rerun with --backup to move the fork aside to "
            f"{fork.name}.backup-<time>/ and build a fresh one."
        )
    if state and state.up_to_date and not state.unsaved_work:
        record_digest(fork, queue_digest(workspace))
        return f"{fork.name}/ is up to date with patches/ ({len(patches)} patches)"
    scratch = build(workspace, patches)
    moved_to = None
    if state and state.unsaved_work:
        moved_to = backup_path(fork)
        fork.replace(moved_to)
    elif fork.exists():
        shutil.rmtree(fork)
    scratch.replace(fork)
    summary = f"built {fork.name}/: base + {len(patches)} patches"
    if moved_to:
        summary += f"; the previous fork is kept at {moved_to.name}/"
    return summary


def export(workspace: Workspace, *, force: bool = False) -> list[str]:
    """Write the fork's commits back to patches/ and series."""
    fork = workspace.fork_dir
    if not fork.exists():
        raise PatchsetError(
            f"{fork.name}/ does not exist; build it with 'scripts/series fork'"
        )
    state = inspect_fork(workspace)
    if state.blocker:
        raise PatchsetError(f"cannot export: {state.blocker}")
    on_disk = queue_digest(workspace)
    if not force and on_disk not in (recorded_digest(fork), state.export_digest):
        raise PatchsetError(
            "patches/ has changed since the fork was built from it, and the fork "
            "does not have those changes; exporting would overwrite them. "
            "Commit or stash patches/ first and rebuild the fork, "
            "or rerun with --force to overwrite patches/ with the fork's commits"
        )
    names = write_queue(workspace, fork)
    record_digest(fork, queue_digest(workspace))
    return names
