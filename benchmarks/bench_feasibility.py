"""Feasibility of every CT procedure preset over many phantoms (a measurement, not a test).

For 20 phantom seeds (3 mm grid) plus the CT sample cases' parameter sets
(``segmentation.make_samples.CT_PARAMS``) and each CT preset, prints whether the plan is
bilateral-feasible (``bi``), unilateral (``uni``, one side only) or infeasible (``none``),
then for the primary paths (or, with none feasible, the least-bad candidate) the minimum
clearance (mm) to aorta, kidneys, IVC, spinal canal and lungs, the entry's distance from
the midline and the path length (mm). A summary counts the outcomes per preset.

Run: ``python benchmarks/bench_feasibility.py [--seeds 20] [--presets a,b]``
"""

from __future__ import annotations

import argparse
import time
from collections import Counter

import numpy as np

from planner.errors import PlanError
from planner.plan import build_plan
from planner.targets import add_targets
from segmentation.make_samples import CT_PARAMS, CT_SPACING_MM
from segmentation.phantom_ct import PhantomParams, make_ct_phantom

PRESETS = ("celiac_posterior_retrocrural", "celiac_transcrural", "celiac_transaortic", "celiac_anterior",
           "superior_hypogastric_posterior", "splanchnic")
OARS = (("aorta", ("aorta",)), ("kid", ("kidney_left", "kidney_right")), ("ivc", ("inferior_vena_cava",)),
        ("canal", ("spinal_canal",)), ("lung", ("lungs",)))


def _cases(n_seeds: int) -> list[tuple[str, PhantomParams]]:
    cases = [(f"seed{s}", PhantomParams(seed=s)) for s in range(1, n_seeds + 1)]
    cases += [(name, PhantomParams(**kw)) for name, kw in CT_PARAMS.items()]
    return cases


def _row(t) -> str:
    c = t.min_clearance_mm
    parts = []
    for short, names in OARS:
        vals = [c[n] for n in names if n in c and c[n] is not None]
        parts.append(f"{short} {min(vals):5.1f}" if vals else f"{short}   n/a")
    d = t.details
    return (f"{t.side[0].upper()} {'ok' if t.feasible else '--'} " + " ".join(parts)
            + f" | mid {d.get('entry_from_midline_mm', float('nan')):5.1f} len {t.length_mm:5.1f}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--presets", default=",".join(PRESETS))
    args = ap.parse_args()
    presets = args.presets.split(",")
    outcome: dict[str, Counter] = {p: Counter() for p in presets}
    t_all = time.perf_counter()
    for name, params in _cases(args.seeds):
        ph = make_ct_phantom(params, spacing_mm=CT_SPACING_MM)
        labels = add_targets(ph.labels)
        print(f"== {name} (seed {params.seed}, bmi {params.bmi:g}, tumour {params.tumour_encasement:g}, "
              f"celiac faces {ph.details.get('celiac_origin_faces')})", flush=True)
        for proc in presets:
            try:
                plan = build_plan(ph.image, labels, proc, case=name, top_k=3)
            except PlanError as exc:
                outcome[proc]["error"] += 1
                print(f"  {proc:31s} error: {str(exc)[:110]}", flush=True)
                continue
            prim = plan.primary
            if plan.bilateral:
                kind = "bi" if len(prim) == 2 else "uni" if prim else "none"
            else:
                kind = "ok" if prim else "none"
            outcome[proc][kind] += 1
            shown = list(prim)
            if not shown:  # the least-bad candidate per side
                seen = set()
                for t in plan.trajectories:
                    if t.side not in seen:
                        seen.add(t.side)
                        shown.append(t)
            print(f"  {proc:31s} {kind:4s} " + " || ".join(_row(t) for t in shown), flush=True)
    print("\nsummary (cases per outcome):")
    for proc in presets:
        print(f"  {proc:31s} " + ", ".join(f"{k} {v}" for k, v in sorted(outcome[proc].items())))
    print(f"total {time.perf_counter() - t_all:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
