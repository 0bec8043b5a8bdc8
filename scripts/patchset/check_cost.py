"""What the TP check costs inside ``parallelize_fn``, for each target.

Runs ``probes/check_cost.py`` on each target's patched fork: the time from
calling ``parallelize_fn`` with an invalid degree to its ``ValueError``,
against a full ``parallelize_fn`` at a valid degree of the same model, both
measured in one process. A benchmark to read, not a timed test.
"""

from pathlib import Path

from patchset.errors import PatchsetError
from patchset.probe import run_probe
from patchset.series import read_series
from patchset.workspace import Workspace

# What the check may cost on the largest Qwen3.5 MoE model (#2574).
BUDGET_MS = 5.0
BUDGET_RATIO = 0.01
REPEAT = 5


def _check_outcomes(target: str, report: dict) -> None:
    """The figures mean something only if the invalid degree was refused by
    the check and the valid one went through."""
    refused = f"tensor_parallel_degree={report['invalid_tp']} does not divide"
    if not all(error.startswith(refused) for error in report["invalid_errors"]):
        raise PatchsetError(f"{target}: TP={report['invalid_tp']} was not refused by the "
                            f"check: {report['invalid_errors']}")
    if report["valid_errors"] != [""]:
        raise PatchsetError(f"{target}: TP={report['valid_tp']} did not go through: "
                            f"{report['valid_errors']}")


def run_targets(workspaces: list[Workspace], *, python: Path) -> int:
    """Print one row per target; 1 if a target's check is over budget."""
    print("| target | model | refused: first, best (ms) | valid parallelize_fn (ms) "
          "| ratio of the first | budget |")
    print("|---|---|---|---|---|---|")
    over = False
    for workspace in workspaces:
        name = workspace.target.name
        if not read_series(workspace):
            print(f"| {name} | no fix yet (empty series) | | | | |")
            continue
        report = run_probe(python, workspace.fork_dir, "check_cost", f"--repeat={REPEAT}")
        _check_outcomes(name, report)
        # The first refused run, as a launch would pay it.
        first = report["invalid_first_ms"]
        ratio = first / report["valid_ms"]
        within = first <= BUDGET_MS and ratio <= BUDGET_RATIO
        over = over or not within
        model = (
            f"{report['model']} {report['flavor']}, world size {report['world_size']}, "
            f"TP={report['invalid_tp']} vs TP={report['valid_tp']}"
        )
        print(
            f"| {name} | {model} | {first:.2f}, {report['invalid_ms']:.2f} | "
            f"{report['valid_ms']:.0f} | {ratio:.2%} | "
            f"{'within' if within else 'OVER'} ({BUDGET_MS:g} ms, {BUDGET_RATIO:.0%}) |"
        )
    print(
        "\nOn the meta-device model under a fake process group, in one process: the "
        f"refused runs first (the first of them, and the best of {REPEAT}), then the best "
        f"of {REPEAT} valid runs after one warm-up, with the partial_dtensor SPMD backend "
        "where the tree has SPMD backends."
    )
    return 1 if over else 0
