"""The main series' upstream-bound tests: green on the fork, red on pristine
main for the reason the series exists.

The negative control copies the series' test files into a run against the
pristine main tree: the tests of the check must fail there because the
check is missing (the helper does not exist, or parallelize_fn accepts an
invalid degree), while upstream's own tests and the valid degree pass.
"""

import pytest

from patchset import base
from upstream_pytest import (
    assert_gradient_tests_fail_for_partial_dtensor,
    outcome_of,
    run_series_tests,
    series_tests_on_the_fork,
)

MISSING_HELPER = "cannot import name 'validate_tensor_parallel_degree'"

pytestmark = pytest.mark.proof


@pytest.fixture(scope="module")
def main(workspace):
    return workspace.at("main")


def test_series_tests_pass_on_the_main_fork(main, tmp_path):
    run = series_tests_on_the_fork(main, tmp_path)
    assert run["returncode"] == 0, run["output"][-3000:]
    assert len(run["outcomes"]) >= 15
    assert all(message is None for message in run["outcomes"].values())


def test_series_tests_fail_on_pristine_main_for_the_right_reason(main, tmp_path):
    pristine = base.ensure_pristine_tree(main)
    run = run_series_tests(pristine, fork=main.fork_dir, tmp_path=tmp_path)
    assert run["returncode"] != 0
    outcomes = run["outcomes"]

    # Upstream's own tests of the config-time check, and a valid degree.
    upstream = {n: m for n, m in outcomes.items() if "TestTPKVHeadsValidation::" in n}
    assert len(upstream) == 5 and all(m is None for m in upstream.values()), upstream
    assert outcome_of(run, "test_tp2_shards_kv_heads") is None

    # The check is missing: parallelize_fn accepts TP=4 on Qwen3.5 MoE ...
    tp4 = outcome_of(run, "test_tp4_raises_at_config_time_and_in_parallelize_fn")
    assert "None != 'tensor_parallel_degree (4) must divide n_kv_heads (2).'" in tp4
    # ... and every other parallelize_fn goes past the point where it would check.
    assert "parallelize_fn did not check the TP degree first" in outcome_of(
        run, "test_invalid_degree_raises_before_sharding"
    )
    assert "cannot import name '_tp_sharded_head_counts'" in outcome_of(
        run, "test_head_counts_are_found_where_traverse_finds_configs"
    )
    for test in (
        "test_kv_heads_message",
        "test_gated_delta_net_heads_alone",
        "test_hf_transformers_backend_checks_its_kv_heads",
    ):
        assert MISSING_HELPER in outcome_of(run, test), test
    # The recipe audit cannot import the helper; pytest reports the module.
    audit = [m for n, m in outcomes.items() if "test_recipe_tp_degree" in n]
    assert audit and all(m and "validate_tensor_parallel_degree" in m for m in audit), audit
    # KV-head replication: its tests cannot import the helper they extend,
    # nor the K/V gather.
    replication = [m for n, m in outcomes.items() if "test_kv_head_replication" in n]
    assert replication and all(
        m and "validate_tensor_parallel_degree" in m for m in replication
    ), replication
    gather = [m for n, m in outcomes.items() if "test_kv_heads_for_local_queries" in n]
    assert gather and all(m and "kv_heads_for_local_queries" in m for m in gather), gather
    # The gradient fixes.
    assert_gradient_tests_fail_for_partial_dtensor(run)
