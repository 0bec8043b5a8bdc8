"""Applying a target's series to someone else's torchtitan checkout.

A user's fork differs from the base the series was made on, so patches go
in with ``git am --3way``. A conflict must leave the checkout exactly as it
was; a checkout that has the series already is told so, not patched twice.
Without ``--target`` each target's series is tried in turn and the first
that applies is kept; an empty series is no fix and is never chosen.
"""

from dataclasses import dataclass
from pathlib import Path

from patchset import git
from patchset.errors import PatchsetError
from patchset.series import Patch, read_series
from patchset.workspace import Workspace

# How far back in the target's history to look for commits of the series.
HISTORY_DEPTH = 2000


@dataclass(frozen=True, kw_only=True)
class ApplyResult:
    applied: list[str]
    already_present: list[str]


class Conflict(PatchsetError):
    """A series that does not apply; the checkout has been restored."""


def patch_id(repo: Path, diff_text: str) -> str | None:
    result = git.run(repo, "patch-id", "--stable", input_text=diff_text)
    line = result.stdout.strip()
    return line.split()[0] if line else None


def history_fingerprints(repo: Path) -> tuple[set[str], set[str]]:
    """Patch ids and subjects of the recent commits in repo."""
    log = git.run(
        repo, "log", f"-n{HISTORY_DEPTH}", "--no-merges", "-p", "--format=commit %H%n%s"
    ).stdout
    ids = {
        line.split()[0]
        for line in git.run(repo, "patch-id", "--stable", input_text=log).stdout.splitlines()
    }
    subjects = set(
        git.output(repo, "log", f"-n{HISTORY_DEPTH}", "--no-merges", "--format=%s").splitlines()
    )
    return ids, subjects


def bare_subject(subject: str) -> str:
    """Subject without the ``[PATCH n/m]`` prefix that ``git am`` strips."""
    if subject.startswith("[PATCH"):
        return subject.split("]", 1)[1].strip()
    return subject


def present_in(repo: Path, patches: list[Patch]) -> list[str]:
    """Names of the patches whose change or subject the history already has."""
    ids, subjects = history_fingerprints(repo)
    return [
        patch.name
        for patch in patches
        if patch_id(repo, patch.path.read_text()) in ids
        or bare_subject(patch.subject) in subjects
    ]


def check_target(target: Path) -> None:
    if not git.is_repository(target):
        raise PatchsetError(f"{target} is not the top folder of a git checkout")
    operation = git.operation_in_progress(target)
    if operation:
        raise PatchsetError(f"{target} is in the middle of {operation}; finish or abort it first")
    changes = git.status_lines(target)
    if changes:
        raise PatchsetError(
            f"{target} has uncommitted changes or untracked files "
            f"({len(changes)}); commit or stash them first, so that a failed "
            "apply can restore the checkout exactly"
        )


def conflicted_files(target: Path, patch: Patch) -> list[str]:
    unmerged = git.output(target, "diff", "--name-only", "--diff-filter=U")
    if unmerged:
        return unmerged.splitlines()
    # A patch that failed before any merge was tried: name the files it edits.
    numstat = git.run(target, "apply", "--numstat", str(patch.path), check=False).stdout
    return [line.split("\t")[-1] for line in numstat.splitlines() if line]


def restore(target: Path, *, head: str) -> None:
    """Abort the ``git am`` and make sure nothing of it is left behind."""
    git.run(target, "am", "--abort", check=False)
    if git.head(target) != head or git.status_lines(target):
        git.run(target, "reset", "--hard", "--quiet", head)
        git.run(target, "clean", "-fd", "--quiet")


def apply_series(workspace: Workspace, target: Path) -> ApplyResult:
    """Apply the workspace target's series to the checkout ``target``
    (resolved and checked by the caller)."""
    patches = read_series(workspace)
    present = present_in(target, patches)
    if len(present) == len(patches):
        return ApplyResult(applied=[], already_present=present)
    if present:
        raise PatchsetError(
            f"{target} has part of the series already ({', '.join(present)}) "
            "but not all of it; remove those commits or apply the rest by hand"
        )
    head = git.head(target)
    env = git.identity_env(target)
    for patch in patches:
        result = git.run(
            target, "am", "--3way", "--keep-non-patch", "--quiet", str(patch.path),
            env=env, check=False,
        )
        if result.returncode != 0:
            files = conflicted_files(target, patch)
            restore(target, head=head)
            raise Conflict(
                f"{workspace.patches_label}/{patch.name} conflicts"
                + (f" in: {', '.join(files)}" if files else "")
            )
    return ApplyResult(applied=[patch.name for patch in patches], already_present=[])


def apply_first_fitting(candidates: list[Workspace], target: Path) -> str:
    """Apply the first candidate target's series that fits; say what happened.

    On no fit the checkout is as it was, and the error names, per target,
    the first patch that conflicts and its files.
    """
    target = target.resolve()
    check_target(target)
    head = git.head(target)
    failures = []
    for workspace in candidates:
        name = workspace.target.name
        if not read_series(workspace):
            failures.append(f"{name}: the series is empty (no fix for this target yet)")
            continue
        try:
            result = apply_series(workspace, target)
        except Conflict as conflict:
            failures.append(f"{name}: {conflict}")
            continue
        passed_over = "".join(f"\n  passed over {failure}" for failure in failures)
        if result.already_present:
            return (
                f"{target} already has the {name} series "
                f"({len(result.already_present)} patches); nothing applied{passed_over}"
            )
        return (
            f"applied the {name} series ({len(result.applied)} patches) to {target} "
            f"with git am --3way{passed_over}"
        )
    raise PatchsetError(
        f"no target's series applies to {target}; the checkout is back at "
        f"{head[:12]} with nothing changed.\n  "
        + "\n  ".join(failures)
        + "\nRebase a series onto this tree in its fork (see CONTRIBUTING.md), "
        "then apply again."
    )
