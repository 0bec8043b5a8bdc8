"""'apply --to' without --target: it tries each target's series and keeps
the first that applies; an empty series never wins."""

from pathlib import Path

import pytest

from conftest import (
    commit_change_at_end_of_utils,
    git,
    make_scratch,
    ROOT,
    ScratchWorkspace,
    tree_snapshot,
    V03,
)
from patchset import base, sdist
from patchset.series import read_series
from patchset.workspace import Workspace

SHARDING = "torchtitan/models/qwen3_5/sharding.py"
MAIN_ONLY_LINE = "    enable_sp: bool,\n"  # in set_qwen35_sharding_config on main only


def commit_tree(tree: Path, message: str) -> Path:
    """Make ``tree`` a plain git repository with one commit of its files."""
    git(tree, "init", "--quiet", "--initial-branch=main")
    git(tree, "add", "--all", "--force")
    git(tree, "commit", "--quiet", "-m", message)
    return tree


def main_checkout(workspace: Workspace, dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    base.unpack_snapshot(workspace.at("main").target.pin.snapshot_path, dest)
    return commit_tree(dest, "upstream main")


def release_checkout(workspace: Workspace, dest: Path) -> Path:
    pin = workspace.at(V03).target.pin
    dest.parent.mkdir(parents=True, exist_ok=True)
    sdist.unpack(sdist.ensure_sdist(pin, cache_dir=workspace.cache_dir), pin, dest)
    return commit_tree(dest, "torchtitan 0.3.0")


@pytest.fixture
def with_main_series(tmp_path: Path) -> ScratchWorkspace:
    """A scratch workspace whose main series is one small patch to a line
    that only main has (made by the tooling: fork, commit, export), in place
    of the repository's main series."""
    scratch = make_scratch(tmp_path / "ws", target_name="main")
    for patch in scratch.patches_dir.glob("*.patch"):
        patch.unlink()
    scratch.series_file.write_text("")
    assert scratch.series("fork").code == 0
    path = scratch.fork_dir / SHARDING
    text = path.read_text()
    assert MAIN_ONLY_LINE in text
    path.write_text(text.replace(MAIN_ONLY_LINE, "    enable_sp: bool,  # sequence parallel\n", 1))
    git(scratch.fork_dir, "commit", "--quiet", "-am", "[qwen3_5] note what enable_sp is")
    assert scratch.series("export").code == 0
    assert len(read_series(scratch)) == 1
    return ScratchWorkspace(root=scratch.root)


def test_picks_main_on_main_and_v03_on_the_release(with_main_series, tmp_path):
    on_main = main_checkout(with_main_series, tmp_path / "main" / "torchtitan")
    result = with_main_series.series("apply", "--to", str(on_main))
    assert result.code == 0, result.err
    assert "applied the main series (1 patches)" in result.out
    assert "# sequence parallel" in (on_main / SHARDING).read_text()

    # The exported series needs no three-way merge on a checkout of the pin.
    plain = main_checkout(with_main_series, tmp_path / "plain" / "torchtitan")
    patches = [str(p.path) for p in read_series(with_main_series.at("main"))]
    git(plain, "am", "--quiet", *patches)

    on_release = release_checkout(with_main_series, tmp_path / "release" / "torchtitan")
    result = with_main_series.series("apply", "--to", str(on_release))
    assert result.code == 0, result.err
    assert "applied the v0.3 series (17 patches)" in result.out
    assert "passed over main: patches/main/" in result.out and SHARDING in result.out


def test_no_series_applies_and_the_checkout_is_untouched(with_main_series, tmp_path):
    checkout = release_checkout(with_main_series, tmp_path / "release" / "torchtitan")
    commit_change_at_end_of_utils(checkout)
    before = tree_snapshot(checkout)
    result = with_main_series.series("apply", "--to", str(checkout))
    assert result.code == 2
    assert "no target's series applies" in result.err
    assert f"main: patches/main/0001-qwen3_5-note-what-enable_sp-is.patch conflicts in: " \
           f"{SHARDING}" in result.err
    assert "v0.3: patches/v0.3/0003-distributed" in result.err
    assert "torchtitan/distributed/utils.py" in result.err
    assert tree_snapshot(checkout) == before


def test_real_series_on_the_main_snapshot(tmp_path):
    """The repository's own main series: while empty, it is passed over;
    once it has patches, it is chosen and applies with plain git am."""
    workspace = Workspace(root=ROOT)
    checkout = main_checkout(workspace, tmp_path / "main" / "torchtitan")
    scratch = ScratchWorkspace(root=ROOT)
    patches = read_series(workspace.at("main"))
    result = scratch.series("apply", "--to", str(checkout))
    if not patches:
        assert "main: the series is empty" in result.out + result.err
        return
    assert result.code == 0, result.err
    assert f"applied the main series ({len(patches)} patches)" in result.out
    plain = main_checkout(workspace, tmp_path / "plain" / "torchtitan")
    git(plain, "am", "--quiet", *[str(patch.path) for patch in patches])


def test_picks_pr2545_on_a_checkout_of_the_branch(workspace, tmp_path):
    """The real series on a plain repository holding the #2545 snapshot:
    main's and v0.3's series conflict, pr2545's applies, with plain
    ``git am`` too."""
    pin = workspace.at("pr2545").target.pin

    def branch_checkout(dest: Path) -> Path:
        dest.parent.mkdir(parents=True, exist_ok=True)
        base.unpack_snapshot(pin.snapshot_path, dest)
        return commit_tree(dest, "the branch of #2545")

    checkout = branch_checkout(tmp_path / "apply" / "torchtitan")
    result = ScratchWorkspace(root=ROOT).series("apply", "--to", str(checkout))
    assert result.code == 0, result.err
    patches = read_series(workspace.at("pr2545"))
    assert f"applied the pr2545 series ({len(patches)} patches)" in result.out
    assert "passed over main:" in result.out and "passed over v0.3:" in result.out
    subjects = git(checkout, "log", "--format=%s", f"-{len(patches)}").splitlines()
    assert subjects[-1] == "[qwen3_5_moe] make tensor parallelism run again"

    plain = branch_checkout(tmp_path / "plain" / "torchtitan")
    git(plain, "am", "--quiet", *[str(patch.path) for patch in patches])
    assert git(plain, "rev-parse", "HEAD^{tree}") == git(checkout, "rev-parse", "HEAD^{tree}")
