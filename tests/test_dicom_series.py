"""planner.dicom_series on real DICOM: geometry against SimpleITK, irregular series, broken
folders built from real files, Enhanced multi-frame, compressed syntaxes, ultrasound."""

from __future__ import annotations

import random
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest

from planner.dicom_series import count_image_series, list_series, load_dicom
from planner.errors import DicomSeriesError
from planner.logs import REDACTED, redact
from planner.volume import Volume, load
from tests.conftest import pydicom_test_file, shared_path

REGULAR_SERIES = {
    "crlm1004": ("ct_abdomen_crlm1004", "image"),
    "ts_jpeg2000": ("ct_abdomen_ts_dicom", "dicom"),
    "thigh": ("ct_thigh_sts001", "dicom", "image"),
    "3slice": ("ct_3slice_seg", "ct-3slice"),
}


def sitk_series(folder: Path):
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return reader.Execute()


def assert_geometry_matches(volume: Volume, image, check_z_spacing: bool = True) -> None:
    import SimpleITK as sitk

    spacing_zyx = np.array(image.GetSpacing()[::-1])
    if check_z_spacing:
        np.testing.assert_allclose(volume.spacing, spacing_zyx, atol=1e-3)
    else:
        np.testing.assert_allclose(volume.spacing[1:], spacing_zyx[1:], atol=1e-3)
    np.testing.assert_allclose(volume.origin, image.GetOrigin(), atol=1e-3)
    np.testing.assert_allclose(volume.direction, np.reshape(image.GetDirection(), (3, 3)), atol=1e-6)
    expected = sitk.GetArrayFromImage(image)
    assert volume.shape == expected.shape
    np.testing.assert_array_equal(volume.array.astype(np.float64), expected.astype(np.float64))


def error_of(path, **kwargs) -> str:
    with pytest.raises(DicomSeriesError) as info:
        load_dicom(path, **kwargs)
    message = str(info.value)
    assert "\n" not in message, "errors must be one line"
    return message


# ---------------------------------------------------------------------- against SimpleITK
@pytest.mark.parametrize("parts", REGULAR_SERIES.values(), ids=REGULAR_SERIES.keys())
def test_regular_series_match_simpleitk(parts):
    folder = shared_path(*parts)
    volume = load_dicom(folder)
    assert_geometry_matches(volume, sitk_series(folder))
    assert volume.modality == "CT"
    assert not [w for w in volume.warnings if "resampled" in w or "tilt" in w]
    assert volume.array.dtype == np.int16  # HU, exact
    assert volume.source is not None and len(volume.source.files) == volume.shape[0]
    positions = [float(pydicom.dcmread(f, stop_before_pixels=True).ImagePositionPatient[2]) for f in volume.source.files]
    assert positions == sorted(positions)  # files listed in z order


@pytest.mark.parametrize("name", ["CT_small.dcm", "693_UNCR.dcm", "693_J2KR.dcm", "eCT_Supplemental.dcm"])
def test_pydicom_ct_files_match_simpleitk(name):
    import SimpleITK as sitk

    path = pydicom_test_file(name)
    volume = load_dicom(path)
    single = volume.shape[0] == 1
    # one slice: z spacing is SliceThickness (SimpleITK uses SpacingBetweenSlices), with a warning
    assert_geometry_matches(volume, sitk.ReadImage(str(path)), check_z_spacing=not single)
    if single:
        assert volume.spacing[0] == pytest.approx(float(pydicom.dcmread(path).SliceThickness))
        assert any("single slice" in w for w in volume.warnings)


def test_enhanced_multiframe_geometry_from_functional_groups():
    path = pydicom_test_file("eCT_Supplemental.dcm")
    volume = load_dicom(path)
    ds = pydicom.dcmread(path)
    frames = ds.PerFrameFunctionalGroupsSequence
    first = [float(v) for v in frames[0].PlanePositionSequence[0].ImagePositionPatient]
    second = [float(v) for v in frames[1].PlanePositionSequence[0].ImagePositionPatient]
    np.testing.assert_allclose(volume.index_to_lps([1, 0, 0]), second, atol=1e-6)
    np.testing.assert_allclose(volume.origin, first, atol=1e-6)
    measures = ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
    assert volume.spacing[1:] == pytest.approx([float(v) for v in measures.PixelSpacing])
    assert volume.array.min() < -900  # RescaleIntercept -1024 applied from the functional groups
    assert len(volume.source.files) == 1


