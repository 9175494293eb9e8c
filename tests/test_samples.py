"""The bundled sample cases: valid DICOM, labels that agree, registry and CLI."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from planner.anatomy import structure
from planner.cli import main
from planner.dicom_seg import read_seg
from planner.resources import samples_dir
from planner.samples import SAMPLES, SampleCase, case_names, get_case, load_case
from planner.volume import load, load_nifti

CASE_IDS = [c.name for c in SAMPLES]
CT_CASES = [c for c in SAMPLES if c.modality == "CT"]
MAX_SAMPLES_MB = 15.0


def _bundled(case: SampleCase) -> SampleCase:
    if not case.is_bundled:
        pytest.skip(f"{case.name} not generated (python -m segmentation.make_samples)")
    return case


def _sitk_series(folder) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return reader.Execute()


def test_registry_has_the_four_cases():
    assert CASE_IDS == ["celiac_standard", "celiac_tumour_high_bmi", "superior_hypogastric", "supraclavicular_us"]
    assert [c.number for c in SAMPLES] == [1, 2, 3, 4]
    assert set(case_names()) <= set(CASE_IDS)
    from planner.presets import get_preset

    for case in SAMPLES:
        assert all(get_preset(p).procedure == case.procedure for p in case.presets)


@pytest.mark.slow  # ~6 s per case: highdicom parses ~1800 per-frame groups of the SEG
@pytest.mark.parametrize("case", CT_CASES, ids=[c.name for c in CT_CASES])
def test_ct_series_geometry_matches_simpleitk_and_seg_matches_nifti(case):
    case = _bundled(case)
    image = load(case.image_path)
    reference = _sitk_series(case.image_path)
    np.testing.assert_allclose(image.origin, reference.GetOrigin(), atol=1e-3)
    np.testing.assert_allclose(image.spacing_xyz, reference.GetSpacing(), atol=1e-3)
    np.testing.assert_allclose(image.direction.ravel(), reference.GetDirection(), atol=1e-6)
    np.testing.assert_array_equal(image.array, sitk.GetArrayFromImage(reference))
    assert image.modality == "CT" and image.warnings == ()
    labels = load_nifti(case.labels_path)
    assert labels.same_grid(image)
    from_seg = read_seg(case.seg_path, image)
    assert from_seg.warnings == ()
    np.testing.assert_array_equal(from_seg.array, labels.array)
    present = {int(v) for v in np.unique(labels.array) if v}
    assert present == set(case.label_names())
    target = {"celiac_standard": "celiac_plexus_region", "celiac_tumour_high_bmi": "celiac_plexus_region",
              "superior_hypogastric": "superior_hypogastric_plexus_region"}[case.name]
    assert structure(target).label in present
    if case.name == "celiac_tumour_high_bmi":
        assert structure("tumour").label in present


@pytest.mark.parametrize("case", SAMPLES, ids=CASE_IDS)
def test_headers_are_synthetic_and_card_complete(case):
    case = _bundled(case)
    first = case.image_path if case.image_path.is_file() else sorted(case.image_path.glob("*.dcm"))[0]
    ds = pydicom.dcmread(first, stop_before_pixels=True)
    assert str(ds.PatientName) == f"Sample^Case{case.number}" and ds.PatientID == f"SAMPLE-{case.number}"
    assert "synthetic" in ds.Manufacturer and "not patient data" in ds.ImageComments
    assert ds.PatientBirthDate == "" and ds.PatientIdentityRemoved == "YES"
    card = case.card_path.read_text()
    for heading in ("Clinical vignette", "Procedure", "Teaching points", "What makes it hard"):
        assert f"## {heading}" in card
    assert "not patient data" in card and "not a medical device" in card
    if case.seg_path is not None:
        seg = pydicom.dcmread(case.seg_path, stop_before_pixels=True)
        assert seg.StudyInstanceUID == ds.StudyInstanceUID
        assert seg.get("FrameOfReferenceUID") == ds.get("FrameOfReferenceUID")  # none for the cine
        assert str(seg.PatientName) == str(ds.PatientName)


def test_ultrasound_case_is_a_calibrated_cine():
    case = _bundled(next(c for c in SAMPLES if c.modality == "US"))
    image, labels = load_case(case.name)
    ds = pydicom.dcmread(case.image_path, stop_before_pixels=True)
    assert ds.SOPClassUID == pydicom.uid.UltrasoundMultiFrameImageStorage
    assert int(ds.NumberOfFrames) == image.shape[0] >= 16 and float(ds.FrameTime) > 0
    region = ds.SequenceOfUltrasoundRegions[0]
    assert region.PhysicalUnitsXDirection == 3 and region.PhysicalUnitsYDirection == 3
    assert image.spacing[1:] == pytest.approx((region.PhysicalDeltaY * 10, region.PhysicalDeltaX * 10))
    reference = sitk.GetArrayFromImage(sitk.ReadImage(str(case.image_path)))
    np.testing.assert_array_equal(image.array, reference)
    assert labels.same_grid(image)
    from_seg = read_seg(case.seg_path, image)
    np.testing.assert_array_equal(from_seg.array, labels.array)
    names = set(case.label_names().values())
    assert names == {"brachial_plexus", "blood_vessel", "ribs", "lungs"}


def test_every_registered_case_is_bundled():
    assert case_names() == tuple(CASE_IDS), "regenerate with python -m segmentation.make_samples"


def test_samples_fit_the_size_budget():
    total = sum(p.stat().st_size for p in samples_dir().rglob("*") if p.is_file())
    assert total / 1e6 < MAX_SAMPLES_MB


def test_ultrasound_case_regenerates_byte_identical(tmp_path):
    case = _bundled(get_case("supraclavicular_us") if "supraclavicular_us" in case_names() else SAMPLES[3])
    from segmentation.make_samples import build_cases

    build_cases(tmp_path, [case.name])
    for name in ("seg.dcm", "labels.nii.gz", "labels.json", "case.md"):
        new, old = (tmp_path / case.name / name).read_bytes(), (case.path / name).read_bytes()
        assert hashlib.sha256(new).digest() == hashlib.sha256(old).digest(), name
    # the cine's header is identical; its pixels may differ by one grey level in a few
    # places where another CPU's log/exp rounds differently
    new_us, old_us = pydicom.dcmread(tmp_path / case.name / "us.dcm"), pydicom.dcmread(case.image_path)
    assert [e for e in new_us if e.tag != 0x7FE00010] == [e for e in old_us if e.tag != 0x7FE00010]
    diff = np.abs(new_us.pixel_array.astype(int) - old_us.pixel_array.astype(int))
    assert diff.max() <= 1 and np.mean(diff > 0) < 1e-3


def test_cli_list_and_export(tmp_path, capsys):
    assert main(["sample", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [c["name"] for c in listed] == CASE_IDS
    assert main(["sample", "list"]) == 0
    assert "celiac_standard" in capsys.readouterr().out
    bundled = case_names()
    if not bundled:
        pytest.skip("no sample cases generated")
    name = bundled[-1]
    assert main(["sample", "export", name, str(tmp_path / "out")]) == 0
    exported = tmp_path / "out" / name
    original = get_case(name).path
    copied = sorted(p.relative_to(exported).as_posix() for p in exported.rglob("*") if p.is_file())
    expected = sorted(p.relative_to(original).as_posix() for p in original.rglob("*")
                      if p.is_file() and not p.name.startswith((".", "__")))
    assert copied == expected
    assert load(exported / get_case(name).image).same_grid(load(get_case(name).image_path))
    capsys.readouterr()
    assert main(["sample", "export", name, str(tmp_path / "out")]) == 2  # exists: refused
    assert "already exists" in capsys.readouterr().err
    assert main(["sample", "export", "no_such_case", str(tmp_path / "x")]) == 2
    assert "known cases" in capsys.readouterr().err
