"""Per-rank cost of KV-head replication in the large Qwen3.5 MoE recipes.

Runs ``probes/kv_replication_cost.py`` on each chosen target's patched fork
and prints, per recipe, its own TP with replicated KV heads against TP=2
without: parameter bytes per rank, tokens per step, and the bytes each rank
sends per microbatch step. Figures are computed on the meta device under a
fake process group; nothing is timed.
"""

from pathlib import Path

from patchset.errors import PatchsetError
from patchset.probe import run_probe
from patchset.workspace import Workspace

MIB = 2**20


def _gib(size: int) -> str:
    return f"{size / 2**30:.2f} GiB"


def _rows(recipe: str, figures: dict) -> list[str]:
    rows = []
    for key in ("baseline", "replicated"):
        f = figures[key]
        sizes, sent = f["parameter_bytes"], f["sent_bytes"]
        replicated = (
            f"{sizes['replicated_kv'] / MIB:.1f} MiB ({sizes['replicated_kv'] / sizes['all']:.3%})"
            if f["replicate_kv_heads"] else "none"
        )
        rows.append(
            f"| {recipe} | TP={f['tp']}, FSDP={f['fsdp']} | {_gib(sizes['all'])} | "
            f"{_gib(sizes['non_expert'])} | {sizes['gathered_layer'] / MIB:,.0f} MiB | "
            f"{replicated} | {f['tokens_per_step']:,} | "
            f"{sent['kv_grad_all_reduce'] / MIB:.1f} MiB | "
            f"{sent['fsdp_non_expert'] / MIB:,.0f} MiB | "
            f"{sent['sequence_parallel'] / MIB:,.0f} MiB |"
        )
    return rows


def print_report(name: str, report: dict) -> None:
    """The probe's ``report`` for target ``name``, as a markdown table."""
    print(f"\n{name}: world size {report['world_size']}, per rank\n")
    print("| recipe | layout | parameters | non-expert | largest gathered layer "
          "| replicated KV weights | tokens per step | KV grad all-reduce "
          "| FSDP non-expert | sequence-parallel TP |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for recipe, figures in report["recipes"].items():
        print("\n".join(_rows(recipe, figures)))


def run_targets(workspaces: list[Workspace], *, python: Path) -> int:
    for workspace in workspaces:
        name = workspace.target.name
        try:
            report = run_probe(python, workspace.fork_dir, "kv_replication_cost")
        except PatchsetError as error:
            if "replicate_kv_heads" not in str(error):
                raise
            print(f"{name}: the series has no KV-head replication yet")
            continue
        print_report(name, report)
    print("\nParameter bytes are the rank's float32 shards; the gathered layer is "
          "the largest decoder layer's non-expert parameters once FSDP has "
          "all-gathered them. Bytes sent are per rank per microbatch step, as the "
          "probe's docstring computes them; expert parallelism is the same in both "
          "layouts and left out.")
    return 0