@pytest.mark.parametrize("name", ["MR_small_RLE.dcm", "MR_small_jpeg_ls_lossless.dcm", "MR_small_jp2klossless.dcm",
                                  "MR_small_bigendian.dcm", "MR_small_implicit.dcm"])
def test_compressed_and_other_syntaxes_decode_identically(name):
    reference = load_dicom(pydicom_test_file("MR_small.dcm"))
    volume = load_dicom(pydicom_test_file(name))
    assert volume.same_grid(reference)
    np.testing.assert_array_equal(volume.array, reference.array)


# ---------------------------------------------------------------------- gantry tilt
def _sample(volume: Volume, lps: np.ndarray) -> np.ndarray:
    """Trilinear samples at LPS points; NaN more than 1e-6 voxel outside the grid."""
    from scipy import ndimage

    index = volume.lps_to_index(lps)
    values = ndimage.map_coordinates(volume.array.astype(np.float32), index.T, order=1, mode="nearest")
    outside = np.any((index < -1e-6) | (index > np.array(volume.shape) - 1 + 1e-6), axis=-1)
    values[outside] = np.nan
    return values


def test_gantry_tilt_is_resampled_onto_an_orthogonal_grid_where_the_slices_were():
    folder = shared_path("ct_gantry_tilt_ge")
    volume = load_dicom(folder)
    naive = Volume.from_sitk(sitk_series(folder))  # ITK ignores the tilt
    assert np.allclose(volume.direction.T @ volume.direction, np.eye(3), atol=1e-9)
    joined = " | ".join(volume.warnings)
    assert "gantry tilt" in joined and "18.5 deg" in joined
    assert "non-uniform slice steps" in joined
    for step in ("4.22 mm x13", "1.14 mm x1", "7.38 mm x13"):  # the steps between positions
        assert step in joined
    assert "LICENSE_BSD2.txt" in joined  # the licence file was skipped with a reason

    jj, ii = np.mgrid[8:504:8, 8:504:8]
    for path in sorted(folder.glob("*.dcm")):
        ds = pydicom.dcmread(path)
        hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        iop = np.array(ds.ImageOrientationPatient, float)
        ipp = np.array(ds.ImagePositionPatient, float)
        dy, dx = (float(v) for v in ds.PixelSpacing)
        points = ipp + np.outer(ii.ravel() * dx, iop[:3]) + np.outer(jj.ravel() * dy, iop[3:])
        reference = hu[jj, ii].ravel()
        # the slice's first pixel lies inside the new grid, on the plane of that slice
        index = volume.lps_to_index(ipp)
        assert np.all(index >= -1e-6) and np.all(index <= np.array(volume.shape) - 1 + 1e-6), path.name
        error = np.abs(_sample(volume, points) - reference)
        assert not np.isnan(error).any(), path.name
        on_node = abs(index[0] - round(index[0])) < 0.05
        assert np.median(error) < 5.0 and error.mean() < (5.0 if on_node else 35.0), path.name
        if on_node:  # a 0.5 mm displacement is clearly visible at this resolution
            shifted = np.abs(_sample(volume, points + 0.5 * iop[3:]) - reference)
            assert shifted.mean() > 2 * error.mean() + 1.0, path.name
        if path.name >= "20":  # ITK's untilted grid puts these slices centimetres away
            assert np.nanmean(np.abs(_sample(naive, points) - reference)) > 100.0


# ---------------------------------------------------------------------- folders built from real files
@pytest.fixture
def thigh_files() -> list[Path]:
    return sorted(shared_path("ct_thigh_sts001", "dicom", "image").glob("*.dcm"))


@pytest.fixture
def thigh_reference(thigh_files) -> Volume:
    return load_dicom(thigh_files[0].parent)


def copy_files(files, dest: Path, names=None) -> list[Path]:
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for i, f in enumerate(files):
        target = dest / (names[i] if names else f.name)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(f, target)
        out.append(target)
    return out


