"""``plexplan info PATH``: what an image is, where it lies, and what was odd about it."""

from __future__ import annotations

import argparse
import json

from planner.volume import Volume, load

NAME = "info"
HELP = "print modality, size, spacing, origin, direction and warnings of an image"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", help="DICOM folder or file, or NIfTI file")
    parser.add_argument("--series", help="SeriesInstanceUID (or prefix) when the folder holds several")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")


def describe(volume: Volume) -> dict[str, object]:
    """The facts ``info`` prints, as a JSON-ready dict."""
    source = volume.source
    return {
        "modality": volume.modality,
        "shape_zyx": list(volume.shape),
        "spacing_zyx_mm": [round(s, 6) for s in volume.spacing],
        "origin_lps_mm": [round(o, 6) for o in volume.origin],
        "direction": [[round(v, 6) for v in row] for row in volume.direction.tolist()],
        "series_count": 1,
        "series_instance_uid": source.series_instance_uid if source else None,
        "series_description": source.series_description if source else None,
        "files": len(source.files) if source else None,
        "value_range": [float(volume.array.min()), float(volume.array.max())] if volume.array.size else None,
        "warnings": list(volume.warnings),
    }


def run(args: argparse.Namespace) -> int:
    from planner.dicom_series import count_image_series

    facts = describe(load(args.path, series=args.series))
    facts["series_count"] = count_image_series(args.path)
    if args.json:
        print(json.dumps(facts, indent=2))
        return 0
    print(f"modality      {facts['modality']}")
    print(f"shape (z,y,x) {facts['shape_zyx']}")
    print(f"spacing (mm)  {facts['spacing_zyx_mm']}  (z, y, x)")
    print(f"origin (LPS)  {facts['origin_lps_mm']}")
    print(f"direction     {facts['direction']}")
    print(f"series found  {facts['series_count']}")
    if facts["series_description"]:
        print(f"description   {facts['series_description']}")
    for warning in facts["warnings"]:  # type: ignore[union-attr]
        print(f"warning       {warning}")
    return 0
