"""Run model flavors' real parallelize_fn at given TP degrees; print JSON.

Runs in the project's venv with the fork first on PYTHONPATH, through the
fake-process-group harness of the fork's own unit tests. The plan is a JSON
list of runs, done in order in this one process (one import of torchtitan
for all of them):

  {"model": ..., "flavor": ..., "spmd_backend": ..., "reject": [...], "accept": [...]}

  reject  degrees expected to be refused: parallelize_fn runs without
          update_from_config first, so only its own check can refuse them
  accept  degrees expected to go through: update_from_config runs first,
          as in the trainer, so that TP really shards the model

The output maps ``model/flavor`` to each degree's outcome.
"""

import argparse
import importlib.util
import json
from pathlib import Path


def load_harness(fork: Path):
    path = fork / "tests" / "unit_tests" / "test_parallelize_tp_degree.py"
    spec = importlib.util.spec_from_file_location("harness", path)
    harness = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(harness)
    return harness


def outcomes_of(harness, run: dict) -> dict[int, dict]:
    outcome = {}
    for configure, wanted in ((False, run["reject"]), (True, run["accept"])):
        for degree in wanted:
            model, error = harness._parallelize(
                run["model"],
                run["flavor"],
                tp=degree,
                spmd_backend=run["spmd_backend"],
                configure=configure,
            )
            outcome[degree] = {
                "error": None if error is None else str(error),
                "tp_sharded_params": harness._n_tp_sharded_params(model),
            }
    return outcome


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("fork", type=Path)
    parser.add_argument("plan", help="the runs, as JSON")
    args = parser.parse_args()
    harness = load_harness(args.fork)
    print(json.dumps({
        f"{run['model']}/{run['flavor']}": outcomes_of(harness, run)
        for run in json.loads(args.plan)
    }))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