def test_shuffled_renamed_nested_files_load_identically(tmp_path, thigh_files, thigh_reference):
    rng = random.Random(7)
    shuffled = thigh_files[:]
    rng.shuffle(shuffled)
    names = [f"{'sub/' if i % 3 == 0 else ''}IMG{rng.randrange(10**6):06d}_{i}" for i in range(len(shuffled))]
    copy_files(shuffled, tmp_path, names)
    (tmp_path / ".hidden_copy.dcm").write_bytes(thigh_files[0].read_bytes())  # hidden files are ignored
    volume = load_dicom(tmp_path)
    assert volume.same_grid(thigh_reference, tol_mm=1e-6)
    np.testing.assert_array_equal(volume.array, thigh_reference.array)
    assert volume.warnings == ()
    original_order = [Path(f).name for f in thigh_reference.source.files]
    assert [pydicom.dcmread(f).SOPInstanceUID for f in volume.source.files] == \
        [pydicom.dcmread(thigh_files[0].parent / n).SOPInstanceUID for n in original_order]


def test_two_interleaved_series_are_listed_and_selectable(tmp_path, thigh_files, thigh_reference):
    three = sorted(shared_path("ct_3slice_seg", "ct-3slice").glob("*.dcm"))
    names_a = [f"{2 * i:03d}.dcm" for i in range(len(thigh_files))]
    names_b = [f"{2 * i + 1:03d}.dcm" for i in range(len(three))]
    copy_files(thigh_files, tmp_path, names_a)
    copy_files(three, tmp_path, names_b)
    uid_a = thigh_reference.source.series_instance_uid
    uid_b = pydicom.dcmread(three[0]).SeriesInstanceUID
    message = error_of(tmp_path)
    assert "2 image series" in message and uid_a in message and uid_b in message
    assert "59 slices" in message and "3 slices" in message and "--series" in message
    assert count_image_series(tmp_path) == 2
    assert {s.uid: s.n_frames for s in list_series(tmp_path)} == {uid_a: 59, uid_b: 3}
    picked = load_dicom(tmp_path, series=uid_a[:30])
    np.testing.assert_array_equal(picked.array, thigh_reference.array)
    assert load_dicom(tmp_path, series=uid_b).shape == (3, 512, 512)
    assert "matches 2 series" in error_of(tmp_path, series="1.")
    assert "no image series matches '9.9'" in error_of(tmp_path, series="9.9")


def test_missing_middle_slice_is_interpolated_with_a_warning(tmp_path, thigh_files, thigh_reference):
    copy_files(thigh_files[:29] + thigh_files[30:], tmp_path)
    volume = load_dicom(tmp_path)
    assert volume.same_grid(thigh_reference, tol_mm=1e-3)
    (warning,) = volume.warnings
    assert "1 missing slice" in warning and "linear interpolation" in warning
    ref = thigh_reference.array.astype(np.float32)
    missing_z = [i for i, f in enumerate(thigh_reference.source.files) if Path(f).name == thigh_files[29].name][0]
    others = [z for z in range(volume.shape[0]) if z != missing_z]
    np.testing.assert_array_equal(volume.array[others], ref[others])
    np.testing.assert_allclose(volume.array[missing_z], (ref[missing_z - 1] + ref[missing_z + 1]) / 2, atol=1e-3)


def test_truncated_file_is_skipped_with_a_reason(tmp_path, thigh_files, thigh_reference):
    copied = copy_files(thigh_files, tmp_path)
    victim = copied[30]
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    header_cut = copied[10]
    header_cut.write_bytes(header_cut.read_bytes()[:400])
    volume = load_dicom(tmp_path)
    assert volume.shape == thigh_reference.shape
    joined = " | ".join(volume.warnings)
    assert "2 file(s) skipped" in joined and "truncated" in joined and victim.name in joined
    assert header_cut.name in joined and "2 missing slice" in joined


def test_zero_byte_and_non_dicom_files_are_skipped(tmp_path, thigh_files, thigh_reference):
    copy_files(thigh_files, tmp_path)
    (tmp_path / "empty.dcm").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("not an image\n")
    volume = load_dicom(tmp_path)
    np.testing.assert_array_equal(volume.array, thigh_reference.array)
    (warning,) = volume.warnings
    assert "empty file (0 bytes) (empty.dcm)" in warning and "not a DICOM file (notes.txt)" in warning


def test_folder_of_only_unusable_files_explains_why(tmp_path):
    (tmp_path / "empty.dcm").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("hello")
    message = error_of(tmp_path)
    assert "no DICOM image series found" in message
    assert "empty file (0 bytes)" in message and "not a DICOM file" in message


