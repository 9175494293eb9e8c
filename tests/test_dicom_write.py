"""DICOM writing: CT series and ultrasound multi-frame files are valid and round-trip."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from planner.dicom_write import (
    MANUFACTURER,
    SeriesInfo,
    atomic_folder,
    write_ct_series,
    write_us_multiframe,
)
from planner.errors import PlannerError
from planner.volume import Volume, load


def _ct_volume(direction: np.ndarray | None = None) -> Volume:
    rng = np.random.default_rng(3)
    array = rng.integers(-1024, 2000, size=(6, 24, 20)).astype(np.int16)
    return Volume(array=array, spacing=(2.5, 0.9, 0.7), origin=(-120.25, -80.5, 310.0),
                  direction=np.eye(3) if direction is None else direction, modality="CT")


def _sitk_series(folder) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return reader.Execute()


def test_ct_series_round_trips_through_simpleitk_and_planner(tmp_path):
    volume = _ct_volume()
    info = SeriesInfo(patient_name="Sample^Case9", patient_id="SAMPLE-9", series_description="Test CT")
    files = write_ct_series(volume, tmp_path / "ct", info)
    assert len(files) == 6 and all(f.exists() for f in files)
    image = _sitk_series(tmp_path / "ct")
    np.testing.assert_allclose(image.GetOrigin(), volume.origin, atol=1e-3)
    np.testing.assert_allclose(image.GetSpacing(), volume.spacing_xyz, atol=1e-3)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), volume.array)
    loaded = load(tmp_path / "ct")
    assert loaded.same_grid(volume)
    np.testing.assert_array_equal(loaded.array, volume.array)


def test_ct_series_rotated_grid_keeps_geometry(tmp_path):
    c, s = np.cos(0.3), np.sin(0.3)
    direction = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    volume = _ct_volume(direction)
    write_ct_series(volume, tmp_path / "ct", compress=False)
    image = _sitk_series(tmp_path / "ct")
    np.testing.assert_allclose(np.reshape(image.GetDirection(), (3, 3)), direction, atol=1e-5)
    np.testing.assert_allclose(image.GetOrigin(), volume.origin, atol=1e-3)


def test_ct_headers_are_synthetic_and_uids_unique(tmp_path):
    files = write_ct_series(_ct_volume(), tmp_path / "ct", SeriesInfo(uid_seed="case-x"))
    headers = [pydicom.dcmread(f) for f in files]
    first = headers[0]
    assert first.file_meta.TransferSyntaxUID == pydicom.uid.RLELossless
    assert first.SOPClassUID == pydicom.uid.CTImageStorage
    assert first.Manufacturer == MANUFACTURER
    assert "synthetic" in first.SeriesDescription.lower() and "not patient data" in first.ImageComments
    assert str(first.PatientName).startswith("Sample^")
    assert len({h.SOPInstanceUID for h in headers}) == len(headers)
    assert len({h.StudyInstanceUID for h in headers}) == 1
    assert len({h.FrameOfReferenceUID for h in headers}) == 1
    assert float(first.RescaleSlope) == 1.0 and first.RescaleType == "HU"
    # a uid_seed makes the UIDs reproducible; a different seed gives different ones
    again = write_ct_series(_ct_volume(), tmp_path / "ct2", SeriesInfo(uid_seed="case-x"))
    other = write_ct_series(_ct_volume(), tmp_path / "ct3", SeriesInfo(uid_seed="case-y"))
    assert pydicom.dcmread(again[0]).SOPInstanceUID == first.SOPInstanceUID
    assert pydicom.dcmread(other[0]).SOPInstanceUID != first.SOPInstanceUID


def test_writer_refuses_non_empty_folder_and_leaves_no_partial_output(tmp_path):
    target = tmp_path / "ct"
    target.mkdir()
    (target / "keep.txt").write_text("x")
    with pytest.raises(PlannerError, match="not empty"):
        write_ct_series(_ct_volume(), target)
    with pytest.raises(RuntimeError):
        with atomic_folder(tmp_path / "new") as tmp:
            (tmp / "a.dcm").write_bytes(b"partial")
            raise RuntimeError("boom")
    assert not (tmp_path / "new").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ct"]


def test_us_multiframe_has_region_calibration(tmp_path):
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(5, 40, 48)).astype(np.uint8)
    volume = Volume(array=frames, spacing=(1.0, 0.15, 0.12), origin=(0.0, 0.0, 0.0), modality="US")
    path = write_us_multiframe(volume, tmp_path / "us.dcm", frame_time_ms=40.0)
    ds = pydicom.dcmread(path)
    assert ds.SOPClassUID == pydicom.uid.UltrasoundMultiFrameImageStorage
    assert int(ds.NumberOfFrames) == 5 and float(ds.FrameTime) == 40.0
    region = ds.SequenceOfUltrasoundRegions[0]
    assert region.PhysicalUnitsXDirection == 3 and region.PhysicalUnitsYDirection == 3
    assert region.PhysicalDeltaX == pytest.approx(0.012) and region.PhysicalDeltaY == pytest.approx(0.015)
    np.testing.assert_array_equal(ds.pixel_array, frames)
    loaded = load(path)
    np.testing.assert_array_equal(loaded.array, frames)
    assert loaded.spacing[1:] == pytest.approx((0.15, 0.12))


def test_written_files_pass_dciodvfy_when_installed(tmp_path):
    """dicom3tools' IOD validator (Debian package dicom3tools) finds no error."""
    import shutil
    import subprocess

    if shutil.which("dciodvfy") is None:
        pytest.skip("dciodvfy not installed (apt-get install dicom3tools)")
    ct = write_ct_series(_ct_volume(), tmp_path / "ct", SeriesInfo(body_part_examined="ABDOMEN"))[0]
    frames = np.zeros((3, 32, 40), np.uint8)
    us = write_us_multiframe(Volume(array=frames, spacing=(1.0, 0.2, 0.2), origin=(0.0, 0.0, 0.0)),
                             tmp_path / "us.dcm", SeriesInfo(body_part_examined="NECK"))
    for path in (ct, us):
        result = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True)
        report = result.stdout + result.stderr
        assert "Error" not in report and "Warning" not in report, report


def test_us_multiframe_writes_colour_frames_as_rgb(tmp_path):
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, size=(3, 32, 40, 3)).astype(np.uint8)
    grey = rgb.mean(axis=-1).astype(np.uint8)
    volume = Volume(array=grey, spacing=(1.0, 0.2, 0.2), origin=(0.0, 0.0, 0.0), modality="US", display_rgb=rgb)
    ds = pydicom.dcmread(write_us_multiframe(volume, tmp_path / "rgb.dcm"))
    assert ds.PhotometricInterpretation == "RGB" and ds.SamplesPerPixel == 3
    np.testing.assert_array_equal(ds.pixel_array, rgb)
    loaded = load(tmp_path / "rgb.dcm")
    np.testing.assert_array_equal(loaded.display_rgb, rgb)
