"""Tensor parallelism on real processes: one per rank, gloo, CPU.

A fake process group shows that the check runs; only real ranks show that
every rank stops (none is left waiting in a collective), that the bug is
real, and that an accepted degree computes what TP=1 computes.

The test starts the ranks itself, as torchrun would (``RANK``,
``WORLD_SIZE``, ``MASTER_ADDR``/``MASTER_PORT``), and holds the rendezvous
store on a port the system picks, so that no two launches can race for a
port; it waits for each rank's own exit status, so a rank that is not
stopped by its own error shows up as one still running. The process group
times out after ``PG_TIMEOUT_SECONDS``, so a rank left waiting in a
collective fails the test instead of stalling it, and the whole launch is
bounded by ``LAUNCH_TIMEOUT_SECONDS``.
"""

import json
import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest

from conftest import ROOT, V03
from patchset import base

WORKER = Path(__file__).with_name("tp_rank.py")
SCRIPTS = ROOT / "scripts"
HOST = "127.0.0.1"
PG_TIMEOUT_SECONDS = 120
LAUNCH_TIMEOUT_SECONDS = 600
# float32 on both sides; TP changes only the order of the reductions.
LOGIT_ATOL = 1e-3

# One launch at a time on 2 cores.
pytestmark = [pytest.mark.xdist_group("ranks"), pytest.mark.proof]


def launch(
    tree: Path, out: Path, *, nproc: int, args: list[str], worker: Path = WORKER
) -> dict:
    """Run ``nproc`` ranks of ``worker`` with ``tree`` first on PYTHONPATH;
    return each rank's exit status and report."""
    import torch.distributed as dist

    started = time.monotonic()
    store = dist.TCPStore(HOST, 0, world_size=nproc + 1, is_master=True,
                          timeout=timedelta(seconds=PG_TIMEOUT_SECONDS),
                          wait_for_workers=False)
    env = {**os.environ, "PYTHONPATH": f"{tree}{os.pathsep}{SCRIPTS}",
           "OMP_NUM_THREADS": "1", "MASTER_ADDR": HOST, "MASTER_PORT": str(store.port),
           "WORLD_SIZE": str(nproc)}
    out.mkdir(parents=True, exist_ok=True)
    logs = [out / f"rank{rank}.log" for rank in range(nproc)]
    ranks = []
    try:
        for rank, log in enumerate(logs):
            with log.open("w") as sink:
                ranks.append(subprocess.Popen(
                    [sys.executable, str(worker), "--out", str(out),
                     f"--pg-timeout={PG_TIMEOUT_SECONDS}", *args],
                    stdout=sink, stderr=subprocess.STDOUT,
                    env={**env, "RANK": str(rank), "LOCAL_RANK": str(rank)},
                ))
        deadline = started + LAUNCH_TIMEOUT_SECONDS
        codes = [rank.wait(timeout=max(0.0, deadline - time.monotonic())) for rank in ranks]
    finally:
        for rank in ranks:
            rank.kill()
    reports = [json.loads(path.read_text()) for path in sorted(out.glob("rank*.json"))]
    for report in reports:
        assert tree.resolve() in Path(report["torchtitan"]).resolve().parents
    return {
        "codes": codes,
        "reports": reports,
        "output": "".join(log.read_text() for log in logs),
        "seconds": time.monotonic() - started,
    }


def test_tp4_every_rank_fails_fast_with_the_same_error(v03_workspace, tmp_path):
    run = launch(v03_workspace.fork_dir, tmp_path, nproc=4, args=["--mode", "launch"])
    # Each rank exited on its own with status 1: none was left waiting.
    assert run["codes"] == [1, 1, 1, 1], run["output"][-3000:]
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


def test_tp4_on_the_pristine_base_gets_past_parallelize_and_fails_later(
    v03_workspace, tmp_path
):
    pristine = base.ensure_pristine_tree(v03_workspace)
    run = launch(
        pristine, tmp_path, nproc=4, args=["--mode", "launch", "--all-full-attention"]
    )
    assert run["codes"] == [1, 1, 1, 1], run["output"][-3000:]
    reports = run["reports"]
    assert sorted(r["rank"] for r in reports) == [0, 1, 2, 3], run["output"][-3000:]
    for report in reports:
        assert report["stage"] == "forward", report
        assert not report["error"].startswith("tensor_parallel_degree=")
        assert report["error_type"] != "ValueError", report
    print("pristine failure:", {(r["error_type"], r["error"]) for r in reports})


# (model, flavor, variant, tolerance). Relative errors (||a - b|| / ||b||
# per tensor), float32 models: the stock MoE experts compute in bfloat16,
# which sets a floor of about 2.4e-3 on the gradients; with float32 experts
# (tp_rank's variant) and in llama3, TP only reorders the reductions.
COMPARED = (
    ("qwen3_5", "debugmodel_moe", "", 1e-2),
    ("qwen3_5", "debugmodel_moe", "float32-experts", 1e-4),
    ("qwen3", "debugmodel_moe", "float32-experts", 1e-4),
    ("llama3", "debugmodel", "", 1e-4),
)
LOGIT_RTOL = 1e-4


@pytest.mark.parametrize("target", ("main", V03))
def test_tp2_logits_and_gradients_match_tp1(workspace, target, tmp_path, subtests):
    """One launch of two ranks per target compares every model of COMPARED
    in turn; one test for it, so that no two xdist workers start it."""
    run = launch(
        workspace.at(target).fork_dir, tmp_path, nproc=2,
        args=["--mode", "compare", "--all-full-attention", "--models",
              *(":".join(filter(None, entry[:3])) for entry in COMPARED)],
    )
    assert run["codes"] == [0, 0], run["output"][-3000:]
    for model, flavor, variant, grad_rtol in COMPARED:
        with subtests.test(model=model, flavor=flavor, variant=variant):
            reports = [r for r in run["reports"]
                       if (r["model"], r["flavor"], r["variant"]) == (model, flavor, variant)]
            assert [r["rank"] for r in reports] == [0, 1]
            for report in reports:
                assert report["outcome"] == "ok", report
                assert report["logit_error"] <= LOGIT_RTOL, report
                assert report["worst_grad_error"][1] <= grad_rtol, report
            worst = max((r["worst_grad_error"] for r in reports), key=lambda e: e[1])
            print(f"{target} {model} {flavor} {variant} TP=2 vs TP=1, relative errors: "
                  f"logits {max(r['logit_error'] for r in reports):.2g}, worst gradient "
                  f"{worst[0]} {worst[1]:.2g}")
