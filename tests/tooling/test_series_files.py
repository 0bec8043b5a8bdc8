"""patches/v0.3/series and the patch files: order, form, and the base pin."""

from pathlib import Path

from conftest import git, ScratchWorkspace


def patch_names(patches: Path) -> list[str]:
    lines = (patches / "series").read_text().splitlines()
    return [line for line in lines if line and not line.startswith("#")]


def test_series_applies_in_order_with_git_am(built: ScratchWorkspace):
    names = patch_names(built.patches_dir)
    assert names, "the series is empty"
    subjects = git(built.fork_dir, "log", "--reverse", "--format=%s", "base..HEAD").splitlines()
    expected = [
        next(
            line.removeprefix("Subject: [PATCH] ")
            for line in (built.patches_dir / name).read_text().splitlines()
            if line.startswith("Subject: ")
        )
        for name in names
    ]
    assert [s[:40] for s in subjects] == [e[:40] for e in expected]
    assert git(built.fork_dir, "status", "--porcelain") == ""


def test_every_patch_applies_without_fuzz_or_offset(built: ScratchWorkspace):
    """Each patch's context matches the tree before it exactly."""
    commits = git(built.fork_dir, "rev-list", "--reverse", "base..HEAD").split()
    for name, commit in zip(patch_names(built.patches_dir), commits):
        git(built.fork_dir, "checkout", "--quiet", f"{commit}~1")
        check = git(built.fork_dir, "apply", "--check", "--verbose", str(built.patches_dir / name))
        assert "offset" not in check and "fuzz" not in check, (name, check)
    git(built.fork_dir, "checkout", "--quiet", "main")


def test_export_after_fork_is_byte_identical(built: ScratchWorkspace):
    before = {p.name: p.read_bytes() for p in built.patches_dir.iterdir()}
    result = built.series("export")
    assert result.code == 0, result.err
    after = {p.name: p.read_bytes() for p in built.patches_dir.iterdir()}
    assert after == before


def test_corrupted_patch_is_named(scratch: ScratchWorkspace):
    victim = patch_names(scratch.patches_dir)[1]
    path = scratch.patches_dir / victim
    text = path.read_text()
    path.write_text(text.replace("\n+", "\n+garbage ", 3).replace("@@ -", "@@ -9", 1))
    result = scratch.series("fork")
    assert result.code == 2
    assert f"patches/v0.3/{victim} does not apply" in result.err
    assert not scratch.fork_dir.exists(), "a half-patched fork was left behind"


def test_patch_without_headers_is_named(scratch: ScratchWorkspace):
    victim = patch_names(scratch.patches_dir)[0]
    (scratch.patches_dir / victim).write_text("just some text\n")
    result = scratch.series("fork")
    assert result.code == 2
    assert f"patches/v0.3/{victim} is not a git format-patch file" in result.err


def test_missing_file_listed_in_series_is_named(scratch: ScratchWorkspace):
    victim = patch_names(scratch.patches_dir)[-1]
    (scratch.patches_dir / victim).unlink()
    result = scratch.series("fork")
    assert result.code == 2
    assert f"lists files that do not exist: patches/v0.3/{victim}" in result.err


def test_patch_not_listed_in_series_is_named(scratch: ScratchWorkspace):
    (scratch.patches_dir / "0099-stray.patch").write_text("From 0\n")
    result = scratch.series("fork")
    assert result.code == 2
    assert "patches/v0.3/series does not list: patches/v0.3/0099-stray.patch" in result.err


def test_wrong_base_hash_is_refused(scratch: ScratchWorkspace):
    pins = scratch.root / "patches" / "targets.toml"
    wrong = "0" * 64
    text = pins.read_text()
    pinned = next(l for l in text.splitlines() if l.startswith("sha256 = "))
    pins.write_text(text.replace(pinned, f'sha256 = "{wrong}"'))
    result = scratch.series("fork")
    assert result.code == 2
    assert "torchtitan-0.3.0.tar.gz has sha256" in result.err
    assert f"pins {wrong}" in result.err
    assert not scratch.fork_dir.exists()
