"""Reading, checking and writing the quilt-style patch queue in ``patches/``."""

import hashlib
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from patchset import git
from patchset.errors import PatchsetError
from patchset.workspace import Workspace

BASE_TAG = "base"

# Settings that make ``git format-patch`` output depend on nothing but the
# commits: no signature with a git version, no commit ids, full blob ids (so
# ``git am --3way`` can always find the preimage), and none of the user's
# own format/diff settings.
FORMAT_PATCH_ARGS = (
    "format-patch",
    "--zero-commit",
    "--no-numbered",
    "--no-signature",
    "--full-index",
    "--no-renames",
    "--encoding=UTF-8",
)
NEUTRAL_GIT_CONFIG_ENV = {"GIT_CONFIG_GLOBAL": "/dev/null", "GIT_CONFIG_NOSYSTEM": "1"}


@dataclass(frozen=True, kw_only=True)
class Patch:
    name: str
    path: Path

    @property
    def subject(self) -> str:
        """The Subject header, with its continuation lines unfolded."""
        lines = self.path.read_text(errors="replace").splitlines()
        for index, line in enumerate(lines):
            if line.startswith("Subject: "):
                parts = [line.removeprefix("Subject: ")]
                for continuation in lines[index + 1 :]:
                    if not continuation.startswith((" ", "\t")):
                        break
                    parts.append(continuation)
                return " ".join(part.strip() for part in parts)
        return ""

    def body_paragraphs(self) -> list[str]:
        """The commit message after the subject, one string per paragraph."""
        text = self.path.read_text(errors="replace")
        message = text.split("\n\n", 1)[1].split("\n---\n", 1)[0]
        paragraphs = [" ".join(p.split()) for p in message.split("\n\n")]
        return [p for p in paragraphs if p and not p.startswith("Refs #")]


def series_names(series_file: Path) -> list[str]:
    """Patch names in series order; blank lines and ``#`` comments ignored."""
    label = f"patches/{series_file.parent.name}/series"
    if not series_file.exists():
        raise PatchsetError(
            f"{label} is missing: it lists the patches, one file name a line"
        )
    names = []
    for number, raw in enumerate(series_file.read_text().splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if "/" in line or line in names:
            reason = "a path" if "/" in line else "listed twice"
            raise PatchsetError(
                f"{label} line {number}: '{line}' is {reason}; "
                "each line names one file of its folder, once"
            )
        names.append(line)
    return names


def check_format_patch_form(patch: Path, *, label: str) -> None:
    """Reject files that ``git am`` could only half understand."""
    text = patch.read_text(errors="replace")
    lines = text.splitlines()
    problems = []
    if not lines or not lines[0].startswith("From "):
        problems.append("it does not start with a 'From <commit>' line")
    for header in ("From: ", "Subject: ", "Date: "):
        if not any(line.startswith(header) for line in lines):
            problems.append(f"it has no '{header.strip()}' header")
    if "\ndiff --git " not in text:
        problems.append("it has no 'diff --git' section")
    if problems:
        raise PatchsetError(
            f"{label}/{patch.name} is not a git format-patch file: "
            + "; ".join(problems)
            + ". Regenerate it with 'scripts/series export'."
        )


def read_series(workspace: Workspace) -> list[Patch]:
    """The patches in order, after checking that series and folder agree."""
    names = series_names(workspace.series_file)
    patches_dir, label = workspace.patches_dir, workspace.patches_label
    missing = [name for name in names if not (patches_dir / name).is_file()]
    if missing:
        raise PatchsetError(
            f"{label}/series lists files that do not exist: "
            + ", ".join(f"{label}/{name}" for name in missing)
        )
    on_disk = sorted(path.name for path in patches_dir.glob("*.patch"))
    unlisted = [name for name in on_disk if name not in names]
    if unlisted:
        raise PatchsetError(
            f"{label}/ holds patches that {label}/series does not list: "
            + ", ".join(f"{label}/{name}" for name in unlisted)
            + f". Add them to {label}/series in the right place, or delete them."
        )
    patches = [Patch(name=name, path=patches_dir / name) for name in names]
    for patch in patches:
        check_format_patch_form(patch.path, label=label)
    return patches


def digest_of_files(files: list[Path], series_text: str) -> str:
    digest = hashlib.sha256(series_text.encode())
    for path in files:
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def queue_digest(workspace: Workspace) -> str:
    """A fingerprint of patches/ as it is on disk (series plus patch files)."""
    series_text = (
        workspace.series_file.read_text() if workspace.series_file.exists() else ""
    )
    files = sorted(workspace.patches_dir.glob("*.patch"))
    return digest_of_files(files, series_text)


def format_commits(fork: Path, out_dir: Path) -> list[Path]:
    """Write the fork's commits after the base tag as patches in out_dir."""
    listing = git.output(
        fork,
        *FORMAT_PATCH_ARGS,
        "--output-directory",
        str(out_dir),
        f"{BASE_TAG}..HEAD",
        env=NEUTRAL_GIT_CONFIG_ENV,
    )
    return [Path(line) for line in listing.splitlines() if line]


SERIES_HEADER = "# Applied in this order with git am. Written by 'scripts/series export'.\n"


def series_text_for(files: list[Path]) -> str:
    return SERIES_HEADER + "".join(f"{path.name}\n" for path in files)


def fork_export_digest(fork: Path) -> str:
    """The digest patches/ would have if the fork were exported now."""
    with tempfile.TemporaryDirectory() as tmp:
        files = format_commits(fork, Path(tmp))
        return digest_of_files(sorted(files), series_text_for(files))


def write_queue(workspace: Workspace, fork: Path) -> list[str]:
    """Replace patches/ with the fork's commits; return the patch names."""
    patches_dir = workspace.patches_dir
    patches_dir.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        files = format_commits(fork, Path(tmp))
        for old in patches_dir.glob("*.patch"):
            old.unlink()
        for path in files:
            shutil.copyfile(path, patches_dir / path.name)
    workspace.series_file.write_text(series_text_for(files))
    return [path.name for path in files]
