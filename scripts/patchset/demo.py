"""The main job: TP=4 on Qwen3.5 MoE before and after the fix, then TP=2,
for each target, and TP=2's gradients against TP=1's before and after.

The scenarios of each tree run in ``probes/qwen35_tp.py``, in one
interpreter of the project's venv per tree (the target's pristine base or
patched fork first on PYTHONPATH), each on a freshly built model under its
own fake process group, and report what happened. The gradients come from
two gloo ranks (``probes/tp_gradients.py``), on the pristine base and on
the fork. A summary gives one row per target.
"""

import json
from dataclasses import dataclass
from pathlib import Path

from patchset import base
from patchset.probe import run_probe
from patchset.series import read_series
from patchset.workspace import Workspace

FLAVOR = "debugmodel_moe"
# The same model on the #2545 branch, under its name there.
BRANCH_FLAVOR = "debugmodel"
TP4_CONFIG = {"tp": 4, "stage": "config"}
FORWARD_ON_CPU = {"stage": "forward", "all_full_attention": True}
# float32 throughout (the experts too): TP=2 only reorders the reductions.
GRADIENT_RTOL = 1e-4


def qwen35_probe(
    python: Path, tree: Path, *scenarios: dict, flavor: str = FLAVOR
) -> list[dict]:
    """Each scenario's report, from one interpreter with ``tree`` on the path."""
    args = [json.dumps(scenario) for scenario in scenarios]
    return run_probe(python, tree, "qwen35_tp", "--flavor", flavor, *args)["reports"]


def tp2_gradients(python: Path, tree: Path, *, model: str) -> dict:
    """TP=2 against TP=1 on the same weights, on two gloo ranks."""
    return run_probe(python, tree, "tp_gradients", "--model", model)


def gradient_error(report: dict) -> str:
    name, error = report["worst_grad_error"]
    return f"{error:.2g} ({name})"


def gradients_before_and_after(
    title: str, *, python: Path, before: Path, workspace: Workspace, model: str
) -> tuple[str, list[str]]:
    """TP=2 against TP=1 on the ``before`` tree and on the fork; print the
    worst relative gradient errors; return them as a table cell, and what is
    wrong with the fork's (empty when it is right)."""
    unfixed = tp2_gradients(python, before, model=model)
    fixed = tp2_gradients(python, workspace.fork_dir, model=model)
    print(f"\n--- {title}")
    print(f"    worst relative gradient error ||g_TP2 - g_TP1|| / ||g_TP1||: "
          f"{gradient_error(unfixed)} before the fix, {gradient_error(fixed)} with it")
    print(f"    logits: {unfixed['logit_error']:.2g} before, {fixed['logit_error']:.2g} with it")
    cell = f"{unfixed['worst_grad_error'][1]:.2g} → {fixed['worst_grad_error'][1]:.2g}"
    if fixed["worst_grad_error"][1] <= GRADIENT_RTOL:
        return cell, []
    return cell, [f"TP=2 gradients differ from TP=1's by {gradient_error(fixed)}, "
                  f"above {GRADIENT_RTOL:g}"]


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


def fix_is_right(
    rejected: dict, accepted: dict, *, config_time: dict | None = None
) -> list[str]:
    """What is wrong with the patched behaviour (empty when it is right);
    ``config_time`` is the trainer's config-time check, where the tree has one."""
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
    if config_time is not None and config_time.get("error") != rejected.get("error"):
        problems.append("the config-time check does not give the same message")
    if accepted["outcome"] != "ok" or "logits_shape" not in accepted:
        problems.append("TP=2 did not run a forward pass")
    return problems


def fork_scenarios(workspace: Workspace, *, python: Path) -> tuple[dict, dict | None, dict]:
    """On the target's fork: TP=4 at parallelize_fn, the trainer's
    config-time check with TP=4 (None on the #2545 branch, which has none),
    and TP=2 through a forward pass."""
    fork = workspace.fork_dir
    if is_moe_branch(fork):
        rejected, accepted = qwen35_probe(
            python, fork, {"tp": 4, "stage": "parallelize"}, {"tp": 2, "stage": "forward"},
            flavor=BRANCH_FLAVOR,
        )
        return rejected, None, accepted
    rejected, config_time, accepted = qwen35_probe(
        python, fork,
        {"tp": 4, "stage": "parallelize", "skip_config_check": True},
        TP4_CONFIG,
        {"tp": 2, **FORWARD_ON_CPU},
    )
    return rejected, config_time, accepted


@dataclass(frozen=True, kw_only=True)
class TargetRow:
    """What one target did: a cell per scenario, and what is wrong (if anything)."""

    target: str
    pristine: str
    patched: str
    accepted: str
    gradients: str
    problems: tuple[str, ...] = ()


def brief(report: dict) -> str:
    """One line: where and how a scenario ended."""
    if report["outcome"] == "ok":
        return f"OK, logits {report['logits_shape']}" if "logits_shape" in report else "OK"
    first_line = report["error"].splitlines()[0]
    if len(first_line) > 60:
        first_line = first_line[:60].rstrip() + "…"
    return (
        f"{report['error_type']} in {report['stage']} at {report['raised_at']}: "
        f"{first_line}"
    )


def is_moe_branch(tree: Path) -> bool:
    """Whether ``tree`` is the Qwen3.5-MoE branch of #2545, where the model
    is ``qwen3_5_moe`` and TP does not run until the series' first patch."""
    models = tree / "torchtitan" / "models"
    return (models / "qwen3_5_moe").is_dir() and not (models / "qwen3_5").is_dir()


