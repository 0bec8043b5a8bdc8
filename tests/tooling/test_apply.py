"""'apply --to' on other checkouts: success, conflicts, and repeats."""

import subprocess
from pathlib import Path

from conftest import commit_change_at_end_of_utils, git, ScratchWorkspace, tree_snapshot


def base_checkout(built: ScratchWorkspace, dest: Path) -> Path:
    subprocess.run(
        ["git", "clone", "--quiet", "--branch", "base", str(built.fork_dir), str(dest)],
        check=True,
    )
    git(dest, "checkout", "--quiet", "-b", "user-branch")
    return dest


def test_apply_to_a_clean_base_checkout(built: ScratchWorkspace, tmp_path: Path):
    target = base_checkout(built, tmp_path / "target")
    result = built.series("apply", "--to", str(target))
    assert result.code == 0, result.err
    assert git(target, "diff", "origin/main", "--stat") == ""


def test_apply_twice_reports_the_series_is_there(built: ScratchWorkspace, tmp_path: Path):
    target = base_checkout(built, tmp_path / "target")
    assert built.series("apply", "--to", str(target)).code == 0
    before = tree_snapshot(target)
    result = built.series("apply", "--to", str(target))
    assert result.code == 0, result.err
    assert "already has the v0.3 series" in result.out
    assert tree_snapshot(target) == before


def test_conflict_leaves_the_checkout_untouched(built: ScratchWorkspace, tmp_path: Path):
    target = base_checkout(built, tmp_path / "target")
    commit_change_at_end_of_utils(target)
    before = tree_snapshot(target)
    result = built.series("apply", "--to", str(target))
    assert result.code == 2
    assert "-distributed-add-a-helper-that-checks" in result.err
    assert "torchtitan/distributed/utils.py" in result.err
    assert tree_snapshot(target) == before


def test_dirty_checkout_is_refused(built: ScratchWorkspace, tmp_path: Path):
    target = base_checkout(built, tmp_path / "target")
    (target / "scratch.txt").write_text("untracked\n")
    before = tree_snapshot(target)
    result = built.series("apply", "--to", str(target))
    assert result.code == 2
    assert "uncommitted changes or untracked files" in result.err
    assert tree_snapshot(target) == before
