"""The per-rank cost of KV-head replication in the large Qwen3.5 MoE recipes
(``scripts/series replication-cost``), on each fork whose series replicates
KV heads.

The probe parallelizes each shipped recipe (TP=2) and its replicating one
(122B-A10B at TP=4, 397B-A17B at TP=8) on the meta device under a fake
process group of 16 ranks, and derives the previous design's figures; these
are the relations they must show. One probe run per target serves every
check, and the table the command prints is made from that run.
"""

import sys
from pathlib import Path

import pytest

from patchset.probe import run_probe
from patchset.replication_cost import print_report

EXPECTED_TP = {"qwen35_122b_a10b_tp4": 4, "qwen35_397b_a17b_tp8": 8}
TARGETS = ("main", "v0.3")


@pytest.mark.parametrize("target", TARGETS)
def test_each_replicating_recipe_against_tp2_and_the_previous_design(
    workspace, target, capsys, subtests
):
    report = run_probe(Path(sys.executable), workspace.at(target).fork_dir,
                       "kv_replication_cost")
    assert sorted(report["recipes"]) == sorted(EXPECTED_TP)
    for recipe, tp in EXPECTED_TP.items():
        with subtests.test(recipe=recipe):
            check_figures(report["recipes"][recipe], tp=tp)
    print_report(target, report)
    out = capsys.readouterr().out
    assert "| qwen35_397b_a17b_tp8 | replication: K/V gather (this series) | TP=8, FSDP=2 |" in out
    assert "| qwen35_397b_a17b_tp8 | TP=2, the shipped recipe | TP=2, FSDP=8 |" in out


def check_figures(figures: dict, *, tp: int) -> None:
    tp2, gather, previous = figures["tp2"], figures["gather"], figures["previous"]
    assert (tp2["tp"], gather["tp"], previous["tp"]) == (2, tp, tp)
    assert gather["replicate_kv_heads"] and not tp2["replicate_kv_heads"]
    # The same world size: TP takes the factor FSDP gives up, and the batch
    # shrinks with the data-parallel degree.
    assert gather["tp"] * gather["fsdp"] == tp2["tp"] * tp2["fsdp"] == 16
    assert tp2["tokens_per_step"] == gather["tokens_per_step"] * tp // 2
    # The gather keeps the colwise K/V shards: as many K/V bytes per rank as
    # TP=2 over the same 16 ranks; the previous design held tp // 2 times
    # more, and all-reduced their gradients instead of gathering outputs.
    sizes = gather["parameter_bytes"]
    assert sizes["kv"] == tp2["parameter_bytes"]["kv"]
    assert previous["parameter_bytes"]["kv"] == sizes["kv"] * tp // 2
    assert gather["sent_bytes"]["kv_grad_all_reduce"] == 0 < gather["sent_bytes"]["kv_gather"]
    assert previous["sent_bytes"]["kv_gather"] == 0 < previous["sent_bytes"]["kv_grad_all_reduce"]
    assert tp2["sent_bytes"]["kv_gather"] == tp2["sent_bytes"]["kv_grad_all_reduce"] == 0
    assert sizes["gathered_layer"] < tp2["parameter_bytes"]["gathered_layer"]
