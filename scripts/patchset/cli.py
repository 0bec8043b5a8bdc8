"""Command line: ``scripts/series <command>``; ``--help`` on each command."""

import argparse
import subprocess
import sys
from pathlib import Path

from patchset import apply, environment, fork
from patchset.errors import PatchsetError
from patchset.series import read_series
from patchset.workspace import Workspace


def set_up(workspace: Workspace) -> Path:
    """Everything the demo and the tests need; return the venv's python."""
    if workspace.fork_dir.exists():
        state = fork.inspect_fork(workspace)
        if state.unsaved_work:
            print(f"note: keeping {workspace.fork_dir.name}/ as it is: {state.unsaved_work}")
        elif not state.up_to_date:
            print(fork.refresh(workspace))
    else:
        print(fork.refresh(workspace))
    return environment.ensure(workspace)


def cmd_setup(workspace: Workspace, args: argparse.Namespace) -> int:
    python = set_up(workspace)
    print(f"environment ready: {python.relative_to(workspace.root)}")
    return 0


def cmd_fork(workspace: Workspace, args: argparse.Namespace) -> int:
    print(fork.refresh(workspace, backup=args.backup))
    return 0


def cmd_export(workspace: Workspace, args: argparse.Namespace) -> int:
    names = fork.export(workspace, force=args.force)
    print(f"exported {len(names)} patches to patches/")
    for name in names:
        print(f"  {name}")
    return 0


def cmd_apply(workspace: Workspace, args: argparse.Namespace) -> int:
    result = apply.apply_series(workspace, Path(args.to))
    if result.already_present:
        print(
            f"{args.to} already has the series "
            f"({len(result.already_present)} patches); nothing applied"
        )
    else:
        print(f"applied {len(result.applied)} patches to {args.to} with git am --3way")
    return 0


def cmd_demo(workspace: Workspace, args: argparse.Namespace) -> int:
    from patchset import demo

    python = set_up(workspace)
    return demo.run(workspace, python=python)


def cmd_table(workspace: Workspace, args: argparse.Namespace) -> int:
    from patchset import table

    python = set_up(workspace)
    rows = table.collect(workspace, python=python, recipes_from_base=args.base)
    print(table.to_json(rows) if args.json else table.to_markdown(rows))
    return 1 if table.invalid_recipes(rows) else 0


def cmd_lint(workspace: Workspace, args: argparse.Namespace) -> int:
    from patchset import lint

    python = set_up(workspace)
    return lint.print_report(lint.lint_series(workspace, python=python))


def cmd_bisect_check(workspace: Workspace, args: argparse.Namespace) -> int:
    from patchset import bisect

    python = set_up(workspace)
    steps = bisect.check_series(workspace, python=python)
    broken = bisect.first_broken(steps)
    if broken:
        print(f"\nfirst broken patch: {broken}")
        return 1
    print(f"\nevery step of the series is green ({len(steps)} patches)")
    return 0


def cmd_pr_description(workspace: Workspace, args: argparse.Namespace) -> int:
    from patchset import pr

    python = set_up(workspace)
    body = pr.description(workspace, python=python)
    print(body, end="")
    if args.cover_letter:
        paths = pr.write_mail_series(workspace, out_dir=args.cover_letter, body=body)
        print(f"\nwrote {len(paths)} files for git send-email to {args.cover_letter}/",
              file=sys.stderr)
    return 0


def cmd_rebase(workspace: Workspace, args: argparse.Namespace) -> int:
    from patchset import rebase

    print(rebase.rebase_onto(workspace, args.onto))
    return 0


def cmd_test(workspace: Workspace, args: argparse.Namespace) -> int:
    python = set_up(workspace)
    command = [str(python), "-m", "pytest", str(workspace.tests_dir), *args.pytest_args]
    return subprocess.run(command, cwd=workspace.root).returncode


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scripts/series",
        description="Develop, test and hand over the torchtitan TP head-count patch series.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    setup = commands.add_parser(
        "setup", help="download the base, build the fork and .venv (idempotent)"
    )
    setup.set_defaults(handler=cmd_setup)

    build = commands.add_parser(
        "fork", help="build or refresh torchtitan_fork/ from the base and patches/"
    )
    build.add_argument(
        "--backup",
        action="store_true",
        help="move a fork with unsaved work aside instead of refusing",
    )
    build.set_defaults(handler=cmd_fork)

    export = commands.add_parser(
        "export", help="write the fork's commits after 'base' to patches/ and series"
    )
    export.add_argument(
        "--force",
        action="store_true",
        help="overwrite patches/ even if it changed since the fork was built",
    )
    export.set_defaults(handler=cmd_export)

    apply_cmd = commands.add_parser(
        "apply", help="apply the series to another torchtitan git checkout (git am --3way)"
    )
    apply_cmd.add_argument("--to", required=True, metavar="DIR", help="the checkout")
    apply_cmd.set_defaults(handler=cmd_apply)

    demo = commands.add_parser(
        "demo", help="set up, then show TP=4 on Qwen3.5 MoE before and after the fix"
    )
    demo.set_defaults(handler=cmd_demo)

    table_cmd = commands.add_parser(
        "table",
        help="print every model flavor's TP head counts, valid TP degrees and recipes "
        "(exit status 1 if a recipe asks for an invalid TP)",
    )
    table_cmd.add_argument("--json", action="store_true", help="JSON instead of markdown")
    table_cmd.add_argument(
        "--base",
        action="store_true",
        help="read the recipes from the pristine base instead of the fork",
    )
    table_cmd.set_defaults(handler=cmd_table)

    lint_cmd = commands.add_parser(
        "lint",
        help="check each patch with torchtitan's pre-commit rules "
        "(flake8, ufmt, codespell, pydoclint, pyrefly, license header)",
    )
    lint_cmd.set_defaults(handler=cmd_lint)

    bisect_cmd = commands.add_parser(
        "bisect-check",
        help="apply the series one patch at a time to the pristine base and run "
        "the unit tests after each; report the first patch that breaks",
    )
    bisect_cmd.set_defaults(handler=cmd_bisect_check)

    pr_cmd = commands.add_parser(
        "pr-description",
        help="print the pull request text: problem, changes, TP table, testing",
    )
    pr_cmd.add_argument(
        "--cover-letter",
        type=Path,
        metavar="DIR",
        help="also write the stack as a numbered mail series with a cover letter",
    )
    pr_cmd.set_defaults(handler=cmd_pr_description)

    rebase_cmd = commands.add_parser(
        "rebase",
        help="replay the fork's commits onto another torchtitan tree (git rebase)",
    )
    rebase_cmd.add_argument(
        "--onto", required=True, type=Path, metavar="DIR",
        help="a torchtitan source tree: a newer release or an upstream checkout",
    )
    rebase_cmd.set_defaults(handler=cmd_rebase)

    test = commands.add_parser("test", help="set up, then run the tests with pytest")
    test.add_argument(
        "pytest_args", nargs=argparse.REMAINDER, help="extra arguments for pytest"
    )
    test.set_defaults(handler=cmd_test)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    workspace = Workspace.from_script_location()
    try:
        return args.handler(workspace, args)
    except PatchsetError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
