"""'fork' never loses work that is only in torchtitan_fork/."""

from pathlib import Path

import pytest

from conftest import git, ScratchWorkspace, tree_snapshot


def commit_notes(fork: Path) -> None:
    """A commit made in the fork and not (yet) exported."""
    (fork / "NOTES.md").write_text("work in progress\n")
    git(fork, "add", "NOTES.md")
    git(fork, "commit", "--quiet", "-m", "[docs] notes")


def edit_readme(fork: Path) -> None:
    """An edit in the fork that is not committed."""
    readme = fork / "README.md"
    readme.write_text(readme.read_text() + "\nlocal edit\n")


@pytest.mark.parametrize(
    "make_work, expected",
    [
        (edit_readme, ("uncommitted changes", "README.md")),
        (commit_notes, ("not exported", "series export")),
    ],
    ids=["uncommitted-edit", "unexported-commit"],
)
def test_unsaved_work_is_refused_and_kept(built: ScratchWorkspace, make_work, expected):
    make_work(built.fork_dir)
    before = tree_snapshot(built.fork_dir)
    result = built.series("fork")
    assert result.code == 2
    for words in expected:
        assert words in result.err
    assert tree_snapshot(built.fork_dir) == before


def test_backup_moves_unexported_work_aside(built: ScratchWorkspace):
    commit_notes(built.fork_dir)
    result = built.series("fork", "--backup")
    assert result.code == 0, result.err
    backups = list(built.forks_dir.glob(f"{built.fork_dir.name}.backup-*"))
    assert len(backups) == 1
    assert git(backups[0], "log", "-1", "--format=%s").strip() == "[docs] notes"
    assert not (built.fork_dir / "NOTES.md").exists()


def test_exported_commit_allows_rebuild(built: ScratchWorkspace):
    commit_notes(built.fork_dir)
    assert built.series("export").code == 0
    assert any(p.name.endswith("-docs-notes.patch") for p in built.patches_dir.iterdir())
    result = built.series("fork")
    assert result.code == 0, result.err
    assert "up to date" in result.out


def test_new_patches_on_disk_rebuild_the_fork(built: ScratchWorkspace):
    """Patches pulled into patches/ are not mistaken for work in the fork."""
    series = built.patches_dir / "series"
    names = [l for l in series.read_text().splitlines() if l and not l.startswith("#")]
    (built.patches_dir / names[-1]).unlink()
    series.write_text("".join(f"{n}\n" for n in names[:-1]))
    result = built.series("fork")
    assert result.code == 0, result.err
    count = git(built.fork_dir, "rev-list", "--count", "base..HEAD").strip()
    assert int(count) == len(names) - 1


def test_single_fork_of_before_targets_moves_to_its_target(built: ScratchWorkspace):
    """torchtitan_fork/ used to be the fork itself: it moves, work and all,
    to the folder of the target whose pin made its base."""
    commit_notes(built.fork_dir)
    forks = built.forks_dir
    old = forks.with_name("old-fork")
    built.fork_dir.replace(old)
    forks.rmdir()
    old.replace(forks)
    result = built.series("targets")
    assert result.code == 0, result.err
    assert "moved the single torchtitan_fork/ of before targets to torchtitan_fork/v0.3/" \
        in result.err
    assert sorted(path.name for path in forks.iterdir()) == ["v0.3"]
    assert git(built.fork_dir, "log", "-1", "--format=%s").strip() == "[docs] notes"
