"""The per-rank figures of the large Qwen3.5 MoE recipes with KV-head
replication (``scripts/series replication-cost``), on each fork whose series
replicates KV heads.

The probe parallelizes each recipe on the meta device under a fake process
group of 16 ranks, at its own TP with replication and at TP=2 without; these
are the relations its figures must show. One probe run per target serves
every check, and the table the command prints is made from that run.
"""

import sys
from pathlib import Path

import pytest

from patchset.probe import run_probe
from patchset.replication_cost import print_report

EXPECTED_TP = {"qwen35_122b_a10b": 4, "qwen35_397b_a17b": 8}
TARGETS = ("main", "v0.3")


@pytest.mark.parametrize("target", TARGETS)
def test_each_recipe_at_its_tp_replicates_kv_heads(workspace, target, capsys, subtests):
    report = run_probe(Path(sys.executable), workspace.at(target).fork_dir,
                       "kv_replication_cost")
    assert sorted(report["recipes"]) == sorted(EXPECTED_TP)
    for recipe, tp in EXPECTED_TP.items():
        with subtests.test(recipe=recipe):
            check_figures(report["recipes"][recipe], tp=tp)
    print_report(target, report)
    out = capsys.readouterr().out
    assert "| qwen35_397b_a17b | TP=8, FSDP=2 |" in out
    assert "| qwen35_397b_a17b | TP=2, FSDP=8 |" in out


def check_figures(figures: dict, *, tp: int) -> None:
    replicated, baseline = figures["replicated"], figures["baseline"]
    assert (replicated["tp"], replicated["kv_replica"]) == (tp, tp // 2)
    assert (baseline["tp"], baseline["replicate_kv_heads"]) == (2, False)
    # The same world size: TP takes the factor FSDP gives up, and the batch
    # shrinks with the data-parallel degree.
    assert replicated["tp"] * replicated["fsdp"] == baseline["tp"] * baseline["fsdp"] == 16
    assert baseline["tokens_per_step"] == replicated["tokens_per_step"] * tp // 2
    sizes, base_sizes = replicated["parameter_bytes"], baseline["parameter_bytes"]
    assert sizes["gathered_layer"] < base_sizes["gathered_layer"]
    assert base_sizes["replicated_kv"] == 0 < sizes["replicated_kv"] < sizes["all"] / 1000
    assert baseline["sent_bytes"]["kv_grad_all_reduce"] == 0
    assert replicated["sent_bytes"]["kv_grad_all_reduce"] > 0
