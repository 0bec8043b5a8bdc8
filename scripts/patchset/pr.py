"""The pull request text, and a cover letter for a mailed series.

Both are written from the series itself: the patches' subjects and
messages, and the TP table regenerated from the registry.
"""

from pathlib import Path

from patchset import git, table
from patchset.series import BASE_TAG, read_series
from patchset.targets import GitPin
from patchset.workspace import Workspace

TITLE = "Check the tensor-parallel degree against every head count TP shards"

PROBLEM = """\
Tensor parallelism shards head-sharded projections (`wq`/`wk`/`wv`,
Qwen3.5's GatedDeltaNet projections and convolutions, vision attention) by
output features, so `tensor_parallel_degree` must divide every head count it
splits. Nothing checks this in `parallelize_fn`: the Qwen3.5 MoE models have
two KV heads, and with TP=4 and the TP sharding configs in place the first
forward pass fails in a reshape (`Sharding propagation failed for
aten.view.default(...)`) instead of at start-up with a message that says
what to change (#2574). Two shipped recipes ask for such a degree.

What the `parallelize_fn` check adds: every shipped entry point (trainer,
forge, torchft, graph_trainer precompile, RL) calls `update_from_config`
first, whose check already refused TP=4 on Qwen3.5, but looked only at the
first attention layer. The call in each `parallelize_fn` protects direct
callers and any path that skips the config step; the config-time check now
covers every layer and every head-sharded module, with the same message."""

TESTED = """\
CPU only, on a `fake` process group:

```sh
pytest {test_files}
```

Every commit of the stack passes the unit tests that exist at that commit
(compared with the base, whose own failures are not blamed on the stack),
and each is clean under the pre-commit rules (flake8 with its plugins, ufmt
with black 22.12.0 and usort 1.0.5, codespell, pydoclint, pyrefly 0.45.1,
the license header)."""


def _tested(workspace: Workspace) -> str:
    """How it was tested, naming the test files the stack adds or changes."""
    changed = git.output(
        workspace.fork_dir, "diff", "--name-only", f"{BASE_TAG}..HEAD", "--", "tests"
    ).split()
    return TESTED.format(test_files=" \\\n       ".join(changed))


def _changes(workspace: Workspace) -> str:
    lines = []
    for patch in read_series(workspace):
        body = patch.body_paragraphs()
        subject = patch.subject.removeprefix("[PATCH] ")
        lines.append(f"- **{subject}**" + (f": {body[0]}" if body else ""))
    return "\n".join(lines)


def based_on(workspace: Workspace) -> str:
    """The sentence that names the tree the stack is made against."""
    pin = workspace.target.pin
    if isinstance(pin, GitPin):
        return f"The stack applies to `main` at {pin.commit} with plain `git am`."
    return f"The stack applies to the torchtitan {pin.version} release."


def description(workspace: Workspace, *, python: Path) -> str:
    before, rows = table.collect_before_and_after(workspace, python=python)
    fixed = table.invalid_recipes(before)
    fixed_note = (
        f"Recipes that asked for an invalid TP before this change: "
        f"{', '.join(f'`{name}`' for name in fixed)}."
        if fixed
        else "No shipped recipe asked for an invalid TP before this change."
    )
    return "\n\n".join(
        [
            f"# {TITLE}",
            "## Problem",
            PROBLEM,
            "## What changed",
            based_on(workspace),
            _changes(workspace),
            "## Affected models",
            "Regenerated from the model registry: the head counts TP shards, "
            "the valid degrees, and each shipped recipe's TP after this change. "
            + fixed_note,
            table.to_markdown(rows),
            "## How it was tested",
            _tested(workspace),
            "Fixes #2574",
        ]
    ) + "\n"


def write_mail_series(workspace: Workspace, *, out_dir: Path, body: str) -> list[Path]:
    """``git format-patch --cover-letter`` of the fork's stack into out_dir,
    with the cover letter's subject and blurb filled in."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [
        Path(name)
        for name in git.output(
            workspace.fork_dir, "format-patch", "--cover-letter", "--numbered",
            "--no-signature", "-o", str(out_dir.resolve()), f"{BASE_TAG}..HEAD",
        ).splitlines()
    ]
    cover = next(path for path in paths if path.name.startswith("0000-"))
    text = cover.read_text()
    text = text.replace("*** SUBJECT HERE ***", TITLE)
    text = text.replace("*** BLURB HERE ***", body.split("\n", 2)[2].strip())
    cover.write_text(text)
    return paths
