"""Time and size of the sample-case pipeline: US simulation, DICOM and DICOM SEG write/read.

Prints, for the ``celiac_standard`` phantom at 3 mm and the supraclavicular cine: the time
to simulate, to write the CT series (RLE) and the SEG (Deflated), to read each back
(planner.volume.load, planner.dicom_seg.read_seg), and the file sizes; then the size of
the bundled ``sample_dicom/`` (budget 15 MB). Everything is written to a temporary folder.

    python benchmarks/bench_samples.py
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from planner.dicom_seg import read_seg, write_seg
from planner.dicom_write import SeriesInfo, write_ct_series, write_us_multiframe
from planner.resources import samples_dir
from planner.volume import load

SAMPLES_BUDGET_MB = 15.0


def _mb(path: Path) -> float:
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files) / 1e6


def _timed(label: str, fn, *args, **kwargs):
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    print(f"{label:<44} {time.perf_counter() - start:6.2f} s")
    return result


def main() -> int:
    from segmentation.make_samples import CT_PARAMS, CT_SPACING_MM
    from segmentation.phantom_ct import PhantomParams, make_ct_phantom
    from segmentation.phantom_us import USParams, make_us_phantom
    from planner.targets import add_targets

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        phantom = _timed("CT phantom (celiac_standard, 3 mm)", make_ct_phantom,
                         PhantomParams(**CT_PARAMS["celiac_standard"]), spacing_mm=CT_SPACING_MM)
        labels = _timed("target regions (add_targets)", add_targets, phantom.labels)
        files = _timed(f"write CT series ({phantom.image.shape[0]} slices, RLE)", write_ct_series,
                       phantom.image, out / "ct", SeriesInfo())
        _timed("write SEG (BINARY, Deflated)", write_seg, labels, files, out / "seg.dcm")
        image = _timed("read CT series (planner.volume.load)", load, out / "ct")
        _timed("read SEG onto the CT grid (read_seg)", read_seg, out / "seg.dcm", image)
        us = _timed("US cine (20 frames 256x256)", make_us_phantom, USParams(seed=11))
        cine = _timed("write US multi-frame", write_us_multiframe, us.image, out / "us.dcm")
        _timed("write cine SEG", write_seg, us.labels, [cine], out / "us_seg.dcm")
        print(f"{'CT series size':<44} {_mb(out / 'ct'):6.2f} MB (raw {phantom.image.array.nbytes / 1e6:.2f} MB)")
        print(f"{'CT SEG size':<44} {_mb(out / 'seg.dcm'):6.2f} MB")
        print(f"{'US cine / cine SEG size':<44} {_mb(out / 'us.dcm'):6.2f} / {_mb(out / 'us_seg.dcm'):.3f} MB")
    bundled = _mb(samples_dir())
    print(f"{'bundled sample_dicom/':<44} {bundled:6.2f} MB (budget {SAMPLES_BUDGET_MB:g} MB)")
    return 0 if bundled < SAMPLES_BUDGET_MB else 1


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
