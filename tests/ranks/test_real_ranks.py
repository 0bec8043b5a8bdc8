"""Tensor parallelism on real processes: one per rank, gloo, CPU.

A fake process group shows that the check runs; only real ranks show that
every rank stops (none is left waiting in a collective), that the bug is
real, and that an accepted degree computes what TP=1 computes.

The ranks are started as torchrun would (``patchset.probes.ranks``); a
rank left waiting in a collective times out there and fails the test.
"""

import pytest

from conftest import V03
from patchset import base
from patchset.probes.ranks import FLOAT32_EXPERTS, launch, PG_TIMEOUT_SECONDS, PROBES_DIR

WORKER = PROBES_DIR / "tp_rank.py"

# ranks.launch runs one launch at a time (memory).
pytestmark = pytest.mark.proof


def test_tp4_every_rank_fails_fast_with_the_same_error(v03_workspace, tmp_path):
    run = launch(v03_workspace.fork_dir, tmp_path, nproc=4, worker=WORKER,
                 args=["--mode", "launch"])
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
        pristine, tmp_path, nproc=4, worker=WORKER,
        args=["--mode", "launch", "--all-full-attention"],
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
    ("qwen3_5", "debugmodel_moe", FLOAT32_EXPERTS, 1e-4),
    ("qwen3", "debugmodel_moe", FLOAT32_EXPERTS, 1e-4),
    ("llama3", "debugmodel", "", 1e-4),
)
LOGIT_RTOL = 1e-4


@pytest.mark.parametrize("target", ("main", V03))
def test_tp2_logits_and_gradients_match_tp1(workspace, target, tmp_path, subtests):
    """One launch of two ranks per target compares every model of COMPARED
    in turn; one test for it, so that no two xdist workers start it."""
    run = launch(
        workspace.at(target).fork_dir, tmp_path, nproc=2, worker=WORKER,
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
