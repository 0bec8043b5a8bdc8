"""`rebase --onto DIR` on a synthetic newer torchtitan: a copy of 0.3.0 with
edits near the lines the series changes."""

import shutil
from pathlib import Path

from conftest import git, ScratchWorkspace
from patchset import base

REGISTRY = "torchtitan/models/qwen3_5/config_registry.py"
UTILS = "torchtitan/distributed/utils.py"


def newer_base(workspace: ScratchWorkspace, tmp_path: Path, *, conflict: bool) -> Path:
    tree = tmp_path / "torchtitan-newer"
    shutil.copytree(base.ensure_pristine_tree(workspace), tree)
    registry = (tree / REGISTRY).read_text()
    registry = registry.replace("steps=1000,", "steps=2000,")  # just above a hunk
    registry = registry.replace("\n\n\ndef _dataloader", "\n# moved\n\n\ndef _dataloader")
    if conflict:
        registry = registry.replace(
            "tensor_parallel_degree=8,", "tensor_parallel_degree=8,  # tuned"
        )
    (tree / REGISTRY).write_text(registry)
    utils = (tree / UTILS).read_text()
    (tree / UTILS).write_text(utils.replace("\n\ndef set_pg_timeouts(",
                                            "\n# newer base\n\ndef set_pg_timeouts("))
    return tree


def test_rebase_carries_the_series_onto_a_newer_base(built: ScratchWorkspace, tmp_path):
    newer = newer_base(built, tmp_path, conflict=False)
    result = built.series("rebase", "--onto", str(newer))
    assert result.code == 0, result.err
    assert "rebased 17 commits" in result.out
    fork = built.fork_dir
    assert git(fork, "diff", "--stat", "base", "HEAD", "--", REGISTRY)
    registry = (fork / REGISTRY).read_text()
    assert "steps=2000," in registry and "def qwen35_397b_a17b_tp8(" in registry
    assert "# newer base" in (fork / UTILS).read_text()
    assert "def validate_tensor_parallel_degree(" in (fork / UTILS).read_text()

    before = {p.name: p.read_text() for p in built.patches_dir.glob("*.patch")}
    assert built.series("export").code == 0
    after = {p.name: p.read_text() for p in built.patches_dir.glob("*.patch")}
    assert before.keys() == after.keys() and before != after

    # The exported series applies to the newer base without a three-way merge.
    target = tmp_path / "target"
    shutil.copytree(newer, target)
    git(target, "init", "-q")
    git(target, "add", "-A")
    git(target, "commit", "-qm", "newer")
    names = built.series_file.read_text().split()
    git(target, "am", "--keep-non-patch", *[str(built.patches_dir / n) for n in names
                                            if n.endswith(".patch")])
    assert (target / REGISTRY).read_text() == registry


def test_rebase_stops_on_a_conflict_and_loses_nothing(built: ScratchWorkspace, tmp_path):
    newer = newer_base(built, tmp_path, conflict=True)
    fork = built.fork_dir
    head = git(fork, "rev-parse", "HEAD")
    patches = {p.name: p.read_bytes() for p in built.patches_dir.iterdir()}
    result = built.series("rebase", "--onto", str(newer))
    assert result.code == 2
    assert REGISTRY in result.err and "git rebase --continue" in result.err
    assert "tag -f base" in result.err
    assert (fork / ".git" / "rebase-merge").is_dir()
    assert {p.name: p.read_bytes() for p in built.patches_dir.iterdir()} == patches
    # Export refuses while the rebase is unfinished; aborting restores the fork.
    assert built.series("export").code == 2
    git(fork, "rebase", "--abort")
    assert git(fork, "rev-parse", "HEAD") == head
