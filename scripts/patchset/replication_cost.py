"""Per-rank cost of KV-head replication in the large Qwen3.5 MoE recipes.

Runs ``probes/kv_replication_cost.py`` on each chosen target's patched fork
and prints, per replicating recipe (122B-A10B at TP=4, 397B-A17B at TP=8),
three layouts: the shipped recipe at TP=2, this series' K/V gather, and the
series' previous design (whole-head K/V weights): parameter bytes per rank,
tokens per step, and the bytes each rank sends per microbatch step. Figures
are computed on the meta device under a fake process group; nothing is
timed.
"""

from pathlib import Path

from patchset.errors import PatchsetError
from patchset.probe import run_probe
from patchset.workspace import Workspace

MIB = 2**20
# The report's layouts, in the order printed.
LAYOUTS = {
    "tp2": "TP=2, the shipped recipe",
    "gather": "replication: K/V gather (this series)",
    "previous": "replication: whole-head weights (previous design)",
}


def _gib(size: int) -> str:
    return f"{size / 2**30:.2f} GiB"


def _mib(size: int) -> str:
    return f"{size / MIB:,.1f} MiB"


def _row(recipe: str, key: str, f: dict) -> str:
    sizes, sent = f["parameter_bytes"], f["sent_bytes"]
    return (
        f"| {recipe} | {LAYOUTS[key]} | TP={f['tp']}, FSDP={f['fsdp']} | "
        f"{_gib(sizes['all'])} | {_mib(sizes['kv'])} | "
        f"{sizes['gathered_layer'] / MIB:,.0f} MiB | {f['tokens_per_step']:,} | "
        f"{_mib(sent['kv_gather'])} | {_mib(f['kv_gather_peak'])} | "
        f"{_mib(sent['kv_grad_all_reduce'])} | "
        f"{sent['fsdp_non_expert'] / MIB:,.0f} MiB | "
        f"{sent['sequence_parallel'] / MIB:,.0f} MiB |"
    )


def print_report(name: str, report: dict) -> None:
    """The probe's ``report`` for target ``name``, as a markdown table."""
    print(f"\n{name}: world size {report['world_size']}, per rank\n")
    print("| recipe | layout | degrees | parameters | K/V weights "
          "| largest gathered layer | tokens per step | K/V gather sent "
          "| K/V gather peak | K/V grad all-reduce | FSDP non-expert "
          "| sequence-parallel TP |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for recipe, figures in report["recipes"].items():
        for key in LAYOUTS:
            print(_row(recipe, key, figures[key]))


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
          "probe's docstring computes them; expert parallelism is the same in every "
          "layout and left out. The previous design's row is derived from the "
          "replicating layout (it differs only in wk/wv).")
    return 0
