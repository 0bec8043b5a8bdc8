"""Command line: ``scripts/series <command>``; ``--help`` on each command."""

import argparse
import subprocess
import sys
from pathlib import Path

from patchset import apply, environment, fork
from patchset.errors import PatchsetError
from patchset.workspace import Workspace


def set_up(workspace: Workspace) -> Path:
    """Every target's fork and the venv; return the venv's python."""
    for each in workspace.every_target():
        if not each.fork_dir.exists():
            print(fork.refresh(each))
            continue
        state = fork.inspect_fork(each)
        if state.unsaved_work:
            print(f"note: keeping {each.fork_label}/ as it is: {state.unsaved_work}")
        elif not state.up_to_date:
            print(fork.refresh(each))
    return environment.ensure(workspace)


def cmd_setup(workspace: Workspace, args: argparse.Namespace) -> int:
    python = set_up(workspace)
    print(f"environment ready: {python.relative_to(workspace.root)}")
    return 0


def cmd_fork(workspace: Workspace, args: argparse.Namespace) -> int:
    print(fork.refresh(workspace, backup=args.backup, from_clone=args.from_clone))
    return 0


def cmd_export(workspace: Workspace, args: argparse.Namespace) -> int:
    names = fork.export(workspace, force=args.force)
    print(f"exported {len(names)} patches to {workspace.patches_label}/")
    for name in names:
        print(f"  {name}")
    return 0


def chosen_targets(workspace: Workspace, args: argparse.Namespace) -> list[Workspace]:
    """The target named by --target, or every target."""
    return [workspace] if args.target else workspace.every_target()


def cmd_apply(workspace: Workspace, args: argparse.Namespace) -> int:
    print(apply.apply_first_fitting(chosen_targets(workspace, args), Path(args.to)))
    return 0


def cmd_demo(workspace: Workspace, args: argparse.Namespace) -> int:
    from patchset import demo

    python = set_up(workspace)
    return demo.run_targets(chosen_targets(workspace, args), python=python)


def cmd_check_cost(workspace: Workspace, args: argparse.Namespace) -> int:
    from patchset import check_cost

    python = set_up(workspace)
    return check_cost.run_targets(chosen_targets(workspace, args), python=python)


def cmd_replication_cost(workspace: Workspace, args: argparse.Namespace) -> int:
    from patchset import replication_cost

    python = set_up(workspace)
    return replication_cost.run_targets(chosen_targets(workspace, args), python=python)


def cmd_table(workspace: Workspace, args: argparse.Namespace) -> int:
    from patchset import table

    python = set_up(workspace)
    rows = table.collect(workspace, python=python, recipes_from_base=args.base)
    print(table.to_json(rows) if args.json else table.to_markdown(rows))
    return 1 if table.invalid_recipes(rows) else 0


def cmd_lint(workspace: Workspace, args: argparse.Namespace) -> int:
    from patchset import lint

    python = set_up(workspace)
    print(f"target {workspace.target.name}")
    return lint.print_report(lint.lint_series(workspace, python=python))


def cmd_bisect_check(workspace: Workspace, args: argparse.Namespace) -> int:
    from patchset import bisect

    python = set_up(workspace)
    steps = bisect.check_series(workspace, python=python)
    broken = bisect.first_broken(steps)
    if broken:
        print(f"\nfirst broken patch: {broken}")
        return 1
    print(f"\nevery step of the {workspace.target.name} series is green ({len(steps)} patches)")
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

    print(rebase.rebase_onto(workspace, args.onto.resolve()))
    return 0


def cmd_targets(workspace: Workspace, args: argparse.Namespace) -> int:
    for each in workspace.every_target():
        print(each.target.name)
    return 0


# Tier 2, the proofs (registered in pyproject.toml): 'prove' runs them,
# 'test' everything else.
PROOF_MARKER = "proof"


def run_pytest(workspace: Workspace, args: argparse.Namespace, *, selection: str) -> int:
    python = set_up(workspace)
    if "-m" in args.pytest_args:
        raise PatchsetError(f"'{args.command}' selects its tier with -m itself; "
                            "name tests by path or -k instead")
    # No path given: pytest runs its testpaths (tests/) from pyproject.toml.
    command = [str(python), "-m", "pytest", "-m", selection, *args.pytest_args]
    return subprocess.run(command, cwd=workspace.root).returncode


def cmd_test(workspace: Workspace, args: argparse.Namespace) -> int:
    return run_pytest(workspace, args, selection=f"not {PROOF_MARKER}")


