"""`pr-description`: the PR text and the mailed series, from the series."""

import subprocess
import sys

from conftest import ROOT, V03


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
        "`qwen35_397b_a17b` TP=2 ✓ |" in body
    assert "pytest tests/unit_tests/" in body

    written = sorted(path.name for path in mail.iterdir())
    assert written[0] == "0000-cover-letter.patch"
    assert written[1:] == [patch.name for patch in patches]
    cover = (mail / written[0]).read_text()
    assert f"[PATCH 00/{len(patches):02d}] Check the tensor-parallel degree" in cover
    assert "*** BLURB HERE ***" not in cover and "## Affected models" in cover
