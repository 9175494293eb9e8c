"""Wall time of the README's main job: ``plexplan demo`` (target < 2 min on 2 CPU cores).

Runs the real command in a fresh subprocess (so imports count, as for a new user) on each
case given, with the bundled reference labels and, with ``--segment``, also with the
shipped CT segmentation model. Prints one line per run and the cores available.
Run: ``python benchmarks/bench_demo.py [--case NAME ...] [--segment]``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_S = 120.0


def run_demo(case: str, out: Path, segment: bool) -> tuple[float, int]:
    cmd = [sys.executable, "-m", "planner.cli", "demo", "--case", case, "--out", str(out)]
    if segment:
        cmd.append("--segment")
    t0 = time.perf_counter()
    rc = subprocess.run(cmd, capture_output=True, text=True, cwd=Path(__file__).resolve().parent.parent).returncode
    return time.perf_counter() - t0, rc


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", action="append", help="sample case (default celiac_standard); repeatable")
    parser.add_argument("--segment", action="store_true", help="also time the run with the CT segmentation model")
    args = parser.parse_args()
    cases = args.case or ["celiac_standard"]
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"plexplan demo wall time ({cores} CPU cores available; target < {TARGET_S:.0f} s)")
    worst = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for case in cases:
            for segment in ([False, True] if args.segment else [False]):
                out = Path(tmp) / f"{case}{'_seg' if segment else ''}"
                seconds, rc = run_demo(case, out, segment)
                worst = max(worst, seconds)
                labels = "CT model labels" if segment else "reference labels"
                files = [p.name for p in sorted(out.glob("report.*"))] if out.exists() else []
                print(f"{case:<24} {labels:<17} {seconds:6.1f} s  exit {rc}  {', '.join(files) or 'no report'}")
    print(f"slowest run {worst:.1f} s: {'within' if worst < TARGET_S else 'OVER'} the {TARGET_S:.0f} s target")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
