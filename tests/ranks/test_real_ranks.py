"""Tensor parallelism on real processes: torchrun, gloo, CPU.

A fake process group shows that the check runs; only real ranks show that
every rank stops (none is left waiting in a collective), that the bug is
real, and that an accepted degree computes what TP=1 computes.

torchrun stops the remaining ranks as soon as it sees one fail. To observe
each rank's own exit, it polls every ``MONITOR_SECONDS``; the process group
times out after ``PG_TIMEOUT_SECONDS``, so a rank left waiting in a
collective fails the test instead of stalling it, and the whole launch is
bounded by ``LAUNCH_TIMEOUT_SECONDS``.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT
from patchset import base

WORKER = Path(__file__).with_name("tp_rank.py")
SCRIPTS = ROOT / "scripts"
MONITOR_SECONDS = 30
PG_TIMEOUT_SECONDS = 120
LAUNCH_TIMEOUT_SECONDS = 600
# float32 on both sides; TP changes only the order of the reductions.
LOGIT_ATOL = 1e-3

pytestmark = pytest.mark.xdist_group("ranks")  # one launch at a time on 2 cores


def torchrun(tree: Path, out: Path, *, nproc: int, args: list[str]) -> dict:
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone",
         f"--nproc-per-node={nproc}", f"--monitor-interval={MONITOR_SECONDS}",
         str(WORKER), "--out", str(out), f"--pg-timeout={PG_TIMEOUT_SECONDS}", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": f"{tree}{os.pathsep}{SCRIPTS}",
             "OMP_NUM_THREADS": "1"},
        timeout=LAUNCH_TIMEOUT_SECONDS,
    )
    reports = [json.loads(path.read_text()) for path in sorted(out.glob("rank*.json"))]
    for report in reports:
        assert tree.resolve() in Path(report["torchtitan"]).resolve().parents
    return {
        "code": result.returncode,
        "reports": reports,
        "output": result.stdout + result.stderr,
        "seconds": time.monotonic() - started,
    }


def test_tp4_every_rank_fails_fast_with_the_same_error(v03_workspace, tmp_path):
    run = torchrun(v03_workspace.fork_dir, tmp_path, nproc=4, args=["--mode", "launch"])
    assert run["code"] != 0
    reports = run["reports"]
    assert sorted(r["rank"] for r in reports) == [0, 1, 2, 3], run["output"][-3000:]
    messages = {r["error"] for r in reports}
    assert len(messages) == 1, messages
    message = messages.pop()
    assert message.startswith("tensor_parallel_degree=4 does not divide every head count")
    assert "  n_kv_heads=2 in layers " in message
    for report in reports:
        assert (report["stage"], report["error_type"]) == ("parallelize", "ValueError")
        assert report["seconds"] < PG_TIMEOUT_SECONDS
    # Each rank exited on its own with status 1; none was stopped by torchrun.
    assert run["output"].count("exitcode  : 1 ") == 4, run["output"][-3000:]
    assert "SIGTERM" not in run["output"]


def test_tp4_on_the_pristine_base_gets_past_parallelize_and_fails_later(
    v03_workspace, tmp_path
):
    pristine = base.ensure_pristine_tree(v03_workspace)
    run = torchrun(
        pristine, tmp_path, nproc=4, args=["--mode", "launch", "--all-full-attention"]
    )
    assert run["code"] != 0
    reports = run["reports"]
    assert sorted(r["rank"] for r in reports) == [0, 1, 2, 3], run["output"][-3000:]
    for report in reports:
        assert report["stage"] == "forward", report
        assert not report["error"].startswith("tensor_parallel_degree=")
        assert report["error_type"] != "ValueError", report
    print("pristine failure:", {(r["error_type"], r["error"]) for r in reports})


@pytest.mark.parametrize(
    "model, flavor", [("qwen3_5", "debugmodel_moe"), ("llama3", "debugmodel")]
)
def test_tp2_logits_match_tp1(v03_workspace, tmp_path, model, flavor):
    run = torchrun(
        v03_workspace.fork_dir, tmp_path, nproc=2,
        args=["--mode", "compare", "--model", model, "--flavor", flavor]
        + (["--all-full-attention"] if model == "qwen3_5" else []),
    )
    assert run["code"] == 0, run["output"][-3000:]
    reports = run["reports"]
    assert [r["rank"] for r in reports] == [0, 1]
    for report in reports:
        assert report["outcome"] == "ok", report
        assert report["max_abs_logit_diff"] <= LOGIT_ATOL, report
        # FlexAttention has no backward on CPU; where it has, grads must match.
        if report["backward"] == "ok":
            assert report["max_abs_grad_diff"] <= LOGIT_ATOL, report
        else:
            assert report["backward"].startswith("NotImplementedError: FlexAttention")
    print(f"{model} {flavor}: max |logit diff| TP=2 vs TP=1 = "
          f"{max(r['max_abs_logit_diff'] for r in reports):.3g}")
