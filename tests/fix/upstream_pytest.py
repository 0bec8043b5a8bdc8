"""Run the fork's upstream-bound unit tests against a torchtitan tree."""

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path


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
    outcomes = {}
    for case in ET.parse(report).iter("testcase"):
        failure = case.find("failure")
        if failure is None:
            failure = case.find("error")
        name = f"{case.get('classname', '').rsplit('.', 1)[-1]}::{case.get('name')}"
        outcomes[name] = (
            None
            if failure is None
            else f"{failure.get('message') or ''}\n{failure.text or ''}"
        )
    return {"returncode": result.returncode, "outcomes": outcomes, "output": result.stdout}
