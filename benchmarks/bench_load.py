"""Load time of planner.dicom_series against SimpleITK's ImageSeriesReader.

Prints, for the 41-slice CT in ``../shared/data/ct_abdomen_crlm1004`` and for a generated
300-slice 512x512 CT series (written to a temporary folder with pydicom from a real
pydicom-data slice), the median load time of each reader over a few alternating runs and
the ratio ours / SimpleITK (target: <= 1.5). Both readers include series discovery and
return rescaled voxels; files are read once first so both see a warm page cache.

    python benchmarks/bench_load.py [--repeats 5] [--slices 300]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from planner.config import shared_data_path
from planner.dicom_series import load_dicom

TARGET_RATIO = 1.5


def read_simpleitk(folder: Path) -> np.ndarray:
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return sitk.GetArrayFromImage(reader.Execute())


def read_ours(folder: Path) -> np.ndarray:
    return load_dicom(folder).array


def write_series(folder: Path, n_slices: int, seed: int = 0) -> Path:
    """A 512x512 CT series of ``n_slices`` uncompressed files built from 693_UNCR.dcm."""
    import pydicom
    from pydicom.data import get_testdata_file
    from pydicom.uid import generate_uid

    template_path = get_testdata_file("693_UNCR.dcm")
    if template_path is None:
        raise SystemExit("pydicom-data is needed for the generated series (pip install pydicom-data)")
    template = pydicom.dcmread(template_path)
    base = template.pixel_array.astype(np.int16)
    rng = np.random.default_rng(seed)
    series_uid, frame_uid = generate_uid(), generate_uid()
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(n_slices):
        ds = template.copy()
        ds.SeriesInstanceUID = series_uid
        ds.FrameOfReferenceUID = frame_uid
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [-122.5, -112.4, 47.0 + 1.25 * k]
        ds.SliceThickness = 1.25
        noise = rng.integers(-20, 20, size=base.shape, dtype=np.int16)
        ds.PixelData = (np.roll(base, k, axis=0) + noise).astype(np.int16).tobytes()
        ds.save_as(folder / f"slice_{rng.integers(1 << 30):010d}.dcm", enforce_file_format=True)
    return folder


def bench(name: str, folder: Path, repeats: int) -> float:
    ours_array, itk_array = read_ours(folder), read_simpleitk(folder)  # warm-up and check
    if ours_array.shape != itk_array.shape or not np.array_equal(ours_array, itk_array):
        raise SystemExit(f"{name}: voxel values differ from SimpleITK")
    ours, itk = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        read_ours(folder)
        ours.append(time.perf_counter() - t)
        t = time.perf_counter()
        read_simpleitk(folder)
        itk.append(time.perf_counter() - t)
    ratio = statistics.median(ours) / statistics.median(itk)
    verdict = "ok" if ratio <= TARGET_RATIO else f"SLOWER than {TARGET_RATIO}x"
    print(f"{name:<34} shape {tuple(ours_array.shape)!s:<16} planner {statistics.median(ours):7.3f} s   "
          f"SimpleITK {statistics.median(itk):7.3f} s   ratio {ratio:5.2f}  ({verdict})")
    return ratio


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--slices", type=int, default=300)
    args = parser.parse_args()
    ratios = []
    crlm = shared_data_path("ct_abdomen_crlm1004", "image")
    if crlm is None:
        print("ct_abdomen_crlm1004: shared data not found, skipped (set PLANNER_SHARED_DATA)")
    else:
        ratios.append(bench("ct_abdomen_crlm1004 (41 slices)", crlm, args.repeats))
    tmp = Path(tempfile.mkdtemp(prefix="plexplan_bench_"))
    try:
        folder = write_series(tmp / "series", args.slices)
        ratios.append(bench(f"generated ({args.slices} slices)", folder, args.repeats))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    worst = max(ratios)
    print(f"worst ratio {worst:.2f} (target <= {TARGET_RATIO})")
    return 0 if worst <= TARGET_RATIO else 1


if __name__ == "__main__":
    raise SystemExit(main())
