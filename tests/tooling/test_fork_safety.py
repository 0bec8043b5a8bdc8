"""'fork' never loses work that is only in torchtitan_fork/."""

from pathlib import Path

from conftest import git, ScratchWorkspace, tree_snapshot


def commit_notes(fork: Path) -> None:
    """A commit made in the fork and not (yet) exported."""
    (fork / "NOTES.md").write_text("work in progress\n")
    git(fork, "add", "NOTES.md")
    git(fork, "commit", "--quiet", "-m", "[docs] notes")


def test_uncommitted_edit_is_refused_and_kept(built: ScratchWorkspace):
    readme = built.fork / "README.md"
    readme.write_text(readme.read_text() + "\nlocal edit\n")
    before = tree_snapshot(built.fork)
    result = built.series("fork")
    assert result.code == 2
    assert "uncommitted changes" in result.err and "README.md" in result.err
    assert tree_snapshot(built.fork) == before


def test_unexported_commit_is_refused_and_kept(built: ScratchWorkspace):
    commit_notes(built.fork)
    before = tree_snapshot(built.fork)
    result = built.series("fork")
    assert result.code == 2
    assert "not exported" in result.err and "series export" in result.err
    assert tree_snapshot(built.fork) == before


def test_backup_moves_unexported_work_aside(built: ScratchWorkspace):
    commit_notes(built.fork)
    result = built.series("fork", "--backup")
    assert result.code == 0, result.err
    backups = list(built.root.glob("torchtitan_fork.backup-*"))
    assert len(backups) == 1
    assert git(backups[0], "log", "-1", "--format=%s").strip() == "[docs] notes"
    assert not (built.fork / "NOTES.md").exists()


def test_exported_commit_allows_rebuild(built: ScratchWorkspace):
    commit_notes(built.fork)
    assert built.series("export").code == 0
    assert any(p.name.endswith("-docs-notes.patch") for p in built.patches.iterdir())
    result = built.series("fork")
    assert result.code == 0, result.err
    assert "up to date" in result.out


def test_new_patches_on_disk_rebuild_the_fork(built: ScratchWorkspace):
    """Patches pulled into patches/ are not mistaken for work in the fork."""
    series = built.patches / "series"
    names = [l for l in series.read_text().splitlines() if l and not l.startswith("#")]
    (built.patches / names[-1]).unlink()
    series.write_text("".join(f"{n}\n" for n in names[:-1]))
    result = built.series("fork")
    assert result.code == 0, result.err
    count = git(built.fork, "rev-list", "--count", "base..HEAD").strip()
    assert int(count) == len(names) - 1
