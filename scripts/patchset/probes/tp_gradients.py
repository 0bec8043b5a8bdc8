"""TP=2 against TP=1 on the same weights, on two gloo ranks; print JSON.

Runs in the project's venv with a torchtitan tree first on PYTHONPATH and
starts two ranks of ``tp_rank.py compare`` on it: one forward and backward
pass of the model at TP=2 and of a TP=1 copy with the same weights, with
float32 experts, so that TP's effect is not hidden under bfloat16 rounding.
Reports the worst relative error of the logits and of any parameter's
gradient over both ranks.
"""

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from ranks import FLOAT32_EXPERTS, launch, PROBES_DIR


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, metavar="MODEL:FLAVOR")
    args = parser.parse_args()
    tree = Path(os.environ["PYTHONPATH"].split(os.pathsep)[0])
    with tempfile.TemporaryDirectory() as out:
        run = launch(
            tree, Path(out), nproc=2, worker=PROBES_DIR / "tp_rank.py",
            args=["--mode", "compare", "--all-full-attention",
                  "--models", f"{args.model}:{FLOAT32_EXPERTS}"],
        )
    reports = run["reports"]
    if run["codes"] != [0, 0] or len(reports) != 2:
        print(run["output"][-3000:], file=sys.stderr)
        return 1
    print(json.dumps({
        "torchtitan": reports[0]["torchtitan"],
        "logit_error": max(report["logit_error"] for report in reports),
        "worst_grad_error": max((report["worst_grad_error"] for report in reports),
                                key=lambda error: error[1]),
        "seconds": round(run["seconds"], 1),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
