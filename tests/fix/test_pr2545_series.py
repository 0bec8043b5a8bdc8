"""The pr2545 series' upstream-bound tests: green on the fork, red on the
branch for the reason each patch exists.

The negative controls copy the series' test files into runs against two
trees: the pristine branch, where TP on qwen3_5_moe cannot even be set up,
and the branch with only the series' first patch (which makes TP run),
where every invalid degree goes through parallelize_fn unchecked and the
router's share of the MoE input gradient is counted TP times (the second
patch fixes that).
"""

import re

import pytest

from patchset import base
from upstream_pytest import outcome_of, run_series_tests, series_tests_on_the_fork

UNCHECKED = "parallelize_fn accepted tensor_parallel_degree="
REJECTION_TESTS = (
    "test_qwen3_5_moe_rejects_tp4[debugmodel-4-1]",
    "test_qwen3_5_moe_rejects_tp4[397b-a17b-8-2]",
    "test_qwen3_5_moe_35b_a3b_message_names_the_layers",
    "test_llama3_rejects_tp_above_its_kv_heads",
    "test_llama4_rejects_tp_above_its_kv_heads[17bx16e]",
    "test_qwen3_rejects_tp_above_its_kv_heads[0.6B-16-8-1, 2, 4, 8]",
    "test_deepseek_v3_rejects_tp_above_its_heads",
    "test_gpt_oss_rejects_tp_above_its_kv_heads",
    "test_graph_trainer_rejects_tp_above_the_heads[llama3-8B-16-n_kv_heads=8]",
)

pytestmark = pytest.mark.proof


@pytest.fixture(scope="module")
def pr2545(workspace):
    return workspace.at("pr2545")


def test_series_tests_pass_on_the_pr2545_fork(pr2545, tmp_path):
    run = series_tests_on_the_fork(pr2545, tmp_path)
    assert run["returncode"] == 0, run["output"][-3000:]
    assert len(run["outcomes"]) >= 40
    assert all(message is None for message in run["outcomes"].values())


def test_tp_does_not_run_on_the_pristine_branch(pr2545, tmp_path):
    pristine = base.ensure_pristine_tree(pr2545)
    run = run_series_tests(pristine, fork=pr2545.fork_dir, tmp_path=tmp_path)
    assert run["returncode"] != 0
    built = [n for n in run["outcomes"] if "test_qwen3_5_moe_accepts_tp2[" in n]
    assert len(built) == 10
    # The first call fails importing torch internals that no release has
    # together; later ones (the import is attempted once) on NoParallel's
    # removed argument. Both are what the series' first patch fixes.
    reasons = {
        "cannot import name 'pointwise_strategy'",
        "NoParallel.__init__() got an unexpected keyword argument 'use_local_output'",
    }
    found = {
        reason for name in built for reason in reasons if reason in run["outcomes"][name]
    }
    assert found == reasons
    for name in built:
        assert any(reason in run["outcomes"][name] for reason in reasons), name


def test_checks_are_missing_once_tp_runs(pr2545, tmp_path):
    tree = base.ensure_tree_after_first_patch(pr2545)
    run = run_series_tests(tree, fork=pr2545.fork_dir, tmp_path=tmp_path)
    assert run["returncode"] != 0
    # TP runs: the valid degrees shard the models.
    for test in (
        "test_qwen3_5_moe_accepts_tp2[397b-a17b-4-2]",
        "test_llama3_accepts_tp_that_divides_its_kv_heads",
        "test_qwen3_accepts_tp_that_divides_its_kv_heads",
    ):
        assert outcome_of(run, test) is None, test
    # The check is missing: every invalid degree goes through parallelize_fn.
    for test in REJECTION_TESTS:
        assert UNCHECKED in (outcome_of(run, test) or ""), test
    helper_tests = [n for n in run["outcomes"] if "test_tp_degree_validation" in n]
    assert helper_tests and all(
        "cannot import name 'get_tp_sharded_head_counts'" in run["outcomes"][n]
        for n in helper_tests
    ), helper_tests
    # The MoE input gradient is wrong at TP=2, and only the input gradient.
    moe = outcome_of(run, "test_moe_gradients_match_tp1") or ""
    wrong = re.findall(r"^E?\s*(\w+) \w+ ([\w.]+): [\d.e+-]+$", moe, re.MULTILINE)
    assert set(wrong) == {
        (model, "input.grad")
        for model in ("qwen3_5_moe", "qwen3", "llama4", "deepseek_v3", "gpt_oss")
    }, moe
    # Through the whole model the error reaches every layer: each MoE
    # layer's ffn_norm, and the GatedDeltaNet weights before them.
    model = outcome_of(run, "test_qwen3_5_moe_model_gradients_match_tp1") or ""
    wrong = dict(re.findall(r"qwen3_5_moe debugmodel ([\w.]+): ([\d.e+-]+)$", model,
                            re.MULTILINE))
    assert "layers.0.attn.in_proj_qkv.weight.grad" in wrong, model
    for layer in range(8):
        assert float(wrong.get(f"layers.{layer}.ffn_norm.weight.grad", 0)) > 1e-2, model
