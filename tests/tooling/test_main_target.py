"""What the main target does differently: its lint rules come from its own
tree, the venv installs no torchtitan, and the PR names the pinned commit."""

import json
import subprocess
import sys
from pathlib import Path

from conftest import git, keep_first_patch, make_scratch, ROOT, V03
from patchset import environment, lint, pr
from patchset.workspace import Workspace

PYTHON = Path(sys.executable)


def test_venv_has_every_tree_dependency_and_no_torchtitan(tmp_path):
    workspace = Workspace(root=ROOT)
    stamp = environment.read_stamp(workspace.venv_dir)
    assert stamp == environment.wanted_stamp(workspace)
    assert "grain==0.2.18" in stamp["trees"]["main"]
    assert "torchdata>=0.8.0" in stamp["trees"][V03]
    # Two editable torchtitans would fight: each run puts its tree on PYTHONPATH.
    found = subprocess.run(
        [str(environment.python_of(workspace.venv_dir)), "-c", "import torchtitan"],
        cwd=tmp_path, capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"},
    )
    assert "No module named 'torchtitan'" in found.stderr


def test_main_lint_rules_are_read_from_its_tree():
    main = Workspace(root=ROOT, target_name="main")
    rules = lint.rules_of_tree(main.fork_dir)
    assert rules.flake8_args == ("--config=.flake8",)
    # The hook's --config=pyproject.toml names a file without [tool.pydoclint].
    assert "[tool.pydoclint]" not in (main.fork_dir / "pyproject.toml").read_text()
    assert rules.pydoclint_args == ()
    header = (main.fork_dir / "torchtitan" / "__init__.py").read_text()
    assert header.startswith(rules.license_header)
    assert rules.license_header.splitlines()[2] == "#"
    # The 0.3.0 sdist ships no pre-commit configuration: pyproject.toml's rules.
    assert lint.rules_of_tree(main.at(V03).fork_dir) is None


def test_main_lint_blames_a_patch_with_main_rules(tmp_path):
    scratch = keep_first_patch(make_scratch(tmp_path / "ws", target_name="main"))
    fork = scratch.fork_dir
    (fork / "torchtitan" / "tp_note.py").write_text("import os\nx = {  'a':1 }\n")
    git(fork, "add", "-A")
    git(fork, "commit", "-q", "-m", "[distributed] a patch that breaks main's lint rules")
    assert scratch.series("export").code == 0
    report = lint.lint_series(scratch, python=PYTHON)
    findings = report[list(report)[-1]]
    found = {(f.tool, f.path) for f in findings}
    assert ("license", "torchtitan/tp_note.py") in found
    assert ("ufmt", "torchtitan/tp_note.py") in found
    assert any(f.tool == "flake8" and f.message.startswith("F401") for f in findings)


def test_pr_description_names_the_pinned_main_commit():
    main = Workspace(root=ROOT, target_name="main")
    commit = main.target.pin.commit
    assert pr.based_on(main) == f"The stack applies to `main` at {commit} with plain `git am`."


def test_main_table_reads_the_series_helper_from_the_config():
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "series"), "table", "--target", "main",
         "--json"],
        capture_output=True, text=True, timeout=900,
    )
    main = Workspace(root=ROOT, target_name="main")
    if not (main.patches_dir / "series").read_text().count(".patch"):
        assert result.returncode == 2 and "has no series yet" in result.stderr
        return
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads(result.stdout)
    qwen = {row["flavor"]: row for row in rows if row["model"] == "qwen3_5"}
    assert qwen["debugmodel_moe"]["heads"]["kv"] == [2]
    assert qwen["debugmodel_moe"]["valid_tp"] == [1, 2]
