"""``plexplan``: the command-line front end.

Each sub-command is a module in ``planner.commands`` or ``segmentation.commands`` that
defines ``NAME``, ``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``; they are
discovered here, so adding a command touches no shared file. Command modules import
nothing heavy at module level (torch and MONAI load inside ``run``).

Errors the user can fix (:class:`planner.errors.PlannerError`) print one line and exit
with status 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import pkgutil
import sys
from types import ModuleType
from typing import Sequence

from planner import __version__
from planner.errors import PlannerError
from planner.logs import configure, redact

COMMAND_PACKAGES = ("planner.commands", "segmentation.commands")
DISCLAIMER = "Research and education software, not a medical device."


def _command_modules() -> list[ModuleType]:
    modules = []
    for package_name in COMMAND_PACKAGES:
        package = importlib.import_module(package_name)
        for info in pkgutil.iter_modules(package.__path__):
            if not info.name.startswith("_"):
                modules.append(importlib.import_module(f"{package_name}.{info.name}"))
    return sorted(modules, key=lambda m: m.NAME)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="plexplan",
        description=f"Planning for image-guided cancer-pain procedures. {DISCLAIMER}",
    )
    parser.add_argument("--version", action="version", version=f"plexus-planner {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    parser.add_argument("-v", "--verbose", action="store_true", help="more log output")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for module in _command_modules():
        sub = subparsers.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        module.add_arguments(sub)
        sub.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure(verbose=args.verbose)
    try:
        return int(args._run(args) or 0)
    except PlannerError as exc:
        if args.debug:
            raise
        print(f"plexplan {args.command}: error: {redact(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("plexplan: interrupted", file=sys.stderr)
        return 130


def run_process(argv: Sequence[str] | None = None) -> None:
    """The ``plexplan`` program (console script, ``python -m planner.cli``): :func:`main`, then exit.

    Before exiting it hands every remaining object to :func:`gc.freeze`, so interpreter
    shutdown frees them by reference count without the cyclic collector walking torch's and
    MONAI's million-odd objects again and again (about 1.5 s of every ``plexplan segment`` on
    2 cores, measured by ``benchmarks/bench_ct_seg.py``). Only for a process about to end: a
    frozen object is never collected, so library callers and tests use :func:`main`.
    """
    code = main(argv)
    gc.freeze()
    sys.exit(code)


if __name__ == "__main__":  # pragma: no cover
    run_process()
