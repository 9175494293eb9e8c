"""``plexplan plan PATH --procedure NAME --out DIR [--labels FILE]``: plan needle trajectories.

Writes ``plan.json``, ``report.html`` and ``report.pdf`` (:mod:`planner.report`) into DIR.
Without ``--labels`` the shipped CT segmentation model segments the image first (its label
outputs are written into DIR too); the report says which labels were used.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from planner.errors import PlanError

if TYPE_CHECKING:  # pragma: no cover
    from planner.volume import Volume

NAME = "plan"
HELP = "plan needle trajectories for a procedure preset; write DIR/plan.json, report.html and report.pdf"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from planner.presets import preset_names

    parser.add_argument("path", help="image: DICOM folder or file, or NIfTI file")
    parser.add_argument("--procedure", required=True, metavar="NAME",
                        help=f"procedure preset, one of: {', '.join(preset_names())}")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (plan.json is written there)")
    parser.add_argument("--labels", metavar="FILE",
                        help="label map (NIfTI) in the anatomy vocabulary on the image grid")
    parser.add_argument("--series", help="SeriesInstanceUID (or prefix) when the folder holds several")
    parser.add_argument("--case", help="case name stored in the plan (default: the image's name)")
    parser.add_argument("--top-k", type=int, default=5, help="trajectories kept per side (default 5)")
    parser.add_argument("--seed", type=int, default=0, help="seed for target sampling (default 0)")
    parser.add_argument("--clinical", metavar="FILE",
                        help="JSON object of clinical inputs for the analgesia estimate (see plexplan outcome "
                             "predict; unset inputs are the reference patient's)")
    parser.add_argument("--include-identifiers", action="store_true",
                        help="show patient name, ID and dates from the DICOM header in the report")


def labels_from_model(image: "Volume", out_dir: Path) -> tuple["Volume", dict]:
    """Segment ``image`` with the shipped CT bundle (outputs into ``out_dir``); labels and their provenance."""
    from planner.errors import ModelError

    try:
        from segmentation.bundle import default_bundle_path, read_bundle
        from segmentation.commands.segment import DEFAULT_BUNDLES, segment_series

        bundle = read_bundle(default_bundle_path(DEFAULT_BUNDLES["CT"]))
    except (ImportError, ModelError) as exc:
        raise PlanError(f"no usable CT segmentation model is installed ({exc}), so plan needs a label map: pass "
                        "--labels FILE (a NIfTI label map in the planner.anatomy vocabulary on the image grid, "
                        "e.g. exported from a sample case)") from None
    if image.modality not in ("CT", "OT"):
        raise PlanError(f"the image is {image.modality}; the shipped segmentation model is for CT: pass --labels FILE")
    labels, _ = segment_series(image, bundle, out_dir)
    info = {"source": "model", "name": bundle.name, "version": str(bundle.metadata.get("version", "?")),
            "card": str(bundle.root / "docs" / "README.md")}
    return labels, info


def run(args: argparse.Namespace) -> int:
    from planner.plan import build_plan
    from planner.presets import get_preset
    from planner.report import write_plan_report
    from planner.volume import load

    get_preset(args.procedure)  # unknown preset: fail before loading anything
    clinical = {}
    if args.clinical:
        try:
            clinical = json.loads(Path(args.clinical).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise PlanError(f"{args.clinical}: not a readable JSON object of clinical inputs ({exc})") from None
        if not isinstance(clinical, dict):
            raise PlanError(f"{args.clinical}: clinical inputs must be a JSON object")
    image = load(args.path, series=args.series)
    if args.labels:
        labels = load(args.labels)
        source = {"source": "imported", "file": Path(args.labels).name}
    else:
        labels, source = labels_from_model(image, Path(args.out))
    case = args.case or Path(args.path).name.split(".")[0]
    plan = build_plan(image, labels, args.procedure, case=case, top_k=args.top_k, seed=args.seed,
                      models={"labels": getattr(args, "labels_source", None) or source})
    written, estimate, why_not = write_plan_report(Path(args.out), plan, image, labels, clinical,
                                                   include_identifiers=args.include_identifiers)
    out = written["plan.json"]
    for t in plan.primary:
        nearest = t.details.get("nearest_structure")
        near = f"{nearest} {t.min_clearance_mm[nearest]:.1f} mm" if nearest in t.min_clearance_mm else "-"
        print(f"{t.side:>5}: entry {[round(v, 1) for v in t.entry_lps_mm]} -> target "
              f"{[round(v, 1) for v in t.target_lps_mm]} LPS mm, {t.length_mm:.0f} mm "
              f"(needle {t.needle_length_mm:g} mm), closest organ {near}, "
              f"risk {t.risk:.3f}, P(organ contact) {t.p_oar_contact:.3f}")
    print(f"spread: {plan.spread['quadrants']} quadrant(s); plan written to {out}")
    if estimate is not None:
        print("analgesia estimate: " + estimate.summary().splitlines()[1])
    else:
        print(why_not)
    print(f"report: {written['report.html']} and {written['report.pdf']}")
    for w in plan.warnings:
        print(f"warning: {w}")
    return 0 if plan.feasible else 1
