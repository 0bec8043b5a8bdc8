"""The main job, end to end, and its behaviour before the fix lands."""

import subprocess
import sys
from pathlib import Path

from conftest import ROOT, ScratchWorkspace
from patchset import demo
from patchset.workspace import Workspace


def test_demo_shows_the_failure_and_the_fix():
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "series"), "demo"],
        capture_output=True, text=True, timeout=1800,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    # What users get today when the config-time check is not in the way.
    assert "Sharding propagation failed for aten.view.default" in out
    # What they get with the series: at parallelize_fn, nothing sharded.
    assert "ValueError during parallelize" in out
    assert "0 parameters became DTensors" in out
    assert "n_kv_heads=2 in layers 3" in out
    assert "OK: forward pass returned logits [1, 32, 248320]" in out
    assert out.rstrip().endswith("runs TP=2.")


def test_demo_with_an_empty_series_says_so(scratch: ScratchWorkspace, capsys):
    for patch in scratch.patches_dir.glob("*.patch"):
        patch.unlink()
    (scratch.patches_dir / "series").write_text("")
    code = demo.run(Workspace(root=scratch.root), python=Path(sys.executable))
    out = capsys.readouterr().out
    assert code == 0
    assert "The series is empty" in out
    assert "Sharding propagation failed for aten.view.default" in out
