"""planner.volume: grid geometry against SimpleITK, NIfTI and nibabel round trips, atomic output."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest

from planner.errors import PlannerError, VolumeError
from planner.volume import Volume, atomic_output, load, load_nifti, save_nifti
from tests.conftest import shared_path


def rotation(seed: int) -> np.ndarray:
    """A random proper rotation (oblique direction matrix)."""
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))[None, :]
    return q if np.linalg.det(q) > 0 else -q


@pytest.fixture
def oblique() -> Volume:
    rng = np.random.default_rng(3)
    array = rng.integers(-1000, 2000, size=(7, 11, 13)).astype(np.int16)
    return Volume(array=array, spacing=(2.5, 0.7, 0.9), origin=(-12.5, 40.0, 7.25), direction=rotation(1), modality="CT")


def test_index_to_lps_matches_simpleitk_on_an_oblique_grid(oblique):
    image = oblique.to_sitk()
    rng = np.random.default_rng(5)
    indices_zyx = rng.uniform(-2, 12, size=(20, 3))
    ours = oblique.index_to_lps(indices_zyx)
    for index, point in zip(indices_zyx, ours):
        expected = image.TransformContinuousIndexToPhysicalPoint(tuple(float(v) for v in index[::-1]))
        np.testing.assert_allclose(point, expected, atol=1e-9)
    np.testing.assert_allclose(oblique.lps_to_index(ours), indices_zyx, atol=1e-9)
    affine = oblique.affine_lps()
    homogeneous = np.c_[indices_zyx[:, ::-1], np.ones(len(indices_zyx))]
    np.testing.assert_allclose((homogeneous @ affine.T)[:, :3], ours, atol=1e-9)


def test_napari_world_round_trip(oblique):
    points = np.array([[0.0, 0.0, 0.0], [6.0, 10.0, 12.0], [2.5, 3.5, 4.5]])
    world = oblique.index_to_napari(points)
    np.testing.assert_allclose(world, points * oblique.spacing + oblique.origin_zyx)
    np.testing.assert_allclose(oblique.napari_to_lps(world), oblique.index_to_lps(points), atol=1e-9)
    np.testing.assert_allclose(oblique.lps_to_napari(oblique.napari_to_lps(world)), world, atol=1e-9)
    assert not oblique.is_axis_aligned


def test_sitk_round_trip(oblique):
    back = Volume.from_sitk(oblique.to_sitk(), modality="CT")
    assert back.same_grid(oblique, tol_mm=1e-9)
    np.testing.assert_array_equal(back.array, oblique.array)


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_nifti_save_load_round_trip(tmp_path, oblique, suffix):
    path = save_nifti(oblique, tmp_path / f"image{suffix}")
    back = load_nifti(path)
    assert back.same_grid(oblique, tol_mm=1e-4)
    np.testing.assert_array_equal(back.array, oblique.array)
    assert load(path).same_grid(oblique, tol_mm=1e-4)  # load() dispatches on the suffix
    assert [p.name for p in tmp_path.iterdir()] == [f"image{suffix}"]  # no temporary left


def test_nibabel_round_trip_and_agreement_with_the_written_file(tmp_path, oblique):
    import nibabel as nib

    image = oblique.to_nibabel()
    back = Volume.from_nibabel(image)
    assert back.same_grid(oblique, tol_mm=1e-9)
    np.testing.assert_array_equal(back.array, oblique.array)
    written = nib.load(save_nifti(oblique, tmp_path / "x.nii.gz"))  # SimpleITK-written, nibabel-read
    np.testing.assert_allclose(written.affine, image.affine, atol=1e-4)
    np.testing.assert_array_equal(np.asarray(written.dataobj), np.asarray(image.dataobj))


def test_real_nifti_matches_its_dicom_series():
    nifti_dir = shared_path("ct_thigh_sts001", "nifti")
    from_dicom = load(shared_path("ct_thigh_sts001", "dicom", "image"))
    from_nifti = load(nifti_dir / "image" / "image.nii.gz")
    assert from_nifti.same_grid(from_dicom, tol_mm=1e-3)
    np.testing.assert_array_equal(from_nifti.array, from_dicom.array)


def test_atomic_output_leaves_nothing_on_error(tmp_path):
    target = tmp_path / "out" / "result.nii.gz"
    with pytest.raises(RuntimeError):
        with atomic_output(target) as tmp:
            tmp.write_bytes(b"partial")
            raise RuntimeError("boom")
    assert not target.exists() and list(target.parent.iterdir()) == []
    with atomic_output(target) as tmp:
        tmp.write_bytes(b"whole")
    assert target.read_bytes() == b"whole" and list(target.parent.iterdir()) == [target]
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask  # not mkstemp's owner-only 0600


def test_save_nifti_rejects_other_suffixes(tmp_path, oblique):
    with pytest.raises(VolumeError, match="must end in .nii"):
        save_nifti(oblique, tmp_path / "image.mha")
    assert list(tmp_path.iterdir()) == []


def test_invalid_volumes_are_refused():
    with pytest.raises(VolumeError, match="3D"):
        Volume(array=np.zeros((4, 4)), spacing=(1, 1, 1), origin=(0, 0, 0))
    with pytest.raises(VolumeError, match="spacing"):
        Volume(array=np.zeros((2, 2, 2)), spacing=(1, 0, 1), origin=(0, 0, 0))
    with pytest.raises(VolumeError, match="orthonormal"):
        Volume(array=np.zeros((2, 2, 2)), spacing=(1, 1, 1), origin=(0, 0, 0), direction=np.diag([1, 2, 1]))


def test_with_array_keeps_the_grid(oblique):
    labels = np.zeros(oblique.shape, dtype=np.uint8)
    assert oblique.with_array(labels).same_grid(oblique)
    with pytest.raises(VolumeError):
        oblique.with_array(np.zeros((1, 2, 3)))


def test_load_reports_missing_and_unreadable_paths(tmp_path):
    with pytest.raises(PlannerError, match="no such file"):
        load(tmp_path / "absent.nii.gz")
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"not a nifti")
    with pytest.raises(VolumeError, match="not a readable NIfTI"):
        load(bad)
