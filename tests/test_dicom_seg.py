"""DICOM SEG: vocabulary label maps written with highdicom and read back exactly."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from planner.anatomy import label_of
from planner.dicom_seg import Algorithm, read_seg, structure_for_segment, write_seg
from planner.dicom_write import SeriesInfo, ct_datasets, write_ct_series
from planner.errors import LabelMapError
from planner.volume import Volume
from tests.conftest import shared_path


@pytest.fixture()
def ct_and_labels() -> tuple[Volume, Volume]:
    rng = np.random.default_rng(1)
    ct = Volume(array=rng.integers(-200, 300, size=(8, 40, 36)).astype(np.int16),
                spacing=(3.0, 1.5, 1.25), origin=(-20.0, -30.0, 100.0), modality="CT")
    labels = np.zeros(ct.shape, np.uint8)
    labels[1:6, 5:20, 4:15] = label_of("aorta")
    labels[3:8, 22:30, 20:34] = label_of("kidney_left")
    labels[0, 0, 0] = label_of("celiac_plexus_region")
    return ct, ct.with_array(labels)


def test_seg_round_trip_is_voxel_exact_in_any_source_order(tmp_path, ct_and_labels):
    ct, labels = ct_and_labels
    sources = ct_datasets(ct, SeriesInfo(uid_seed="seg-test"))
    path = write_seg(labels, list(reversed(sources)), tmp_path / "seg.dcm", uid_seed="seg-test")
    back = read_seg(path, ct)
    assert back.warnings == ()
    assert back.same_grid(ct)
    assert pydicom.dcmread(path).file_meta.TransferSyntaxUID == pydicom.uid.DeflatedExplicitVRLittleEndian
    np.testing.assert_array_equal(back.array, labels.array)


def test_seg_codes_reference_and_algorithm(tmp_path, ct_and_labels):
    ct, labels = ct_and_labels
    sources = ct_datasets(ct)
    manual = pydicom.dcmread(write_seg(labels, sources, tmp_path / "manual.dcm"))
    names = [item.SegmentLabel for item in manual.SegmentSequence]
    assert names == ["celiac_plexus_region", "aorta", "kidney_left"]
    aorta = manual.SegmentSequence[1]
    assert aorta.SegmentedPropertyTypeCodeSequence[0].CodeValue == "15825003"
    assert aorta.SegmentedPropertyCategoryCodeSequence[0].CodeValue == "91723000"
    assert aorta.SegmentAlgorithmType == "MANUAL"
    referenced = {item.ReferencedSOPInstanceUID
                  for item in manual.ReferencedSeriesSequence[0].ReferencedInstanceSequence}
    assert referenced == {ds.SOPInstanceUID for ds in sources}
    assert manual.FrameOfReferenceUID == sources[0].FrameOfReferenceUID
    auto = pydicom.dcmread(write_seg(labels, sources, tmp_path / "auto.dcm",
                                     algorithm=Algorithm("plexus-ct-net", "0.1")))
    assert auto.SegmentSequence[0].SegmentAlgorithmType == "AUTOMATIC"
    assert auto.SegmentSequence[0].SegmentAlgorithmName == "plexus-ct-net"


def test_seg_from_written_files_and_bad_inputs(tmp_path, ct_and_labels):
    ct, labels = ct_and_labels
    files = write_ct_series(ct, tmp_path / "ct")
    back = read_seg(write_seg(labels, files, tmp_path / "seg.dcm", deflate=False), ct)
    np.testing.assert_array_equal(back.array, labels.array)
    with pytest.raises(LabelMapError, match="empty"):
        write_seg(labels.with_array(np.zeros(ct.shape, np.uint8)), files, tmp_path / "empty.dcm")
    bad = labels.array.copy()
    bad[0, 0, 1] = 250
    with pytest.raises(LabelMapError, match="unknown structure"):
        write_seg(labels.with_array(bad), files, tmp_path / "bad.dcm")
    with pytest.raises(LabelMapError, match="does not match"):
        small = Volume(array=labels.array[:, :30], spacing=ct.spacing, origin=ct.origin)
        write_seg(small, files, tmp_path / "small.dcm")
    assert not (tmp_path / "bad.dcm").exists() and not (tmp_path / "small.dcm").exists()


def test_segment_names_map_to_vocabulary():
    assert structure_for_segment("Liver", "T-62000").name == "liver"
    assert structure_for_segment("kidney_left", None).name == "kidney_left"
    assert structure_for_segment("autochthon_left", None).name == "paraspinal_muscles"
    assert structure_for_segment("something", "15825003").name == "aorta"
    assert structure_for_segment("something", "64033007") is None  # kidney: left or right?


@pytest.mark.shared_data
def test_real_liver_seg_reads_onto_its_ct():
    folder = shared_path("ct_3slice_seg")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder / "ct-3slice")))
    ct = Volume.from_sitk(reader.Execute(), modality="CT")
    labels = read_seg(folder / "liver.dcm", ct)
    reference = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "liver_seg.nrrd"))) > 0
    np.testing.assert_array_equal(labels.array == label_of("liver"), reference)
    assert set(np.unique(labels.array)) == {0, label_of("liver")}


def test_seg_passes_dciodvfy_when_installed(tmp_path, ct_and_labels):
    """dicom3tools' validator (no Deflate support there, so the plain encoding) finds no error."""
    import shutil
    import subprocess

    if shutil.which("dciodvfy") is None:
        pytest.skip("dciodvfy not installed (apt-get install dicom3tools)")
    ct, labels = ct_and_labels
    path = write_seg(labels, ct_datasets(ct), tmp_path / "seg.dcm", deflate=False)
    result = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True)
    report = result.stdout + result.stderr
    assert "Error" not in report, report


def test_seg_of_an_ultrasound_cine_references_every_frame(tmp_path):
    from planner.dicom_write import write_us_multiframe
    from planner.volume import load
    from segmentation.phantom_us import USParams, make_us_phantom

    phantom = make_us_phantom(USParams(seed=5, frames=4, rows=64, columns=64, pixel_mm=0.6))
    cine = write_us_multiframe(phantom.image, tmp_path / "us.dcm")
    path = write_seg(phantom.labels, [cine], tmp_path / "seg.dcm")
    ds = pydicom.dcmread(path)
    assert "FrameOfReferenceUID" not in ds
    frames = [int(g.DerivationImageSequence[0].SourceImageSequence[0].ReferencedFrameNumber)
              for g in ds.PerFrameFunctionalGroupsSequence]
    assert sorted(set(frames)) == [1, 2, 3, 4]
    image = load(cine)
    back = read_seg(path, image)
    np.testing.assert_array_equal(back.array, phantom.labels.array)
    three_frames = Volume(array=phantom.labels.array[:3], spacing=(1.0, 0.6, 0.6), origin=(0.0, 0.0, 0.0))
    with pytest.raises(LabelMapError, match="4 frames"):
        write_seg(three_frames, [cine], tmp_path / "x.dcm")


def test_seg_maps_by_patient_position_onto_a_flipped_grid(tmp_path, ct_and_labels):
    """The same voxels indexed head-to-feet (z flipped) get the same labels in patient space."""
    ct, labels = ct_and_labels
    path = write_seg(labels, ct_datasets(ct), tmp_path / "seg.dcm")
    top = ct.index_to_lps((ct.shape[0] - 1, 0, 0))
    flipped = Volume(array=ct.array[::-1].copy(), spacing=ct.spacing, origin=tuple(top),
                     direction=np.diag([1.0, 1.0, -1.0]))
    back = read_seg(path, flipped)
    np.testing.assert_array_equal(back.array, labels.array[::-1])
