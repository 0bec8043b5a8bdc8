"""Building torchtitan_fork/TARGET/ from the base and the series, without
losing work.

The fork is a git repository: its first commit is the target's pinned
upstream tree, tagged ``base`` (see ``base.py``); each patch of the series
follows as one commit made by ``git am``. It records the digest of the queue
it was built from (or last exported to), which tells new work in the fork
apart from new patches pulled into patches/TARGET/.
"""

import os
import shutil
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
    unexported: str | None = None
    up_to_date: bool = False
    export_digest: str | None = None

    @property
    def unsaved_work(self) -> str | None:
        return self.blocker or self.unexported


def inspect_fork(workspace: Workspace) -> ForkState:
    fork, label = workspace.fork_dir, workspace.fork_label
    if not git.is_repository(fork) or git.run(
        fork, "rev-parse", "--verify", "--quiet", f"refs/tags/{BASE_TAG}", check=False
    ).returncode != 0:
        return ForkState(
            blocker=f"{label}/ exists but is not a fork made by this tool "
            f"(no git repository with a '{BASE_TAG}' tag)"
        )
    operation = git.operation_in_progress(fork)
    if operation:
        return ForkState(
            blocker=f"{label}/ is in the middle of {operation}; "
            "finish or abort it first"
        )
    changes = git.status_lines(fork)
    if changes:
        shown = "\n  ".join(changes[:10])
        more = f"\n  ... ({len(changes)} in all)" if len(changes) > 10 else ""
        return ForkState(
            blocker=f"{label}/ has uncommitted changes:\n  {shown}{more}\n"
            "Commit them (one commit per logical change) and run "
            f"'scripts/series export --target {workspace.target.name}', or stash them"
        )
    in_fork = fork_export_digest(fork)
    on_disk = queue_digest(workspace)
    unexported = in_fork not in (recorded_digest(fork), on_disk)
    return ForkState(
        unexported=(
            f"{label}/ has commits that are not exported to {workspace.patches_label}/. "
            f"Run 'scripts/series export --target {workspace.target.name}' to save them"
        ) if unexported else None,
        up_to_date=in_fork == on_disk and base.base_is_pinned(fork, workspace.target.pin),
        export_digest=in_fork,
    )


def backup_path(fork: Path) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return fork.with_name(f"{fork.name}.backup-{stamp}")


def apply_patches(tree: Path, patches: list[Patch], *, label: str) -> None:
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
                f"{label}/{patch.name} does not apply to the base with git am:\n"
                f"{detail}"
            )


def build(workspace: Workspace, patches: list[Patch], *, from_clone: Path | None) -> Path:
    """Build the fork in a scratch folder beside it; return that folder."""
    fork = workspace.fork_dir
    scratch = fork.with_name(f".{fork.name}.building-{os.getpid()}")
    if scratch.exists():
        shutil.rmtree(scratch)
    scratch.parent.mkdir(parents=True, exist_ok=True)
    try:
        base.make_base(scratch, workspace, from_clone=from_clone)
        apply_patches(scratch, patches, label=workspace.patches_label)
        record_digest(scratch, queue_digest(workspace))
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    return scratch


def has_pinned_history(workspace: Workspace) -> bool:
    """Whether the fork's base is the pinned upstream commit itself."""
    pinned = getattr(workspace.target.pin, "commit", None)
    found = git.run(workspace.fork_dir, "rev-parse", f"{BASE_TAG}^{{commit}}", check=False)
    return found.stdout.strip() == pinned


def refresh(
    workspace: Workspace, *, backup: bool = False, from_clone: Path | None = None
) -> str:
    """Build or rebuild the fork; return a sentence saying what happened."""
    patches = read_series(workspace)
    fork, label = workspace.fork_dir, workspace.fork_label
    state = inspect_fork(workspace) if fork.exists() else None
    if state and state.unsaved_work and not backup:
        raise PatchsetError(
            f"refusing to rebuild: {state.unsaved_work}.\n"
            f"Or rerun with --backup to move the fork aside to "
            f"{label}.backup-<time>/ and build a fresh one."
        )
    wanted_history = from_clone is None or has_pinned_history(workspace)
    if state and state.up_to_date and not state.unsaved_work and wanted_history:
        record_digest(fork, queue_digest(workspace))
        return f"{label}/ is up to date with {workspace.patches_label}/ ({len(patches)} patches)"
    scratch = build(workspace, patches, from_clone=from_clone)
    moved_to = None
    if state and state.unsaved_work:
        moved_to = backup_path(fork)
        fork.replace(moved_to)
    elif fork.exists():
        shutil.rmtree(fork)
    scratch.replace(fork)
    summary = f"built {label}/: base + {len(patches)} patches"
    if moved_to:
        summary += f"; the previous fork is kept at {moved_to.name}/"
    return summary


def export(workspace: Workspace, *, force: bool = False) -> list[str]:
    """Write the fork's commits back to patches/ and series."""
    fork = workspace.fork_dir
    if not fork.exists():
        raise PatchsetError(
            f"{workspace.fork_label}/ does not exist; build it with "
            f"'scripts/series fork --target {workspace.target.name}'"
        )
    state = inspect_fork(workspace)
    if state.blocker:
        raise PatchsetError(f"cannot export: {state.blocker}")
    on_disk = queue_digest(workspace)
    if not force and on_disk not in (recorded_digest(fork), state.export_digest):
        raise PatchsetError(
            f"{workspace.patches_label}/ has changed since the fork was built from it, and the fork "
            "does not have those changes; exporting would overwrite them. "
            "Commit or stash patches/ first and rebuild the fork, "
            f"or rerun with --force to overwrite {workspace.patches_label}/ with the fork's commits"
        )
    names = write_queue(workspace, fork)
    record_digest(fork, queue_digest(workspace))
    return names


def adopt_single_fork(workspace: Workspace) -> str | None:
    """Move a fork from before targets (``torchtitan_fork/`` was itself the
    fork) to the folder of the target whose pin made its base, keeping its
    work; one no target claims is moved aside. Return what was done."""
    forks = workspace.forks_dir
    if not (forks / ".git").exists():
        return None
    owner = next(
        (each for each in workspace.every_target()
         if base.base_is_pinned(forks, each.target.pin)),
        None,
    )
    aside = backup_path(forks)
    forks.replace(aside)
    forks.mkdir()
    if owner is None:
        return f"moved {forks.name}/, a fork of no pinned target, aside to {aside.name}/"
    aside.replace(owner.fork_dir)
    return f"moved the single {forks.name}/ of before targets to {owner.fork_label}/"