def test_seg_only_and_rtstruct_only_folders_are_recognised(tmp_path):
    copy_files([shared_path("ct_3slice_seg", "liver.dcm")], tmp_path / "seg")
    copy_files([shared_path("ct_thigh_sts001", "dicom", "mask", "RS.dcm")], tmp_path / "rt")
    assert "DICOM SEG segmentation" in error_of(tmp_path / "seg")
    assert "RT structure set" in error_of(tmp_path / "rt")
    assert "DICOM SEG segmentation" in error_of(shared_path("ct_3slice_seg", "liver.dcm"))
    # next to its CT, the SEG is skipped and the CT loads
    copy_files(sorted(shared_path("ct_3slice_seg", "ct-3slice").glob("*.dcm")), tmp_path / "seg")
    volume = load_dicom(tmp_path / "seg")
    assert volume.shape == (3, 512, 512) and "DICOM SEG" in volume.warnings[0]


@pytest.mark.parametrize("name, reason", [("test-SR.dcm", "structured report"), ("rtdose.dcm", "RT dose grid"),
                                          ("rtplan.dcm", "RT plan"), ("liver_1frame.dcm", "DICOM SEG")])
def test_other_non_image_objects_are_recognised(tmp_path, name, reason):
    copy_files([pydicom_test_file(name)], tmp_path)
    assert reason in error_of(tmp_path)
    assert count_image_series(tmp_path) == 0


def test_presentation_state_next_to_a_series_is_skipped(tmp_path, thigh_files, thigh_reference):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    copy_files(thigh_files, tmp_path)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.11.1"  # Grayscale Softcopy Presentation State
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    gsps = Dataset()
    gsps.file_meta = meta
    gsps.SOPClassUID, gsps.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    gsps.Modality, gsps.SeriesInstanceUID = "PR", thigh_reference.source.series_instance_uid
    gsps.save_as(tmp_path / "gsps.dcm", enforce_file_format=True)
    volume = load_dicom(tmp_path)
    np.testing.assert_array_equal(volume.array, thigh_reference.array)
    assert "presentation state (Modality PR), not an image (gsps.dcm)" in volume.warnings[0]


def test_several_unpositioned_2d_files_are_not_stacked(tmp_path):
    copy_files([pydicom_test_file("US1_UNCR.dcm")] * 2, tmp_path, ["a.dcm", "b.dcm"])
    assert "separate 2D images, not a volume" in error_of(tmp_path)


def test_file_without_position_tags_is_named(tmp_path, thigh_files):
    copied = copy_files(thigh_files, tmp_path)
    ds = pydicom.dcmread(copied[20])
    del ds.ImagePositionPatient
    ds.save_as(copied[20])
    message = error_of(tmp_path)
    assert copied[20].name in message and "ImagePositionPatient" in message


def test_empty_and_missing_folders(tmp_path):
    assert "empty folder" in error_of(tmp_path)
    assert "no such file or folder" in error_of(tmp_path / "nope")


def test_exact_duplicates_are_dropped_but_clashing_slices_are_errors(tmp_path, thigh_files, thigh_reference):
    copy_files(thigh_files, tmp_path)
    shutil.copyfile(thigh_files[5], tmp_path / "copy_of_5.dcm")
    volume = load_dicom(tmp_path)
    np.testing.assert_array_equal(volume.array, thigh_reference.array)
    assert "1 duplicate slice(s)" in volume.warnings[0]
    ds = pydicom.dcmread(thigh_files[5])
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    pixels = ds.pixel_array.copy()
    pixels[0, 0] += 100
    ds.PixelData = pixels.tobytes()
    ds.save_as(tmp_path / "copy_of_5.dcm")
    message = error_of(tmp_path)
    assert "copy_of_5.dcm" in message and "same position" in message


def test_mixed_matrix_size_and_orientation_are_errors(tmp_path, thigh_files):
    copied = copy_files(thigh_files, tmp_path / "size")
    odd = pydicom.dcmread(shared_path("ct_3slice_seg", "ct-3slice", "01.dcm"))
    odd.SeriesInstanceUID = pydicom.dcmread(thigh_files[0]).SeriesInstanceUID
    odd.save_as(tmp_path / "size" / "odd.dcm")
    message = error_of(tmp_path / "size")
    assert "mixes matrix sizes" in message and "odd.dcm" in message and "512x512" in message
    copied = copy_files(thigh_files, tmp_path / "orient")
    ds = pydicom.dcmread(copied[3])
    ds.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]
    ds.save_as(copied[3])
    message = error_of(tmp_path / "orient")
    assert "mixes slice orientations" in message and copied[3].name in message


