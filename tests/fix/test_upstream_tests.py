"""The tests the series adds upstream: green on the fork, red on the base.

The negative control runs the series' test files against the pristine
base and checks that each test of the fix fails for the reason it should
(the check is missing, or partial_dtensor's TP gradients are wrong), while
the tests of valid degrees still pass there.
The rest of upstream's unit tests is bisect-check's job: no new failure at
any step of the series.
"""


import pytest

from patchset import base
from recipe_audit import audit_cases, recipes_in_source
from upstream_pytest import (
    assert_gradient_tests_fail_for_partial_dtensor,
    run_series_tests,
    series_tests_on_the_fork,
)

# Test modules that import what the series adds (the helper, the K/V
# gather of KV-head replication), which the base does not have.
MISSING_IMPORT_TEST_FILES = (
    "test_tp_degree_validation.py",
    "test_tp_sharded_head_counts.py",
    "test_recipe_parallelism.py",
    "test_kv_head_replication.py",
    "test_kv_heads_for_local_queries.py",
)


pytestmark = pytest.mark.proof


def test_series_tests_pass_on_the_patched_fork(v03_workspace, tmp_path):
    run = series_tests_on_the_fork(v03_workspace, tmp_path)
    assert run["returncode"] == 0, run["output"][-3000:]
    assert len(run["outcomes"]) >= 60
    assert all(message is None for message in run["outcomes"].values())
    # The recipe audit among them covers every recipe the fork ships.
    expected = recipes_in_source(v03_workspace.fork_dir)
    assert len(expected) == 69
    assert set(audit_cases(run)) == expected


def test_series_tests_fail_on_the_pristine_base(v03_workspace, tmp_path):
    pristine = base.ensure_pristine_tree(v03_workspace)
    run = run_series_tests(pristine, fork=v03_workspace.fork_dir, tmp_path=tmp_path)
    assert run["returncode"] != 0
    outcomes = run["outcomes"]

    # The helper and the replication layer do not exist on the base.
    for name in MISSING_IMPORT_TEST_FILES:
        errors = [m for n, m in outcomes.items() if name.removesuffix(".py") in n]
        assert errors, name
        for message in errors:
            assert "cannot import name" in message, (name, message[:500])

    parallelize = {n: m for n, m in outcomes.items() if "test_parallelize_tp_degree" in n}
    rejects = {n: m for n, m in parallelize.items() if "rejects" in n}
    accepts = {n: m for n, m in parallelize.items() if "accepts" in n}
    config_time = {n: m for n, m in parallelize.items() if "config_time" in n}
    assert len(rejects) >= 20 and accepts and config_time
    for name, message in rejects.items():
        assert message and "parallelize_fn accepted tensor_parallel_degree=" in message, (
            name, message)
    for name, message in config_time.items():
        assert message is not None, f"{name} passed on the pristine base"
    assert all(message is None for message in accepts.values()), accepts
    # The gradient fixes.
    assert_gradient_tests_fail_for_partial_dtensor(run)
