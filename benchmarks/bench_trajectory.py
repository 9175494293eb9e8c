"""Trajectory-planner speed on the 3 mm standard celiac phantom (the ``celiac_standard`` sample).

Prints: distance maps for every organ at risk and the target (target < 2 s), a full search
of at least 100,000 candidate paths (target < 1 s, printed as paths/second), single-path
``evaluate`` with every metric and the robustness Monte-Carlo (target median < 5 ms), and
a whole bilateral plan. Run: ``python benchmarks/bench_trajectory.py [--preset NAME]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from planner.distance import CaseGeometry  # noqa: E402
from planner.plan import build_plan  # noqa: E402
from planner.targets import add_targets  # noqa: E402
from planner.trajectory import PathPlanner  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--preset", default="celiac_posterior_retrocrural")
    parser.add_argument("--min-paths", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from segmentation.make_samples import CT_PARAMS, CT_SPACING_MM
    from segmentation.phantom_ct import PhantomParams, make_ct_phantom

    phantom = make_ct_phantom(PhantomParams(**CT_PARAMS["celiac_standard"]), spacing_mm=CT_SPACING_MM)
    labels = add_targets(phantom.labels)
    print(f"case: celiac_standard phantom {labels.shape} voxels at {labels.spacing} mm; preset {args.preset}; "
          f"cpus {os.cpu_count()}, load {os.getloadavg()[0]:.1f}")

    times = []
    for _ in range(args.repeats):
        geometry = CaseGeometry(labels=labels, image=phantom.image)
        t0 = time.perf_counter()
        planner = PathPlanner(geometry, args.preset)
        times.append(time.perf_counter() - t0)
    print(f"distance maps: {len(planner.oars) + 1} structures + slack/risk/contact maps + skin: "
          f"best {min(times):.3f} s (median {statistics.median(times):.3f} s; target < 2 s)")

    # the full search: every posterior skin voxel that reaches a target (the preset's entry zone
    # lifted so that the search space is the whole reachable back), both sides at once
    wide = PathPlanner(geometry, dataclasses.replace(planner.preset, entry_from_midline_mm=None))
    n_targets = 8
    while True:  # enough target samples for at least --min-paths candidate paths
        probe = wide.search("both", n_targets=n_targets)
        if probe.n_paths >= args.min_paths or probe.n_targets < n_targets:
            break
        n_targets = math.ceil(n_targets * args.min_paths / max(probe.n_paths, 1)) + 1
    times, cands = [], None
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        cands = wide.search("both", n_targets=n_targets)
        times.append(time.perf_counter() - t0)
    assert cands is not None
    best = min(times)
    print(f"full search: {cands.n_paths} candidate paths ({cands.n_entries} entries x {cands.n_targets} targets), "
          f"{cands.n_sampled} sampled, {cands.n_samples} trilinear samples: best {best:.3f} s = "
          f"{cands.n_paths / best:,.0f} paths/second (median {statistics.median(times):.3f} s; target < 1 s); "
          f"feasible {int(cands.feasible.sum())}")
    t0 = time.perf_counter()
    side = planner.search("left", n_targets=48)
    print(f"preset search (left, entry zone {planner.preset.entry_from_midline_mm} mm): {side.n_paths} paths in "
          f"{time.perf_counter() - t0:.3f} s, feasible {int(side.feasible.sum())}")

    rng = np.random.default_rng(0)
    rows = rng.choice(cands.n_paths, size=min(200, cands.n_paths), replace=False)
    planner.evaluate(cands.entry_lps[rows[0]], cands.target_lps[rows[0]])  # warm-up
    for robust in (True, False):
        wall, cpu = [], []
        for r in rows:
            w0, c0 = time.perf_counter(), time.process_time()
            planner.evaluate(cands.entry_lps[r], cands.target_lps[r], robustness=robust)
            wall.append((time.perf_counter() - w0) * 1000.0)
            cpu.append((time.process_time() - c0) * 1000.0)
        what = (f"every metric + robustness Monte-Carlo ({planner.error_model.samples} samples)" if robust
                else "every metric, robustness=False (live drag)")
        print(f"evaluate ({what}): median {statistics.median(wall):.2f} ms wall, {statistics.median(cpu):.2f} ms "
              f"CPU; p90 {np.percentile(wall, 90):.2f} ms wall over {len(wall)} paths (target median < 5 ms)")

    t0 = time.perf_counter()
    plan = build_plan(phantom.image, labels, args.preset, case="celiac_standard")
    print(f"whole plan ({'bilateral' if plan.bilateral else 'unilateral'}): {time.perf_counter() - t0:.2f} s, "
          f"feasible {plan.feasible}, primary {[t.side for t in plan.primary]}, warnings {list(plan.warnings)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