def test_dicomdir_tree_lists_series_and_skips_the_index():
    from pydicom.data import get_testdata_file

    root = Path(get_testdata_file("CT_small.dcm")).parent / "dicomdirtests"
    if not root.is_dir():
        pytest.skip("pydicom's dicomdirtests folder is absent")
    assert count_image_series(root) == 13
    message = error_of(root)
    assert "13 image series" in message and "Routine Brain" in message
    by_name = {s.description: s for s in list_series(root)}
    volume = load_dicom(root, series=by_name["SmartScore - Gated 0.5 sec"].uid)
    assert volume.shape[0] == 5 and any("DICOMDIR (media directory index)" in w for w in volume.warnings)
    # 4 slices of which one lies 202 mm from the rest: refused, not 161 invented slices
    message = error_of(root, series=by_name["Routine Brain"].uid)
    assert "gap of 202.5 mm" in message and "incomplete" in message


# ---------------------------------------------------------------------- ultrasound and 2D
def _calibrated_region(ds):
    for region in ds.SequenceOfUltrasoundRegions:
        if region.RegionSpatialFormat == 1 and region.PhysicalUnitsXDirection == 3:
            return region
    return None


def check_ultrasound(path: Path, volume: Volume, frames: int, colour: bool) -> None:
    """Shape, colour and calibrated spacing of an ultrasound volume against its header."""
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    assert volume.modality == "US"
    assert volume.shape == (frames, int(ds.Rows), int(ds.Columns))
    assert volume.spacing[0] == 1.0
    assert (volume.display_rgb is not None) == colour
    if colour:
        assert volume.display_rgb.shape == (*volume.shape, 3) and volume.display_rgb.dtype == np.uint8
    region = _calibrated_region(ds) if "SequenceOfUltrasoundRegions" in ds else None
    if region is not None:
        assert volume.spacing[1] == pytest.approx(10 * float(region.PhysicalDeltaY))
        assert volume.spacing[2] == pytest.approx(10 * float(region.PhysicalDeltaX))
        assert volume.calibrated
    else:
        assert volume.spacing[1:] == (1.0, 1.0)
        assert any("pixel spacing set to 1 mm" in w for w in volume.warnings)
        assert not volume.calibrated
    if frames > 1:
        assert any("z is time" in w for w in volume.warnings)


@pytest.mark.parametrize("name, frames, colour", [
    ("JPGLosslessP14SV1_1s_1f_8b.dcm", 1, False),
    ("OBXXXX1A_2frame.dcm", 2, True),
    ("gdcm-US-ALOKA-16.dcm", 1, True),
    ("US1_UNCR.dcm", 1, True),
])
def test_ultrasound_files_load_with_calibrated_spacing(name, frames, colour):
    path = pydicom_test_file(name)
    check_ultrasound(path, load_dicom(path), frames, colour)


def test_ybr_jpeg_cine_loads_with_calibration_and_luminance():
    path = pydicom_test_file("color3d_jpeg_baseline.dcm")
    volume = load_dicom(path)
    check_ultrasound(path, volume, 120, True)
    rgb, grey = volume.display_rgb[::12], volume.array[::12]
    luminance = rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    difference = np.abs(luminance - grey)  # only where RGB clipping changes colours
    assert difference.mean() < 0.5 and np.percentile(difference, 99.9) <= 2.0
    assert any("FrameTime 33.333 ms" in w for w in volume.warnings)


def test_palette_colour_is_applied_for_display():
    from pydicom.pixels import apply_color_lut

    path = pydicom_test_file("OBXXXX1A_2frame.dcm")
    ds = pydicom.dcmread(path)
    volume = load_dicom(path)
    expected = (apply_color_lut(ds.pixel_array, ds) >> 8).astype(np.uint8)
    np.testing.assert_array_equal(volume.display_rgb, expected)


def test_patient_identifiers_are_registered_and_kept_out_of_messages():
    path = pydicom_test_file("JPGLosslessP14SV1_1s_1f_8b.dcm")
    name = str(pydicom.dcmread(path, stop_before_pixels=True).PatientName)
    volume = load(path)
    assert redact(f"patient {name}") == f"patient {REDACTED}"
    assert all(name not in w for w in volume.warnings)


def test_core_imports_do_not_pull_torch_monai_or_qt():
    code = "import planner, planner.volume, planner.dicom_series, sys; print('\\n'.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    heavy = [m for m in out if m.split(".")[0] in {"torch", "monai", "PyQt5", "PyQt6", "PySide2", "PySide6", "qtpy"}]
    assert heavy == []
