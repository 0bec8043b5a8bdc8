"""Start the ranks of a multi-process run on CPU, as torchrun would.

Each rank is its own process of the venv's python (``RANK``, ``WORLD_SIZE``,
``MASTER_ADDR``/``MASTER_PORT``) with a torchtitan tree and this folder on
PYTHONPATH. The launcher holds the rendezvous store on a port the system
picks, so no two launches race for a port, and waits for each rank's own
exit status, so a rank that is not stopped by its own error shows up as one
still running. The process group times out after ``PG_TIMEOUT_SECONDS``, so
a rank left waiting in a collective fails instead of stalling, and the
whole launch is bounded by ``LAUNCH_TIMEOUT_SECONDS``. Launches run one
at a time on the machine (a lock file): two at once have run out of its
memory (qwen3's debug MoE takes 7 GB per rank).
"""

import fcntl
import json
import os
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

PROBES_DIR = Path(__file__).resolve().parent
HOST = "127.0.0.1"
PG_TIMEOUT_SECONDS = 120
LAUNCH_TIMEOUT_SECONDS = 600
# The variant of a model whose MoE experts keep float32 (``tp_rank``).
FLOAT32_EXPERTS = "float32-experts"
LOCK_FILE = Path(tempfile.gettempdir()) / "patchset-rank-launch.lock"


@contextmanager
def one_launch_at_a_time():
    with LOCK_FILE.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def launch(tree: Path, out: Path, *, nproc: int, args: list[str], worker: Path) -> dict:
    """Run ``nproc`` ranks of ``worker`` with ``tree`` first on PYTHONPATH;
    return each rank's exit status, its reports (``<out>/rank*.json``), the
    ranks' output and the wall time."""
    with one_launch_at_a_time():
        return _launch(tree, out, nproc=nproc, args=args, worker=worker)


def _launch(tree: Path, out: Path, *, nproc: int, args: list[str], worker: Path) -> dict:
    import torch.distributed as dist

    started = time.monotonic()
    store = dist.TCPStore(HOST, 0, world_size=nproc + 1, is_master=True,
                          timeout=timedelta(seconds=PG_TIMEOUT_SECONDS),
                          wait_for_workers=False)
    env = {**os.environ, "PYTHONPATH": f"{tree}{os.pathsep}{PROBES_DIR}",
           "OMP_NUM_THREADS": "1", "MASTER_ADDR": HOST, "MASTER_PORT": str(store.port),
           "WORLD_SIZE": str(nproc)}
    out.mkdir(parents=True, exist_ok=True)
    logs = [out / f"rank{rank}.log" for rank in range(nproc)]
    ranks = []
    try:
        for rank, log in enumerate(logs):
            with log.open("w") as sink:
                ranks.append(subprocess.Popen(
                    [sys.executable, str(worker), "--out", str(out),
                     f"--pg-timeout={PG_TIMEOUT_SECONDS}", *args],
                    stdout=sink, stderr=subprocess.STDOUT,
                    env={**env, "RANK": str(rank), "LOCAL_RANK": str(rank)},
                ))
        deadline = started + LAUNCH_TIMEOUT_SECONDS
        codes = [rank.wait(timeout=max(0.0, deadline - time.monotonic())) for rank in ranks]
    finally:
        for rank in ranks:
            rank.kill()
    reports = [json.loads(path.read_text()) for path in sorted(out.glob("rank*.json"))]
    for report in reports:
        loaded_from = Path(report["torchtitan"]).resolve()
        if tree.resolve() not in loaded_from.parents:
            raise RuntimeError(f"rank {report['rank']} imported torchtitan from "
                               f"{loaded_from}, not from {tree}")
    return {
        "codes": codes,
        "reports": reports,
        "output": "".join(log.read_text() for log in logs),
        "seconds": time.monotonic() - started,
    }