def run_on_moe_branch(workspace: Workspace, *, python: Path) -> TargetRow:
    """The branch has no config-time stage. Its pristine tree cannot apply TP
    at all, so the failure #2574 describes is shown on the tree with only the
    series' first patch, which makes TP run."""
    name = workspace.target.name
    print(f"\n=== target {name}: Qwen3.5 MoE ({BRANCH_FLAVOR}: 4 query heads, "
          "2 KV heads), fake process group on CPU")
    tp4_forward = {"tp": 4, "stage": "forward"}
    (pristine,) = qwen35_probe(
        python, base.ensure_pristine_tree(workspace), tp4_forward, flavor=BRANCH_FLAVOR
    )
    show(f"{name} pristine branch, parallelize_fn with TP=4, then a forward pass", pristine)
    (unchecked,) = qwen35_probe(
        python, base.ensure_tree_after_first_patch(workspace), tp4_forward,
        flavor=BRANCH_FLAVOR,
    )
    show(
        f"{name} branch with the series' first patch (TP runs), parallelize_fn with "
        "TP=4, then a forward pass",
        unchecked,
    )
    rejected, _, accepted = fork_scenarios(workspace, python=python)
    n_patches = len(read_series(workspace))
    show(f"{name} patched fork ({n_patches} patches), parallelize_fn with TP=4", rejected)
    show(f"{name} patched fork, TP=2: parallelize_fn, forward", accepted)
    model = f"qwen3_5_moe:{BRANCH_FLAVOR}"
    gradients, wrong_gradients = gradients_before_and_after(
        f"{name} TP=2 against TP=1 ({model}, GatedDeltaNet on its PyTorch path), "
        "with the series' first patch and on the patched fork",
        python=python, before=base.ensure_tree_after_first_patch(workspace),
        workspace=workspace, model=model,
    )
    return TargetRow(
        target=name,
        pristine=f"{brief(unchecked)} (once TP runs; pristine: {pristine['error_type']})",
        patched=f"{brief(rejected)}; {rejected['dtensor_parameters']} DTensors made",
        accepted=brief(accepted),
        gradients=gradients,
        problems=(*fix_is_right(rejected, accepted), *wrong_gradients),
    )


def run(workspace: Workspace, *, python: Path) -> TargetRow:
    name = workspace.target.name
    if is_moe_branch(workspace.fork_dir) and read_series(workspace):
        return run_on_moe_branch(workspace, python=python)
    pristine = base.ensure_pristine_tree(workspace)
    n_patches = len(read_series(workspace))
    print(f"\n=== target {name}: Qwen3.5 MoE ({FLAVOR}: 4 query heads, 2 KV heads), "
          "fake process group on CPU")

    config_check, unchecked = qwen35_probe(
        python, pristine, TP4_CONFIG, {"tp": 4, **FORWARD_ON_CPU, "skip_config_check": True}
    )
    show(f"{name} pristine base, trainer path: update_from_config with TP=4", config_check)
    show(
        f"{name} pristine base, parallelize_fn with TP=4 sharding in place, "
        "then a forward pass",
        unchecked,
    )
    if n_patches == 0:
        print(
            f"\nThe series is empty: {workspace.patches_label}/series lists no patch, "
            f"so {workspace.fork_label}/ is the pristine base and there is no fix "
            "to show yet."
        )
        no_fix = "no fix yet (empty series)"
        return TargetRow(target=name, pristine=brief(unchecked), patched=no_fix,
                         accepted=no_fix, gradients=no_fix)

    rejected, config_time, accepted = fork_scenarios(workspace, python=python)
    show(f"{name} patched fork ({n_patches} patches), parallelize_fn with TP=4", rejected)
    show(f"{name} patched fork, trainer path: update_from_config with TP=4", config_time)
    show(f"{name} patched fork, TP=2: update_from_config, parallelize_fn, forward", accepted)

    model = f"qwen3_5:{FLAVOR}"
    gradients, wrong_gradients = gradients_before_and_after(
        f"{name} TP=2 against TP=1 ({model}, every layer full attention, "
        "partial_dtensor), pristine base and patched fork",
        python=python, before=pristine, workspace=workspace, model=model,
    )

    patched = brief(rejected)
    if "dtensor_parameters" in rejected:
        patched += f"; {rejected['dtensor_parameters']} DTensors made"
    return TargetRow(
        target=name,
        pristine=brief(unchecked),
        patched=patched,
        accepted=brief(accepted),
        gradients=gradients,
        problems=(*fix_is_right(rejected, accepted, config_time=config_time),
                  *wrong_gradients),
    )


def run_targets(workspaces: list[Workspace], *, python: Path) -> int:
    """The demo for each target, then one row per target; 0 when all behave."""
    rows = [run(workspace, python=python) for workspace in workspaces]
    print("\n| target | pristine, TP=4 | patched, TP=4 | patched, TP=2 | "
          "TP=2 vs TP=1, worst gradient error, before → with the series |")
    print("|---|---|---|---|---|")
    for row in rows:
        print(f"| {row.target} | {row.pristine} | {row.patched} | {row.accepted} | "
              f"{row.gradients} |")
    print()
    failed = [row for row in rows if row.problems]
    for row in failed:
        for problem in row.problems:
            print(f"FAIL ({row.target}): {problem}")
    if failed:
        return 1
    print("PASS: every target with a series rejects TP=4 at parallelize_fn with a "
          f"clear message and runs TP=2, with TP=1's gradients (to {GRADIENT_RTOL:g}).")
    return 0
