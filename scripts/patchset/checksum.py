"""sha256 of downloaded or shipped archives, checked against their pin."""

import hashlib
from pathlib import Path

from patchset.errors import PatchsetError


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_sha256(path: Path, expected: str, *, remedy: str) -> None:
    """Refuse to build on an archive whose hash is not the pinned one."""
    actual = sha256_of(path)
    if actual != expected:
        raise PatchsetError(
            f"{path.name} has sha256 {actual}, but patches/targets.toml pins "
            f"{expected}. Refusing to build on an unverified base: {remedy}, or "
            "correct the pin if the archive was re-made on purpose."
        )
