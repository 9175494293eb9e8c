"""CT model: Dice on held-out phantoms and on the real series' silver labels; end-to-end time and RAM.

Usage::

    python benchmarks/bench_ct_seg.py [--bundle models/ct_abdomen_phantom] [--seeds 9101 9102 9103 9104]
                                      [--threads 2] [--skip-dice] [--repeat 3]

1. Per-class Dice on held-out phantom seeds (never used in training), segmented end to end
   from a 3 mm grid (targets: >= 0.90 large organs, >= 0.75 vessels and target regions).
2. Dice against the silver TotalSegmentator labels of ``ct_abdomen_ts_dicom`` (aorta, liver,
   spleen, stomach, pancreas, IVC, portal vein, vertebrae), when the shared data is present.
3. End to end: the ``plexplan segment`` program (``python -m planner.cli``, start to exit) on
   a 3 mm phantom CT of about 128x128x120 voxels written as a DICOM series (load, segment,
   targets, write every output), wall time and the child's peak RSS (targets < 10 s, < 4 GB
   on 2 cores), ``--repeat`` times; then a fresh process doing the imports alone (and exiting
   as the program does), the part of the figure that is Python loading torch, MONAI and the
   DICOM libraries rather than this project's work.
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _f(v: float) -> str:
    return "  n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"


def _run_watching_peak_rss(cmd: list[str], env: dict[str, str]) -> tuple[subprocess.CompletedProcess, float]:
    """Run ``cmd`` and return it with its own peak RSS in GB (``VmHWM``, read every 20 ms while it runs).

    Not ``RUSAGE_CHILDREN``: Linux counts in it the parent's memory at the fork, so after the Dice
    evaluation above the figure was the benchmark's own size (2.2 GB), not the program's.
    """
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        child = subprocess.Popen(cmd, env=env, stdout=out, stderr=err, text=True)
        peak_kb = 0
        status = Path(f"/proc/{child.pid}/status")
        while child.poll() is None:
            try:
                lines = status.read_text().splitlines()
            except OSError:  # it ended between the poll and the read
                lines = []
            for line in lines:
                if line.startswith("VmHWM:"):
                    peak_kb = max(peak_kb, int(line.split()[1]))
            time.sleep(0.02)
        out.seek(0), err.seek(0)
        done = subprocess.CompletedProcess(cmd, child.returncode, out.read(), err.read())
    return done, peak_kb / 1024 ** 2


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", default=None, help="bundle folder (default: shipped ct_abdomen_phantom)")
    parser.add_argument("--seeds", type=int, nargs="*", default=None, help="held-out phantom seeds")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-dice", action="store_true", help="only the end-to-end timing")
    parser.add_argument("--repeat", type=int, default=3, help="end-to-end runs (each in a fresh process)")
    args = parser.parse_args()

    import torch

    from segmentation import ct
    from segmentation.bundle import default_bundle_path, read_bundle

    torch.set_num_threads(args.threads)
    bundle = read_bundle(args.bundle or default_bundle_path("ct_abdomen_phantom"))
    spec = ct.spec_from_bundle(bundle)
    net = bundle.load_network()
    seeds = args.seeds or list(ct.CTTrainConfig().test_seeds)
    if not args.skip_dice:
        t = time.time()
        held = ct.evaluate_held_out(net, seeds, spec)
        print(f"held-out phantom Dice (seeds {seeds}, 3 mm input, {time.time() - t:.0f} s):")
        for name, v in held.items():
            print(f"  {name:36s} mean {_f(v['mean'])}  min {_f(v['min'])}  n={v['n']}")
        t = time.time()
        real = ct.evaluate_real(net, spec)
        if real is None:
            print("real series: shared data not present, skipped")
        else:
            print(f"real series Dice vs silver TotalSegmentator labels, {real['series']} ({time.time() - t:.0f} s):")
            for name, d in real["dice"].items():
                print(f"  {name:36s} {_f(d)}")

    from planner.dicom_write import write_ct_series
    from segmentation.phantom_ct import make_ct_phantom

    with tempfile.TemporaryDirectory() as tmp:
        ph = make_ct_phantom(ct.phantom_params(seeds[0]), spacing_mm=(3.0, 3.0, 3.0))
        series = Path(tmp) / "series"
        write_ct_series(ph.image, series)
        env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
        walls, peaks = [], []
        for run in range(max(1, args.repeat)):
            cmd = [sys.executable, "-m", "planner.cli", "segment", str(series), "--out", str(Path(tmp) / f"out{run}"),
                   "--model", str(bundle.root), "--no-progress"]  # the plexplan program; threads from OMP_NUM_THREADS
            t = time.time()
            done, child_peak_gb = _run_watching_peak_rss(cmd, env)
            walls.append(time.time() - t)
            peaks.append(child_peak_gb)
            if done.returncode != 0:
                print(done.stdout[-2000:], done.stderr[-2000:])
                return 1
        peak_gb = max(peaks)
        imports = ("import gc, torch, planner.cli, segmentation.ct, segmentation.commands.segment, planner.dicom_seg, "
                   "planner.label_import, highdicom, SimpleITK, nibabel; gc.freeze()")  # and exit as plexplan does
        t = time.time()
        subprocess.run([sys.executable, "-c", imports], env=env, check=True, capture_output=True)
        import_s = time.time() - t
        written = sorted(p.name for p in (Path(tmp) / "out0").iterdir())
        from planner.label_import import reconcile_targets
        from planner.volume import load
        from segmentation.commands.segment import write_outputs_atomically

        t0 = time.time()
        image = load(series)
        t1 = time.time()
        labels = ct.segment_ct(image, net, spec)
        t2 = time.time()
        labels, _ = reconcile_targets(labels)
        t3 = time.time()
        write_outputs_atomically(Path(tmp) / "out2", image, labels, bundle)
        t4 = time.time()
        print(f"in process: load {t1 - t0:.1f} s, segment {t2 - t1:.1f} s, targets {t3 - t2:.1f} s, "
              f"write (NIfTI, JSON, CSV, SEG) {t4 - t3:.1f} s")
        runs = " / ".join(f"{w:.1f}" for w in walls)
        print(f"end to end (fresh process: imports, load DICOM {'x'.join(map(str, ph.image.shape))} at 3 mm, "
              f"segment, targets, write {', '.join(written)}): {runs} s (median {sorted(walls)[len(walls) // 2]:.1f} s), "
              f"peak RSS {peak_gb:.2f} GB on {args.threads} thread(s) (targets < 10 s, < 4 GB)")
        print(f"  of which the fresh process's imports alone (torch, MONAI, highdicom, pydicom, SimpleITK, nibabel): "
              f"{import_s:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
