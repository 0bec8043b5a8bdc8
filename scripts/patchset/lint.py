"""torchtitan's lint rules, patch by patch.

Each commit of the fork after ``base`` is checked out in a scratch worktree
and the files it adds or changes are checked with upstream's tools and
settings: the tree's own ``.pre-commit-config.yaml`` and ``.flake8`` where
the base has them (upstream main), else ``[tool.patchset.lint]`` in
pyproject.toml (the 0.3.0 sdist ships neither). A finding counts
against a patch only if it is new: the same check on the commit before
does not report it (ignoring line numbers), so problems the base already
has are not blamed on the series.
"""

import json
import os
import re
import subprocess
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from patchset import environment, git
from patchset.errors import PatchsetError
from patchset.fork import inspect_fork
from patchset.series import BASE_TAG, series_names
from patchset.workspace import Workspace


@dataclass(frozen=True, kw_only=True)
class Finding:
    tool: str
    path: str
    line: int
    message: str

    @property
    def key(self) -> tuple[str, str, str]:
        return self.tool, self.path, self.message

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: [{self.tool}] {self.message}"


@dataclass(frozen=True, kw_only=True)
class Rules:
    """Upstream's settings for one target, and where they were read."""

    flake8_args: tuple[str, ...]
    pydoclint_args: tuple[str, ...]
    license_header: str
    origin: str


