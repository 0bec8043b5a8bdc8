"""Fetching, verifying and unpacking a release's sdist from the package index."""

import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from patchset.checksum import verify_sha256
from patchset.errors import PatchsetError
from patchset.targets import SdistPin


def download(pin: SdistPin, dest_dir: Path) -> Path:
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
        verify_sha256(fetched, pin.sha256, remedy=f"delete {fetched} to download it again")
        target = dest_dir / pin.sdist_name
        fetched.replace(target)
    return target


def ensure_sdist(pin: SdistPin, *, cache_dir: Path) -> Path:
    """The verified sdist, downloaded into the cache on first use."""
    cached = cache_dir / "base" / pin.sdist_name
    if not cached.exists():
        return download(pin, cached.parent)
    verify_sha256(cached, pin.sha256, remedy=f"delete {cached} to download it again")
    return cached


def unpack(sdist: Path, pin: SdistPin, dest: Path) -> Path:
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


def release_date(sdist: Path, pin: SdistPin) -> int:
    """The release's time (PKG-INFO's mtime), for a reproducible base commit."""
    with tarfile.open(sdist) as archive:
        return int(archive.getmember(f"{pin.tree_name}/PKG-INFO").mtime)
