"""The main job: TP=4 on Qwen3.5 MoE before and after the fix, then TP=2.

Each scenario runs ``probes/qwen35_tp.py`` in a fresh interpreter of the
project's venv, with the pristine base or the patched fork first on
PYTHONPATH, and reports what happened.
"""

from pathlib import Path

from patchset import base
from patchset.probe import run_probe
from patchset.series import read_series
from patchset.workspace import Workspace

FLAVOR = "debugmodel_moe"


def qwen35_probe(python: Path, tree: Path, *args: str) -> dict:
    return run_probe(python, tree, "qwen35_tp", "--flavor", FLAVOR, *args)


def describe(report: dict) -> str:
    if report["outcome"] == "ok":
        shape = report.get("logits_shape")
        done = f"forward pass returned logits {shape}" if shape else "no error"
        return f"OK: {done}"
    return (
        f"{report['error_type']} during {report['stage']} "
        f"(raised at {report['raised_at']}):\n"
        + "\n".join(f"      {line}" for line in report["error"].splitlines())
    )


def show(title: str, report: dict) -> dict:
    """Print what a scenario did; return its report."""
    print(f"\n--- {title}")
    print(f"    {describe(report)}")
    if "parallelize_seconds" in report:
        print(
            f"    parallelize_fn: {report['parallelize_seconds']} s, "
            f"{report['dtensor_parameters']} parameters became DTensors"
        )
    return report


def fix_is_right(rejected: dict, config_time: dict, accepted: dict) -> list[str]:
    """What is wrong with the patched behaviour (empty when it is right)."""
    problems = []
    if not (
        rejected["outcome"] == "error"
        and rejected["error_type"] == "ValueError"
        and rejected["stage"] == "parallelize"
        and rejected["dtensor_parameters"] == 0
        and "n_kv_heads=2" in rejected["error"]
        and rejected["error"].endswith("values for this model: 1, 2.")
    ):
        problems.append("TP=4 was not rejected by parallelize_fn before sharding")
    if config_time.get("error") != rejected.get("error"):
        problems.append("the config-time check does not give the same message")
    if accepted["outcome"] != "ok" or "logits_shape" not in accepted:
        problems.append("TP=2 did not run a forward pass")
    return problems


def run(workspace: Workspace, *, python: Path) -> int:
    pristine = base.ensure_pristine_tree(workspace)
    fork = workspace.fork_dir
    n_patches = len(read_series(workspace))
    tp4 = ("--tp", "4")
    forward_on_cpu = ("--stage", "forward", "--all-full-attention")
    print(f"Qwen3.5 MoE ({FLAVOR}: 4 query heads, 2 KV heads), fake process group on CPU")

    show(
        "pristine base, trainer path: update_from_config with TP=4",
        qwen35_probe(python, pristine, *tp4, "--stage", "config"),
    )
    show(
        "pristine base, parallelize_fn with TP=4 sharding in place, then a forward pass",
        qwen35_probe(python, pristine, *tp4, *forward_on_cpu, "--skip-config-check"),
    )
    if n_patches == 0:
        print(
            "\nThe series is empty: patches/series lists no patch, so "
            "torchtitan_fork/ is the pristine base and there is no fix to show yet."
        )
        return 0

    rejected = show(
        f"patched fork ({n_patches} patches), parallelize_fn with TP=4",
        qwen35_probe(python, fork, *tp4, "--stage", "parallelize", "--skip-config-check"),
    )
    config_time = show(
        "patched fork, trainer path: update_from_config with TP=4",
        qwen35_probe(python, fork, *tp4, "--stage", "config"),
    )
    accepted = show(
        "patched fork, TP=2: update_from_config, parallelize_fn, forward",
        qwen35_probe(python, fork, "--tp", "2", *forward_on_cpu),
    )

    problems = fix_is_right(rejected, config_time, accepted)
    print()
    if problems:
        for problem in problems:
            print(f"FAIL: {problem}")
        return 1
    print("PASS: the fork rejects TP=4 at parallelize_fn with a clear message "
          "and runs TP=2.")
    return 0
