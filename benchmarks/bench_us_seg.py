"""Ultrasound nerve/vessel model: cross-validated Dice with 95% intervals, and inference speed.

Usage::

    python benchmarks/bench_us_seg.py [--bundle models/us_nerve_seg] [--run /tmp/us_run]
                                      [--threads 2] [--frames 64]

Dice comes from the held-out fold predictions, measured per frame on the frame's own pixels:
with ``--run`` from the training run's ``cv_metrics.json``, else from the per-frame results
shipped in the bundle (``docs/cross_validation.json``). The interval is a 95% percentile bootstrap over
frames (seeded). Speed: frames/s of the shipped network on 256x256 frames, batch 16, on
``--threads`` CPU threads (target >= 20), including letterboxing and argmax.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", default=None, help="bundle folder (default: shipped us_nerve_seg)")
    parser.add_argument("--run", default=None, help="training output folder with cv_metrics.json")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import torch

    from segmentation.bundle import default_bundle_path, read_bundle
    from segmentation.ultrasound import CV_RESULTS, UltrasoundSegmenter, bootstrap_ci

    torch.set_num_threads(args.threads)
    bundle = read_bundle(args.bundle or default_bundle_path("us_nerve_seg"))

    # ---- cross-validated Dice
    if args.run:
        rows = json.loads((Path(args.run) / "cv_metrics.json").read_text())["per_frame"]
        source = f"{args.run}/cv_metrics.json"
    else:
        rows = json.loads((bundle.root / "docs" / CV_RESULTS).read_text())["per_frame"]
        source = f"{bundle.root.name}/docs/{CV_RESULTS}"
    folds = sorted({int(r["fold"]) for r in rows})
    print(f"cross-validation ({len(folds)} folds, {len(rows)} held-out frames, from {source})")
    for name in ("nerve", "vessel"):
        for suffix, what in (("", "shipped post-processing"), ("_raw", "plain argmax")):
            if f"dice_{name}{suffix}" not in rows[0]:
                continue
            values = [float(r[f"dice_{name}{suffix}"]) for r in rows]
            mean, lo, hi = bootstrap_ci(values, seed=args.seed)
            n = int(np.isfinite(values).sum())
            print(f"  {name:<7} Dice {mean:.3f}  95% CI {lo:.3f}-{hi:.3f}  (n={n} frames, {what})")

    # ---- speed
    post = bundle.ours.get("postprocessing", {})
    segmenter = UltrasoundSegmenter(bundle.load_network(), image_size=bundle.image_size, batch_size=16,
                                    background_scale=float(post.get("background_scale", 1.0)),
                                    flip_tta=bool(post.get("flip_tta", False)))
    rng = np.random.default_rng(args.seed)
    frames = rng.integers(0, 256, size=(args.frames, 256, 256), dtype=np.uint8)
    segmenter.predict(frames[:16])  # warm-up
    t0, c0 = time.perf_counter(), time.process_time()
    segmenter.predict(frames)
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(f"inference 256x256: {args.frames / elapsed:.1f} frames/s on {args.threads} CPU threads "
          f"(batch 16, flip averaging {'on' if segmenter.flip_tta else 'off'}, "
          f"{args.frames} frames in {elapsed:.2f} s; target >= 20)")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"  CPU time {cpu:.2f} s: {args.frames / cpu * args.threads:.1f} frames/s expected on {args.threads} "
          f"dedicated cores (load average now {load:.1f} on {os.cpu_count()} cores)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
