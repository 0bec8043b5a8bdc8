"""Where things live in the workspace, and the pinned upstream base."""

import tomllib
from dataclasses import dataclass
from pathlib import Path

from patchset.errors import PatchsetError


@dataclass(frozen=True, kw_only=True)
class BasePin:
    """The upstream release the series is made against (pyproject.toml)."""

    package: str
    version: str
    sha256: str

    @property
    def sdist_name(self) -> str:
        return f"{self.package}-{self.version}.tar.gz"

    @property
    def tree_name(self) -> str:
        return f"{self.package}-{self.version}"


@dataclass(frozen=True, kw_only=True)
class Workspace:
    root: Path

    @classmethod
    def from_script_location(cls) -> "Workspace":
        return cls(root=Path(__file__).resolve().parents[2])

    @property
    def pyproject(self) -> Path:
        return self.root / "pyproject.toml"

    @property
    def patches_dir(self) -> Path:
        return self.root / "patches"

    @property
    def series_file(self) -> Path:
        return self.patches_dir / "series"

    @property
    def fork_dir(self) -> Path:
        return self.root / "torchtitan_fork"

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

    def base_pin(self) -> BasePin:
        base = self.settings().get("base", {})
        missing = [key for key in ("package", "version", "sha256") if key not in base]
        if missing:
            raise PatchsetError(
                f"[tool.patchset.base] in {self.pyproject.name} lacks: "
                + ", ".join(missing)
            )
        return BasePin(
            package=base["package"], version=base["version"], sha256=base["sha256"]
        )

    @property
    def pristine_tree(self) -> Path:
        """An unpacked, never-modified copy of the base (for side-by-side runs)."""
        return self.cache_dir / "pristine" / self.base_pin().tree_name