@dataclass(frozen=True, kw_only=True)
class Tools:
    """The lint tools in their own venv, with upstream's settings; ``python``
    is the project's venv, whose packages pyrefly resolves."""

    bin_dir: Path
    python: Path
    rules: Rules

    def run(self, tool: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
        """Run a tool in the tree ``cwd``, which is first on PYTHONPATH (no
        torchtitan is installed); a crash is an error, never an empty report."""
        result = subprocess.run(
            [str(self.bin_dir / tool), *args], cwd=cwd, capture_output=True, text=True,
            env={**os.environ, "PYTHONPATH": str(cwd)},
        )
        # 0: clean; 1: findings (65 for codespell); anything else: a failure.
        crashed = "Traceback (most recent call last)" in result.stderr
        if crashed or result.returncode not in (0, 1, 65):
            raise PatchsetError(f"{tool} failed:\n{result.stderr[-2000:]}")
        return result


HOOK_ID = re.compile(r"^\s*(?:-\s+)?id:\s*(\S+)\s*$")


def hook_args(config: str, hook_id: str) -> list[str]:
    """The ``args`` of one hook of a .pre-commit-config.yaml, inline
    (``args: [a, b]``) or one ``- item`` a line."""
    lines = config.splitlines()
    start = next(
        (i for i, line in enumerate(lines)
         if (m := HOOK_ID.match(line)) and m.group(1) == hook_id),
        None,
    )
    if start is None:
        raise PatchsetError(f".pre-commit-config.yaml has no '{hook_id}' hook")
    for index in range(start + 1, len(lines)):
        line = lines[index].strip()
        if HOOK_ID.match(lines[index]) or line.startswith("- repo:"):
            break
        if not line.startswith("args:"):
            continue
        inline = line.removeprefix("args:").strip()
        if inline:
            items = inline.strip("[]").split(",")
        else:
            items = []
            for item in lines[index + 1:]:
                if not item.strip().startswith("- "):
                    break
                items.append(item.strip().removeprefix("- "))
        return [item.strip().strip("'\"") for item in items if item.strip()]
    return []


def commented(text: str) -> str:
    """A license file as insert-license writes it at the top of a file."""
    return "".join(f"# {line}\n" if line else "#\n" for line in text.splitlines())


def rules_of_tree(fork: Path) -> Rules | None:
    """The base tree's own rules, where it ships them (upstream main)."""
    shown = {
        name: git.run(fork, "show", f"{BASE_TAG}:{name}", check=False)
        for name in (".pre-commit-config.yaml", ".flake8")
    }
    if any(result.returncode != 0 for result in shown.values()):
        return None
    config = shown[".pre-commit-config.yaml"].stdout
    license_args = hook_args(config, "insert-license")
    license_file = license_args[license_args.index("--license-filepath") + 1]
    return Rules(
        flake8_args=tuple(hook_args(config, "flake8")),
        pydoclint_args=pydoclint_args(fork, hook_args(config, "pydoclint")),
        license_header=commented(git.output(fork, "show", f"{BASE_TAG}:{license_file}")),
        origin="the base's .pre-commit-config.yaml and .flake8",
    )


def pydoclint_args(fork: Path, args: list[str]) -> tuple[str, ...]:
    """The hook's arguments, less a ``--config=FILE`` whose FILE has no
    [tool.pydoclint] table: the pydoclint the hook pins reads its defaults
    then, the one installed here refuses to start."""
    kept = []
    for arg in args:
        if arg.startswith("--config="):
            text = git.run(fork, "show", f"{BASE_TAG}:{arg.removeprefix('--config=')}",
                           check=False).stdout
            if "[tool.pydoclint]" not in text:
                continue
        kept.append(arg)
    return tuple(kept)


def rules_of_settings(workspace: Workspace) -> Rules:
    """Upstream's rules as pyproject.toml records them, for a tree without them."""
    flake8 = workspace.settings().get("lint", {}).get("flake8", {})
    if not flake8:
        raise PatchsetError("[tool.patchset.lint.flake8] is missing in pyproject.toml")
    return Rules(
        flake8_args=(
            "--isolated",
            f"--max-line-length={flake8['max-line-length']}",
            f"--select={','.join(flake8['select'])}",
            f"--ignore={','.join(flake8['ignore'])}",
        ),
        # Without a [tool.pydoclint] table; torchtitan writes Google-style docstrings.
        pydoclint_args=("--style=google",),
        license_header=license_header(workspace.fork_dir),
        origin="[tool.patchset.lint] of pyproject.toml",
    )


def license_header(fork: Path) -> str:
    """The comment block that opens torchtitan's own files, read from the base."""
    text = git.output(fork, "show", f"{BASE_TAG}:torchtitan/__init__.py")
    lines = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        lines.append(line)
    if len(lines) < 4:
        raise PatchsetError("cannot read the license header from the base")
    return "\n".join(lines) + "\n"


def check_text(tree: Path, path: str, tools: Tools) -> list[Finding]:
    """The license header, trailing whitespace and the final newline."""
    text = (tree / path).read_text()
    findings = []
    if path.endswith(".py") and text and not text.startswith(tools.rules.license_header):
        findings.append(Finding(tool="license", path=path, line=1,
                                message="does not start with the license header"))
    for number, line in enumerate(text.splitlines(), start=1):
        if line != line.rstrip():
            findings.append(Finding(tool="whitespace", path=path, line=number,
                                    message="trailing whitespace"))
    if text and not text.endswith("\n"):
        findings.append(Finding(tool="whitespace", path=path, line=text.count("\n") + 1,
                                message="no newline at end of file"))
    return findings


def parse_colon_lines(tool: str, output: str) -> list[Finding]:
    """``path:line:[col:] message`` lines, as flake8 and codespell print them."""
    findings = []
    for raw in output.splitlines():
        parts = raw.split(":", 3)
        if len(parts) < 3 or not parts[1].strip().isdigit():
            continue
        has_column = len(parts) == 4 and parts[2].strip().isdigit()
        rest = parts[3] if has_column else ":".join(parts[2:])
        findings.append(Finding(tool=tool, path=parts[0], line=int(parts[1]),
                                message=rest.strip()))
    return findings


def flake8(tree: Path, files: list[str], tools: Tools) -> list[Finding]:
    result = tools.run("flake8", *tools.rules.flake8_args, *files, cwd=tree)
    return parse_colon_lines("flake8", result.stdout)


def ufmt(tree: Path, files: list[str], tools: Tools) -> list[Finding]:
    result = tools.run("ufmt", "check", *files, cwd=tree)
    output = result.stdout + result.stderr
    paths = [
        Path(line.split("Would format ", 1)[1]).relative_to(tree)
        for line in output.splitlines()
        if "Would format " in line
    ]
    return [
        Finding(tool="ufmt", path=str(path), line=1,
                message="would be reformatted (black 22.12.0, usort 1.0.5)")
        for path in paths
    ]


def codespell(tree: Path, files: list[str], tools: Tools) -> list[Finding]:
    result = tools.run("codespell", "--toml", "pyproject.toml", *files, cwd=tree)
    return parse_colon_lines("codespell", result.stdout)


def pydoclint(tree: Path, files: list[str], tools: Tools) -> list[Finding]:
    result = tools.run("pydoclint", *tools.rules.pydoclint_args, "--quiet", *files, cwd=tree)
    findings, path = [], None
    for raw in result.stdout.splitlines():
        if raw and not raw.startswith(" "):
            path = raw.strip()
        elif path and raw.strip() and raw.strip().split(":", 1)[0].isdigit():
            line, message = raw.strip().split(":", 1)
            findings.append(Finding(tool="pydoclint", path=path, line=int(line),
                                    message=message.strip()))
    return findings


def pyrefly(tree: Path, tools: Tools) -> list[Finding]:
    """Pyrefly checks the whole project, as upstream's hook does."""
    result = tools.run(
        "pyrefly", "check", "--python-interpreter-path", str(tools.python),
        "--output-format", "json", cwd=tree,
    )
    try:
        errors = json.loads(result.stdout)["errors"]
    except (ValueError, KeyError):
        raise PatchsetError(f"pyrefly gave no report:\n{result.stderr[-2000:]}")
    return [
        Finding(tool="pyrefly", path=error["path"], line=error["line"],
                message=f"{error['name']}: {error['concise_description']}")
        for error in errors
        if error.get("severity") == "error"
    ]


def python_files_in(tree: Path, files: list[str]) -> list[str]:
    return [path for path in files if path.endswith(".py") and (tree / path).is_file()]


def findings_in(tree: Path, files: list[str], tools: Tools) -> list[Finding]:
    """Findings of the per-file tools in ``files``."""
    present = [path for path in files if (tree / path).is_file()]
    python_files = python_files_in(tree, files)
    findings = [f for path in present for f in check_text(tree, path, tools)]
    findings += codespell(tree, present, tools) if present else []
    if python_files:
        for check in (flake8, ufmt, pydoclint):
            findings += check(tree, python_files, tools)
    return findings


def findings_at_state(tree: Path, files: list[str], tools: Tools,
                      background: ThreadPoolExecutor) -> list[Finding]:
    """Findings in ``files`` of the tree as checked out; pyrefly checks the
    whole project on the other core meanwhile."""
    python_files = python_files_in(tree, files)
    project = background.submit(pyrefly, tree, tools) if python_files else None
    findings = findings_in(tree, files, tools)
    if project is not None:
        findings += [f for f in project.result() if f.path in python_files]
    return findings


def new_findings(before: list[Finding], after: list[Finding]) -> list[Finding]:
    remaining = Counter(finding.key for finding in before)
    new = []
    for finding in after:
        if remaining[finding.key]:
            remaining[finding.key] -= 1
        else:
            new.append(finding)
    return new


def lint_series(workspace: Workspace, *, python: Path) -> dict[str, list[Finding]]:
    """New findings of each patch, by patch file name, in series order.

    ``python`` is the project's venv, whose packages pyrefly resolves.
    """
    fork = workspace.fork_dir
    state = inspect_fork(workspace)
    if state.blocker or state.unexported or not state.up_to_date:
        raise PatchsetError(
            f"{workspace.fork_label}/ does not match {workspace.patches_label}/: run "
            f"'scripts/series fork --target {workspace.target.name}' (or 'export' to "
            "keep the fork's commits) before 'lint'"
        )
    commits = git.output(fork, "rev-list", "--reverse", f"{BASE_TAG}..HEAD").split()
    names = series_names(workspace.series_file)
    if not names:
        return {}
    rules = rules_of_tree(fork) or rules_of_settings(workspace)
    tools = Tools(bin_dir=environment.ensure_lint(workspace), python=python, rules=rules)
    changed = [
        git.output(fork, "diff-tree", "--no-commit-id", "--name-only", "-r",
                   "--diff-filter=AM", commit).split()
        for commit in commits
    ]
    # State 0 is the base, state k the tree after patch k: patch k's files
    # are checked at state k - 1 (before) and at state k (after), and each
    # state is checked once for the files of both patches that need it.
    needed = [set() for _ in range(len(commits) + 1)]
    for number, files in enumerate(changed, start=1):
        needed[number - 1].update(files)
        needed[number].update(files)
    at_state = []
    with git.scratch_worktree(fork, BASE_TAG) as tree, ThreadPoolExecutor(1) as background:
        for state, files in zip([BASE_TAG, *commits], needed):
            git.run(tree, "checkout", "--quiet", "--detach", state)
            at_state.append(findings_at_state(tree, sorted(files), tools, background))
    report = {}
    for number, (name, files) in enumerate(zip(names, changed, strict=True), start=1):
        before = [f for f in at_state[number - 1] if f.path in files]
        after = [f for f in at_state[number] if f.path in files]
        report[name] = new_findings(before, after)
    return report


def print_report(report: dict[str, list[Finding]]) -> int:
    if not report:
        print("the series is empty: nothing to lint")
        return 0
    total = 0
    for name, findings in report.items():
        print(f"{'clean' if not findings else f'{len(findings)} new'}  {name}")
        for finding in findings:
            print(f"    {finding}")
        total += len(findings)
    print(f"\n{total} new finding(s) in {len(report)} patch(es).")
    return 1 if total else 0
