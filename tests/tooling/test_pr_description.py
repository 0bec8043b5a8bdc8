"""`pr-description`: the PR text and the mailed series, from the series."""

import subprocess
import sys

import pytest

from conftest import ROOT, V03
from patchset import pr
from patchset.errors import PatchsetError


def test_pr_description_and_cover_letter(tmp_path):
    mail = tmp_path / "mail"
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "series"), "pr-description",
         "--target", V03, "--cover-letter", str(mail)],
        capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    body = result.stdout
    for heading in ("## Problem", "## What changed", "## Affected models",
                    "## How it was tested"):
        assert heading in body
    assert "#2574" in body.split("## What changed")[0]
    assert "The stack applies to the torchtitan 0.3.0 release." in body
    assert body.rstrip().endswith("Fixes #2574")
    patches = sorted(p for p in (ROOT / "patches" / V03).glob("*.patch"))
    assert body.count("\n- **[") == len(patches)
    assert "[PATCH]" not in body
    assert "`qwen35_122b_a10b`, `qwen35_397b_a17b`" in body
    assert "| qwen3_5 | `397B-A17B` | 32 | 2 | 16 / 64 | 16 | 2 | 1, 2 | " \
        "`qwen35_397b_a17b` TP=2 ✓<br>`qwen35_397b_a17b_tp8` TP=8 ✓ |" in body
    assert "pytest tests/unit_tests/" in body

    written = sorted(path.name for path in mail.iterdir())
    assert written[0] == "0000-cover-letter.patch"
    assert written[1:] == [patch.name for patch in patches]
    cover = (mail / written[0]).read_text()
    assert f"[PATCH 00/{len(patches):02d}] Check the tensor-parallel degree" in cover
    assert "*** BLURB HERE ***" not in cover and "## Affected models" in cover


def test_each_target_names_its_tree_and_its_problem(workspace):
    """The sentences of the PR text that differ between targets."""
    main, release, branch = (workspace.at(name) for name in ("main", V03, "pr2545"))
    assert pr.based_on(main).startswith("The stack applies to `main` at b5bcd76c66d0")
    assert pr.based_on(branch).startswith(
        "The stack applies to the branch of pull request #2545 at 1ecadc988444"
    )
    assert [pr.closing_line(each) for each in (main, release, branch)] == [
        "Fixes #2574", "Fixes #2574", "Refs #2574"
    ]
    for each in (main, release, branch):
        assert "#2574" in pr.problem(each)
    assert "update_from_config" in pr.problem(main)
    assert "NoParallel" in pr.problem(branch)


def test_a_series_without_its_problem_text_is_refused(scratch):
    (scratch.patches_dir / pr.PROBLEM_FILE).unlink()
    with pytest.raises(PatchsetError, match=r"patches/v0\.3/problem\.md is missing"):
        pr.problem(scratch)
