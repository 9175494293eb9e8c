"""``plexplan demo [--case NAME] [--out DIR]``: the main job on a bundled sample case.

Runs ``plexplan plan`` (load, labels, targets, trajectory search and ranking, spread,
analgesia estimate, report) on a sample case from ``sample_dicom/`` and prints where
``report.html`` and ``report.pdf`` are. By default the case's reference labels are used;
``--segment`` runs the shipped CT segmentation model instead.
"""

from __future__ import annotations

import argparse
from pathlib import Path

NAME = "demo"
HELP = "plan a bundled sample case end to end and write its report (the first command to try)"
DEFAULT_CASE = "celiac_standard"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from planner.samples import all_cases

    parser.add_argument("--case", default=DEFAULT_CASE, metavar="NAME",
                        help=f"sample case (default {DEFAULT_CASE}); one of: {', '.join(c.name for c in all_cases())}")
    parser.add_argument("--out", metavar="DIR", help="output folder (default ./plexplan_demo/<case>)")
    parser.add_argument("--procedure", metavar="NAME", help="procedure preset (default: the case's first preset)")
    parser.add_argument("--segment", action="store_true",
                        help="segment the CT with the shipped model instead of using the case's reference labels")
    parser.add_argument("--seed", type=int, default=0, help="seed for target sampling (default 0)")


def plan_args(case_name: str, out: Path, procedure: str | None = None, segment: bool = False,
              seed: int = 0) -> argparse.Namespace:
    """The ``plexplan plan`` arguments that run a sample case (reference labels unless ``segment``)."""
    from planner.samples import get_case

    case = get_case(case_name)
    return argparse.Namespace(
        path=str(case.image_path), procedure=procedure or case.presets[0], out=str(out),
        labels=None if segment else str(case.labels_path), series=None, case=case.name, top_k=5, seed=seed,
        clinical=None, include_identifiers=False,
        labels_source=None if segment else {"source": "sample reference", "case": case.name,
                                             "file": case.labels})


def run(args: argparse.Namespace) -> int:
    from planner.commands import plan

    out = Path(args.out) if args.out else Path("plexplan_demo") / args.case
    rc = plan.run(plan_args(args.case, out, args.procedure, args.segment, args.seed))
    print(f"demo done: open {out.resolve() / 'report.html'} (or report.pdf) in a browser or PDF viewer")
    return rc
