"""The pull request text, and a cover letter for a mailed series.

Both are written from the series itself: the patches' subjects and
messages, and the TP table regenerated from the registry.
"""

from pathlib import Path

from patchset import git, table
from patchset.errors import PatchsetError
from patchset.series import BASE_TAG, read_series
from patchset.targets import GitPin
from patchset.workspace import Workspace

TITLE = "Check the tensor-parallel degree against every head count TP shards"

# The Problem section of each target's PR text: it differs with what the
# tree checks today and which models it has.
PROBLEM_FILE = "problem.md"

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


def problem(workspace: Workspace) -> str:
    path = workspace.patches_dir / PROBLEM_FILE
    try:
        return path.read_text().strip()
    except OSError as err:
        raise PatchsetError(
            f"{workspace.patches_label}/{PROBLEM_FILE} is missing: the PR text's "
            f"Problem section for target '{workspace.target.name}' is written there"
        ) from err


def closing_line(workspace: Workspace) -> str:
    """A pull request to upstream main fixes #2574; one to another branch
    only refers to it (GitHub closes issues from the default branch only)."""
    pin = workspace.target.pin
    goes_to_main = not isinstance(pin, GitPin) or pin.branch == GitPin.branch
    return "Fixes #2574" if goes_to_main else "Refs #2574"


def based_on(workspace: Workspace) -> str:
    """The sentence that names the tree the stack is made against."""
    pin = workspace.target.pin
    if isinstance(pin, GitPin):
        return f"The stack applies to {pin.branch} at {pin.commit} with plain `git am`."
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
            problem(workspace),
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
            closing_line(workspace),
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
