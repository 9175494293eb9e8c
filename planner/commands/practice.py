"""``plexplan practice CASE --entry X,Y,Z --target X,Y,Z``: score a trainee's needle path.

CASE is a bundled sample case name (``plexplan sample list``) or an image path with
``--labels``. Entry and target are patient LPS millimetres (x left, y posterior,
z superior), as shown in the napari status bar and in ``plan.json``; write
``--entry=-49.5,103.3,-105`` (with ``=``) when a value list starts with a minus sign. The path is scored
against the planner's best by :class:`planner.practice.PracticeSession`.
"""

from __future__ import annotations

import argparse
import json

from planner.errors import PlannerError

NAME = "practice"
HELP = "trainee practice: score a needle path (LPS mm) against the planner's best on a case"


def _point(text: str) -> tuple[float, float, float]:
    try:
        values = tuple(float(v) for v in text.replace(" ", "").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected X,Y,Z in mm, got {text!r}") from None
    if len(values) != 3:
        raise argparse.ArgumentTypeError(f"expected three values X,Y,Z in mm, got {text!r}")
    return values  # type: ignore[return-value]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("case", help="sample case name or image path (DICOM folder/file or NIfTI)")
    parser.add_argument("--entry", required=True, type=_point, metavar="X,Y,Z",
                        help="skin entry, LPS mm (write --entry=X,Y,Z when X is negative)")
    parser.add_argument("--target", required=True, type=_point, metavar="X,Y,Z",
                        help="needle tip, LPS mm (write --target=X,Y,Z when X is negative)")
    parser.add_argument("--procedure", metavar="NAME", help="procedure preset (default: the case's first preset)")
    parser.add_argument("--labels", metavar="FILE", help="label map for an image path (NIfTI on the image grid)")
    parser.add_argument("--seed", type=int, default=0, help="seed for target sampling (default 0)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from planner.practice import PracticeSession
    from planner.samples import case_names, get_case, load_case
    from planner.volume import load

    if args.case in case_names() or not Path(args.case).exists():
        case = get_case(args.case)  # unknown name: error listing the cases
        image, labels = load_case(case.name)
        procedure = args.procedure or case.presets[0]
    else:
        if not args.labels:
            raise PlannerError(f"{args.case} is an image path: pass --labels FILE (its label map) and --procedure")
        if not args.procedure:
            raise PlannerError("pass --procedure NAME for an image path (see plexplan plan --help)")
        image, labels, procedure = load(args.case), load(args.labels), args.procedure
    score = PracticeSession(image, labels, procedure, seed=args.seed).score(args.entry, args.target)
    print(json.dumps(score.to_dict(), indent=2) if args.json else score.text())
    return 0
