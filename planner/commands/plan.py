"""``plexplan plan PATH --procedure NAME --out DIR --labels FILE``: plan needle trajectories."""

from __future__ import annotations

import argparse
from pathlib import Path

from planner.errors import PlanError

NAME = "plan"
HELP = "plan needle trajectories for a procedure preset and write DIR/plan.json"


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


def run(args: argparse.Namespace) -> int:
    from planner.plan import build_plan
    from planner.presets import get_preset
    from planner.volume import load

    get_preset(args.procedure)  # unknown preset: fail before loading anything
    if not args.labels:
        raise PlanError("no CT segmentation model is bundled with plexus-planner yet, so plan needs a label "
                        "map: pass --labels FILE (a NIfTI label map in the planner.anatomy vocabulary on the "
                        "image grid, e.g. exported from a sample case)")
    image = load(args.path, series=args.series)
    labels = load(args.labels)
    case = args.case or Path(args.path).name.split(".")[0]
    plan = build_plan(image, labels, args.procedure, case=case, top_k=args.top_k, seed=args.seed,
                      models={"labels": {"source": "imported", "file": Path(args.labels).name}})
    out = plan.save(Path(args.out) / "plan.json")
    for t in plan.primary:
        nearest = t.details.get("nearest_structure")
        near = f"{nearest} {t.min_clearance_mm[nearest]:.1f} mm" if nearest in t.min_clearance_mm else "-"
        print(f"{t.side:>5}: entry {[round(v, 1) for v in t.entry_lps_mm]} -> target "
              f"{[round(v, 1) for v in t.target_lps_mm]} LPS mm, {t.length_mm:.0f} mm "
              f"(needle {t.needle_length_mm:g} mm), closest organ {near}, "
              f"risk {t.risk:.3f}, P(organ contact) {t.p_oar_contact:.3f}")
    print(f"spread: {plan.spread['quadrants']} quadrant(s); plan written to {out}")
    for w in plan.warnings:
        print(f"warning: {w}")
    return 0 if plan.feasible else 1
