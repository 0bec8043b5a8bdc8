"""The fork's first commit, tagged ``base``: the pinned upstream tree.

- sdist: the release unpacked and committed with a fixed identity and date;
- git, from a user's clone or upstream: the pinned commit itself, with its
  history, so the fork's branch can go upstream as it is;
- git, offline: the snapshot's files committed with a fixed identity and
  the upstream commit's date; its tree is the pinned commit's tree.
"""

import shutil
import tarfile
import tempfile
from pathlib import Path

from patchset import git, sdist
from patchset.checksum import verify_sha256
from patchset.errors import PatchsetError
from patchset.series import BASE_TAG
from patchset.targets import GitPin, SdistPin
from patchset.workspace import Workspace

# Files in the sdist that are build output, not source: the fork leaves them
# out of its base commit and git ignores them there.
BUILD_OUTPUT_PATTERNS = ("*.egg-info/", "__pycache__/", "build/", "*.pyc")
BASE_IDENTITY = {"name": "torchtitan release", "email": "release@torchtitan.invalid"}
SNAPSHOT_PREFIX = "torchtitan"


def fixed_commit_env(timestamp: int) -> dict[str, str]:
    """A fixed identity and date, so every machine makes the same base commit."""
    date = f"{timestamp} +0000"
    return {
        "GIT_AUTHOR_NAME": BASE_IDENTITY["name"],
        "GIT_AUTHOR_EMAIL": BASE_IDENTITY["email"],
        "GIT_COMMITTER_NAME": BASE_IDENTITY["name"],
        "GIT_COMMITTER_EMAIL": BASE_IDENTITY["email"],
        "GIT_AUTHOR_DATE": date,
        "GIT_COMMITTER_DATE": date,
    }


def commit_files(
    tree: Path, *, message: str, timestamp: int, add_args: tuple[str, ...],
    ignore: tuple[str, ...] = (),
) -> None:
    """Make ``tree`` a repository whose one commit holds its files (less
    the ``ignore`` patterns)."""
    git.run(tree, "init", "--quiet", "--initial-branch=main")
    exclude = tree / ".git" / "info" / "exclude"
    exclude.parent.mkdir(parents=True, exist_ok=True)
    exclude.write_text("".join(f"{pattern}\n" for pattern in ignore))
    git.run(tree, "add", *add_args)
    git.run(tree, "-c", "commit.gpgsign=false", "commit", "--quiet", "-m", message,
            env=fixed_commit_env(timestamp))


def sdist_base(tree: Path, pin: SdistPin, *, cache_dir: Path) -> str:
    archive = sdist.ensure_sdist(pin, cache_dir=cache_dir)
    sdist.unpack(archive, pin, tree)
    for path in tree.glob("*.egg-info"):
        shutil.rmtree(path)
    commit_files(
        tree,
        message=f"{pin.package} {pin.version} (sdist from the package index)\n\n"
        f"sha256 of {pin.sdist_name}: {pin.sha256}\n",
        timestamp=sdist.release_date(archive, pin),
        add_args=("--all",),
        ignore=BUILD_OUTPUT_PATTERNS,
    )
    return pin.sdist_name


def unpack_snapshot(snapshot: Path, dest: Path) -> int:
    """Unpack the snapshot's ``torchtitan/`` to ``dest``; return the upstream
    commit's date, which every file in the snapshot carries."""
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        with tarfile.open(snapshot) as archive:
            members = archive.getmembers()
            archive.extractall(tmp, filter="data")
        unpacked = Path(tmp) / SNAPSHOT_PREFIX
        if not unpacked.is_dir():
            raise PatchsetError(f"{snapshot.name} does not contain {SNAPSHOT_PREFIX}/")
        unpacked.replace(dest)
    return max(int(member.mtime) for member in members)


