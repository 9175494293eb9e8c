"""``plexplan sample list`` and ``plexplan sample export NAME DIR``: the bundled cases."""

from __future__ import annotations

import argparse
import json

NAME = "sample"
HELP = "list the bundled sample cases (synthetic phantoms) or export one to a folder"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="sample_action", metavar="ACTION")
    actions.required = True
    listing = actions.add_parser("list", help="list the sample cases")
    listing.add_argument("--json", action="store_true", help="print JSON instead of text")
    export = actions.add_parser("export", help="copy a sample case into DIR/NAME")
    export.add_argument("name", metavar="NAME", help="case name, as `plexplan sample list` prints it")
    export.add_argument("folder", metavar="DIR", help="folder to copy the case into (created if needed)")


def run(args: argparse.Namespace) -> int:
    from planner.samples import all_cases, export_case

    if args.sample_action == "export":
        target = export_case(args.name, args.folder)
        print(f"exported {args.name} to {target}")
        print("synthetic phantom, not patient data; research and education software, not a medical device")
        return 0
    cases = all_cases()
    if args.json:
        print(json.dumps([
            {"name": c.name, "case": c.number, "title": c.title, "procedure": c.procedure,
             "presets": list(c.presets), "modality": c.modality, "description": c.description,
             "bundled": c.is_bundled, "path": str(c.path)} for c in cases], indent=2))
        return 0
    width = max(len(c.name) for c in cases)
    for c in cases:
        status = "" if c.is_bundled else "  [not bundled: run python -m segmentation.make_samples]"
        print(f"{c.name:<{width}}  {c.modality:<3} {c.title}{status}")
        print(f"{'':<{width}}      {c.description} (presets: {', '.join(c.presets)})")
    return 0
