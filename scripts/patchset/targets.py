"""The upstream trees the series is kept for, from ``patches/targets.toml``.

Each target is one folder ``patches/NAME/`` (its series) and one pin: a
release sdist from the package index, or a commit of upstream's git
repository. Adding a target is one pin plus one folder; a pin without a
folder, or a folder without a pin, is refused so that neither is forgotten.
"""

import tomllib
from dataclasses import dataclass
from pathlib import Path

from patchset.errors import PatchsetError

TARGETS_FILE = "targets.toml"


@dataclass(frozen=True, kw_only=True)
class SdistPin:
    """A release's source distribution, checked against its sha256."""

    package: str
    version: str
    sha256: str

    @property
    def sdist_name(self) -> str:
        return f"{self.package}-{self.version}.tar.gz"

    @property
    def tree_name(self) -> str:
        return f"{self.package}-{self.version}"

    @property
    def fingerprint(self) -> str:
        """Text the base commit's message carries, to tell it was made from this pin."""
        return self.sha256


@dataclass(frozen=True, kw_only=True)
class GitPin:
    """An upstream commit, and the offline snapshot of its tree (optional)."""

    repository: str
    commit: str
    snapshot: str | None
    snapshot_sha256: str | None
    snapshot_dir: Path
    branch: str = "`main`"  # what the pinned commit is, in the PR text

    @property
    def snapshot_path(self) -> Path | None:
        return self.snapshot_dir / self.snapshot if self.snapshot else None

    @property
    def fingerprint(self) -> str:
        return self.commit


@dataclass(frozen=True, kw_only=True)
class Target:
    name: str
    pin: SdistPin | GitPin
    # The number of the last patch of each pull request the series is sent
    # as; empty: the series is one unit, and bisect-check runs every unit
    # test after its last patch only.
    pull_request_ends: tuple[int, ...] = ()

    @property
    def source(self) -> str:
        return "sdist" if isinstance(self.pin, SdistPin) else "git"


REQUIRED_KEYS = {
    "sdist": ("package", "version", "sha256"),
    "git": ("repository", "commit"),
}


def pin_from(name: str, table: dict, *, snapshot_dir: Path) -> SdistPin | GitPin:
    source = table.get("source")
    if source not in REQUIRED_KEYS:
        raise PatchsetError(
            f"patches/{TARGETS_FILE}: target '{name}' has source {source!r}; "
            "use 'sdist' or 'git'"
        )
    missing = [key for key in REQUIRED_KEYS[source] if key not in table]
    if source == "git" and ("snapshot" in table) != ("snapshot_sha256" in table):
        missing.append("snapshot_sha256" if "snapshot" in table else "snapshot")
    if missing:
        raise PatchsetError(
            f"patches/{TARGETS_FILE}: target '{name}' lacks: {', '.join(missing)}"
        )
    if source == "sdist":
        return SdistPin(
            package=table["package"], version=table["version"], sha256=table["sha256"]
        )
    return GitPin(
        repository=table["repository"],
        commit=table["commit"],
        snapshot=table.get("snapshot"),
        snapshot_sha256=table.get("snapshot_sha256"),
        snapshot_dir=snapshot_dir,
        **({"branch": table["branch"]} if "branch" in table else {}),
    )


def pull_request_ends(name: str, table: dict) -> tuple[int, ...]:
    ends = table.get("pull_requests", [])
    if not (
        isinstance(ends, list)
        and all(isinstance(end, int) and end > 0 for end in ends)
        and ends == sorted(set(ends))
    ):
        raise PatchsetError(
            f"patches/{TARGETS_FILE}: [targets.{name}] pull_requests must list the "
            f"number of each pull request's last patch, ascending (e.g. [2, 7]); "
            f"got {ends!r}"
        )
    return tuple(ends)


@dataclass(frozen=True, kw_only=True)
class TargetMap:
    default: str
    targets: dict[str, Target]

    @property
    def names(self) -> list[str]:
        """Every target, the default first: the order ``apply`` tries them in."""
        return [self.default] + [name for name in self.targets if name != self.default]

    def get(self, name: str | None) -> Target:
        chosen = self.default if name is None else name
        if chosen not in self.targets:
            raise PatchsetError(
                f"unknown target '{chosen}'; patches/{TARGETS_FILE} pins: "
                + ", ".join(self.names)
            )
        return self.targets[chosen]


def check_folders_match(patches_dir: Path, names: list[str]) -> None:
    folders = sorted(
        path.name for path in patches_dir.iterdir()
        if path.is_dir() and not path.name.startswith(".")
    )
    unpinned = [name for name in folders if name not in names]
    if unpinned:
        raise PatchsetError(
            f"patches/{unpinned[0]}/ has no pin in patches/{TARGETS_FILE}: add a "
            f"[targets.\"{unpinned[0]}\"] table, or remove the folder"
        )
    folderless = [name for name in names if name not in folders]
    if folderless:
        raise PatchsetError(
            f"patches/{TARGETS_FILE} pins target '{folderless[0]}' but there is no "
            f"patches/{folderless[0]}/ folder: create it with a series file, or "
            "remove the pin"
        )


def read_targets(root: Path) -> TargetMap:
    """The pins, after checking they match the folders in patches/."""
    path = root / "patches" / TARGETS_FILE
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise PatchsetError(f"cannot read patches/{TARGETS_FILE}: {err}") from err
    tables = data.get("targets", {})
    if not tables:
        raise PatchsetError(f"patches/{TARGETS_FILE} has no [targets.NAME] table")
    snapshot_dir = root / data.get("snapshot_dir", "../shared/upstream")
    targets = {
        name: Target(
            name=name,
            pin=pin_from(name, table, snapshot_dir=snapshot_dir),
            pull_request_ends=pull_request_ends(name, table),
        )
        for name, table in tables.items()
    }
    default = data.get("default", next(iter(targets)))
    if default not in targets:
        raise PatchsetError(
            f"patches/{TARGETS_FILE}: default = '{default}' is not a pinned target"
        )
    check_folders_match(path.parent, list(targets))
    return TargetMap(default=default, targets=targets)