def snapshot_base(tree: Path, pin: GitPin) -> str:
    snapshot = pin.snapshot_path
    verify_sha256(snapshot, pin.snapshot_sha256, remedy=f"replace {snapshot}")
    timestamp = unpack_snapshot(snapshot, tree)
    commit_files(
        tree,
        message=f"torchtitan at upstream commit {pin.commit} (offline snapshot)\n\n"
        f"The tree of {pin.repository} at {pin.commit},\n"
        f"from {pin.snapshot} (sha256 {pin.snapshot_sha256}).\n",
        timestamp=timestamp,
        # Every file of the snapshot, also those upstream's .gitignore names.
        add_args=("--all", "--force"),
    )
    return f"{pin.snapshot}, upstream commit {pin.commit[:12]}"


def fetched_base(tree: Path, pin: GitPin, *, source: str) -> str:
    """The pinned commit with its history, from a clone folder or a URL."""
    if Path(source).is_dir() and git.run(
        Path(source), "cat-file", "-e", f"{pin.commit}^{{commit}}", check=False
    ).returncode != 0:
        raise PatchsetError(
            f"{source} does not contain commit {pin.commit}, the pin in "
            "patches/targets.toml: fetch it there first, or pass a clone that has it"
        )
    tree.mkdir()
    git.run(tree, "init", "--quiet", "--initial-branch=main")
    result = git.run(tree, "fetch", "--quiet", "--no-tags", source, pin.commit, check=False)
    if result.returncode != 0:
        raise PatchsetError(
            f"cannot fetch commit {pin.commit} from {source}: "
            + " ".join((result.stderr or result.stdout).split())
        )
    git.run(tree, "checkout", "--quiet", "-B", "main", pin.commit)
    return f"upstream commit {pin.commit[:12]} from {source}"


def make_base(tree: Path, workspace: Workspace, *, from_clone: Path | None = None) -> str:
    """Create the repository ``tree`` (which must not exist) holding the
    target's base, tagged; return where the base came from."""
    pin = workspace.target.pin
    if isinstance(pin, SdistPin):
        if from_clone:
            raise PatchsetError(
                f"target '{workspace.target.name}' is an sdist; --from-clone is for git targets"
            )
        origin = sdist_base(tree, pin, cache_dir=workspace.cache_dir)
    elif from_clone:
        if not git.is_repository(from_clone):
            raise PatchsetError(f"--from-clone {from_clone}: not the top folder of a git clone")
        origin = fetched_base(tree, pin, source=str(from_clone.resolve()))
    elif pin.snapshot_path and pin.snapshot_path.exists():
        origin = snapshot_base(tree, pin)
    else:
        origin = fetched_base(tree, pin, source=pin.repository)
    git.run(tree, "tag", BASE_TAG)
    return origin


def base_is_pinned(fork: Path, pin: SdistPin | GitPin) -> bool:
    """Whether the fork's base was made from ``pin`` (and not an older pin)."""
    described = git.run(fork, "log", "-1", "--format=%H%n%B", BASE_TAG, check=False).stdout
    return pin.fingerprint in described


def ensure_pristine_tree(workspace: Workspace) -> Path:
    """The files of the fork's base commit, in a folder nothing ever edits."""
    return ensure_tree_at(workspace, BASE_TAG)


def ensure_tree_after_first_patch(workspace: Workspace) -> Path:
    """The files of the fork's first commit after the base: for a series whose
    first patch makes the branch run at all, the tree the fix is measured on."""
    commits = git.output(workspace.fork_dir, "rev-list", "--reverse", f"{BASE_TAG}..HEAD")
    if not commits:
        raise PatchsetError(f"{workspace.fork_label} has no commit after its base")
    return ensure_tree_at(workspace, commits.split()[0])


def ensure_tree_at(workspace: Workspace, revision: str) -> Path:
    """The files of the fork's ``revision``, in a folder named after its
    commit that nothing ever edits."""
    fork = workspace.fork_dir
    commit = git.output(fork, "rev-parse", f"{revision}^{{commit}}")
    tree = workspace.cache_dir / "pristine" / f"{workspace.target.name}-{commit[:12]}"
    if tree.is_dir():
        return tree
    tree.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(dir=tree.parent))
    try:
        git.run(fork, "archive", "--format=tar", f"--output={scratch}/tree.tar", commit)
        with tarfile.open(scratch / "tree.tar") as archive:
            archive.extractall(scratch / "tree", filter="data")
        (scratch / "tree").replace(tree)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return tree
