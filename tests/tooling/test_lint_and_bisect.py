"""`lint` and `bisect-check` catch a bad patch, and name it.

Each test builds a scratch fork from the series' first patch, commits a
deliberately bad change on top, and exports it as a second patch.
"""

import sys
from pathlib import Path

import pytest

from conftest import git, keep_first_patch, ScratchWorkspace
from patchset import bisect, lint

PYTHON = Path(sys.executable)
HELPER = "torchtitan/distributed/utils.py"
MODULE = "torchtitan/protocols/module.py"


@pytest.fixture
def first_patch_only(scratch: ScratchWorkspace) -> ScratchWorkspace:
    return keep_first_patch(scratch)


def add_patch(workspace: ScratchWorkspace, subject: str, files: dict[str, str]) -> str:
    """Commit ``files`` (path: new text) in the fork and export; return the
    new patch's name."""
    for path, text in files.items():
        (workspace.fork_dir / path).write_text(text)
    git(workspace.fork_dir, "add", "-A")
    git(workspace.fork_dir, "commit", "-q", "-m", subject)
    result = workspace.series("export")
    assert result.code == 0, result.err
    return workspace.series_file.read_text().split()[-1]


def test_lint_blames_only_the_bad_patch_for_what_it_adds(first_patch_only):
    fork = first_patch_only.fork_dir
    helper = (fork / HELPER).read_text()
    bad = add_patch(
        first_patch_only,
        "[distributed] a patch that breaks upstream's lint rules",
        {
            "torchtitan/distributed/no_header.py": "import os\nx = {  'a':1 }\n",
            # An untouched pre-existing finding must not be blamed on it.
            HELPER: helper + "\n\ndef _unused(value):\n    return value  \n",
        },
    )
    report = lint.lint_series(first_patch_only, python=PYTHON)
    first, second = report
    assert report[first] == []
    found = {(f.tool, f.path) for f in report[bad]}
    assert ("license", "torchtitan/distributed/no_header.py") in found
    assert ("ufmt", "torchtitan/distributed/no_header.py") in found
    assert ("whitespace", HELPER) in found
    assert any(
        f.tool == "flake8" and f.message.startswith("F401") for f in report[bad]
    ), report[bad]
    assert {f.path for f in report[bad]} == {"torchtitan/distributed/no_header.py", HELPER}
    assert lint.print_report(report) == 1


def test_bisect_check_stops_at_the_patch_that_breaks_a_test(first_patch_only):
    """The first patch makes module inputs redistribute synchronously; a
    patch that undoes it breaks the first patch's gradient test."""
    module = (first_patch_only.fork_dir / MODULE).read_text()
    synchronous = "value = value.redistribute(placements=desired)\n"
    assert synchronous in module
    bad = add_patch(
        first_patch_only,
        "[protocols] redistribute module inputs asynchronously again",
        {MODULE: module.replace(
            synchronous, "value = value.redistribute(placements=desired, async_op=True)\n"
        )},
    )
    lines = []
    steps = bisect.check_series(first_patch_only, python=PYTHON, report=lines.append)
    assert [step.ok for step in steps] == [True, False]
    assert bisect.first_broken(steps) == bad
    # Step 1 ends no pull request: only the test file it adds ran there. The
    # last step always runs every unit test.
    assert steps[0].summary.startswith("1 changed test file(s): ")
    assert steps[1].summary.startswith("every unit test: ")
    assert "FAILED" in steps[1].summary and "failed" in steps[1].summary
    # The scratch checkout is gone; the fork is untouched.
    assert git(first_patch_only.fork_dir, "worktree", "list").count("\n") == 1


def test_bisect_check_blames_only_tests_that_passed_on_the_base():
    lines = [
        "FAILED tests/unit_tests/test_a.py::test_one - AssertionError: no",
        "ERROR tests/unit_tests/test_b.py - ImportError while impor...",
        "2 failed, 5 passed",
    ]
    failing = bisect.failing_tests(lines)
    assert failing == {"tests/unit_tests/test_a.py::test_one", "tests/unit_tests/test_b.py"}
    run = bisect.TestRun(completed=True, failing=failing, last_line=lines[-1])
    assert bisect.verdict(run, baseline=failing)[0] is True
    ok, summary = bisect.verdict(run, baseline=frozenset({"tests/unit_tests/test_b.py"}))
    assert not ok
    assert "FAILED tests/unit_tests/test_a.py::test_one" in summary
    assert "FAILED tests/unit_tests/test_b.py" not in summary
    crashed = bisect.TestRun(completed=False, failing=frozenset(), last_line="interrupted")
    assert bisect.verdict(crashed, baseline=frozenset())[0] is False
