"""Time to generate one CT phantom (and derive its target regions) on this machine.

Prints, per seed, the wall time of ``make_ct_phantom`` at the given spacing (default the
sample-case 3 mm grid, 128 x 128 x 120 voxels) and of ``derive_targets`` on its labels,
then the median and maximum, and the target rules on a 0.75 mm-sized label map.
Acceptance: one 3 mm phantom in under 10 s on 2 cores.

    python benchmarks/bench_phantom.py [--seeds 5] [--spacing 3] [--bmi 24] [--encasement 0]

Exit status 1 when the maximum exceeds the limit.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

from planner.targets import derive_targets
from planner.volume import Volume
from segmentation.phantom_ct import PhantomParams, make_ct_phantom

LIMIT_S = 10.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5, help="number of seeds (0..N-1)")
    parser.add_argument("--spacing", type=float, default=3.0, help="isotropic spacing, mm")
    parser.add_argument("--bmi", type=float, default=24.0)
    parser.add_argument("--encasement", type=float, default=0.0)
    args = parser.parse_args(argv)
    spacing = (args.spacing,) * 3
    print(f"CT phantom benchmark: spacing {args.spacing} mm, bmi {args.bmi}, encasement "
          f"{args.encasement}, cpus {os.cpu_count()}")
    make_ct_phantom(PhantomParams(seed=10_000), spacing_mm=(6.0, 6.0, 6.0))  # warm imports
    gen, tgt = [], []
    for seed in range(args.seeds):
        params = PhantomParams(seed=seed, bmi=args.bmi, tumour_encasement=args.encasement)
        t0 = time.perf_counter()
        ph = make_ct_phantom(params, spacing_mm=spacing)
        t1 = time.perf_counter()
        regions = derive_targets(ph.labels)
        t2 = time.perf_counter()
        gen.append(t1 - t0)
        tgt.append(t2 - t1)
        sizes = " ".join(f"{k}={int(m.sum())}" for k, m in regions.masks.items())
        print(f"  seed {seed:3d}  grid {'x'.join(map(str, ph.image.shape))}  generate {t1 - t0:6.2f} s"
              f"  targets {t2 - t1:5.2f} s  celiac level {ph.details['celiac_level']}  {sizes}")
    print(f"generate: median {statistics.median(gen):.2f} s, max {max(gen):.2f} s (limit {LIMIT_S:g} s)")
    print(f"targets:  median {statistics.median(tgt):.2f} s, max {max(tgt):.2f} s")
    # target rules on a diagnostic-size map: the last phantom's labels repeated to 0.75 mm
    big = ph.labels.array.repeat(2, axis=0).repeat(4, axis=1).repeat(4, axis=2)
    sz, sy, sx = ph.labels.spacing
    big_vol = Volume(array=big, spacing=(sz / 2, sy / 4, sx / 4), origin=ph.labels.origin)
    t0 = time.perf_counter()
    derive_targets(big_vol)
    print(f"targets on a {'x'.join(map(str, big.shape))} map ({big.size / 1e6:.0f} M voxels): "
          f"{time.perf_counter() - t0:.2f} s")
    return 0 if max(gen) < LIMIT_S else 1


if __name__ == "__main__":
    sys.exit(main())
