"""Run the fork's upstream-bound unit tests against a torchtitan tree."""

import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from patchset import bisect, git
from patchset.series import BASE_TAG
from patchset.workspace import Workspace

UNIT_TESTS = "tests/unit_tests"


def series_test_files(fork: Path) -> list[str]:
    """The test files the fork's series adds or changes under tests/unit_tests."""
    names = git.output(
        fork, "diff", "--name-only", "--diff-filter=AM", f"{BASE_TAG}..HEAD", "--", UNIT_TESTS
    ).split()
    if not names:
        raise AssertionError(f"the series of {fork} adds no test under {UNIT_TESTS}")
    return names


def copy_series_tests(fork: Path, dest: Path) -> Path:
    """Copy the series' test files to ``dest``: the tests of the fix, to run
    against any tree. The rest of upstream's unit tests is bisect-check's job."""
    dest.mkdir()
    for name in series_test_files(fork):
        shutil.copy(fork / name, dest / Path(name).name)
    return dest


def run_unit_tests(*, tests: Path, torchtitan_tree: Path, report: Path) -> dict:
    """Run pytest on ``tests`` (a folder or a file) with torchtitan_tree first
    on the path; return the exit code, each test's failure (None if it
    passed) and the output."""
    folder = tests if tests.is_dir() else tests.parent
    result = subprocess.run(
        [
            sys.executable, "-m", "pytest", str(tests), "-q", "-p", "no:cacheprovider",
            "-n", "0", "--continue-on-collection-errors", f"--junitxml={report}",
            "--rootdir", str(folder),
        ],
        capture_output=True,
        text=True,
        cwd=folder,
        env={**os.environ, "PYTHONPATH": str(torchtitan_tree)},
        timeout=1800,
    )
    outcomes = junit_outcomes(report)
    return {"returncode": result.returncode, "outcomes": outcomes, "output": result.stdout}


def junit_outcomes(report: Path, *, modules: set[str] | None = None) -> dict[str, str | None]:
    """Each test's failure (None if it passed) by ``Class::test`` (or
    ``test_module::test``); only the test modules ``modules`` names, if given."""
    outcomes = {}
    for case in ET.parse(report).iter("testcase"):
        classname = case.get("classname", "")
        if modules is not None and not modules & set(classname.split(".")):
            continue
        failure = case.find("failure")
        if failure is None:
            failure = case.find("error")
        name = f"{classname.rsplit('.', 1)[-1]}::{case.get('name')}"
        outcomes[name] = (
            None
            if failure is None
            else f"{failure.get('message') or ''}\n{failure.text or ''}"
        )
    return outcomes


def run_series_tests(tree: Path, *, fork: Path, tmp_path: Path) -> dict:
    """The series' test files of ``fork``, run against ``tree``."""
    tests = copy_series_tests(fork, tmp_path / "unit_tests")
    return run_unit_tests(tests=tests, torchtitan_tree=tree, report=tmp_path / "r.xml")


def series_tests_on_the_fork(workspace: Workspace, tmp_path: Path) -> dict:
    """The series' tests on the fork: read from bisect-check's report of the
    same tree (CI runs bisect-check first), else run here."""
    report = bisect.last_full_run(workspace, python=Path(sys.executable))
    if report is None:
        fork = workspace.fork_dir
        return run_series_tests(fork, fork=fork, tmp_path=tmp_path)
    modules = {Path(name).stem for name in series_test_files(workspace.fork_dir)}
    outcomes = junit_outcomes(report, modules=modules)
    failed = any(message is not None for message in outcomes.values())
    return {"returncode": int(failed), "outcomes": outcomes,
            "output": f"outcomes read from bisect-check's report {report}"}



def outcome_of(run: dict, test: str) -> str | None:
    """The failure of the one test of ``run`` named ``test`` (None: it passed)."""
    (name,) = [name for name in run["outcomes"] if name.endswith(f"::{test}")]
    return run["outcomes"][name]


def assert_gradient_tests_fail_for_partial_dtensor(run: dict) -> None:
    """``test_tp_gradients.py`` on an unfixed tree: under partial_dtensor the
    MoE input gradient loses the routed experts' share and the scaled rowwise
    bias gradient is 1/TP; spmd_types is right."""
    moe = outcome_of(run, "test_moe_gradients_match_tp1")
    assert moe, "the MoE gradient test passed on the unfixed tree"
    for model in ("qwen3", "qwen3_5", "deepseek_v3", "gpt_oss"):
        assert f"partial_dtensor {model} " in moe, moe
    assert "spmd_types qwen3" not in moe, moe
    bias = outcome_of(run, "test_scaled_bias_rowwise_linear_gradients_match_tp1")
    assert "partial_dtensor bias.grad: 0.5" in bias, bias
    assert "spmd_types bias.grad" not in bias, bias
