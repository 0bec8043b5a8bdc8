"""The main job, end to end for every target, and its behaviour before a
target's fix lands."""

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, ScratchWorkspace, V03
from patchset import demo
from patchset.series import read_series
from patchset.workspace import Workspace


def summary_rows(out: str) -> dict[str, list[str]]:
    """The demo's closing table: target name to its four cells."""
    rows = {}
    for line in out.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("| ") and len(cells) == 5 and cells[0] != "target":
            rows[cells[0]] = cells[1:]
    return rows


@pytest.mark.proof
def test_demo_shows_the_failure_and_the_fix():
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "series"), "demo"],
        capture_output=True, text=True, timeout=1800,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    # What users get today when the config-time check is not in the way.
    assert "Sharding propagation failed for aten.view.default" in out
    # What they get with the v0.3 series: at parallelize_fn, nothing sharded.
    assert "ValueError during parallelize" in out
    assert "0 parameters became DTensors" in out
    assert "n_kv_heads=2 in layers 3" in out
    assert "OK: forward pass returned logits [1, 32, 248320]" in out
    assert out.rstrip().endswith("runs TP=2, with TP=1's gradients (to 0.0001).")

    workspace = Workspace(root=ROOT)
    rows = summary_rows(out)
    assert list(rows) == workspace.targets().names
    for each in workspace.every_target():
        pristine, patched, accepted, gradients = rows[each.target.name]
        assert pristine.startswith("RuntimeError in forward"), (each.target.name, pristine)
        if read_series(each):
            assert patched.startswith("ValueError in parallelize"), patched
            assert patched.endswith("; 0 DTensors made"), patched
            assert accepted.startswith("OK, logits ["), accepted
            before, after = (float(error) for error in gradients.split(" → "))
            assert before > 1e-2 and after <= demo.GRADIENT_RTOL, gradients
        else:
            assert patched == accepted == gradients == "no fix yet (empty series)"


@pytest.mark.parametrize("target", Workspace(root=ROOT).targets().names)
def test_each_fork_rejects_tp4_at_parallelize_fn_and_runs_tp2(workspace, target):
    """The demo's scenarios on the fork alone: the quick tier's check that
    each target's series does what it is for."""
    rejected, config_time, accepted = demo.fork_scenarios(
        workspace.at(target), python=Path(sys.executable)
    )
    assert demo.fix_is_right(rejected, accepted, config_time=config_time) == [], (
        rejected, config_time, accepted)


def test_demo_with_an_empty_series_says_so(scratch: ScratchWorkspace, capsys):
    for patch in scratch.patches_dir.glob("*.patch"):
        patch.unlink()
    scratch.series_file.write_text("")
    assert scratch.series("fork").code == 0
    workspace = Workspace(root=scratch.root, target_name=V03)
    code = demo.run_targets([workspace], python=Path(sys.executable))
    out = capsys.readouterr().out
    assert code == 0
    assert "The series is empty" in out
    assert "Sharding propagation failed for aten.view.default" in out
    assert summary_rows(out)[V03][1] == "no fix yet (empty series)"
