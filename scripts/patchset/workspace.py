"""Where things live in the workspace, seen from one target."""

import dataclasses
import tomllib
from dataclasses import dataclass
from pathlib import Path

from patchset.errors import PatchsetError
from patchset.targets import read_targets, Target, TargetMap

FORKS_DIR = "torchtitan_fork"


@dataclass(frozen=True, kw_only=True)
class Workspace:
    """The repository root, and the target whose series, fork and pristine
    tree the paths below name (None: the default of patches/targets.toml)."""

    root: Path
    target_name: str | None = None

    @classmethod
    def from_script_location(cls, target_name: str | None = None) -> "Workspace":
        return cls(root=Path(__file__).resolve().parents[2], target_name=target_name)

    def targets(self) -> TargetMap:
        return read_targets(self.root)

    @property
    def target(self) -> Target:
        return self.targets().get(self.target_name)

    def at(self, target_name: str) -> "Workspace":
        """The same workspace, seen from another target."""
        return dataclasses.replace(self, target_name=target_name)

    def every_target(self) -> list["Workspace"]:
        """One workspace per target, the default first."""
        return [self.at(name) for name in self.targets().names]

    @property
    def pyproject(self) -> Path:
        return self.root / "pyproject.toml"

    @property
    def patches_dir(self) -> Path:
        return self.root / "patches" / self.target.name

    @property
    def patches_label(self) -> str:
        """The series folder as messages name it."""
        return f"patches/{self.target.name}"

    @property
    def series_file(self) -> Path:
        return self.patches_dir / "series"

    @property
    def forks_dir(self) -> Path:
        return self.root / FORKS_DIR

    @property
    def fork_dir(self) -> Path:
        return self.forks_dir / self.target.name

    @property
    def fork_label(self) -> str:
        return f"{FORKS_DIR}/{self.target.name}"

    @property
    def cache_dir(self) -> Path:
        return self.root / ".cache"

    @property
    def venv_dir(self) -> Path:
        return self.root / ".venv"

    def settings(self) -> dict:
        """The ``[tool.patchset]`` table of pyproject.toml."""
        try:
            data = tomllib.loads(self.pyproject.read_text())
        except (OSError, tomllib.TOMLDecodeError) as err:
            raise PatchsetError(f"cannot read {self.pyproject.name}: {err}") from err
        try:
            return data["tool"]["patchset"]
        except KeyError as err:
            raise PatchsetError(
                f"{self.pyproject.name} has no [tool.patchset] table"
            ) from err
