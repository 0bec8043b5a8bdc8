"""Run a probe script in the project's venv against one torchtitan tree.

Probes live in ``patchset/probes/``; each prints one JSON report as its last
line that starts with ``{`` and names the torchtitan it imported.
"""

import json
import os
import subprocess
from pathlib import Path

from patchset.errors import PatchsetError

PROBES_DIR = Path(__file__).resolve().parent / "probes"


def run_probe(python: Path, tree: Path, probe: str, *args: str) -> dict:
    """Run ``probes/<probe>.py`` with ``tree`` first on PYTHONPATH."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    result = subprocess.run(
        [str(python), str(PROBES_DIR / f"{probe}.py"), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if result.returncode != 0 or not lines:
        raise PatchsetError(
            f"the {probe} probe crashed ({' '.join(args)}):\n{result.stderr[-2000:]}"
        )
    report = json.loads(lines[-1])
    loaded_from = Path(report.get("torchtitan", "")).resolve()
    if tree.resolve() not in loaded_from.parents:
        raise PatchsetError(
            f"the {probe} probe imported torchtitan from {loaded_from}, not from {tree}"
        )
    return report
