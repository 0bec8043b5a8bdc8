"""Fetching, verifying and unpacking the pinned upstream sdist."""

import hashlib
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from patchset.errors import PatchsetError
from patchset.workspace import BasePin, Workspace

# Files in the sdist that are build output, not source: the fork leaves them
# out of its base commit and git ignores them there.
BUILD_OUTPUT_PATTERNS = ("*.egg-info/", "__pycache__/", "build/", "*.pyc")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify(sdist: Path, pin: BasePin) -> None:
    actual = sha256_of(sdist)
    if actual != pin.sha256:
        raise PatchsetError(
            f"{sdist.name} has sha256 {actual}, but pyproject.toml pins "
            f"{pin.sha256}. Refusing to build on an unverified base: delete "
            f"{sdist} to download it again, or correct the pin if the release "
            "was re-published on purpose."
        )


def download(pin: BasePin, dest_dir: Path) -> Path:
    """Download the sdist (never a wheel) with pip from the configured index."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest_dir) as tmp:
        result = subprocess.run(
            [
                sys.executable, "-m", "pip", "download", "--no-deps",
                "--no-binary", ":all:", "--quiet",
                "--dest", tmp, f"{pin.package}=={pin.version}",
            ],
            capture_output=True,
            text=True,
        )
        fetched = Path(tmp) / pin.sdist_name
        if result.returncode != 0 or not fetched.exists():
            raise PatchsetError(
                f"could not download the sdist of {pin.package}=={pin.version}:\n"
                + (result.stderr.strip() or result.stdout.strip())
            )
        verify(fetched, pin)
        target = dest_dir / pin.sdist_name
        fetched.replace(target)
    return target


def ensure_sdist(workspace: Workspace) -> Path:
    """The verified sdist, downloaded into the cache on first use."""
    pin = workspace.base_pin()
    cached = workspace.cache_dir / "base" / pin.sdist_name
    if not cached.exists():
        return download(pin, cached.parent)
    verify(cached, pin)
    return cached


def unpack(sdist: Path, pin: BasePin, dest: Path) -> Path:
    """Unpack the sdist's source tree to ``dest`` (which must not exist)."""
    if dest.exists():
        raise PatchsetError(f"{dest} already exists")
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        with tarfile.open(sdist) as archive:
            archive.extractall(tmp, filter="data")
        unpacked = Path(tmp) / pin.tree_name
        if not unpacked.is_dir():
            raise PatchsetError(f"{sdist.name} does not contain {pin.tree_name}/")
        unpacked.replace(dest)
    return dest


def ensure_pristine_tree(workspace: Workspace) -> Path:
    """An unpacked copy of the base that nothing ever edits."""
    tree = workspace.pristine_tree
    if tree.is_dir():
        return tree
    tree.parent.mkdir(parents=True, exist_ok=True)
    return unpack(ensure_sdist(workspace), workspace.base_pin(), tree)


def remove_build_output(tree: Path) -> None:
    """Drop the sdist's generated metadata (``*.egg-info``) from the tree."""
    for path in tree.glob("*.egg-info"):
        shutil.rmtree(path)
