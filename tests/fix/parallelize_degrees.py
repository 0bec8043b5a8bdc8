"""Run a model flavor's real parallelize_fn at given TP degrees; print JSON.

Runs in the project's venv with the fork first on PYTHONPATH, through the
fake-process-group harness of the fork's own unit tests.

  --reject  degrees expected to be refused: parallelize_fn runs without
            update_from_config first, so only its own check can refuse them
  --accept  degrees expected to go through: update_from_config runs first,
            as in the trainer, so that TP really shards the model
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


def degrees(text: str) -> list[int]:
    return [int(d) for d in text.split(",") if d]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("fork", type=Path)
    parser.add_argument("model")
    parser.add_argument("flavor")
    parser.add_argument("--spmd-backend", default="partial_dtensor")
    parser.add_argument("--reject", type=degrees, default=[])
    parser.add_argument("--accept", type=degrees, default=[])
    args = parser.parse_args()
    harness = load_harness(args.fork)
    outcome = {}
    for configure, wanted in ((False, args.reject), (True, args.accept)):
        for degree in wanted:
            model, error = harness._parallelize(
                args.model,
                args.flavor,
                tp=degree,
                spmd_backend=args.spmd_backend,
                configure=configure,
            )
            outcome[degree] = {
                "error": None if error is None else str(error),
                "tp_sharded_params": harness._n_tp_sharded_params(model),
            }
    print(json.dumps(outcome))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
