"""patches/targets.toml: git bases from a clone and from the snapshot give
the same tree, and each kind of bad input is one clear line."""

import shutil
import tarfile
from pathlib import Path

import pytest

from conftest import git, make_scratch, ScratchWorkspace
from patchset import base

MAIN = "main"


@pytest.fixture
def main_scratch(tmp_path: Path) -> ScratchWorkspace:
    return make_scratch(tmp_path / "ws", target_name=MAIN)


def snapshot_of(workspace: ScratchWorkspace) -> Path:
    return workspace.at(MAIN).target.pin.snapshot_path


def upstream_stand_in(workspace: ScratchWorkspace, dest: Path) -> str:
    """A git repository holding the snapshot's files, with one more commit on
    top; return the id of the snapshot's commit."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    base.unpack_snapshot(snapshot_of(workspace), dest)
    git(dest, "init", "--quiet", "--initial-branch=main")
    git(dest, "add", "--all", "--force")
    git(dest, "commit", "--quiet", "-m", "upstream, as the snapshot has it")
    pinned = git(dest, "rev-parse", "HEAD").strip()
    (dest / "LATER.md").write_text("a commit after the pinned one\n")
    git(dest, "add", "LATER.md")
    git(dest, "commit", "--quiet", "-m", "later upstream work")
    return pinned


def set_pin(workspace: ScratchWorkspace, key: str, value: str) -> None:
    """Replace the value of ``key`` in the main target's pin."""
    path = workspace.root / "patches" / "targets.toml"
    lines = path.read_text().splitlines(keepends=True)
    index = next(i for i, line in enumerate(lines) if line.startswith(f"{key} = "))
    lines[index] = f'{key} = "{value}"\n'
    path.write_text("".join(lines))


def base_tree(workspace: ScratchWorkspace) -> str:
    return git(workspace.fork_dir, "rev-parse", "base^{tree}").strip()


def assert_one_line_error(result, *words: str) -> None:
    assert result.code == 2, result.out
    assert len(result.err.strip().splitlines()) == 1, result.err
    for word in words:
        assert word in result.err, result.err


def test_clone_and_snapshot_give_the_same_base_tree(main_scratch, tmp_path):
    clone = tmp_path / "upstream" / "torchtitan"
    pinned = upstream_stand_in(main_scratch, clone)
    set_pin(main_scratch, "commit", pinned)

    from_snapshot = main_scratch.series("fork")
    assert from_snapshot.code == 0, from_snapshot.err
    fork = main_scratch.fork_dir
    message = git(fork, "log", "-1", "--format=%an <%ae> %at%n%B", "base")
    snapshot_mtime = max(m.mtime for m in tarfile.open(snapshot_of(main_scratch)))
    assert message.startswith(f"torchtitan release <release@torchtitan.invalid> "
                              f"{int(snapshot_mtime)}\n")
    assert pinned in message and main_scratch.target.pin.snapshot_sha256 in message
    snapshot_tree = base_tree(main_scratch)

    from_clone = main_scratch.series("fork", "--from-clone", str(clone))
    assert from_clone.code == 0, from_clone.err
    assert git(fork, "rev-parse", "base").strip() == pinned
    patches = main_scratch.series_file.read_text().count(".patch\n")
    assert git(fork, "rev-list", "--count", "base..HEAD").strip() == str(patches)
    assert base_tree(main_scratch) == snapshot_tree
    assert not (fork / "LATER.md").exists()
    # A second run keeps the base with history, and a plain one does too.
    assert "up to date" in main_scratch.series("fork", "--from-clone", str(clone)).out
    assert "up to date" in main_scratch.series("fork").out


def test_wrong_snapshot_hash_is_refused(main_scratch):
    wrong = "0" * 64
    set_pin(main_scratch, "snapshot_sha256", wrong)
    result = main_scratch.series("fork")
    assert_one_line_error(result, snapshot_of(main_scratch).name, f"pins {wrong}")
    assert not main_scratch.fork_dir.exists()
    assert list(main_scratch.forks_dir.iterdir()) == []


def test_clone_without_the_pinned_commit_is_refused(main_scratch, tmp_path):
    assert main_scratch.series("fork").code == 0  # from the snapshot
    head = git(main_scratch.fork_dir, "rev-parse", "HEAD")
    clone = tmp_path / "other" / "torchtitan"
    upstream_stand_in(main_scratch, clone)  # has neither the real pin nor its history
    result = main_scratch.series("fork", "--from-clone", str(clone))
    pinned = main_scratch.target.pin.commit
    assert_one_line_error(result, str(clone), f"does not contain commit {pinned}")
    assert git(main_scratch.fork_dir, "rev-parse", "HEAD") == head
    assert sorted(p.name for p in main_scratch.forks_dir.iterdir()) == [MAIN]


def test_unknown_target_is_refused(main_scratch):
    result = main_scratch.series("fork", "--target", "v9")
    assert_one_line_error(result, "unknown target 'v9'", "pins: main, v0.3")


def test_series_folder_without_a_pin_is_refused(main_scratch):
    stray = main_scratch.root / "patches" / "v0.4"
    stray.mkdir()
    (stray / "series").write_text("")
    result = main_scratch.series("fork")
    assert_one_line_error(result, "patches/v0.4/ has no pin in patches/targets.toml")
    assert not main_scratch.forks_dir.exists()


def test_pin_without_a_series_folder_is_refused(main_scratch):
    shutil.rmtree(main_scratch.root / "patches" / "main")
    result = main_scratch.series("fork", "--target", "v0.3")
    assert_one_line_error(result, "pins target 'main'", "no patches/main/ folder")


def test_pull_requests_out_of_order_are_refused(main_scratch):
    path = main_scratch.root / "patches" / "targets.toml"
    path.write_text(path.read_text().replace(
        "pull_requests = [2, 7, 9]", "pull_requests = [7, 2]"))
    result = main_scratch.series("fork")
    assert_one_line_error(result, "[targets.main] pull_requests", "got [7, 2]")