def cmd_prove(workspace: Workspace, args: argparse.Namespace) -> int:
    return run_pytest(workspace, args, selection=PROOF_MARKER)


def flag(name: str, help_text: str) -> tuple[tuple[str, ...], dict]:
    return (name,), {"action": "store_true", "help": help_text}


def directory(name: str, help_text: str, **kwargs) -> tuple[tuple[str, ...], dict]:
    return (name,), {"type": Path, "metavar": "DIR", "help": help_text, **kwargs}


# name, handler, help, arguments
SUBCOMMANDS = (
    ("setup", cmd_setup, "get every target's base, build its fork, and .venv (idempotent)",
     ()),
    ("fork", cmd_fork,
     "build or refresh torchtitan_fork/TARGET/ from the base and patches/TARGET/",
     (flag("--backup", "move a fork with unsaved work aside instead of refusing"),
      directory("--from-clone", "git targets: a torchtitan clone that has the pinned "
                "commit; the fork's base is that commit, with its history"))),
    ("export", cmd_export,
     "write the fork's commits after 'base' to patches/TARGET/ and its series",
     (flag("--force", "overwrite patches/ even if it changed since the fork was built"),)),
    ("apply", cmd_apply,
     "apply the first target's series that fits to another torchtitan git checkout "
     "(git am --3way); --target forces one",
     (directory("--to", "the checkout", required=True),)),
    ("rebase", cmd_rebase,
     "replay the fork's commits onto another torchtitan tree (git rebase)",
     (directory("--onto", "a torchtitan source tree: a newer release or an upstream "
                "checkout", required=True),)),
    ("demo", cmd_demo, "set up, then show TP=4 on Qwen3.5 MoE before and after the fix, "
     "for every target (or --target)", ()),
    ("check-cost", cmd_check_cost,
     "set up, then time the TP check in parallelize_fn against a valid parallelize_fn "
     "(Qwen3.5 397B-A17B) for every target (or --target)", ()),
    ("replication-cost", cmd_replication_cost,
     "set up, then compare the large Qwen3.5 MoE recipes at their TP with replicated "
     "KV heads against TP=2, per rank on meta, for every target (or --target)", ()),
    ("table", cmd_table,
     "print every model flavor's TP head counts, valid TP degrees and recipes "
     "(exit status 1 if a recipe asks for an invalid TP)",
     (flag("--json", "JSON instead of markdown"),
      flag("--base", "read the recipes from the pristine base instead of the fork"))),
    ("lint", cmd_lint,
     "check each patch with torchtitan's pre-commit rules "
     "(flake8, ufmt, codespell, pydoclint, pyrefly, license header)", ()),
    ("bisect-check", cmd_bisect_check,
     "apply the series one patch at a time to the pristine base and run the unit "
     "tests after each; report the first patch that breaks", ()),
    ("pr-description", cmd_pr_description,
     "print the pull request text: problem, changes, TP table, testing",
     (directory("--cover-letter", "also write the stack as a numbered mail series "
                "with a cover letter"),)),
    ("test", cmd_test,
     "set up, then run tier 1, the quick tests of the tooling and of every series "
     "(other arguments go to pytest)", ()),
    ("prove", cmd_prove,
     "set up, then run tier 2, the proofs: multi-rank comparisons, negative controls "
     "on the pristine trees, the forks' unit tests, the demo (other arguments go to "
     "pytest)", ()),
    ("targets", cmd_targets, "list the pinned targets, the default first", ()),
)
# Commands that act on one target. The others set up, list or choose every target.
WITHOUT_TARGET = ("test", "prove", "setup", "targets")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scripts/series",
        description="Develop, test and hand over the torchtitan TP head-count patch series.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, handler, help_text, arguments in SUBCOMMANDS:
        command = commands.add_parser(name, help=help_text)
        for names, kwargs in arguments:
            command.add_argument(*names, **kwargs)
        if name not in WITHOUT_TARGET:
            command.add_argument(
                "--target", metavar="NAME",
                help="the target (a folder of patches/ pinned in patches/targets.toml); "
                "default: its 'default'",
            )
        command.set_defaults(handler=handler)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command not in ("test", "prove"):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.pytest_args = extra
    args.target = getattr(args, "target", None)
    workspace = Workspace.from_script_location(args.target)
    try:
        workspace.targets().get(args.target)  # refuses an unknown name, or pins and folders that disagree
        moved = fork.adopt_single_fork(workspace)
        if moved:
            print(f"note: {moved}", file=sys.stderr)
        return args.handler(workspace, args)
    except PatchsetError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
