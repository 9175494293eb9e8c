"""Batch-runner throughput: series per minute with 1 and 2 Dask worker processes.

Writes ``--series`` CT phantom series (DICOM, ``--spacing`` mm) into a temporary tree and
runs :func:`segmentation.batch.run_batch` on a local cluster of 1, then 2 worker processes
(one torch thread each). Each cluster is started and its workers' model cache warmed
before the clock starts (the start-up is printed separately), so the figures are the
steady-state rate of discovery + loading + inference + writing NIfTI/SEG/CSV.

Model: ``--model BUNDLE``, else the shipped CT bundle when there is one, else (``--tiny``
or no shipped bundle) the tiny seeded random 3D UNet of the tests (``tests/_batch_fixture.py``,
12 mm model grid): that measures orchestration, not a production model. All run through the
production CT pipeline; the output says which model was used.

    python benchmarks/bench_batch.py [--series 12] [--spacing 6] [--model BUNDLE | --tiny]
                                     [--workers 1 2] [--repeats 1]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))


def _warm(model: str, sha256: str) -> int:
    """Load the model into this worker's cache (and import the CT pipeline)."""
    import segmentation.ct  # noqa: F401
    from segmentation.batch import _worker_bundle

    _worker_bundle(model, sha256, 1)
    return os.getpid()


def _model(arg: str | None, tiny: bool, tmp: Path) -> tuple[str, str]:
    """(bundle folder, description)."""
    from segmentation.bundle import default_bundle_path
    from segmentation.commands.segment import DEFAULT_BUNDLES

    if arg:
        return arg, f"bundle {arg}"
    if not tiny and "CT" in DEFAULT_BUNDLES and default_bundle_path(DEFAULT_BUNDLES["CT"]).is_dir():
        path = default_bundle_path(DEFAULT_BUNDLES["CT"])
        return str(path), f"shipped CT bundle {path.name}"
    import _batch_fixture as fx

    bundle = fx.write_tiny_bundle(tmp / "tiny_ct_test", seed=0)
    return str(bundle.root), "tiny seeded random 3D UNet, 12 mm grid (orchestration only)"


def main(argv: list[str] | None = None) -> int:
    import logging

    from distributed import Client, LocalCluster

    import _batch_fixture as fx
    from segmentation.batch import run_batch
    from segmentation.bundle import read_bundle

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=12, help="number of phantom series")
    parser.add_argument("--spacing", type=float, default=6.0, help="isotropic phantom spacing, mm")
    parser.add_argument("--model", default=None, help="bundle folder (default: shipped CT bundle or the tiny test one)")
    parser.add_argument("--tiny", action="store_true", help="use the tiny test bundle even when a CT bundle is shipped")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2],
                        help="worker counts to measure (ratio: last vs first)")
    parser.add_argument("--repeats", type=int, default=1, help="runs per worker count; the fastest is reported")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench_batch_") as tmp_name:
        tmp = Path(tmp_name)
        model, what = _model(args.model, args.tiny, tmp)
        sha = str(read_bundle(model).ours["model_sha256"])
        seeds = list(range((args.series + 1) // 2))  # two slabs (series) per phantom
        folders = fx.write_phantom_series(tmp / "archive", seeds, crops=2, spacing_mm=args.spacing)
        n = len(folders)
        print(f"batch benchmark: {n} phantom CT series at {args.spacing:g} mm, model: {what}, cpus {os.cpu_count()}")
        rates = {}
        for workers in args.workers:
            t0 = time.perf_counter()
            with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                              dashboard_address=None, silence_logs=logging.ERROR) as cluster, Client(cluster) as c:
                c.wait_for_workers(workers)
                c.run(_warm, model, sha)
                startup = time.perf_counter() - t0
                best = None
                for repeat in range(max(1, args.repeats)):
                    t1 = time.perf_counter()
                    summary = run_batch(tmp / "archive", tmp / f"out_{workers}_{repeat}", model=model, client=c,
                                        progress=False)
                    wall = time.perf_counter() - t1
                    if summary.done != summary.selected:
                        print(f"  {workers} worker(s): {len(summary.failed)} series failed: {summary.failed[:1]}")
                        return 1
                    if best is None or wall < best[0]:
                        best = (wall, summary)
            assert best is not None
            wall, summary = best
            rates[workers] = 60.0 * summary.done / wall
            task_s = [r["seconds"] for r in summary.results]
            cpu_s = [r["cpu_seconds"] for r in summary.results]
            print(f"  {workers} worker(s): {summary.done} series in {wall:.1f} s = {rates[workers]:.1f} series/min; "
                  f"task wall mean {sum(task_s) / len(task_s):.2f} s (CPU {sum(cpu_s) / len(cpu_s):.2f} s), "
                  f"max {max(task_s):.2f} s "
                  f"(cluster start + model load {startup:.1f} s, not counted)")
        first, last = args.workers[0], args.workers[-1]
        load = os.getloadavg()[0]
        print(f"  scaling ratio {last} vs {first} workers: {rates[last] / rates[first]:.2f}x (ideal "
              f"{last / first:.2f}x; {os.cpu_count()} cores, 1-minute load average {load:.1f} during the run)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
